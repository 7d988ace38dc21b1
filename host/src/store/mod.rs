//! What Canopy keeps — shops, events, integrations, deliveries and their attempts, plugin
//! versions — behind the [`Store`] trait, with the [embedded](EmbeddedStore) implementation
//! (redb or sled, in the data directory) and the [`PgStore`] (PostgreSQL, several nodes on one database). The
//! pipeline only sees the trait. The records are the types of
//! [`crate::model`] (re-exported here).
//!
//! Guarantees every implementation gives:
//! - [`Store::insert_events`] returns only once the events and their deliveries are durable.
//!   Each event is written atomically with its deliveries; a large batch may be written in
//!   chunks, so a crash mid-call can leave its first events stored without an answer. That
//!   loses nothing: the client, not having had its 202, sends the batch again, and the events
//!   already stored are duplicates (an event id already stored writes nothing).
//! - Every shop's data is its own: lookups of integrations and deliveries take the shop, and
//!   answer nothing for another shop's ids; the delivery log's indexes are per shop.
//! - Scheduling is a queue per integration, ordered by due time. [`Store::claim_due`] hands
//!   due deliveries to workers under a lease, fairly: round-robin across shops, then across
//!   a shop's integrations, never more attempts in flight for an integration than its cap,
//!   and never past its rate limit ([`pace`], with the state kept by the store so a limit
//!   holds across processes). A claim moves the queue entry to the lease's expiry, so a
//!   worker that dies leaves it due again — there is no start-up step that releases leases.
//! - Claims are fenced ([`Lease`]): recording an attempt, releasing or pausing a delivery
//!   succeeds only with its current lease, else [`StoreError::LeaseLost`] and nothing is
//!   written.
//! - Writes that make work claimable (ingest, retries, resumed integrations, released
//!   leases) wake the schedulers through [`Store::signals`]; so do plugin changes, for the
//!   plugin registries. In one process that is a signal; across PostgreSQL nodes, a
//!   notification.
//! - Every status change keeps the filter indexes in step, so the delivery log is served
//!   from indexes, newest first, without scanning everything.

mod embedded;
mod fair;
mod postgres;
pub mod transfer;

use uuid::Uuid;

pub use self::embedded::{EmbeddedStore, EngineKind, EngineMove};
pub use self::postgres::{PgStore, redacted};
pub use crate::model::*;

/// Store failures. The message names the operation, never a stored value.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The lease is no longer the delivery's (it expired and another worker claimed it, or
    /// the delivery ended): nothing was written.
    #[error("the lease on delivery {0} was lost; another worker holds it or it has ended")]
    LeaseLost(Uuid),
}

/// How a store wakes whoever waits on it: the scheduler when work becomes claimable, the
/// plugin registry when plugin versions change, the workers' cache of integrations when an
/// integration changes. A backend raises them after its writes (and, for PostgreSQL, when
/// another node's notification arrives).
pub struct Signals {
    work: tokio::sync::Notify,
    plugins: tokio::sync::watch::Sender<u64>,
    /// Raised after every write of an integration record ([`Signals::integrations_changed`]).
    integrations: std::sync::atomic::AtomicU64,
    /// Outcomes handed to [`Store::record_attempt`] and not yet answered.
    outcomes: std::sync::atomic::AtomicU64,
}

