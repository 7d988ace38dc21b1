//! Which embedded engine could replace sled (issue 16): the sled store's own write pattern,
//! key for key, replayed on sled and on two candidates, in one process, with the CPU each
//! delivery costs and the ratio against sled.
//!
//! The pattern is `host/src/store/sled` as it stands, for one webhook integration:
//!
//! - **ingest**, in batches of 100 events, one atomic write and one flush per batch: per event
//!   its record (`E`), its JSON (`B`), its age entry (`R`), its delivery (`D`), the queue entry
//!   (`Q`) and the five log-filter entries (`d`, `i`, `e`, `s`, `c`), and the queue head read;
//! - **claim**, in rounds of up to 32 (the workers): the queue's due entries from its head, and
//!   per delivery its record, the integration and the event's JSON read;
//! - **outcomes**, one atomic write and one flush per round: per delivery its record rewritten,
//!   the attempt inserted, the queue entry removed, the status entry moved; per round the
//!   integration, its statistics bucket and its last outcomes written.
//!
//! Each engine writes the same keys and values, applies without syncing and makes durable
//! at the flush (sled: `flush`; fjall: the journal synced; redb: non-durable commits, then an
//! empty durable commit, which makes them all durable). The queue scan starts at the head
//! the previous round left, as an LSM-tree needs (its removed keys stay as tombstones until
//! compaction); sled and redb are given the same start.
//!
//! The CPU figure is this process's (every thread, the engines' own included) from before the
//! first write until 2 s after the last, so that work an engine defers is counted.

use std::time::{Duration, Instant};

use crate::pipeline::cpu_time;

/// Deliveries per engine (`CANOPY_BENCH_ENGINE_DELIVERIES` to change).
const DELIVERIES: u64 = 200_000;
const INGEST_BATCH: u64 = 100;
const WORKERS: u64 = 32;
/// After the last write: background work still done for the load is counted.
const SETTLE: Duration = Duration::from_secs(2);

type Write = Vec<(Vec<u8>, Option<Vec<u8>>)>;
/// Opens an engine on a new directory.
type Open = fn(&std::path::Path) -> Box<dyn Engine>;

trait Engine {
    fn name(&self) -> &'static str;
    /// One atomic write (`None`: remove the key), not yet durable.
    fn write(&self, ops: Write);
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// Up to `limit` keys in `start..end`.
    fn keys(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<Vec<u8>>;
    /// Every write so far on disk.
    fn flush(&self);
}

struct Sled(sled::Db);

impl Engine for Sled {
    fn name(&self) -> &'static str {
        "sled 0.34"
    }
    fn write(&self, ops: Write) {
        let mut batch = sled::Batch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.0.apply_batch(batch).expect("sled write");
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key).expect("sled read").map(|v| v.to_vec())
    }
    fn keys(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<Vec<u8>> {
        self.0
            .range(start..end)
            .keys()
            .take(limit)
            .map(|k| k.expect("sled scan").to_vec())
            .collect()
    }
    fn flush(&self) {
        self.0.flush().expect("sled flush");
    }
}

struct Fjall(fjall::Database, fjall::Keyspace);

impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall 3"
    }
    fn write(&self, ops: Write) {
        let mut batch = self.0.batch();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(&self.1, k, v),
                None => batch.remove(&self.1, k),
            }
        }
        batch.commit().expect("fjall write");
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.1.get(key).expect("fjall read").map(|v| v.to_vec())
    }
    fn keys(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<Vec<u8>> {
        self.1
            .range(start..end)
            .take(limit)
            .map(|kv| kv.key().expect("fjall scan").to_vec())
            .collect()
    }
    fn flush(&self) {
        self.0
            .persist(fjall::PersistMode::SyncData)
            .expect("fjall flush");
    }
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("canopy");

struct Redb(redb::Database);

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb 4"
    }
    fn write(&self, ops: Write) {
        let mut tx = self.0.begin_write().expect("redb transaction");
        tx.set_durability(redb::Durability::None)
            .expect("redb durability");
        {
            let mut table = tx.open_table(TABLE).expect("redb table");
            for (k, v) in ops {
                match v {
                    Some(v) => {
                        table
                            .insert(k.as_slice(), v.as_slice())
                            .expect("redb write");
                    }
                    None => {
                        table.remove(k.as_slice()).expect("redb remove");
                    }
                }
            }
        }
        tx.commit().expect("redb commit");
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        use redb::ReadableDatabase;
        let tx = self.0.begin_read().expect("redb read");
        let table = tx.open_table(TABLE).expect("redb table");
        table
            .get(key)
            .expect("redb read")
            .map(|v| v.value().to_vec())
    }
    fn keys(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<Vec<u8>> {
        use redb::ReadableDatabase;
        let tx = self.0.begin_read().expect("redb read");
        let table = tx.open_table(TABLE).expect("redb table");
        table
            .range(start..end)
            .expect("redb scan")
            .take(limit)
            .map(|kv| kv.expect("redb scan").0.value().to_vec())
            .collect()
    }
    fn flush(&self) {
        // An empty durable commit makes the non-durable ones before it durable.
        self.0
            .begin_write()
            .expect("redb transaction")
            .commit()
            .expect("redb flush");
    }
}

