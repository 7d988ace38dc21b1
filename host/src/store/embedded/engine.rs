//! The key-value engine under the embedded store: **redb** (the engine of a new data
//! directory) or **sled** (the engine of every data directory releases before redb made, kept
//! working; `--store sled` chooses it for a new one). Both hold the same keys
//! ([`keys`](super::keys)) in one ordered keyspace, and the store above uses only what the two
//! do alike: reads of a key, ordered ranges (forwards and backwards), atomic batches, single
//! writes, and a flush that makes every write applied before it durable.
//!
//! Writes are applied at once and made durable by [`Engine::flush`], which the store's group
//! commit shares among its callers. redb commits each write without syncing and appends it to
//! a write-ahead journal in the same step; `flush` syncs the journal, and a checkpoint every
//! [`CHECKPOINT_EVERY`] makes redb itself durable and empties the journal ([`journal`](super::journal)).
//! sled buffers its log and `flush` syncs it. Writes nobody flushes (a token's last use) are
//! on disk within [`CHECKPOINT_EVERY`] on redb and [`FLUSH_EVERY`] on sled (its own thread).
//!
//! Which engine a directory holds is read from its files ([`EngineKind::found_in`]): redb keeps
//! one file, [`REDB_FILE`] (and its journal segments beside it); sled keeps `conf`, `db`,
//! `blobs/` and `snap.*`. redb was the candidate `scripts/bench engines` measured best for the
//! store's scans (no tombstones; less than half sled's CPU on the store's own writes). End to
//! end (docs/PERFORMANCE.md) the server on redb delivers about 1.3–1.4× as much per second for
//! about 0.7× the CPU. With the journal, the acknowledgement of single events at 1,000/s has
//! a p99 of 4.4–5.4 ms (sled 2.8–3.6); before it, a durable commit held redb's one writer for
//! its page writes and sync at every group commit, and that p99 was 4.9–8.5 ms. So new data
//! directories are on redb. `canopy migrate-store --to redb` moves a sled directory over (and
//! `--to sled` back).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTableMetadata};

use super::journal::{CHECKPOINT_EVERY, Journal};
use crate::store::StoreError;

/// A key or value read from the engine (sled's cheap shared buffer; redb's are copied in).
pub type Bytes = ::sled::IVec;

/// redb's file in the store directory.
pub const REDB_FILE: &str = "canopy.redb";
/// What sled keeps in the store directory.
const SLED_FILES: [&str; 3] = ["conf", "db", "blobs"];
/// The one table of a redb store: the whole keyspace.
const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("canopy");
/// sled's page cache. Its default (1 GiB) is far more than a delivery queue needs; 16 MiB
/// instead of 64 lowered the peak RSS while 100,000 events were ingested (docs/PERFORMANCE.md).
const SLED_CACHE_BYTES: u64 = 16 << 20;
/// redb's page cache (its default is 1 GiB, too).
const REDB_CACHE_BYTES: usize = 32 << 20;
/// How long an open waits for sled's lock on its directory ([`open_sled`]).
const SLED_LOCK_PATIENCE: Duration = Duration::from_secs(2);
/// How soon a write nobody flushes is on disk anyway, on sled.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// The engines the embedded store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Redb,
    Sled,
}

impl EngineKind {
    /// The engine for a new data directory when none is asked for.
    pub const NEW: EngineKind = EngineKind::Redb;

    /// `redb` or `sled`, as `--store` and `migrate-store --to` name them.
    pub fn parse(name: &str) -> Option<EngineKind> {
        match name.trim() {
            "redb" => Some(EngineKind::Redb),
            "sled" => Some(EngineKind::Sled),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Redb => "redb",
            EngineKind::Sled => "sled",
        }
    }

    /// The engine whose files are in `dir`: `None` for a new or empty directory. redb's file
    /// decides when both are there (a move between engines switches by renaming it).
    pub fn found_in(dir: &Path) -> Option<EngineKind> {
        if dir.join(REDB_FILE).is_file() {
            Some(EngineKind::Redb)
        } else if SLED_FILES.iter().any(|f| dir.join(f).exists()) {
            Some(EngineKind::Sled)
        } else {
            None
        }
    }

