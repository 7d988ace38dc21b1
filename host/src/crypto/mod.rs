//! Cryptography of the host: secret values that never print ([`secret`]) and signing of
//! outgoing requests ([`signing`]). Plugins only name secrets; values and computation stay here.

pub mod secret;
pub mod signing;
