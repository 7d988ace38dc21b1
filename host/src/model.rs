//! The domain model: shops, events, integrations, deliveries, attempts and plugin versions,
//! with the business rules that belong to them as plain functions (auto-disable, what an
//! outcome does while an integration is off, ending work whose integration or shop is gone).
//! Every store backend calls these rules inside its own transaction, so no backend holds a
//! rule of its own.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::runtime::RateLimit;

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

/// A new time-ordered id that carries `at`, the creation time of what it names on the
/// application's clock. The purge and the log's date filters read a delivery's creation time
/// back from its id, so it must be the clock's, not the system's (the two differ under a
/// test's manual clock). Ids made in one process increase while `at` does not go back (one
/// clock); an `at` earlier than one already used (another clock in the same process, as in
/// the tests) still gets exactly its own time, with random low bits.
pub fn new_id_at(at: Timestamp) -> Uuid {
    /// The latest time ids were made for, and the counter that orders ids within it.
    static LATEST: std::sync::Mutex<(u64, uuid::ContextV7)> =
        std::sync::Mutex::new((0, uuid::ContextV7::new()));
    let (seconds, nanos) = (at.0 / 1_000, (at.0 % 1_000) as u32 * 1_000_000);
    let mut latest = LATEST.lock().unwrap_or_else(|p| p.into_inner());
    if at.0 < latest.0 {
        drop(latest);
        return Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, seconds, nanos));
    }
    latest.0 = at.0;
    Uuid::new_v7(uuid::Timestamp::from_unix(&latest.1, seconds, nanos))
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

// ---- shops ---------------------------------------------------------------------------------

/// The shop of everything written before shops existed, and of events that name none.
pub const DEFAULT_SHOP: &str = "default";

/// Longest shop id (a `*.myshopify.com` domain is well under it).
pub const MAX_SHOP_ID_CHARS: usize = 100;

fn default_shop() -> String {
    DEFAULT_SHOP.to_owned()
}

/// Checks a shop id: 1 to [`MAX_SHOP_ID_CHARS`] lowercase letters, digits, `.` and `-`,
/// starting and ending with a letter or digit (`green-shop.myshopify.com`).
pub fn check_shop_id(id: &str) -> Result<(), String> {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let valid = !id.is_empty()
        && id.len() <= MAX_SHOP_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && edge_ok(id.chars().next())
        && edge_ok(id.chars().last());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a shop id: 1 to {MAX_SHOP_ID_CHARS} lowercase letters, digits, `.` and `-`, \
             starting and ending with a letter or digit (such as green-shop.myshopify.com)"
        ))
    }
}

/// One store on the platform. Every integration, event, delivery and attempt belongs to
/// exactly one shop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Shop {
    /// Chosen by the platform (see [`check_shop_id`]); never changes.
    pub id: String,
    /// Display name.
    pub name: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Set when the shop was deleted: it answers nowhere any more, and its id is kept from
    /// reuse until the retention purge has removed its last delivery (so a new shop with the
    /// same id never sees an old one's log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Timestamp>,
}

