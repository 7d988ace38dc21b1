//! The HTTP client deliveries go out through: pooled connections, a timeout per request
//! (10 s by default, seed 000), redirects never followed (a redirect could lead anywhere),
//! response bodies read up to a bound, and the internal-address guard at the point where
//! names become addresses:
//!
//! - A URL whose host is an IP literal is checked before connecting.
//! - A host name is resolved by [`GuardedResolver`], which drops internal addresses; a name
//!   that resolves only to internal ones is refused. Checking the addresses actually
//!   connected to (not a separate lookup) leaves no gap for DNS rebinding.
//!
//! Proxies: the proxy variables of the environment (`HTTP_PROXY`, `HTTPS_PROXY`, …) are
//! ignored — through one, a request would reach an internal address the resolver never saw.
//! Only a proxy configured for Canopy (`--egress-proxy`) is used, and then the destination's
//! name is resolved and checked here before the request is handed to the proxy: every
//! address must be public (the proxy resolves the name again, so it should refuse internal
//! destinations too; see the README).
//!
//! The **egress override** (tests, staging) sends a platform host's requests to another base
//! URL, as curl's `--connect-to` does; it applies after the declared-host check and its
//! targets are the operator's own configuration, so they are not subject to the guard.

use std::error::Error as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

use super::egress::{host_allowed, is_internal};
use super::request::PreparedRequest;
use crate::runtime::Method;

/// The most of a response body read (and handed to the plugin's `interpret`).
pub const MAX_RESPONSE_BYTES: usize = 256 << 10;
/// Connections kept open per destination host between deliveries.
const IDLE_CONNECTIONS_PER_HOST: usize = 32;

/// A platform host (`a.klaviyo.com`, or `*.myshopify.com`) routed to another base URL.
#[derive(Debug, Clone, PartialEq)]
pub struct EgressOverride {
    pub host: String,
    pub base: Url,
}

impl std::str::FromStr for EgressOverride {
    type Err = String;
    /// `host=base-url`, such as `a.klaviyo.com=http://127.0.0.1:9000`.
    fn from_str(text: &str) -> Result<EgressOverride, String> {
        let (host, base) = text
            .split_once('=')
            .ok_or_else(|| format!("egress override `{text}` is not host=base-url"))?;
        let base = Url::parse(base.trim())
            .map_err(|e| format!("egress override base URL `{base}`: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(format!(
                "egress override base URL `{base}` must be http(s) with a host"
            ));
        }
        Ok(EgressOverride {
            host: host.trim().to_ascii_lowercase(),
            base,
        })
    }
}

impl EgressOverride {
    /// The URL a request to `url` goes to instead, if this override covers its host: the base
    /// URL's scheme, host and port, its path joined before the request's path and query.
    fn apply(&self, url: &Url) -> Option<Url> {
        let host = url.host_str()?;
        if !host_allowed(
            std::slice::from_ref(&self.host),
            &serde_json::Value::Null,
            host,
        ) {
            return None;
        }
        let mut routed = self.base.clone();
        let base_path = self.base.path().trim_end_matches('/');
        routed.set_path(&format!("{base_path}{}", url.path()));
        routed.set_query(url.query());
        Some(routed)
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    /// At most [`MAX_RESPONSE_BYTES`].
    pub body: Vec<u8>,
    /// The whole body's size as far as it was read (more than `body.len()` when cut).
    pub body_bytes: usize,
    pub duration: Duration,
}

/// Why no response came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The destination is internal; not retried.
    #[error("{0}")]
    Refused(String),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("network error: {0}")]
    Network(String),
}

impl SendError {
    /// Whether trying again later can help.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SendError::Refused(_))
    }
}

/// Sends prepared requests.
#[derive(Clone)]
pub struct Sender {
    guarded: reqwest::Client,
    overridden: reqwest::Client,
    overrides: Arc<[EgressOverride]>,
    allow_internal: bool,
    /// Requests go through a proxy, which resolves names itself: checked before sending.
    proxied: bool,
    timeout: Duration,
}

/// Why the client cannot be built (TLS set-up).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(String);

