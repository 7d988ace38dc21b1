//! The sandbox through the real runtime: the contract's four calls on a real plugin, every
//! hostile behaviour failing with its typed error while the host keeps serving, loading
//! checks, and isolation of warm instances.

use std::sync::Arc;
use std::time::Duration;

use canopy::runtime::{
    Header, LoadError, Method, Needs, Plugin, PluginConfig, PluginError, PluginResponse, Refusal,
    Runtime, Scope, Segment, SignatureRequest, Verdict,
};
use canopy_test_support::{
    BAD_DESCRIBE, CONTRACT_NEXT, ECHO_V1, ECHO_V2, HOSTILE, NOT_A_DESTINATION, SAMPLE_EVENT,
    TEMPLATE, WRONG_WORLD, component,
};
use serde_json::json;

use crate::{event_with_id, files_under, load, mode, runtime, server_limits, test_limits};

fn template_config(secrets: &[&str]) -> PluginConfig {
    PluginConfig {
        settings: json!({"url": "https://hooks.example.com/loyalty"}),
        secrets_present: secrets.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn text(value: &str) -> Vec<Segment> {
    vec![Segment::Text(value.to_owned())]
}

#[test]
fn describe_reports_the_template_plugin() {
    let runtime = runtime();
    let plugin = load(&runtime, TEMPLATE);
    let info = plugin.info();
    assert_eq!(info.id, "template");
    assert_eq!(info.version, "0.1.0");
    assert_eq!(info.events, ["*"]);
    assert_eq!(info.allowed_hosts, ["settings:url"]);
    let names: Vec<_> = info.settings.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["url", "require_email", "token", "signing_secret"]);
    assert!(info.settings[0].required && !info.settings[0].secret);
    assert!(info.settings[2].secret);
    assert_eq!(info.settings[1].default_value.as_deref(), Some("false"));
    assert!(plugin.digest().starts_with("sha256:") && plugin.digest().len() == 71);
}

#[test]
fn validate_config_returns_the_plugins_messages() {
    let runtime = runtime();
    let plugin = load(&runtime, TEMPLATE);
    let ok = plugin
        .validate_config(Scope::Fresh, &template_config(&[]))
        .unwrap();
    assert!(ok.value.is_empty(), "{:?}", ok.value);

    let missing = plugin
        .validate_config(Scope::Fresh, &PluginConfig::default())
        .unwrap()
        .value;
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].field, "url");
    assert_eq!(missing[0].message, "Endpoint URL is required");

    let bad = PluginConfig {
        settings: json!({"url": "ftp://files.example.com"}),
        secrets_present: vec![],
    };
    let bad = plugin.validate_config(Scope::Fresh, &bad).unwrap().value;
    assert_eq!(
        bad[0].message,
        "Endpoint URL must start with https:// or http://"
    );
}

#[test]
fn transform_builds_the_request_with_secret_references_and_signing() {
    let runtime = runtime();
    let plugin = load(&runtime, TEMPLATE);
    let call = plugin
        .transform(
            Scope::Fresh,
            SAMPLE_EVENT,
            &template_config(&["token", "signing_secret"]),
        )
        .unwrap();
    let requests = call.value.expect("not refused");
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, Method::Post);
    assert_eq!(request.url, "https://hooks.example.com/loyalty");
    assert_eq!(
        request.headers,
        vec![
            Header {
                name: "Content-Type".into(),
                value: text("application/json")
            },
            Header {
                name: "X-Event-Type".into(),
                value: text("seeds.earned.order")
            },
            Header {
                name: "X-Event-Name".into(),
                value: text("Seeds Earned Order")
            },
            Header {
                name: "Authorization".into(),
                value: vec![
                    Segment::Text("Bearer ".into()),
                    Segment::Secret("token".into())
                ],
            },
        ]
    );
    assert_eq!(
        request.signatures,
        vec![SignatureRequest::HmacSha256Hex {
            header: "X-Signature".into(),
            secret: "signing_secret".into()
        }]
    );
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    let sample: serde_json::Value = serde_json::from_str(SAMPLE_EVENT).unwrap();
    assert_eq!(body, sample, "the body is the canonical event");
    assert!(call.usage.fuel > 0 && call.usage.memory_bytes > 0);
    assert!(
        call.usage.fuel < 1_000_000,
        "a transform is cheap: {}",
        call.usage.fuel
    );

    // Without secrets set, no reference to them is emitted.
    let call = plugin
        .transform(Scope::Fresh, SAMPLE_EVENT, &template_config(&[]))
        .unwrap();
    let request = &call.value.unwrap()[0];
    assert!(request.headers.iter().all(|h| h.name != "Authorization"));
    assert!(request.signatures.is_empty());
}

