//! Plugins written in other languages than Rust, built by their own toolchains from
//! `plugins/`: the TypeScript template (`plugins/template-ts`, what `plugin new --lang ts`
//! starts from) and Braze destination (`plugins/braze`), built with npm and `jco
//! componentize`; the Python template (`plugins/template-py`) and Slack destination
//! (`plugins/slack`), built with each project's `build.sh` and componentize-py; and the
//! hostile components of both languages. `canopy-test-support`'s build script builds them;
//! they go through the same runtime, the same `canopy plugin test` review and the same server
//! as the bundled Rust ones.
//!
//! Where a toolchain is not installed its components are not built and these tests say so
//! loudly and return; under CI the build fails instead (`wasm_build::build_npm`,
//! `wasm_build::build_python`), so CI never skips them.

use std::path::Path;
use std::sync::Arc;

use canopy::runtime::{Plugin, PluginConfig, PluginError, Runtime, Scope, Verdict};
use canopy_events::EventKind;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Canopy, header, received, sample};
use crate::{server_limits, verdict};

const BRAZE_KEY: &str = "braze-rest-key-0123456789abcdef";

/// A built TypeScript or Python component, or `None` (said loudly) where its toolchain is
/// missing.
fn component(built: Option<&str>, dir: &str) -> Option<Vec<u8>> {
    match built {
        Some(path) => Some(canopy_test_support::component(path)),
        None => {
            let toolchain = if dir.contains("-py") || dir.ends_with("slack") {
                "python3 with venv (Debian's python3-venv)"
            } else {
                "Node.js and npm"
            };
            eprintln!(
                "################################################################\n\
                 # SKIPPED: the plugin {dir} was not built: its toolchain,\n\
                 # {toolchain}, is not installed (scripts/setup --tests\n\
                 # installs it).\n\
                 ################################################################"
            );
            None
        }
    }
}

fn braze_component() -> Option<Vec<u8>> {
    component(canopy_test_support::BRAZE, "plugins/braze")
}

fn slack_component() -> Option<Vec<u8>> {
    component(canopy_test_support::SLACK, "plugins/slack")
}

fn load(bytes: &[u8]) -> Arc<Plugin> {
    let runtime = Runtime::new(server_limits()).unwrap();
    Arc::new(runtime.load(bytes).expect("the component loads"))
}

fn braze() -> Option<Arc<Plugin>> {
    braze_component().map(|bytes| load(&bytes))
}

fn braze_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/braze"))
}

