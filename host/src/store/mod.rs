//! What Canopy keeps: events, integrations, deliveries and their attempts, behind the
//! [`Store`] trait, with the embedded [`sled`](SledStore) implementation. The pipeline only
//! sees the trait, so a PostgreSQL implementation can come later without touching it.
//!
//! Guarantees every implementation gives:
//! - [`Store::insert_events`] returns only once the events and their deliveries are durable.
//!   Each event is written atomically with its deliveries; a large batch may be written in
//!   chunks, so a crash mid-call can leave its first events stored without an answer. That
//!   loses nothing: the client, not having had its 202, sends the batch again, and the events
//!   already stored are duplicates (an event id already stored writes nothing).
//! - Scheduling is a queue ordered by due time. [`Store::claim_due`] hands a due delivery to
//!   one worker under a lease: the queue entry moves to the lease's expiry, so a worker that
//!   dies leaves it due again; [`Store::recover_leases`] releases every lease of a previous
//!   process at start-up (sled's directory lock means no other process holds one).
//! - Every status change keeps the filter indexes in step, so the delivery log is served
//!   from indexes, newest first, without scanning everything.

mod sled;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::runtime::RateLimit;

pub use self::sled::SledStore;

/// A point in time, in milliseconds since the Unix epoch; RFC 3339 in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(since.as_millis() as u64)
    }

    pub fn millis(self) -> u64 {
        self.0
    }

    /// Seconds since the epoch (Standard Webhooks' `webhook-timestamp`).
    pub fn unix_seconds(self) -> i64 {
        (self.0 / 1000) as i64
    }

    pub fn saturating_add(self, duration: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration.as_millis() as u64))
    }

    pub fn saturating_sub(self, duration: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(duration.as_millis() as u64))
    }

    /// The time until `later`, zero when it has passed.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0))
    }

    /// Parses RFC 3339 in UTC (`2026-02-06T14:30:00Z`, fractions allowed, `Z` or `+00:00`),
    /// exactly as written: no surrounding whitespace, `T` between date and time. What passes
    /// is what is kept (an event's timestamp travels on, into headers such as
    /// `X-LoyaltyTree-Timestamp`).
    pub fn parse(text: &str) -> Option<Timestamp> {
        let time = humantime::parse_rfc3339(text).ok()?;
        Some(Timestamp(
            time.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64
        ))
    }

    /// The creation time of a UUIDv7 id.
    pub fn of_id(id: Uuid) -> Timestamp {
        let bytes = id.as_bytes();
        let mut ms = [0u8; 8];
        ms[2..].copy_from_slice(&bytes[..6]);
        Timestamp(u64::from_be_bytes(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = UNIX_EPOCH + Duration::from_millis(self.0);
        write!(f, "{}", humantime::format_rfc3339_millis(time))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some("RFC 3339, UTC, milliseconds"))
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not an RFC 3339 time")))
    }
}

/// A new time-ordered id.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// The smallest and largest UUIDv7 created within the millisecond `at`: bounds of a date range
/// over time-ordered keys.
pub fn id_bounds(at: Timestamp) -> (Uuid, Uuid) {
    let ms = at.0.to_be_bytes();
    let mut low = [0u8; 16];
    low[..6].copy_from_slice(&ms[2..]);
    let mut high = [0xffu8; 16];
    high[..6].copy_from_slice(&ms[2..]);
    (Uuid::from_bytes(low), Uuid::from_bytes(high))
}

/// An event as stored (its JSON text is kept apart, exactly as ingested plus its `id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: Uuid,
    /// The event key (`seeds.earned.order`).
    pub event: String,
    pub received_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_name: Option<String>,
    /// The deliveries made for it at ingest: the answer a repeated `id` gets again.
    pub deliveries: Vec<DeliveryRef>,
}

/// A delivery as the ingest answer names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryRef {
    pub id: Uuid,
    pub integration: Uuid,
    pub status: DeliveryStatus,
}

