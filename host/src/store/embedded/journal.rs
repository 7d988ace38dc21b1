//! The write-ahead journal in front of redb: what makes a write durable on that engine.
//!
//! A redb commit that syncs (`Durability::Immediate`) writes out every page its transaction
//! changed and syncs the file, holding redb's one write slot throughout, so every write
//! behind it waits: at 1,000 single-event requests a second, these commits kept the slot
//! busy nearly all the time and the acknowledgement's p99 over 5 ms (docs/PERFORMANCE.md).
//! Here every batch is committed to redb without syncing (`Durability::None`) and, in the same
//! critical section, appended to this journal as a record: its sequence number and its key
//! writes as they are. Making writes durable ([`Journal::flush`], the store's group commit)
//! is one append and one `fdatasync` of the journal file, which does not touch redb: writers
//! go on meanwhile. redb itself is made durable by a **checkpoint** every
//! [`CHECKPOINT_EVERY`] (one empty durable commit, which makes every commit before it durable)
//! and when the store closes; journal segments a checkpoint covers are then deleted, so the
//! journal holds a fraction of a second of writes.
//!
//! **Writers and the checkpoint.** A checkpoint's durable commit holds redb's one write slot
//! for milliseconds (it writes out the pages changed since the last one and syncs them: 3–6
//! ms at 1,000 events/s on the benchmark's machine, tens of ms when its disk is busy). A write
//! waiting for the slot inside redb would hold one of the async runtime's few threads all
//! that time, and with both of a 2-core machine's threads held, every request and delivery
//! stalled behind it. So the store's writes on the runtime take the journal's [`gate`]
//! (shared) first, and the checkpoint takes it alone around its durable commit only: a write
//! that arrives meanwhile waits as a task, not as a thread. The new segment is created and
//! synced before it is swapped in, so flushes do not wait for that either.
//!
//! [`gate`]: Journal::gate
//!
//! **Recovery.** Each redb transaction also writes its record's sequence number (table
//! [`JOURNAL_TABLE`]), so after a crash redb's durable state says which record it ends with
//! (redb recovers to its last durable commit, which holds every commit before it and none
//! after). Opening replays the records after that one, in order, then checkpoints. Records
//! are physical (keys and values as written), so replaying them gives exactly the state the
//! process had built. A record cut short by the crash (its length or checksum does not hold)
//! ends its segment: it was never acknowledged, since a flush returns only after the whole
//! append is synced, and nothing after it in that segment was either. Replay goes on with
//! the next segment, if any: one that could not be cut off after a failed append is followed
//! by a segment where those records were written again. A gap in the sequence numbers is
//! corruption: opening fails rather than drop acknowledged writes.
//!
//! Why a journal rather than redb's own durable commits (docs/PERFORMANCE.md, issue 16 part
//! six): at 1,000 events/s the acknowledgement's p50 went from 2.5–3.6 ms to 1.8–2.2 and its
//! p99 from 4.9–8.5 ms to 4.4–5.4, and the CPU per delivery fell 5–10%, because ten
//! checkpoints a second write redb's pages once where every group commit used to.
//!
//! **Files.** Segments sit beside redb's file, named after it (`canopy.redb.journal.<n>`).
//! A checkpoint starts a new segment before its durable commit; every older segment holds
//! records committed before that commit, so it can go once the commit is done. Each segment
//! starts with [`MAGIC`] and the database's own id (kept in [`JOURNAL_TABLE`]), so a segment
//! of another database (left beside a file that was moved away) is never replayed into this
//! one (it is left in place, and named in the log). A clean close checkpoints and removes the
//! journal, so a directory moved or copied while the server is stopped is redb's file alone.
//!
//! **Failures.** A failed append is cut off again (the file truncated back to its last
//! synced length) and its records are kept in memory for the next flush, so the journal never
//! has a gap. If even the truncation fails, the journal is *broken*: flushes and writes fail
//! until a checkpoint has started a new segment and made redb durable past the damaged one,
//! or until the store is reopened, whose replay ends that segment at the damage (nothing after
//! it was acknowledged). A checkpoint that cannot start a new segment (a full disk) still
//! makes redb durable, and reports the failure.
//!
//! Segment deletions are not synced to the directory: a deleted segment that comes back
//! after a power loss holds only records redb's durable state already has (skipped), or
//! damage, which ends only that segment.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::engine::Batch;
use crate::store::StoreError;