impl Shop {
    pub fn new(id: &str, name: &str, now: Timestamp) -> Shop {
        Shop {
            id: id.to_owned(),
            name: name.to_owned(),
            created_at: now,
            updated_at: now,
            deleted_at: None,
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// What a shop token opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// The shop's integrations, Test, deliveries, retries, health; plugins read-only.
    Admin,
    /// `POST /v1/events`, for this shop's events only.
    Ingest,
}

/// A credential of one shop. Only the SHA-256 of the token is kept; the token itself is shown
/// once, when it is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShopToken {
    pub id: Uuid,
    pub shop: String,
    pub kind: TokenKind,
    /// Hex SHA-256 of the token.
    pub hash: String,
    /// Its last characters, to tell tokens apart (`••••a1b2`).
    pub hint: String,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Timestamp>,
    /// After a rotation, the old token works until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

impl ShopToken {
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// What deleting a shop did, or why it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShopDeletion {
    NotFound,
    /// Not deleted: it has integrations, and no cascade was asked for.
    HasIntegrations(usize),
    Deleted {
        integrations: usize,
        /// Queued or paused deliveries ended as failed.
        ended: usize,
    },
}

// ---- events -------------------------------------------------------------------------------

/// An event as stored (its JSON text is kept apart, exactly as ingested plus its `id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: Uuid,
    #[serde(default = "default_shop")]
    pub shop: String,
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

/// Attempts in flight at once for an integration that sets no cap of its own: enough for a
/// platform's documented rate over a normal round trip, few enough that a destination that
/// hangs until the timeout holds only these workers.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 10;
/// The highest cap an integration may set.
pub const MAX_IN_FLIGHT_LIMIT: u32 = 256;

// ---- integrations -------------------------------------------------------------------------

/// A destination configured by an admin: a plugin, the events it takes, its settings and
/// its secrets (sealed; see `crypto::seal`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Integration {
    pub id: Uuid,
    #[serde(default = "default_shop")]
    pub shop: String,
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
    /// Attempts in flight at once (default [`DEFAULT_MAX_IN_FLIGHT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
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

    /// Attempts it may have in flight at once.
    pub fn in_flight_cap(&self) -> u32 {
        self.max_in_flight
            .unwrap_or(DEFAULT_MAX_IN_FLIGHT)
            .clamp(1, MAX_IN_FLIGHT_LIMIT)
    }

    /// What enabling it does to a delivery it paused: due now, as pending (never tried) or
    /// retrying. The rule every backend applies when `enabled` turns true.
    pub fn resume(delivery: &mut Delivery, now: Timestamp) {
        delivery.status = if delivery.attempts == 0 {
            DeliveryStatus::Pending
        } else {
            DeliveryStatus::Retrying
        };
        delivery.next_attempt_at = Some(now);
        delivery.last_error = None;
        delivery.updated_at = now;
    }

    /// Applies a change under the store's write lock: the change itself, then what follows
    /// from it — an enabled integration has no disabled reason, and enabling one that was off
    /// restarts its failure count. Returns whether its paused deliveries must resume.
    pub fn apply(&mut self, change: IntegrationChange, now: Timestamp) -> Result<bool, String> {
        let (id, shop, was_enabled) = (self.id, self.shop.clone(), self.enabled);
        change(self)?;
        self.id = id;
        self.shop = shop;
        self.updated_at = now;
        if self.enabled {
            self.disabled_reason = None;
        }
        let resumes = self.enabled && !was_enabled;
        if resumes {
            self.consecutive_failures = 0;
        }
        Ok(resumes)
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

    /// Its one-byte code in store keys (the declaration order; never reorder the variants).
    pub fn code(self) -> u8 {
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

/// Changes a shop token under the store's write lock (its expiry, its last use).
pub type TokenChange = Box<dyn FnOnce(&mut ShopToken) + Send + 'static>;

/// Changes an integration under the store's write lock; an `Err` leaves it unchanged.
pub type IntegrationChange =
    Box<dyn FnOnce(&mut Integration) -> Result<(), String> + Send + 'static>;

/// The rate-limit rule every backend applies at the claim: GCRA (the generic cell rate
/// algorithm), whose whole state is one time per integration — its *theoretical arrival
/// time*, in microseconds since the epoch. A window's allowance may go out as a burst, then
/// requests are spaced one emission interval apart. With the state kept by the store (in
/// memory for the single-process embedded store, in the database for PostgreSQL), a limit
/// holds across every node. Returns the new state when a request may start at `now`, or when
/// the next one may.
pub fn pace(tat: Option<u64>, limit: RateLimit, now: Timestamp) -> Result<u64, Timestamp> {
    if limit.requests == 0 {
        return Ok(tat.unwrap_or(0));
    }
    let interval = u64::from(limit.per_seconds.max(1)) * 1_000_000 / u64::from(limit.requests);
    let tolerance = interval * u64::from(limit.requests - 1);
    let now_us = now.0 * 1_000;
    let arrival = tat.unwrap_or(0).max(now_us);
    if arrival - now_us > tolerance {
        let allowed_us = arrival - tolerance;
        return Err(Timestamp(allowed_us.div_ceil(1_000)));
    }
    Ok(arrival + interval.max(1))
}

// ---- deliveries ---------------------------------------------------------------------------

/// One event on its way to one integration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    /// UUIDv7: ordered by creation time. Also the `webhook-id` of every attempt.
    pub id: Uuid,
    #[serde(default = "default_shop")]
    pub shop: String,
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
    /// The token of the claim that holds it (see [`Lease`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<Uuid>,
}

/// A claim's fence: the delivery and the token its claim was given. Recording an attempt,
/// releasing or pausing a delivery takes the lease and succeeds only while it is the
/// delivery's current one; a worker whose lease expired and was claimed again by another
/// gets `StoreError::LeaseLost` and records nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub delivery: Uuid,
    pub token: Uuid,
}

impl Delivery {
    /// A new delivery, due now, or paused when its integration is auto-disabled.
    pub fn new(event: &EventRecord, integration: &Integration, now: Timestamp) -> Delivery {
        let paused = !integration.enabled;
        Delivery {
            id: new_id_at(now),
            shop: integration.shop.clone(),
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
            lease_token: None,
        }
    }

    /// Leases it to a worker until `until` under a new token: the rule of every claim. Its
    /// queue position moves to the lease's end, so a worker that dies leaves it due again.
    pub fn claim(&mut self, until: Timestamp) -> Lease {
        let token = new_id();
        self.lease_until = Some(until);
        self.lease_token = Some(token);
        Lease {
            delivery: self.id,
            token,
        }
    }

    /// The lease it is held under, if a worker holds it.
    pub fn lease(&self) -> Option<Lease> {
        self.lease_token.map(|token| Lease {
            delivery: self.id,
            token,
        })
    }

    /// Whether `lease` is its current one (the fence every backend checks before recording
    /// an attempt, releasing or pausing). A lease that expired still holds until another
    /// claim takes the delivery.
    pub fn holds(&self, lease: &Lease) -> bool {
        self.id == lease.delivery
            && self.lease_token == Some(lease.token)
            && matches!(
                self.status,
                DeliveryStatus::Pending | DeliveryStatus::Retrying
            )
    }

    /// Gives the lease up: due at `due` (a shutdown that stopped the attempt, or a lease
    /// released because nobody else can hold it).
    pub fn release(&mut self, due: Timestamp) {
        self.lease_until = None;
        self.lease_token = None;
        self.next_attempt_at = Some(due);
    }

    /// Queues a failed or exhausted delivery again, due now (a retry asked for by an admin).
    pub fn requeue(&mut self, now: Timestamp) {
        self.status = DeliveryStatus::Pending;
        self.next_attempt_at = Some(now);
        self.updated_at = now;
    }

    /// Holds it as paused, with the reason (its integration is disabled).
    pub fn pause(&mut self, reason: &str, now: Timestamp) {
        self.status = DeliveryStatus::Paused;
        self.lease_until = None;
        self.lease_token = None;
        self.next_attempt_at = None;
        self.last_error = Some(reason.to_owned());
        self.updated_at = now;
    }

    /// Applies an attempt's outcome (already adjusted by [`Outcome::held_while_disabled`]).
    pub fn record(&mut self, attempt: &Attempt, outcome: Outcome, now: Timestamp) {
        self.attempts = attempt.number;
        self.status = outcome.status;
        self.next_attempt_at = outcome.next_attempt_at;
        self.lease_until = None;
        self.lease_token = None;
        self.last_error = outcome.error;
        self.updated_at = now;
    }

    /// Where it sits in its integration's queue, if it is queued: at its lease's end while a
    /// worker holds it, else when its next attempt is due.
    pub fn queue_time(&self) -> Option<Timestamp> {
        matches!(
            self.status,
            DeliveryStatus::Pending | DeliveryStatus::Retrying
        )
        .then(|| self.lease_until.or(self.next_attempt_at))
        .flatten()
    }

    /// Whether work remains for it (queued, held by a worker, or paused).
    pub fn is_open(&self) -> bool {
        !self.status.is_finished()
    }

    /// Ends open work that can no longer go anywhere (its integration or shop was deleted):
    /// failed, with the reason, kept in the log. The rule every backend applies on deletion.
    pub fn end(&mut self, reason: &str, now: Timestamp) {
        self.status = DeliveryStatus::Failed;
        self.next_attempt_at = None;
        self.lease_until = None;
        self.lease_token = None;
        self.last_error = Some(reason.to_owned());
        self.updated_at = now;
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

/// An outcome applied to its integration, in the transaction that records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The outcome as it applies now (held if the integration is disabled).
    pub outcome: Outcome,
    /// Whether this attempt disabled the integration.
    pub disabled: bool,
    /// Whether the integration changed (and must be written).
    pub changed: bool,
}

impl Outcome {
    /// Applies this attempt's outcome to its integration, as every store does when it records
    /// it: the auto-disable count ([`Integration::observe`]), then the outcome as it applies
    /// to the integration afterwards ([`Outcome::held_while_disabled`]).
    pub fn apply_to(
        self,
        integration: &mut Integration,
        auto_disable_after: u32,
        now: Timestamp,
    ) -> Applied {
        let before = integration.clone();
        let disabled =
            integration.observe(self.signal, auto_disable_after, now, self.error.as_deref());
        Applied {
            outcome: self.held_while_disabled(integration),
            disabled,
            changed: *integration != before,
        }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
pub struct QueueDepth {
    /// Due now, waiting for a worker.
    pub due: u64,
    /// Scheduled for later (retries).
    pub scheduled: u64,
    /// Held by a worker: an attempt is in flight.
    pub in_flight: u64,
    pub paused: u64,
}

// ---- health ------------------------------------------------------------------------------

/// The width of one bucket of attempt statistics: a day is 288 of them.
pub const STATS_BUCKET: Duration = Duration::from_secs(300);
/// How long statistics are kept (the health route looks back a day).
pub const STATS_KEPT: Duration = Duration::from_secs(2 * 86_400);
/// Upper bounds (ms) of the attempt-duration histogram the quantiles are read from.
pub const DURATION_BUCKETS_MS: [u64; 12] = [
    10,
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    30_000,
    u64::MAX,
];

/// The start of the statistics bucket `at` falls in.
pub fn stats_bucket(at: Timestamp) -> Timestamp {
    let width = STATS_BUCKET.as_millis() as u64;
    Timestamp(at.0 - at.0 % width)
}

/// What an integration's attempts came to within one [`STATS_BUCKET`]: a few counters and a
/// duration histogram, so health is read from at most a day of buckets, never by scanning
/// attempts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptStats {
    pub attempts: u64,
    /// Delivered ([`Signal::Healthy`]).
    pub delivered: u64,
    /// Failed through the destination ([`Signal::Failing`]).
    pub failed: u64,
    /// Counts per [`DURATION_BUCKETS_MS`] bucket.
    pub durations: [u64; DURATION_BUCKETS_MS.len()],
}

impl AttemptStats {
    pub fn add(&mut self, signal: Signal, duration_ms: u64) {
        self.attempts += 1;
        match signal {
            Signal::Healthy => self.delivered += 1,
            Signal::Failing => self.failed += 1,
            Signal::Neutral => {}
        }
        let slot = DURATION_BUCKETS_MS
            .iter()
            .position(|bound| duration_ms <= *bound)
            .unwrap_or(DURATION_BUCKETS_MS.len() - 1);
        self.durations[slot] += 1;
    }

    pub fn merge(&mut self, other: &AttemptStats) {
        self.attempts += other.attempts;
        self.delivered += other.delivered;
        self.failed += other.failed;
        for (mine, theirs) in self.durations.iter_mut().zip(other.durations) {
            *mine += theirs;
        }
    }

    /// The upper bound of the histogram bucket holding the `q` quantile (0 < q ≤ 1); the
    /// last bucket reads as the one before it, doubled.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        let total: u64 = self.durations.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, count) in self.durations.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let bound = DURATION_BUCKETS_MS[i];
                return Some(if bound == u64::MAX {
                    DURATION_BUCKETS_MS[i - 1] * 2
                } else {
                    bound
                });
            }
        }
        None
    }
}

/// When an integration last delivered, and last failed through its destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastOutcomes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_at: Option<Timestamp>,
}