/// A configuration with these settings and these secrets set.
fn config(settings: Value, secrets: &[&str]) -> PluginConfig {
    PluginConfig {
        settings,
        secrets_present: secrets.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// `canopy plugin test`'s run over a project's `tests/` (its settings, every secret the
/// plugin declares set), which must pass for all 19 event types.
fn passes_its_expected_files(plugin: &Plugin, project: &str) {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(project)
        .join("tests");
    let settings: Value =
        serde_json::from_str(&std::fs::read_to_string(tests.join("settings.json")).unwrap())
            .unwrap();
    let config = PluginConfig {
        settings,
        secrets_present: plugin
            .info()
            .settings
            .iter()
            .filter(|s| s.secret)
            .map(|s| s.name.clone())
            .collect(),
    };
    let report = canopy::plugin_test::run(plugin, &config, &tests.join("expected"), false)
        .expect("the run happens");
    assert_eq!(report.results.len(), EventKind::ALL.len());
    assert!(report.passed(), "{project}: {}", report.text());
}

#[test]
fn braze_answers_every_event_type_as_its_expected_files_say() {
    let Some(plugin) = braze() else { return };
    let info = plugin.info();
    assert_eq!((info.id.as_str(), info.name.as_str()), ("braze", "Braze"));
    assert_eq!(info.events, vec!["*".to_owned()]);
    passes_its_expected_files(&plugin, "plugins/braze");
}

/// The TypeScript template and the Rust one are the same destination written twice: for
/// every event type and several configurations, the same requests or the same refusal. This
/// holds the TypeScript SDK (event parsing, settings, request building) to the Rust SDK.
#[test]
fn the_typescript_template_answers_exactly_as_the_rust_template_does() {
    let Some(bytes) = component(canopy_test_support::TEMPLATE_TS, "plugins/template-ts") else {
        return;
    };
    let ts = load(&bytes);
    passes_its_expected_files(&ts, "plugins/template-ts");
    answers_as_the_rust_template_does(&ts);
}

/// The same for the Python template: it holds the Python SDK to the Rust one.
#[test]
fn the_python_template_answers_exactly_as_the_rust_template_does() {
    let Some(bytes) = component(canopy_test_support::TEMPLATE_PY, "plugins/template-py") else {
        return;
    };
    let py = load(&bytes);
    assert_eq!(py.contract(), "0.2.0");
    passes_its_expected_files(&py, "plugins/template-py");
    answers_as_the_rust_template_does(&py);
}

/// `other`'s validate-config and transform answers are the Rust template's, over every
/// sample, unusual and malformed events, and several configurations.
fn answers_as_the_rust_template_does(other: &Plugin) {
    let rust = load(&canopy_test_support::component(
        canopy_test_support::TEMPLATE,
    ));
    let url = json!({"url": "https://hooks.example.com/loyalty"});
    let configs = [
        (url.clone(), vec![]),
        (
            url.clone(),
            vec!["token".to_owned(), "signing_secret".to_owned()],
        ),
        (
            json!({"url": "https://hooks.example.com/x", "require_email": true}),
            vec!["token".to_owned()],
        ),
        (json!({}), vec![]),
        (json!({"url": "ftp://nope"}), vec![]),
    ];
    let mut anonymous = sample("review.submitted");
    anonymous["customer"] = json!({"shopify_customer_id": 42});
    let mut blank_email = sample("tier.changed");
    blank_email["customer"]["email"] = json!("  ");
    // Customer fields out of order, an unknown one (null), and a field named like a prototype.
    let unusual = r#"{"event": "seeds.earned.bonus", "timestamp": "2026-02-06T14:30:00Z",
        "customer": {"vip": null, "last_name": "Smith", "email": "jane@example.com", "first_name": null},
        "__proto__": {"a": 1}, "amount": 5, "note": "x"}"#;
    let mut events: Vec<String> = EventKind::ALL
        .iter()
        .map(|k| k.sample_json().to_owned())
        .collect();
    events.push(anonymous.to_string());
    events.push(blank_email.to_string());
    events.push(unusual.to_owned());
    // Malformed in ways both SDKs refuse.
    for malformed in [
        r#"{"event": "tier.changed", "timestamp": "x", "customer": {"email": 5}}"#,
        r#"{"event": "tier.changed", "timestamp": "x", "customer": "jane"}"#,
        r#"{"event": "tier.changed", "timestamp": 5}"#,
        r#"{"event": "tier.changed", "timestamp": "x", "id": 5}"#,
    ] {
        events.push(malformed.to_owned());
    }
    events.push(r#"{"event": "nope", "timestamp": "x"}"#.to_owned());
    for (settings, secrets) in configs {
        let config = PluginConfig {
            settings,
            secrets_present: secrets,
        };
        let check = |plugin: &Plugin| plugin.validate_config(Scope::Fresh, &config).unwrap().value;
        assert_eq!(check(other), check(&rust), "{config:?}");
        for event in &events {
            // The host's own refusal of a request (e.g. an ftp:// URL) counts as an answer.
            let answer = |plugin: &Plugin| match plugin.transform(Scope::Fresh, event, &config) {
                Ok(call) => canopy::plugin_test::review(&call.value),
                Err(error) => format!("error: {error}"),
            };
            let (from_other, from_rust) = (answer(other), answer(&rust));
            // Refusal reasons name the parser that refused (serde, JSON.parse, json).
            if from_rust.contains("\"refused\": \"invalid_event\"") {
                assert!(
                    from_other.contains("\"refused\": \"invalid_event\""),
                    "{from_other}"
                );
            } else {
                assert_eq!(from_other, from_rust, "{event} with {config:?}");
            }
        }
    }
}

#[test]
fn braze_identifies_customers_and_refuses_what_it_cannot_send() {
    let Some(plugin) = braze() else { return };
    let transform = |event: &Value, config: &PluginConfig| {
        plugin
            .transform(Scope::Fresh, &event.to_string(), config)
            .expect("the call succeeds")
            .value
    };
    let tier = sample("tier.changed");

    let by_id = config(
        json!({"identify_by": "external_id", "instance": "EU-01", "app_id": "app-1"}),
        &["api_key"],
    );
    let requests = transform(&tier, &by_id).expect("sent");
    assert_eq!(requests[0].url, "https://rest.fra-01.braze.eu/users/track");
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    let event = &body["events"][0];
    assert_eq!(event["external_id"], "7891234567890");
    assert_eq!(event["app_id"], "app-1");
    assert!(event.get("email").is_none(), "{event}");

    let mut anonymous = tier.clone();
    anonymous["customer"] = json!({"first_name": "Ann"});
    for settings in [json!({}), json!({"identify_by": "external_id"})] {
        let refusal = transform(&anonymous, &config(settings, &["api_key"])).unwrap_err();
        assert!(
            matches!(refusal, canopy::runtime::Refusal::Skip(_)),
            "{refusal:?}"
        );
    }
    for settings in [
        json!({"identify_by": "phone"}),
        json!({"instance": "constructor"}),
    ] {
        let refusal = transform(&tier, &config(settings, &["api_key"])).unwrap_err();
        assert!(
            matches!(refusal, canopy::runtime::Refusal::InvalidConfig(_)),
            "{refusal:?}"
        );
    }
    let refusal = transform(&tier, &config(json!({}), &[])).unwrap_err();
    assert!(
        matches!(refusal, canopy::runtime::Refusal::InvalidConfig(_)),
        "{refusal:?}"
    );
    let not_canonical = transform(&json!({"event": "nope"}), &config(json!({}), &["api_key"]));
    assert!(
        matches!(
            not_canonical,
            Err(canopy::runtime::Refusal::InvalidEvent(_))
        ),
        "{not_canonical:?}"
    );

    let problems = plugin
        .validate_config(
            Scope::Fresh,
            &config(json!({"instance": "MARS-01", "identify_by": "phone"}), &[]),
        )
        .unwrap()
        .value;
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["api_key", "instance", "identify_by"],
        "{problems:?}"
    );
}

#[test]
fn braze_reads_what_braze_answers() {
    let Some(plugin) = braze() else { return };
    let interpret =
        |status, headers: &[(&str, &str)], body| verdict(&plugin, status, headers, body);
    assert_eq!(
        interpret(201, &[], r#"{"message":"success","events_processed":1}"#),
        Verdict::Delivered
    );
    assert_eq!(
        interpret(
            201,
            &[],
            r#"{"message":"success","errors":[{"type":"'email' is not a valid email","input_array":"events","index":0}]}"#
        ),
        Verdict::Failed {
            reason: "Braze did not record the event: 'email' is not a valid email".into()
        }
    );
    assert!(
        matches!(interpret(401, &[], r#"{"message":"Invalid API Key"}"#), Verdict::Failed { reason } if reason.contains("REST API key")),
    );
    assert!(
        matches!(interpret(429, &[("retry-after", "3")], ""), Verdict::Retry { after: Some(after), .. } if after.as_secs() == 3),
    );
    assert!(
        matches!(interpret(429, &[("x-ratelimit-retry-after", "7")], ""), Verdict::Retry { after: Some(after), .. } if after.as_secs() == 7),
    );
    assert_eq!(
        interpret(400, &[], r#"{"message":"Valid data must be provided"}"#),
        Verdict::Failed {
            reason: "Braze rejected the event (HTTP 400): Valid data must be provided".into()
        }
    );
}

/// The TypeScript SDK's event catalogue is a copy of `crates/events`: the same 19 keys with
/// the same display names, in the same order.
#[test]
fn the_typescript_sdk_knows_the_canonical_catalogue() {
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/sdk-ts/src/events.ts"
    ))
    .unwrap();
    let quoted = |text: &str| format!("'{text}'");
    let (types, names) = source
        .split_once("const DISPLAY_NAMES")
        .expect("events.ts lists the types, then the names");
    let mut last = 0;
    for kind in EventKind::ALL {
        let at = types
            .find(&format!("  {},\n", quoted(kind.key())))
            .unwrap_or_else(|| panic!("EVENT_TYPES lacks {kind}"));
        assert!(at > last, "{kind} is out of order");
        last = at;
        let line = format!(
            "  {}: {},\n",
            quoted(kind.key()),
            quoted(kind.display_name())
        );
        assert!(
            names.contains(&line),
            "DISPLAY_NAMES lacks `{}`",
            line.trim()
        );
    }
    assert_eq!(types.matches("',\n").count(), EventKind::ALL.len());
}

#[tokio::test]
async fn braze_uploaded_to_a_running_server_delivers_through_it() {
    let Some(bytes) = braze_component() else {
        return;
    };
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"message": "success", "events_processed": 1})),
        )
        .mount(&receiver)
        .await;
    let canopy = Canopy::start(|c| {
        c.delivery.allow_private_networks = false;
        c.delivery.egress_override = vec![
            format!("rest.iad-01.braze.com={}", receiver.uri())
                .parse()
                .unwrap(),
        ];
    })
    .await;
    let (status, uploaded) = canopy.upload("braze", bytes, "application/wasm").await;
    assert_eq!(status, StatusCode::CREATED, "{uploaded}");
    canopy
        .integration(json!({
            "name": "Braze", "plugin": "braze", "events": ["*"],
            "secrets": {"api_key": BRAZE_KEY}
        }))
        .await;
    let delivery = canopy.ingest_one(sample("gift_card.earned")).await;
    let done = canopy.delivery_with_status(&delivery, "succeeded").await;

    let requests = received(&receiver, 1).await;
    assert_eq!(requests[0].url.path(), "/users/track");
    assert_eq!(
        header(&requests[0], "authorization"),
        format!("Bearer {BRAZE_KEY}")
    );
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(braze_dir().join("tests/expected/gift_card.earned.json")).unwrap(),
    )
    .unwrap();
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body, expected[0]["body"]);
    assert!(
        !done.to_string().contains(BRAZE_KEY),
        "the key leaked: {done}"
    );
    canopy.stop().await;
}

