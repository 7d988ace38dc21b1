//! From a plugin's request to the exact request on the wire: secret references are filled in
//! from the integration's secrets, the destination is checked against the plugin's declared
//! hosts, and requested signatures are computed over the final body. Alongside goes a redacted
//! copy — secrets shown as `[secret:name]` — which is all the delivery log ever stores.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderName, HeaderValue};
use serde_json::Value;

use super::egress::host_allowed;
use crate::crypto::secret::SecretValue;
use crate::crypto::signing::{SigningError, StandardWebhooks, hmac_sha256_hex};
use crate::runtime::{Method, PluginRequest, Segment, SignatureRequest};

/// A request ready to send.
#[derive(Debug)]
pub struct PreparedRequest {
    pub method: Method,
    pub url: url::Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Vec<u8>,
    /// The headers as the log shows them: secret values replaced by `[secret:name]`.
    pub redacted_headers: Vec<(String, String)>,
}

/// What the signatures of one attempt depend on.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The delivery id: `webhook-id`, the same on every retry.
    pub delivery_id: &'a str,
    /// Unix time of this attempt: `webhook-timestamp`.
    pub timestamp: i64,
}

/// Why a request cannot be sent. Names secrets, never their values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    #[error("the plugin refers to the secret `{0}`, which is not set for this integration")]
    MissingSecret(String),
    #[error("the secret `{0}` contains characters a header cannot carry (such as a line break)")]
    UnusableSecret(String),
    #[error("`{host}` is not one of the hosts the plugin declared")]
    HostNotAllowed { host: String },
    #[error("the request URL is not valid: {0}")]
    InvalidUrl(String),
    #[error("the request has an invalid header: {0}")]
    InvalidHeader(String),
    #[error("the secret `{name}` cannot sign requests: {error}")]
    Signing { name: String, error: SigningError },
}

impl PrepareError {
    /// Whether the integration's settings cause it (every delivery would fail the same way),
    /// rather than this event's data.
    pub fn is_configuration(&self) -> bool {
        !matches!(
            self,
            PrepareError::InvalidUrl(_) | PrepareError::InvalidHeader(_)
        )
    }
}

/// A URL as the delivery log shows it: credentials in it (`https://user:pass@…`) replaced by
/// `redacted`.
pub fn redact_url(url: &url::Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    // Setting credentials only fails for URLs that cannot have them, which had none.
    let _ = shown.set_password(None);
    let _ = shown.set_username("redacted");
    shown.to_string()
}

