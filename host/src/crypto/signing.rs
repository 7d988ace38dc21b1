//! Request signatures the host adds at send time, when a plugin asks for them:
//!
//! - `hmac-sha256-hex`: lowercase hex of HMAC-SHA256 over the exact body bytes, keyed with the
//!   secret's bytes exactly as configured (`X-LoyaltyTree-Signature`, SPEC.md §3);
//! - Standard Webhooks: `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64
//!   HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the base64-decoded part of a
//!   `whsec_…` secret, or with the secret's raw bytes when it has no such prefix — so any
//!   Standard Webhooks library verifies what Canopy sends.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of Standard Webhooks secrets; what follows is base64.
pub const WHSEC_PREFIX: &str = "whsec_";

/// Why a secret cannot key a Standard Webhooks signature. Never quotes the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("the webhook secret starts with `whsec_` but what follows is not valid base64")]
    InvalidBase64,
    #[error("the webhook secret is empty")]
    Empty,
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    HmacSha256::new_from_slice(key).expect("HMAC accepts any key length")
}

/// Lowercase hex HMAC-SHA256 of `body` keyed with `key`.
pub fn hmac_sha256_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac = mac(key);
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        hex.push(char::from_digit((byte >> 4).into(), 16).unwrap_or('0'));
        hex.push(char::from_digit((byte & 0xf).into(), 16).unwrap_or('0'));
    }
    hex
}

/// A Standard Webhooks signer for one secret.
#[derive(Clone)]
pub struct StandardWebhooks {
    key: Vec<u8>,
}

impl fmt::Debug for StandardWebhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StandardWebhooks { key: <redacted> }")
    }
}

impl StandardWebhooks {
    /// A signer keyed as the spec says: the decoded base64 of `whsec_…`, else the raw bytes.
    pub fn new(secret: &str) -> Result<StandardWebhooks, SigningError> {
        let key = match secret.strip_prefix(WHSEC_PREFIX) {
            Some(encoded) => BASE64
                .decode(encoded)
                .map_err(|_| SigningError::InvalidBase64)?,
            None => secret.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err(SigningError::Empty);
        }
        Ok(StandardWebhooks { key })
    }

    /// `v1,<base64 signature>` of `{id}.{timestamp}.{body}`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = mac(&self.key);
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }

    /// The three headers for a request: `id` is the delivery id (the same on every retry),
    /// `timestamp` the Unix time of this attempt.
    pub fn headers(&self, id: &str, timestamp: i64, body: &[u8]) -> [(&'static str, String); 3] {
        [
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", self.sign(id, timestamp, body)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_hmac_matches_rfc_4231_test_case_2() {
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// The vector published with the Standard Webhooks reference libraries: reproducing it
    /// byte for byte is what says receivers' libraries accept Canopy's signatures.
    #[test]
    fn standard_webhooks_matches_the_published_test_vector() {
        let signer = StandardWebhooks::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signer.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let headers = signer.headers(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            headers[0],
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek".to_owned())
        );
        assert_eq!(headers[1], ("webhook-timestamp", "1614265330".to_owned()));
        assert_eq!(
            headers[2].1,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_without_the_prefix_key_with_their_raw_bytes() {
        let raw = StandardWebhooks::new("plain-secret").unwrap();
        let decoded =
            StandardWebhooks::new(&format!("whsec_{}", BASE64.encode("plain-secret"))).unwrap();
        assert_eq!(raw.sign("d1", 1, b"{}"), decoded.sign("d1", 1, b"{}"));
        assert_ne!(
            raw.sign("d1", 1, b"{}"),
            raw.sign("d1", 2, b"{}"),
            "the timestamp is signed"
        );
    }

    #[test]
    fn bad_secrets_are_refused_without_being_quoted() {
        let err = StandardWebhooks::new("whsec_not*base64!").unwrap_err();
        assert_eq!(err, SigningError::InvalidBase64);
        assert!(!err.to_string().contains("not*base64"));
        assert_eq!(StandardWebhooks::new("").unwrap_err(), SigningError::Empty);
        assert_eq!(
            StandardWebhooks::new("whsec_").unwrap_err(),
            SigningError::Empty
        );
        let debug = format!("{:?}", StandardWebhooks::new("top-secret").unwrap());
        assert!(!debug.contains("top-secret"), "{debug}");
    }
}
