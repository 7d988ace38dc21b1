//! Cryptography of the host: secret values that never print ([`secret`]), credentials
//! encrypted at rest ([`seal`]) and signing of outgoing requests ([`signing`]). Plugins only
//! name secrets; values and computation stay here.

pub mod seal;
pub mod secret;
pub mod signing;
