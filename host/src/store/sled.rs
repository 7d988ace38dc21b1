//! The embedded store: one sled tree, keys prefixed by kind, a record and the index keys
//! derived from it always written in one atomic batch (sled batches survive a crash whole or
//! not at all): an event with its deliveries, a delivery with its queue and log keys, an
//! attempt with its delivery. Read-modify-write operations hold a short write lock, never
//! across an `.await`. Callers that need durability share flushes ([`GroupCommit`]).
//!
//! | prefix | key | value |
//! | --- | --- | --- |
//! | `E` | event id | [`EventRecord`] |
//! | `B` | event id | the event's JSON text |
//! | `R` | received ms ‖ event id | — (events by age, for the purge) |
//! | `I` | integration id | [`Integration`] |
//! | `D` | delivery id (UUIDv7, so by creation time) | [`Delivery`] |
//! | `A` | delivery id ‖ attempt number | [`Attempt`] |
//! | `Q` | due ms ‖ delivery id | — (the queue: pending, retrying, leased) |
//! | `L` | delivery id | — (leased) |
//! | `P` | integration id ‖ delivery id | — (paused) |
//! | `i` | integration id ‖ delivery id | — (log filter) |
//! | `e` | event key ‖ 0 ‖ delivery id | — (log filter) |
//! | `s` | status ‖ delivery id | — (log filter) |
//! | `c` | lowercased email or name ‖ 0 ‖ delivery id | — (log filter) |
//! | `V` | plugin id ‖ 0 ‖ version number | [`PluginVersion`] |
//! | `W` | component digest | component bytes |
//! | `M` | name | metadata (active plugin versions: `plugin-active:<id>`) |

use std::collections::HashMap;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::*;

const EVENT: u8 = b'E';
const EVENT_JSON: u8 = b'B';
const RECEIVED: u8 = b'R';
const INTEGRATION: u8 = b'I';
const DELIVERY: u8 = b'D';
const ATTEMPT: u8 = b'A';
const QUEUE: u8 = b'Q';
const LEASE: u8 = b'L';
const PAUSED: u8 = b'P';
const BY_INTEGRATION: u8 = b'i';
const BY_EVENT: u8 = b'e';
const BY_STATUS: u8 = b's';
const BY_CUSTOMER: u8 = b'c';
const META: u8 = b'M';
const PLUGIN_VERSION: u8 = b'V';
const COMPONENT: u8 = b'W';

/// sled's page cache. Its default (1 GiB) is far more than a delivery queue needs; 16 MiB
/// instead of 64 lowered the peak RSS while 100,000 events were ingested (docs/PERFORMANCE.md).
const CACHE_BYTES: u64 = 16 << 20;
/// How often sled writes buffered changes on its own; ingest flushes explicitly.
const FLUSH_EVERY_MS: u64 = 200;
/// Events (each with its deliveries) per sled batch when a large ingest batch is written.
/// sled keeps every node version a batch replaces until the batch ends, so one batch of
/// 1,000 events held ~180 MB more at peak than chunks of 100 (benchmark: 403 → 224 MB while
/// 100,000 events were ingested; ingest 14,700 → 19,500 events/s).
const INGEST_CHUNK: usize = 100;
/// Deliveries removed per batch by the purge, so the write lock is held briefly.
const PURGE_CHUNK: usize = 1_000;

pub struct SledStore {
    dir: PathBuf,
    /// `None` only while [`Store::recover`] reopens the engine.
    db: RwLock<Option<::sled::Db>>,
    write: Mutex<()>,
    commit: GroupCommit,
}

/// Group commit: callers that need their writes on disk share flushes. One flush runs at a
/// time (sled's `flush` on the blocking pool); a caller whose writes an earlier flush already
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

impl From<::sled::Error> for StoreError {
    fn from(e: ::sled::Error) -> StoreError {
        match e {
            // A full disk, or a write the file system refused: sled stops taking writes until
            // it is reopened (see `recover`).
            ::sled::Error::Io(e) => {
                StoreError::Unavailable(format!("the data directory cannot be written: {e}"))
            }
            other => StoreError::Backend(other.to_string()),
        }
    }
}

