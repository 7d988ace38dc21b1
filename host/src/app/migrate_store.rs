//! `canopy migrate-store`: moves an install from the embedded store (a data directory) into
//! an empty PostgreSQL database, record by record as it is kept (see
//! [`crate::store::transfer`]), then checks that the database holds as many of each record
//! as the data directory. With `--to redb` or `--to sled` it moves the data directory's
//! store onto that engine instead ([`move_engine`]).
//!
//! The server must be stopped first (the embedded engine's lock refuses a second process, so
//! a running server is reported, not raced). The data directory is opened as a start of this
//! release opens it — a directory of an older format is upgraded, the leases of the stopped
//! server end — and otherwise only read: it stays usable by this release. A move that fails
//! part-way leaves a partial database: drop it, create it again and run the command again
//! (the command refuses a database that holds data, Canopy's or another application's, so
//! nothing is ever merged).

use std::path::{Path, PathBuf};

use super::STORE_DIR;
use crate::store::transfer::{Counts, Item};
use crate::store::{EmbeddedStore, EngineKind, EngineMove, PgStore, StoreError, redacted};

/// Events per transaction: big enough that the round trips do not dominate, small enough
/// that a transaction stays short.
const EVENTS_PER_BATCH: usize = 200;
/// Other records (shops, integrations, plugin components…) per transaction.
const RECORDS_PER_BATCH: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("there is no Canopy data directory at {0}")]
    NoDataDir(PathBuf),
    #[error(
        "the data directory {0} cannot be opened (a server still running on it holds it; stop it first): {1}"
    )]
    Source(PathBuf, StoreError),
    #[error(
        "the database at {0} already holds data; migrate-store moves an install into an empty database"
    )]
    NotEmpty(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// What the data directory holds and what was read or written differ (a record the
    /// move could not reach, a write that went missing): the move is not complete.
    #[error("the move is incomplete; the data directory and {what} hold different counts: {}", differences.join("; "))]
    CountsDiffer {
        what: &'static str,
        differences: Vec<String>,
    },
}

/// How far the move is: events moved out of the total (records other than events go first,
/// before the first report).
pub trait Progress {
    fn start(&self, events: u64);
    fn moved(&self, events: u64);
}

/// Moves the store of the data directory `from` into the PostgreSQL database at `to`; what
/// was moved, counted on both sides.
pub async fn migrate_store(
    from: &Path,
    to: &str,
    progress: &dyn Progress,
) -> Result<Counts, MigrateError> {
    let dir = from.join(STORE_DIR);
    if !dir.is_dir() {
        return Err(MigrateError::NoDataDir(from.to_owned()));
    }
    let source = EmbeddedStore::open(&dir).map_err(|e| MigrateError::Source(from.to_owned(), e))?;
    if PgStore::holds_other_tables(to).await? {
        return Err(MigrateError::NotEmpty(redacted(to)));
    }
    let target = PgStore::connect(to).await?;
    if !target.is_empty().await? {
        return Err(MigrateError::NotEmpty(redacted(to)));
    }
    let expected = source.counts()?;
    progress.start(expected.events);

    let mut batch: Vec<Item> = Vec::new();
    let mut events = 0;
    let mut moved = Counts::default();
    for item in source.export()? {
        let item = item?;
        let is_event = matches!(item, Item::Event { .. });
        moved.add(&item);
        batch.push(item);
        let full = if is_event {
            batch.len() >= EVENTS_PER_BATCH
        } else {
            batch.len() >= RECORDS_PER_BATCH
        };
        if full {
            target.import(&batch).await?;
            events += batch
                .iter()
                .filter(|i| matches!(i, Item::Event { .. }))
                .count() as u64;
            batch.clear();
            progress.moved(events);
        }
    }
    target.import(&batch).await?;
    progress.moved(moved.events);

    for (what, counts) in [
        ("what was read", moved),
        ("the database", target.counts().await?),
    ] {
        let differences = expected.differences(&counts);
        if !differences.is_empty() {
            return Err(MigrateError::CountsDiffer { what, differences });
        }
    }
    Ok(expected)
}

/// Moves the store of the data directory `from` onto the engine `to`, in place (see
/// [`EmbeddedStore::move_to`]).
pub fn move_engine(from: &Path, to: EngineKind) -> Result<EngineMove, MigrateError> {
    let dir = from.join(STORE_DIR);
    if EngineKind::found_in(&dir).is_none() {
        return Err(MigrateError::NoDataDir(from.to_owned()));
    }
    let source = EmbeddedStore::open(&dir).map_err(|e| MigrateError::Source(from.to_owned(), e))?;
    Ok(source.move_to(to)?)
}
