//! The embedded store: one ordered keyspace in the data directory (the layout is in [`keys`]),
//! on redb (a new directory's, behind a write-ahead [`journal`]) or sled (directories of
//! earlier releases) ([`engine`]). A record and the index keys derived from it are always
//! written in one atomic batch (a batch survives a crash whole or not at all, on either
//! engine): an event with its deliveries, a delivery with its queue and log keys, an
//! attempt with its delivery, its integration's failure count and statistics. Writes hold a
//! short write lock, never across an `.await`; reads take none. Callers that need durability
//! share flushes ([`GroupCommit`]). Older data directories are migrated at open
//! ([`migrate`]).
//!
//! Each integration has its own queue, and an index of the integrations with queued work by
//! their earliest entry (`N`), kept in step in the same batch as the queue (and rebuilt at
//! open). A claim reads the integrations whose earliest entry is due, and takes their work
//! round-robin: one delivery per shop in turn, and within a shop one per integration in turn,
//! within each integration's in-flight cap (its unexpired leases) and what the caller's
//! [`Admission`] allows — so an integration with a backlog, a hanging receiver or a tight
//! rate limit never stands in front of another's work, and one that may not start anything
//! now is not touched at all.

mod convert;
mod engine;
mod export;
mod journal;
mod keys;
mod leases;
mod migrate;
mod outcomes;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

pub use self::convert::EngineMove;
pub use self::engine::EngineKind;
use self::engine::{Batch, Engine};
use self::keys::*;
use super::fair::{Lane, Rotation, take_turns};
use super::{Admission, ClaimRound, Signals, Store, StoreError};
use crate::model::*;

/// Events (each with its deliveries) per batch when a large ingest batch is written.
/// sled keeps every node version a batch replaces until the batch ends, so one batch of
/// 1,000 events held ~180 MB more at peak than chunks of 100 (benchmark: 403 → 224 MB while
/// 100,000 events were ingested; ingest 14,700 → 19,500 events/s).
const INGEST_CHUNK: usize = 100;
/// Records changed per batch by the purge, bulk retries, cascades and lease recovery, so the
/// write lock is held briefly.
const CHUNK: usize = 1_000;

/// Free space kept in reserve on the data directory's disk: below it, writes are refused
/// (503) rather than left to fail. sled writes its log in segments of 512 KiB and rewrites
/// some as it goes, redb grows its file as it needs pages; this leaves room for what either
/// still has to write, and for the purge.
const RESERVE_BYTES: u64 = 16 << 20;
/// How often free space is read (a `statvfs`) by writes that check it.
const ROOM_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest a flush may take before the write counts as failed (sled's flush may never
/// return once the disk has refused a write).
const FLUSH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
/// Size of the file [`Store::recover`] writes to find out whether the disk has room again.
const PROBE_BYTES: usize = 1 << 20;
/// How often a read of a delivery with its attempts is tried again when a write came between.
const READ_AGAIN: usize = 8;
/// Metadata key the health check writes (a write is what finds a broken engine).
const HEALTH_PROBE: &str = "health-probe";
/// How long a reopen waits for the previous engine's last handles (its file lock) to go.
const REOPEN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

pub struct EmbeddedStore {
    dir: PathBuf,
    /// `None` only while [`Store::recover`] reopens the engine.
    db: RwLock<Option<Engine>>,
    /// The engine the directory holds (kept for reopening).
    kind: EngineKind,
    write: Mutex<()>,
    commit: GroupCommit,
    /// Attempt outcomes waiting to be written together ([`outcomes`]).
    outcomes: outcomes::Outcomes,
    /// Who holds which delivery ([`leases`]): in memory only.
    leases: leases::Leases,
    /// Where the last claim's round-robin stopped, so the next one goes on from there.
    rotation: Mutex<Rotation>,
    /// When free space was last read, and what it was.
    checked: Mutex<(Option<std::time::Instant>, Option<u64>)>,
    /// Each rate-limited integration's pace ([`pace`]): in memory, since one process owns
    /// the directory; after a restart a limit starts from a full allowance.
    paces: Mutex<HashMap<Uuid, u64>>,
    signals: Signals,
}

/// Group commit: callers that need their writes on disk share flushes. One flush runs at a
/// time ([`Engine::flush`] on the blocking pool); a caller whose writes an earlier flush already
/// covered returns without flushing again. Under concurrent ingest this turns one fsync per
/// request into one per group, and it avoids sled 0.34's `flush_async`, whose concurrent
/// callers can miss their wake-up and hang for good (spacejam/sled#1308, fixed after the last
/// release; the benchmark hit it).
#[derive(Default)]
struct GroupCommit {
    /// Writes that asked to be made durable, counted after they were applied.
    written: AtomicU64,
    /// The count of writes the last completed flush covered.
    flushed: AtomicU64,
    turn: tokio::sync::Mutex<()>,
}

/// A write's turn on the runtime's threads ([`EmbeddedStore::writing_past_checkpoint`]): the
/// write lock, released first, then the checkpoint's gate.
struct WriteTurn<'a> {
    _write: MutexGuard<'a, ()>,
    _checkpoint: Option<tokio::sync::OwnedRwLockReadGuard<()>>,
}

/// One atomic write under construction: the batch, and how it changes integrations' queues,
/// so that their earliest entries (`N`, `n`) are updated in the same batch.
#[derive(Default)]
struct Writes {
    batch: Batch,
    queues: HashMap<Uuid, QueueChange>,
    changes: usize,
}

#[derive(Default)]
struct QueueChange {
    shop: String,
    removed: HashSet<Vec<u8>>,
    added: BTreeSet<Vec<u8>>,
}

impl Writes {
    fn insert(&mut self, k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) {
        self.batch.insert(k.as_ref(), v.as_ref());
        self.changes += 1;
    }

    fn remove(&mut self, k: impl AsRef<[u8]>) {
        self.batch.remove(k.as_ref());
        self.changes += 1;
    }

    /// Nothing to write: no key changed, no queue's earliest entry to check.
    fn is_empty(&self) -> bool {
        self.changes == 0 && self.queues.is_empty()
    }