/// An event to ingest: its record, its JSON text, and the deliveries fanned out from it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub record: EventRecord,
    pub json: String,
    pub deliveries: Vec<Delivery>,
}

/// What [`Store::insert_events`] did with one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Ingested {
    pub record: EventRecord,
    /// The id was already stored: nothing was written, `record` is the original.
    pub duplicate: bool,
}

/// A destination configured by an admin: a plugin, the events it takes, its settings and
/// its secrets (sealed; see `crypto::seal`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Integration {
    pub id: Uuid,
    pub name: String,
    pub plugin: String,
    /// Event keys, or `["*"]`.
    pub events: Vec<String>,
    /// A JSON object of non-secret settings.
    pub settings: serde_json::Value,
    /// Sealed secret values and their hints, by name.
    #[serde(default)]
    pub secrets: BTreeMap<String, StoredSecret>,
    pub enabled: bool,
    /// Why it is disabled, when the host disabled it (auto-disable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Attempts that failed through the destination since its last success (see
    /// [`Integration::observe`]).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// An admin's lower limit than the plugin's declared one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Integration {
    pub fn subscribes_to(&self, event_key: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == event_key)
    }

    /// Whether the host, not an admin, turned it off: deliveries still arrive, paused.
    pub fn auto_disabled(&self) -> bool {
        !self.enabled && self.disabled_reason.is_some()
    }

    /// The auto-disable rule (SPEC.md §4, seed 001), counted per attempt: every attempt that
    /// failed through the destination ([`Signal::Failing`]: an error status, a timeout, a
    /// refused or unreachable address, settings that cannot work) adds one to
    /// `consecutive_failures`, a success resets it, and anything that says nothing about the
    /// destination (a skip, an event the plugin or the host cannot turn into a request, a
    /// broken plugin) leaves it as it is. At `threshold` (0: never) the integration is
    /// disabled with the reason. Counting attempts rather than finished deliveries means a
    /// destination that stays down is disabled while its deliveries are still being retried
    /// (a hanging receiver never finishes one), and never later than the retry window.
    /// Returns whether this observation disabled it.
    pub fn observe(
        &mut self,
        signal: Signal,
        threshold: u32,
        now: Timestamp,
        error: Option<&str>,
    ) -> bool {
        match signal {
            Signal::Healthy => {
                self.consecutive_failures = 0;
                false
            }
            Signal::Neutral => false,
            Signal::Failing => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if threshold == 0 || !self.enabled || self.consecutive_failures < threshold {
                    return false;
                }
                self.enabled = false;
                self.disabled_reason = Some(format!(
                    "disabled automatically after {} consecutive failed attempts{}",
                    self.consecutive_failures,
                    error
                        .map(|e| format!(" (the last: {e})"))
                        .unwrap_or_default()
                ));
                self.updated_at = now;
                true
            }
        }
    }
}

/// What an attempt says about its destination's health, for the auto-disable rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Signal {
    /// Delivered.
    Healthy,
    /// Failed through the destination or the integration's settings.
    Failing,
    /// Says nothing about the destination: skipped, or failed because of the event, the
    /// plugin or the host (a request that cannot be built from this event is not the
    /// destination's failure).
    #[default]
    Neutral,
}

/// A secret as stored: the sealed value and the hint an admin may see.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSecret {
    #[serde(with = "base64_bytes")]
    pub sealed: Vec<u8>,
    pub hint: String,
}