    /// sled's files in `dir` (what a move to redb sets aside, or a failed move to sled
    /// leaves behind).
    pub fn sled_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if SLED_FILES.contains(&name.as_ref()) || name.starts_with("snap.") {
                files.push(dir.join(name.as_ref()));
            }
        }
        Ok(files)
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Opens (or creates) the sled database in `dir`. sled locks the directory while it is open,
/// and a handle of this process that has just closed may still hold that lock for a moment:
/// sled's IO threads drop their share of the database after they announce a write complete,
/// so a flush (or the last handle's drop) can return before the lock is released. An open
/// that finds the directory locked tries again for up to [`SLED_LOCK_PATIENCE`] (as sled's own
/// tests wait for the lock) before it reports it locked (another process on the directory).
fn open_sled(dir: &Path) -> Result<::sled::Db, ::sled::Error> {
    let started = Instant::now();
    loop {
        let opened = ::sled::Config::new()
            .path(dir)
            .cache_capacity(SLED_CACHE_BYTES)
            .flush_every_ms(Some(FLUSH_EVERY.as_millis() as u64))
            .open();
        match opened {
            Err(::sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && started.elapsed() < SLED_LOCK_PATIENCE =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// An open engine: a cheap handle, shared by clones. The engine closes (releasing its lock on
/// the directory) when the last clone goes.
#[derive(Clone)]
pub enum Engine {
    Sled(::sled::Db),
    Redb(Arc<RedbHandle>),
}

/// A redb database and its write-ahead journal.
pub struct Redb {
    db: redb::Database,
    journal: Journal,
}

/// The store's handle on a redb database and its checkpoint thread. When it goes, the thread
/// is stopped and joined first, so the database is closed by then (a reopen right after finds
/// its file free).
pub struct RedbHandle {
    redb: Arc<Redb>,
    flusher: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Drop for RedbHandle {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.flusher.take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

impl Redb {
    /// The table, as the last commit left it (a read transaction's snapshot).
    fn table(&self) -> Result<redb::ReadOnlyTable<&'static [u8], &'static [u8]>, StoreError> {
        self.db
            .begin_read()
            .map_err(fail)?
            .open_table(TABLE)
            .map_err(fail)
    }
}

impl Drop for Redb {
    fn drop(&mut self) {
        // As sled does when its last handle goes: durable, and the journal emptied. If that
        // fails, the next open replays the journal.
        if let Err(error) = self.journal.close(&self.db) {
            tracing::warn!(%error, "the store could not be checkpointed as it closed; its journal is replayed at the next start");
        }
    }
}

/// Writes applied together, in order, atomically: all of them or none. Keys and values are
/// copied in once, as [`Bytes`], which sled's batch takes without copying again.
#[derive(Default)]
pub struct Batch {
    ops: Vec<(Bytes, Option<Bytes>)>,
}

impl Batch {
    pub fn insert(&mut self, k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) {
        self.ops
            .push((Bytes::from(k.as_ref()), Some(Bytes::from(v.as_ref()))));
    }

    pub fn remove(&mut self, k: impl AsRef<[u8]>) {
        self.ops.push((Bytes::from(k.as_ref()), None));
    }

    /// The writes in order: a key, and its new value (`None`: removed).
    pub fn ops(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.ops.iter().map(|(k, v)| (&k[..], v.as_deref()))
    }

    /// Whether the batch writes or removes a key of the kind `tag` (a key's first byte).
    pub fn touches(&self, tag: u8) -> bool {
        self.ops.iter().any(|(k, _)| k.first() == Some(&tag))
    }
}

/// Key-value pairs in key order (or reversed), read as the iterator goes. On redb it reads
/// one snapshot; on sled, each step reads what is there when it gets to it.
pub struct Iter(Box<dyn DoubleEndedIterator<Item = Result<(Bytes, Bytes), StoreError>> + Send>);

impl Iterator for Iter {
    type Item = Result<(Bytes, Bytes), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back()
    }
}

impl Iter {
    pub fn keys(self) -> impl DoubleEndedIterator<Item = Result<Bytes, StoreError>> {
        self.map(|item| item.map(|(k, _)| k))
    }

    pub fn values(self) -> impl DoubleEndedIterator<Item = Result<Bytes, StoreError>> {
        self.map(|item| item.map(|(_, v)| v))
    }
}

impl Engine {
    /// Opens the engine `kind` in `dir` (creating the directory and the store when new).
    /// Either engine locks what it opens: a second process on the same data fails here.
    pub fn open(dir: &Path, kind: EngineKind) -> Result<Engine, StoreError> {
        let cannot = |e: &dyn std::fmt::Display| {
            StoreError::Backend(format!("cannot open {}: {e}", dir.display()))
        };
        match kind {
            EngineKind::Sled => open_sled(dir).map(Engine::Sled).map_err(|e| cannot(&e)),
            EngineKind::Redb => {
                std::fs::create_dir_all(dir).map_err(|e| cannot(&e))?;
                Engine::open_redb(&dir.join(REDB_FILE))
            }
        }
    }

    /// Opens (or creates) the redb database at `file`, with its table, replays its journal
    /// (`journal`), and starts the thread that checkpoints it.
    pub fn open_redb(file: &Path) -> Result<Engine, StoreError> {
        let cannot = |e: redb::Error| match e {
            // A full disk (the repair after a crash writes), or the file still held by the
            // engine being replaced: it may open later ([`Store::recover`] tries again
            // rather than giving up).
            redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseAlreadyOpen => {
                StoreError::Unavailable(format!("cannot open {}: {e}", file.display()))
            }
            other => StoreError::Backend(format!("cannot open {}: {other}", file.display())),
        };
        let db = redb::Database::builder()
            .set_cache_size(REDB_CACHE_BYTES)
            .create(file)
            .map_err(|e| cannot(e.into()))?;
        let tx = db.begin_write().map_err(|e| cannot(e.into()))?;
        tx.open_table(TABLE).map_err(|e| cannot(e.into()))?;
        tx.commit().map_err(|e| cannot(e.into()))?;
        let (journal, replayed) = Journal::open(&db, file, TABLE)?;
        if replayed.records > 0 {
            tracing::info!(records = replayed.records, file = %file.display(), "writes the store had not checkpointed were replayed from its journal");
        }
        let redb = Arc::new(Redb { db, journal });
        let (stop, stopped) = mpsc::channel::<()>();
        let checkpointed = redb.clone();
        let thread = std::thread::Builder::new()
            .name("canopy-checkpoint".into())
            .spawn(move || {
                // Whether the last checkpoint failed: a failure is logged once, not ten times a
                // second while the disk stays full (the store reports it through `/healthz`).
                let mut failing = false;
                // Until the handle goes (the sender is dropped).
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    match checkpointed.journal.checkpoint(&checkpointed.db) {
                        Ok(()) => failing = false,
                        Err(error) => {
                            if !failing {
                                tracing::warn!(%error, "the store's checkpoint failed");
                            }
                            failing = true;
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Engine::Redb(Arc::new(RedbHandle {
            redb,
            flusher: Some((stop, thread)),
        })))
    }

    pub fn get(&self, k: impl AsRef<[u8]>) -> Result<Option<Bytes>, StoreError> {
        match self {
            Engine::Sled(db) => Ok(db.get(k)?),
            Engine::Redb(handle) => {
                let value = handle.redb.table()?.get(k.as_ref()).map_err(fail)?;
                Ok(value.map(|v| Bytes::from(v.value())))
            }
        }
    }

    pub fn contains_key(&self, k: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        Ok(self.get(k)?.is_some())
    }

    /// One key written on its own (atomically, like a batch of one).
    pub fn insert(&self, k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.insert(k, v);
        self.apply_batch(batch)
    }

    pub fn apply_batch(&self, batch: Batch) -> Result<(), StoreError> {
        match self {
            Engine::Sled(db) => {
                let mut b = ::sled::Batch::default();
                for (k, v) in batch.ops {
                    match v {
                        Some(v) => b.insert(k, v),
                        None => b.remove(k),
                    }
                }
                Ok(db.apply_batch(b)?)
            }
            Engine::Redb(handle) => {
                let r = &handle.redb;
                r.journal.apply(&r.db, TABLE, &batch)
            }
        }
    }

    /// The keys from `range.start` up to (not including) `range.end`.
    pub fn range(&self, range: Range<Vec<u8>>) -> Iter {
        if range.start >= range.end {
            return Iter(Box::new(std::iter::empty()));
        }
        match self {
            Engine::Sled(db) => Iter(Box::new(db.range(range).map(|i| Ok(i?)))),
            Engine::Redb(handle) => {
                let opened = handle.redb.table().and_then(|table| {
                    table
                        .range::<&[u8]>(range.start.as_slice()..range.end.as_slice())
                        .map_err(fail)
                });
                match opened {
                    Ok(items) => Iter(Box::new(items.map(|item| {
                        item.map(|(k, v)| (Bytes::from(k.value()), Bytes::from(v.value())))
                            .map_err(fail)
                    }))),
                    Err(error) => Iter(Box::new(std::iter::once(Err(error)))),
                }
            }
        }
    }

    /// The keys that start with `prefix`.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        let prefix = prefix.as_ref();
        match self {
            Engine::Sled(db) => Iter(Box::new(db.scan_prefix(prefix).map(|i| Ok(i?)))),
            Engine::Redb(_) => self.range(prefix.to_vec()..super::keys::prefix_end(prefix)),
        }
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        match self {
            Engine::Sled(db) => Ok(db.is_empty()),
            Engine::Redb(handle) => Ok(handle.redb.table()?.len().map_err(fail)? == 0),
        }
    }

    /// What a write on the runtime's threads holds while it writes, so that it waits for a
    /// checkpoint without blocking its thread (redb; sled has none): [`Journal::gate`].
    pub fn checkpoint_gate(&self) -> Option<Arc<tokio::sync::RwLock<()>>> {
        match self {
            Engine::Sled(_) => None,
            Engine::Redb(handle) => Some(handle.redb.journal.gate()),
        }
    }

    /// The redb database itself, for tests that hold its write slot as a checkpoint does.
    #[cfg(test)]
    pub fn redb(&self) -> Option<&redb::Database> {
        match self {
            Engine::Sled(_) => None,
            Engine::Redb(handle) => Some(&handle.redb.db),
        }
    }

    /// Makes every write applied before the call durable (blocking: the caller runs it off
    /// the async threads).
    pub fn flush(&self) -> Result<(), StoreError> {
        match self {
            Engine::Sled(db) => db.flush().map(drop).map_err(StoreError::from),
            Engine::Redb(handle) => handle.redb.journal.flush(),
        }
    }

    /// Makes every write applied before the call durable in the engine's own files, with no
    /// journal to replay: what a file about to be renamed needs (`migrate-store`), since its
    /// journal segments are named after it. redb: a durable commit; sled: a flush.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        match self {
            Engine::Sled(db) => db.flush().map(drop).map_err(StoreError::from),
            Engine::Redb(handle) => super::journal::durable_commit(&handle.redb.db),
        }
    }
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

/// A redb failure as the store reports it: an I/O error (a full disk) means the data
/// directory cannot be written now — redb then refuses every write until it is reopened
/// (`PreviousIo`), as sled does.
pub(super) fn fail(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(e) => {
            StoreError::Unavailable(format!("the data directory cannot be written: {e}"))
        }
        redb::Error::PreviousIo => StoreError::Unavailable(
            "the data directory could not be written, and the store must be reopened".into(),
        ),
        other => StoreError::Backend(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{SLED_LOCK_PATIENCE, open_sled};

    /// A sled directory whose last handle is still letting go of its lock opens once the lock
    /// is free; one held for longer than the patience is reported locked.
    #[test]
    fn a_sled_open_waits_for_a_lock_being_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = open_sled(dir.path()).unwrap();
        let path = dir.path().to_owned();
        let opening = std::thread::spawn(move || open_sled(&path).map(|_| ()));
        // The open has begun, and finds the directory locked, before the lock goes.
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
        opening
            .join()
            .unwrap()
            .expect("opens once the lock is released");

        let _held = open_sled(dir.path()).unwrap();
        let started = Instant::now();
        let error = open_sled(dir.path()).expect_err("a lock still held is reported");
        assert!(started.elapsed() >= SLED_LOCK_PATIENCE);
        assert!(
            error.to_string().contains("could not acquire lock"),
            "{error}"
        );
    }
}
