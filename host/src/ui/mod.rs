//! The admin web UI (SPEC.md §7, seed 000's integrations page), served by the binary under
//! `/ui`: server-rendered HTML from [minijinja] templates (`host/ui/templates`, auto-escaped),
//! a stylesheet and vendored htmx (`host/ui/static`), all embedded — no CDN, no build step.
//! Every page works without JavaScript; htmx only shows a Test result in place.
//!
//! Security:
//! - Sign-in by a token (the platform admin token, or a shop admin token) or a sign-in link
//!   ([`crate::app::sign_in`]); the session is a signed cookie, `HttpOnly`, `SameSite=Lax`,
//!   `Path=/ui`, `Secure` when `--public-url` is `https`.
//! - Every state-changing request is a POST that must carry the session's CSRF token (a
//!   hidden form field); the sign-in form carries one tied to a pre-session cookie. A POST a
//!   browser marks as cross-site (`Sec-Fetch-Site`) is refused before that.
//! - Every answer sends a Content-Security-Policy without inline scripts or styles
//!   (`script-src 'self'`), `frame-ancestors 'none'`, `Referrer-Policy: no-referrer` (a
//!   sign-in link's code never leaks), `X-Content-Type-Options: nosniff`, and pages are
//!   `Cache-Control: no-store`.
//! - Customer data (names, review bodies, URLs, plugin messages) only reaches a page through
//!   the templates' auto-escaping.
//!
//! Access is the API's: the handlers call the same `app` services with the session's
//! [`Caller`], so a shop admin's session reaches exactly what its token would.

mod pages;

use std::sync::LazyLock;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Router, middleware};
use minijinja::{Environment, Value, context};

use crate::app::access::Caller;
use crate::app::sign_in::Session;
use crate::app::{App, AppError};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "canopy_session";
/// The pre-session cookie the sign-in form's CSRF token is tied to.
pub const SIGN_IN_COOKIE: &str = "canopy_sign_in";
/// The form field carrying the CSRF token.
pub const CSRF_FIELD: &str = "_csrf";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The UI's routes, under `/ui` (and `/`, which leads there).
pub fn router(app: App) -> Router {
    pages::routes()
        .layer(middleware::from_fn(security_headers))
        .with_state(app)
}

/// The headers every UI answer carries, and the cross-site POST refusal.
async fn security_headers(request: Request, next: Next) -> Response {
    let cross_site = request.method() == Method::POST
        && request
            .headers()
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"cross-site");
    let mut response = if cross_site {
        UiError(AppError::forbidden(
            "this form was posted from another site; open the page and submit it from there",
        ))
        .into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    macro_rules! templates {
        ($($name:literal),+ $(,)?) => {
            $(env
                .add_template($name, include_str!(concat!("../../ui/templates/", $name)))
                .expect(concat!("the template ", $name, " parses"));)+
        };
    }
    templates!(
        "base.html",
        "fragment.html",
        "error.html",
        "exchange.html",
        "status.html",
        "sign_in.html",
        "sign_in_link.html",
        "shops.html",
        "integrations.html",
        "card.html",
        "test_result.html",
        "choose_plugin.html",
        "integration_form.html",
        "created.html",
        "confirm.html",
        "deliveries.html",
        "delivery.html",
        "plugins.html",
    );
    env.add_filter("when", when);
    env
});

/// A time as the UI shows it: `2026-02-06 14:30:00 UTC`.
fn when(value: String) -> String {
    let mut text = value.replacen('T', " ", 1);
    if let Some(dot) = text.find('.') {
        text.truncate(dot);
    }
    text.trim_end_matches('Z').to_owned() + " UTC"
}

/// Renders a template with `status`.
fn render(status: StatusCode, name: &str, ctx: Value) -> Response {
    match TEMPLATES.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, template = name, "a UI template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error</title><p>This page could not be shown.</p>"),
            )
                .into_response()
        }
    }
}