/// Every sandbox limit holds for a JavaScript engine as for Rust code: a TypeScript plugin
/// that loops, hoards memory, returns too much, throws, reaches for the network or waits on
/// the clock fails that call with the typed error, and the same plugin then serves a normal
/// call.
#[test]
fn a_hostile_typescript_plugin_meets_every_limit_and_the_host_goes_on() {
    let Some(bytes) = component(
        canopy_test_support::HOSTILE_TS,
        "tests/components-ts/hostile",
    ) else {
        return;
    };
    let limits = canopy::runtime::Limits {
        // Generous: big-output copies 5 MiB out of the JavaScript engine within it.
        call_time_limit: std::time::Duration::from_secs(2),
        ..server_limits()
    };
    let runtime = Runtime::new(limits.clone()).unwrap();
    let plugin = runtime.load(&bytes).expect("the hostile component loads");
    let run = |m: &str| {
        plugin.transform(
            Scope::Integration("i-1"),
            canopy_test_support::SAMPLE_EVENT,
            &crate::mode(m),
        )
    };
    let ok = || {
        let requests = run("ok")
            .expect("a normal call after a failure succeeds")
            .value
            .unwrap();
        assert_eq!(requests[0].url, "https://hostile.test/ok");
    };
    type Expectation<'a> = Box<dyn Fn(&PluginError) -> bool + 'a>;
    let cases: Vec<(&str, Expectation)> = vec![
        (
            "loop",
            Box::new(
                |e| matches!(e, PluginError::TimeLimit { limit } if *limit == limits.call_time_limit),
            ),
        ),
        (
            "clock",
            Box::new(
                |e| matches!(e, PluginError::TimeLimit { limit } if *limit == limits.call_time_limit),
            ),
        ),
        (
            "memory-bomb",
            Box::new(
                |e| matches!(e, PluginError::MemoryLimit { limit } if *limit == limits.memory_bytes),
            ),
        ),
        (
            "big-output",
            Box::new(
                |e| matches!(e, PluginError::OutputTooLarge { size, limit } if *size > 5 << 20 && *limit == limits.output_bytes),
            ),
        ),
        (
            "throw",
            Box::new(
                |e| matches!(e, PluginError::Trap { stderr, .. } if stderr.contains("hostile plugin threw on purpose")),
            ),
        ),
        (
            "fetch",
            // The engine has `fetch`, but the component is built without HTTP: its imports
            // are stubs that trap on the first call. Nothing leaves the sandbox.
            // (Not the plugin's own error for a missing `fetch`: the stub itself trapped.)
            Box::new(
                |e| matches!(e, PluginError::Trap { stderr, .. } if !stderr.contains("no fetch in this sandbox")),
            ),
        ),
    ];
    for (m, expected) in &cases {
        ok();
        let error = run(m).expect_err(m);
        assert!(expected(&error), "mode {m}: unexpected error {error:?}");
    }
    ok();
}