impl fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoredSecret({})", self.hint)
    }
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Where a delivery stands (SPEC.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its first attempt.
    Pending,
    /// Failed at least once; another attempt is scheduled.
    Retrying,
    Succeeded,
    /// Failed for good (a 4xx, a refused destination, a broken plugin).
    Failed,
    /// Every retry of the schedule failed.
    Exhausted,
    /// The plugin declined the event (no email for Klaviyo).
    Skipped,
    /// Held while its integration is auto-disabled; goes out on re-enable.
    Paused,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 7] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Retrying,
        DeliveryStatus::Succeeded,
        DeliveryStatus::Failed,
        DeliveryStatus::Exhausted,
        DeliveryStatus::Skipped,
        DeliveryStatus::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Exhausted => "exhausted",
            DeliveryStatus::Skipped => "skipped",
            DeliveryStatus::Paused => "paused",
        }
    }

    /// Nothing more will happen to it unless an admin retries it.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            DeliveryStatus::Succeeded
                | DeliveryStatus::Failed
                | DeliveryStatus::Exhausted
                | DeliveryStatus::Skipped
        )
    }

    fn code(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<DeliveryStatus, String> {
        DeliveryStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                let valid: Vec<&str> = DeliveryStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown status `{s}`; valid statuses are: {}",
                    valid.join(", ")
                )
            })
    }
}

/// One event on its way to one integration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    /// UUIDv7: ordered by creation time. Also the `webhook-id` of every attempt.
    pub id: Uuid,
    pub event_id: Uuid,
    pub integration_id: Uuid,
    pub plugin: String,
    /// The event key.
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_name: Option<String>,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When the next attempt is due (pending and retrying deliveries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    /// The reason of the last failure, skip or pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Held by a worker until then (an attempt is in flight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<Timestamp>,
}

impl Delivery {
    /// A new delivery, due now, or paused when its integration is auto-disabled.
    pub fn new(event: &EventRecord, integration: &Integration, now: Timestamp) -> Delivery {
        let paused = !integration.enabled;
        Delivery {
            id: new_id(),
            event_id: event.id,
            integration_id: integration.id,
            plugin: integration.plugin.clone(),
            event: event.event.clone(),
            customer_email: event.customer_email.clone(),
            customer_name: event.customer_name.clone(),
            status: if paused {
                DeliveryStatus::Paused
            } else {
                DeliveryStatus::Pending
            },
            attempts: 0,
            created_at: now,
            updated_at: now,
            next_attempt_at: (!paused).then_some(now),
            last_error: paused.then(|| "the integration is disabled".to_owned()),
            lease_until: None,
        }
    }

    /// Where it sits in the queue, if it is queued.
    fn queue_time(&self) -> Option<Timestamp> {
        self.lease_until.or(self.next_attempt_at)
    }
}

/// One try at a delivery: what was sent and what came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    pub started_at: Timestamp,
    pub duration_ms: u64,
    /// The plugin version that handled it.
    pub plugin_version: String,
    /// The delivery's status after this attempt.
    pub outcome: DeliveryStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Requests sent (usually one), secrets redacted.
    pub exchanges: Vec<Exchange>,
}

