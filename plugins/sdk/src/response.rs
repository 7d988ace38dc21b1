//! Reading a platform's answer: the classification every HTTP destination shares, which a
//! plugin refines with what its platform says in the body.

use crate::bindings::canopy::destination::types::RetryAdvice;
use crate::json::error_details;
use crate::{IncomingResponse, Verdict};

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

/// A retry verdict: `reason` for the log, and the wait the platform asked for, if any (the
/// host's schedule applies otherwise).
pub fn retry(reason: impl Into<String>, after_seconds: Option<u32>) -> Verdict {
    Verdict::Retry(RetryAdvice {
        after_seconds,
        reason: reason.into(),
    })
}

/// 2xx delivered; 408, 429 and 5xx retried (honouring `Retry-After`); any other status
/// failed, quoting the start of the body.
pub fn default_verdict(response: &IncomingResponse) -> Verdict {
    let status = response.status;
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => retry(format!("HTTP {status}"), retry_after_seconds(response)),
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

/// How a platform's HTTP API answer usually reads, in the platform's name: 2xx delivered;
/// 401/403 failed with `invalid_credentials`; 408, 429 and 5xx retried (honouring
/// `Retry-After`); any other status failed with the platform's own error text
/// ([`error_details`]).
pub fn platform_verdict(
    response: &IncomingResponse,
    platform: &str,
    invalid_credentials: &str,
) -> Verdict {
    let status = response.status;
    match status {
        200..=299 => Verdict::Delivered,
        401 | 403 => Verdict::Failed(invalid_credentials.to_owned()),
        408 | 429 | 500..=599 => retry(
            format!("{platform} answered HTTP {status}"),
            retry_after_seconds(response),
        ),
        _ => Verdict::Failed(match error_details(&response.body) {
            Some(detail) => format!("{platform} rejected the event (HTTP {status}): {detail}"),
            None => format!("{platform} rejected the event (HTTP {status})"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> IncomingResponse {
        IncomingResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn retry(after: Option<u32>, reason: &str) -> Verdict {
        Verdict::Retry(RetryAdvice {
            after_seconds: after,
            reason: reason.to_owned(),
        })
    }

    #[test]
    fn classifies_statuses() {
        let verdict = |status, headers: &[(&str, &str)], body| {
            format!("{:?}", default_verdict(&response(status, headers, body)))
        };
        let expect = |v: Verdict| format!("{v:?}");
        assert_eq!(verdict(200, &[], ""), expect(Verdict::Delivered));
        assert_eq!(verdict(204, &[], ""), expect(Verdict::Delivered));
        assert_eq!(verdict(408, &[], ""), expect(retry(None, "HTTP 408")));
        assert_eq!(
            verdict(429, &[("retry-after", "17")], ""),
            expect(retry(Some(17), "HTTP 429"))
        );
        assert_eq!(
            verdict(503, &[("Retry-After", " 5 ")], ""),
            expect(retry(Some(5), "HTTP 503"))
        );
        // An HTTP-date Retry-After is not read: the host's schedule applies.
        assert_eq!(
            verdict(429, &[("retry-after", "Wed, 21 Oct 2026 07:28:00 GMT")], ""),
            expect(retry(None, "HTTP 429"))
        );
        assert_eq!(
            verdict(404, &[], ""),
            expect(Verdict::Failed("HTTP 404".into()))
        );
        assert_eq!(
            verdict(400, &[], "  {\"detail\":\"bad\"}\n"),
            expect(Verdict::Failed("HTTP 400: {\"detail\":\"bad\"}".into()))
        );
    }

    #[test]
    fn failure_reasons_quote_a_bounded_excerpt() {
        let body = "é".repeat(1000);
        let Verdict::Failed(reason) = default_verdict(&response(422, &[], &body)) else {
            panic!("expected a failure")
        };
        assert_eq!(
            reason.chars().count(),
            "HTTP 422: ".len() + REASON_EXCERPT_CHARS
        );
    }
}
