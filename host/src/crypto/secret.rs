//! Secret values (API keys, tokens, webhook secrets) in memory: a newtype whose `Debug` and
//! `Display` never show the value, so a secret cannot reach a log line or an error message by
//! accident. The value is read only through [`SecretValue::expose`].

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> SecretValue {
        SecretValue(value.into())
    }

    /// The value itself, for the one place that needs it (a header, a signing key).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What an admin may see: the last four characters of a long value (`••••a1b2`), or
    /// nothing of a short one, whose end would give too much away.
    pub fn hint(&self) -> String {
        const SHOWN: usize = 4;
        const MIN_LEN_TO_SHOW: usize = 12;
        let chars = self.0.chars().count();
        if chars >= MIN_LEN_TO_SHOW {
            let tail: String = self.0.chars().skip(chars - SHOWN).collect();
            format!("••••{tail}")
        } else {
            "••••".to_owned()
        }
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_the_value() {
        let secret = SecretValue::new("pk_live_0123456789abcd");
        assert_eq!(format!("{secret:?}"), "SecretValue(<redacted>)");
        assert_eq!(secret.to_string(), "<redacted>");
        assert_eq!(secret.hint(), "••••abcd");
        assert_eq!(SecretValue::new("short").hint(), "••••");
        assert_eq!(secret.expose(), "pk_live_0123456789abcd");
    }
}