/// One HTTP request of an attempt and its response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Exchange {
    pub request: SentRequest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ReceivedResponse>,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A request as sent, secrets shown as `[secret:name]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SentRequest {
    pub method: String,
    pub url: String,
    /// `[name, value]` pairs, in order.
    #[schema(value_type = Vec<Vec<String>>)]
    pub headers: Vec<(String, String)>,
    /// The body, cut to a bounded excerpt.
    pub body: String,
    pub body_bytes: usize,
}

/// A response, its body cut to a bounded excerpt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceivedResponse {
    pub status: u16,
    pub body: String,
    pub body_bytes: usize,
}

/// What an attempt changes about its delivery (decided by `delivery::outcome`).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: DeliveryStatus,
    /// When to try again (retrying only).
    pub next_attempt_at: Option<Timestamp>,
    pub error: Option<String>,
    /// What it says about the destination (auto-disable).
    pub signal: Signal,
}

impl Outcome {
    /// The outcome as it applies while the integration is disabled: a delivery that would be
    /// retried is held, paused, instead (it goes out when the integration is enabled again),
    /// so an integration disabled mid-flight drops nothing and sends nothing more.
    pub fn held_while_disabled(mut self, integration: &Integration) -> Outcome {
        if !integration.enabled && self.status == DeliveryStatus::Retrying {
            self.status = DeliveryStatus::Paused;
            self.next_attempt_at = None;
        }
        self
    }
}

/// What recording an attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The delivery's status now (a retry is held as paused once the integration is off).
    pub status: DeliveryStatus,
    /// This attempt disabled the integration.
    pub integration_disabled: bool,
}

/// Filters of the delivery log (SPEC.md §4). All given filters must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryFilter {
    pub integration: Option<Uuid>,
    pub event: Option<String>,
    /// An email or a name, matched whole and case-insensitively.
    pub customer: Option<String>,
    pub status: Option<DeliveryStatus>,
    /// Created at or after.
    pub from: Option<Timestamp>,
    /// Created at or before.
    pub to: Option<Timestamp>,
}

/// Deliveries waiting, now and later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Due now (including held by a worker).
    pub due: u64,
    /// Scheduled for later (retries, rate-limited).
    pub scheduled: u64,
    pub paused: u64,
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    pub deliveries: u64,
    pub events: u64,
}

/// One uploaded (or bundled) version of a plugin. Its component is kept by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginVersion {
    pub plugin: String,
    /// 1, 2, … in the order versions were added.
    pub number: u32,
    /// The version the plugin describes itself with.
    pub version: String,
    /// `sha256:<hex>` of the component.
    pub digest: String,
    pub size: usize,
    pub added_at: Timestamp,
    /// Shipped inside the binary.
    pub bundled: bool,
}

/// A delivery with every attempt, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryDetail {
    pub delivery: Delivery,
    pub attempts: Vec<Attempt>,
}

/// Store failures. The message names the operation, never a stored value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Backend(String),
    #[error("stored data is corrupt ({what}): {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("{0}")]
    Rejected(String),
    /// The store cannot take writes now (a full disk, a database out of reach); it may later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// Changes an integration under the store's write lock; an `Err` leaves it unchanged.
pub type IntegrationChange =
    Box<dyn FnOnce(&mut Integration) -> Result<(), String> + Send + 'static>;

/// The storage every stage of the pipeline goes through.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- events ---------------------------------------------------------------------------

    /// Writes events and their deliveries atomically and durably; an id already stored is a
    /// duplicate (nothing written, the original record returned).
    async fn insert_events(&self, events: Vec<NewEvent>) -> Result<Vec<Ingested>, StoreError>;
    async fn event(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError>;
    /// The event's JSON text as ingested (with its `id`).
    async fn event_json(&self, id: Uuid) -> Result<Option<String>, StoreError>;

    // ---- integrations ---------------------------------------------------------------------

    /// Creates an integration (durably).
    async fn create_integration(&self, integration: &Integration) -> Result<(), StoreError>;
    async fn integration(&self, id: Uuid) -> Result<Option<Integration>, StoreError>;
    async fn integrations(&self) -> Result<Vec<Integration>, StoreError>;
    /// Applies `change`; when it enables a disabled integration, its paused deliveries become
    /// due and its failure count restarts. `None` when there is no such integration.
    async fn update_integration(
        &self,
        id: Uuid,
        now: Timestamp,
        change: IntegrationChange,
    ) -> Result<Option<Integration>, StoreError>;
    /// Removes an integration. Its paused deliveries fail now, its queued ones when they come
    /// up (with "the integration was deleted"); the log keeps them.
    async fn delete_integration(&self, id: Uuid) -> Result<bool, StoreError>;

    // ---- scheduling -----------------------------------------------------------------------

    /// Leases up to `limit` deliveries due at `now` until `lease_until`.
    async fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        lease_until: Timestamp,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// The earliest queue time, leased deliveries included.
    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError>;
    /// Gives a leased delivery back, due at `due` (rate limit, shutdown), without an attempt.
    async fn release(&self, id: Uuid, due: Timestamp) -> Result<(), StoreError>;
    /// Makes every lease due now; returns how many there were.
    async fn recover_leases(&self, now: Timestamp) -> Result<usize, StoreError>;
    /// Holds a leased delivery as paused (its integration is disabled).
    async fn pause(&self, id: Uuid, now: Timestamp, reason: &str) -> Result<(), StoreError>;
    /// Records an attempt of a leased delivery and applies its outcome, with the
    /// integration's auto-disable rule ([`Integration::observe`], threshold `0`: never) and
    /// [`Outcome::held_while_disabled`], in one atomic write.
    async fn record_attempt(
        &self,
        id: Uuid,
        attempt: Attempt,
        outcome: Outcome,
        now: Timestamp,
        auto_disable_after: u32,
    ) -> Result<Recorded, StoreError>;
    /// Queues a failed or exhausted delivery again, due now; `false` if it is not finished
    /// that way (a pending delivery is never queued twice).
    async fn requeue(&self, id: Uuid, now: Timestamp) -> Result<bool, StoreError>;

    // ---- the delivery log -----------------------------------------------------------------

    async fn delivery(&self, id: Uuid) -> Result<Option<DeliveryDetail>, StoreError>;
    /// Newest first, created before `before` (the cursor) when given.
    async fn deliveries(
        &self,
        filter: &DeliveryFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;
    async fn queue_depth(&self, now: Timestamp) -> Result<QueueDepth, StoreError>;

    // ---- housekeeping ---------------------------------------------------------------------

    /// Removes finished deliveries created before `cutoff` (with their attempts), then events
    /// received before it that have no delivery left. Never touches queued or paused work.
    async fn purge(&self, cutoff: Timestamp) -> Result<Purged, StoreError>;
    /// Makes every write so far durable.
    async fn flush(&self) -> Result<(), StoreError>;

    // ---- plugins --------------------------------------------------------------------------

    /// Stores a new version of a plugin (numbered after the last) with its component, and
    /// makes it the active one, in one atomic write.
    async fn add_plugin_version(
        &self,
        plugin: &str,
        version: &str,
        bundled: bool,
        component: &[u8],
        now: Timestamp,
    ) -> Result<PluginVersion, StoreError>;
    /// Every stored version of a plugin, oldest first.
    async fn plugin_versions(&self, plugin: &str) -> Result<Vec<PluginVersion>, StoreError>;
    /// The active version of every stored plugin.
    async fn active_plugin_versions(&self) -> Result<Vec<PluginVersion>, StoreError>;
    /// Makes a stored version the active one.
    async fn activate_plugin_version(&self, plugin: &str, number: u32) -> Result<(), StoreError>;
    async fn plugin_component(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Removes a plugin with its versions, and remembers that it was removed (a bundled
    /// plugin is not installed again).
    async fn delete_plugin(&self, plugin: &str) -> Result<bool, StoreError>;
    async fn plugin_removed(&self, plugin: &str) -> Result<bool, StoreError>;

    /// Replaces every integration's secrets (re-sealed under a new key) and the key's
    /// fingerprint in one atomic write.
    async fn rekey(
        &self,
        integrations: Vec<Integration>,
        fingerprint_name: &str,
        fingerprint: &str,
    ) -> Result<(), StoreError>;

    // ---- health ---------------------------------------------------------------------------

    /// Whether the store can take writes now; why not, when it cannot.
    async fn health(&self) -> Result<(), String>;
    /// Makes a store that cannot take writes usable again, if it can be now (the server's
    /// watchdog calls it while [`Store::health`] fails). `Ok` once it is usable.
    async fn recover(&self) -> Result<(), StoreError>;

    // ---- metadata -------------------------------------------------------------------------

    /// A named value about the store itself (such as the master key's fingerprint).
    async fn meta(&self, name: &str) -> Result<Option<String>, StoreError>;
    async fn set_meta(&self, name: &str, value: &str) -> Result<(), StoreError>;
}
