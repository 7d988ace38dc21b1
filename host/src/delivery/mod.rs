//! Delivery: from a queued delivery to a recorded outcome.
//!
//! - [`scheduler`] claims due deliveries under a lease and runs them on bounded workers.
//! - [`worker`] runs one attempt, with the integration as [`integrations`] keeps it in
//!   memory: plugin `transform` → [`request`] (secrets filled in, declared-host check,
//!   signatures, a redacted copy for the log) → [`sender`] (HTTP with the internal-address
//!   guard and the egress override) → plugin `interpret` → [`outcome`] → the attempt
//!   recorded.
//! - [`retry`] says when a failed attempt is tried again; [`rate`] paces each integration;
//!   [`egress`] says where requests may go.

pub mod egress;
pub mod integrations;
pub mod outcome;
pub mod rate;
pub mod request;
pub mod retry;
pub mod scheduler;
pub mod sender;
pub mod worker;
