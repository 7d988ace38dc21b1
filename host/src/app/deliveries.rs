//! A shop's delivery log (SPEC.md §4, §7): the list with the log's filters and cursor
//! pagination, newest first; one delivery with every attempt; a retry of one failed or
//! exhausted delivery, or of every one a filter matches (a delivery already queued is never
//! queued twice).
//!
//! Filters: `integration` (id), `event` (key), `customer` (an email or a name, whole,
//! case-insensitive), `status`, `from` / `to` (RFC 3339, creation time), `limit` (1–500,
//! default 50) and `cursor` (the `next_cursor` of the previous page). Everything is within
//! the shop: another shop's integration, delivery or cursor finds nothing.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{App, AppError};
use crate::model::{
    Attempt, Delivery, DeliveryDetail, DeliveryFilter, DeliveryStatus, Shop, Timestamp,
};

pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

/// The query string of the list (and of the bulk retry, without `limit` and `cursor`).
#[derive(Debug, Default, Clone, Deserialize, Serialize, utoipa::IntoParams)]
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

impl ListQuery {
    /// The filter it describes, or what is wrong with it.
    pub fn filter(&self) -> Result<DeliveryFilter, AppError> {
        let time = |name: &str, text: &Option<String>| {
            text.as_deref()
                .filter(|t| !t.is_empty())
                .map(|t| {
                    Timestamp::parse(t).ok_or_else(|| {
                        AppError::bad_request(
                            "invalid_query",
                            format!("`{name}` {t:?} is not an RFC 3339 time"),
                        )
                    })
                })
                .transpose()
        };
        Ok(DeliveryFilter {
            integration: self
                .integration
                .as_deref()
                .filter(|i| !i.is_empty())
                .map(parse_id)
                .transpose()?,
            event: self.event.clone().filter(|e| !e.is_empty()),
            customer: self.customer.clone().filter(|c| !c.trim().is_empty()),
            status: self
                .status
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<DeliveryStatus>())
                .transpose()
                .map_err(|m| AppError::bad_request("invalid_query", m))?,
            from: time("from", &self.from)?,
            to: time("to", &self.to)?,
        })
    }
}

/// An id in a path or a query: 400 when it is not one.
pub fn parse_id(text: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(text)
        .map_err(|_| AppError::bad_request("invalid_id", format!("`{text}` is not a valid id")))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    /// Newest first.
    #[serde(serialize_with = "without_lease_tokens")]
    pub deliveries: Vec<Delivery>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<Uuid>,
}

/// Deliveries as readers see them: without the token of the lease a worker may hold (the
/// worker's fence, nothing a reader can use).
fn without_lease_tokens<S: serde::Serializer>(
    deliveries: &[Delivery],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(deliveries.iter().map(|d| Delivery {
        lease_token: None,
        ..d.clone()
    }))
}

pub async fn list(app: &App, shop: &Shop, query: &ListQuery) -> Result<DeliveryPage, AppError> {
    let filter = query.filter()?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::bad_request(
            "invalid_query",
            format!("`limit` must be between 1 and {MAX_PAGE}"),
        ));
    }
    let cursor = query
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(parse_id)
        .transpose()?;
    let deliveries = app
        .store
        .deliveries(&shop.id, &filter, cursor, limit)
        .await?;
    let next_cursor = (deliveries.len() == limit)
        .then(|| deliveries.last().map(|d| d.id))
        .flatten();
    Ok(DeliveryPage {
        deliveries,
        next_cursor,
    })
}

/// The shop's delivery `id` with every attempt (404 for another shop's).
pub async fn get(app: &App, shop: &Shop, id: Uuid) -> Result<DeliveryDetail, AppError> {
    app.store
        .delivery(&shop.id, id)
        .await?
        .ok_or_else(|| AppError::not_found("delivery"))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Requeued {
    pub id: Uuid,
    pub status: DeliveryStatus,
}

/// Queues a failed or exhausted delivery again, due now (409 for any other status).
pub async fn retry(app: &App, shop: &Shop, id: Uuid) -> Result<Requeued, AppError> {
    if !app.store.requeue(&shop.id, id, app.clock.now()).await? {
        // Only now is the delivery read, to say why.
        let detail = get(app, shop, id).await?;
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            format!(
                "only failed or exhausted deliveries can be retried; this one is {}",
                detail.delivery.status
            ),
        ));
    }
    Ok(Requeued {
        id,
        status: DeliveryStatus::Pending,
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkRequeued {
    /// How many deliveries were queued again.
    pub requeued: u64,
}

/// Queues again every failed or exhausted delivery of the shop that the filters match.
pub async fn retry_matching(
    app: &App,
    shop: &Shop,
    query: &ListQuery,
) -> Result<BulkRequeued, AppError> {
    if query.limit.is_some() || query.cursor.is_some() {
        return Err(AppError::bad_request(
            "invalid_query",
            "the bulk retry takes the list's filters, not `limit` or `cursor`",
        ));
    }
    let filter = query.filter()?;
    if let Some(other) = filter
        .status
        .filter(|s| !matches!(s, DeliveryStatus::Failed | DeliveryStatus::Exhausted))
    {
        return Err(AppError::bad_request(
            "invalid_query",
            format!("only failed or exhausted deliveries can be retried, not {other}"),
        ));
    }
    let requeued = app
        .store
        .requeue_matching(&shop.id, &filter, app.clock.now())
        .await?;
    tracing::info!(shop = %shop.id, requeued, "deliveries queued again by filter");
    Ok(BulkRequeued { requeued })
}

/// A delivery with every attempt (`attempts` is the list here, the count in the list).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryDetailOut {
    pub id: Uuid,
    pub shop: String,
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

impl From<DeliveryDetail> for DeliveryDetailOut {
    fn from(detail: DeliveryDetail) -> DeliveryDetailOut {
        let d = detail.delivery;
        DeliveryDetailOut {
            id: d.id,
            shop: d.shop,
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
        }
    }
}