/// Free space below which the data directory's disk counts as full: sled writes its log in
/// segments of 512 KiB, so with less than this a write is about to fail.
const MIN_FREE_BYTES: u64 = 1 << 20;
/// Size of the file [`Store::recover`] writes to find out whether the disk has room again.
const PROBE_BYTES: usize = 1 << 20;
/// How long a reopen waits for the previous engine's last handles (its file lock) to go.
const REOPEN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

impl SledStore {
    /// Opens (or creates) the store in `dir`. sled locks the directory: a second process on
    /// the same data fails here.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        Ok(SledStore {
            dir: dir.to_owned(),
            db: RwLock::new(Some(open_db(dir)?)),
            write: Mutex::new(()),
            commit: GroupCommit::default(),
        })
    }

    /// The engine (a cheap handle).
    fn db(&self) -> Result<::sled::Db, StoreError> {
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
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Backend(format!("the flush was lost: {e}")))??;
        self.commit.flushed.fetch_max(covers, Ordering::SeqCst);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Rewrites a delivery and the keys derived from it that change: a claim or an attempt
    /// touches the queue, lease and status keys, not the log indexes that stay the same (a
    /// claim writes 4 keys instead of 9).
    fn put_delivery(&self, batch: &mut ::sled::Batch, old: Option<&Delivery>, new: &Delivery) {
        let old_keys = old.map(derived_keys).unwrap_or_default();
        let new_keys = derived_keys(new);
        for k in &old_keys {
            if !new_keys.contains(k) {
                batch.remove(k.as_slice());
            }
        }
        for k in new_keys {
            if !old_keys.contains(&k) {
                batch.insert(k, &[] as &[u8]);
            }
        }
        batch.insert(key(DELIVERY, new.id.as_bytes()), encode(new));
    }

    /// Reads, changes and rewrites one delivery under the write lock.
    fn change_delivery(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut Delivery),
    ) -> Result<Option<Delivery>, StoreError> {
        let _write = self.lock();
        let Some(old) = self.delivery_record(id)? else {
            return Ok(None);
        };
        let mut new = old.clone();
        change(&mut new);
        let mut batch = ::sled::Batch::default();
        self.put_delivery(&mut batch, Some(&old), &new);
        self.db()?.apply_batch(batch)?;
        Ok(Some(new))
    }

    /// Adds to `batch` a change of every paused delivery of an integration.
    fn change_paused(
        &self,
        batch: &mut ::sled::Batch,
        integration: Uuid,
        change: impl Fn(&mut Delivery),
    ) -> Result<(), StoreError> {
        let paused = self.ids_in(&key(PAUSED, integration.as_bytes()))?;
        for id in paused {
            let Some(old) = self.delivery_record(id)? else {
                continue;
            };
            let mut new = old.clone();
            change(&mut new);
            self.put_delivery(batch, Some(&old), &new);
        }
        Ok(())
    }

    fn ids_in(&self, prefix: &[u8]) -> Result<Vec<Uuid>, StoreError> {
        self.db()?
            .scan_prefix(prefix)
            .keys()
            .map(|k| Ok(trailing_id(&k?)))
            .collect()
    }
}