/// How often a checkpoint makes redb durable (when something was written since the last).
/// Short, because a checkpoint holds redb's write slot while it writes out the pages changed
/// since the last one and syncs them: at 1,000 events/s, every 100 ms it took about 6 ms;
/// every second, about 36 ms, and the acknowledgement's p99 went from under 5 ms to 7–8 ms
/// (every 25 or 50 ms gained nothing over 100).
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// Where redb keeps the database's journal id and the sequence number of its last record.
const JOURNAL_TABLE: redb::TableDefinition<&str, &[u8]> =
    redb::TableDefinition::new("canopy-journal");
/// The start of every segment, before the database's id.
const MAGIC: &[u8; 16] = b"canopy-journal-1";
const HEADER_BYTES: usize = MAGIC.len() + 16;
/// A record's frame: payload length and CRC-32 of the payload, both little-endian `u32`.
const FRAME_BYTES: usize = 8;
/// Records replayed per redb transaction at open.
const REPLAY_CHUNK_BYTES: usize = 8 << 20;

/// The main table's definition, shared with the engine.
type Table = redb::TableDefinition<'static, &'static [u8], &'static [u8]>;

pub struct Journal {
    dir: PathBuf,
    /// Segment file names: this, then the segment's number.
    prefix: String,
    /// The database's id, written at the head of each segment.
    id: [u8; 16],
    /// Records applied and not yet written, in order. Held across a write's redb commit, so
    /// records are numbered and queued in the order redb applied them.
    pending: Mutex<Pending>,
    /// The segment being written. Held across a flush's write and sync.
    segment: Mutex<Segment>,
    /// The number of the segment a failed append left damaged (it could not be cut off), or
    /// 0: writes and flushes fail until a checkpoint has covered that segment.
    broken: AtomicU64,
    /// Held alone by a checkpoint around its durable commit, shared by the store's writes on
    /// the runtime (module docs, "Writers and the checkpoint").
    gate: Arc<tokio::sync::RwLock<()>>,
}

struct Pending {
    next_seq: u64,
    records: Vec<u8>,
    /// Something was applied since the last checkpoint started.
    changed: bool,
}

struct Segment {
    file: File,
    number: u64,
    /// Bytes written and synced.
    synced: u64,
}

/// What opening found in the journal.
pub struct Replayed {
    pub records: u64,
}