/// An error answered as a page.
#[derive(Debug)]
pub struct UiError(pub AppError);

impl From<AppError> for UiError {
    fn from(error: AppError) -> UiError {
        UiError(error)
    }
}

impl From<crate::store::StoreError> for UiError {
    fn from(error: crate::store::StoreError) -> UiError {
        UiError(error.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let error = self.0;
        let title = match error.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::GONE => "Link expired",
            s if s.is_server_error() => "Something went wrong",
            _ => "That did not work",
        };
        render(
            error.status,
            "error.html",
            context! { title, message => error.message, status => error.status.as_u16() },
        )
    }
}

pub type UiResult = Result<Response, UiError>;

/// A signed-in user: the session and who it acts as. A request without a valid session is
/// sent to the sign-in page (answered as a redirect, or for htmx an `HX-Redirect`).
pub struct Signed {
    pub session: Session,
    pub caller: Caller,
}

impl Signed {
    /// The context every page of a signed-in user has: who it is and the CSRF token.
    fn base(&self) -> Value {
        let (platform, shop) = match &self.caller {
            Caller::Platform => (true, None),
            Caller::Shop { shop, .. } => (false, Some(shop.clone())),
            _ => (false, None),
        };
        context! { platform, own_shop => shop, csrf => self.session.csrf.clone(), signed_in => true }
    }

    /// Refuses a state-changing request whose form lacks this session's CSRF token.
    fn check_csrf(&self, presented: Option<&str>) -> Result<(), UiError> {
        match presented {
            Some(token) if self.session.csrf_matches(token) => Ok(()),
            _ => Err(csrf_refused()),
        }
    }
}

fn csrf_refused() -> UiError {
    UiError(AppError::forbidden(
        "the form's security token is missing or out of date (CSRF protection); reload the page and try again",
    ))
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

/// Where an unauthenticated request is sent.
fn to_sign_in(parts: &Parts) -> Response {
    if parts.headers.contains_key("hx-request") {
        return (
            StatusCode::OK,
            [("hx-redirect", HeaderValue::from_static("/ui/sign-in"))],
        )
            .into_response();
    }
    Redirect::to("/ui/sign-in").into_response()
}

impl FromRequestParts<App> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Signed, Response> {
        let Some(session) = cookie(&parts.headers, SESSION_COOKIE)
            .and_then(|text| Session::open(app, &text, app.clock.now()))
        else {
            return Err(to_sign_in(parts));
        };
        match session.caller(app).await {
            Ok(Some(caller)) => Ok(Signed { session, caller }),
            Ok(None) => Err(to_sign_in(parts)),
            Err(error) => Err(UiError(error).into_response()),
        }
    }
}

/// `Set-Cookie` for a session (or, with `None`, one that clears it).
fn session_cookie(app: &App, session: Option<&Session>) -> HeaderValue {
    let secure = app
        .config
        .public_url
        .as_ref()
        .is_some_and(|u| u.scheme() == "https");
    let attributes = format!(
        "; Path=/ui; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    );
    let text = match session {
        Some(session) => format!(
            "{SESSION_COOKIE}={}{attributes}; Max-Age={}",
            session.seal(app),
            crate::app::sign_in::SESSION_LIFETIME.as_secs()
        ),
        None => format!("{SESSION_COOKIE}={attributes}; Max-Age=0"),
    };
    HeaderValue::try_from(text).expect("a cookie is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_escapes_customer_data() {
        let page = TEMPLATES
            .get_template("error.html")
            .unwrap()
            .render(
                context! { title => "T", message => "<script>alert(1)</script>", status => 400 },
            )
            .unwrap();
        assert!(page.contains("&lt;script&gt;alert(1)"), "{page}");
        assert!(!page.contains("<script>alert"));
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(
            when("2026-02-06T14:30:00.123Z".into()),
            "2026-02-06 14:30:00 UTC"
        );
    }
}