#[test]
fn transform_refusals_are_typed() {
    let runtime = runtime();
    let plugin = load(&runtime, TEMPLATE);
    let anonymous = r#"{"id":"1","event":"tier.changed","timestamp":"2026-02-06T14:30:00Z","customer":{},"old_tier":"Silver","new_tier":"Gold"}"#;
    let config = PluginConfig {
        settings: json!({"url": "https://hooks.example.com/x", "require_email": true}),
        secrets_present: vec![],
    };
    let refused = plugin
        .transform(Scope::Fresh, anonymous, &config)
        .unwrap()
        .value;
    assert_eq!(
        refused,
        Err(Refusal::Skip("the customer has no email".into()))
    );

    let not_an_event = plugin
        .transform(Scope::Fresh, r#"{"event":"seeds.lost"}"#, &config)
        .unwrap()
        .value
        .unwrap_err();
    let Refusal::InvalidEvent(reason) = not_an_event else {
        panic!("expected invalid event, got {not_an_event:?}")
    };
    assert!(
        reason.contains("unknown event type `seeds.lost`"),
        "{reason}"
    );

    let no_url = plugin
        .transform(Scope::Fresh, SAMPLE_EVENT, &PluginConfig::default())
        .unwrap()
        .value;
    assert_eq!(
        no_url,
        Err(Refusal::InvalidConfig("Endpoint URL is required".into()))
    );
}

#[test]
fn interpret_maps_responses_to_verdicts() {
    let runtime = runtime();
    let plugin = load(&runtime, TEMPLATE);
    let verdict = |status: u16, headers: &[(&str, &str)], body: &str| {
        crate::verdict(&plugin, status, headers, body)
    };
    assert_eq!(verdict(202, &[], ""), Verdict::Delivered);
    assert_eq!(
        verdict(429, &[("Retry-After", "30")], ""),
        Verdict::Retry {
            after: Some(Duration::from_secs(30)),
            reason: "HTTP 429".into()
        }
    );
    assert_eq!(
        verdict(503, &[], ""),
        Verdict::Retry {
            after: None,
            reason: "HTTP 503".into()
        }
    );
    assert_eq!(
        verdict(422, &[], r#"{"error":"bad email"}"#),
        Verdict::Failed {
            reason: r#"HTTP 422: {"error":"bad email"}"#.into()
        }
    );
}

/// Each hostile behaviour fails with its own typed error, and the same plugin then serves a
/// normal call: a broken call harms nothing else. With fuel metered, a loop exhausts fuel;
/// with the server's defaults, the time limit stops it.
#[test]
fn hostile_calls_fail_with_typed_errors_and_the_host_goes_on() {
    hostile_calls_under(test_limits());
    hostile_calls_under(server_limits());
}

fn hostile_calls_under(limits: canopy::runtime::Limits) {
    let runtime = Runtime::new(limits.clone()).unwrap();
    let plugin = load(&runtime, HOSTILE);
    let run = |m: &str| plugin.transform(Scope::Integration("i-1"), SAMPLE_EVENT, &mode(m));
    let ok = || {
        let call = run("ok").expect("a normal call after a failure succeeds");
        let requests = call.value.unwrap();
        assert_eq!(requests[0].url, "https://hostile.test/ok");
    };

    type Expectation<'a> = Box<dyn Fn(&PluginError) -> bool + 'a>;
    let cases: Vec<(&str, Expectation)> = vec![
        (
            "loop",
            Box::new(|e| match limits.fuel_per_call {
                Some(budget) => matches!(e, PluginError::CpuBudget { fuel } if *fuel == budget),
                None => {
                    matches!(e, PluginError::TimeLimit { limit } if *limit == limits.call_time_limit)
                }
            }),
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
                |e| matches!(e, PluginError::OutputTooLarge { size, limit } if *size > 12 << 20 && *limit == limits.output_bytes),
            ),
        ),
        (
            "panic",
            Box::new(|e| {
                matches!(e, PluginError::Trap { message, stderr, backtrace }
            if message.contains("unreachable")
            && stderr.contains("hostile plugin panicked on purpose")
            && backtrace.contains("transform"))
            }),
        ),
        (
            "sleep",
            Box::new(|e| matches!(e, PluginError::Forbidden(what) if what.contains("sleep"))),
        ),
        (
            "bad-url",
            Box::new(|e| matches!(e, PluginError::InvalidOutput(m) if m.contains("not a url"))),
        ),
        (
            "bad-header",
            Box::new(|e| matches!(e, PluginError::InvalidOutput(m) if m.contains("header name"))),
        ),
    ];
    for (m, expected) in &cases {
        ok();
        let error = run(m).expect_err(m);
        assert!(expected(&error), "mode {m}: unexpected error {error:?}");
        assert!(!error.to_string().is_empty());
    }
    ok();
}

/// Stderr is bounded per call without ever failing the guest's writes, and a trap quotes
/// only its own call's output, even in a warm instance that served chatty calls before.
#[test]
fn stderr_is_bounded_and_belongs_to_the_failing_call() {
    let runtime = runtime();
    let plugin = load(&runtime, HOSTILE);
    for _ in 0..3 {
        let call = plugin
            .transform(Scope::Integration("chatty"), SAMPLE_EVENT, &mode("chatty"))
            .expect("writing 70 KB to stderr does not fail the call");
        assert_eq!(call.value.unwrap()[0].url, "https://hostile.test/chatty");
    }
    match plugin.transform(Scope::Integration("chatty"), SAMPLE_EVENT, &mode("panic")) {
        Err(PluginError::Trap { stderr, .. }) => {
            assert!(
                stderr.contains("hostile plugin panicked on purpose"),
                "{stderr}"
            );
            assert!(!stderr.contains("chatty plugin"), "{stderr}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn a_call_past_the_time_limit_is_interrupted() {
    let limits = canopy::runtime::Limits {
        call_time_limit: Duration::from_millis(50),
        ..server_limits()
    };
    let runtime = Runtime::new(limits).unwrap();
    let plugin = load(&runtime, HOSTILE);
    let error = plugin
        .transform(Scope::Fresh, SAMPLE_EVENT, &mode("loop"))
        .unwrap_err();
    assert!(
        matches!(error, PluginError::TimeLimit { limit } if limit == Duration::from_millis(50)),
        "{error:?}"
    );
}

/// From async code a call runs off the runtime's threads: on a single-threaded runtime a task
/// beside a 300 ms call runs while the call goes on. A call that outgrows its first slice
/// (10–20 ms) is run again to the whole time limit: the 300 ms call succeeds, and an endless
/// one ends as TimeLimit only once the limit has passed. Guests writing to stderr (a chatty
/// plugin, a panic) work from async code too: WASI's synchronous streams block on a runtime
/// of their own, which a tokio thread would refuse.
#[tokio::test(flavor = "current_thread")]
async fn from_async_code_calls_run_off_the_runtime_and_long_ones_get_their_whole_limit() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let limit = Duration::from_millis(1_000);
    let limits = canopy::runtime::Limits {
        call_time_limit: limit,
        ..server_limits()
    };
    let runtime = Runtime::new(limits).unwrap();
    let plugin = load(&runtime, HOSTILE);

    // The call's result, and how often the runtime's one thread ran a task beside it.
    async fn beside(
        plugin: &Arc<Plugin>,
        mode: &str,
    ) -> (
        Result<Vec<canopy::runtime::PluginRequest>, PluginError>,
        u64,
    ) {
        let done = Arc::new(AtomicBool::new(false));
        let turns = Arc::new(AtomicU64::new(0));
        let counter = tokio::spawn({
            let (done, turns) = (done.clone(), turns.clone());
            async move {
                while !done.load(Ordering::SeqCst) {
                    turns.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
            }
        });
        tokio::task::yield_now().await; // the counter starts
        let before = turns.load(Ordering::SeqCst);
        let result = plugin
            .clone()
            .transform_async(
                "integration".into(),
                SAMPLE_EVENT.into(),
                std::sync::Arc::new(self::mode(mode)),
            )
            .await
            .map(|call| call.value.expect("no refusal"));
        let during = turns.load(Ordering::SeqCst) - before;
        done.store(true, Ordering::SeqCst);
        counter.await.unwrap();
        (result, during)
    }

    // Each case that outgrows its slice runs on a version of its own: after one, a version's
    // next calls skip the plugin threads.
    let (short, _) = beside(&plugin, "spin:2").await;
    assert_eq!(short.unwrap()[0].url, "https://hostile.test/spun");

    // On the plugin threads (nothing outgrew a slice on this version).
    for noisy in ["chatty", "panic"] {
        let (result, _) = beside(&plugin, noisy).await;
        match (noisy, result) {
            ("chatty", Ok(requests)) => assert_eq!(requests[0].url, "https://hostile.test/chatty"),
            ("panic", Err(PluginError::Trap { stderr, .. })) => {
                assert!(stderr.contains("panicked on purpose"), "{stderr}")
            }
            (mode, other) => panic!("{mode}: {other:?}"),
        }
    }

    let (long, turns) = beside(&load(&runtime, HOSTILE), "spin:300").await;
    assert_eq!(
        long.unwrap()[0].url,
        "https://hostile.test/spun",
        "run again past its slice"
    );
    assert!(
        turns > 0,
        "the runtime's thread was held for the whole call"
    );

    let started = std::time::Instant::now();
    let (endless, _) = beside(&load(&runtime, HOSTILE), "loop").await;
    assert!(
        matches!(endless, Err(PluginError::TimeLimit { limit: l }) if l == limit),
        "{endless:?}"
    );
    // Stopped at its first slice, it would have ended after 10–20 ms.
    assert!(
        started.elapsed() >= limit / 2,
        "stopped after {:?}, long before its whole limit",
        started.elapsed()
    );
}

#[test]
fn plugin_logs_are_collected_per_call() {
    let runtime = runtime();
    let plugin = load(&runtime, HOSTILE);
    let call = plugin
        .transform(Scope::Fresh, SAMPLE_EVENT, &mode("log"))
        .unwrap();
    assert_eq!(call.usage.logs.len(), 1);
    assert_eq!(call.usage.logs[0].level, "info");
    assert_eq!(
        call.usage.logs[0].message,
        "transforming seeds.earned.order"
    );
}

#[test]
fn loading_refuses_what_is_not_a_destination_plugin() {
    let runtime = runtime();
    let load_err = |bytes: &[u8]| runtime.load(bytes).err().expect("refused");

    assert!(matches!(
        load_err(b"definitely not wasm"),
        LoadError::NotWasm
    ));
    assert!(matches!(
        load_err(b"\0asm\x01\0\0\0"),
        LoadError::NotAComponent
    ));
    assert!(matches!(
        load_err(b"\0asm\x0d\0\x01\0garbage-section"),
        LoadError::Compile(_)
    ));

    match load_err(&component(WRONG_WORLD)) {
        LoadError::ContractVersion { found } => {
            assert_eq!(found, "canopy:destination@9.0.0")
        }
        other => panic!("expected a contract version error, got {other:?}"),
    }

    match load_err(&component(NOT_A_DESTINATION)) {
        LoadError::WrongWorld(detail) => {
            assert!(
                detail.contains("does not export canopy:destination/plugin@0.2.0"),
                "{detail}"
            );
            assert!(detail.contains("wasi:cli/run"), "{detail}");
        }
        other => panic!("expected a wrong-world error, got {other:?}"),
    }

    match load_err(&component(BAD_DESCRIBE)) {
        LoadError::Describe(PluginError::Trap { stderr, .. }) => {
            assert!(stderr.contains("describe is broken"), "{stderr}")
        }
        other => panic!("expected describe to trap, got {other:?}"),
    }

    let small = Runtime::new(canopy::runtime::Limits {
        component_bytes: 1000,
        component_cap_bytes: 1000,
        ..test_limits()
    })
    .unwrap();
    let error = small.load(&component(TEMPLATE)).err().expect("too large");
    assert!(
        matches!(error, LoadError::TooLarge { limit: 1000, size } if size > 1000),
        "{error:?}"
    );
    assert!(error.to_string().contains("over the limit of 1000 bytes"));

    // Under the operator's cap but over the default, and the plugin declared no need.
    let capped = Runtime::new(canopy::runtime::Limits {
        component_bytes: 1000,
        ..test_limits()
    })
    .unwrap();
    let error = capped.load(&component(TEMPLATE)).err().expect("too large");
    assert!(
        matches!(error, LoadError::LargerThanDeclared { limit: 1000, size, cap: 64 } if size > 1000),
        "{error:?}"
    );
    assert!(error.to_string().contains("needs.component-mib"), "{error}");
}

/// A plugin's declared needs are granted up to the operator's caps: echo v2 asks for 96 MiB
/// of memory, more than the 64 MiB default; v1 asks nothing.
#[test]
fn declared_needs_are_granted_within_the_caps_and_refused_past_them() {
    let runtime = runtime();
    let v1 = load(&runtime, ECHO_V1);
    assert_eq!(v1.info().needs, Needs::default());
    assert_eq!(v1.memory_limit(), runtime.limits().memory_bytes);
    let v2 = load(&runtime, ECHO_V2);
    assert_eq!(v2.info().needs.memory_mib, Some(96));
    assert_eq!(v2.memory_limit(), 96 << 20);

    let tight = Runtime::new(canopy::runtime::Limits {
        memory_cap_bytes: 80 << 20,
        ..test_limits()
    })
    .unwrap();
    let error = tight.load(&component(ECHO_V2)).err().expect("over the cap");
    assert!(
        matches!(
            error,
            LoadError::NeedsOverCap {
                what: "memory",
                asked: 96,
                cap: 80,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("--plugin-memory-cap-mib"),
        "{error}"
    );
    assert!(tight.load(&component(ECHO_V1)).is_ok());
}

/// Warm instances serve only the integration they started with; they are dropped after an
/// error and recycled after a bounded number of calls.
#[test]
fn warm_instances_never_carry_data_across_integrations() {
    let runtime = Runtime::new(canopy::runtime::Limits {
        calls_per_instance: 3,
        ..test_limits()
    })
    .unwrap();
    let plugin = load(&runtime, HOSTILE);
    let previous = |scope: Scope<'_>, id: &str| {
        let call = plugin
            .transform(scope, &event_with_id(id), &mode("remember"))
            .unwrap();
        let request = &call.value.unwrap()[0];
        let header = request
            .headers
            .iter()
            .find(|h| h.name == "X-Previous-Event")
            .unwrap();
        (header.redacted_value(), call.usage.warm)
    };

    assert_eq!(
        previous(Scope::Integration("a"), "a-1"),
        ("none".into(), false)
    );
    // Another integration never sees a's event, even though a's instance is idle.
    assert_eq!(
        previous(Scope::Integration("b"), "b-1"),
        ("none".into(), false)
    );
    assert_eq!(previous(Scope::Fresh, "f-1"), ("none".into(), false));
    // The same integration does reuse its warm instance (so the checks above are not vacuous).
    assert_eq!(
        previous(Scope::Integration("a"), "a-2"),
        ("a-1".into(), true)
    );
    assert_eq!(
        previous(Scope::Integration("a"), "a-3"),
        ("a-2".into(), true)
    );
    // Third call on that instance: it is recycled, the next call starts fresh.
    assert_eq!(
        previous(Scope::Integration("a"), "a-4"),
        ("none".into(), false)
    );

    // After an error the instance is gone too.
    assert_eq!(
        previous(Scope::Integration("b"), "b-2"),
        ("b-1".into(), true)
    );
    plugin
        .transform(Scope::Integration("b"), SAMPLE_EVENT, &mode("panic"))
        .unwrap_err();
    assert_eq!(
        previous(Scope::Integration("b"), "b-3"),
        ("none".into(), false)
    );
    assert!(runtime.warm_instances() >= 1);
}

/// A plugin stuck in a loop on one thread does not stop others from being served.
#[test]
fn concurrent_calls_are_independent() {
    let runtime = runtime();
    let plugin = load(&runtime, HOSTILE);
    std::thread::scope(|s| {
        let looping: Vec<_> = (0..2)
            .map(|_| s.spawn(|| plugin.transform(Scope::Fresh, SAMPLE_EVENT, &mode("loop"))))
            .collect();
        let healthy: Vec<_> = (0..8)
            .map(|i| {
                let plugin = &plugin;
                s.spawn(move || {
                    let scope = format!("integration-{i}");
                    plugin.transform(Scope::Integration(&scope), SAMPLE_EVENT, &mode("ok"))
                })
            })
            .collect();
        for handle in healthy {
            assert!(handle.join().unwrap().unwrap().value.is_ok());
        }
        for handle in looping {
            assert!(matches!(
                handle.join().unwrap(),
                Err(PluginError::CpuBudget { .. })
            ));
        }
    });
}

/// A restart loads the native code it compiled before instead of compiling again: the second
/// runtime on the same cache loads the template precompiled and it answers exactly as the
/// compiled one. Only authentic files are used: a damaged file, or one written under another
/// key, is compiled again and replaced. A refused component leaves nothing; what another
/// engine left, and the code of components no longer stored, are removed.
#[test]
fn compiled_components_are_kept_and_mapped_back_on_the_next_start() {
    use canopy::runtime::Compilation;
    const KEY: [u8; 32] = [1; 32];
    let cache = tempfile::tempdir().unwrap();
    let other_engine = cache.path().join("0123456789abcdef");
    std::fs::create_dir_all(&other_engine).unwrap();
    std::fs::write(other_engine.join("old.cwasm"), b"left by another binary").unwrap();
    let start = |key: [u8; 32]| {
        Runtime::with_compiled_cache(test_limits(), Some((cache.path(), key))).unwrap()
    };
    let transform = |runtime: &Runtime| {
        let plugin = load(runtime, TEMPLATE);
        let call = plugin
            .transform(Scope::Fresh, SAMPLE_EVENT, &template_config(&["token"]))
            .unwrap();
        (plugin.compilation(), format!("{:?}", call.value))
    };

    // A component the runtime refuses is not kept.
    assert!(start(KEY).load(&component(WRONG_WORLD)).is_err());
    assert!(
        !other_engine.exists(),
        "another engine's directory is removed"
    );
    assert_eq!(files_under(cache.path()), Vec::<std::path::PathBuf>::new());

    let (first, compiled_answer) = transform(&start(KEY));
    assert_eq!(first, Compilation::Compiled);
    let files = files_under(cache.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    let digest = load(&runtime(), TEMPLATE).digest().to_owned();
    assert_eq!(
        file.file_name().unwrap().to_str().unwrap(),
        format!("{}.cwasm", digest.strip_prefix("sha256:").unwrap())
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(file), 0o600);
        assert_eq!(mode(file.parent().unwrap()), 0o700);
    }

    let (second, precompiled_answer) = transform(&start(KEY));
    assert_eq!(second, Compilation::Precompiled);
    assert_eq!(precompiled_answer, compiled_answer);

    // Under another key (a rotated master key, or a file planted by someone without it) the
    // file is not used, and is replaced under the new key.
    assert_eq!(transform(&start([2; 32])).0, Compilation::Compiled);
    assert_eq!(transform(&start([2; 32])).0, Compilation::Precompiled);
    assert_eq!(transform(&start(KEY)).0, Compilation::Compiled);

    let mut damaged = std::fs::read(file).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    std::fs::write(file, damaged).unwrap();
    let (third, answer) = transform(&start(KEY));
    assert_eq!(
        third,
        Compilation::Compiled,
        "a damaged file is compiled again"
    );
    assert_eq!(answer, compiled_answer);
    assert_eq!(
        transform(&start(KEY)).0,
        Compilation::Precompiled,
        "and replaced"
    );
    assert_eq!(
        files_under(cache.path()).len(),
        1,
        "no temporary file is left"
    );

    let runtime = start(KEY);
    runtime.retain_compiled(&[digest].into_iter().collect());
    assert_eq!(
        files_under(cache.path()).len(),
        1,
        "a stored component stays"
    );
    runtime.retain_compiled(&Default::default());
    assert_eq!(
        files_under(cache.path()).len(),
        0,
        "one no longer stored goes"
    );
}

/// A plugin built against a newer compatible release of contract 0.1 (`plugin@0.1.1`, with a
/// function this host does not know) loads and runs beside plugins built against 0.2 (the
/// SDK's, here the template), in one runtime; one built against an incompatible contract
/// does not (see `loading_refuses_what_is_not_a_destination_plugin`).
#[test]
fn plugins_of_both_contract_versions_load_and_run_side_by_side() {
    let runtime = runtime();
    let plugin = load(&runtime, CONTRACT_NEXT);
    assert_eq!(plugin.id(), "contract-next");
    assert_eq!(plugin.contract(), "0.1.0");
    assert_eq!(plugin.info().needs, Needs::default());
    let current = load(&runtime, TEMPLATE);
    assert_eq!(current.contract(), "0.2.0");
    let settings = &template_config(&[]);
    let both = [&plugin, &current].map(|p| {
        p.transform(Scope::Integration("side-by-side"), SAMPLE_EVENT, settings)
            .unwrap()
            .value
            .unwrap()
    });
    // contract-next sends the event as it came; the template, its JSON re-serialised.
    assert_eq!(both[0][0].url, "https://hooks.example.com/loyalty");
    assert_eq!(both[0][0].body, SAMPLE_EVENT.as_bytes());
    assert_eq!(both[1][0].url, "https://hooks.example.com/loyalty");
    assert_ne!(both[1][0].body, both[0][0].body);

    // Each of the 0.1 plugin's answers comes through the conversion to 0.2's types.
    let no_url = PluginConfig::default();
    let refusal = plugin
        .transform(Scope::Fresh, SAMPLE_EVENT, &no_url)
        .unwrap()
        .value
        .unwrap_err();
    assert_eq!(refusal, Refusal::InvalidConfig("url is required".into()));
    assert!(
        plugin
            .validate_config(Scope::Fresh, &no_url)
            .unwrap()
            .value
            .is_empty()
    );
    let interpret = |status| {
        plugin
            .interpret(
                Scope::Fresh,
                &PluginResponse {
                    status,
                    headers: Vec::new(),
                    body: Vec::new(),
                },
            )
            .unwrap()
            .value
    };
    assert_eq!(interpret(204), Verdict::Delivered);
    assert_eq!(
        interpret(500),
        Verdict::Failed {
            reason: "HTTP 500".into()
        }
    );
}