fn open_db(dir: &Path) -> Result<::sled::Db, StoreError> {
    ::sled::Config::new()
        .path(dir)
        .cache_capacity(CACHE_BYTES)
        .flush_every_ms(Some(FLUSH_EVERY_MS))
        .open()
        .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", dir.display())))
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
impl Store for SledStore {
    async fn insert_events(&self, events: Vec<NewEvent>) -> Result<Vec<Ingested>, StoreError> {
        let mut results = Vec::with_capacity(events.len());
        {
            let _write = self.lock();
            let mut batch = ::sled::Batch::default();
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
                batch.insert(key(EVENT, id.as_bytes()), encode(&new.record));
                batch.insert(key(EVENT_JSON, id.as_bytes()), new.json.as_bytes());
                batch.insert(
                    key2(
                        RECEIVED,
                        &new.record.received_at.0.to_be_bytes(),
                        id.as_bytes(),
                    ),
                    &[] as &[u8],
                );
                for delivery in &new.deliveries {
                    self.put_delivery(&mut batch, None, delivery);
                }
                in_batch.insert(id, new.record.clone());
                results.push(Ingested {
                    record: new.record,
                    duplicate: false,
                });
                written += 1;
                if written % INGEST_CHUNK == 0 {
                    self.db()?.apply_batch(std::mem::take(&mut batch))?;
                }
            }
            self.db()?.apply_batch(batch)?;
        }
        if results.iter().any(|r| !r.duplicate) {
            self.durable().await?;
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
        self.db()?.insert(
            key(INTEGRATION, integration.id.as_bytes()),
            encode(integration),
        )?;
        self.durable().await?;
        Ok(())
    }

    async fn integration(&self, id: Uuid) -> Result<Option<Integration>, StoreError> {
        self.get(&key(INTEGRATION, id.as_bytes()), "integration")
    }

    async fn integrations(&self) -> Result<Vec<Integration>, StoreError> {
        self.db()?
            .scan_prefix([INTEGRATION])
            .values()
            .map(|v| decode(&v?, "integration"))
            .collect()
    }

    async fn update_integration(
        &self,
        id: Uuid,
        now: Timestamp,
        change: IntegrationChange,
    ) -> Result<Option<Integration>, StoreError> {
        let updated = {
            let _write = self.lock();
            let Some(mut integration) =
                self.get::<Integration>(&key(INTEGRATION, id.as_bytes()), "integration")?
            else {
                return Ok(None);
            };
            let was_enabled = integration.enabled;
            change(&mut integration).map_err(StoreError::Rejected)?;
            integration.id = id;
            integration.updated_at = now;
            let mut batch = ::sled::Batch::default();
            if integration.enabled {
                integration.disabled_reason = None;
            }
            if integration.enabled && !was_enabled {
                integration.consecutive_failures = 0;
                self.change_paused(&mut batch, id, |d| {
                    d.status = if d.attempts == 0 {
                        DeliveryStatus::Pending
                    } else {
                        DeliveryStatus::Retrying
                    };
                    d.next_attempt_at = Some(now);
                    d.last_error = None;
                    d.updated_at = now;
                })?;
            }
            batch.insert(key(INTEGRATION, id.as_bytes()), encode(&integration));
            self.db()?.apply_batch(batch)?;
            integration
        };
        self.durable().await?;
        Ok(Some(updated))
    }

    async fn delete_integration(&self, id: Uuid) -> Result<bool, StoreError> {
        {
            let _write = self.lock();
            if !self.db()?.contains_key(key(INTEGRATION, id.as_bytes()))? {
                return Ok(false);
            }
            let mut batch = ::sled::Batch::default();
            batch.remove(key(INTEGRATION, id.as_bytes()));
            // Paused deliveries would wait for a re-enable that cannot come: they end here.
            let now = Timestamp::now();
            self.change_paused(&mut batch, id, |d| {
                d.status = DeliveryStatus::Failed;
                d.last_error = Some("the integration was deleted".into());
                d.updated_at = now;
            })?;
            self.db()?.apply_batch(batch)?;
        }
        self.durable().await?;
        Ok(true)
    }

    async fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        lease_until: Timestamp,
    ) -> Result<Vec<Delivery>, StoreError> {
        let _write = self.lock();
        let end = key(QUEUE, &(now.0 + 1).to_be_bytes());
        let due: Vec<::sled::IVec> = self
            .db()?
            .range(vec![QUEUE]..end)
            .keys()
            .take(limit)
            .collect::<Result<_, _>>()?;
        let mut batch = ::sled::Batch::default();
        let mut claimed = Vec::with_capacity(due.len());
        for entry in due {
            let id = trailing_id(&entry);
            // Only an entry that is the delivery's own queue position is work; anything else
            // (which no write leaves behind) is dropped rather than sent twice.
            let current = self
                .delivery_record(id)?
                .filter(|d| queue_key(d).is_some_and(|k| k[..] == entry[..]));
            let Some(old) = current else {
                batch.remove(entry);
                continue;
            };
            let mut new = old.clone();
            new.lease_until = Some(lease_until);
            self.put_delivery(&mut batch, Some(&old), &new);
            claimed.push(new);
        }
        self.db()?.apply_batch(batch)?;
        Ok(claimed)
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        match self.db()?.scan_prefix([QUEUE]).keys().next() {
            Some(k) => {
                let k = k?;
                let ms: [u8; 8] = k[1..9].try_into().map_err(|e| corrupt("queue key", e))?;
                Ok(Some(Timestamp(u64::from_be_bytes(ms))))
            }
            None => Ok(None),
        }
    }

    async fn release(&self, id: Uuid, due: Timestamp) -> Result<(), StoreError> {
        self.change_delivery(id, |d| {
            d.lease_until = None;
            d.next_attempt_at = Some(due);
        })?;
        Ok(())
    }

    async fn recover_leases(&self, now: Timestamp) -> Result<usize, StoreError> {
        let leased = self.ids_in(&[LEASE])?;
        for &id in &leased {
            self.change_delivery(id, |d| {
                d.lease_until = None;
                d.next_attempt_at = Some(now);
            })?;
        }
        Ok(leased.len())
    }

    async fn pause(&self, id: Uuid, now: Timestamp, reason: &str) -> Result<(), StoreError> {
        self.change_delivery(id, |d| {
            d.status = DeliveryStatus::Paused;
            d.lease_until = None;
            d.next_attempt_at = None;
            d.last_error = Some(reason.to_owned());
            d.updated_at = now;
        })?;
        Ok(())
    }

    async fn record_attempt(
        &self,
        id: Uuid,
        attempt: Attempt,
        outcome: Outcome,
        now: Timestamp,
        auto_disable_after: u32,
    ) -> Result<Recorded, StoreError> {
        let _write = self.lock();
        let Some(old) = self.delivery_record(id)? else {
            return Err(StoreError::Rejected(format!("no delivery {id}")));
        };
        let mut batch = ::sled::Batch::default();
        let mut integration_disabled = false;
        let mut outcome = outcome;
        let integration_key = key(INTEGRATION, old.integration_id.as_bytes());
        if let Some(mut integration) = self.get::<Integration>(&integration_key, "integration")? {
            let before = integration.clone();
            integration_disabled = integration.observe(
                outcome.signal,
                auto_disable_after,
                now,
                outcome.error.as_deref(),
            );
            outcome = outcome.held_while_disabled(&integration);
            if integration != before {
                batch.insert(integration_key, encode(&integration));
            }
        }
        let mut attempt = attempt;
        attempt.outcome = outcome.status;
        let mut new = old.clone();
        new.attempts = attempt.number;
        new.status = outcome.status;
        new.next_attempt_at = outcome.next_attempt_at;
        new.lease_until = None;
        new.last_error = outcome.error;
        new.updated_at = now;

        let mut attempt_key = key(ATTEMPT, id.as_bytes());
        attempt_key.extend_from_slice(&attempt.number.to_be_bytes());
        batch.insert(attempt_key, encode(&attempt));
        self.put_delivery(&mut batch, Some(&old), &new);
        self.db()?.apply_batch(batch)?;
        Ok(Recorded {
            status: new.status,
            integration_disabled,
        })
    }

    async fn requeue(&self, id: Uuid, now: Timestamp) -> Result<bool, StoreError> {
        let _write = self.lock();
        let Some(old) = self.delivery_record(id)? else {
            return Ok(false);
        };
        if !matches!(
            old.status,
            DeliveryStatus::Failed | DeliveryStatus::Exhausted
        ) {
            return Ok(false);
        }
        let mut new = old.clone();
        new.status = DeliveryStatus::Pending;
        new.next_attempt_at = Some(now);
        new.updated_at = now;
        let mut batch = ::sled::Batch::default();
        self.put_delivery(&mut batch, Some(&old), &new);
        self.db()?.apply_batch(batch)?;
        Ok(true)
    }

    async fn delivery(&self, id: Uuid) -> Result<Option<DeliveryDetail>, StoreError> {
        let Some(delivery) = self.delivery_record(id)? else {
            return Ok(None);
        };
        let attempts = self
            .db()?
            .scan_prefix(key(ATTEMPT, id.as_bytes()))
            .values()
            .map(|v| decode(&v?, "attempt"))
            .collect::<Result<_, _>>()?;
        Ok(Some(DeliveryDetail { delivery, attempts }))
    }

    async fn deliveries(
        &self,
        filter: &DeliveryFilter,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        // The most selective index the filter allows; its keys end with the delivery id, so a
        // range over them is a range of creation times.
        let prefix = if let Some(customer) = &filter.customer {
            customer_key_prefix(customer)
        } else if let Some(integration) = filter.integration {
            key(BY_INTEGRATION, integration.as_bytes())
        } else if let Some(event) = &filter.event {
            let mut k = key(BY_EVENT, event.as_bytes());
            k.push(0);
            k
        } else if let Some(status) = filter.status {
            vec![BY_STATUS, status.code()]
        } else {
            vec![DELIVERY]
        };
        let low = concat(
            &prefix,
            filter
                .from
                .map_or(Uuid::nil(), |t| id_bounds(t).0)
                .as_bytes(),
        );
        let mut high = concat(
            &prefix,
            filter.to.map_or(Uuid::max(), |t| id_bounds(t).1).as_bytes(),
        );
        high.push(0); // inclusive of `to`'s last id
        if let Some(before) = before {
            high = high.min(concat(&prefix, before.as_bytes()));
        }
        let mut found = Vec::new();
        for item in self.db()?.range(low..high).rev() {
            let (k, v) = item?;
            let delivery: Delivery = if prefix[0] == DELIVERY {
                decode(&v, "delivery")?
            } else {
                match self.delivery_record(trailing_id(&k))? {
                    Some(d) => d,
                    None => continue,
                }
            };
            if matches(filter, &delivery) {
                found.push(delivery);
                if found.len() >= limit {
                    break;
                }
            }
        }
        Ok(found)
    }

    async fn queue_depth(&self, now: Timestamp) -> Result<QueueDepth, StoreError> {
        let split = key(QUEUE, &(now.0 + 1).to_be_bytes());
        Ok(QueueDepth {
            due: self.db()?.range(vec![QUEUE]..split.clone()).count() as u64,
            scheduled: self.db()?.range(split..vec![QUEUE + 1]).count() as u64,
            paused: self.db()?.scan_prefix([PAUSED]).count() as u64,
        })
    }

    async fn purge(&self, cutoff: Timestamp) -> Result<Purged, StoreError> {
        let mut purged = Purged::default();
        let end = key(DELIVERY, id_bounds(cutoff).0.as_bytes());
        let mut start = vec![DELIVERY];
        loop {
            let _write = self.lock();
            let mut batch = ::sled::Batch::default();
            let mut seen = 0;
            for item in self
                .db()?
                .range(start.clone()..end.clone())
                .take(PURGE_CHUNK)
            {
                let (k, v) = item?;
                seen += 1;
                start = k.to_vec();
                start.push(0);
                let delivery: Delivery = decode(&v, "delivery")?;
                if !delivery.status.is_finished() {
                    continue;
                }
                for derived in derived_keys(&delivery) {
                    batch.remove(derived);
                }
                for attempt in self
                    .db()?
                    .scan_prefix(key(ATTEMPT, delivery.id.as_bytes()))
                    .keys()
                {
                    batch.remove(attempt?);
                }
                batch.remove(k);
                purged.deliveries += 1;
            }
            self.db()?.apply_batch(batch)?;
            if seen < PURGE_CHUNK {
                break;
            }
        }

        let end = key(RECEIVED, &cutoff.0.to_be_bytes());
        let old_events: Vec<(::sled::IVec, Uuid)> = self
            .db()?
            .range(vec![RECEIVED]..end)
            .keys()
            .map(|k| {
                let k = k?;
                let id = trailing_id(&k);
                Ok((k, id))
            })
            .collect::<Result<_, StoreError>>()?;
        for chunk in old_events.chunks(PURGE_CHUNK) {
            let _write = self.lock();
            let mut batch = ::sled::Batch::default();
            for (received_key, id) in chunk {
                let record: Option<EventRecord> = self.get(&key(EVENT, id.as_bytes()), "event")?;
                let mut alive = false;
                for delivery in record.iter().flat_map(|r| &r.deliveries) {
                    if self
                        .db()?
                        .contains_key(key(DELIVERY, delivery.id.as_bytes()))?
                    {
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
            self.db()?.apply_batch(batch)?;
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
            let _write = self.lock();
            let last = self
                .db()?
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
                digest: crate::runtime::component_digest(component),
                size: component.len(),
                added_at: now,
                bundled,
            };
            let mut batch = ::sled::Batch::default();
            batch.insert(key(COMPONENT, added.digest.as_bytes()), component);
            batch.insert(plugin_version_key(plugin, added.number), encode(&added));
            batch.insert(active_key(plugin), &added.number.to_be_bytes());
            batch.remove(removed_key(plugin));
            self.db()?.apply_batch(batch)?;
            added
        };
        self.durable().await?;
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
        if !self
            .db()?
            .contains_key(plugin_version_key(plugin, number))?
        {
            return Err(StoreError::Rejected(format!(
                "the plugin `{plugin}` has no version {number}"
            )));
        }
        self.db()?
            .insert(active_key(plugin), &number.to_be_bytes())?;
        self.durable().await?;
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
            let _write = self.lock();
            let versions: Vec<PluginVersion> = self
                .db()?
                .scan_prefix(plugin_prefix(plugin))
                .values()
                .map(|v| decode(&v?, "plugin version"))
                .collect::<Result<_, _>>()?;
            if versions.is_empty() {
                return Ok(false);
            }
            // Components are shared by digest; keep those another plugin still refers to.
            let mut in_use = std::collections::HashSet::new();
            for item in self.db()?.scan_prefix([PLUGIN_VERSION]).values() {
                let version: PluginVersion = decode(&item?, "plugin version")?;
                if version.plugin != plugin {
                    in_use.insert(version.digest);
                }
            }
            let mut batch = ::sled::Batch::default();
            for version in &versions {
                batch.remove(plugin_version_key(plugin, version.number));
                if !in_use.contains(&version.digest) {
                    batch.remove(key(COMPONENT, version.digest.as_bytes()));
                }
            }
            batch.remove(active_key(plugin));
            batch.insert(removed_key(plugin), &[1u8] as &[u8]);
            self.db()?.apply_batch(batch)?;
            true
        };
        self.durable().await?;
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
            let _write = self.lock();
            let mut batch = ::sled::Batch::default();
            for integration in &integrations {
                let k = key(INTEGRATION, integration.id.as_bytes());
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
            self.db()?.apply_batch(batch)?;
        }
        self.durable().await?;
        Ok(())
    }

    async fn health(&self) -> Result<(), String> {
        let db = self.db().map_err(|e| e.to_string())?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            // After a failed write sled refuses every later one until it is reopened; a flush
            // reports that at once (and costs nothing when there is nothing to write).
            db.flush().map_err(|e| StoreError::from(e).to_string())?;
            match free_bytes(&dir) {
                Some(free) if free < MIN_FREE_BYTES => Err(format!(
                    "the disk holding the data directory is full ({free} bytes free)"
                )),
                _ => Ok(()),
            }
        })
        .await
        .map_err(|e| format!("the health check was lost: {e}"))?
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
            let dir = self.dir.clone();
            let opened = tokio::task::spawn_blocking(move || open_db(&dir))
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
        // Like a restart: writes that never reached the disk are gone, so a lease may stand
        // whose attempt already ended. Every lease is due again; an attempt still in flight
        // records its outcome when it ends (at-least-once: it may be sent once more).
        let released = self.recover_leases(Timestamp::now()).await?;
        tracing::warn!(dir = %self.dir.display(), released, "the store was reopened after a write failure; it takes writes again");
        Ok(())
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
        self.db()?
            .insert(key(META, name.as_bytes()), value.as_bytes())?;
        self.durable().await?;
        Ok(())
    }
}