/// Every sandbox limit holds for CPython as for Rust code: a Python plugin that loops,
/// busy-waits or sleeps on the clock, hoards memory, returns too much or raises fails that
/// call with the typed error; its reaches for the network, files and the environment come
/// back empty-handed; and the same plugin then serves a normal call.
#[test]
fn a_hostile_python_plugin_meets_every_limit_and_the_host_goes_on() {
    let Some(bytes) = component(
        canopy_test_support::HOSTILE_PY,
        "tests/components-py/hostile",
    ) else {
        return;
    };
    let limits = canopy::runtime::Limits {
        // Generous: big-output copies 5 MiB out of the interpreter within it.
        call_time_limit: std::time::Duration::from_secs(2),
        ..server_limits()
    };
    let runtime = Runtime::new(limits.clone()).unwrap();
    let plugin = runtime.load(&bytes).expect("the hostile component loads");
    // It declared a 32 MiB component (CPython is ~18 MB) and no more memory than the default.
    assert_eq!(plugin.info().needs.component_mib, Some(32));
    assert_eq!(plugin.memory_limit(), limits.memory_bytes);
    let run = |m: &str| {
        plugin.transform(
            Scope::Integration("i-1"),
            canopy_test_support::SAMPLE_EVENT,
            &crate::mode(m),
        )
    };
    let ok = || {
        let requests = run("ok")
            .expect("a normal call after a failure succeeds")
            .value
            .unwrap();
        assert_eq!(requests[0].url, "https://hostile.test/ok");
    };
    type Expectation<'a> = Box<dyn Fn(&PluginError) -> bool + 'a>;
    let time_limit: Expectation = Box::new(
        |e| matches!(e, PluginError::TimeLimit { limit } if *limit == limits.call_time_limit),
    );
    let cases: Vec<(&str, Expectation)> = vec![
        ("loop", time_limit),
        (
            "clock",
            Box::new(
                |e| matches!(e, PluginError::TimeLimit { limit } if *limit == limits.call_time_limit),
            ),
        ),
        (
            "sleep",
            Box::new(|e| matches!(e, PluginError::Forbidden(what) if what.contains("sleep"))),
        ),
        (
            "memory-bomb",
            Box::new(
                |e| matches!(e, PluginError::MemoryLimit { limit } if *limit == limits.memory_bytes),
            ),
        ),
        (
            "big-output",
            Box::new(
                |e| matches!(e, PluginError::OutputTooLarge { size, limit } if *size > 5 << 20 && *limit == limits.output_bytes),
            ),
        ),
        (
            "throw",
            Box::new(
                |e| matches!(e, PluginError::Trap { stderr, .. } if stderr.contains("hostile plugin raised on purpose")),
            ),
        ),
    ];
    for (m, expected) in &cases {
        ok();
        let error = run(m).expect_err(m);
        assert!(expected(&error), "mode {m}: unexpected error {error:?}");
    }
    // What the plugin saw when it reached out: refusals, never a connection or a file.
    for m in ["socket", "urllib", "file", "env"] {
        ok();
        let requests = run(m).expect(m).value.expect(m);
        let outcome: String = requests[0]
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("x-outcome"))
            .map(|h| h.redacted_value())
            .unwrap_or_else(|| panic!("mode {m} says what happened"));
        let expected = if m == "env" { "empty" } else { "refused: " };
        assert!(
            outcome.starts_with(expected) && !outcome.contains("reached"),
            "mode {m}: {outcome}"
        );
    }
    ok();
}

