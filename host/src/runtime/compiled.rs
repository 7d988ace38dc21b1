//! The precompiled-component cache: native code of every component this engine compiled and
//! loaded, kept in the data directory so that a restart maps it back in instead of compiling
//! again. Compiling a component is the slow step of loading it (a Rust plugin takes tens to
//! hundreds of milliseconds, a 12–18 MB JavaScript or Python component several seconds of CPU
//! and about half a gigabyte of memory); loading a precompiled one takes well under a
//! millisecond.
//!
//! - One file per component, named by the sha256 of the component's bytes, in a directory
//!   named by a sha256 of the engine's compatibility hash (wasmtime's version and every
//!   setting that changes the code it emits). A binary or configuration that compiles
//!   differently uses another directory; the directories of other hashes are removed when
//!   the cache opens.
//! - **Native code is trusted input to wasmtime, so every file is authenticated.** A file is
//!   an HMAC-SHA256 tag, under a key derived from the master key, over the engine directory,
//!   the component digest and the code, followed by the code. A file whose tag does not
//!   verify — planted, restored from elsewhere, damaged, or written under another master key
//!   — is never handed to wasmtime: the component is compiled again and the file replaced.
//!   Write access to the data directory therefore does not become native code execution
//!   without the master key, which is kept outside it. Directories are created `0700` and
//!   files `0600`.
//! - A file is written only after the component loaded and described itself correctly (a
//!   refused upload leaves nothing), whole (a temporary file, synced, then renamed), and
//!   [`CompiledCache::retain`] removes the files of components no longer stored.
//! - The cache is an optimisation: an error opening, reading or writing it is logged and the
//!   component is compiled as without one.

use std::fs;
use std::hash::Hash;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

type Tag = Hmac<Sha256>;
const TAG_LEN: usize = 32;

/// Where compiled components are kept for one engine.
pub(crate) struct CompiledCache {
    dir: PathBuf,
    engine_name: String,
    key: [u8; 32],
}

impl std::fmt::Debug for CompiledCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// How a component was made ready to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compilation {
    /// Compiled from the component's bytes now.
    Compiled,
    /// Loaded from the precompiled cache.
    Precompiled,
}

/// A [`std::hash::Hasher`] feeding sha256, so that the engine's compatibility hash names a
/// directory the same way across Rust releases (`DefaultHasher` may change between them).
struct Sha256Hasher(Sha256);

impl std::hash::Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }
}

impl CompiledCache {
    /// Opens (creating) the cache for `engine` under `root`, with files authenticated under
    /// `key`, and removes what other engines left there.
    pub(crate) fn open(
        root: &Path,
        engine: &Engine,
        key: [u8; 32],
    ) -> std::io::Result<CompiledCache> {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_name = format!("{:x}", hasher.0.finalize())[..16].to_owned();
        let dir = root.join(&engine_name);
        private_dir(&dir)?;
        for entry in fs::read_dir(root)?.flatten() {
            if entry.file_name() != engine_name.as_str()
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
        Ok(CompiledCache {
            dir,
            engine_name,
            key,
        })
    }

    /// The component of `bytes` (whose digest is `sha256:<hex>`): from the cache when it
    /// holds an authentic file for it, else compiled (the caller [`keep`](Self::keep)s it
    /// once it has loaded).
    pub(crate) fn component(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, Compilation)> {
        let file = self.file(digest);
        match fs::read(&file) {
            Ok(contents) => match self.verified(digest, &contents) {
                Some(code) => {
                    // SAFETY: `code` carries a valid tag under a key derived from the master
                    // key, over this engine's name and this component's digest: it is exactly
                    // what `keep` wrote from `Component::serialize` of an engine with this
                    // compatibility hash (see the module docs). wasmtime checks its header and
                    // compatibility again before using it.
                    match unsafe { Component::deserialize(engine, code) } {
                        Ok(component) => return Ok((component, Compilation::Precompiled)),
                        Err(error) => {
                            tracing::warn!(path = %file.display(), error = %format!("{error:#}"), "a precompiled component does not load; compiling it again");
                        }
                    }
                }
                None => {
                    tracing::warn!(path = %file.display(), "a precompiled component is not authentic (damaged, or written under another master key); compiling it again");
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %file.display(), %error, "cannot read a precompiled component; compiling it again");
            }
        }
        Ok((Component::new(engine, bytes)?, Compilation::Compiled))
    }

    /// Keeps the native code of a component that loaded, for the next start.
    pub(crate) fn keep(&self, digest: &str, component: &Component) {
        let file = self.file(digest);
        if let Err(error) = self.write(digest, &file, component) {
            tracing::warn!(path = %file.display(), %error, "cannot keep the compiled component; the next start compiles it again");
        }
    }

    /// Removes the files of every component whose digest is not in `stored`.
    pub(crate) fn retain(&self, stored: &std::collections::HashSet<String>) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".cwasm")) else {
                continue;
            };
            if !stored.contains(&format!("sha256:{hex}")) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join(format!("{hex}.cwasm"))
    }

    fn tag(&self, digest: &str, code: &[u8]) -> Tag {
        let mut tag = Tag::new_from_slice(&self.key).expect("HMAC takes any key length");
        for part in [self.engine_name.as_bytes(), digest.as_bytes()] {
            tag.update(&(part.len() as u64).to_le_bytes());
            tag.update(part);
        }
        tag.update(code);
        tag
    }

    /// The code of a cache file, if its tag verifies.
    fn verified<'a>(&self, digest: &str, contents: &'a [u8]) -> Option<&'a [u8]> {
        if contents.len() < TAG_LEN {
            return None;
        }
        let (tag, code) = contents.split_at(TAG_LEN);
        self.tag(digest, code).verify_slice(tag).ok().map(|()| code)
    }

    fn write(&self, digest: &str, file: &Path, component: &Component) -> std::io::Result<()> {
        let code = component.serialize().map_err(std::io::Error::other)?;
        let tag = self.tag(digest, &code).finalize().into_bytes();
        // Unique per process and write: two loads of one component may write at once.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let temporary = file.with_extension(format!(
            "{}-{}.tmp",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut out = options.open(&temporary)?;
            out.write_all(&tag)?;
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

fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}
