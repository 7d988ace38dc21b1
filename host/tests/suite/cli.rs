//! The real `canopy` binary: `plugin inspect` and `plugin run` as a plugin author uses them.

use std::path::Path;
use std::process::{Command, Output};

use canopy_test_support::{HOSTILE, SAMPLE_EVENT, TEMPLATE};

fn canopy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(args)
        .output()
        .expect("canopy runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "canopy failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Asserts that `out` contains every fragment, showing `out` when one is missing.
fn contains_all(out: &str, fragments: &[&str]) {
    for fragment in fragments {
        assert!(out.contains(fragment), "missing {fragment:?} in:\n{out}");
    }
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

#[test]
fn inspect_prints_the_description() {
    let out = stdout(&canopy(&["plugin", "inspect", TEMPLATE]));
    assert!(out.starts_with("Template (template) 0.1.0\n"), "{out}");
    contains_all(
        &out,
        &[
            "allowed hosts: settings:url",
            "  url — Endpoint URL [url, required]",
            "  token — Bearer token [text, secret]",
        ],
    );

    let json: serde_json::Value = serde_json::from_str(&stdout(&canopy(&[
        "plugin", "inspect", TEMPLATE, "--format", "json",
    ])))
    .unwrap();
    assert_eq!(json["id"], "template");
    assert_eq!(json["settings"][0]["kind"], "url");
    assert!(json["digest"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn run_prints_requests_verdict_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let event = write(dir.path(), "event.json", SAMPLE_EVENT);
    let settings = write(
        dir.path(),
        "settings.json",
        r#"{"url":"https://hooks.example.com/loyalty"}"#,
    );
    let out = stdout(&canopy(&[
        "plugin",
        "run",
        TEMPLATE,
        "--event",
        &event,
        "--settings",
        &settings,
        "--response",
        r#"{"status":429,"headers":{"Retry-After":"30"}}"#,
    ]));
    contains_all(
        &out,
        &[
            "config: valid\n",
            "transform: 1 request(s)\n",
            "POST https://hooks.example.com/loyalty\n",
            "Authorization: Bearer {{secret:token}}\n",
            "X-Signature: {{hmac-sha256-hex of body with secret:signing_secret}}",
            r#""order_id":"6012345678901""#,
            "verdict: retry after 30 s (HTTP 429)\n",
            "transform used: fuel ",
            "interpret used: fuel ",
        ],
    );

    // --secrets none: no secret references; JSON output for scripts.
    let json: serde_json::Value = serde_json::from_str(&stdout(&canopy(&[
        "plugin",
        "run",
        TEMPLATE,
        "--event",
        &event,
        "--settings",
        &settings,
        "--secrets",
        "none",
        "--response",
        "500",
        "--format",
        "json",
    ])))
    .unwrap();
    let request = &json["transform"]["ok"]["value"]["Ok"][0];
    assert_eq!(request["url"], "https://hooks.example.com/loyalty");
    assert!(
        request["headers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["name"] != "Authorization")
    );
    assert_eq!(json["interpret"]["ok"]["value"]["verdict"], "retry");
    assert!(json["transform"]["ok"]["usage"]["fuel"].as_u64().unwrap() > 0);
}

#[test]
fn run_reports_config_errors_and_plugin_failures() {
    let dir = tempfile::tempdir().unwrap();
    let event = write(dir.path(), "event.json", SAMPLE_EVENT);
    let out = stdout(&canopy(&["plugin", "run", TEMPLATE, "--event", &event]));
    contains_all(
        &out,
        &[
            "config error: url: Endpoint URL is required\n",
            "transform: invalid config: Endpoint URL is required\n",
        ],
    );

    let looping = write(dir.path(), "loop.json", r#"{"mode":"loop"}"#);
    let out = stdout(&canopy(&[
        "plugin",
        "run",
        HOSTILE,
        "--event",
        &event,
        "--settings",
        &looping,
        "--plugin-fuel",
        "1000000",
    ]));
    assert!(
        out.contains("transform failed: the plugin used up its CPU budget of 1000000 fuel units"),
        "{out}"
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_a_failing_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let junk = write(dir.path(), "junk.wasm", "not wasm at all");
    let output = canopy(&["plugin", "inspect", &junk]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot be loaded: the file is not WebAssembly"),
        "{stderr}"
    );

    let event = write(dir.path(), "event.json", "{not json");
    let output = canopy(&[
        "plugin",
        "run",
        TEMPLATE,
        "--event",
        &event,
        "--response",
        "abc",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--response is not JSON"), "{stderr}");
}

/// The bundled plugins by id, on built-in sample events, as the README shows.
#[test]
fn run_works_on_each_bundled_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let shop = write(
        dir.path(),
        "shop.json",
        r#"{"shop_domain":"green-shop.myshopify.com","trigger_handle":"loyaltytree-event"}"#,
    );
    let hook = write(
        dir.path(),
        "hook.json",
        r#"{"url":"https://hooks.example.com/in"}"#,
    );
    let cases: [(&str, Option<&str>, &str, &[&str]); 4] = [
        (
            "klaviyo",
            None,
            "seeds.earned.order",
            &[
                "POST https://a.klaviyo.com/api/events\n",
                "Authorization: Klaviyo-API-Key {{secret:api_key}}\n",
                r#""value":50"#,
                "verdict: retry after 30 s (Klaviyo answered HTTP 429)\n",
            ],
        ),
        (
            "omnisend",
            None,
            "tier.changed",
            &[
                "POST https://api.omnisend.com/v5/events\n",
                "X-API-KEY: {{secret:api_key}}\n",
                r#""eventName":"Tier Changed""#,
            ],
        ),
        (
            "shopify-flow",
            Some(&shop),
            "eco.tree_planted",
            &[
                "POST https://green-shop.myshopify.com/admin/api/2026-04/graphql.json\n",
                r#""Trees count":3"#,
            ],
        ),
        (
            "webhook",
            Some(&hook),
            "referral.visit",
            &[
                "POST https://hooks.example.com/in\n",
                "X-LoyaltyTree-Signature: {{hmac-sha256-hex of body with secret:webhook_secret}}\n",
                "webhook-id, webhook-timestamp, webhook-signature: {{standard-webhooks with secret:webhook_secret}}\n",
            ],
        ),
    ];
    for (id, settings, event, expected) in cases {
        let mut args = vec![
            "plugin",
            "run",
            id,
            "--event",
            event,
            "--response",
            r#"{"status":429,"headers":{"retry-after":"30"}}"#,
        ];
        if let Some(settings) = settings {
            args.extend(["--settings", settings]);
        }
        let out = stdout(&canopy(&args));
        assert!(out.contains("config: valid\n"), "{id}: {out}");
        contains_all(&out, expected);
    }
}

/// `plugin test` as an author uses it on the template: no expected files yet (it fails and
/// says how to write them), `--bless` writes one per event type, the next run passes, and a
/// change to the plugin's answer (here, to the settings) fails with a diff naming the line.
#[test]
fn plugin_test_compares_every_event_type_with_the_expected_answer() {
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("tests");
    std::fs::create_dir_all(&tests).unwrap();
    let tests_arg = tests.display().to_string();
    write(
        &tests,
        "settings.json",
        r#"{"url": "https://hooks.example.com/loyalty"}"#,
    );
    let test = |extra: &[&str]| {
        let mut args = vec!["plugin", "test", TEMPLATE, "--dir", &tests_arg];
        args.extend_from_slice(extra);
        canopy(&args)
    };

    let missing = test(&[]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    contains_all(
        &err,
        &[
            "19 event types, 0 match, 0 differ, 19 missing",
            "tier.changed                 MISSING (run with --bless to write it)",
        ],
    );

    contains_all(&stdout(&test(&["--bless"])), &["19 written"]);
    let written = std::fs::read_to_string(tests.join("expected/tier.changed.json")).unwrap();
    contains_all(
        &written,
        &[
            "\"url\": \"https://hooks.example.com/loyalty\"",
            "Authorization: Bearer {{secret:token}}",
        ],
    );
    contains_all(&stdout(&test(&[])), &["19 event types, 19 match, 0 differ"]);
    // A checkout that turned line ends into CRLF still matches.
    let crlf = tests.join("expected/tier.changed.json");
    std::fs::write(&crlf, written.replace('\n', "\r\n")).unwrap();
    contains_all(&stdout(&test(&[])), &["19 match, 0 differ"]);
    // A file for no event type the plugin takes fails the run until it is removed.
    let stale = tests.join("expected/tier.renamed.json");
    std::fs::write(&stale, "[]\n").unwrap();
    let with_stale = test(&[]);
    assert!(!with_stale.status.success());
    contains_all(
        &String::from_utf8_lossy(&with_stale.stderr),
        &[
            "19 match, 0 differ, 0 missing, 0 written, 1 stale",
            "tier.renamed.json",
        ],
    );
    std::fs::remove_file(&stale).unwrap();

    write(
        &tests,
        "settings.json",
        r#"{"url": "https://hooks.example.com/v2"}"#,
    );
    let differs = test(&[]);
    assert!(!differs.status.success());
    let err = String::from_utf8_lossy(&differs.stderr);
    contains_all(
        &err,
        &[
            "0 match, 19 differ",
            "tier.changed (- expected, + answered):",
            "-    \"url\": \"https://hooks.example.com/loyalty\",",
            "+    \"url\": \"https://hooks.example.com/v2\",",
        ],
    );
    // tier.changed's file still has CRLF line ends: its diff shows the changed line only.
    assert!(!err.contains('\r'), "{err}");

    // Settings the plugin refuses are named, not compared.
    write(&tests, "settings.json", "{}");
    let invalid = test(&[]);
    assert!(!invalid.status.success());
    contains_all(
        &String::from_utf8_lossy(&invalid.stderr),
        &["the test settings are not valid for template", "url:"],
    );
}

/// From an empty directory, as a new author: `plugin new` (Rust), one build command, `plugin
/// test --bless` then `plugin test`, an upload to a running server, and a delivery through
/// the uploaded plugin. The build shares the workspace's target directory (`scaffold/`), and
/// starts from the workspace's lock file so it builds the same dependency versions.
#[tokio::test]
async fn a_new_plugin_project_builds_tests_uploads_and_delivers() {
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("acme-events");
    let sdk = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk");
    let out = stdout(&canopy(&[
        "plugin",
        "new",
        "acme-events",
        "--lang",
        "rust",
        "--dir",
        project.to_str().unwrap(),
        "--sdk",
        sdk,
    ]));
    contains_all(&out, &["cargo build --release --target wasm32-wasip2"]);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::copy(workspace.join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("scaffold");
    let built = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&project)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo runs");
    assert!(built.success(), "the new project builds");
    let wasm = target.join("wasm32-wasip2/release/acme_events.wasm");
    bless_and_test(&wasm, &project.join("tests"), "acme-events");

    upload_and_deliver("acme-events", &wasm).await;
}

/// `canopy plugin test` on a new project's component: every expected file written, then
/// every one matching.
fn bless_and_test(wasm: &Path, tests: &Path, id: &str) {
    let (wasm, tests) = (wasm.to_str().unwrap(), tests.to_str().unwrap());
    contains_all(
        &stdout(&canopy(&[
            "plugin", "test", wasm, "--dir", tests, "--bless",
        ])),
        &[&format!("{id} 0.1.0: 19 event types"), "19 written"],
    );
    contains_all(
        &stdout(&canopy(&["plugin", "test", wasm, "--dir", tests])),
        &["19 match, 0 differ"],
    );
}

/// Uploads a new project's component (the template: POST the event to `url`) to a running
/// server and delivers an event through it.
async fn upload_and_deliver(id: &str, wasm: &Path) {
    use crate::harness::{Canopy, accepting, fresh, received};
    use reqwest::StatusCode;

    let receiver = accepting().await;
    let server = Canopy::start(|_| {}).await;
    let (status, uploaded) = server
        .upload(id, std::fs::read(wasm).unwrap(), "application/wasm")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{uploaded}");
    server
        .integration(serde_json::json!({
            "name": "Acme", "plugin": id, "events": ["*"],
            "settings": {"url": format!("{}/acme", receiver.uri())},
        }))
        .await;
    let delivery = server.ingest_one(fresh("tier.changed")).await;
    server.delivery_with_status(&delivery, "succeeded").await;
    let requests = received(&receiver, 1).await;
    assert_eq!(requests[0].url.path(), "/acme");
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["event"], "tier.changed");
    server.stop().await;
}

/// The same path as a TypeScript author: `plugin new --lang ts`, `npm install`,
/// `npm run build` (types generated from the contract, `tsc`, `jco componentize`), then
/// `plugin test`, upload and delivery.
#[tokio::test]
async fn a_new_typescript_plugin_project_builds_tests_uploads_and_delivers() {
    let npm_found = Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !npm_found {
        assert!(
            std::env::var_os("CI").is_none(),
            "npm is not installed (scripts/setup --tests installs it)"
        );
        eprintln!(
            "######## SKIPPED: npm is not installed (scripts/setup --tests installs it) ########"
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("acme-ts");
    let sdk = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk-ts");
    let out = stdout(&canopy(&[
        "plugin",
        "new",
        "acme-ts",
        "--lang",
        "ts",
        "--dir",
        project.to_str().unwrap(),
        "--sdk",
        sdk,
    ]));
    contains_all(&out, &["npm run build", "dist/acme-ts.wasm"]);
    for args in [
        &["install", "--no-audit", "--no-fund", "--prefer-offline"][..],
        &["run", "build"],
    ] {
        let status = Command::new("npm")
            .current_dir(&project)
            .args(args)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm {args:?} succeeds in the new project");
    }
    let wasm = project.join("dist/acme-ts.wasm");
    bless_and_test(&wasm, &project.join("tests"), "acme-ts");
    upload_and_deliver("acme-ts", &wasm).await;
}

/// The same path as a Python author: `plugin new --lang python`, `sh build.sh` (a virtual
/// environment with componentize-py and the SDK, then the component), then `plugin test`,
/// upload (18 MB: over the 16 MiB default, within the 32 MiB the template declares) and
/// delivery.
#[tokio::test]
async fn a_new_python_plugin_project_builds_tests_uploads_and_delivers() {
    let venv_found = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !venv_found {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with venv is not installed (scripts/setup --tests installs it)"
        );
        eprintln!(
            "######## SKIPPED: python3 with venv is not installed (scripts/setup --tests installs it) ########"
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("acme-py");
    let sdk = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk-py");
    let out = stdout(&canopy(&[
        "plugin",
        "new",
        "acme-py",
        "--lang",
        "python",
        "--dir",
        project.to_str().unwrap(),
        "--sdk",
        sdk,
    ]));
    contains_all(&out, &["sh build.sh", "dist/acme-py.wasm"]);
    let status = Command::new("sh")
        .current_dir(&project)
        .arg("build.sh")
        .status()
        .expect("sh runs");
    assert!(status.success(), "build.sh succeeds in the new project");
    let wasm = project.join("dist/acme-py.wasm");
    bless_and_test(&wasm, &project.join("tests"), "acme-py");
    upload_and_deliver("acme-py", &wasm).await;
}