const SLACK_TOKEN: &str = "xoxb-0000000000-slack-test-token";

fn slack() -> Option<Arc<Plugin>> {
    slack_component().map(|bytes| load(&bytes))
}

#[test]
fn slack_answers_every_event_type_as_its_expected_files_say() {
    let Some(plugin) = slack() else { return };
    let info = plugin.info();
    assert_eq!((info.id.as_str(), info.name.as_str()), ("slack", "Slack"));
    assert_eq!(info.allowed_hosts, ["slack.com"]);
    assert_eq!(plugin.contract(), "0.2.0");
    passes_its_expected_files(&plugin, "plugins/slack");
}

/// Text from the event cannot inject mrkdwn links or mentions; emails show only when the
/// integration allows it; the token and channel are required.
#[test]
fn slack_escapes_event_text_and_refuses_what_it_cannot_send() {
    let Some(plugin) = slack() else { return };
    let text_of = |event: &Value, config: &PluginConfig| -> String {
        let requests = plugin
            .transform(Scope::Fresh, &event.to_string(), config)
            .expect("the call succeeds")
            .value
            .expect("sent");
        let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
        body["text"].as_str().unwrap().to_owned()
    };
    let mut hostile = sample("tier.changed");
    hostile["customer"]["display_name"] = json!("<!channel> & <https://evil.example|click>");
    let names_only = config(json!({"channel": "C0123456789"}), &["bot_token"]);
    let text = text_of(&hostile, &names_only);
    assert!(
        text.contains("&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;"),
        "{text}"
    );
    assert!(!text.contains("<!channel>"), "{text}");
    assert!(!text.contains('@'), "no email unless allowed: {text}");
    let with_email = config(
        json!({"channel": "C0123456789", "include_email": true}),
        &["bot_token"],
    );
    assert!(text_of(&hostile, &with_email).contains("jane@example.com"));

    for (settings, secrets) in [
        (json!({"channel": "#loyalty"}), &[][..]),
        (json!({}), &["bot_token"][..]),
    ] {
        let refusal = plugin
            .transform(
                Scope::Fresh,
                &hostile.to_string(),
                &config(settings, secrets),
            )
            .unwrap()
            .value
            .unwrap_err();
        assert!(
            matches!(refusal, canopy::runtime::Refusal::InvalidConfig(_)),
            "{refusal:?}"
        );
    }
    let problems = plugin
        .validate_config(Scope::Fresh, &config(json!({"channel": "two words"}), &[]))
        .unwrap()
        .value;
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["bot_token", "channel"], "{problems:?}");
}