impl Journal {
    /// Opens the journal of the redb database `db` at `file`: replays what redb's durable
    /// state lacks, checkpoints, and starts a new segment.
    pub fn open(
        db: &redb::Database,
        file: &Path,
        table: Table,
    ) -> Result<(Journal, Replayed), StoreError> {
        let (dir, prefix) = named_after(file)?;
        let (id, applied) = identity(db)?;
        let segments = segments(&dir, &prefix)?;
        let mut replay = Replay {
            db,
            table,
            last: applied,
            chunk: Vec::new(),
            chunk_bytes: 0,
            records: 0,
        };
        // This database's segments, removed once replayed.
        let mut ours = Vec::new();
        for (i, (number, path)) in segments.iter().enumerate() {
            let bytes =
                std::fs::read(path).map_err(|e| io(&format!("reading {}", path.display()), e))?;
            if bytes.len() < HEADER_BYTES {
                // The newest segment, cut short while it was created: it holds nothing.
                if i + 1 == segments.len() && MAGIC.starts_with(&bytes[..bytes.len().min(16)]) {
                    ours.push(path);
                    continue;
                }
                return Err(corrupt(format!(
                    "{} is not a journal segment",
                    path.display()
                )));
            }
            if bytes[..MAGIC.len()] != MAGIC[..] {
                return Err(corrupt(format!(
                    "{} is not a journal segment",
                    path.display()
                )));
            }
            if bytes[MAGIC.len()..HEADER_BYTES] != id[..] {
                tracing::warn!(segment = %path.display(), "a journal segment of another database is ignored (and left in place)");
                continue;
            }
            ours.push(path);
            let mut at = HEADER_BYTES;
            while at < bytes.len() {
                let Some((seq, ops, len)) = read_record(&bytes[at..]) else {
                    // Cut short by a crash during its append, or the append that failed and
                    // could not be cut off: never acknowledged, nor anything after it here.
                    // The next segment, if any, goes on (the sequence check sees a loss).
                    tracing::info!(segment = %path.display(), "a journal segment ends in a record that was never completed");
                    break;
                };
                replay.record(seq, ops, path, *number)?;
                at += len;
            }
        }
        replay.commit()?;
        let (last, records) = (replay.last, replay.records);
        durable_commit(db)?;
        for path in ours {
            remove(path)?;
        }
        let number = segments.last().map_or(1, |(n, _)| n + 1);
        let segment = Segment::create(&dir, &prefix, number, &id)?;
        Ok((
            Journal {
                dir,
                prefix,
                id,
                pending: Mutex::new(Pending {
                    next_seq: last + 1,
                    records: Vec::new(),
                    changed: false,
                }),
                segment: Mutex::new(segment),
                broken: AtomicU64::new(0),
                gate: Arc::default(),
            },
            Replayed { records },
        ))
    }

    /// Commits `batch` to redb (not yet durable) and queues its record.
    pub fn apply(
        &self,
        db: &redb::Database,
        table: Table,
        batch: &Batch,
    ) -> Result<(), StoreError> {
        if self.broken.load(Ordering::SeqCst) != 0 {
            return Err(broken());
        }
        let mut tx = db.begin_write().map_err(fail)?;
        tx.set_durability(redb::Durability::None).map_err(fail)?;
        // After the write slot: waiting for it (behind a checkpoint) does not hold up flushes.
        let mut pending = lock(&self.pending);
        let seq = pending.next_seq;
        write_ops(&tx, table, batch.ops(), seq)?;
        tx.commit().map_err(fail)?;
        encode_record(&mut pending.records, seq, batch);
        pending.next_seq += 1;
        pending.changed = true;
        Ok(())
    }