/// Fills in secrets, checks the destination against `allowed_hosts` (with the integration's
/// `settings` for `settings:` patterns), and signs.
pub fn prepare(
    request: &PluginRequest,
    secrets: &HashMap<String, SecretValue>,
    allowed_hosts: &[String],
    settings: &Value,
    attempt: Attempt<'_>,
) -> Result<PreparedRequest, PrepareError> {
    let url = url::Url::parse(&request.url).map_err(|e| PrepareError::InvalidUrl(e.to_string()))?;
    let host = url.host_str().unwrap_or_default();
    if !host_allowed(allowed_hosts, settings, host) {
        return Err(PrepareError::HostNotAllowed {
            host: host.to_owned(),
        });
    }
    let secret = |name: &str| {
        secrets
            .get(name)
            .ok_or_else(|| PrepareError::MissingSecret(name.to_owned()))
    };

    let mut headers = Vec::with_capacity(request.headers.len() + 3);
    let mut redacted_headers = Vec::with_capacity(request.headers.len() + 3);
    for header in &request.headers {
        // The runtime already checked names and literal text; only secrets are new here.
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| PrepareError::InvalidHeader(format!("name {:?}", header.name)))?;
        let mut value = String::new();
        let mut shown = String::new();
        let mut secret_names = Vec::new();
        for segment in &header.value {
            match segment {
                Segment::Text(text) => {
                    value.push_str(text);
                    shown.push_str(text);
                }
                Segment::Secret(secret_name) => {
                    value.push_str(secret(secret_name)?.expose());
                    shown.push_str(&format!("[secret:{secret_name}]"));
                    secret_names.push(secret_name.clone());
                }
                Segment::BasicAuth {
                    user,
                    secret: secret_name,
                } => {
                    let credentials = format!("{user}:{}", secret(secret_name)?.expose());
                    value.push_str("Basic ");
                    value.push_str(&STANDARD.encode(credentials));
                    shown.push_str(&format!("Basic [{user}:secret:{secret_name}]"));
                    secret_names.push(secret_name.clone());
                }
            }
        }
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            PrepareError::UnusableSecret(secret_names.first().cloned().unwrap_or_default())
        })?;
        value.set_sensitive(!secret_names.is_empty());
        redacted_headers.push((header.name.clone(), shown));
        headers.push((name, value));
    }

    for signature in &request.signatures {
        let signed: Vec<(String, String)> = match signature {
            SignatureRequest::HmacSha256Hex {
                header,
                secret: name,
            } => {
                let key = secret(name)?.expose().as_bytes();
                vec![(header.clone(), hmac_sha256_hex(key, &request.body))]
            }
            SignatureRequest::StandardWebhooks { secret: name } => {
                let signer = StandardWebhooks::new(secret(name)?.expose()).map_err(|error| {
                    PrepareError::Signing {
                        name: name.clone(),
                        error,
                    }
                })?;
                signer
                    .headers(attempt.delivery_id, attempt.timestamp, &request.body)
                    .into_iter()
                    .map(|(n, v)| (n.to_owned(), v))
                    .collect()
            }
        };
        for (name, value) in signed {
            // Signatures are derived values, safe to log; they prove nothing without the key.
            let header_name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| PrepareError::InvalidHeader(format!("name {name:?}")))?;
            let header_value = HeaderValue::from_str(&value)
                .map_err(|_| PrepareError::InvalidHeader(format!("value of {name}")))?;
            redacted_headers.push((name, value));
            headers.push((header_name, header_value));
        }
    }

    Ok(PreparedRequest {
        method: request.method,
        url,
        headers,
        body: request.body.clone(),
        redacted_headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Header;
    use serde_json::json;

    fn secrets(pairs: &[(&str, &str)]) -> HashMap<String, SecretValue> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), SecretValue::new(*v)))
            .collect()
    }

    fn request(
        url: &str,
        headers: Vec<Header>,
        signatures: Vec<SignatureRequest>,
    ) -> PluginRequest {
        PluginRequest {
            method: Method::Post,
            url: url.to_owned(),
            headers,
            body: br#"{"test": 2432232314}"#.to_vec(),
            signatures,
        }
    }

    const ATTEMPT: Attempt<'static> = Attempt {
        delivery_id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp: 1_614_265_330,
    };

    fn hosts(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn fills_secrets_signs_and_redacts() {
        let plugin_request = request(
            "https://a.klaviyo.com/api/events",
            vec![
                Header {
                    name: "Authorization".into(),
                    value: vec![
                        Segment::Text("Klaviyo-API-Key ".into()),
                        Segment::Secret("api_key".into()),
                    ],
                },
                Header {
                    name: "revision".into(),
                    value: vec![Segment::Text("2026-07-15".into())],
                },
            ],
            vec![
                SignatureRequest::HmacSha256Hex {
                    header: "X-LoyaltyTree-Signature".into(),
                    secret: "hook".into(),
                },
                SignatureRequest::StandardWebhooks {
                    secret: "hook".into(),
                },
            ],
        );
        let prepared = prepare(
            &plugin_request,
            &secrets(&[
                ("api_key", "pk_live_123"),
                ("hook", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ]),
            &hosts(&["a.klaviyo.com"]),
            &json!({}),
            ATTEMPT,
        )
        .unwrap();
        let sent: Vec<(String, String)> = prepared
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            sent[0],
            ("authorization".into(), "Klaviyo-API-Key pk_live_123".into())
        );
        assert!(prepared.headers[0].1.is_sensitive());
        assert_eq!(sent[1], ("revision".into(), "2026-07-15".into()));
        // hex HMAC keyed with the secret's bytes as configured, over the exact body.
        let expected_hex = hmac_sha256_hex(
            b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sent[2], ("x-loyaltytree-signature".into(), expected_hex));
        assert_eq!(
            sent[3],
            ("webhook-id".into(), "msg_p5jXN8AQM9LWM0D4loKWxJek".into())
        );
        assert_eq!(sent[4], ("webhook-timestamp".into(), "1614265330".into()));
        assert_eq!(
            sent[5],
            (
                "webhook-signature".into(),
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".into()
            )
        );

        assert_eq!(
            prepared.redacted_headers[0],
            (
                "Authorization".into(),
                "Klaviyo-API-Key [secret:api_key]".into()
            )
        );
        let logged = format!("{:?}", prepared.redacted_headers);
        assert!(
            !logged.contains("pk_live_123") && !logged.contains("MfKQ9r8"),
            "{logged}"
        );
        assert!(
            !format!("{prepared:?}").contains("pk_live_123"),
            "Debug of the request hides the key"
        );
    }

    #[test]
    fn basic_auth_is_made_with_the_secret_and_shown_without_it() {
        let plugin_request = request(
            "https://track.customer.io/api/v1/customers/1/events",
            vec![Header {
                name: "Authorization".into(),
                value: vec![Segment::BasicAuth {
                    user: "Aladdin".into(),
                    secret: "api_key".into(),
                }],
            }],
            vec![],
        );
        let prepared = prepare(
            &plugin_request,
            &secrets(&[("api_key", "open sesame")]),
            &hosts(&["track.customer.io"]),
            &json!({}),
            ATTEMPT,
        )
        .unwrap();
        // RFC 7617's own example.
        assert_eq!(
            prepared.headers[0].1.to_str().unwrap(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert!(prepared.headers[0].1.is_sensitive());
        assert_eq!(
            prepared.redacted_headers[0],
            (
                "Authorization".into(),
                "Basic [Aladdin:secret:api_key]".into()
            )
        );
        assert_eq!(
            klaviyo_error(
                request(
                    "https://a.klaviyo.com/api/events",
                    plugin_request.headers.clone(),
                    vec![]
                ),
                &[]
            ),
            PrepareError::MissingSecret("api_key".into())
        );
    }

    /// The error of preparing `request` for a plugin that declared only `a.klaviyo.com`.
    fn klaviyo_error(request: PluginRequest, pairs: &[(&str, &str)]) -> PrepareError {
        prepare(
            &request,
            &secrets(pairs),
            &hosts(&["a.klaviyo.com"]),
            &json!({}),
            ATTEMPT,
        )
        .unwrap_err()
    }

    #[test]
    fn logged_urls_never_show_credentials() {
        let url = url::Url::parse("https://user:p4ss@hooks.example.com/in?x=1").unwrap();
        assert_eq!(
            redact_url(&url),
            "https://redacted@hooks.example.com/in?x=1"
        );
        let plain = url::Url::parse("https://hooks.example.com/in").unwrap();
        assert_eq!(redact_url(&plain), "https://hooks.example.com/in");
    }

    #[test]
    fn refuses_undeclared_hosts_and_missing_or_unusable_secrets() {
        let auth = || {
            vec![Header {
                name: "X-Token".into(),
                value: vec![Segment::Secret("token".into())],
            }]
        };
        let err = klaviyo_error(
            request("https://evil.example/x", auth(), vec![]),
            &[("token", "t")],
        );
        assert_eq!(
            err,
            PrepareError::HostNotAllowed {
                host: "evil.example".into()
            }
        );

        let webhook = hosts(&["settings:url"]);
        let settings = json!({"url": "https://hooks.example.com/{{ customer.email }}"});
        assert!(
            prepare(
                &request("https://hooks.example.com/jane%40x.com", auth(), vec![]),
                &secrets(&[("token", "t")]),
                &webhook,
                &settings,
                ATTEMPT
            )
            .is_ok()
        );

        let err = klaviyo_error(request("https://a.klaviyo.com/x", auth(), vec![]), &[]);
        assert_eq!(err, PrepareError::MissingSecret("token".into()));

        let err = klaviyo_error(
            request("https://a.klaviyo.com/x", auth(), vec![]),
            &[("token", "s3cr3t\nvalue")],
        );
        assert_eq!(err, PrepareError::UnusableSecret("token".into()));
        assert!(
            !err.to_string().contains("s3cr3t"),
            "the value is never quoted: {err}"
        );

        let sign = vec![SignatureRequest::StandardWebhooks {
            secret: "hook".into(),
        }];
        let err = klaviyo_error(
            request("https://a.klaviyo.com/x", vec![], sign),
            &[("hook", "whsec_***")],
        );
        assert_eq!(
            err,
            PrepareError::Signing {
                name: "hook".into(),
                error: SigningError::InvalidBase64
            }
        );
    }
}
