//! Delivery: where requests may go ([`egress`]). The scheduler, workers, retry policy and
//! outcome recording join this module with the delivery pipeline.

pub mod egress;
