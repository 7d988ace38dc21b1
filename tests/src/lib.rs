//! Test support for Canopy: paths of the wasm components built for the tests (the template
//! plugin and the hostile components of `tests/components/`), plus shared sample data.
//! The integration suite itself is `host/tests/suite` (one test binary), where the real
//! `canopy` binary is reachable.

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// The seed document's example event, with an id.
pub const SAMPLE_EVENT: &str = r#"{"id":"0192f0c4-7d1e-7a3c-9d2b-5f1e2a3b4c5d","event":"seeds.earned.order","timestamp":"2026-02-06T14:30:00.000Z","customer":{"email":"jane@example.com","first_name":"Jane","last_name":"Smith","display_name":"Jane Smith","shopify_customer_id":"7891234567890"},"amount":50,"order_id":"6012345678901","order_number":"1042","order_total":"89.99","order_currency":"USD","balance":350,"tier":"Silver"}"#;

/// Reads a component built for the tests.
pub fn component(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}
