//! The defects an attack on the running server found, each through the real server: what
//! ingest validates is what it keeps; a full disk answers 503 and the store recovers by
//! itself; proxies cannot bypass the internal-address guard; slow clients cannot hold every
//! connection; requests cannot carry framing headers or settings that make every delivery
//! fail; URL variables cannot remove path segments; numbers stay exact; every answer has the
//! JSON error shape; the bearer scheme is case-insensitive; URL credentials never show; a
//! destination that stays down is disabled (without dropping anything); IPv6 transition
//! addresses lead where their IPv4 address does.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{
    ADMIN_TOKEN, Canopy, INGEST_TOKEN, MASTER_KEY, PATIENCE, accepting, fresh, received, sample,
    seen_ids, start_with, webhook,
};

async fn integration_state(canopy: &Canopy, id: &str) -> Value {
    let (status, state) = canopy
        .admin(Method::GET, &format!("/v1/integrations/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{state}");
    state
}

// ---- 1. what is validated is what is kept ----------------------------------------------------

#[tokio::test]
async fn a_timestamp_is_kept_as_validated_and_an_unbuildable_request_is_not_the_destinations_failure()
 {
    let receiver = accepting().await;
    let route = format!("echo.test={}", receiver.uri()).parse().unwrap();
    let canopy = Canopy::start(|c| {
        c.delivery.egress_override = vec![route];
        c.delivery.auto_disable_after = 3;
    })
    .await;
    for padded in [
        "2026-02-06T14:30:00Z\n",
        " 2026-02-06T14:30:00Z",
        "2026-02-06 14:30:00Z",
    ] {
        let mut event = fresh("tier.changed");
        event["timestamp"] = json!(padded);
        let (status, error) = canopy.ingest(event).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{padded:?}: {error}");
        assert_eq!(error["error"]["code"], "invalid_timestamp");
    }

    // The echo plugin copies the customer's first name into a header: with a control
    // character in it, the host cannot send that request. The event is valid; the
    // destination did nothing wrong.
    let echo = canopy_test_support::component(canopy_test_support::ECHO_V1);
    let (status, _) = canopy.upload("echo", echo, "application/wasm").await;
    assert_eq!(status, StatusCode::CREATED);
    let integration = canopy
        .integration(json!({"name": "Echo", "plugin": "echo", "events": ["*"]}))
        .await;
    for _ in 0..4 {
        let mut event = fresh("tier.changed");
        event["customer"]["first_name"] = json!("Jane\u{1}");
        let delivery = canopy.ingest_one(event).await;
        let failed = canopy.delivery_with_status(&delivery, "failed").await;
        let error = failed["last_error"].as_str().unwrap();
        assert!(error.contains("control characters"), "{error}");
    }
    let state = integration_state(&canopy, &integration).await;
    assert_eq!(state["enabled"], true, "{state}");
    assert_eq!(state["consecutive_failures"], 0, "{state}");
    let good = canopy.ingest_one(fresh("tier.changed")).await;
    canopy.delivery_with_status(&good, "succeeded").await;
    assert_eq!(received(&receiver, 1).await.len(), 1);
    canopy.stop().await;
}

// ---- 2. a full disk ----------------------------------------------------------------------------

/// A tmpfs of `size` mounted on a temporary directory, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (after saying so loudly) where this process may not mount file systems.
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::piped())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(SmallDisk { dir }),
            other => {
                eprintln!(
                    "\n*** SKIPPED: the full-disk test needs to mount a tmpfs (root): {other:?}\n"
                );
                None
            }
        }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Fills the disk with a ballast file until a write fails, then gives back `leave` bytes:
    /// a disk as full as another program would leave it.
    fn fill(&self, leave: u64) -> std::path::PathBuf {
        let ballast = self.path().join("ballast");
        let mut file = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![7u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        while file.write_all(&[7u8; 512]).is_ok() {}
        let length = file.metadata().unwrap().len();
        file.set_len(length.saturating_sub(leave)).unwrap();
        let _ = file.sync_all();
        ballast
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_the_store_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount("64m") else {
        return;
    };
    let receiver = accepting().await;
    let data = disk.path().join("data");
    let canopy = Canopy::start_embedded(&data, |_| {}).await;
    // Signed, so that each request carries its delivery id (`webhook-id`).
    let mut signed = webhook(format!("{}/in", receiver.uri()));
    signed["secrets"] = json!({"webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"});
    canopy.integration(signed).await;
    let mut acknowledged = Vec::new();
    acknowledged.push(canopy.ingest_one(fresh("tier.changed")).await);

    // Less room left than Canopy keeps in reserve (16 MiB).
    let ballast = disk.fill(6 << 20);
    // Ingest until the store can no longer write: a 503 with Retry-After, never a 500.
    let client = reqwest::Client::new();
    let mut refused = None;
    for _ in 0..2_000 {
        let events: Vec<Value> = (0..20).map(|_| fresh("review.submitted")).collect();
        let response = client
            .post(format!("{}/v1/events", canopy.url))
            .bearer_auth(INGEST_TOKEN)
            .json(&json!({ "events": events }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let retry_after = response.headers().get("retry-after").cloned();
        let answer: Value = response.json().await.unwrap();
        if status == StatusCode::ACCEPTED {
            for event in answer["events"].as_array().unwrap() {
                acknowledged.push(event["deliveries"][0]["id"].as_str().unwrap().to_owned());
            }
            continue;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
        assert!(retry_after.is_some(), "503 without Retry-After");
        assert_eq!(answer["error"]["code"], "store_unavailable", "{answer}");
        refused = Some(answer);
        break;
    }
    assert!(refused.is_some(), "the disk never filled");
    let health = client
        .get(format!("{}/healthz", canopy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(health.headers().get("retry-after").is_some());
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["status"], "unavailable", "{health}");
    assert!(health["reason"].as_str().unwrap().len() > 10, "{health}");

    // Space returns: the server takes events again by itself, and loses nothing.
    std::fs::remove_file(ballast).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let health = client
            .get(format!("{}/healthz", canopy.url))
            .send()
            .await
            .unwrap();
        if health.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the store never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    acknowledged.push(canopy.ingest_one(fresh("tier.changed")).await);
    for id in &acknowledged {
        canopy.delivery_with_status(id, "succeeded").await;
    }
    let seen = seen_ids(&receiver).await;
    assert!(acknowledged.iter().all(|id| seen.contains(id)));
    canopy.stop().await;
}

// ---- 3. proxies ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_of_the_environment_are_ignored_and_a_configured_one_still_checks_destinations() {
    let proxy = accepting().await;
    // The real binary, with every proxy variable pointing at a proxy that accepts anything.
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("HTTP_PROXY", proxy.uri()),
        ("HTTPS_PROXY", proxy.uri()),
        ("ALL_PROXY", proxy.uri()),
        ("http_proxy", proxy.uri()),
        ("CANOPY_ALLOW_PRIVATE_NETWORKS", "false".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = start_with(data.path(), MASTER_KEY, Stdio::null(), &env).await;
    let internal = webhook("http://localhost:9/internal".into());
    let (status, created) = server
        .call(
            Method::POST,
            "/v1/integrations",
            ADMIN_TOKEN,
            Some(internal),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (_, answer) = server
        .call(
            Method::POST,
            "/v1/events",
            INGEST_TOKEN,
            Some(fresh("tier.changed")),
        )
        .await;
    let delivery = answer["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + PATIENCE;
    let failed = loop {
        let path = format!("/v1/deliveries/{delivery}");
        let (_, d) = server.call(Method::GET, &path, ADMIN_TOKEN, None).await;
        if d["status"] != "pending" {
            break d;
        }
        assert!(Instant::now() < deadline, "{d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["last_error"].as_str().unwrap().contains("internal"),
        "{failed}"
    );
    server.child.kill().unwrap();
    let _ = server.child.wait();
    assert!(
        proxy.received_requests().await.unwrap().is_empty(),
        "nothing went through the environment's proxy"
    );

    // A proxy configured for Canopy: the destination is still checked first...
    let canopy = Canopy::start(|c| {
        c.delivery.allow_private_networks = false;
        c.delivery.egress_proxy = Some(proxy.uri().parse().unwrap());
    })
    .await;
    canopy
        .integration(webhook("http://localhost:9/internal".into()))
        .await;
    let delivery = canopy.ingest_one(fresh("tier.changed")).await;
    let failed = canopy.delivery_with_status(&delivery, "failed").await;
    assert!(
        failed["last_error"].as_str().unwrap().contains("internal"),
        "{failed}"
    );
    assert!(proxy.received_requests().await.unwrap().is_empty());
    canopy.stop().await;
    // ...and a destination that passes the check goes through it.
    let canopy = Canopy::start(|c| {
        c.delivery.egress_proxy = Some(proxy.uri().parse().unwrap());
    })
    .await;
    canopy
        .integration(webhook("http://localhost:9/through-the-proxy".into()))
        .await;
    let delivery = canopy.ingest_one(fresh("tier.changed")).await;
    canopy.delivery_with_status(&delivery, "succeeded").await;
    let through = received(&proxy, 1).await;
    assert_eq!(through[0].url.path(), "/through-the-proxy");
    canopy.stop().await;
}

// ---- 4. slow clients ----------------------------------------------------------------------------

/// Sockets the process `pid` holds open.
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_half_sent_requests_are_bounded_and_timed_out() {
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("CANOPY_MAX_CONNECTIONS", "20"),
        ("CANOPY_HEADER_TIMEOUT", "1s"),
    ];
    let mut server = start_with(data.path(), MASTER_KEY, Stdio::null(), &env).await;
    let address = server.url.trim_start_matches("http://").to_owned();
    let before = sockets_of(server.child.id());
    let slow: Vec<TcpStream> = (0..60)
        .map(|_| {
            let mut stream = TcpStream::connect(&address).unwrap();
            stream
                .write_all(b"POST /v1/events HTTP/1.1\r\nHost: canopy\r\nContent-Type: app")
                .unwrap();
            stream
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = sockets_of(server.child.id());
    assert!(
        held <= before + 20,
        "60 slow clients, a cap of 20: the server holds {held} sockets (it held {before} before)"
    );

    // A real client still gets its answer: places free up as the slow heads time out.
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/events", server.url))
        .bearer_auth(INGEST_TOKEN)
        .json(&fresh("tier.changed"))
        .timeout(PATIENCE)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::ACCEPTED);

    // And the slow ones were closed by the server: each read ends.
    let closed = tokio::task::spawn_blocking(move || {
        slow.into_iter()
            .map(|mut stream| {
                stream.set_read_timeout(Some(PATIENCE)).unwrap();
                stream.read_to_end(&mut Vec::new())
            })
            .find(Result::is_err)
    })
    .await
    .unwrap();
    assert!(
        closed.is_none(),
        "the server closes half-sent requests: {closed:?}"
    );
    server.child.kill().unwrap();
    let _ = server.child.wait();
}

// ---- 5, 6. headers and settings that would break every delivery --------------------------------

#[tokio::test]
async fn framing_headers_and_settings_the_host_would_refuse_are_refused_when_saved() {
    let receiver = accepting().await;
    let canopy = Canopy::start(|_| {}).await;
    let url = format!("{}/in", receiver.uri());
    let refused = |settings: Value, secrets: Value| {
        json!({"name": "Hook", "plugin": "webhook", "events": ["*"],
               "settings": settings, "secrets": secrets})
    };
    let cases = [
        (
            refused(
                json!({"url": url, "headers": {"Content-Length": "2"}}),
                json!({}),
            ),
            "Content-Length",
        ),
        (
            refused(
                json!({"url": url, "headers": {"Host": "evil.example"}}),
                json!({}),
            ),
            "Host",
        ),
        (
            refused(
                json!({"url": url, "auth": "custom-header", "auth_header": "Transfer-Encoding"}),
                json!({"token": "t0ken"}),
            ),
            "Transfer-Encoding",
        ),
        (
            refused(
                json!({"url": url, "headers": {"X-Tag": "a\u{1}b"}}),
                json!({}),
            ),
            "control characters",
        ),
        (
            refused(
                json!({"url": url, "auth": "bearer"}),
                json!({"token": "t0ken\r\nX-Evil: 1"}),
            ),
            "token",
        ),
        (
            refused(
                json!({"url": url, "auth": "x-token"}),
                json!({"token": "t0\u{0}ken"}),
            ),
            "token",
        ),
        (
            refused(
                json!({"url": "https://{# x #}hooks.example.com/in"}),
                json!({}),
            ),
            "url",
        ),
        (
            refused(
                json!({"url": format!("{}/a/../b", receiver.uri())}),
                json!({}),
            ),
            "..",
        ),
    ];
    for (body, named) in cases {
        let (status, error) = canopy
            .admin(Method::POST, "/v1/integrations", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{named}: {message}");
        assert!(
            !message.contains("t0ken"),
            "the secret is not quoted: {message}"
        );
    }
    let (_, list) = canopy.admin(Method::GET, "/v1/integrations", None).await;
    assert_eq!(list["integrations"], json!([]), "nothing was saved");

    // A plugin that sets a framing header is refused too, by the host.
    let bytes = canopy_test_support::component(canopy_test_support::HOSTILE);
    let (status, _) = canopy.upload("hostile", bytes, "application/wasm").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, error) = canopy
        .admin(
            Method::POST,
            "/v1/integrations",
            Some(
                json!({"name": "Framing", "plugin": "hostile", "events": ["*"],
                        "settings": {"mode": "reserved-header"}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Content-Length"),
        "{error}"
    );
    assert!(receiver.received_requests().await.unwrap().is_empty());
    canopy.stop().await;
}

// ---- 7. URL variables --------------------------------------------------------------------------

#[tokio::test]
async fn url_variables_cannot_remove_path_segments() {
    let receiver = accepting().await;
    let canopy = Canopy::start(|_| {}).await;
    canopy
        .integration(webhook(format!(
            "{}/hook/{{{{ customer.first_name }}}}/in",
            receiver.uri()
        )))
        .await;
    let mut dots = fresh("tier.changed");
    dots["customer"]["first_name"] = json!("..");
    let refused = canopy.ingest_one(dots).await;
    let failed = canopy.delivery_with_status(&refused, "failed").await;
    assert!(
        failed["last_error"].as_str().unwrap().contains("`..`"),
        "{failed}"
    );
    let mut slashes = fresh("tier.changed");
    slashes["customer"]["first_name"] = json!("a/../b");
    let encoded = canopy.ingest_one(slashes).await;
    canopy.delivery_with_status(&encoded, "succeeded").await;
    let requests = received(&receiver, 1).await;
    assert_eq!(requests.len(), 1, "the `..` event was not sent anywhere");
    assert_eq!(requests[0].url.path(), "/hook/a%2F..%2Fb/in");
    canopy.stop().await;
}

// ---- 8. numbers ---------------------------------------------------------------------------------

#[tokio::test]
async fn numbers_arrive_exactly_as_sent() {
    let receiver = accepting().await;
    let canopy = Canopy::start(|_| {}).await;
    canopy
        .integration(webhook(format!("{}/default", receiver.uri())))
        .await;
    canopy
        .integration(json!({
            "name": "Templated", "plugin": "webhook", "events": ["*"],
            "settings": {
                "url": format!("{}/templated", receiver.uri()),
                "templates": {"*": r#"{"big": {{ amount }}, "price": {{ price }}, "all": {{ nested }}}"#}
            }
        }))
        .await;
    let text = r#"{"event":"seeds.earned.bonus","timestamp":"2026-02-06T14:30:00Z",
        "customer":{"email":"jane@example.com"},"amount":123456789012345678901234567890,
        "price":1.50,"nested":{"tiny":0.1000000000000000000001,"huge":-98765432109876543210.5},"reason":"x"}"#;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/events", canopy.url))
        .bearer_auth(INGEST_TOKEN)
        .header("content-type", "application/json")
        .body(text)
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        response.text().await.unwrap()
    );
    let requests = received(&receiver, 2).await;
    for request in &requests {
        let body = String::from_utf8_lossy(&request.body);
        for exact in [
            "123456789012345678901234567890",
            "1.50",
            "0.1000000000000000000001",
            "-98765432109876543210.5",
        ] {
            assert!(
                body.contains(exact),
                "{exact} in {}: {body}",
                request.url.path()
            );
        }
    }
    canopy.stop().await;
}

// ---- 9, 10. the JSON error shape, the bearer scheme ---------------------------------------------

/// Sends raw bytes and returns the status and body of the answer.
fn raw(address: &str, request: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_has_the_json_error_shape_and_bearer_is_case_insensitive() {
    let canopy = Canopy::start(|_| {}).await;
    let shaped = |status: StatusCode, answer: &Value, code: &str| {
        assert_eq!(answer["error"]["code"], code, "{status}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    };
    let cases = [
        (
            Method::DELETE,
            "/v1/events".to_owned(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/v1/deliveries?limit=abc".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/deliveries?limit=-1".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/deliveries?colour=red".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/deliveries?limit=5&limit=6".into(),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/deliveries/%ZZ".into(),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            Method::GET,
            "/v1/deliveries/%FF%FE".into(),
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            Method::GET,
            format!("/v1/deliveries?customer={}", "x".repeat(10_000)),
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
        ),
    ];
    for (verb, path, status, code) in cases {
        let (got, answer) = canopy.admin(verb.clone(), &path, None).await;
        assert_eq!(
            got,
            status,
            "{verb} {}: {answer}",
            &path[..path.len().min(60)]
        );
        shaped(got, &answer, code);
    }

    // What hyper answers by itself, before any route: still the JSON shape.
    let address = canopy.url.trim_start_matches("http://").to_owned();
    let long = format!(
        "GET /v1/deliveries?customer={} HTTP/1.1\r\nHost: c\r\n\r\n",
        "x".repeat(70_000)
    );
    let headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nHost: c\r\n{headers}\r\n");
    let raw_cases: [(Vec<u8>, u16, &str); 3] = [
        (long.into_bytes(), 414, "uri_too_long"),
        (many.into_bytes(), 431, "headers_too_large"),
        (
            b"\x16\x03\x01 not http at all\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
    ];
    for (request, status, code) in raw_cases {
        let address = address.clone();
        let (got, answer) = tokio::task::spawn_blocking(move || raw(&address, &request))
            .await
            .unwrap();
        assert_eq!(got, status, "{answer}");
        shaped(StatusCode::from_u16(got).unwrap(), &answer, code);
    }

    // RFC 7235: the scheme is case-insensitive.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let response = canopy
            .client
            .post(format!("{}/v1/events", canopy.url))
            .header("authorization", format!("{scheme} {INGEST_TOKEN}"))
            .json(&fresh("tier.changed"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{scheme}");
    }
    canopy.stop().await;
}

// ---- 11. credentials in a URL ---------------------------------------------------------------------

#[tokio::test]
async fn credentials_in_a_webhook_url_are_refused_and_never_shown() {
    let receiver = accepting().await;
    let dir = tempfile::tempdir().unwrap();
    let canopy = Canopy::start_embedded(dir.path(), |_| {}).await;
    let with_credentials = format!(
        "http://hookuser:s3cretpass@{}/in",
        receiver.uri().trim_start_matches("http://")
    );
    let (status, error) = canopy
        .admin(
            Method::POST,
            "/v1/integrations",
            Some(webhook(with_credentials.clone())),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["code"], "credentials_in_url");
    assert!(!error.to_string().contains("s3cretpass"), "{error}");
    canopy.stop().await;

    // One an earlier version stored is shown, and logged, without them.
    {
        let store = canopy::store::EmbeddedStore::open(&dir.path().join("store")).unwrap();
        let now = canopy::store::Timestamp::now();
        let stored = canopy::store::Integration {
            id: canopy::store::new_id(),
            shop: "default".into(),
            max_in_flight: None,
            name: "Old hook".into(),
            plugin: "webhook".into(),
            events: vec!["*".into()],
            settings: json!({ "url": with_credentials }),
            secrets: Default::default(),
            enabled: true,
            disabled_reason: None,
            consecutive_failures: 0,
            rate_limit: None,
            created_at: now,
            updated_at: now,
        };
        canopy::store::Store::create_integration(&store, &stored)
            .await
            .unwrap();
    }
    let canopy = Canopy::start_embedded(dir.path(), |_| {}).await;
    let (_, list) = canopy.admin(Method::GET, "/v1/integrations", None).await;
    assert!(!list.to_string().contains("s3cretpass"), "{list}");
    assert!(list.to_string().contains("redacted@"), "{list}");
    let delivery = canopy.ingest_one(sample("tier.changed")).await;
    let done = canopy.delivery_with_status(&delivery, "succeeded").await;
    assert!(!done.to_string().contains("s3cretpass"), "{done}");
    canopy.stop().await;
}

// ---- 12. a destination that stays down ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_is_disabled_after_five_failed_attempts_and_nothing_is_dropped() {
    let receiver = MockServer::start().await;
    let hanging = Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount_as_scoped(&receiver)
        .await;
    let canopy = Canopy::start(|c| {
        c.delivery.request_timeout = Duration::from_millis(200);
        c.delivery.retry_schedule = "50ms,50ms,50ms,50ms,50ms,50ms,50ms,50ms".into();
        c.delivery.workers = 4;
    })
    .await;
    let integration = canopy
        .integration(webhook(format!("{}/hangs", receiver.uri())))
        .await;
    let mut deliveries = Vec::new();
    for _ in 0..20 {
        deliveries.push(canopy.ingest_one(fresh("tier.changed")).await);
    }
    let deadline = Instant::now() + PATIENCE;
    let state = loop {
        let state = integration_state(&canopy, &integration).await;
        if state["enabled"] == false {
            break state;
        }
        assert!(Instant::now() < deadline, "never disabled: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        state["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("consecutive failed attempts"),
        "{state}"
    );
    // Attempts already in flight when it was disabled still end; nothing new starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut attempts = 0;
    for id in &deliveries {
        let d = canopy.delivery(id).await;
        attempts += d["attempts"].as_array().unwrap().len();
        let status = d["status"].as_str().unwrap();
        assert!(
            ["paused", "pending", "retrying"].contains(&status),
            "nothing ends failed or is dropped: {d}"
        );
    }
    assert!(
        (5..=5 + 4).contains(&attempts),
        "5 failed attempts disable it, at most 4 more were in flight: {attempts}"
    );

    drop(hanging);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    canopy
        .admin(
            Method::PATCH,
            &format!("/v1/integrations/{integration}"),
            Some(json!({"enabled": true})),
        )
        .await;
    for id in &deliveries {
        canopy.delivery_with_status(id, "succeeded").await;
    }
    canopy.stop().await;
}

// ---- 13. IPv6 transition addresses ------------------------------------------------------------------

#[tokio::test]
async fn ipv6_addresses_that_embed_an_internal_ipv4_address_are_refused() {
    let canopy = Canopy::start(|c| c.delivery.allow_private_networks = false).await;
    for host in [
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::1]",
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
    ] {
        let id = canopy
            .integration(
                json!({"name": host, "plugin": "webhook", "events": ["tier.changed"],
                                "settings": {"url": format!("http://{host}:9/in")}}),
            )
            .await;
        let (_, answer) = canopy.ingest(fresh("tier.changed")).await;
        let delivery = answer["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["integration"] == id.as_str())
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let failed = canopy.delivery_with_status(&delivery, "failed").await;
        assert!(
            failed["last_error"]
                .as_str()
                .unwrap()
                .contains("internal address"),
            "{host}: {failed}"
        );
        canopy
            .admin(Method::DELETE, &format!("/v1/integrations/{id}"), None)
            .await;
    }
    canopy.stop().await;
}
