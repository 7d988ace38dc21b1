//! The precompiled-component cache: native code of every component this engine compiled,
//! kept in the data directory so that a restart maps it back in instead of compiling again.
//! Compiling a component is the slow step of loading it (a Rust plugin takes tens of
//! milliseconds, a 12–18 MB JavaScript or Python component several seconds of CPU and about
//! half a gigabyte of memory); mapping a precompiled one takes about a millisecond.
//!
//! - One file per component, named by the sha256 of the component's bytes, in a directory
//!   named by the engine's compatibility hash (wasmtime's version and every setting that
//!   changes the code it emits). A binary or configuration that compiles differently uses
//!   another directory; the directories of other hashes are removed when the cache opens.
//! - Files are written whole (a temporary file, synced, then renamed), so a crash leaves
//!   either no file or a complete one.
//! - Mapping native code back is `unsafe` in wasmtime: the bytes must be what this engine
//!   wrote. The cache lives in the private data directory beside the master key (whoever can
//!   write there can already read every secret), and wasmtime still checks each file's header
//!   and compatibility on load. A file that does not load is compiled again and replaced.
//! - The cache is an optimisation: an error reading or writing it is logged and the
//!   component is compiled as without one. Versions stay while their plugin version is stored
//!   (one file per uploaded version; rollbacks load at once).

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components are kept for one engine.
#[derive(Debug)]
pub(crate) struct CompiledCache {
    dir: PathBuf,
}

/// How a component was made ready to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compilation {
    /// Compiled from the component's bytes now.
    Compiled,
    /// Mapped from the precompiled cache.
    Precompiled,
}

impl CompiledCache {
    /// Opens (creating) the cache for `engine` under `root`, and removes what other engines
    /// left there.
    pub(crate) fn open(root: &Path, engine: &Engine) -> std::io::Result<CompiledCache> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let name = format!("{:016x}", hasher.finish());
        let dir = root.join(&name);
        fs::create_dir_all(&dir)?;
        for entry in fs::read_dir(root)?.flatten() {
            if entry.file_name() != name.as_str()
                && entry.path().is_dir()
                && let Err(error) = fs::remove_dir_all(entry.path())
            {
                tracing::warn!(path = %entry.path().display(), %error, "cannot remove another engine's compiled components");
            }
        }
        // Half-written files of a process that died while writing.
        for entry in fs::read_dir(&dir)?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(CompiledCache { dir })
    }

    /// The component of `bytes` (whose digest is `sha256:<hex>`): mapped from the cache when
    /// it holds it, else compiled and stored.
    pub(crate) fn component(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, Compilation)> {
        let file = self.file(digest);
        if file.is_file() {
            // SAFETY: the file was written by `store` below from `Component::serialize` of an
            // engine with this compatibility hash, into the private data directory (see the
            // module docs); wasmtime checks its header and compatibility before using it.
            match unsafe { Component::deserialize_file(engine, &file) } {
                Ok(component) => return Ok((component, Compilation::Precompiled)),
                Err(error) => {
                    tracing::warn!(path = %file.display(), error = %format!("{error:#}"), "a precompiled component does not load; compiling it again");
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(error) = self.store(&file, &component) {
            tracing::warn!(path = %file.display(), %error, "cannot keep the compiled component; the next start compiles it again");
        }
        Ok((component, Compilation::Compiled))
    }

    fn file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join(format!("{hex}.cwasm"))
    }

    fn store(&self, file: &Path, component: &Component) -> std::io::Result<()> {
        let code = component.serialize().map_err(std::io::Error::other)?;
        // Unique per process and load: two loads of one component may write at once.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let temporary = file.with_extension(format!(
            "{}-{}.tmp",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut out = fs::File::create(&temporary)?;
            out.write_all(&code)?;
            out.sync_all()?;
            fs::rename(&temporary, file)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        written
    }
}
