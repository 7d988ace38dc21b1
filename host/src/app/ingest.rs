//! Ingest (SPEC.md §2, §7): one canonical event, or a batch of up to [`MAX_BATCH`]. Every event
//! is checked before anything is written — one bad event and nothing of the batch is stored:
//! its envelope, its shop (named by `shop`, else the ingest token's own shop, else `default`;
//! it must exist, and a shop's ingest token posts only its own). Then it is stored with one delivery per subscribed
//! integration *of its shop*, and the answer goes out only once that is durable. (If the
//! server dies mid-write, the client has no answer and sends the batch again; what was
//! already stored is a duplicate.) A repeated `id` writes nothing and gets the original
//! answer; an `id` another shop's event already has answers 409 `id_conflict` (ids are
//! unique across shops).
//!
//! Fan-out: an enabled integration subscribed to the event's key (and whose plugin takes it)
//! gets a `pending` delivery; one the host disabled after repeated failures gets a `paused` one
//! that goes out when it is re-enabled; one an admin disabled gets none.

use std::collections::HashMap;

use canopy_events::{Event, EventKind};
use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::access::Caller;
use super::{App, AppError};
use crate::model::{
    DEFAULT_SHOP, Delivery, DeliveryRef, EventRecord, Integration, NewEvent, Timestamp,
    check_shop_id,
};
use crate::runtime::PluginRegistry;

/// Events in one batch at most (SPEC.md §7).
pub const MAX_BATCH: usize = 1000;

/// The answer for one event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventOut {
    pub id: Uuid,
    pub shop: String,
    pub deliveries: Vec<DeliveryRef>,
    /// The id was already ingested; nothing new was written.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// What an ingest did: the answer of each event, and whether anything was new.
pub struct Ingested {
    pub events: Vec<EventOut>,
    pub new: usize,
}

