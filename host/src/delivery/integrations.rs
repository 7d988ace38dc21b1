//! Integrations as attempts use them, kept in memory between deliveries: the record, the
//! configuration its plugin is given, and its secrets opened.
//!
//! Every attempt needs all three. Reading the record and opening its secrets for each one
//! cost a read and a decode on the embedded store, a round trip on PostgreSQL, and a
//! decryption per secret, for something that changes rarely. An entry is current until the
//! store raises [`Signals::integrations_changed`](crate::store::Signals::integrations_changed),
//! which it does after every write of an integration record, whoever made it: the API, an
//! outcome that counts against the destination (or disables it), a rekey, a shop's deletion,
//! a reopen after a write failure. On PostgreSQL the other nodes' writes arrive as
//! notifications, and the listener raises the signal when its connection drops. Whatever the
//! signal says, an entry is used for [`FRESH_FOR`] at most and then read again, so a
//! notification lost while a listener reconnects leaves an entry stale for that long at most.
//!
//! The whole cache is dropped when the signal moves: integration writes are rare next to
//! deliveries. The exception is a destination that keeps failing: each of its outcomes
//! rewrites its record, and so drops every integration's entry (on every node), which is what
//! every attempt cost before this cache. Keeping the others would need the signal to name the
//! integration.
//!
//! Opened secrets stay in this process's memory, where the master key that opens them already
//! is; they are never written anywhere or shown ([`SecretValue`]'s `Debug` and `Display`
//! never print the value).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::crypto::seal::MasterKey;
use crate::crypto::secret::SecretValue;
use crate::runtime::PluginConfig;
use crate::store::{Integration, Store, StoreError};

/// How long an entry is used before it is read again, whatever the signal says.
pub const FRESH_FOR: Duration = Duration::from_secs(5);
/// Entries kept at most; past it the cache starts afresh (a bound, not an expected size:
/// one entry per integration with deliveries under way).
const CAPACITY: usize = 4096;

/// An integration, ready for attempts.
pub struct Ready {
    pub integration: Integration,
    /// What its plugin is given: settings and secret names.
    pub config: Arc<PluginConfig>,
    /// Its secrets opened, or why one cannot be (which fails the attempt, as it names it).
    pub secrets: Result<HashMap<String, SecretValue>, String>,
    /// When it was read.
    read_at: Instant,
}

impl Ready {
    pub fn new(integration: Integration, key: &MasterKey) -> Ready {
        Ready {
            config: Arc::new(super::worker::plugin_config(&integration)),
            secrets: super::worker::open_secrets(key, &integration),
            integration,
            read_at: Instant::now(),
        }
    }
}

/// The cache, shared by the workers.
#[derive(Default)]
pub struct Integrations {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// The store's integration generation the entries were read under.
    generation: u64,
    by_id: HashMap<Uuid, Arc<Ready>>,
}

impl Integrations {
    /// The integration `id` of `shop`, from memory when nothing has changed since it was
    /// read; `None` when the store has no such integration.
    pub async fn get(
        &self,
        store: &dyn Store,
        key: &MasterKey,
        shop: &str,
        id: Uuid,
    ) -> Result<Option<Arc<Ready>>, StoreError> {
        // Read before the record: a write after this point moves it, and what is read below
        // is then not kept.
        let generation = store.signals().integrations_generation();
        {
            let mut entries = self.lock();
            if entries.generation != generation {
                entries.by_id.clear();
                entries.generation = generation;
            }
            if let Some(ready) = entries.by_id.get(&id)
                && ready.integration.shop == shop
                && ready.read_at.elapsed() < FRESH_FOR
            {
                return Ok(Some(ready.clone()));
            }
        }
        let Some(integration) = store.integration(shop, id).await? else {
            return Ok(None);
        };
        let ready = Arc::new(Ready::new(integration, key));
        let mut entries = self.lock();
        if entries.generation == generation
            && store.signals().integrations_generation() == generation
        {
            if entries.by_id.len() >= CAPACITY {
                entries.by_id.clear();
            }
            entries.by_id.insert(id, ready.clone());
        }
        Ok(Some(ready))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
