//! The HTTP API of SPEC.md §7, one module per resource, each with its `router()`:
//! [`ingest`] (`POST /v1/events`, ingest token), [`plugins`], [`integrations`] and
//! [`deliveries`] (admin token). Every error a client sees has one JSON shape, `{"error": {"code", "message"}}`
//! (plus `details` where there is more to say), and never carries internals or secrets.

pub mod deliveries;
pub mod ingest;
pub mod integrations;
pub mod plugins;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(details) = self.details {
            error["details"] = details;
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::Rejected(message) => ApiError::unprocessable("rejected", message),
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

/// A JSON body whose rejection speaks the API's error format.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<ApiJson<T>, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
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
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
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