impl LastOutcomes {
    pub fn observe(&mut self, signal: Signal, at: Timestamp) {
        match signal {
            Signal::Healthy => self.success_at = Some(at),
            Signal::Failing => self.failure_at = Some(at),
            Signal::Neutral => {}
        }
    }
}

/// Attempts over a window of time.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HealthWindow {
    pub attempts: u64,
    pub delivered: u64,
    /// Failed through the destination.
    pub failed: u64,
    /// delivered / (delivered + failed); absent without either.
    pub success_rate: Option<f64>,
    /// Attempt duration quantiles, to the bucket (10, 25, 50, 100, 250, 500 ms, 1, 2.5, 5,
    /// 10, 30 s).
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
}

impl HealthWindow {
    fn of(stats: &AttemptStats) -> HealthWindow {
        let decided = stats.delivered + stats.failed;
        HealthWindow {
            attempts: stats.attempts,
            delivered: stats.delivered,
            failed: stats.failed,
            success_rate: (decided > 0).then(|| stats.delivered as f64 / decided as f64),
            p50_ms: stats.quantile_ms(0.5),
            p95_ms: stats.quantile_ms(0.95),
        }
    }
}

/// One hour of the day's sparkline.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HealthPoint {
    pub hour: Timestamp,
    pub attempts: u64,
    pub failed: u64,
}

