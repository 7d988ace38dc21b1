//! Cryptography of the host: signing outgoing requests ([`signing`]). Plugins only ask for
//! signatures by secret name; the values and the computation stay here.

pub mod signing;
