//! The HTTP API of SPEC.md §7 and §8, one module per resource, each with its `router()`:
//! [`ingest`] (`POST /v1/events`, an ingest token), [`shops`] (shops and their tokens),
//! [`plugins`], and each shop's [`integrations`] and [`deliveries`] under
//! `/v1/shops/{shop}/…` (an admin token). The handlers parse, authorise and answer; what a
//! request does is the `app` services'. Every error a client sees has one JSON shape,
//! `{"error": {"code", "message"}}` (plus `details` where there is more to say), and never
//! carries internals or secrets.

pub mod deliveries;
pub mod ingest;
pub mod integrations;
pub mod plugins;
pub mod shops;

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::app::access::{self, Caller};
use crate::app::{App, AppError};
use crate::model::Shop;

/// The error shape every route answers with (for the OpenAPI document).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `invalid_json`, `unknown_event`, `not_found`, …
    pub code: String,
    /// For people.
    pub message: String,
    /// More, where there is more to say (the valid event types, a batch index, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// How long a client that is sent `503` is asked to wait before trying again.
pub const RETRY_AFTER_SECONDS: u64 = 5;

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(details) = self.details {
            error["details"] = details;
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

/// How long a request body may take to arrive, whole. Headers have their own bound (see
/// `listen`); without this one, a client could hold a connection by trickling a body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest request URI (path and query) the API reads; longer ones answer 414.
pub const MAX_URI_BYTES: usize = 8 << 10;

/// Reads a request body of at most `limit` bytes within [`BODY_TIMEOUT`]: 413 with
/// `too_large` (its code and message) past the limit, 408 when it does not arrive in time.
pub async fn read_body(
    body: Body,
    limit: usize,
    too_large: (&'static str, String),
) -> Result<Bytes, AppError> {
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(body_timeout()),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) if is_length_limit(&error) => Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            too_large.0,
            too_large.1,
        )),
        Ok(Err(error)) => Err(AppError::bad_request(
            "unreadable_body",
            format!("the body cannot be read: {}", source_text(&error)),
        )),
    }
}

fn body_timeout() -> AppError {
    AppError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        format!(
            "the request body did not arrive within {} seconds",
            BODY_TIMEOUT.as_secs()
        ),
    )
}

fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// A JSON body whose rejection speaks the API's error format.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<ApiJson<T>, AppError> {
        match tokio::time::timeout(BODY_TIMEOUT, Json::<T>::from_request(req, state)).await {
            Err(_) => Err(body_timeout()),
            Ok(Ok(Json(value))) => Ok(ApiJson(value)),
            Ok(Err(rejection)) => Err(json_rejection(rejection)),
        }
    }
}

/// A query string whose rejection speaks the API's error format (a parameter that is unknown,
/// repeated or of the wrong type answers 400 `invalid_query`).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<ApiQuery<T>, AppError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| {
                AppError::bad_request(
                    "invalid_query",
                    format!(
                        "the query string cannot be read: {}",
                        source_text(&rejection)
                    ),
                )
            })
    }
}

/// A path parameter whose rejection speaks the API's error format (such as a bad
/// percent-encoding: 400 `invalid_path`).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<ApiPath<T>, AppError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| {
                AppError::bad_request(
                    "invalid_path",
                    format!("the path cannot be read: {}", source_text(&rejection)),
                )
            })
    }
}

/// Middleware: a request URI over [`MAX_URI_BYTES`] answers 414 before any route reads it.
pub async fn limit_uri(request: Request, next: Next) -> Response {
    let length = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if length > MAX_URI_BYTES {
        return AppError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request URI is {length} bytes; the limit is {MAX_URI_BYTES}"),
        )
        .into_response();
    }
    next.run(request).await
}

/// The answer to a method a route does not have.
pub async fn method_not_allowed() -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

fn json_rejection(rejection: JsonRejection) -> AppError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        JsonRejection::JsonSyntaxError(e) => AppError::bad_request(
            "invalid_json",
            format!("the body is not valid JSON: {}", source_text(&e)),
        ),
        JsonRejection::JsonDataError(e) => AppError::bad_request(
            "invalid_body",
            format!("the body does not fit: {}", source_text(&e)),
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            AppError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body cannot be read: {e}"),
            )
        }
        JsonRejection::BytesRejection(e) => AppError::new(
            e.status(),
            "unreadable_body",
            format!("the body cannot be read: {e}"),
        ),
        other => AppError::bad_request("invalid_body", other.body_text()),
    }
}

/// The innermost message of an error (serde's, with its line and column).
fn source_text(e: &dyn std::error::Error) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 7235 §2.1) and separated from the token by whitespace.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Which kind of caller a group of routes needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The platform admin token or a shop admin token.
    Admin,
    /// The ingest token or a shop ingest token.
    Ingest,
}

/// Middleware: the request must carry `Authorization: Bearer <token>` of a caller in `role`
/// ([`crate::app::access`]); the caller is handed to the route as a [`Caller`] extension.
pub async fn require(
    role: Role,
    State(app): State<App>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let caller = match presented {
        Some(token) => match access::authenticate(&app, token).await {
            Ok(caller) => caller,
            Err(error) => return error.into_response(),
        },
        None => None,
    };
    let allowed = caller.as_ref().is_some_and(|c| match role {
        Role::Admin => c.administers(),
        Role::Ingest => c.ingests(),
    });
    if let (true, Some(caller)) = (allowed, caller) {
        request.extensions_mut().insert(caller);
        return next.run(request).await;
    }
    let message = match (presented, role) {
        (None, _) => "this route needs `Authorization: Bearer <token>`",
        (Some(_), Role::Admin) => {
            "an admin token (the platform's, or the shop's) is required for this route"
        }
        (Some(_), Role::Ingest) => {
            "an ingest token (the platform's, or the shop's) is required for this route"
        }
    };
    AppError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response()
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, AppError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            AppError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this route needs `Authorization: Bearer <token>`",
            )
        })
    }
}

/// The shop a route's `{shop}` names, as the caller may see it (see [`Caller::shop`]: 404
/// for an unknown shop and for another shop than a shop token's own; `-` is the caller's).
pub struct ShopScope(pub Shop);

impl FromRequestParts<App> for ShopScope {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<ShopScope, AppError> {
        let ApiPath(params) =
            ApiPath::<std::collections::HashMap<String, String>>::from_request_parts(parts, app)
                .await?;
        let named = params
            .get("shop")
            .ok_or_else(|| AppError::not_found("shop"))?;
        let caller = Caller::from_request_parts(parts, app).await?;
        caller.shop(app, named).await.map(ShopScope)
    }
}
