//! Property-based fuzzing (proptest) of what parses untrusted input: ingest bodies and the
//! delivery log's query strings through the real router (always a JSON answer, never a 5xx),
//! webhook header values (what is saved can be sent), event JSON into the canonical model,
//! and the generic webhook's templates and URL variables. `cargo fuzz` needs a nightly toolchain, which this project does not use;
//! proptest runs in the test command on stable. Failing inputs proptest finds are kept in
//! `proptest-regressions/` and replayed first on every run.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use canopy_events::{Event, EventKind};
use canopy_plugin_sdk::bindings::canopy::destination::types::Config as WitConfig;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use crate::harness::{ADMIN_TOKEN, INGEST_TOKEN, test_config};

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
        prop::sample::select(
            EventKind::ALL
                .iter()
                .map(|k| k.key().to_owned())
                .collect::<Vec<_>>()
        )
        .prop_map(Value::String),
        Just(json!("2026-02-06T14:30:00.000Z")),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("event".to_owned()),
                        Just("timestamp".to_owned()),
                        Just("id".to_owned()),
                        Just("customer".to_owned()),
                        Just("events".to_owned()),
                        Just("email".to_owned()),
                        "[a-z_]{1,10}",
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A sample event with one field replaced by anything.
fn mutated_sample() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(EventKind::ALL.to_vec()),
        prop::sample::select(vec![
            "id",
            "event",
            "timestamp",
            "customer",
            "amount",
            "tier",
            "extra",
        ]),
        json_value(),
    )
        .prop_map(|(kind, field, value)| {
            let mut event: Value = serde_json::from_str(kind.sample_json()).unwrap();
            event[field] = value;
            event
        })
}

struct Ingest {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    _dir: tempfile::TempDir,
}

/// One server state for every case (opening a store and compiling plugins per case would
/// make the run slow, not more thorough).
fn ingest() -> &'static Ingest {
    static INGEST: OnceLock<Ingest> = OnceLock::new();
    INGEST.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.delivery.max_ingest_body_kib = 4;
        let state = runtime
            .block_on(canopy::app::App::open(Arc::new(config)))
            .unwrap();
        Ingest {
            app: canopy::server::app(state),
            runtime,
            _dir: dir,
        }
    })
}

/// Sends a request to the shared server's router; its status and body.
fn call(request: Request<Body>) -> (StatusCode, String) {
    let ingest = ingest();
    ingest.runtime.block_on(async {
        let response = ingest.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    })
}

/// A client error in the API's JSON shape.
fn json_error(status: StatusCode, text: &str) -> Result<Value, TestCaseError> {
    prop_assert!(status.is_client_error(), "{status}: {text}");
    let answer: Value =
        serde_json::from_str(text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
    prop_assert!(answer["error"]["code"].is_string(), "{text}");
    prop_assert!(answer["error"]["message"].is_string(), "{text}");
    Ok(answer)
}

/// A query string of the delivery log's parameters (and others), with any values, repeats
/// and percent signs.
fn query_string() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "integration",
            "event",
            "customer",
            "status",
            "from",
            "to",
            "limit",
            "cursor",
        ])
        .prop_map(str::to_owned),
        "[a-z%]{1,8}",
    ];
    let value = prop_oneof![
        "-?[0-9]{0,22}",
        "[a-zA-Z0-9%+&=._:-]{0,24}",
        Just("2026-02-06T14:30:00Z".to_owned()),
        Just("%FF%FE".to_owned()),
        Just(uuid::Uuid::nil().to_string()),
    ];
    prop::collection::vec((key, value), 0..5).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

