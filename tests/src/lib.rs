//! Test support for Canopy: paths of the wasm components built for the tests (the template
//! plugin and the hostile components of `tests/components/`), plus shared sample data.
//! The integration suite itself is `host/tests/suite` (one test binary), where the real
//! `canopy` binary is reachable.

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// The seed document's example event (`seeds.earned.order`), the built-in sample.
pub const SAMPLE_EVENT: &str = include_str!("../../crates/events/samples/seeds.earned.order.json");

/// Reads a component built for the tests.
pub fn component(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}
