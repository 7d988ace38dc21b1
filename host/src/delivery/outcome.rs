//! What an attempt comes to (SPEC.md §4): the plugin's verdict — or the sender's error, or
//! the plugin's refusal — combined with the retry schedule into the delivery's next status.
//! *Whether* to retry comes from the verdict; *when* from [`RetrySchedule`]. Pure functions.

use std::time::Duration;

use super::retry::{Next, RetrySchedule};
use crate::runtime::Verdict;
use crate::store::{DeliveryStatus, Outcome, Signal, Timestamp};

/// The result of one attempt, before the schedule is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    Delivered,
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    Failed {
        reason: String,
    },
    Skipped {
        reason: String,
    },
}

impl From<Verdict> for AttemptResult {
    fn from(verdict: Verdict) -> AttemptResult {
        match verdict {
            Verdict::Delivered => AttemptResult::Delivered,
            Verdict::Retry { after, reason } => AttemptResult::Retry { after, reason },
            Verdict::Failed { reason } => AttemptResult::Failed { reason },
        }
    }
}

/// The delivery's status after attempt number `attempt` (1 for the first) came to `result`;
/// `signal` is what the attempt says about the destination. `unit` places the jitter
/// (uniform in [0, 1)).
pub fn decide(
    result: &AttemptResult,
    signal: Signal,
    attempt: u32,
    schedule: &RetrySchedule,
    now: Timestamp,
    unit: f64,
) -> Outcome {
    let finished = |status, error: Option<&str>| Outcome {
        status,
        next_attempt_at: None,
        error: error.map(str::to_owned),
        signal,
    };
    match result {
        AttemptResult::Delivered => finished(DeliveryStatus::Succeeded, None),
        AttemptResult::Skipped { reason } => finished(DeliveryStatus::Skipped, Some(reason)),
        AttemptResult::Failed { reason } => finished(DeliveryStatus::Failed, Some(reason)),
        AttemptResult::Retry { after, reason } => match schedule.next(attempt, *after, unit) {
            Next::RetryIn(delay) => Outcome {
                status: DeliveryStatus::Retrying,
                next_attempt_at: Some(now.saturating_add(delay)),
                error: Some(reason.clone()),
                signal,
            },
            Next::Exhausted => finished(
                DeliveryStatus::Exhausted,
                Some(&format!(
                    "{reason} (no retries left after {attempt} attempts)"
                )),
            ),
        },
    }
}

/// The host's own reading of a response, used when the plugin's `interpret` itself fails:
/// 2xx delivered; 408, 429 and 5xx retried (with `Retry-After` in seconds); other statuses
/// failed.
pub fn default_verdict(status: u16, headers: &[(String, String)]) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry {
            after: headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
                .and_then(|(_, value)| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
            reason: format!("the destination answered {status}"),
        },
        _ => Verdict::Failed {
            reason: format!("the destination answered {status}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_000_000);

    fn retry(after: Option<u64>) -> AttemptResult {
        AttemptResult::Retry {
            after: after.map(Duration::from_secs),
            reason: "the destination answered 503".into(),
        }
    }

    #[test]
    fn retries_follow_the_schedule_then_exhaust() {
        let schedule = RetrySchedule::parse("1m,5m", 0.0).unwrap();
        let first = decide(&retry(None), Signal::Failing, 1, &schedule, NOW, 0.5);
        assert_eq!(first.status, DeliveryStatus::Retrying);
        assert_eq!(first.next_attempt_at, Some(Timestamp(1_060_000)));
        let second = decide(&retry(None), Signal::Failing, 2, &schedule, NOW, 0.5);
        assert_eq!(second.next_attempt_at, Some(Timestamp(1_300_000)));
        let third = decide(&retry(None), Signal::Failing, 3, &schedule, NOW, 0.5);
        assert_eq!(third.status, DeliveryStatus::Exhausted);
        assert_eq!(third.next_attempt_at, None);
        assert_eq!(
            third.error.as_deref(),
            Some("the destination answered 503 (no retries left after 3 attempts)")
        );
    }

    #[test]
    fn retry_after_replaces_the_step() {
        let schedule = RetrySchedule::parse("1m,5m", 0.1).unwrap();
        let outcome = decide(&retry(Some(30)), Signal::Failing, 1, &schedule, NOW, 0.9);
        assert_eq!(outcome.next_attempt_at, Some(Timestamp(1_030_000)));
    }

    #[test]
    fn final_results_are_not_scheduled() {
        let schedule = RetrySchedule::default();
        let cases = [
            (AttemptResult::Delivered, DeliveryStatus::Succeeded, None),
            (
                AttemptResult::Failed {
                    reason: "invalid Klaviyo API key".into(),
                },
                DeliveryStatus::Failed,
                Some("invalid Klaviyo API key"),
            ),
            (
                AttemptResult::Skipped {
                    reason: "Klaviyo requires a customer email".into(),
                },
                DeliveryStatus::Skipped,
                Some("Klaviyo requires a customer email"),
            ),
        ];
        for (result, status, error) in cases {
            let outcome = decide(&result, Signal::Neutral, 1, &schedule, NOW, 0.5);
            assert_eq!(outcome.status, status);
            assert_eq!(outcome.next_attempt_at, None);
            assert_eq!(outcome.error.as_deref(), error);
        }
    }

    #[test]
    fn the_host_reads_statuses_when_a_plugin_cannot() {
        assert_eq!(default_verdict(204, &[]), Verdict::Delivered);
        let headers = vec![("Retry-After".to_owned(), "12".to_owned())];
        assert_eq!(
            default_verdict(429, &headers),
            Verdict::Retry {
                after: Some(Duration::from_secs(12)),
                reason: "the destination answered 429".into()
            }
        );
        assert!(matches!(
            default_verdict(408, &[]),
            Verdict::Retry { after: None, .. }
        ));
        assert!(matches!(default_verdict(502, &[]), Verdict::Retry { .. }));
        assert!(matches!(default_verdict(404, &[]), Verdict::Failed { .. }));
        assert!(matches!(default_verdict(301, &[]), Verdict::Failed { .. }));
    }
}
