//! Delivery: where requests may go ([`egress`]), how a plugin's request becomes the request on
//! the wire ([`request`]: secrets, signatures, redaction), and when a failed attempt is tried
//! again ([`retry`]). The scheduler, workers and outcome recording join this module with the
//! delivery pipeline.

pub mod egress;
pub mod request;
pub mod retry;