    /// Makes every write applied before the call durable: appends the queued records to the
    /// segment and syncs it.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut segment = lock(&self.segment);
        if self.broken.load(Ordering::SeqCst) != 0 {
            return Err(broken());
        }
        let records = std::mem::take(&mut lock(&self.pending).records);
        if records.is_empty() {
            return Ok(());
        }
        let written = segment
            .file
            .write_all(&records)
            .and_then(|()| segment.file.sync_data());
        match written {
            Ok(()) => {
                segment.synced += records.len() as u64;
                Ok(())
            }
            Err(error) => {
                // Cut the append off again and keep its records for the next flush, ahead of
                // those queued meanwhile: the journal never skips a record.
                if segment.file.set_len(segment.synced).is_err() {
                    self.broken.store(segment.number, Ordering::SeqCst);
                }
                let mut pending = lock(&self.pending);
                let later = std::mem::replace(&mut pending.records, records);
                pending.records.extend_from_slice(&later);
                Err(io("writing the journal", error))
            }
        }
    }

    /// What a write on the runtime's threads holds (shared) while it writes, so that it waits
    /// for a checkpoint as a task (module docs, "Writers and the checkpoint").
    pub fn gate(&self) -> Arc<tokio::sync::RwLock<()>> {
        self.gate.clone()
    }

    /// Makes redb durable up to now and deletes the segments that covers; nothing to do when
    /// nothing was written since the last checkpoint. Blocking: not on an async runtime's
    /// threads (the store runs it on a thread of its own).
    pub fn checkpoint(&self, db: &redb::Database) -> Result<(), StoreError> {
        let broken = self.broken.load(Ordering::SeqCst) != 0;
        if !std::mem::replace(&mut lock(&self.pending).changed, false) && !broken {
            return Ok(());
        }
        let done = self.checkpoint_now(db);
        if done.is_err() {
            lock(&self.pending).changed = true;
        }
        done
    }

    fn checkpoint_now(&self, db: &redb::Database) -> Result<(), StoreError> {
        // A new segment first: everything in the older ones was committed to redb before the
        // durable commit below, which makes it durable there. It is created (and synced)
        // before it is swapped in, so flushes meanwhile go on into the current one; only this
        // thread starts segments while the store is open.
        let number = lock(&self.segment).number + 1;
        let rotated = Segment::create(&self.dir, &self.prefix, number, &self.id)
            .map(|next| std::mem::replace(&mut *lock(&self.segment), next).number);
        // Even without a new segment (the disk may be full), redb is made durable: once the
        // writes holding the gate are done, and those arriving meanwhile wait for it.
        {
            let _gate = self.gate.blocking_write();
            durable_commit(db)?;
        }
        let covered = rotated?;
        for (number, path) in segments(&self.dir, &self.prefix)? {
            if number <= covered && self.owns(&path)? {
                remove(&path)?;
            }
        }
        // Writes go on once the damaged segment is covered (a flush may have damaged the new
        // one meanwhile: that one stays broken until the next checkpoint).
        let damaged = self.broken.load(Ordering::SeqCst);
        if damaged != 0 && damaged <= covered {
            let _ = self
                .broken
                .compare_exchange(damaged, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
        Ok(())
    }

    /// At close: makes redb durable and removes this database's segments.
    pub fn close(&self, db: &redb::Database) -> Result<(), StoreError> {
        durable_commit(db)?;
        let current = lock(&self.segment).number;
        for (number, path) in segments(&self.dir, &self.prefix)? {
            if number <= current && self.owns(&path)? {
                remove(&path)?;
            }
        }
        Ok(())
    }

    /// Whether the segment at `path` is this database's (its header names it); a file too
    /// short for a header is not.
    fn owns(&self, path: &Path) -> Result<bool, StoreError> {
        let mut header = [0u8; HEADER_BYTES];
        match File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header)) {
            Ok(()) => Ok(header[MAGIC.len()..] == self.id[..]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(io(&format!("reading {}", path.display()), e)),
        }
    }
}

impl Segment {
    /// A new segment file with its header, on disk (the file and its name) before it is used.
    fn create(dir: &Path, prefix: &str, number: u64, id: &[u8; 16]) -> Result<Segment, StoreError> {
        let path = dir.join(format!("{prefix}{number}"));
        let what = format!("creating {}", path.display());
        // A file by this name can only be what an earlier attempt at this segment left (a
        // number is never used twice: opening starts past every segment found).
        remove(&path)?;
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(&what, e))?;
        let mut header = Vec::with_capacity(HEADER_BYTES);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(id);
        let created = file
            .write_all(&header)
            .and_then(|()| file.sync_data())
            .and_then(|()| File::open(dir)?.sync_all());
        if let Err(error) = created {
            let _ = std::fs::remove_file(&path);
            return Err(io(&what, error));
        }
        Ok(Segment {
            file,
            number,
            synced: HEADER_BYTES as u64,
        })
    }
}

/// Records read at open and applied to redb in transactions of [`REPLAY_CHUNK_BYTES`].
struct Replay<'a> {
    db: &'a redb::Database,
    table: Table,
    /// The last record in redb (durable, or applied by this replay).
    last: u64,
    chunk: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    chunk_bytes: usize,
    records: u64,
}

