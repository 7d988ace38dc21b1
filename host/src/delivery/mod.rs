//! Delivery policy: where requests may go ([`egress`]) and when a failed attempt is tried
//! again ([`retry`]). The scheduler, workers and outcome recording join this module with the
//! delivery pipeline.

pub mod egress;
pub mod retry;