/// Posts `body` to `/v1/events`: the answer must be a success or a client error with the
/// JSON error shape — never a 5xx, never a panic.
fn post(body: Vec<u8>) -> Result<(), TestCaseError> {
    let (status, text) = call(
        Request::post("/v1/events")
            .header("authorization", format!("Bearer {INGEST_TOKEN}"))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap(),
    );
    prop_assert!(
        [
            StatusCode::OK,
            StatusCode::ACCEPTED,
            StatusCode::BAD_REQUEST,
            StatusCode::PAYLOAD_TOO_LARGE
        ]
        .contains(&status),
        "{status}: {text}"
    );
    if status.is_client_error() {
        json_error(status, &text)?;
    } else {
        let answer: Value =
            serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(
            answer["id"].is_string() || answer["events"].is_array(),
            "{text}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_delivery_log_answers_any_query_string_in_json(query in query_string()) {
        let Ok(request) = Request::get(format!("/v1/deliveries?{query}"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Body::empty())
        else {
            return Ok(()); // not a URI at all: no server ever sees it
        };
        let (status, text) = call(request);
        if status == StatusCode::OK {
            let page: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(page["deliveries"].is_array(), "{text}");
        } else {
            let answer = json_error(status, &text)?;
            prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}", answer);
        }
    }

    /// Whatever static header an admin saves can be sent: a value the host would refuse at
    /// send time is refused at save time (422), never accepted to fail every delivery.
    #[test]
    fn webhook_headers_that_are_saved_can_be_sent(
        name in prop_oneof!["[A-Za-z-]{1,12}", Just("Content-Length".to_owned()), Just("host".to_owned()), ".{1,6}"],
        value in prop_oneof![".{0,16}", "[ -~]{0,16}", Just("a\u{0}b".to_owned()), Just("x\r\ny".to_owned())],
    ) {
        let body = json!({"name": "Fuzzed", "plugin": "webhook", "events": ["tier.changed"],
                          "settings": {"url": "http://127.0.0.1:9/in", "headers": {name.clone(): value}}});
        let request = Request::post("/v1/integrations")
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let (status, text) = call(request);
        if status != StatusCode::CREATED {
            let answer = json_error(status, &text)?;
            prop_assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{}", answer);
            return Ok(());
        }
        let id = serde_json::from_str::<Value>(&text).unwrap()["id"].as_str().unwrap().to_owned();
        let test = |method: &str, path: String| {
            call(Request::builder().method(method).uri(path)
                .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                .body(Body::empty()).unwrap())
        };
        let (_, tested) = test("POST", format!("/v1/integrations/{id}/test"));
        let tested: Value = serde_json::from_str(&tested).unwrap();
        // Nothing listens on port 9: the request was built and sent, and could not connect.
        prop_assert_eq!(&tested["result"]["outcome"], "retry", "{}: {}", name, tested);
        test("DELETE", format!("/v1/integrations/{id}"));
    }

    #[test]
    fn ingest_answers_any_bytes_with_a_clear_status(body in prop::collection::vec(any::<u8>(), 0..600)) {
        post(body)?;
    }

    #[test]
    fn ingest_answers_any_json_with_a_clear_status(value in json_value()) {
        post(value.to_string().into_bytes())?;
    }

    #[test]
    fn ingest_answers_mutated_events_and_batches(
        events in prop::collection::vec(mutated_sample(), 1..4),
        batch in any::<bool>(),
    ) {
        let body = if batch { json!({ "events": events }) } else { events[0].clone() };
        post(body.to_string().into_bytes())?;
    }

    #[test]
    fn the_canonical_model_parses_or_refuses_and_keeps_what_it_parses(value in mutated_sample()) {
        let text = value.to_string();
        if let Ok(event) = Event::from_json(&text) {
            let again = Event::from_json(&serde_json::to_string(&event).unwrap()).unwrap();
            prop_assert_eq!(again, event);
        }
    }

    #[test]
    fn webhook_templates_and_url_variables_never_break_the_plugin(
        template in prop_oneof![
            "[{}%#a-z _.\"\\\\:,\\[\\]0-9-]{0,40}",
            "\\{\"x\": \\{\\{ [a-z_.]{1,16} \\}\\}\\}",
            "\\{% (if|for|set) [a-z .=]{0,12} %\\}.{0,10}",
        ],
        path_variable in prop_oneof![
            Just("customer.email".to_owned()),
            "[a-z_.]{1,16}",
            ".{0,12}",
        ],
        email in ".{0,20}",
        method in prop::sample::select(vec!["POST", "PUT", "PATCH", "GET", ""]),
    ) {
        let settings = json!({
            "url": format!("https://hooks.example.com/{{{{ {path_variable} }}}}/x"),
            "method": method,
            "templates": { "*": template },
        });
        let config = WitConfig {
            settings: settings.to_string(),
            secrets_present: vec![],
        };
        let _ = canopy_plugin_sdk::adapter::validate_config::<canopy_plugin_webhook::Webhook>(config.clone());
        let mut event: Value = serde_json::from_str(EventKind::TierChanged.sample_json()).unwrap();
        event["customer"]["email"] = json!(email);
        let result = canopy_plugin_sdk::adapter::transform::<canopy_plugin_webhook::Webhook>(
            event.to_string(),
            config,
        );
        if let Ok(requests) = result {
            for request in requests {
                // Whatever the variables hold, the host stays the configured one.
                let url = url::Url::parse(&request.url)
                    .map_err(|e| TestCaseError::fail(format!("{}: {e}", request.url)))?;
                prop_assert_eq!(url.host_str(), Some("hooks.example.com"));
            }
        }
    }
}
