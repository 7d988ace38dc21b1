//! The one error shape of the application: what a client (the API's JSON, the UI's page) is
//! told when a request cannot be done — an HTTP status, a stable `code` for programs, a
//! message for people, details where there is more to say — never internals or secrets.

use axum::http::StatusCode;
use serde_json::Value;

use crate::store::StoreError;

/// An error answered to a client.
#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    /// Stable, for programs: `invalid_json`, `unknown_event`, `not_found`, …
    pub code: &'static str,
    /// For people.
    pub message: String,
    pub details: Option<Value>,
}

impl AppError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> AppError {
        AppError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(what: &str) -> AppError {
        AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::CONFLICT, code, message)
    }

    pub fn with_details(mut self, details: Value) -> AppError {
        self.details = Some(details);
        self
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> AppError {
        match error {
            StoreError::Rejected(message) => AppError::unprocessable("rejected", message),
            StoreError::Unavailable(reason) => AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!(
                    "the store cannot take writes now ({reason}); nothing was changed, try again later"
                ),
            ),
            other => {
                // The detail goes to the log, not to the client.
                tracing::error!(error = %other, "storage failure while answering a request");
                AppError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage_error",
                    "the store could not complete the request; nothing was changed or it is safe to retry",
                )
            }
        }
    }
}