impl Replay<'_> {
    fn record(
        &mut self,
        seq: u64,
        ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        path: &Path,
        segment: u64,
    ) -> Result<(), StoreError> {
        if seq <= self.last {
            return Ok(()); // redb has it already
        }
        if seq != self.last + 1 {
            return Err(corrupt(format!(
                "the journal skips from record {} to {seq} (segment {segment}, {})",
                self.last,
                path.display()
            )));
        }
        self.chunk_bytes += ops
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum::<usize>();
        self.chunk.extend(ops);
        self.last = seq;
        self.records += 1;
        if self.chunk_bytes >= REPLAY_CHUNK_BYTES {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write().map_err(fail)?;
        tx.set_durability(redb::Durability::None).map_err(fail)?;
        let ops = self.chunk.iter().map(|(k, v)| (&k[..], v.as_deref()));
        write_ops(&tx, self.table, ops, self.last)?;
        tx.commit().map_err(fail)?;
        self.chunk.clear();
        self.chunk_bytes = 0;
        Ok(())
    }
}

/// Writes `ops` to the main table in `tx`, and `seq` as the last record redb holds.
fn write_ops<'a>(
    tx: &redb::WriteTransaction,
    table: Table,
    ops: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    seq: u64,
) -> Result<(), StoreError> {
    let mut main = tx.open_table(table).map_err(fail)?;
    for (k, v) in ops {
        match v {
            Some(v) => main.insert(k, v).map(drop),
            None => main.remove(k).map(drop),
        }
        .map_err(fail)?;
    }
    tx.open_table(JOURNAL_TABLE)
        .map_err(fail)?
        .insert("applied", &seq.to_le_bytes()[..])
        .map_err(fail)?;
    Ok(())
}

/// The database's journal id (made, durably, the first time) and the sequence number of the
/// last record its durable state holds.
fn identity(db: &redb::Database) -> Result<([u8; 16], u64), StoreError> {
    use redb::ReadableTable;
    let tx = db.begin_write().map_err(fail)?;
    let (id, applied) = {
        let mut table = tx.open_table(JOURNAL_TABLE).map_err(fail)?;
        let id = match table.get("id").map_err(fail)? {
            Some(v) => v.value().try_into().ok(),
            None => None,
        };
        let id: [u8; 16] = match id {
            Some(id) => id,
            None => {
                let mut id = [0u8; 16];
                getrandom::fill(&mut id).map_err(|e| {
                    StoreError::Backend(format!("no randomness for the journal id: {e}"))
                })?;
                table.insert("id", &id[..]).map_err(fail)?;
                id
            }
        };
        let applied = match table.get("applied").map_err(fail)? {
            Some(v) => u64::from_le_bytes(
                v.value()
                    .try_into()
                    .map_err(|_| corrupt("the journal's last record number".into()))?,
            ),
            None => 0,
        };
        (id, applied)
    };
    tx.commit().map_err(fail)?;
    Ok((id, applied))
}

/// Where the journal of the redb file `file` is, and how its segments are named: beside it,
/// `<file name>.journal.<n>`.
fn named_after(file: &Path) -> Result<(PathBuf, String), StoreError> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let name = file
        .file_name()
        .ok_or_else(|| StoreError::Backend(format!("{} is not a file", file.display())))?;
    Ok((dir, format!("{}.journal.", name.to_string_lossy())))
}