impl Default for Signals {
    fn default() -> Signals {
        Signals {
            work: tokio::sync::Notify::new(),
            plugins: tokio::sync::watch::Sender::new(0),
            integrations: std::sync::atomic::AtomicU64::new(0),
            outcomes: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// Counts one outcome as pending while it lives ([`Signals::outcome_pending`]).
pub struct PendingOutcome<'a>(&'a Signals);

impl Drop for PendingOutcome<'_> {
    fn drop(&mut self) {
        self.0
            .outcomes
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Signals {
    /// Work became claimable.
    pub fn work_queued(&self) {
        self.work.notify_one();
    }

    /// Resolves once work became claimable since the last call returned (one waiter: the
    /// process's scheduler).
    pub async fn work(&self) {
        self.work.notified().await;
    }

    /// Plugin versions were added, activated or deleted.
    pub fn plugins_changed(&self) {
        self.plugins.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// An integration record was written (created, changed — by the API, by an outcome that
    /// counts against it, by a rekey — or removed), or may have been without this process
    /// hearing of it. Raised once the write is visible to reads.
    pub fn integrations_changed(&self) {
        self.integrations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Changes whenever [`Signals::integrations_changed`] is raised: what was read of an
    /// integration before it last changed is no longer current.
    pub fn integrations_generation(&self) -> u64 {
        self.integrations.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// An outcome is being recorded until the guard is dropped.
    pub fn outcome_pending(&self) -> PendingOutcome<'_> {
        self.outcomes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PendingOutcome(self)
    }

    /// Outcomes being recorded (queued for the store's group commit, or in its write) and not
    /// yet answered: the `outcomes_pending` gauge.
    pub fn outcomes_pending(&self) -> u64 {
        self.outcomes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Changes whenever plugin versions change.
    pub fn watch_plugins(&self) -> tokio::sync::watch::Receiver<u64> {
        self.plugins.subscribe()
    }
}

/// The rate limit an integration's attempts keep to, decided by the scheduler's side (the
/// integration's and its plugin's); the store applies it with [`pace`] at the claim, beside
/// the in-flight cap.
pub trait Admission: Send + Sync {
    fn rate_limit(&self, integration: &Integration) -> Option<crate::runtime::RateLimit>;
}

/// No rate limit for any integration (tests and tools).
pub struct AdmitAll;

impl Admission for AdmitAll {
    fn rate_limit(&self, _integration: &Integration) -> Option<crate::runtime::RateLimit> {
        None
    }
}

/// What one claim found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClaimRound {
    /// Leased to the caller, fairly interleaved across shops and integrations; each carries
    /// its lease ([`Delivery::lease`]).
    pub claimed: Vec<Delivery>,
    /// When more work may become claimable (a retry falls due, a rate limit admits again);
    /// `None` when nothing is scheduled. Work held back by an in-flight cap becomes
    /// claimable when an attempt ends, which the caller sees itself.
    pub next_at: Option<Timestamp>,
}

/// The storage every stage of the pipeline goes through. Shop-scoped reads and writes take
/// the shop and treat another shop's ids as unknown.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- shops and their tokens -------------------------------------------------------------

    /// Creates a shop (durably); `false` if the id is taken (also by a deleted shop whose data
    /// is still kept).
    async fn create_shop(&self, shop: &Shop) -> Result<bool, StoreError>;
    /// A shop, deleted ones included (their `deleted_at` is set).
    async fn shop(&self, id: &str) -> Result<Option<Shop>, StoreError>;
    /// Shops that are not deleted, by id, after `after`, at most `limit`.
    async fn shops(&self, after: Option<&str>, limit: usize) -> Result<Vec<Shop>, StoreError>;
    async fn rename_shop(
        &self,
        id: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<Option<Shop>, StoreError>;
    /// Deletes a shop: refused while it has integrations unless `cascade`, which deletes them
    /// and ends their open work ([`Delivery::end`]); its tokens go, its id is kept (deleted)
    /// until the purge has removed its data.
    async fn delete_shop(
        &self,
        id: &str,
        cascade: bool,
        now: Timestamp,
    ) -> Result<ShopDeletion, StoreError>;
    async fn create_token(&self, token: &ShopToken) -> Result<(), StoreError>;
    /// The token with this hash (hex SHA-256), whatever its shop.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<ShopToken>, StoreError>;
    async fn tokens(&self, shop: &str) -> Result<Vec<ShopToken>, StoreError>;
    /// Changes a shop's token (`None` if there is none): its expiry, its last use.
    async fn update_token(
        &self,
        shop: &str,
        id: Uuid,
        change: TokenChange,
    ) -> Result<Option<ShopToken>, StoreError>;
    async fn delete_token(&self, shop: &str, id: Uuid) -> Result<bool, StoreError>;

    // ---- events ---------------------------------------------------------------------------

    /// Writes events and their deliveries atomically and durably; an id already stored is a
    /// duplicate (nothing written, the original record returned — whatever its shop, which
    /// the caller compares).
    async fn insert_events(&self, events: Vec<NewEvent>) -> Result<Vec<Ingested>, StoreError>;
    async fn event(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError>;
    /// The event's JSON text as ingested (with its `id`).
    async fn event_json(&self, id: Uuid) -> Result<Option<String>, StoreError>;

    // ---- integrations ---------------------------------------------------------------------

    /// Creates an integration (durably), in its `shop`.
    async fn create_integration(&self, integration: &Integration) -> Result<(), StoreError>;
    async fn integration(&self, shop: &str, id: Uuid) -> Result<Option<Integration>, StoreError>;
    /// A shop's integrations, or every shop's.
    async fn integrations(&self, shop: Option<&str>) -> Result<Vec<Integration>, StoreError>;
    /// Applies `change` ([`Integration::apply`]); when it enables a disabled integration, its
    /// paused deliveries resume ([`Integration::resume`]). `None` when there is no such
    /// integration in the shop.
    async fn update_integration(
        &self,
        shop: &str,
        id: Uuid,
        now: Timestamp,
        change: IntegrationChange,
    ) -> Result<Option<Integration>, StoreError>;
    /// Removes an integration and ends its open work now ([`Delivery::end`], "the integration
    /// was deleted"); the log keeps it. `false` when there is no such integration in the shop.
    async fn delete_integration(
        &self,
        shop: &str,
        id: Uuid,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    // ---- scheduling -----------------------------------------------------------------------

    /// Leases up to `limit` due deliveries until `lease_until`: round-robin across shops and
    /// each shop's integrations, oldest first within an integration, at most its in-flight cap
    /// and what `admission` admits (see the module docs).
    async fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        lease_until: Timestamp,
        admission: &dyn Admission,
    ) -> Result<ClaimRound, StoreError>;
    /// Gives a leased delivery back, due at `due` (shutdown), without an attempt
    /// ([`Delivery::release`]).
    async fn release(&self, lease: Lease, due: Timestamp) -> Result<(), StoreError>;
    /// Holds a leased delivery as paused (its integration is disabled).
    async fn pause(&self, lease: Lease, now: Timestamp, reason: &str) -> Result<(), StoreError>;
    /// Records an attempt of a leased delivery and applies its outcome, with the
    /// integration's auto-disable rule ([`Integration::observe`], threshold `0`: never),
    /// [`Outcome::held_while_disabled`] and its statistics, in one atomic write.
    async fn record_attempt(
        &self,
        lease: Lease,
        attempt: Attempt,
        outcome: Outcome,
        now: Timestamp,
        auto_disable_after: u32,
    ) -> Result<Recorded, StoreError>;
    /// Queues a failed or exhausted delivery of the shop again, due now; `false` if there is
    /// none or it is not finished that way (a pending delivery is never queued twice).
    async fn requeue(&self, shop: &str, id: Uuid, now: Timestamp) -> Result<bool, StoreError>;
    /// Queues again, due now, every failed or exhausted delivery of the shop the filter
    /// matches, in one operation; how many.
    async fn requeue_matching(
        &self,
        shop: &str,
        filter: &DeliveryFilter,
        now: Timestamp,
    ) -> Result<u64, StoreError>;

    // ---- the delivery log -----------------------------------------------------------------

    async fn delivery(&self, shop: &str, id: Uuid) -> Result<Option<DeliveryDetail>, StoreError>;
    /// A shop's deliveries, newest first, created before `before` (the cursor) when given.
    async fn deliveries(
        &self,
        shop: &str,
        filter: &DeliveryFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Every shop's queue (for `/metrics`).
    async fn queue_depth(&self, now: Timestamp) -> Result<QueueDepth, StoreError>;
    /// An integration's health ([`IntegrationHealth::from_buckets`]); `None` when there is no
    /// such integration in the shop.
    async fn integration_health(
        &self,
        shop: &str,
        id: Uuid,
        now: Timestamp,
    ) -> Result<Option<IntegrationHealth>, StoreError>;

    // ---- housekeeping ---------------------------------------------------------------------

    /// Removes finished deliveries created before `cutoff` (with their attempts), then events
    /// received before it that have no delivery left, statistics older than [`STATS_KEPT`],
    /// expired tokens, and deleted shops with nothing left. Never touches queued or paused
    /// work. A backend may keep the log to the day: PostgreSQL drops whole days, so what was
    /// created on the cutoff's own day goes with the next purge after that day.
    async fn purge(&self, cutoff: Timestamp, now: Timestamp) -> Result<Purged, StoreError>;
    /// Makes every write so far durable.
    async fn flush(&self) -> Result<(), StoreError>;

    // ---- plugins --------------------------------------------------------------------------

    /// Stores a new version of a plugin (numbered after the last) with its component, and
    /// makes it the active one, in one atomic write. When the active version already has this
    /// component (two nodes installing the same bundled build), nothing changes and it is
    /// returned.
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

    // ---- signals --------------------------------------------------------------------------

    /// What wakes the scheduler and the plugin registry (see [`Signals`]).
    fn signals(&self) -> &Signals;

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
