//! Logging through the host: lines end up in the host's structured log, tagged with the
//! plugin. Plugins never hold secrets, but events carry customer data: log sparingly.

use crate::bindings::canopy::destination::host::{self, LogLevel};

pub fn debug(message: &str) {
    host::log(LogLevel::Debug, message);
}

pub fn info(message: &str) {
    host::log(LogLevel::Info, message);
}

pub fn warn(message: &str) {
    host::log(LogLevel::Warn, message);
}

pub fn error(message: &str) {
    host::log(LogLevel::Error, message);
}