impl Sender {
    pub fn new(
        timeout: Duration,
        allow_internal: bool,
        overrides: Vec<EgressOverride>,
        proxy: Option<Url>,
    ) -> Result<Sender, ClientError> {
        let builder = || {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST)
                .user_agent(concat!("Canopy/", env!("CARGO_PKG_VERSION")))
                // Never the environment's proxy variables: see the module docs.
                .no_proxy()
        };
        let mut guarded = builder();
        if !allow_internal {
            guarded = guarded.dns_resolver(Arc::new(GuardedResolver));
        }
        if let Some(proxy) = &proxy {
            let proxy = reqwest::Proxy::all(proxy.as_str())
                .map_err(|e| ClientError(format!("the egress proxy: {e}")))?;
            guarded = guarded.proxy(proxy);
        }
        Ok(Sender {
            guarded: guarded.build().map_err(|e| ClientError(e.to_string()))?,
            overridden: builder().build().map_err(|e| ClientError(e.to_string()))?,
            overrides: overrides.into(),
            allow_internal,
            proxied: proxy.is_some(),
            timeout,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request and reads its response (body bounded).
    pub async fn send(&self, request: &PreparedRequest) -> Result<Response, SendError> {
        let routed = self.overrides.iter().find_map(|o| o.apply(&request.url));
        let (client, url) = match routed {
            Some(url) => (&self.overridden, url),
            None => {
                if !self.allow_internal {
                    check_literal_host(&request.url)?;
                    if self.proxied {
                        check_resolved_host(&request.url).await?;
                    }
                }
                (&self.guarded, request.url.clone())
            }
        };
        let mut headers = HeaderMap::with_capacity(request.headers.len());
        for (name, value) in &request.headers {
            headers.append(name.clone(), value.clone());
        }
        let started = Instant::now();
        let sent = client
            .request(method(request.method), url)
            .headers(headers)
            .body(request.body.clone())
            .send()
            .await
            .map_err(|e| self.error(e))?;
        let status = sent.status().as_u16();
        let headers = sent
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let (body, body_bytes) = read_bounded(sent).await.map_err(|e| self.error(e))?;
        Ok(Response {
            status,
            headers,
            body,
            body_bytes,
            duration: started.elapsed(),
        })
    }

    fn error(&self, e: reqwest::Error) -> SendError {
        let mut source = e.source();
        while let Some(cause) = source {
            if let Some(internal) = cause.downcast_ref::<InternalAddress>() {
                return SendError::Refused(internal.to_string());
            }
            source = cause.source();
        }
        if e.is_timeout() {
            return SendError::Timeout(self.timeout);
        }
        SendError::Network(describe(&e))
    }
}

async fn read_bounded(mut response: reqwest::Response) -> Result<(Vec<u8>, usize), reqwest::Error> {
    let mut body = Vec::new();
    let mut total = 0;
    while let Some(chunk) = response.chunk().await? {
        total += chunk.len();
        let room = MAX_RESPONSE_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if total >= MAX_RESPONSE_BYTES {
            break;
        }
    }
    Ok((body, total))
}

/// An error and its causes on one line (reqwest's own message names only the URL).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn method(method: Method) -> reqwest::Method {
    reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap_or(reqwest::Method::POST)
}

fn check_literal_host(url: &Url) -> Result<(), SendError> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        _ => return Ok(()),
    };
    if is_internal(ip) {
        return Err(SendError::Refused(format!(
            "refused to send to {ip}: an internal address (set allow-private-networks to allow it)"
        )));
    }
    Ok(())
}

/// Resolves a URL's host name and refuses it if any of its addresses is internal: the check
/// made before a request goes to a proxy, which connects on its own.
async fn check_resolved_host(url: &Url) -> Result<(), SendError> {
    let Some(url::Host::Domain(host)) = url.host() else {
        return Ok(()); // IP literals were checked already
    };
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| SendError::Network(format!("cannot resolve {host} to check it: {e}")))?
        .collect();
    let internal: Vec<String> = addresses
        .iter()
        .filter(|a| is_internal(a.ip()))
        .map(|a| a.ip().to_string())
        .collect();
    if !internal.is_empty() {
        return Err(SendError::Refused(format!(
            "refused to send to {host}: it resolves to internal addresses ({}) \
             (set allow-private-networks to allow it)",
            internal.join(", ")
        )));
    }
    Ok(())
}

/// A host name that resolved only to internal addresses.
#[derive(Debug, thiserror::Error)]
#[error(
    "refused to send to {host}: it resolves only to internal addresses ({addresses}) \
     (set allow-private-networks to allow it)"
)]
struct InternalAddress {
    host: String,
    addresses: String,
}

/// Resolves with the system resolver and keeps only public addresses.
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| !is_internal(a.ip()))
                .collect();
            if public.is_empty() && !all.is_empty() {
                let addresses = all
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Box::new(InternalAddress { host, addresses }) as _);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_keep_path_and_query() {
        let o: EgressOverride = "a.klaviyo.com=http://127.0.0.1:9000/fake".parse().unwrap();
        let url = Url::parse("https://a.klaviyo.com/api/events?x=1").unwrap();
        assert_eq!(
            o.apply(&url).unwrap().as_str(),
            "http://127.0.0.1:9000/fake/api/events?x=1"
        );
        assert_eq!(
            o.apply(&Url::parse("https://b.klaviyo.com/").unwrap()),
            None
        );

        let wild: EgressOverride = "*.myshopify.com=http://127.0.0.1:9001".parse().unwrap();
        let shop = Url::parse("https://demo.myshopify.com/admin/api/2026-04/graphql.json").unwrap();
        assert_eq!(
            wild.apply(&shop).unwrap().as_str(),
            "http://127.0.0.1:9001/admin/api/2026-04/graphql.json"
        );
        assert!("nonsense".parse::<EgressOverride>().is_err());
        assert!("a.b=ftp://x".parse::<EgressOverride>().is_err());
    }

    #[test]
    fn literal_internal_hosts_are_refused() {
        for url in [
            "http://127.0.0.1:8080/",
            "http://10.1.2.3/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
        ] {
            let refused = check_literal_host(&Url::parse(url).unwrap());
            assert!(matches!(refused, Err(SendError::Refused(_))), "{url}");
        }
        assert_eq!(
            check_literal_host(&Url::parse("http://93.184.215.14/").unwrap()),
            Ok(())
        );
        assert_eq!(
            check_literal_host(&Url::parse("https://example.com/").unwrap()),
            Ok(())
        );
    }

    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_refused() {
        let error = GuardedResolver
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("localhost is internal");
        assert!(error.to_string().contains("internal addresses"), "{error}");
    }
}
