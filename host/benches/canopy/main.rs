//! Canopy's benchmark: `cargo bench -p canopy --bench canopy` prints every figure of
//! docs/PERFORMANCE.md with its target beside it, from one run:
//!
//! - `pipeline`: the real server end to end against a bare forwarder baseline, latency at a
//!   fixed offered rate, and recovery with 100,000 pending deliveries (see `pipeline.rs`);
//! - `fairness`: one shop's events while another shop's destination hangs or is throttled,
//!   beside the same with that destination healthy (see `fairness.rs`);
//! - `transform`: each plugin's per-event transform cost in Wasm versus native;
//! - `postgres`: the same workload on the embedded store and on PostgreSQL with 1, 2 and 3 nodes, and
//!   `migrate-store`'s speed (see `postgres.rs`);
//! - `engines`: the embedded store's write pattern on sled, fjall and redb, the engines that
//!   were candidates to replace sled (see `engines.rs`).
//!
//! `cargo bench -p canopy --bench canopy -- transform` (or `pipeline`, `fairness`, `postgres`,
//! `engines`) runs one part.

mod engines;
mod fairness;
mod pipeline;
mod postgres;
mod transform;

fn main() {
    // cargo passes `--bench`; anything else names the parts to run.
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    for part in &parts {
        assert!(
            ["pipeline", "fairness", "transform", "postgres", "engines"].contains(&part.as_str()),
            "unknown part `{part}`: pipeline, fairness, transform, postgres or engines"
        );
    }
    println!("{}", machine());
    if wanted("pipeline") {
        pipeline::run();
    }
    if wanted("fairness") {
        fairness::run();
    }
    if wanted("transform") {
        transform::run();
    }
    if wanted("postgres") {
        postgres::run();
    }
    if wanted("engines") {
        engines::run();
    }
}

/// The machine the figures come from.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "machine: {cores} cores, {cpu}, {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}
