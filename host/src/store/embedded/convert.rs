//! Moving a data directory's store from one engine to the other (`canopy migrate-store --to
//! redb`, or `--to sled`): both engines hold the same keys, so every key is copied as it is.
//!
//! The source is opened as a start of this release opens it (an older format is upgraded,
//! the leases of the stopped server end), then copied into the new engine beside it: redb
//! into `canopy.redb.partial`, sled into the directory itself, where its files are ignored
//! while redb's file is there ([`EngineKind::found_in`]); what an unfinished move left there
//! (redb's partial file and its journal, or sled's files) is removed first. The copy is made
//! durable in the engine's own files (no journal left to replay: redb's journal is named after
//! its file, which the switch renames) and counted (every kind of record, and every key)
//! before anything is switched. The switch is one
//! rename — redb's file into place, or out of the way — so a crash leaves either the old
//! engine in use or the new one complete. The old engine's files are then set aside in a
//! `<engine>-backup-<unix time>` directory beside them, for the user to remove.

use std::path::{Path, PathBuf};

use super::engine::{Batch, Engine, EngineKind, REDB_FILE};
use super::export::counts_in;
use super::{EmbeddedStore, StoreError};
use crate::store::transfer::Counts;

/// Keys per batch of the copy.
const COPY_CHUNK: usize = 1_000;

/// What a move between engines did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineMove {
    pub from: EngineKind,
    pub to: EngineKind,
    /// What was moved (the same on both sides: the move fails otherwise).
    pub counts: Counts,
    /// Keys copied.
    pub keys: u64,
    /// Where the old engine's files now are.
    pub backup: PathBuf,
}

impl EmbeddedStore {
    /// Moves this store (opened as a start opens it, by a process that is the only one on
    /// the directory) onto the engine `to`, in place; its engine is closed before the
    /// switch.
    pub fn move_to(self, to: EngineKind) -> Result<EngineMove, StoreError> {
        let (from, dir) = (self.kind, self.dir.clone());
        let dir = dir.as_path();
        if from == to {
            return Err(StoreError::Rejected(format!(
                "the store in {} is already on {to}",
                dir.display()
            )));
        }
        // Only its engine is kept (and closed before the switch).
        let (counts, source) = (self.counts()?, self.db()?);
        drop(self);

        let partial = dir.join(format!("{REDB_FILE}.partial"));
        let target = match to {
            EngineKind::Redb => {
                // What an earlier move that did not finish left: the file and its journal.
                remove_if_there(&partial)?;
                for segment in super::journal::segments_of(&partial)? {
                    remove_if_there(&segment)?;
                }
                Engine::open_redb(&partial)?
            }
            EngineKind::Sled => {
                // What an earlier move that did not finish left (redb's file was still in
                // place, so it was never used).
                for file in EngineKind::sled_files(dir).map_err(io)? {
                    remove_if_there(&file)?;
                }
                Engine::open(dir, EngineKind::Sled)?
            }
        };
        let mut keys = 0u64;
        let mut batch = Batch::default();
        // Every key: they all start with an ASCII letter ([`super::keys`]).
        for item in source.range(Vec::new()..vec![u8::MAX]) {
            let (k, v) = item?;
            batch.insert(k, v);
            keys += 1;
            if keys.is_multiple_of(COPY_CHUNK as u64) {
                target.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        target.apply_batch(batch)?;
        // Durable in redb's file itself: the file is renamed below, and a journal left by a
        // close that failed would be named after its old name, never replayed.
        target.checkpoint()?;
        let copied = counts_in(&target)?;
        let target_keys = target.range(Vec::new()..vec![u8::MAX]).count() as u64;
        if copied != counts || target_keys != keys {
            return Err(StoreError::Backend(format!(
                "the copy holds different counts ({}; {target_keys} of {keys} keys): nothing \
                 was switched",
                counts.differences(&copied).join("; ")
            )));
        }
        // The old engine's files go to the backup whole, with nothing left in a journal.
        source.checkpoint()?;
        drop((source, target));

        let backup = dir.join(format!(
            "{from}-backup-{}",
            crate::model::Timestamp::now().0 / 1000
        ));
        std::fs::create_dir(&backup).map_err(io)?;
        match to {
            EngineKind::Redb => {
                // The switch: from here on the directory opens on redb.
                std::fs::rename(&partial, dir.join(REDB_FILE)).map_err(io)?;
                sync_dir(dir)?;
                // The move is done; sled's files are only set aside. One that cannot be is
                // left where it is, ignored beside redb's file (a move back removes it).
                for file in EngineKind::sled_files(dir).unwrap_or_default() {
                    let name = file
                        .file_name()
                        .expect("a file in the directory")
                        .to_owned();
                    if let Err(error) = std::fs::rename(&file, backup.join(name)) {
                        tracing::warn!(file = %file.display(), %error, "a sled file was not set aside");
                    }
                }
            }
            EngineKind::Sled => {
                // sled's new files are on disk before the switch makes them the store.
                sync_dir(dir)?;
                // The switch: without redb's file the directory opens on sled.
                std::fs::rename(dir.join(REDB_FILE), backup.join(REDB_FILE)).map_err(io)?;
                sync_dir(dir)?;
            }
        }
        Ok(EngineMove {
            from,
            to,
            counts,
            keys,
            backup,
        })
    }
}

fn remove_if_there(path: &Path) -> Result<(), StoreError> {
    let removed = match path.is_dir() {
        true => std::fs::remove_dir_all(path),
        false => std::fs::remove_file(path),
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
        _ => Ok(()),
    }
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("moving the store between engines: {e}"))
}
