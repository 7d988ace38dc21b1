//! The delivery log (SPEC.md §4, §7): `GET /v1/deliveries` with the log's filters and cursor
//! pagination, newest first; `GET /v1/deliveries/{id}` with every attempt (`attempts` is then the list, not the count);
//! `POST /v1/deliveries/{id}/retry` queues a failed or exhausted delivery again;
//! `POST /v1/deliveries/retry?<filters>` does so for every failed or exhausted delivery the
//! filters match (a delivery already queued is never queued twice).
//!
//! Filters: `integration` (id), `event` (key), `customer` (an email or a name, whole,
//! case-insensitive), `status`, `from` / `to` (RFC 3339, creation time), `limit` (1–500,
//! default 50) and `cursor` (the `next_cursor` of the previous page).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::integrations::parse_id;
use crate::server::AppState;
use crate::store::{DeliveryFilter, DeliveryStatus, Timestamp};

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/deliveries", get(list))
        .route("/v1/deliveries/retry", post(retry_matching))
        .route("/v1/deliveries/{id}", get(show))
        .route("/v1/deliveries/{id}/retry", post(retry))
}

/// The query string of the list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub integration: Option<String>,
    pub event: Option<String>,
    pub customer: Option<String>,
    pub status: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

impl ListQuery {
    /// The filter it describes, or what is wrong with it.
    pub fn filter(&self) -> Result<DeliveryFilter, ApiError> {
        let time = |name: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| {
                    Timestamp::parse(t).ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_query",
                            format!("`{name}` {t:?} is not an RFC 3339 time"),
                        )
                    })
                })
                .transpose()
        };
        Ok(DeliveryFilter {
            integration: self.integration.as_deref().map(parse_id).transpose()?,
            event: self.event.clone().filter(|e| !e.is_empty()),
            customer: self.customer.clone().filter(|c| !c.trim().is_empty()),
            status: self
                .status
                .as_deref()
                .map(|s| s.parse::<DeliveryStatus>())
                .transpose()
                .map_err(|m| ApiError::bad_request("invalid_query", m))?,
            from: time("from", &self.from)?,
            to: time("to", &self.to)?,
        })
    }
}

async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = query.filter()?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`limit` must be between 1 and {MAX_PAGE}"),
        ));
    }
    let cursor = query.cursor.as_deref().map(parse_id).transpose()?;
    let deliveries = state.store.deliveries(&filter, cursor, limit).await?;
    let next_cursor = (deliveries.len() == limit)
        .then(|| deliveries.last().map(|d| d.id))
        .flatten();
    Ok(Json(
        json!({ "deliveries": deliveries, "next_cursor": next_cursor }),
    ))
}

async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let detail = state
        .store
        .delivery(id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    // The detail lists the attempts where the list shows their count.
    let mut body = serde_json::to_value(&detail.delivery).unwrap_or_default();
    body["attempts"] = serde_json::to_value(&detail.attempts).unwrap_or_default();
    Ok(Json(body))
}

async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    let Some(detail) = state.store.delivery(id).await? else {
        return Err(ApiError::not_found("delivery"));
    };
    if !state.store.requeue(id, Timestamp::now()).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            format!(
                "only failed or exhausted deliveries can be retried; this one is {}",
                detail.delivery.status
            ),
        ));
    }
    state.wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "status": "pending" })),
    ))
}

/// Deliveries requeued per store page by the bulk retry.
const RETRY_PAGE: usize = 500;

async fn retry_matching(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if query.limit.is_some() || query.cursor.is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "the bulk retry takes the list's filters, not `limit` or `cursor`",
        ));
    }
    let filter = query.filter()?;
    let statuses = match filter.status {
        None => vec![DeliveryStatus::Failed, DeliveryStatus::Exhausted],
        Some(s @ (DeliveryStatus::Failed | DeliveryStatus::Exhausted)) => vec![s],
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("only failed or exhausted deliveries can be retried, not {other}"),
            ));
        }
    };
    let now = Timestamp::now();
    let mut requeued = 0u64;
    for status in statuses {
        let filter = DeliveryFilter {
            status: Some(status),
            ..filter.clone()
        };
        let mut cursor = None;
        loop {
            let page = state.store.deliveries(&filter, cursor, RETRY_PAGE).await?;
            for delivery in &page {
                if state.store.requeue(delivery.id, now).await? {
                    requeued += 1;
                }
            }
            match page.last() {
                Some(last) if page.len() == RETRY_PAGE => cursor = Some(last.id),
                _ => break,
            }
        }
    }
    if requeued > 0 {
        state.wake.notify_one();
    }
    tracing::info!(requeued, "deliveries queued again by filter");
    Ok(Json(json!({ "requeued": requeued })))
}