    fn queue(&mut self, integration: Uuid, shop: &str) -> &mut QueueChange {
        let change = self.queues.entry(integration).or_default();
        change.shop = shop.to_owned();
        change
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir` on the engine it holds (redb when it is new),
    /// migrating an older format, with the `default` shop. The engine locks its files: a
    /// second process on the same data fails here.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        EmbeddedStore::open_on(dir, None)
    }

    /// [`EmbeddedStore::open`], asking for the engine `wanted`: the one a new directory gets;
    /// a directory that holds the other one is refused (`canopy migrate-store` moves it).
    pub fn open_on(dir: &Path, wanted: Option<EngineKind>) -> Result<EmbeddedStore, StoreError> {
        let found = EngineKind::found_in(dir);
        let kind = match (found, wanted) {
            (Some(found), Some(wanted)) if found != wanted => {
                return Err(StoreError::Rejected(format!(
                    "the data directory {} holds a {found} store, not {wanted}: leave --store \
                     unset to use it, or move it first with `canopy migrate-store --from <data \
                     dir> --to {wanted}`",
                    dir.display()
                )));
            }
            (Some(kind), _) | (None, Some(kind)) => kind,
            (None, None) => EngineKind::NEW,
        };
        let store = EmbeddedStore {
            dir: dir.to_owned(),
            db: RwLock::new(Some(Engine::open(dir, kind)?)),
            kind,
            write: Mutex::new(()),
            commit: GroupCommit::default(),
            outcomes: outcomes::Outcomes::default(),
            leases: leases::Leases::default(),
            rotation: Mutex::default(),
            checked: Mutex::default(),
            paces: Mutex::default(),
            signals: Signals::default(),
        };
        if let Some(migrated) = store.migrate()? {
            tracing::info!("{migrated}");
        }
        // Leases live in memory ([`leases`]); older versions wrote them. The engine's directory lock
        // means no other process holds one, so work they held is due again now.
        let cleared = store.clear_durable_leases()?;
        if cleared > 0 {
            tracing::info!("{cleared} deliveries held by a previous run are due again");
        }
        store.rebuild_heads()?;
        tracing::debug!(dir = %dir.display(), engine = %kind, "the embedded store is open");
        let db = store.db()?;
        if db.get(key(SHOP, DEFAULT_SHOP.as_bytes()))?.is_none() {
            let shop = Shop::new(DEFAULT_SHOP, "Default shop", Timestamp::now());
            db.insert(key(SHOP, DEFAULT_SHOP.as_bytes()), encode(&shop))?;
        }
        Ok(store)
    }

    /// Clears the leases older versions kept on disk (`L` keys and the lease on the record,
    /// whose queue entry sat at the lease's end): each delivery is back at its due time.
    fn clear_durable_leases(&self) -> Result<usize, StoreError> {
        let leased = self.ids_in(&[LEASE])?;
        for chunk in leased.chunks(CHUNK) {
            let _write = self.lock();
            let db = self.db()?;
            let mut w = Writes::default();
            for id in chunk {
                let Some(old) = self.delivery_record(*id)? else {
                    continue;
                };
                let mut new = old.clone();
                new.lease_until = None;
                new.lease_token = None;
                self.put_delivery(&mut w, Some(&old), &new);
            }
            // A key left without its record.
            for k in db.scan_prefix([LEASE]).keys() {
                let k = k?;
                if chunk.contains(&trailing_id(&k)) {
                    w.remove(k);
                }
            }
            self.commit(&db, w)?;
        }
        Ok(leased.len())
    }

    /// Changes a leased delivery when `lease` is still its own: [`StoreError::LeaseLost`]
    /// (nothing written) when it is not.
    fn change_leased(
        &self,
        lease: Lease,
        change: impl FnOnce(&mut Delivery),
    ) -> Result<(), StoreError> {
        let _write = self.writing()?;
        let db = self.db()?;
        let old = self
            .leased_record(&lease)?
            .ok_or(StoreError::LeaseLost(lease.delivery))?;
        let mut new = old.clone();
        change(&mut new);
        let mut w = Writes::default();
        self.put_delivery(&mut w, Some(&old), &new);
        self.commit(&db, w)?;
        self.leases.end([lease.delivery]);
        Ok(())
    }

    /// The durable record of a delivery `lease` holds: `None` when the lease is no longer
    /// its own or the delivery is no longer queued (it was ended meanwhile; the lease is
    /// then forgotten).
    fn leased_record(&self, lease: &Lease) -> Result<Option<Delivery>, StoreError> {
        if !self.leases.holds(lease) {
            return Ok(None);
        }
        let record = self
            .delivery_record(lease.delivery)?
            .filter(|d| matches!(d.status, DeliveryStatus::Pending | DeliveryStatus::Retrying));
        if record.is_none() {
            self.leases.end([lease.delivery]);
        }
        Ok(record)
    }

    /// The engine (a cheap handle).
    fn db(&self) -> Result<Engine, StoreError> {
        self.db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the store is being reopened".into()))
    }

    /// Returns once every write this caller applied before calling is on disk.
    async fn durable(&self) -> Result<(), StoreError> {
        let mine = self.commit.written.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = self.commit.turn.lock().await;
        if self.commit.flushed.load(Ordering::SeqCst) >= mine {
            return Ok(());
        }
        // Everything counted so far was applied before it was counted: this flush covers it.
        let covers = self.commit.written.load(Ordering::SeqCst);
        let db = self.db()?;
        let flush = tokio::task::spawn_blocking(move || db.flush());
        tokio::time::timeout(FLUSH_PATIENCE, flush)
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "the disk did not confirm the write within {} s",
                    FLUSH_PATIENCE.as_secs()
                ))
            })?
            .map_err(|e| StoreError::Backend(format!("the flush was lost: {e}")))??;
        self.commit.flushed.fetch_max(covers, Ordering::SeqCst);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits, without holding a thread, until no checkpoint is making redb durable, and holds
    /// the next one off until dropped: what a write on the runtime's threads takes before
    /// [`writing`](Self::writing) ([`Engine::checkpoint_gate`]; the journal's module docs say
    /// why).
    async fn past_checkpoint(&self) -> Option<tokio::sync::OwnedRwLockReadGuard<()>> {
        let gate = self.db().ok()?.checkpoint_gate()?;
        Some(gate.read_owned().await)
    }

    /// The write lock for a write on the runtime's threads: taken once no checkpoint is making
    /// redb durable ([`past_checkpoint`](Self::past_checkpoint)), and holding the next one off
    /// until it is dropped.
    async fn writing_past_checkpoint(&self) -> Result<WriteTurn<'_>, StoreError> {
        let checkpoint = self.past_checkpoint().await;
        Ok(WriteTurn {
            _write: self.writing()?,
            _checkpoint: checkpoint,
        })
    }

    /// The write lock, for a write that may go ahead: not while the disk is nearly full.
    fn writing(&self) -> Result<MutexGuard<'_, ()>, StoreError> {
        self.room()?;
        Ok(self.lock())
    }

    /// Refuses writes while the data directory's disk has less than [`RESERVE_BYTES`] free:
    /// stopping short of a full disk keeps the engine from ever failing a write (after which it
    /// refuses every write until reopened, and a flush may never return), so writes resume
    /// by themselves once there is room again. Free space is read at most every
    /// [`ROOM_CHECK_EVERY`].
    fn room(&self) -> Result<(), StoreError> {
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        let stale = checked.0.is_none_or(|at| at.elapsed() >= ROOM_CHECK_EVERY);
        if stale {
            *checked = (Some(std::time::Instant::now()), free_bytes(&self.dir));
        }
        match checked.1 {
            Some(free) if free < RESERVE_BYTES => Err(StoreError::Unavailable(format!(
                "the disk holding the data directory is nearly full ({} KiB free; Canopy stops \
                 writing below {} MiB)",
                free >> 10,
                RESERVE_BYTES >> 20
            ))),
            _ => Ok(()),
        }
    }

    fn get<T: DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        match self.db()?.get(key)? {
            Some(bytes) => decode(&bytes, what).map(Some),
            None => Ok(None),
        }
    }

    fn delivery_record(&self, id: Uuid) -> Result<Option<Delivery>, StoreError> {
        self.get(&key(DELIVERY, id.as_bytes()), "delivery")
    }

    /// A shop that exists and is not deleted.
    fn live_shop(&self, id: &str) -> Result<Option<Shop>, StoreError> {
        Ok(self
            .get::<Shop>(&key(SHOP, id.as_bytes()), "shop")?
            .filter(|s| !s.is_deleted()))
    }

    /// Rewrites a delivery and the keys derived from it that change: a claim or an attempt
    /// touches the queue, lease and status keys, not the log indexes that stay the same.
    fn put_delivery(&self, w: &mut Writes, old: Option<&Delivery>, new: &Delivery) {
        let old_keys = old.map(derived_keys).unwrap_or_default();
        let new_keys = derived_keys(new);
        for (k, _) in &old_keys {
            if !new_keys.iter().any(|(n, _)| n == k) {
                if k[0] == QUEUE {
                    w.queue(new.integration_id, &new.shop)
                        .removed
                        .insert(k.clone());
                }
                w.remove(k);
            }
        }
        for (k, v) in new_keys {
            if !old_keys.contains(&(k.clone(), v.clone())) {
                if k[0] == QUEUE {
                    w.queue(new.integration_id, &new.shop)
                        .added
                        .insert(k.clone());
                }
                w.insert(&k, &v);
            }
        }
        w.insert(key(DELIVERY, new.id.as_bytes()), encode(new));
    }

    /// Applies `batch`; when it writes an integration record, raises
    /// [`Signals::integrations_changed`](crate::store::Signals::integrations_changed) once the
    /// write is visible (the workers keep integrations in memory until it is raised). Every
    /// batch of the store goes through here; its single-key writes (shops, tokens, plugin
    /// versions, metadata) are of other records.
    fn apply(&self, db: &Engine, batch: Batch) -> Result<(), StoreError> {
        let integrations = batch.touches(INTEGRATION);
        db.apply_batch(batch)?;
        if integrations {
            self.signals.integrations_changed();
        }
        Ok(())
    }

    /// Adds to the batch the new earliest entries of every queue it changes, then applies it.
    fn commit(&self, db: &Engine, mut w: Writes) -> Result<(), StoreError> {
        for (integration, change) in std::mem::take(&mut w.queues) {
            let existing = db
                .scan_prefix(queue_prefix(integration))
                .keys()
                .find(|k| {
                    k.as_ref()
                        .map_or(true, |k| !change.removed.contains(k.as_ref()))
                })
                .transpose()?
                .map(|k| k.to_vec());
            let first = match (existing, change.added.first()) {
                (Some(a), Some(b)) => Some(a.min(b.clone())),
                (a, b) => a.or_else(|| b.cloned()),
            };
            let head = first.as_deref().map(queue_entry_time);
            self.set_head(db, &mut w, integration, &change.shop, head)?;
        }
        self.apply(db, w.batch)?;
        Ok(())
    }

    /// Points the ready index of an integration at its earliest queue entry.
    fn set_head(
        &self,
        db: &Engine,
        w: &mut Writes,
        integration: Uuid,
        shop: &str,
        head: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let current = db
            .get(key(HEAD, integration.as_bytes()))?
            .map(|v| time_at(&v, 0));
        if current == head {
            return Ok(());
        }
        if let Some(old) = current {
            w.remove(ready_key(old, integration));
        }
        match head {
            Some(at) => {
                w.insert(ready_key(at, integration), shop.as_bytes());
                w.insert(key(HEAD, integration.as_bytes()), at.0.to_be_bytes());
            }
            None => w.remove(key(HEAD, integration.as_bytes())),
        }
        Ok(())
    }

    /// Recomputes every integration's earliest queue entry: the ready index is derived from
    /// the queues, so whatever it says after a crash or an older version is made right here.
    fn rebuild_heads(&self) -> Result<(), StoreError> {
        let _write = self.lock();
        let db = self.db()?;
        let mut batch = Batch::default();
        for k in db.scan_prefix([READY]).keys() {
            batch.remove(k?);
        }
        for k in db.scan_prefix([HEAD]).keys() {
            batch.remove(k?);
        }
        let shops: HashMap<Uuid, String> = db
            .scan_prefix([INTEGRATION])
            .values()
            .map(|v| decode::<Integration>(&v?, "integration").map(|i| (i.id, i.shop)))
            .collect::<Result<_, _>>()?;
        let mut cursor = vec![QUEUE];
        while let Some((k, _)) = db
            .range(cursor.clone()..vec![QUEUE + 1])
            .next()
            .transpose()?
        {
            let integration = id_at(&k, 1);
            let head = queue_entry_time(&k);
            if let Some(shop) = shops.get(&integration) {
                batch.insert(ready_key(head, integration), shop.as_bytes());
                batch.insert(key(HEAD, integration.as_bytes()), head.0.to_be_bytes());
            }
            cursor = prefix_end(&queue_prefix(integration));
        }
        self.apply(&db, batch)?;
        Ok(())
    }

    fn ids_in(&self, prefix: &[u8]) -> Result<Vec<Uuid>, StoreError> {
        self.db()?
            .scan_prefix(prefix)
            .keys()
            .map(|k| Ok(trailing_id(&k?)))
            .collect()
    }

    /// Ends every open delivery of an integration (queued, held or paused) with `reason`,
    /// and removes the integration with its statistics. Under the write lock.
    fn remove_integration(
        &self,
        db: &Engine,
        integration: &Integration,
        reason: &str,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut open: Vec<Uuid> = self.ids_in(&queue_prefix(integration.id))?;
        open.extend(self.ids_in(&key(PAUSED, integration.id.as_bytes()))?);
        let mut ended = 0;
        for chunk in open.chunks(CHUNK) {
            let mut w = Writes::default();
            let mut ended_here = Vec::new();
            for id in chunk {
                let Some(old) = self.delivery_record(*id)? else {
                    continue;
                };
                if !old.is_open() {
                    continue;
                }
                let mut new = old.clone();
                new.end(reason, now);
                self.put_delivery(&mut w, Some(&old), &new);
                ended_here.push(*id);
            }
            self.commit(db, w)?;
            // An attempt still running for one of them records nothing, even if an admin
            // queues the delivery again meanwhile.
            ended += ended_here.len();
            self.leases.end(ended_here);
        }
        let mut w = Writes::default();
        w.remove(integration_key(&integration.shop, integration.id));
        w.remove(key(LAST, integration.id.as_bytes()));
        for k in db.scan_prefix(key(STATS, integration.id.as_bytes())).keys() {
            w.remove(k?);
        }
        self.set_head(db, &mut w, integration.id, &integration.shop, None)?;
        self.apply(db, w.batch)?;
        Ok(ended)
    }

    /// The index and range the delivery log reads for a shop's filter, newest first: the
    /// most selective index the filter allows; its keys end with the delivery id, so a range
    /// over them is a range of creation times.
    fn log_range(
        &self,
        shop: &str,
        filter: &DeliveryFilter,
        before: Option<Uuid>,
    ) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let prefix = if let Some(customer) = &filter.customer {
            customer_prefix(shop, customer)
        } else if let Some(integration) = filter.integration {
            key(BY_INTEGRATION, integration.as_bytes())
        } else if let Some(event) = &filter.event {
            event_prefix(shop, event)
        } else if let Some(status) = filter.status {
            status_prefix(shop, status)
        } else {
            shop_prefix(BY_SHOP, shop)
        };
        let low = concat(&[
            &prefix,
            filter
                .from
                .map_or(Uuid::nil(), |t| id_bounds(t).0)
                .as_bytes(),
        ]);
        let mut high = concat(&[
            &prefix,
            filter.to.map_or(Uuid::max(), |t| id_bounds(t).1).as_bytes(),
        ]);
        high.push(0); // inclusive of `to`'s last id
        if let Some(before) = before {
            high = high.min(concat(&[&prefix, before.as_bytes()]));
        }
        (prefix, low, high)
    }

    /// An integration's queue, counted: due now, later, held by a worker, paused.
    fn integration_queue(
        &self,
        db: &Engine,
        integration: Uuid,
        now: Timestamp,
        in_flight: &leases::InFlight,
    ) -> Result<QueueDepth, StoreError> {
        // A held delivery's queue entry stays at its due time, which had come.
        let split = queue_entry(integration, Timestamp(now.0 + 1), Uuid::nil());
        let due = db.range(queue_prefix(integration)..split.clone()).count() as u64;
        let later = db
            .range(split..prefix_end(&queue_prefix(integration)))
            .count() as u64;
        let in_flight = in_flight.of(integration) as u64;
        Ok(QueueDepth {
            due: due.saturating_sub(in_flight),
            scheduled: later,
            in_flight,
            paused: db.scan_prefix(key(PAUSED, integration.as_bytes())).count() as u64,
        })
    }
}

/// Bytes free for unprivileged writes on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a writable statvfs.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let done = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (done == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// Whether `dir` takes a write of [`PROBE_BYTES`] again, made durable, then removed.
fn probe_write(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(".canopy-write-probe");
    let written = std::fs::File::create(&path).and_then(|mut file| {
        file.write_all(&vec![0u8; PROBE_BYTES])?;
        file.sync_all()
    });
    let _ = std::fs::remove_file(&path);
    written
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn create_shop(&self, shop: &Shop) -> Result<bool, StoreError> {
        {
            let _write = self.writing_past_checkpoint().await?;
            let db = self.db()?;
            let k = key(SHOP, shop.id.as_bytes());
            if db.get(&k)?.is_some() {
                return Ok(false);
            }
            db.insert(k, encode(shop))?;
        }
        self.durable().await?;
        Ok(true)
    }

    async fn shop(&self, id: &str) -> Result<Option<Shop>, StoreError> {
        self.get(&key(SHOP, id.as_bytes()), "shop")
    }

    async fn shops(&self, after: Option<&str>, limit: usize) -> Result<Vec<Shop>, StoreError> {
        let start = match after {
            Some(id) => concat(&[&[SHOP], id.as_bytes(), &[0]]),
            None => vec![SHOP],
        };
        let mut shops = Vec::new();
        for v in self.db()?.range(start..vec![SHOP + 1]).values() {
            let shop: Shop = decode(&v?, "shop")?;
            if !shop.is_deleted() {
                shops.push(shop);
                if shops.len() >= limit {
                    break;
                }
            }
        }
        Ok(shops)
    }

    async fn rename_shop(
        &self,
        id: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<Option<Shop>, StoreError> {
        let renamed = {
            let _write = self.writing_past_checkpoint().await?;
            let Some(mut shop) = self.live_shop(id)? else {
                return Ok(None);
            };
            shop.name = name.to_owned();
            shop.updated_at = now;
            self.db()?.insert(key(SHOP, id.as_bytes()), encode(&shop))?;
            shop
        };
        self.durable().await?;
        Ok(Some(renamed))
    }

    async fn delete_shop(
        &self,
        id: &str,
        cascade: bool,
        now: Timestamp,
    ) -> Result<ShopDeletion, StoreError> {
        let deletion = {
            let _write = self.writing_past_checkpoint().await?;
            let db = self.db()?;
            let Some(mut shop) = self.live_shop(id)? else {
                return Ok(ShopDeletion::NotFound);
            };
            let integrations: Vec<Integration> = db
                .scan_prefix(shop_prefix(INTEGRATION, id))
                .values()
                .map(|v| decode(&v?, "integration"))
                .collect::<Result<_, _>>()?;
            if !integrations.is_empty() && !cascade {
                return Ok(ShopDeletion::HasIntegrations(integrations.len()));
            }
            let mut ended = 0;
            for integration in &integrations {
                ended += self.remove_integration(&db, integration, "the shop was deleted", now)?;
            }
            let mut batch = Batch::default();
            for item in db.scan_prefix(shop_prefix(TOKEN_BY_SHOP, id)) {
                let (k, hash) = item?;
                batch.remove(key(TOKEN, &hash));
                batch.remove(k);
            }
            // Written last: a crash before it leaves a shop whose deletion can be asked again.
            shop.deleted_at = Some(now);
            shop.updated_at = now;
            batch.insert(key(SHOP, id.as_bytes()), encode(&shop));
            self.apply(&db, batch)?;
            ShopDeletion::Deleted {
                integrations: integrations.len(),
                ended,
            }
        };
        self.durable().await?;
        Ok(deletion)
    }

    async fn create_token(&self, token: &ShopToken) -> Result<(), StoreError> {
        {
            let _write = self.writing_past_checkpoint().await?;
            let mut batch = Batch::default();
            batch.insert(key(TOKEN, token.hash.as_bytes()), encode(token));
            batch.insert(
                token_by_shop_key(&token.shop, token.id),
                token.hash.as_bytes(),
            );
            self.apply(&self.db()?, batch)?;
        }
        self.durable().await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<ShopToken>, StoreError> {
        self.get(&key(TOKEN, hash.as_bytes()), "token")
    }

    async fn tokens(&self, shop: &str) -> Result<Vec<ShopToken>, StoreError> {
        let db = self.db()?;
        let mut tokens = Vec::new();
        for hash in db.scan_prefix(shop_prefix(TOKEN_BY_SHOP, shop)).values() {
            if let Some(token) = self.get(&key(TOKEN, &hash?), "token")? {
                tokens.push(token);
            }
        }
        Ok(tokens)
    }

    async fn update_token(
        &self,
        shop: &str,
        id: Uuid,
        change: TokenChange,
    ) -> Result<Option<ShopToken>, StoreError> {
        let _write = self.writing_past_checkpoint().await?;
        let db = self.db()?;
        let Some(hash) = db.get(token_by_shop_key(shop, id))? else {
            return Ok(None);
        };
        let Some(mut token) = self.get::<ShopToken>(&key(TOKEN, &hash), "token")? else {
            return Ok(None);
        };
        change(&mut token);
        db.insert(key(TOKEN, &hash), encode(&token))?;
        Ok(Some(token))
    }

    async fn delete_token(&self, shop: &str, id: Uuid) -> Result<bool, StoreError> {
        {
            let _write = self.writing_past_checkpoint().await?;
            let db = self.db()?;
            let Some(hash) = db.get(token_by_shop_key(shop, id))? else {
                return Ok(false);
            };
            let mut batch = Batch::default();
            batch.remove(key(TOKEN, &hash));
            batch.remove(token_by_shop_key(shop, id));
            self.apply(&db, batch)?;
        }
        self.durable().await?;
        Ok(true)
    }

    async fn insert_events(&self, events: Vec<NewEvent>) -> Result<Vec<Ingested>, StoreError> {
        let mut results = Vec::with_capacity(events.len());
        {
            let _write = self.writing_past_checkpoint().await?;
            let db = self.db()?;
            let mut w = Writes::default();
            let mut in_batch: HashMap<Uuid, EventRecord> = HashMap::new();
            let mut written = 0;
            for new in events {
                let id = new.record.id;
                let existing = match in_batch.get(&id) {
                    Some(record) => Some(record.clone()),
                    None => self.get::<EventRecord>(&key(EVENT, id.as_bytes()), "event")?,
                };
                if let Some(record) = existing {
                    results.push(Ingested {
                        record,
                        duplicate: true,
                    });
                    continue;
                }
                w.insert(key(EVENT, id.as_bytes()), encode(&new.record));
                w.insert(key(EVENT_JSON, id.as_bytes()), new.json.as_bytes());
                w.insert(
                    concat(&[
                        &[RECEIVED],
                        &new.record.received_at.0.to_be_bytes(),
                        id.as_bytes(),
                    ]),
                    [],
                );
                for delivery in &new.deliveries {
                    self.put_delivery(&mut w, None, delivery);
                }
                in_batch.insert(id, new.record.clone());
                results.push(Ingested {
                    record: new.record,
                    duplicate: false,
                });
                written += 1;
                if written % INGEST_CHUNK == 0 {
                    self.commit(&db, std::mem::take(&mut w))?;
                }
            }
            self.commit(&db, w)?;
        }
        if results.iter().any(|r| !r.duplicate) {
            self.durable().await?;
            self.signals.work_queued();
        }
        Ok(results)
    }

    async fn event(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        self.get(&key(EVENT, id.as_bytes()), "event")
    }

    async fn event_json(&self, id: Uuid) -> Result<Option<String>, StoreError> {
        match self.db()?.get(key(EVENT_JSON, id.as_bytes()))? {
            Some(bytes) => String::from_utf8(bytes.to_vec())
                .map(Some)
                .map_err(|e| corrupt("event JSON", e)),
            None => Ok(None),
        }
    }

    async fn create_integration(&self, integration: &Integration) -> Result<(), StoreError> {
        self.room()?;
        let mut batch = Batch::default();
        batch.insert(
            integration_key(&integration.shop, integration.id),
            encode(integration),
        );
        self.apply(&self.db()?, batch)?;
        self.durable().await?;
        Ok(())
    }

    async fn integration(&self, shop: &str, id: Uuid) -> Result<Option<Integration>, StoreError> {
        self.get(&integration_key(shop, id), "integration")
    }

    async fn integrations(&self, shop: Option<&str>) -> Result<Vec<Integration>, StoreError> {
        let prefix = shop.map_or_else(|| vec![INTEGRATION], |s| shop_prefix(INTEGRATION, s));
        self.db()?
            .scan_prefix(prefix)
            .values()
            .map(|v| decode(&v?, "integration"))
            .collect()
    }

    async fn update_integration(
        &self,
        shop: &str,
        id: Uuid,
        now: Timestamp,
        change: IntegrationChange,
    ) -> Result<Option<Integration>, StoreError> {
        let updated = {
            let _write = self.writing_past_checkpoint().await?;
            let db = self.db()?;
            let Some(mut integration) =
                self.get::<Integration>(&integration_key(shop, id), "integration")?
            else {
                return Ok(None);
            };
            let resumes = integration
                .apply(change, now)
                .map_err(StoreError::Rejected)?;
            let mut w = Writes::default();
            if resumes {
                for paused in self.ids_in(&key(PAUSED, id.as_bytes()))? {
                    let Some(old) = self.delivery_record(paused)? else {
                        continue;
                    };
                    let mut new = old.clone();
                    Integration::resume(&mut new, now);
                    self.put_delivery(&mut w, Some(&old), &new);
                }
            }
            w.insert(integration_key(shop, id), encode(&integration));
            self.commit(&db, w)?;
            integration
        };
        self.durable().await?;
        self.signals.work_queued();
        Ok(Some(updated))
    }

    async fn delete_integration(
        &self,
        shop: &str,
        id: Uuid,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        {
            let _write = self.writing_past_checkpoint().await?;
            let db = self.db()?;
            let Some(integration) =
                self.get::<Integration>(&integration_key(shop, id), "integration")?
            else {
                return Ok(false);
            };
            self.remove_integration(&db, &integration, "the integration was deleted", now)?;
        }
        self.durable().await?;
        Ok(true)
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        lease_until: Timestamp,
        admission: &dyn Admission,
    ) -> Result<ClaimRound, StoreError> {
        let _write = self.writing()?;
        let db = self.db()?;
        let split = ready_key(Timestamp(now.0 + 1), Uuid::nil());
        let mut next_at = db
            .range(split.clone()..vec![READY + 1])
            .keys()
            .next()
            .transpose()?
            .map(|k| time_at(&k, 1));
        let later = |next_at: &mut Option<Timestamp>, at: Timestamp| {
            *next_at = Some(next_at.map_or(at, |n| n.min(at)));
        };
        let in_flight = self.leases.in_flight(now);
        // Held work is due again when its lease ends (unless its attempt is recorded first).
        if let Some(at) = in_flight.next_end {
            later(&mut next_at, at);
        }

        // The integrations with due work, by shop, each with what its cap leaves room for.
        let mut shops: BTreeMap<String, Vec<Lane<(Vec<u8>, Uuid, String)>>> = BTreeMap::new();
        let mut w = Writes::default();
        for item in db.range(vec![READY]..split) {
            let (k, shop) = item?;
            let id = id_at(&k, 9);
            let shop = String::from_utf8_lossy(&shop).into_owned();
            let Some(integration) =
                self.get::<Integration>(&integration_key(&shop, id), "integration")?
            else {
                // Work whose integration is gone is ended when it is deleted; an index entry
                // left from before is corrected.
                w.queue(id, &shop);
                continue;
            };
            let held = in_flight.of(id);
            let room = integration.in_flight_cap().saturating_sub(held);
            if room == 0 {
                continue; // an attempt ending makes room, and wakes the scheduler
            }
            // Held work keeps its queue entry at its due time: skipped while its lease holds
            // (at most the cap's worth of entries).
            let end = queue_entry(id, Timestamp(now.0 + 1), Uuid::nil());
            let mut entries = 0;
            let mut due = std::collections::VecDeque::new();
            for k in db.range(queue_prefix(id)..end).keys() {
                let k = k?;
                entries += 1;
                if !in_flight.deliveries.contains(&trailing_id(&k)) {
                    due.push_back(k.to_vec());
                    if due.len() >= room.min(limit as u32) as usize {
                        break;
                    }
                }
            }
            if entries == 0 {
                w.queue(id, &shop); // a stale head: recomputed below
                continue;
            }
            if due.is_empty() {
                continue; // all of it held: due again when a lease ends
            }
            let due = due.into_iter().map(|e| (e, id, shop.clone())).collect();
            let pace = self
                .paces
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .copied();
            shops
                .entry(shop)
                .or_default()
                .push(Lane::new(integration, due, pace));
        }

        let turns = {
            let mut rotation = self.rotation.lock().unwrap_or_else(|p| p.into_inner());
            take_turns(&mut shops, &mut rotation, limit, admission, now)
        };
        {
            let mut paces = self.paces.lock().unwrap_or_else(|p| p.into_inner());
            for lane in shops.values().flatten().filter(|l| l.paced) {
                if let Some(tat) = lane.pace {
                    paces.insert(lane.integration.id, tat);
                }
            }
        }
        if let Some(at) = turns.next_at {
            later(&mut next_at, at);
        }
        let mut claimed = Vec::new();
        for (entry, integration, shop) in turns.chosen {
            // Only an entry that is the delivery's own queue position is work; anything else
            // (which no write leaves behind) is dropped rather than sent twice.
            let current = self
                .delivery_record(trailing_id(&entry))?
                .filter(|d| queue_key(d).is_some_and(|k| k == entry));
            match current {
                Some(mut held) => {
                    self.leases.take(&mut held, lease_until);
                    claimed.push(held);
                }
                None => {
                    w.queue(integration, &shop).removed.insert(entry.clone());
                    w.remove(&entry);
                }
            }
        }
        if !w.is_empty() {
            self.commit(&db, w)?;
        }
        Ok(ClaimRound { claimed, next_at })
    }

    async fn release(&self, lease: Lease, due: Timestamp) -> Result<(), StoreError> {
        let _checkpoint = self.past_checkpoint().await;
        self.change_leased(lease, |d| d.release(due))?;
        self.signals.work_queued();
        Ok(())
    }

    async fn pause(&self, lease: Lease, now: Timestamp, reason: &str) -> Result<(), StoreError> {
        let _checkpoint = self.past_checkpoint().await;
        self.change_leased(lease, |d| d.pause(reason, now))
    }

    async fn record_attempt(
        &self,
        lease: Lease,
        attempt: Attempt,
        outcome: Outcome,
        now: Timestamp,
        auto_disable_after: u32,
    ) -> Result<Recorded, StoreError> {
        self.record_queued(lease, attempt, outcome, now, auto_disable_after)
            .await
    }

    async fn requeue(&self, shop: &str, id: Uuid, now: Timestamp) -> Result<bool, StoreError> {
        let _write = self.writing_past_checkpoint().await?;
        let db = self.db()?;
        let Some(old) = self.delivery_record(id)?.filter(|d| d.shop == shop) else {
            return Ok(false);
        };
        if !matches!(
            old.status,
            DeliveryStatus::Failed | DeliveryStatus::Exhausted
        ) {
            return Ok(false);
        }
        let mut new = old.clone();
        new.requeue(now);
        let mut w = Writes::default();
        self.put_delivery(&mut w, Some(&old), &new);
        self.commit(&db, w)?;
        self.signals.work_queued();
        Ok(true)
    }

    async fn requeue_matching(
        &self,
        shop: &str,
        filter: &DeliveryFilter,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let retryable = |d: &Delivery| {
            matches!(d.status, DeliveryStatus::Failed | DeliveryStatus::Exhausted)
                && matches(shop, filter, d)
        };
        let mut requeued = 0u64;
        for status in [DeliveryStatus::Failed, DeliveryStatus::Exhausted] {
            if filter.status.is_some_and(|s| s != status) {
                continue;
            }
            let narrowed = DeliveryFilter {
                status: Some(status),
                ..filter.clone()
            };
            let mut before = None;
            loop {
                let page = self.deliveries(shop, &narrowed, before, CHUNK).await?;
                let _write = self.writing_past_checkpoint().await?;
                let db = self.db()?;
                let mut w = Writes::default();
                for listed in &page {
                    // Read again under the lock: it may have changed since it was listed.
                    let Some(old) = self.delivery_record(listed.id)?.filter(retryable) else {
                        continue;
                    };
                    let mut new = old.clone();
                    new.requeue(now);
                    self.put_delivery(&mut w, Some(&old), &new);
                    requeued += 1;
                }
                self.commit(&db, w)?;
                match page.last() {
                    Some(last) if page.len() == CHUNK => before = Some(last.id),
                    _ => break,
                }
            }
        }
        if requeued > 0 {
            self.signals.work_queued();
        }
        Ok(requeued)
    }

    async fn delivery(&self, shop: &str, id: Uuid) -> Result<Option<DeliveryDetail>, StoreError> {
        // An attempt recorded between the two reads (its batch writes both) shows as more
        // attempts than the delivery counts: read again, so the two agree.
        for _ in 0..READ_AGAIN {
            let Some(delivery) = self.delivery_record(id)?.filter(|d| d.shop == shop) else {
                return Ok(None);
            };
            let attempts: Vec<Attempt> = self
                .db()?
                .scan_prefix(key(ATTEMPT, id.as_bytes()))
                .values()
                .map(|v| decode(&v?, "attempt"))
                .collect::<Result<_, _>>()?;
            if attempts.len() as u64 <= u64::from(delivery.attempts) {
                let delivery = self.leases.show(delivery);
                return Ok(Some(DeliveryDetail { delivery, attempts }));
            }
        }
        Err(StoreError::Corrupt {
            what: "delivery",
            detail: format!("{id} has more attempts stored than it counts"),
        })
    }

    async fn deliveries(
        &self,
        shop: &str,
        filter: &DeliveryFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let db = self.db()?;
        let (prefix, low, high) = self.log_range(shop, filter, before);
        let mut found = Vec::new();
        for k in db.range(low..high).keys().rev() {
            let k = k?;
            if !k.starts_with(&prefix) {
                continue;
            }
            let Some(delivery) = self.delivery_record(trailing_id(&k))? else {
                continue;
            };
            if matches(shop, filter, &delivery) {
                found.push(self.leases.show(delivery));
                if found.len() >= limit {
                    break;
                }
            }
        }
        Ok(found)
    }

    async fn queue_depth(&self, now: Timestamp) -> Result<QueueDepth, StoreError> {
        let db = self.db()?;
        let mut depth = QueueDepth::default();
        let in_flight = self.leases.in_flight(now);
        for k in db.scan_prefix([HEAD]).keys() {
            let queue = self.integration_queue(&db, id_at(&k?, 1), now, &in_flight)?;
            depth.due += queue.due;
            depth.scheduled += queue.scheduled;
            depth.in_flight += queue.in_flight;
        }
        depth.paused = db.scan_prefix([PAUSED]).count() as u64;
        Ok(depth)
    }

    async fn integration_health(
        &self,
        shop: &str,
        id: Uuid,
        now: Timestamp,
    ) -> Result<Option<IntegrationHealth>, StoreError> {
        if self.integration(shop, id).await?.is_none() {
            return Ok(None);
        }
        let db = self.db()?;
        let since = stats_bucket(now.saturating_sub(std::time::Duration::from_secs(86_400)));
        let mut buckets = Vec::new();
        for item in db.range(stats_key(id, since)..prefix_end(&key(STATS, id.as_bytes()))) {
            let (k, v) = item?;
            buckets.push((time_at(&k, 17), decode::<AttemptStats>(&v, "statistics")?));
        }
        let last = self
            .get::<LastOutcomes>(&key(LAST, id.as_bytes()), "last outcomes")?
            .unwrap_or_default();
        let queue = self.integration_queue(&db, id, now, &self.leases.in_flight(now))?;
        Ok(Some(IntegrationHealth::from_buckets(
            id, &buckets, last, queue, now,
        )))
    }

    async fn purge(&self, cutoff: Timestamp, now: Timestamp) -> Result<Purged, StoreError> {
        let db = self.db()?;
        let mut purged = Purged::default();
        let end = key(DELIVERY, id_bounds(cutoff).0.as_bytes());
        let mut start = vec![DELIVERY];
        loop {
            let _write = self.lock();
            let mut batch = Batch::default();
            let mut seen = 0;
            for item in db.range(start.clone()..end.clone()).take(CHUNK) {
                let (k, v) = item?;
                seen += 1;
                start = k.to_vec();
                start.push(0);
                let delivery: Delivery = decode(&v, "delivery")?;
                if !delivery.status.is_finished() {
                    continue;
                }
                for (derived, _) in derived_keys(&delivery) {
                    batch.remove(derived);
                }
                for attempt in db.scan_prefix(key(ATTEMPT, delivery.id.as_bytes())).keys() {
                    batch.remove(attempt?);
                }
                batch.remove(k);
                purged.deliveries += 1;
            }
            self.apply(&db, batch)?;
            if seen < CHUNK {
                break;
            }
        }

        let old_events: Vec<(engine::Bytes, Uuid)> = db
            .range(vec![RECEIVED]..key(RECEIVED, &cutoff.0.to_be_bytes()))
            .keys()
            .map(|k| {
                let k = k?;
                let id = trailing_id(&k);
                Ok((k, id))
            })
            .collect::<Result<_, StoreError>>()?;
        for chunk in old_events.chunks(CHUNK) {
            let _write = self.lock();
            let mut batch = Batch::default();
            for (received_key, id) in chunk {
                let record: Option<EventRecord> = self.get(&key(EVENT, id.as_bytes()), "event")?;
                let mut alive = false;
                for delivery in record.iter().flat_map(|r| &r.deliveries) {
                    if db.contains_key(key(DELIVERY, delivery.id.as_bytes()))? {
                        alive = true;
                        break;
                    }
                }
                if alive {
                    continue;
                }
                batch.remove(key(EVENT, id.as_bytes()));
                batch.remove(key(EVENT_JSON, id.as_bytes()));
                batch.remove(received_key.clone());
                purged.events += 1;
            }
            self.apply(&db, batch)?;
        }

        {
            let _write = self.lock();
            let mut batch = Batch::default();
            // Statistics past what the health route reads.
            let kept_from = stats_bucket(now.saturating_sub(STATS_KEPT));
            for integration in db.scan_prefix([LAST]).keys() {
                let id = id_at(&integration?, 1);
                for k in db
                    .range(key(STATS, id.as_bytes())..stats_key(id, kept_from))
                    .keys()
                {
                    batch.remove(k?);
                }
            }
            // Tokens past their rotation's grace.
            for item in db.scan_prefix([TOKEN]) {
                let (k, v) = item?;
                let token: ShopToken = decode(&v, "token")?;
                if !token.is_valid_at(now) {
                    batch.remove(k);
                    batch.remove(token_by_shop_key(&token.shop, token.id));
                    purged.tokens += 1;
                }
            }
            // Deleted shops whose log is gone: their ids are free again.
            for item in db.scan_prefix([SHOP]) {
                let (k, v) = item?;
                let shop: Shop = decode(&v, "shop")?;
                let gone = shop.deleted_at.is_some_and(|at| at < cutoff)
                    && db
                        .scan_prefix(shop_prefix(BY_SHOP, &shop.id))
                        .next()
                        .is_none();
                if gone {
                    batch.remove(k);
                    purged.shops += 1;
                }
            }
            self.apply(&db, batch)?;
        }
        self.durable().await?;
        Ok(purged)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.durable().await?;
        Ok(())
    }

    async fn add_plugin_version(
        &self,
        plugin: &str,
        version: &str,
        bundled: bool,
        component: &[u8],
        now: Timestamp,
    ) -> Result<PluginVersion, StoreError> {
        let added = {
            let _write = self.writing_past_checkpoint().await?;
            let db = self.db()?;
            let digest = crate::runtime::component_digest(component);
            let active = match db.get(active_key(plugin))? {
                Some(number) => {
                    let number: [u8; 4] = number[..]
                        .try_into()
                        .map_err(|e| corrupt("active plugin", e))?;
                    self.get::<PluginVersion>(
                        &plugin_version_key(plugin, u32::from_be_bytes(number)),
                        "plugin version",
                    )?
                }
                None => None,
            };
            if let Some(active) = active.filter(|v| v.digest == digest) {
                return Ok(active);
            }
            let last = db
                .scan_prefix(plugin_prefix(plugin))
                .values()
                .next_back()
                .transpose()?
                .map(|v| decode::<PluginVersion>(&v, "plugin version"))
                .transpose()?
                .map_or(0, |v| v.number);
            let added = PluginVersion {
                plugin: plugin.to_owned(),
                number: last + 1,
                version: version.to_owned(),
                digest,
                size: component.len(),
                added_at: now,
                bundled,
            };
            let mut batch = Batch::default();
            batch.insert(key(COMPONENT, added.digest.as_bytes()), component);
            batch.insert(plugin_version_key(plugin, added.number), encode(&added));
            batch.insert(active_key(plugin), added.number.to_be_bytes());
            batch.remove(removed_key(plugin));
            self.apply(&db, batch)?;
            added
        };
        self.durable().await?;
        self.signals.plugins_changed();
        Ok(added)
    }

    async fn plugin_versions(&self, plugin: &str) -> Result<Vec<PluginVersion>, StoreError> {
        self.db()?
            .scan_prefix(plugin_prefix(plugin))
            .values()
            .map(|v| decode(&v?, "plugin version"))
            .collect()
    }

    async fn active_plugin_versions(&self) -> Result<Vec<PluginVersion>, StoreError> {
        let mut active = Vec::new();
        for item in self.db()?.scan_prefix(key(META, ACTIVE_PREFIX.as_bytes())) {
            let (k, v) = item?;
            let plugin = String::from_utf8_lossy(&k[1 + ACTIVE_PREFIX.len()..]).into_owned();
            let number: [u8; 4] = v[..].try_into().map_err(|e| corrupt("active plugin", e))?;
            let number = u32::from_be_bytes(number);
            if let Some(version) =
                self.get(&plugin_version_key(&plugin, number), "plugin version")?
            {
                active.push(version);
            }
        }
        Ok(active)
    }

    async fn activate_plugin_version(&self, plugin: &str, number: u32) -> Result<(), StoreError> {
        self.room()?;
        let db = self.db()?;
        if !db.contains_key(plugin_version_key(plugin, number))? {
            return Err(StoreError::Rejected(format!(
                "the plugin `{plugin}` has no version {number}"
            )));
        }
        db.insert(active_key(plugin), number.to_be_bytes())?;
        self.durable().await?;
        self.signals.plugins_changed();
        Ok(())
    }

    async fn plugin_component(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db()?
            .get(key(COMPONENT, digest.as_bytes()))?
            .map(|v| v.to_vec()))
    }

    async fn delete_plugin(&self, plugin: &str) -> Result<bool, StoreError> {
        let removed = {
            let _write = self.writing_past_checkpoint().await?;
            let db = self.db()?;
            let versions: Vec<PluginVersion> = db
                .scan_prefix(plugin_prefix(plugin))
                .values()
                .map(|v| decode(&v?, "plugin version"))
                .collect::<Result<_, _>>()?;
            if versions.is_empty() {
                return Ok(false);
            }
            // Components are shared by digest; keep those another plugin still refers to.
            let mut in_use = HashSet::new();
            for item in db.scan_prefix([PLUGIN_VERSION]).values() {
                let version: PluginVersion = decode(&item?, "plugin version")?;
                if version.plugin != plugin {
                    in_use.insert(version.digest);
                }
            }
            let mut batch = Batch::default();
            for version in &versions {
                batch.remove(plugin_version_key(plugin, version.number));
                if !in_use.contains(&version.digest) {
                    batch.remove(key(COMPONENT, version.digest.as_bytes()));
                }
            }
            batch.remove(active_key(plugin));
            batch.insert(removed_key(plugin), &[1u8] as &[u8]);
            self.apply(&db, batch)?;
            true
        };
        self.durable().await?;
        self.signals.plugins_changed();
        Ok(removed)
    }

    async fn plugin_removed(&self, plugin: &str) -> Result<bool, StoreError> {
        Ok(self.db()?.contains_key(removed_key(plugin))?)
    }

    async fn rekey(
        &self,
        integrations: Vec<Integration>,
        fingerprint_name: &str,
        fingerprint: &str,
    ) -> Result<(), StoreError> {
        {
            let _write = self.writing_past_checkpoint().await?;
            let mut batch = Batch::default();
            for integration in &integrations {
                let k = integration_key(&integration.shop, integration.id);
                let Some(mut current) = self.get::<Integration>(&k, "integration")? else {
                    continue;
                };
                current.secrets = integration.secrets.clone();
                batch.insert(k, encode(&current));
            }
            batch.insert(
                key(META, fingerprint_name.as_bytes()),
                fingerprint.as_bytes(),
            );
            self.apply(&self.db()?, batch)?;
        }
        self.durable().await?;
        Ok(())
    }

    async fn health(&self) -> Result<(), String> {
        self.room().map_err(|e| e.to_string())?;
        let db = self.db().map_err(|e| e.to_string())?;
        // After a failed write either engine refuses every later one until it is reopened, and says so
        // at once when a write asks for log space. (Not a flush: a flush can hang once the
        // disk has refused a write.)
        db.insert(
            key(META, HEALTH_PROBE.as_bytes()),
            Timestamp::now().0.to_be_bytes(),
        )
        .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn recover(&self) -> Result<(), StoreError> {
        if self.health().await.is_ok() {
            return Ok(());
        }
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || probe_write(&dir))
            .await
            .map_err(|e| StoreError::Backend(format!("the probe was lost: {e}")))?
            .map_err(|e| {
                StoreError::Unavailable(format!("the data directory still cannot be written: {e}"))
            })?;
        // There is room again, but the engine keeps refusing writes after the failed one:
        // reopen it. What was acknowledged was flushed before, so reopening is a recovery like
        // a restart's; writes that failed were never acknowledged.
        // Calls meanwhile answer "being reopened" (503), like any other moment of it.
        let old = self.db.write().unwrap_or_else(|p| p.into_inner()).take();
        drop(old);
        let deadline = tokio::time::Instant::now() + REOPEN_PATIENCE;
        let reopened = loop {
            let (dir, kind) = (self.dir.clone(), self.kind);
            let opened = tokio::task::spawn_blocking(move || Engine::open(&dir, kind))
                .await
                .map_err(|e| StoreError::Backend(format!("the reopen was lost: {e}")))?;
            match opened {
                Ok(db) => break db,
                // In-flight calls may still hold the old engine, and with it the directory lock.
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await
                }
                Err(error) => return Err(error),
            }
        };
        *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(reopened);
        // Writes applied but not made durable before the failure may be gone.
        self.signals.integrations_changed();
        self.rebuild_heads()?;
        // Like a restart: writes that never reached the disk are gone, so work whose outcome
        // was lost is queued again. Every lease is due again; an attempt still in flight
        // records its outcome when it ends, unless its delivery was claimed again first
        // (at-least-once: it may be sent once more).
        let released = self.leases.expire_all(Timestamp::now());
        self.signals.work_queued();
        tracing::warn!(dir = %self.dir.display(), released, "the store was reopened after a write failure; it takes writes again");
        Ok(())
    }

    fn signals(&self) -> &Signals {
        &self.signals
    }

    async fn meta(&self, name: &str) -> Result<Option<String>, StoreError> {
        match self.db()?.get(key(META, name.as_bytes()))? {
            Some(v) => String::from_utf8(v.to_vec())
                .map(Some)
                .map_err(|e| corrupt("metadata", e)),
            None => Ok(None),
        }
    }

    async fn set_meta(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.room()?;
        self.db()?
            .insert(key(META, name.as_bytes()), value.as_bytes())?;
        self.durable().await?;
        Ok(())
    }
}

/// Whether a delivery belongs to the shop and passes every filter (the index chosen covers
/// one of them).
fn matches(shop: &str, filter: &DeliveryFilter, d: &Delivery) -> bool {
    d.shop == shop
        && filter.integration.is_none_or(|i| d.integration_id == i)
        && filter.event.as_deref().is_none_or(|e| d.event == e)
        && filter.status.is_none_or(|s| d.status == s)
        && filter.customer.as_deref().is_none_or(|c| {
            let c = c.trim();
            [&d.customer_email, &d.customer_name]
                .into_iter()
                .flatten()
                .any(|v| v.trim().to_lowercase() == c.to_lowercase())
        })
        && filter.from.is_none_or(|t| d.created_at >= t)
        && filter.to.is_none_or(|t| d.created_at <= t)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store records serialize")
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(what, e))
}

fn corrupt(what: &'static str, e: impl fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A write on the runtime's only thread meets a checkpoint that holds redb's write slot:
    /// it waits without holding the thread (this task goes on meanwhile), and it is done once
    /// the checkpoint is. Without the gate, it would wait inside redb's `begin_write`, and this
    /// task would run again only after the checkpoint gave up waiting to be released.
    #[tokio::test(flavor = "current_thread")]
    async fn a_write_waits_for_a_checkpoint_without_holding_its_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let engine = store.db().unwrap();
        let (held, is_held) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let gave_up = Arc::new(AtomicBool::new(false));
        let checkpoint = std::thread::spawn({
            let gave_up = gave_up.clone();
            move || {
                // What a checkpoint holds: the gate, then redb's write slot (its durable commit).
                let gate = engine.checkpoint_gate().expect("a redb store has a gate");
                let _gate = gate.blocking_write();
                let _slot = engine.redb().unwrap().begin_write().unwrap();
                held.send(()).unwrap();
                if released.recv_timeout(Duration::from_secs(5)).is_err() {
                    gave_up.store(true, Ordering::SeqCst);
                }
            }
        });
        is_held.recv().unwrap();

        let started = Arc::new(AtomicBool::new(false));
        let write = tokio::spawn({
            let (store, started) = (store.clone(), started.clone());
            async move {
                started.store(true, Ordering::SeqCst);
                store
                    .create_shop(&Shop::new("gated", "Gated", Timestamp::now()))
                    .await
            }
        });
        while !started.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        assert!(
            !gave_up.load(Ordering::SeqCst),
            "the write held the runtime's thread while the checkpoint held redb's write slot"
        );
        assert!(
            !write.is_finished(),
            "the write did not wait for the checkpoint"
        );

        release.send(()).unwrap();
        assert!(write.await.unwrap().unwrap(), "the shop is new");
        checkpoint.join().unwrap();
        assert!(store.shop("gated").await.unwrap().is_some());
    }
}