/// Slack answers 200 with `"ok": false` when it refuses: the body decides.
#[test]
fn slack_reads_what_slack_answers() {
    let Some(plugin) = slack() else { return };
    let interpret =
        |status, headers: &[(&str, &str)], body| verdict(&plugin, status, headers, body);
    assert_eq!(
        interpret(200, &[], r#"{"ok":true,"channel":"C1","ts":"1.2"}"#),
        Verdict::Delivered
    );
    assert!(
        matches!(interpret(200, &[], r#"{"ok":false,"error":"channel_not_found"}"#),
            Verdict::Failed { reason } if reason.contains("channel_not_found")),
    );
    assert!(
        matches!(interpret(200, &[], r#"{"ok":false,"error":"invalid_auth"}"#),
            Verdict::Failed { reason } if reason.contains("bot token")),
    );
    assert!(
        matches!(interpret(200, &[("retry-after", "4")], r#"{"ok":false,"error":"ratelimited"}"#),
            Verdict::Retry { after: Some(after), .. } if after.as_secs() == 4),
    );
    assert!(matches!(interpret(429, &[("retry-after", "30")], ""),
            Verdict::Retry { after: Some(after), .. } if after.as_secs() == 30),);
    assert!(matches!(interpret(503, &[], "busy"), Verdict::Retry { .. }));
    assert!(
        matches!(interpret(200, &[], "<html>proxy</html>"), Verdict::Failed { reason } if reason.contains("not the Web API")),
    );
}

#[tokio::test]
async fn slack_uploaded_to_a_running_server_delivers_through_it() {
    let Some(bytes) = slack_component() else {
        return;
    };
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": true, "channel": "C1", "ts": "1.2"})),
        )
        .mount(&receiver)
        .await;
    let canopy = Canopy::start(|c| {
        c.delivery.allow_private_networks = false;
        c.delivery.egress_override = vec![format!("slack.com={}", receiver.uri()).parse().unwrap()];
    })
    .await;
    // 18 MB: over the 16 MiB default, under the 32 MiB it declares.
    assert!(bytes.len() > 16 << 20);
    let (status, uploaded) = canopy.upload("slack", bytes, "application/wasm").await;
    assert_eq!(status, StatusCode::CREATED, "{uploaded}");
    assert_eq!(uploaded["contract"], "0.2.0", "{uploaded}");
    canopy
        .integration(json!({
            "name": "Slack", "plugin": "slack", "events": ["*"],
            "settings": {"channel": "#loyalty", "include_email": true},
            "secrets": {"bot_token": SLACK_TOKEN}
        }))
        .await;
    let delivery = canopy.ingest_one(sample("gift_card.earned")).await;
    let done = canopy.delivery_with_status(&delivery, "succeeded").await;

    let requests = received(&receiver, 1).await;
    assert_eq!(requests[0].url.path(), "/api/chat.postMessage");
    assert_eq!(
        header(&requests[0], "authorization"),
        format!("Bearer {SLACK_TOKEN}")
    );
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../plugins/slack/tests/expected/gift_card.earned.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body, expected[0]["body"]);
    assert!(
        !done.to_string().contains(SLACK_TOKEN),
        "the token leaked: {done}"
    );
    canopy.stop().await;
}