/// Whether a delivery passes every filter (the index chosen covers one of them).
fn matches(filter: &DeliveryFilter, d: &Delivery) -> bool {
    filter.integration.is_none_or(|i| d.integration_id == i)
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

/// Every key that exists because of this delivery, besides its own.
/// The delivery's place in the queue, if it is queued.
fn queue_key(d: &Delivery) -> Option<Vec<u8>> {
    let at = d.queue_time()?;
    matches!(d.status, DeliveryStatus::Pending | DeliveryStatus::Retrying)
        .then(|| key2(QUEUE, &at.0.to_be_bytes(), d.id.as_bytes()))
}

fn derived_keys(d: &Delivery) -> Vec<Vec<u8>> {
    let id = d.id.as_bytes();
    let mut keys = vec![
        key2(BY_INTEGRATION, d.integration_id.as_bytes(), id),
        {
            let mut k = key(BY_EVENT, d.event.as_bytes());
            k.push(0);
            k.extend_from_slice(id);
            k
        },
        key2(BY_STATUS, &[d.status.code()], id),
    ];
    let mut terms: Vec<String> = [&d.customer_email, &d.customer_name]
        .into_iter()
        .flatten()
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    terms.dedup();
    for term in terms {
        let mut k = customer_key_prefix(&term);
        k.extend_from_slice(id);
        keys.push(k);
    }
    keys.extend(queue_key(d));
    if d.lease_until.is_some() {
        keys.push(key(LEASE, id));
    }
    if d.status == DeliveryStatus::Paused {
        keys.push(key2(PAUSED, d.integration_id.as_bytes(), id));
    }
    keys
}

const ACTIVE_PREFIX: &str = "plugin-active:";

fn plugin_prefix(plugin: &str) -> Vec<u8> {
    let mut k = key(PLUGIN_VERSION, plugin.as_bytes());
    k.push(0);
    k
}

fn plugin_version_key(plugin: &str, number: u32) -> Vec<u8> {
    let mut k = plugin_prefix(plugin);
    k.extend_from_slice(&number.to_be_bytes());
    k
}

fn active_key(plugin: &str) -> Vec<u8> {
    key(META, format!("{ACTIVE_PREFIX}{plugin}").as_bytes())
}

fn removed_key(plugin: &str) -> Vec<u8> {
    key(META, format!("plugin-removed:{plugin}").as_bytes())
}

fn customer_key_prefix(term: &str) -> Vec<u8> {
    let mut k = key(BY_CUSTOMER, term.trim().to_lowercase().as_bytes());
    k.push(0);
    k
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    concat(&[prefix], rest)
}

fn concat(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len());
    k.extend_from_slice(a);
    k.extend_from_slice(b);
    k
}

fn key2(prefix: u8, a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + a.len() + b.len());
    k.push(prefix);
    k.extend_from_slice(a);
    k.extend_from_slice(b);
    k
}

/// The delivery or event id that ends an index key.
fn trailing_id(k: &[u8]) -> Uuid {
    let start = k.len().saturating_sub(16);
    Uuid::from_slice(&k[start..]).unwrap_or_default()
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