/// How an integration is doing: its last hour and day, its last success and failure, its
/// queue, and the day hour by hour.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct IntegrationHealth {
    pub integration: Uuid,
    pub last_hour: HealthWindow,
    pub last_day: HealthWindow,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure_at: Option<Timestamp>,
    pub queue: QueueDepth,
    /// The last 24 hours, oldest first.
    pub hourly: Vec<HealthPoint>,
}

impl IntegrationHealth {
    /// Health from the integration's statistics buckets (start, stats) of the last day.
    pub fn from_buckets(
        integration: Uuid,
        buckets: &[(Timestamp, AttemptStats)],
        last: LastOutcomes,
        queue: QueueDepth,
        now: Timestamp,
    ) -> IntegrationHealth {
        let hour_ago = now.saturating_sub(Duration::from_secs(3_600));
        let day_ago = now.saturating_sub(Duration::from_secs(86_400));
        let (mut hour, mut day) = (AttemptStats::default(), AttemptStats::default());
        let first_hour =
            Timestamp(now.0 - now.0 % 3_600_000).saturating_sub(Duration::from_secs(23 * 3_600));
        let mut hourly: Vec<HealthPoint> = (0..24)
            .map(|h| HealthPoint {
                hour: first_hour.saturating_add(Duration::from_secs(h * 3_600)),
                attempts: 0,
                failed: 0,
            })
            .collect();
        for (start, stats) in buckets {
            // A bucket counts when it ends after the window starts.
            let end = start.saturating_add(STATS_BUCKET);
            if end > day_ago {
                day.merge(stats);
            }
            if end > hour_ago {
                hour.merge(stats);
            }
            if *start >= first_hour {
                let slot = ((start.0 - first_hour.0) / 3_600_000) as usize;
                if let Some(point) = hourly.get_mut(slot) {
                    point.attempts += stats.attempts;
                    point.failed += stats.failed;
                }
            }
        }
        IntegrationHealth {
            integration,
            last_hour: HealthWindow::of(&hour),
            last_day: HealthWindow::of(&day),
            last_success_at: last.success_at,
            last_failure_at: last.failure_at,
            queue,
            hourly,
        }
    }
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    pub deliveries: u64,
    pub events: u64,
    /// Expired shop tokens.
    pub tokens: u64,
    /// Deleted shops whose data is all gone (their ids free again).
    pub shops: u64,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_made_at_a_time_carry_it_and_increase() {
        let at = Timestamp(1_700_000_000_123);
        let ids: Vec<Uuid> = (0..1_000).map(|_| new_id_at(at)).collect();
        assert!(ids.iter().all(|id| Timestamp::of_id(*id) == at));
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "increasing");
        let later = new_id_at(Timestamp(at.0 + 86_400_000));
        assert_eq!(Timestamp::of_id(later), Timestamp(at.0 + 86_400_000));
        assert!(later > ids[999]);
        // Another clock, behind: its own time all the same.
        let behind = new_id_at(Timestamp(at.0 - 60_000));
        assert_eq!(Timestamp::of_id(behind), Timestamp(at.0 - 60_000));
    }
}
