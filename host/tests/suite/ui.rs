//! The admin UI in a real headless Chromium, driven over WebDriver (`chromedriver`, installed
//! by `scripts/setup --tests`): a store admin signs in with a sign-in link, adds a webhook
//! integration, tests it, finds events in the log, filters, retries; another shop stays out
//! of reach; markup in customer data shows as text; a form without its CSRF token is refused;
//! the platform admin uploads, is refused, and rolls back plugin versions.
//!
//! With `CANOPY_SCREENSHOTS=<dir>` the run also saves every screen, desktop and narrow, as PNG
//! (how `docs/screenshots/` is made).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::harness::{ADMIN_TOKEN, Canopy, PATIENCE, free_port, received};

/// A headless Chromium behind its own chromedriver, closed when dropped.
struct Browser {
    client: Client,
    driver: Child,
    screenshots: Option<PathBuf>,
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver runs (scripts/setup --tests installs chromium and chromium-driver)",
            );
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--force-device-scale-factor=1",
            ]}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session opens");
        Browser {
            client,
            driver,
            screenshots: std::env::var_os("CANOPY_SCREENSHOTS").map(PathBuf::from),
        }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("the page loads");
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} is on the page: {e}"))
            .text()
            .await
            .expect("its text")
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} is on the page: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("{css} can be clicked: {e}"));
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} is on the page: {e}"));
        field.clear().await.expect("the field clears");
        field.send_keys(text).await.expect("the field takes text");
    }

    async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .expect("a query")
            .len()
    }

    /// Waits until `css` is on the page and its text contains `needle`.
    async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
                && text.contains(needle)
            {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {needle:?}; the page: {}",
                self.client.source().await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("a URL");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Saves the page at desktop and narrow widths (with `CANOPY_SCREENSHOTS` set).
    async fn screenshot(&self, name: &str) {
        let Some(dir) = &self.screenshots else {
            return;
        };
        std::fs::create_dir_all(dir).expect("the screenshot directory");
        for (suffix, width, height) in [("desktop", 1280, 900), ("narrow", 360, 780)] {
            self.client
                .set_window_size(width, height)
                .await
                .expect("the window resizes");
            let png = self.client.screenshot().await.expect("a screenshot");
            std::fs::write(dir.join(format!("{name}-{suffix}.png")), png).expect("it is saved");
        }
        self.client
            .set_window_size(1280, 900)
            .await
            .expect("the window resizes");
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Waits until a delivery of the green shop has `status`.
async fn wait_for_status(canopy: &Canopy, id: &str, status: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, found) = canopy
            .admin(
                Method::GET,
                &format!("/v1/shops/green.example/deliveries/{id}"),
                None,
            )
            .await;
        if found["status"] == status {
            return;
        }
        assert!(Instant::now() < deadline, "never {status}: {found}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn event(shop: &str, kind: &str, email: &str, first_name: &str) -> Value {
    let mut event = super::harness::fresh(kind);
    event["shop"] = json!(shop);
    event["customer"]["email"] = json!(email);
    event["customer"]["first_name"] = json!(first_name);
    event["customer"]["display_name"] = json!(first_name);
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_admin_and_the_platform_admin_work_in_the_browser() {
    let canopy = Canopy::start(|_| {}).await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    for (id, name) in [
        ("green.example", "Green Leaf"),
        ("blue.example", "Blue Sky"),
    ] {
        let (status, body) = canopy
            .admin(
                Method::POST,
                "/v1/shops",
                Some(json!({"id": id, "name": name})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, blue) = canopy
        .admin(
            Method::POST,
            "/v1/shops/blue.example/integrations",
            Some(
                json!({"name": "Blue hook", "plugin": "webhook", "events": ["*"],
                        "settings": {"url": receiver.uri()}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{blue}");
    let blue = blue["id"].as_str().unwrap().to_owned();

    // The loyalty platform asks for a sign-in link for the green shop.
    let (status, link) = canopy
        .admin(
            Method::POST,
            "/v1/shops/green.example/sign-in-links",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let link = format!("{}{}", canopy.url, link["path"].as_str().unwrap());

    let browser = Browser::start().await;
    let ui = |path: &str| format!("{}{path}", canopy.url);

    // Signing in with the link: a page with a button, then the shop's integrations.
    browser.goto(&link).await;
    browser.screenshot("sign-in-link").await;
    browser.click("main form button[type=submit]").await;
    browser.wait_for_text("main h1", "Integrations").await;
    assert_eq!(browser.path().await, "/ui/shops/green.example/integrations");
    assert!(
        browser
            .text("main .empty")
            .await
            .contains("No integrations yet")
    );
    // The link is good for one sign-in only.
    let reuse = canopy
        .client
        .post(&link)
        .form(&[("_csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_ne!(reuse.status(), StatusCode::SEE_OTHER);

    // Add a webhook integration: pick the platform, name it, choose events, paste the URL.
    browser.click("a.button.primary").await;
    browser.wait_for_text("main h1", "Add integration").await;
    browser.screenshot("choose-plugin").await;
    browser.click("a.choice[href$='plugin=webhook']").await;
    browser.wait_for_text("main h1", "webhook").await;
    browser.fill("#f-name", "Orders hook").await;
    // Select-all of a group ticks its members (ui.js), and unticking one clears it again.
    browser
        .click("input[data-group-toggle='tier-review']")
        .await;
    assert_eq!(
        browser
            .count("input[data-group='tier-review']:checked")
            .await,
        4
    );
    browser
        .click("input[data-group-toggle='tier-review']")
        .await;
    browser
        .click("input[name=events][value='seeds.earned.order']")
        .await;
    browser
        .click("input[name=events][value='review.submitted']")
        .await;
    browser
        .fill("#i-url", "https://user:pass@example.com/hook")
        .await;
    browser.screenshot("integration-form").await;
    browser
        .click("form.stack button[type=submit].primary")
        .await;
    // Refused, with the reason beside the field; what was typed is kept.
    let error = browser
        .wait_for_text("#f-url .field-error", "credentials")
        .await;
    assert!(error.contains("credentials"), "{error}");
    assert_eq!(
        browser
            .client
            .find(Locator::Css("#f-name"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("Orders hook")
    );
    browser.screenshot("integration-form-error").await;
    browser
        .fill("#i-url", &format!("{}/hook", receiver.uri()))
        .await;
    browser
        .click("form.stack button[type=submit].primary")
        .await;
    browser
        .wait_for_text("main .notice", "Integration added")
        .await;
    let (_, listed) = canopy
        .admin(Method::GET, "/v1/shops/green.example/integrations", None)
        .await;
    let green = listed["integrations"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        listed["integrations"][0]["events"],
        json!(["review.submitted", "seeds.earned.order"])
    );

    // Test on the card: the outcome, the request as sent and the response, in place (htmx).
    browser.click(".card form[action$='/test'] button").await;
    let tested = browser
        .wait_for_text(".test-result", "Test succeeded")
        .await;
    assert!(tested.contains("POST"), "{tested}");
    // Shown in place: still the integrations page, no navigation to a result page.
    assert!(
        browser
            .path()
            .await
            .starts_with("/ui/shops/green.example/integrations?")
    );
    received(&receiver, 1).await;
    browser.screenshot("test-result").await;

    // Events with markup in customer data, then the log.
    let hostile = event(
        "green.example",
        "review.submitted",
        "mallory@example.com",
        "<i>Mallory</i><script>document.title='pwned'</script>",
    );
    let mut hostile = hostile;
    hostile["body"] = json!("<img src=x onerror=\"document.title='pwned'\">Great <b>tea</b>");
    let (status, body) = canopy.ingest(hostile).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = canopy
        .ingest(event(
            "green.example",
            "seeds.earned.order",
            "jane@example.com",
            "Jane",
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    received(&receiver, 3).await;

    browser.click("header nav a[href$='/deliveries']").await;
    browser.wait_for_text("main h1", "Event logs").await;
    let deadline = Instant::now() + PATIENCE;
    while browser.count("table.log td .status-succeeded").await < 2 {
        assert!(Instant::now() < deadline, "the deliveries did not succeed");
        tokio::time::sleep(Duration::from_millis(200)).await;
        browser.client.refresh().await.unwrap();
    }
    let customers = browser.text("table.log tbody").await;
    assert!(
        customers.contains("<i>Mallory</i><script>"),
        "markup shows as text: {customers}"
    );
    assert_eq!(browser.count("main table i, main table script").await, 0);
    assert_ne!(browser.client.title().await.unwrap(), "pwned");
    browser.screenshot("event-logs").await;

    // Filter by customer: kept in the URL, one row.
    browser.fill("#q-customer", "jane@example.com").await;
    browser.click("form.filters button[type=submit]").await;
    browser.wait_for_text("main", "1 shown").await;
    assert!(
        browser.path().await.contains("customer=jane%40example.com"),
        "{}",
        browser.path().await
    );
    assert!(browser.text("table.log tbody").await.contains("Jane"));

    // The review's delivery: its attempts, the request body with the review as text.
    browser
        .goto(&ui(
            "/ui/shops/green.example/deliveries?event=review.submitted",
        ))
        .await;
    browser.click("table.log tbody tr a").await;
    browser.wait_for_text("main h1", "Review Submitted").await;
    let attempt = browser.text(".attempt").await;
    assert!(attempt.contains("Attempt 1"), "{attempt}");
    assert_eq!(browser.count("main img, main script").await, 0);
    browser.screenshot("delivery").await;

    // The receiver fails for good: a new event's delivery fails; Retry from the UI works once
    // the receiver is back.
    receiver.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(410))
        .mount(&receiver)
        .await;
    let failing = event(
        "green.example",
        "seeds.earned.order",
        "sam@example.com",
        "Sam",
    );
    let delivery = canopy.ingest_one(failing).await;
    let second = canopy
        .ingest_one(event(
            "green.example",
            "seeds.earned.order",
            "ann@example.com",
            "Ann",
        ))
        .await;
    for id in [&delivery, &second] {
        wait_for_status(&canopy, id, "failed").await;
    }
    receiver.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    browser
        .goto(&ui(&format!(
            "/ui/shops/green.example/deliveries/{delivery}"
        )))
        .await;
    browser.wait_for_text("dl.facts", "failed").await;
    browser.click("form[action$='/retry'] button").await;
    browser.wait_for_text("main .notice", "queued again").await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        browser.client.refresh().await.unwrap();
        if browser.text("dl.facts").await.contains("succeeded") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retried delivery did not succeed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(browser.text("main").await.contains("Attempt 2"));

    // Retry all matching: the failed ones of the filter, counted and confirmed first.
    browser
        .goto(&ui("/ui/shops/green.example/deliveries?status=failed"))
        .await;
    browser.click("a[href*='/deliveries/retry']").await;
    browser
        .wait_for_text("main h1", "Retry 1 deliveries?")
        .await;
    browser.click("main form button[type=submit]").await;
    browser
        .wait_for_text("main .notice", "1 deliveries queued again")
        .await;
    assert!(browser.path().await.contains("status=failed"));
    wait_for_status(&canopy, &second, "succeeded").await;
    browser
        .goto(&ui("/ui/shops/green.example/integrations"))
        .await;
    let card = browser.text(".card").await;
    assert!(card.contains('%'), "the success rate is shown: {card}");
    browser.screenshot("integrations").await;

    // Another shop's pages do not exist for this session.
    for path in [
        "/ui/shops/blue.example/integrations".to_owned(),
        format!("/ui/shops/blue.example/integrations/{blue}/edit"),
        "/ui/shops/blue.example/deliveries".to_owned(),
        "/ui/plugins".to_owned(),
    ] {
        browser.goto(&ui(&path)).await;
        let title = browser.text("main h1").await;
        assert!(
            title == "Not found" || title == "Not allowed",
            "{path}: {title}"
        );
        assert!(!browser.text("main").await.contains("Blue hook"));
    }

    // CSRF: the session's cookie without the form's token changes nothing.
    let session = browser
        .client
        .get_named_cookie(canopy::ui::SESSION_COOKIE)
        .await
        .expect("the session cookie");
    assert_eq!(session.http_only(), Some(true));
    for form in [vec![], vec![("_csrf", "0123456789abcdef0123456789abcdef")]] {
        let refused = canopy
            .client
            .post(ui(&format!(
                "/ui/shops/green.example/integrations/{green}/disable"
            )))
            .header(
                "cookie",
                format!("{}={}", canopy::ui::SESSION_COOKIE, session.value()),
            )
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let csp = refused.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    }
    let (_, integration) = canopy
        .admin(
            Method::GET,
            &format!("/v1/shops/green.example/integrations/{green}"),
            None,
        )
        .await;
    assert_eq!(integration["enabled"], json!(true));

    // Sign out; the platform admin signs in with the token and sees every shop.
    browser
        .goto(&ui("/ui/shops/green.example/integrations"))
        .await;
    browser
        .click("header form[action='/ui/sign-out'] button")
        .await;
    browser.wait_for_text("main h1", "Sign in").await;
    browser.fill("#token", "not-a-token").await;
    browser.click("main form button[type=submit]").await;
    browser.wait_for_text("main .error", "does not open").await;
    browser.screenshot("sign-in").await;
    browser.fill("#token", ADMIN_TOKEN).await;
    browser.click("main form button[type=submit]").await;
    let shops = browser.wait_for_text("main", "Blue Sky").await;
    assert!(
        shops.contains("Green Leaf") && shops.contains("default"),
        "{shops}"
    );
    browser.screenshot("shops").await;

    // Plugins: upload a new plugin, a new version of it, a refused upload, then roll back.
    browser.click("header nav a[href='/ui/plugins']").await;
    browser.wait_for_text("main h1", "Plugins").await;
    let upload = |path: &'static str, plugin: &'static str| {
        let browser = &browser;
        async move {
            let select = browser
                .client
                .find(Locator::Css("#u-plugin"))
                .await
                .unwrap();
            select.select_by_value(plugin).await.unwrap();
            browser.fill("#u-component", path).await;
            browser.click("form[enctype] button[type=submit]").await;
        }
    };
    upload(canopy_test_support::ECHO_V1, "").await;
    browser.wait_for_text("main .notice", "uploaded").await;
    upload(canopy_test_support::ECHO_V2, "echo").await;
    // The first upload's page also says "uploaded": wait for the page the second one leads
    // to, which lists its version.
    browser
        .wait_for_text("section[aria-labelledby='plugin-echo']", "2.0.0")
        .await;
    browser.wait_for_text("main .notice", "uploaded").await;
    upload(canopy_test_support::WRONG_WORLD, "echo").await;
    let refused = browser.wait_for_text("#upload-error", "refused").await;
    assert!(
        refused.len() > "The upload was refused: ".len(),
        "{refused}"
    );
    browser.screenshot("plugins").await;
    browser
        .click("section[aria-labelledby='plugin-echo'] form[action$='/rollback'] button")
        .await;
    browser.wait_for_text("main .notice", "activated").await;
    let (_, echo) = canopy.admin(Method::GET, "/v1/plugins/echo", None).await;
    assert_eq!(echo["number"], json!(1), "{echo}");

    browser.close().await;
    canopy.stop().await;
}

/// The value a response sets for cookie `name`.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (pair, _) = v.split_once(';').unwrap_or((v, ""));
            let (n, value) = pair.split_once('=')?;
            (n == name && !value.is_empty()).then(|| value.to_owned())
        })
}

/// The status of a UI page fetched with a session cookie (redirects not followed).
async fn page_status(canopy: &Canopy, session: &str, path: &str) -> StatusCode {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}{path}", canopy.url))
        .header(
            "cookie",
            format!("{}={session}", canopy::ui::SESSION_COOKIE),
        )
        .send()
        .await
        .unwrap()
        .status()
}

/// Signs in through a sign-in page (`/ui/sign-in` with `token`, or a sign-in link's page)
/// without a browser; the session cookie, if any.
async fn sign_in_at(canopy: &Canopy, path: &str, token: &str) -> (StatusCode, Option<String>) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = client
        .get(format!("{}{path}", canopy.url))
        .send()
        .await
        .unwrap();
    let pre = set_cookie(&page, "canopy_sign_in").expect("a pre-session cookie");
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&format!("value=\"{pre}\"")),
        "the form carries it"
    );
    // A planted pre-session cookie (not signed by the server) is refused.
    let planted = client
        .post(format!("{}{path}", canopy.url))
        .header("cookie", "canopy_sign_in=0123.abcd")
        .form(&[("_csrf", "0123.abcd"), ("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(planted.status(), StatusCode::FORBIDDEN);
    let answer = client
        .post(format!("{}{path}", canopy.url))
        .header("cookie", format!("canopy_sign_in={pre}"))
        .form(&[("_csrf", pre.as_str()), ("token", token)])
        .send()
        .await
        .unwrap();
    let status = answer.status();
    (status, set_cookie(&answer, canopy::ui::SESSION_COOKIE))
}

#[tokio::test]
async fn sessions_end_with_their_token_and_links_are_bounded_and_scoped() {
    let canopy = Canopy::start(|_| {}).await;
    for id in ["green.example", "blue.example"] {
        let (status, _) = canopy
            .admin(
                Method::POST,
                "/v1/shops",
                Some(json!({"id": id, "name": id})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (_, token) = canopy
        .admin(
            Method::POST,
            "/v1/shops/green.example/tokens",
            Some(json!({"kind": "admin"})),
        )
        .await;
    let (secret, token_id) = (
        token["secret"].as_str().unwrap().to_owned(),
        token["id"].as_str().unwrap().to_owned(),
    );

    // Ingest tokens and wrong tokens sign in nobody; a shop admin token does.
    for wrong in [super::harness::INGEST_TOKEN, "cnpa_not-a-token"] {
        let (status, session) = sign_in_at(&canopy, "/ui/sign-in", wrong).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(session, None);
    }
    let (status, session) = sign_in_at(&canopy, "/ui/sign-in", &secret).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = session.expect("a session cookie");
    let page = |path: &'static str| page_status(&canopy, &session, path);
    assert_eq!(
        page("/ui/shops/green.example/integrations").await,
        StatusCode::OK
    );
    assert_eq!(
        page("/ui/shops/blue.example/integrations").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(page("/ui/plugins").await, StatusCode::FORBIDDEN);
    // A forged cookie is no session.
    let forged = format!("{session}x");
    assert_eq!(
        page_status(&canopy, &forged, "/ui/shops/green.example/integrations").await,
        StatusCode::SEE_OTHER
    );

    // Revoking the token ends the session at once.
    let (status, _) = canopy
        .admin(
            Method::DELETE,
            &format!("/v1/shops/green.example/tokens/{token_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        page("/ui/shops/green.example/integrations").await,
        StatusCode::SEE_OTHER
    );

    // Sign-in links: lifetimes within bounds; a shop token only for its own shop.
    for seconds in [0, 3_601] {
        let (status, body) = canopy
            .admin(
                Method::POST,
                "/v1/shops/green.example/sign-in-links",
                Some(json!({"expires_in_seconds": seconds})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let (_, blue_token) = canopy
        .admin(
            Method::POST,
            "/v1/shops/blue.example/tokens",
            Some(json!({"kind": "admin"})),
        )
        .await;
    let blue_token = blue_token["secret"].as_str().unwrap();
    let (status, _) = canopy
        .call(
            Method::POST,
            "/v1/shops/green.example/sign-in-links",
            blue_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, link) = canopy
        .call(Method::POST, "/v1/shops/-/sign-in-links", blue_token, None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let path = link["path"].as_str().unwrap();
    assert!(path.starts_with("/ui/sign-in/"));
    // The link's session lasts only as long as the token that asked for it.
    let (status, session) = sign_in_at(&canopy, path, "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = session.expect("a session cookie");
    let blue_page = || page_status(&canopy, &session, "/ui/shops/blue.example/integrations");
    assert_eq!(blue_page().await, StatusCode::OK);
    let (_, tokens) = canopy
        .admin(Method::GET, "/v1/shops/blue.example/tokens", None)
        .await;
    let blue_id = tokens["tokens"][0]["id"].as_str().unwrap();
    canopy
        .admin(
            Method::DELETE,
            &format!("/v1/shops/blue.example/tokens/{blue_id}"),
            None,
        )
        .await;
    assert_eq!(blue_page().await, StatusCode::SEE_OTHER);
    // A tampered link is refused.
    let tampered = reqwest::get(format!("{}{}x", canopy.url, link["path"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(tampered.status(), StatusCode::GONE);
    canopy.stop().await;
}
