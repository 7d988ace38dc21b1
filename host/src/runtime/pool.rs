//! Warm plugin instances, kept between calls of the same integration.
//!
//! A fresh instance per call is the simplest isolation, but a Rust guest spends most of a
//! fresh call starting up (instantiation plus first-touch of its heap), several times the
//! cost of the mapping itself. So a call made for an integration may reuse an idle
//! instance, under three rules that keep the isolation guarantee:
//!
//! 1. an instance only ever serves one (plugin version, integration) pair, so one
//!    integration's event data can never reach another integration's request;
//! 2. an instance is dropped after any error (trap, limit, invalid output);
//! 3. an instance is recycled after `calls_per_instance` calls.
//!
//! The trade-off: a plugin may keep state between calls of the same integration (e.g. a
//! cache). Plugins must be pure functions of their input; state they keep can only leak
//! data within one integration, which already owns all of it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::plugin::Instance;

type Key = (u64, Box<str>);

pub(crate) struct WarmPool {
    capacity: usize,
    idle: Mutex<Idle>,
}

struct Idle {
    by_key: HashMap<Key, Vec<Instance>>,
    count: usize,
}

impl WarmPool {
    pub(crate) fn new(capacity: usize) -> WarmPool {
        WarmPool {
            capacity,
            idle: Mutex::new(Idle {
                by_key: HashMap::new(),
                count: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn take(&self, generation: u64, scope: &str) -> Option<Instance> {
        let mut idle = self.lock();
        let key = (generation, Box::from(scope));
        let list = idle.by_key.get_mut(&key)?;
        let instance = list.pop();
        if list.is_empty() {
            idle.by_key.remove(&key);
        }
        if instance.is_some() {
            idle.count -= 1;
        }
        instance
    }

    /// Keeps `instance` for later, unless the pool is full or its plugin version was retired
    /// (checked under the lock, so an eviction cannot miss it).
    pub(crate) fn put(
        &self,
        generation: u64,
        scope: &str,
        instance: Instance,
        retired: &AtomicBool,
    ) {
        let dropped;
        {
            let mut idle = self.lock();
            if idle.count >= self.capacity || retired.load(Ordering::SeqCst) {
                dropped = Some(instance);
            } else {
                idle.count += 1;
                idle.by_key
                    .entry((generation, Box::from(scope)))
                    .or_default()
                    .push(instance);
                dropped = None;
            }
        }
        // Tear the instance down outside the lock.
        drop(dropped);
    }

    /// Drops every idle instance of a plugin version.
    pub(crate) fn evict(&self, generation: u64) {
        let evicted: Vec<Vec<Instance>> = {
            let mut idle = self.lock();
            let keys: Vec<Key> = idle
                .by_key
                .keys()
                .filter(|(g, _)| *g == generation)
                .cloned()
                .collect();
            let evicted: Vec<_> = keys.iter().filter_map(|k| idle.by_key.remove(k)).collect();
            idle.count -= evicted.iter().map(Vec::len).sum::<usize>();
            evicted
        };
        drop(evicted);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().count
    }
}
