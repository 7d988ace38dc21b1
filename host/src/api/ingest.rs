//! `POST /v1/events` (SPEC.md §2, §7): one canonical event, or `{"events": […]}` with up to
//! [`MAX_BATCH`]. Every event is checked before anything is written — one bad event and
//! nothing of the batch is stored — then stored with one delivery per subscribed integration,
//! and the answer (202) goes out only once that is durable. (If the server dies mid-write, the
//! client has no answer and sends the batch again; what was already stored is a duplicate.) A repeated `id` writes nothing and gets
//! the original answer (200).
//!
//! Fan-out: an enabled integration subscribed to the event's key (and whose plugin takes it)
//! gets a `pending` delivery; one the host disabled after repeated failures gets a `paused` one
//! that goes out when it is re-enabled; one an admin disabled gets none.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use canopy_events::{Event, EventKind};
use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ErrorBody, read_body};
use crate::runtime::PluginRegistry;
use crate::server::AppState;
use crate::store::{Delivery, DeliveryRef, EventRecord, Integration, NewEvent, Timestamp};

/// Events in one batch at most (SPEC.md §7).
pub const MAX_BATCH: usize = 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ingest))
}

/// The answer for one event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventOut {
    pub id: Uuid,
    pub deliveries: Vec<DeliveryRef>,
    /// The id was already ingested; nothing new was written.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// A canonical event (SPEC.md §2): the envelope, then the event's own fields at top level
/// (`amount`, `balance`, `tier`, …), kept as sent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventIn {
    /// A UUID; assigned (UUIDv7) when absent. A repeated id is a no-op.
    pub id: Option<Uuid>,
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
        (status = 413, description = "Body over the size limit", body = ErrorBody),
    )
)]
async fn ingest(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let limit = state.config.delivery.max_ingest_body_kib << 10;
    let too_large = (
        "body_too_large",
        format!("the body is over the limit of {limit} bytes; send smaller batches"),
    );
    let bytes = read_body(body, limit, too_large).await?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;

    let (items, batch) = match value {
        Value::Object(mut object)
            if !object.contains_key("event") && object.contains_key("events") =>
        {
            match object.remove("events") {
                Some(Value::Array(items)) => (items, true),
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_batch",
                        "`events` must be an array of events",
                    ));
                }
            }
        }
        single => (vec![single], false),
    };
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_batch",
            "the batch has no events",
        ));
    }
    if items.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!(
                "a batch holds at most {MAX_BATCH} events, not {}",
                items.len()
            ),
        ));
    }

    let now = Timestamp::now();
    let mut checked = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let at = |e: ApiError| {
            if batch {
                ApiError {
                    message: format!("events[{index}]: {}", e.message),
                    ..e
                }
                .with_details(json!({ "index": index }))
            } else {
                e
            }
        };
        checked.push(check_event(item, now).map_err(at)?);
    }

    let integrations = state.store.integrations().await?;
    let events: Vec<NewEvent> = checked
        .into_iter()
        .map(|(mut record, json)| {
            let deliveries = fan_out(&record, &integrations, &state.plugins, now);
            record.deliveries = deliveries
                .iter()
                .map(|d| DeliveryRef {
                    id: d.id,
                    integration: d.integration_id,
                    status: d.status,
                })
                .collect();
            NewEvent {
                record,
                json,
                deliveries,
            }
        })
        .collect();
    let ingested = state.store.insert_events(events).await?;

    let new = ingested.iter().filter(|i| !i.duplicate).count();
    if new > 0 {
        state.metrics.events_ingested(new as u64);
        state.wake.notify_one();
    }
    let status = if new > 0 {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let answers: Vec<EventOut> = ingested
        .into_iter()
        .map(|i| EventOut {
            id: i.record.id,
            deliveries: i.record.deliveries,
            duplicate: i.duplicate,
        })
        .collect();
    Ok(if batch {
        (status, Json(json!({ "events": answers }))).into_response()
    } else {
        let answer = answers.into_iter().next().expect("one event");
        (status, Json(answer)).into_response()
    })
}

/// The deliveries an event gets: see the module docs.
/// An integration subscribed to `*` gets only the event types its plugin takes.
fn fan_out(
    event: &EventRecord,
    integrations: &[Integration],
    plugins: &PluginRegistry,
    now: Timestamp,
) -> Vec<Delivery> {
    integrations
        .iter()
        .filter(|i| (i.enabled || i.auto_disabled()) && i.subscribes_to(&event.event))
        .filter(|i| {
            plugins
                .get(&i.plugin)
                .is_none_or(|p| p.info().supports(&event.event))
        })
        .map(|i| Delivery::new(event, i, now))
        .collect()
}

