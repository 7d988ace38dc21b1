//! The delivery log (SPEC.md §4, §7): `GET /v1/deliveries` with the log's filters and cursor
//! pagination, newest first; `GET /v1/deliveries/{id}` with every attempt (`attempts` is then the list, not the count);
//! `POST /v1/deliveries/{id}/retry` queues a failed or exhausted delivery again;
//! `POST /v1/deliveries/retry?<filters>` does so for every failed or exhausted delivery the
//! filters match (a delivery already queued is never queued twice).
//!
//! Filters: `integration` (id), `event` (key), `customer` (an email or a name, whole,
//! case-insensitive), `status`, `from` / `to` (RFC 3339, creation time), `limit` (1–500,
//! default 50) and `cursor` (the `next_cursor` of the previous page).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::integrations::parse_id;
use super::{ApiError, ApiPath, ApiQuery, ErrorBody};
use crate::server::AppState;
use crate::store::{Attempt, Delivery, DeliveryFilter, DeliveryStatus, Timestamp};

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(retry_matching))
        .routes(routes!(show))
        .routes(routes!(retry))
}

/// The query string of the list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Integration id.
    pub integration: Option<String>,
    /// Event type (`seeds.earned.order`).
    pub event: Option<String>,
    /// An email or a name, matched whole, case-insensitively.
    pub customer: Option<String>,
    /// pending, retrying, succeeded, failed, exhausted, skipped or paused.
    pub status: Option<String>,
    /// Created at or after (RFC 3339).
    pub from: Option<String>,
    /// Created at or before (RFC 3339).
    pub to: Option<String>,
    /// Page size, 1 to 500 (default 50). Not for the bulk retry.
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page. Not for the bulk retry.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    /// Newest first.
    pub deliveries: Vec<Delivery>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<Uuid>,
}

/// A delivery with every attempt (`attempts` is the list here, the count in the list).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryDetailOut {
    pub id: Uuid,
    pub event_id: Uuid,
    pub integration_id: Uuid,
    pub plugin: String,
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_name: Option<String>,
    pub status: DeliveryStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<Timestamp>,
    /// Oldest first.
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Requeued {
    pub id: Uuid,
    pub status: DeliveryStatus,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkRequeued {
    /// How many deliveries were queued again.
    pub requeued: u64,
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

/// The delivery log, newest first.
#[utoipa::path(
    get, path = "/v1/deliveries", tag = "deliveries",
    security(("admin_token" = [])),
    params(ListQuery),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 400, description = "A filter that cannot be read", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
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
    Ok(Json(DeliveryPage {
        deliveries,
        next_cursor,
    }))
}

/// One delivery with every attempt.
#[utoipa::path(
    get, path = "/v1/deliveries/{id}", tag = "deliveries",
    security(("admin_token" = [])),
    params(("id" = Uuid, Path, description = "Delivery id")),
    responses(
        (status = 200, body = DeliveryDetailOut),
        (status = 400, description = "Not an id", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody),
    )
)]
async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeliveryDetailOut>, ApiError> {
    let id = parse_id(&id)?;
    let detail = state
        .store
        .delivery(id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    let d = detail.delivery;
    Ok(Json(DeliveryDetailOut {
        id: d.id,
        event_id: d.event_id,
        integration_id: d.integration_id,
        plugin: d.plugin,
        event: d.event,
        customer_email: d.customer_email,
        customer_name: d.customer_name,
        status: d.status,
        created_at: d.created_at,
        updated_at: d.updated_at,
        next_attempt_at: d.next_attempt_at,
        last_error: d.last_error,
        lease_until: d.lease_until,
        attempts: detail.attempts,
    }))
}

/// Queue a failed or exhausted delivery again.
#[utoipa::path(
    post, path = "/v1/deliveries/{id}/retry", tag = "deliveries",
    security(("admin_token" = [])),
    params(("id" = Uuid, Path, description = "Delivery id")),
    responses(
        (status = 202, description = "Queued; it goes out at once", body = Requeued),
        (status = 400, description = "Not an id", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody),
        (status = 409, description = "Not failed or exhausted (already queued, or delivered)", body = ErrorBody),
    )
)]
async fn retry(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<Requeued>), ApiError> {
    let id = parse_id(&id)?;
    if !state.store.requeue(id, Timestamp::now()).await? {
        // Only now is the delivery read, to say why.
        let detail = state
            .store
            .delivery(id)
            .await?
            .ok_or_else(|| ApiError::not_found("delivery"))?;
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
        Json(Requeued {
            id,
            status: DeliveryStatus::Pending,
        }),
    ))
}

/// Deliveries requeued per store page by the bulk retry.
const RETRY_PAGE: usize = 500;

/// Queue again every failed or exhausted delivery the filters match.
#[utoipa::path(
    post, path = "/v1/deliveries/retry", tag = "deliveries",
    security(("admin_token" = [])),
    params(ListQuery),
    responses(
        (status = 200, body = BulkRequeued),
        (status = 400, description = "A filter that cannot be read, or a status that cannot be retried", body = ErrorBody),
        (status = 401, description = "No or wrong admin token", body = ErrorBody),
    )
)]
async fn retry_matching(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<BulkRequeued>, ApiError> {
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
    Ok(Json(BulkRequeued { requeued }))
}
