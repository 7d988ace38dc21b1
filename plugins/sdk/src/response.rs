//! Reading a platform's answer: the classification every HTTP destination shares, which a
//! plugin refines with what its platform says in the body.

use crate::{IncomingResponse, RetryAdvice, Verdict};

/// How much of a response body a failure reason quotes.
const REASON_EXCERPT_CHARS: usize = 300;

/// A response header's value (names are lowercase on the wire to the plugin).
pub fn header<'a>(response: &'a IncomingResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `Retry-After` in seconds, when given as a number of seconds.
pub fn retry_after_seconds(response: &IncomingResponse) -> Option<u32> {
    header(response, "retry-after").and_then(|v| v.trim().parse().ok())
}

/// 2xx delivered; 408, 429 and 5xx retried (honouring `Retry-After`); any other status
/// failed, quoting the start of the body.
pub fn default_verdict(response: &IncomingResponse) -> Verdict {
    let status = response.status;
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry(RetryAdvice {
            after_seconds: retry_after_seconds(response),
            reason: format!("HTTP {status}"),
        }),
        _ => {
            let body = String::from_utf8_lossy(&response.body);
            let body = body.trim();
            if body.is_empty() {
                Verdict::Failed(format!("HTTP {status}"))
            } else {
                let excerpt: String = body.chars().take(REASON_EXCERPT_CHARS).collect();
                Verdict::Failed(format!("HTTP {status}: {excerpt}"))
            }
        }
    }
}