pub fn run() {
    let deliveries: u64 = std::env::var("CANOPY_BENCH_ENGINE_DELIVERIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n >= INGEST_BATCH)
        .unwrap_or(DELIVERIES);
    let scratch = tempfile::tempdir().expect("temp dir");
    println!(
        "\nengines: the sled store's keys for {deliveries} deliveries (ingest in batches of \
         {INGEST_BATCH}, claims and outcomes in rounds of {WORKERS}, a flush after each write)"
    );
    println!("  engine        CPU per delivery   × sled   wall per delivery   on disk after");
    let openers: [Open; 3] = [
        |dir| {
            Box::new(Sled(
                sled::Config::new()
                    .path(dir)
                    .cache_capacity(16 << 20)
                    .flush_every_ms(Some(200))
                    .open()
                    .expect("sled"),
            ))
        },
        |dir| {
            let db = fjall::Database::builder(dir)
                .manual_journal_persist(true)
                .open()
                .expect("fjall");
            let keyspace = db
                .keyspace("canopy", fjall::KeyspaceCreateOptions::default)
                .expect("fjall keyspace");
            Box::new(Fjall(db, keyspace))
        },
        |dir| {
            std::fs::create_dir_all(dir).expect("redb dir");
            Box::new(Redb(
                redb::Database::create(dir.join("canopy.redb")).expect("redb"),
            ))
        },
    ];
    let mut sled_us = None;
    for (i, open) in openers.iter().enumerate() {
        let dir = scratch.path().join(i.to_string());
        let engine = open(&dir);
        let (cpu, wall) = replay(engine.as_ref(), deliveries);
        let name = engine.name();
        drop(engine);
        let us = cpu.as_secs_f64() * 1e6 / deliveries as f64;
        let base = *sled_us.get_or_insert(us);
        println!(
            "  {name:<12} {us:>10.1} µs      {:>5.2}×   {:>10.1} µs       {:>6.0} MB",
            us / base,
            wall.as_secs_f64() * 1e6 / deliveries as f64,
            size(&dir) as f64 / 1e6
        );
    }
}

/// Runs the pattern; returns the CPU (with [`SETTLE`]) and wall time it took.
fn replay(engine: &dyn Engine, deliveries: u64) -> (Duration, Duration) {
    const SHOP: &[u8] = b"bench-shop\0";
    const INTEGRATION: [u8; 16] = [7; 16];
    let value = |len: usize| vec![b'x'; len];
    let integration_key = [b"I", SHOP, &INTEGRATION].concat();
    engine.write(vec![(integration_key.clone(), Some(value(600)))]);
    engine.flush();

    let me = std::process::id().to_string();
    let (cpu, started) = (cpu_time(&me), Instant::now());
    let mut head = [b"Q".as_slice(), &INTEGRATION].concat();
    let end = [b"Q".as_slice(), &INTEGRATION, &[0xff; 8]].concat();
    let (mut ingested, mut delivered) = (0u64, 0u64);
    while delivered < deliveries {
        let mut ops = Vec::new();
        for _ in 0..INGEST_BATCH {
            // Time-ordered ids, as UUIDv7: ms (one event each, so that a queue entry never
            // sorts before the head an earlier round left), then random bits.
            let ms = 1_700_000_000_000u64 + ingested;
            let mut event = [0u8; 16];
            event[..8].copy_from_slice(&ms.to_be_bytes());
            event[8..].copy_from_slice(&ingested.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
            let (delivery, due) = (delivery_of(event), ms.to_be_bytes());
            let index = |parts: &[&[u8]]| (parts.concat(), Some(Vec::new()));
            ops.push(([b"E".as_slice(), &event].concat(), Some(value(300))));
            ops.push(([b"B".as_slice(), &event].concat(), Some(value(1_000))));
            ops.push(index(&[b"R", &due, &event]));
            ops.push(([b"D".as_slice(), &delivery].concat(), Some(value(400))));
            ops.push(index(&[b"Q", &INTEGRATION, &due, &delivery]));
            ops.push(index(&[b"d", SHOP, &delivery]));
            ops.push(index(&[b"i", &INTEGRATION, &delivery]));
            ops.push(index(&[b"e", SHOP, b"seeds.earned\0", &delivery]));
            ops.push(index(&[b"s", SHOP, b"pending", &delivery]));
            ops.push(index(&[b"c", SHOP, b"ana@example.com\0", &delivery]));
            ingested += 1;
        }
        engine.get(&[b"n".as_slice(), &INTEGRATION].concat());
        engine.write(ops);
        engine.flush();

        let mut left = INGEST_BATCH;
        while left > 0 {
            let due = engine.keys(&head, &end, left.min(WORKERS) as usize);
            assert!(!due.is_empty(), "{}: the queue lost entries", engine.name());
            let mut ops = Vec::new();
            for entry in &due {
                let delivery = &entry[entry.len() - 16..];
                let record = [b"D", delivery].concat();
                assert!(
                    engine.get(&record).is_some(),
                    "{}: a delivery is missing",
                    engine.name()
                );
                assert!(engine.get(&integration_key).is_some());
                let event = delivery_of(delivery.try_into().expect("16 bytes"));
                assert!(engine.get(&[b"B".as_slice(), &event].concat()).is_some());
                ops.push((record, Some(value(420))));
                ops.push((
                    [b"A", delivery, &1u32.to_be_bytes()].concat(),
                    Some(value(500)),
                ));
                ops.push((entry.clone(), None));
                ops.push(([b"s", SHOP, b"pending", delivery].concat(), None));
                ops.push((
                    [b"s", SHOP, b"delivered", delivery].concat(),
                    Some(Vec::new()),
                ));
            }
            ops.push((
                [b"H".as_slice(), &INTEGRATION, &[0; 8]].concat(),
                Some(value(200)),
            ));
            ops.push(([b"h".as_slice(), &INTEGRATION].concat(), Some(value(200))));
            ops.push((integration_key.clone(), Some(value(600))));
            head = due.last().expect("not empty").clone();
            head.push(0);
            engine.write(ops);
            engine.flush();
            delivered += due.len() as u64;
            left -= due.len() as u64;
        }
    }
    let wall = started.elapsed();
    std::thread::sleep(SETTLE);
    (cpu_time(&me) - cpu, wall)
}

/// A delivery's id from its event's, and back: the random half turned over, so that the
/// worker's read of the event's JSON finds it, as in the store.
fn delivery_of(mut id: [u8; 16]) -> [u8; 16] {
    for byte in &mut id[8..] {
        *byte = !*byte;
    }
    id
}

/// Bytes of the files under `dir`.
fn size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => size(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