/// Checks one event's envelope and returns its record and JSON text (with its `id`, assigned
/// when absent). Unknown extra fields are kept as they are.
pub fn check_event(value: Value, now: Timestamp) -> Result<(EventRecord, String), ApiError> {
    let Value::Object(object) = value else {
        return Err(ApiError::bad_request(
            "invalid_event",
            "an event must be a JSON object",
        ));
    };
    let key = match object.get("event") {
        None => {
            return Err(ApiError::bad_request(
                "missing_field",
                "the event has no `event` key (its type, such as `seeds.earned.order`)",
            ));
        }
        Some(Value::String(key)) => key.clone(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_event",
                "`event` must be a string",
            ));
        }
    };
    if let Err(unknown) = key.parse::<EventKind>() {
        let valid: Vec<&str> = EventKind::ALL.iter().map(|k| k.key()).collect();
        return Err(ApiError::bad_request("unknown_event", unknown.to_string())
            .with_details(json!({ "valid_events": valid })));
    }
    match object.get("timestamp") {
        None => {
            return Err(ApiError::bad_request(
                "missing_field",
                "the event has no `timestamp` (RFC 3339 in UTC, like 2026-02-06T14:30:00.000Z)",
            ));
        }
        Some(Value::String(text)) if Timestamp::parse(text).is_some() => {}
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_timestamp",
                format!(
                    "`timestamp` {other} is not RFC 3339 in UTC (like 2026-02-06T14:30:00.000Z)"
                ),
            ));
        }
    }
    let id = match object.get("id") {
        None | Some(Value::Null) => Uuid::now_v7(),
        Some(Value::String(text)) => Uuid::parse_str(text).map_err(|_| {
            ApiError::bad_request("invalid_id", format!("`id` {text:?} is not a UUID"))
        })?,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_id",
                format!("`id` must be a UUID string, not {other}"),
            ));
        }
    };

    // `id` first, then the event as sent.
    let mut with_id = Map::with_capacity(object.len() + 1);
    with_id.insert("id".to_owned(), Value::String(id.to_string()));
    for (name, value) in object {
        if name != "id" {
            with_id.insert(name, value);
        }
    }
    let text = Value::Object(with_id).to_string();
    // From the text, as plugins parse it: a number beyond 64 bits is kept as its digits that
    // way (parsing from a `Value` would try to fit it into a Rust integer).
    let event = Event::from_json(&text).map_err(|e| {
        ApiError::bad_request("invalid_event", format!("the event does not fit: {e}"))
    })?;
    let customer = &event.customer;
    let name = customer
        .display_name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .or_else(|| {
            let full = [&customer.first_name, &customer.last_name]
                .into_iter()
                .flatten()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            (!full.is_empty()).then_some(full)
        });
    let record = EventRecord {
        id,
        event: key,
        received_at: now,
        customer_email: customer.email().map(str::to_owned),
        customer_name: name,
        deliveries: Vec::new(),
    };
    Ok((record, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(EventRecord, String), ApiError> {
        check_event(serde_json::from_str(text).unwrap(), Timestamp(0))
    }

    #[test]
    fn a_sample_event_is_kept_as_sent() {
        let sample = EventKind::SeedsEarnedOrder.sample_json();
        let (record, json) = check(sample).unwrap();
        assert_eq!(record.event, "seeds.earned.order");
        assert_eq!(record.customer_email.as_deref(), Some("jane@example.com"));
        assert_eq!(record.customer_name.as_deref(), Some("Jane Smith"));
        let sent: Value = serde_json::from_str(sample).unwrap();
        let kept: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(kept, sent);
    }

    #[test]
    fn an_id_is_assigned_first_and_extra_fields_kept() {
        let (record, json) = check(
            r#"{"event":"tier.changed","timestamp":"2026-02-06T14:30:00Z","x_custom":[1,2],"customer":{"first_name":"Ana"}}"#,
        )
        .unwrap();
        assert_eq!(record.id.get_version_num(), 7);
        assert!(json.starts_with(&format!(r#"{{"id":"{}","event":"tier.changed""#, record.id)));
        assert!(json.contains(r#""x_custom":[1,2]"#));
        assert_eq!(record.customer_email, None);
        assert_eq!(record.customer_name.as_deref(), Some("Ana"));
    }

    #[test]
    fn bad_envelopes_are_named() {
        let cases = [
            (r#"[1]"#, "invalid_event", "must be a JSON object"),
            (
                r#"{"timestamp":"2026-02-06T14:30:00Z"}"#,
                "missing_field",
                "no `event` key",
            ),
            (
                r#"{"event":"seeds.lost","timestamp":"2026-02-06T14:30:00Z"}"#,
                "unknown_event",
                "tier.changed",
            ),
            (
                r#"{"event":"tier.changed"}"#,
                "missing_field",
                "no `timestamp`",
            ),
            (
                r#"{"event":"tier.changed","timestamp":"yesterday"}"#,
                "invalid_timestamp",
                "RFC 3339",
            ),
            (
                r#"{"event":"tier.changed","timestamp":"2026-02-06T14:30:00Z","id":"42"}"#,
                "invalid_id",
                "not a UUID",
            ),
            (
                r#"{"event":"tier.changed","timestamp":"2026-02-06T14:30:00Z","customer":"jane"}"#,
                "invalid_event",
                "does not fit",
            ),
        ];
        for (text, code, message) in cases {
            let error = check(text)
                .err()
                .unwrap_or_else(|| panic!("{text} accepted"));
            assert_eq!(error.code, code, "{text}");
            assert!(error.message.contains(message), "{text}: {}", error.message);
        }
    }
}
