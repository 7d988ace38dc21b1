//! Building outgoing requests. Secrets are referenced by name ([`Request::secret_header`]);
//! signatures are requested from the host ([`Request::sign_hmac_hex`],
//! [`Request::sign_standard_webhooks`]); the host fills both in at send time.

use serde::Serialize;

use crate::bindings::canopy::destination::types::Segment;
use crate::bindings::canopy::destination::types::{HmacSignature, Signature};
use crate::{Method, OutgoingRequest};

/// A request under construction.
#[derive(Debug, Clone)]
pub struct Request(OutgoingRequest);

impl Request {
    pub fn new(method: Method, url: impl Into<String>) -> Request {
        Request(OutgoingRequest {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            signatures: Vec::new(),
        })
    }

    pub fn post(url: impl Into<String>) -> Request {
        Request::new(Method::Post, url)
    }

    /// A header with a literal value.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Request {
        self.0
            .headers
            .push(crate::bindings::canopy::destination::types::Header {
                name: name.to_owned(),
                value: vec![Segment::Text(value.into())],
            });
        self
    }

    /// A header whose value is `prefix` followed by the named secret, e.g.
    /// `secret_header("Authorization", "Bearer ", "token")`.
    pub fn secret_header(mut self, name: &str, prefix: &str, secret: &str) -> Request {
        let mut value = Vec::with_capacity(2);
        if !prefix.is_empty() {
            value.push(Segment::Text(prefix.to_owned()));
        }
        value.push(Segment::Secret(secret.to_owned()));
        self.0
            .headers
            .push(crate::bindings::canopy::destination::types::Header {
                name: name.to_owned(),
                value,
            });
        self
    }

    /// An `Authorization: Basic base64(user:secret)` header with the named secret as the
    /// password, made by the host at send time (e.g. Customer.io's site id and API key).
    /// `user` must not contain `:`.
    pub fn basic_auth(mut self, user: &str, secret: &str) -> Request {
        self.0
            .headers
            .push(crate::bindings::canopy::destination::types::Header {
                name: "Authorization".to_owned(),
                value: vec![Segment::BasicAuth(
                    crate::bindings::canopy::destination::types::BasicCredentials {
                        user: user.to_owned(),
                        secret: secret.to_owned(),
                    },
                )],
            });
        self
    }

    /// The body as raw bytes.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.0.body = body.into();
        self
    }

    /// The body as compact JSON.
    pub fn json(self, body: &impl Serialize) -> Request {
        // Serialising an in-memory value with string keys cannot fail.
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.body(bytes)
    }

    /// Asks the host to add `header: hex(HMAC-SHA256(secret, body))`.
    pub fn sign_hmac_hex(mut self, header: &str, secret: &str) -> Request {
        self.0
            .signatures
            .push(Signature::HmacSha256Hex(HmacSignature {
                header: header.to_owned(),
                secret: secret.to_owned(),
            }));
        self
    }

    /// Asks the host to add Standard Webhooks headers keyed with the named secret.
    pub fn sign_standard_webhooks(mut self, secret: &str) -> Request {
        self.0
            .signatures
            .push(Signature::StandardWebhooks(secret.to_owned()));
        self
    }

    pub fn build(self) -> OutgoingRequest {
        self.0
    }
}

impl From<Request> for OutgoingRequest {
    fn from(request: Request) -> OutgoingRequest {
        request.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::canopy::destination::types::Header;

    #[test]
    fn builds_headers_with_secret_references_and_signatures() {
        let request = Request::post("https://a.test/x")
            .header("Content-Type", "application/json")
            .secret_header("Authorization", "Bearer ", "token")
            .secret_header("X-Token", "", "token")
            .basic_auth("site", "api_key")
            .json(&serde_json::json!({"a": 1}))
            .sign_hmac_hex("X-Sig", "secret")
            .sign_standard_webhooks("secret")
            .build();
        assert!(matches!(request.method, Method::Post));
        let shown: Vec<String> = request
            .headers
            .iter()
            .map(|Header { name, value }| {
                let value: Vec<String> = value
                    .iter()
                    .map(|s| match s {
                        Segment::Text(t) => t.clone(),
                        Segment::Secret(n) => format!("<{n}>"),
                        Segment::BasicAuth(c) => format!("Basic {}:<{}>", c.user, c.secret),
                    })
                    .collect();
                format!("{name}: {}", value.concat())
            })
            .collect();
        assert_eq!(
            shown,
            [
                "Content-Type: application/json",
                "Authorization: Bearer <token>",
                "X-Token: <token>",
                "Authorization: Basic site:<api_key>"
            ]
        );
        assert_eq!(request.body, br#"{"a":1}"#);
        assert_eq!(request.signatures.len(), 2);
        assert!(
            matches!(&request.signatures[0], Signature::HmacSha256Hex(h) if h.header == "X-Sig" && h.secret == "secret")
        );
        assert!(matches!(&request.signatures[1], Signature::StandardWebhooks(s) if s == "secret"));
    }
}
