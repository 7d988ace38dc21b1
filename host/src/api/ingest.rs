//! `POST /v1/events` (SPEC.md §2, §7): one canonical event, or `{"events": […]}` with up to
//! [`MAX_BATCH`]. The body is read and parsed here; checking, fan-out and storing are
//! [`crate::app::ingest`]'s.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ErrorBody, read_body};
use crate::app::access::Caller;
use crate::app::ingest::{self as service, EventOut};
use crate::app::{App, AppError};

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(ingest))
}

/// A canonical event (SPEC.md §2): the envelope, then the event's own fields at top level
/// (`amount`, `balance`, `tier`, …), kept as sent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventIn {
    /// A UUID; assigned (UUIDv7) when absent. A repeated id is a no-op.
    pub id: Option<Uuid>,
    /// The shop it belongs to (default: the ingest token's own shop, else `default`).
    pub shop: Option<String>,
    /// One of the 19 event types, such as `seeds.earned.order`.
    pub event: String,
    /// RFC 3339 in UTC.
    pub timestamp: String,
    pub customer: Option<CustomerIn>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CustomerIn {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub display_name: Option<String>,
    pub shopify_customer_id: Option<String>,
}

/// One event, or a batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum IngestIn {
    One(EventIn),
    Batch {
        /// 1 to 1,000 events, all checked before any is stored.
        events: Vec<EventIn>,
    },
}

/// The answer for one event, or for a batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum IngestOut {
    One(EventOut),
    Batch { events: Vec<EventOut> },
}

/// Ingest one event or a batch.
#[utoipa::path(
    post, path = "/v1/events", tag = "ingest",
    security(("ingest_token" = [])),
    request_body = IngestIn,
    responses(
        (status = 202, description = "Stored durably with its deliveries", body = IngestOut),
        (status = 200, description = "Every event was ingested before: the original answer", body = IngestOut),
        (status = 400, description = "Bad JSON, an unknown or missing event type, a bad envelope", body = ErrorBody),
        (status = 401, description = "No or wrong ingest token", body = ErrorBody),
        (status = 403, description = "A shop's ingest token, and an event of another shop", body = ErrorBody),
        (status = 409, description = "An `id` another shop's event already has", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 422, description = "An event for a shop that does not exist; nothing was written", body = ErrorBody),
        (status = 503, description = "The store cannot take writes now (Retry-After)", body = ErrorBody),
    )
)]
async fn ingest(State(app): State<App>, caller: Caller, body: Body) -> Result<Response, AppError> {
    let limit = app.config.delivery.max_ingest_body_kib << 10;
    let too_large = (
        "body_too_large",
        format!("the body is over the limit of {limit} bytes; send smaller batches"),
    );
    let bytes = read_body(body, limit, too_large).await?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        AppError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    let (items, batch) = match value {
        Value::Object(mut object)
            if !object.contains_key("event") && object.contains_key("events") =>
        {
            match object.remove("events") {
                Some(Value::Array(items)) => (items, true),
                _ => {
                    return Err(AppError::bad_request(
                        "invalid_batch",
                        "`events` must be an array of events",
                    ));
                }
            }
        }
        single => (vec![single], false),
    };
    let ingested = service::ingest(&app, &caller, items, batch).await?;
    let status = if ingested.new > 0 {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(if batch {
        (status, Json(json!({ "events": ingested.events }))).into_response()
    } else {
        let answer = ingested.events.into_iter().next().expect("one event");
        (status, Json(answer)).into_response()
    })
}