/// Checks and stores events (the items of a batch, or one); `batch` says whether errors
/// name the event's index.
pub async fn ingest(
    app: &App,
    caller: &Caller,
    items: Vec<Value>,
    batch: bool,
) -> Result<Ingested, AppError> {
    if items.is_empty() {
        return Err(AppError::bad_request(
            "invalid_batch",
            "the batch has no events",
        ));
    }
    if items.len() > MAX_BATCH {
        return Err(AppError::bad_request(
            "batch_too_large",
            format!(
                "a batch holds at most {MAX_BATCH} events, not {}",
                items.len()
            ),
        ));
    }
    let at = |index: usize| {
        move |e: AppError| {
            if batch {
                AppError {
                    message: format!("events[{index}]: {}", e.message),
                    ..e
                }
                .with_details(json!({ "index": index }))
            } else {
                e
            }
        }
    };

    let now = app.clock.now();
    let mut checked = Vec::with_capacity(items.len());
    // Each shop an event names, checked once per batch, with its integrations.
    let mut shops: HashMap<String, Vec<Integration>> = HashMap::new();
    for (index, item) in items.into_iter().enumerate() {
        let (mut record, json, named) = check_event(item, now).map_err(at(index))?;
        let shop = caller.event_shop(named.as_deref()).map_err(at(index))?;
        if !shops.contains_key(&shop) {
            let known = check_shop_id(&shop).is_ok()
                && app
                    .store
                    .shop(&shop)
                    .await?
                    .is_some_and(|s| !s.is_deleted());
            if !known {
                return Err(at(index)(AppError::unprocessable(
                    "unknown_shop",
                    format!(
                        "there is no shop `{shop}`; a platform admin creates it with POST /v1/shops"
                    ),
                )));
            }
            shops.insert(shop.clone(), app.store.integrations(Some(&shop)).await?);
        }
        record.shop = shop;
        checked.push((record, json));
    }

    let events: Vec<NewEvent> = checked
        .into_iter()
        .map(|(mut record, json)| {
            let deliveries = fan_out(&record, &shops[&record.shop], &app.plugins, now);
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
    let shops_of: Vec<String> = events.iter().map(|e| e.record.shop.clone()).collect();
    let ingested = app.store.insert_events(events).await?;

    let new = ingested.iter().filter(|i| !i.duplicate).count();
    if new > 0 {
        app.metrics.events_ingested(new as u64);
    }
    let mut answers = Vec::with_capacity(ingested.len());
    for (i, (ingested, shop)) in ingested.into_iter().zip(shops_of).enumerate() {
        // An id another shop's event has: nothing was written for it (the events before it
        // in the batch were, and come back as duplicates when the batch is sent again).
        if ingested.record.shop != shop {
            return Err(at(i)(id_conflict(ingested.record.id)));
        }
        answers.push(EventOut {
            id: ingested.record.id,
            shop,
            deliveries: ingested.record.deliveries,
            duplicate: ingested.duplicate,
        });
    }
    Ok(Ingested {
        events: answers,
        new,
    })
}

fn id_conflict(id: Uuid) -> AppError {
    AppError::conflict(
        "id_conflict",
        format!("the id {id} is already used by another event; give each event its own id"),
    )
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
        .filter(|i| i.shop == event.shop)
        .filter(|i| (i.enabled || i.auto_disabled()) && i.subscribes_to(&event.event))
        .filter(|i| {
            plugins
                .get(&i.plugin)
                .is_none_or(|p| p.info().supports(&event.event))
        })
        .map(|i| Delivery::new(event, i, now))
        .collect()
}

/// Checks one event's envelope and returns its record (in the `default` shop until its shop
/// is known), its JSON text (with its `id`, assigned when absent) and the shop it names, if
/// any. Unknown extra fields are kept as they are.
pub fn check_event(
    value: Value,
    now: Timestamp,
) -> Result<(EventRecord, String, Option<String>), AppError> {
    let Value::Object(object) = value else {
        return Err(AppError::bad_request(
            "invalid_event",
            "an event must be a JSON object",
        ));
    };
    let key = match object.get("event") {
        None => {
            return Err(AppError::bad_request(
                "missing_field",
                "the event has no `event` key (its type, such as `seeds.earned.order`)",
            ));
        }
        Some(Value::String(key)) => key.clone(),
        Some(_) => {
            return Err(AppError::bad_request(
                "invalid_event",
                "`event` must be a string",
            ));
        }
    };
    if let Err(unknown) = key.parse::<EventKind>() {
        let valid: Vec<&str> = EventKind::ALL.iter().map(|k| k.key()).collect();
        return Err(AppError::bad_request("unknown_event", unknown.to_string())
            .with_details(json!({ "valid_events": valid })));
    }
    match object.get("timestamp") {
        None => {
            return Err(AppError::bad_request(
                "missing_field",
                "the event has no `timestamp` (RFC 3339 in UTC, like 2026-02-06T14:30:00.000Z)",
            ));
        }
        Some(Value::String(text)) if Timestamp::parse(text).is_some() => {}
        Some(other) => {
            return Err(AppError::bad_request(
                "invalid_timestamp",
                format!(
                    "`timestamp` {other} is not RFC 3339 in UTC (like 2026-02-06T14:30:00.000Z)"
                ),
            ));
        }
    }
    let shop = match object.get("shop") {
        None | Some(Value::Null) => None,
        Some(Value::String(shop)) => Some(shop.clone()),
        Some(other) => {
            return Err(AppError::bad_request(
                "invalid_event",
                format!("`shop` must be a shop id (a string), not {other}"),
            ));
        }
    };
    let id = match object.get("id") {
        None | Some(Value::Null) => Uuid::now_v7(),
        Some(Value::String(text)) => Uuid::parse_str(text).map_err(|_| {
            AppError::bad_request("invalid_id", format!("`id` {text:?} is not a UUID"))
        })?,
        Some(other) => {
            return Err(AppError::bad_request(
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
        AppError::bad_request("invalid_event", format!("the event does not fit: {e}"))
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
        shop: DEFAULT_SHOP.to_owned(),
        event: key,
        received_at: now,
        customer_email: customer.email().map(str::to_owned),
        customer_name: name,
        deliveries: Vec::new(),
    };
    Ok((record, text, shop))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(EventRecord, String), AppError> {
        check_event(serde_json::from_str(text).unwrap(), Timestamp(0)).map(|(r, j, _)| (r, j))
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