/// The journal segment files of the redb file `file` (whichever database wrote them).
pub(super) fn segments_of(file: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let (dir, prefix) = named_after(file)?;
    Ok(segments(&dir, &prefix)?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

/// The segments of the journal named `prefix` in `dir`, by number.
fn segments(dir: &Path, prefix: &str) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&format!("listing {}", dir.display()), e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io(&format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let number = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(number) = number {
            found.push((number, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Appends `batch` as a record numbered `seq`: the frame (payload length, CRC-32), then the
/// payload: the number, and per write a tag (1: insert, 0: remove), the key's length and the
/// key, and for an insert the value's length and the value (lengths `u32`, little-endian).
fn encode_record(out: &mut Vec<u8>, seq: u64, batch: &Batch) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_BYTES]);
    out.extend_from_slice(&seq.to_le_bytes());
    for (k, v) in batch.ops() {
        out.push(u8::from(v.is_some()));
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        if let Some(v) = v {
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
    }
    let payload = &out[start + FRAME_BYTES..];
    let (len, crc) = (payload.len() as u32, crc32fast::hash(payload));
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The record at the start of `bytes`: its number, its writes and its whole length; `None`
/// when it is cut short or its checksum does not hold.
#[allow(clippy::type_complexity)]
fn read_record(bytes: &[u8]) -> Option<(u64, Vec<(Vec<u8>, Option<Vec<u8>>)>, usize)> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let payload = bytes.get(FRAME_BYTES..FRAME_BYTES.checked_add(len)?)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let mut r = Reader(payload);
    let seq = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let mut ops = Vec::new();
    while !r.0.is_empty() {
        let insert = match r.take(1)?[0] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let key = r.sized()?.to_vec();
        let value = if insert {
            Some(r.sized()?.to_vec())
        } else {
            None
        };
        ops.push((key, value));
    }
    Some((seq, ops, FRAME_BYTES + len))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn sized(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(n)
    }
}

/// An empty durable commit: redb makes the non-durable commits before it durable with it.
pub(super) fn durable_commit(db: &redb::Database) -> Result<(), StoreError> {
    let mut tx = db.begin_write().map_err(fail)?;
    tx.set_durability(redb::Durability::Immediate)
        .map_err(fail)?;
    tx.commit().map_err(fail)
}

fn remove(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io(&format!("removing {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io(what: &str, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!(
        "the data directory cannot be written ({what}): {e}"
    ))
}

fn broken() -> StoreError {
    StoreError::Unavailable(
        "the store's journal could not be written, and takes no writes until it is checkpointed"
            .into(),
    )
}

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt {
        what: "journal",
        detail,
    }
}

/// A redb failure as the store reports it (see `engine::fail`).
fn fail(e: impl Into<redb::Error>) -> StoreError {
    super::engine::fail(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: Table = redb::TableDefinition::new("canopy");

    fn batch(ops: &[(&str, Option<&str>)]) -> Batch {
        let mut batch = Batch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch
    }

    fn open(file: &Path) -> (redb::Database, Journal, u64) {
        let db = redb::Database::create(file).expect("redb");
        let tx = db.begin_write().unwrap();
        tx.open_table(TABLE).unwrap();
        tx.commit().unwrap();
        let (journal, replayed) = Journal::open(&db, file, TABLE).expect("journal");
        (db, journal, replayed.records)
    }

    fn read(db: &redb::Database, k: &str) -> Option<String> {
        use redb::ReadableDatabase;
        let tx = db.begin_read().unwrap();
        let table = tx.open_table(TABLE).unwrap();
        table
            .get(k.as_bytes())
            .unwrap()
            .map(|v| String::from_utf8(v.value().to_vec()).unwrap())
    }

    /// What a crash leaves of `dir`: its files as they are on disk now, in a new directory
    /// (the open database and journal are left as they are, not closed).
    fn crash_copy(dir: &Path) -> tempfile::TempDir {
        let copy = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
        copy
    }

    /// A database in a new directory with one write (`key` = `value`), flushed.
    fn one_write(key: &str, value: &str) -> (tempfile::TempDir, redb::Database, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let (db, journal, _) = open(&dir.path().join("canopy.redb"));
        journal
            .apply(&db, TABLE, &batch(&[(key, Some(value))]))
            .unwrap();
        journal.flush().unwrap();
        (dir, db, journal)
    }

    /// What opening the journal of the database in `dir` refuses.
    fn refused(dir: &Path) -> StoreError {
        let file = dir.join("canopy.redb");
        let db = redb::Database::create(&file).unwrap();
        Journal::open(&db, &file, TABLE).err().expect("refused")
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        segments_of(&dir.join("canopy.redb")).unwrap()
    }

    #[test]
    fn a_record_reads_back_and_one_cut_short_or_altered_does_not() {
        let mut out = Vec::new();
        encode_record(
            &mut out,
            7,
            &batch(&[("a", Some("1")), ("b", None), ("", Some(""))]),
        );
        let (seq, ops, len) = read_record(&out).expect("a whole record");
        assert_eq!((seq, len), (7, out.len()));
        let ops: Vec<_> = ops
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        assert_eq!(
            ops,
            [
                (&b"a"[..], Some(&b"1"[..])),
                (&b"b"[..], None),
                (&b""[..], Some(&b""[..]))
            ]
        );
        for cut in 0..out.len() {
            assert!(read_record(&out[..cut]).is_none(), "cut at {cut}");
        }
        for at in 0..out.len() {
            let mut altered = out.clone();
            altered[at] ^= 0x40;
            assert!(read_record(&altered).is_none(), "byte {at} altered");
        }
    }

    #[test]
    fn flushed_writes_survive_a_crash_before_any_checkpoint_and_are_replayed_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("canopy.redb");
        let (db, journal, _) = open(&file);
        journal
            .apply(&db, TABLE, &batch(&[("a", Some("1")), ("b", Some("2"))]))
            .unwrap();
        journal
            .apply(&db, TABLE, &batch(&[("a", Some("3")), ("b", None)]))
            .unwrap();
        journal.flush().unwrap();
        // Applied, never flushed: not acknowledged, so it may be lost.
        journal
            .apply(&db, TABLE, &batch(&[("c", Some("4"))]))
            .unwrap();

        let crashed = crash_copy(dir.path());
        let (copy, _, replayed) = open(&crashed.path().join("canopy.redb"));
        assert_eq!(replayed, 2, "both flushed records are replayed");
        assert_eq!(read(&copy, "a").as_deref(), Some("3"));
        assert_eq!(read(&copy, "b"), None);
        assert_eq!(read(&copy, "c"), None);
        drop(copy);
        // Replayed, then checkpointed: a second open finds nothing to replay.
        let (again, _, replayed) = open(&crashed.path().join("canopy.redb"));
        assert_eq!(replayed, 0);
        assert_eq!(read(&again, "a").as_deref(), Some("3"));
        assert_eq!(
            segment_files(crashed.path()).len(),
            1,
            "only the new, empty segment"
        );
    }

    #[test]
    fn a_checkpoint_makes_redb_durable_and_removes_the_segments_it_covers() {
        let (dir, db, journal) = one_write("a", "1");
        let before = segment_files(dir.path());
        journal.checkpoint(&db).unwrap();
        let after = segment_files(dir.path());
        assert_eq!(after.len(), 1);
        assert!(
            !before.contains(&after[0]),
            "a new segment replaced the old one"
        );
        // After the checkpoint redb holds the write by itself: a crash now replays nothing.
        journal
            .apply(&db, TABLE, &batch(&[("b", Some("2"))]))
            .unwrap();
        journal.flush().unwrap();
        let crashed = crash_copy(dir.path());
        let (copy, _, replayed) = open(&crashed.path().join("canopy.redb"));
        assert_eq!(replayed, 1, "only the write after the checkpoint");
        assert_eq!(read(&copy, "a").as_deref(), Some("1"));
        assert_eq!(read(&copy, "b").as_deref(), Some("2"));
        // Nothing new since: no checkpoint work, the segment stays.
        journal.checkpoint(&db).unwrap();
        journal.checkpoint(&db).unwrap();
        assert_eq!(segment_files(dir.path()).len(), 1);
    }

    #[test]
    fn a_record_cut_short_ends_its_segment_and_the_next_one_goes_on_without_a_gap() {
        let (dir, _db, _journal) = one_write("a", "1");
        let crashed = crash_copy(dir.path());
        let segment = segment_files(crashed.path()).pop().unwrap();
        // An append the crash cut short.
        let mut cut = Vec::new();
        encode_record(&mut cut, 2, &batch(&[("z", Some("never acknowledged"))]));
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes.extend_from_slice(&cut[..cut.len() - 3]);
        std::fs::write(&segment, &bytes).unwrap();
        let damaged = crash_copy(crashed.path());
        let header = bytes[..HEADER_BYTES].to_vec();
        let (copy, _, replayed) = open(&crashed.path().join("canopy.redb"));
        assert_eq!(replayed, 1);
        assert_eq!(read(&copy, "a").as_deref(), Some("1"));
        assert_eq!(read(&copy, "z"), None);
        drop(copy);

        // The same damage followed by a later segment: the failed append written again
        // there (record 2), then record 3. Both are replayed.
        let again = crash_copy(damaged.path());
        let mut next = header.clone();
        encode_record(&mut next, 2, &batch(&[("y", Some("2"))]));
        encode_record(&mut next, 3, &batch(&[("x", Some("3"))]));
        std::fs::write(again.path().join("canopy.redb.journal.99"), next).unwrap();
        let (copy, _, replayed) = open(&again.path().join("canopy.redb"));
        assert_eq!(replayed, 3);
        assert_eq!(read(&copy, "z"), None);
        assert_eq!(read(&copy, "y").as_deref(), Some("2"));
        assert_eq!(read(&copy, "x").as_deref(), Some("3"));
        drop(copy);

        // A later segment that does not go on where the damaged one stopped: acknowledged
        // writes would be dropped, so the store does not open.
        let mut next = header;
        encode_record(&mut next, 3, &batch(&[("x", Some("3"))]));
        std::fs::write(damaged.path().join("canopy.redb.journal.99"), next).unwrap();
        let error = refused(damaged.path());
        assert!(
            error.to_string().contains("skips from record 1 to 3"),
            "{error}"
        );
    }

    /// A failed append that could not be cut off leaves its segment damaged: writes and
    /// flushes are refused until a checkpoint covers that segment, and one that damaged the
    /// segment a checkpoint has just started is not covered by that checkpoint.
    #[test]
    fn a_damaged_segment_takes_writes_again_only_once_a_checkpoint_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let (db, journal, _) = open(&dir.path().join("canopy.redb"));
        let write = |v: &str| journal.apply(&db, TABLE, &batch(&[("a", Some(v))]));
        write("1").unwrap();
        let current = lock(&journal.segment).number;
        // The segment being written is damaged.
        journal.broken.store(current, Ordering::SeqCst);
        assert!(write("2").is_err() && journal.flush().is_err());
        journal.checkpoint(&db).unwrap();
        write("2").unwrap();
        journal.flush().unwrap();

        // The segment the next checkpoint starts is damaged while that checkpoint runs.
        let next = lock(&journal.segment).number + 1;
        journal.broken.store(next, Ordering::SeqCst);
        journal.checkpoint(&db).unwrap();
        assert_eq!(lock(&journal.segment).number, next);
        assert!(
            write("3").is_err(),
            "still broken: the checkpoint covered the one before"
        );
        journal.checkpoint(&db).unwrap();
        write("3").unwrap();
        journal.flush().unwrap();
        assert_eq!(read(&db, "a").as_deref(), Some("3"));
    }

    #[test]
    fn a_gap_in_the_records_is_refused_and_another_databases_segment_is_left_alone() {
        let (dir, db, journal) = one_write("a", "1");
        let crashed = crash_copy(dir.path());
        let segment = segment_files(crashed.path()).pop().unwrap();
        let mut bytes = std::fs::read(&segment).unwrap();
        encode_record(&mut bytes, 5, &batch(&[("b", Some("2"))]));
        std::fs::write(&segment, &bytes).unwrap();
        let error = refused(crashed.path());
        assert!(
            error.to_string().contains("skips from record 1 to 5"),
            "{error}"
        );

        // A segment of another database (its id differs), left beside this file.
        let (other, _odb, _ojournal) = one_write("x", "other");
        let foreign = segment_files(other.path()).pop().unwrap();
        let placed = dir.path().join("canopy.redb.journal.1000");
        std::fs::copy(&foreign, &placed).unwrap();
        drop((journal, db));
        let (db, _, replayed) = open(&dir.path().join("canopy.redb"));
        assert_eq!(
            replayed, 0,
            "the closed database replays nothing, and not the other's"
        );
        assert_eq!(read(&db, "x"), None);
        assert!(placed.exists(), "left in place");
    }
}
