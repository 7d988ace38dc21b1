//! The HTTP API of SPEC.md §7, one module per resource, each with its `router()`:
//! [`ingest`] (`POST /v1/events`, ingest token), [`plugins`], [`integrations`] and
//! [`deliveries`] (admin token). Every error a client sees has one JSON shape, `{"error": {"code", "message"}}`
//! (plus `details` where there is more to say), and never carries internals or secrets.

pub mod deliveries;
pub mod ingest;
pub mod integrations;
pub mod plugins;

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
use subtle::ConstantTimeEq;

use crate::crypto::secret::SecretValue;
use crate::server::AppState;
use crate::store::StoreError;

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

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, for programs: `invalid_json`, `unknown_event`, `not_found`, …
    pub code: &'static str,
    /// For people.
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }
}

/// How long a client that is sent `503` is asked to wait before trying again.
pub const RETRY_AFTER_SECONDS: u64 = 5;

impl IntoResponse for ApiError {
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

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::Rejected(message) => ApiError::unprocessable("rejected", message),
            StoreError::Unavailable(reason) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!(
                    "the store cannot take writes now ({reason}); nothing was changed, try again later"
                ),
            ),
            other => {
                // The detail goes to the log, not to the client.
                tracing::error!(error = %other, "storage failure while answering a request");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage_error",
                    "the store could not complete the request; nothing was changed or it is safe to retry",
                )
            }
        }
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
) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(body_timeout()),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) if is_length_limit(&error) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            too_large.0,
            too_large.1,
        )),
        Ok(Err(error)) => Err(ApiError::bad_request(
            "unreadable_body",
            format!("the body cannot be read: {}", source_text(&error)),
        )),
    }
}

fn body_timeout() -> ApiError {
    ApiError::new(
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
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<ApiJson<T>, ApiError> {
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
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<ApiQuery<T>, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| {
                ApiError::bad_request(
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
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<ApiPath<T>, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| {
                ApiError::bad_request(
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
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request URI is {length} bytes; the limit is {MAX_URI_BYTES}"),
        )
        .into_response();
    }
    next.run(request).await
}

/// The answer to a method a route does not have.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(
            "invalid_json",
            format!("the body is not valid JSON: {}", source_text(&e)),
        ),
        JsonRejection::JsonDataError(e) => ApiError::bad_request(
            "invalid_body",
            format!("the body does not fit: {}", source_text(&e)),
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body cannot be read: {e}"),
            )
        }
        JsonRejection::BytesRejection(e) => ApiError::new(
            e.status(),
            "unreadable_body",
            format!("the body cannot be read: {e}"),
        ),
        other => ApiError::bad_request("invalid_body", other.body_text()),
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

/// Which token a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Ingest,
}

/// Middleware: the request must carry `Authorization: Bearer <token>` of `role`. Tokens are
/// compared in constant time; the other role's token does not open the route.
pub async fn require(
    role: Role,
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let expected: &SecretValue = match role {
        Role::Admin => &state.tokens.admin,
        Role::Ingest => &state.tokens.ingest,
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let accepted = presented
        .is_some_and(|token| bool::from(token.as_bytes().ct_eq(expected.expose().as_bytes())));
    if accepted {
        return next.run(request).await;
    }
    let message = match (presented, role) {
        (None, _) => "this route needs `Authorization: Bearer <token>`",
        (Some(_), Role::Admin) => "the admin token is required for this route",
        (Some(_), Role::Ingest) => "the ingest token is required for this route",
    };
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response()
}
