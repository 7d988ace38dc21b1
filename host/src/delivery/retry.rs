//! When a failed attempt is tried again (SPEC.md §4, seed 000): after 1 min, 5 min, 30 min,
//! 2 h and 24 h — five retries — each with a little jitter so that deliveries failed together
//! do not return together; a `Retry-After` from the destination replaces the step's delay,
//! clamped to sane bounds. After the last retry the delivery is exhausted. *Whether* to retry
//! is the plugin's verdict (and the sender's, for network errors); this is only *when*.

use std::time::Duration;

/// The documented schedule.
pub const DEFAULT_SCHEDULE: &str = "1m,5m,30m,2h,24h";
/// Each delay varies by up to ±10%.
pub const DEFAULT_JITTER: f64 = 0.1;
/// A `Retry-After` shorter than this is raised to it.
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    RetryIn(Duration),
    Exhausted,
}

/// The retry schedule: one delay per retry.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
    jitter: f64,
}

/// A schedule that cannot be used, naming the bad part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("retry delay `{0}` is not a duration like 30s, 5m or 2h")]
    BadDelay(String),
    #[error("retry delays must be positive")]
    Zero,
    #[error("jitter must be between 0 and 1")]
    BadJitter,
}

impl Default for RetrySchedule {
    fn default() -> RetrySchedule {
        RetrySchedule::parse(DEFAULT_SCHEDULE, DEFAULT_JITTER).expect("the default schedule parses")
    }
}

impl RetrySchedule {
    /// Parses `"1m,5m,30m,2h,24h"` (tests compress it: `"10ms,20ms"`). An empty text means no
    /// retries at all.
    pub fn parse(text: &str, jitter: f64) -> Result<RetrySchedule, ScheduleError> {
        if !(0.0..1.0).contains(&jitter) {
            return Err(ScheduleError::BadJitter);
        }
        let delays = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                let delay = humantime::parse_duration(part)
                    .map_err(|_| ScheduleError::BadDelay(part.to_owned()))?;
                if delay.is_zero() {
                    Err(ScheduleError::Zero)
                } else {
                    Ok(delay)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RetrySchedule { delays, jitter })
    }

    /// How many retries follow the first attempt.
    pub fn retries(&self) -> usize {
        self.delays.len()
    }

    /// After `failed_attempts` failed attempts (1 after the first), when to try again.
    /// `retry_after` is what the destination asked for; `unit` is a uniform sample in
    /// [0, 1) that places the jitter (a parameter, so tests choose it).
    pub fn next(&self, failed_attempts: u32, retry_after: Option<Duration>, unit: f64) -> Next {
        let index = failed_attempts.saturating_sub(1) as usize;
        let Some(step) = self.delays.get(index) else {
            return Next::Exhausted;
        };
        if let Some(asked) = retry_after {
            // Honour the destination, within bounds: never sooner than a second, never
            // later than the schedule's longest delay.
            let longest = self.delays.iter().max().copied().unwrap_or(*step);
            return Next::RetryIn(asked.clamp(MIN_RETRY_AFTER, longest.max(MIN_RETRY_AFTER)));
        }
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Next::RetryIn(step.mul_f64(factor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn the_documented_schedule_then_exhaustion() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.retries(), 5);
        let expected = [60, 300, 1800, 7200, 86400].map(Duration::from_secs);
        for (attempt, delay) in (1..).zip(expected) {
            // unit 0.5 places the jitter at zero.
            assert_eq!(
                schedule.next(attempt, None, 0.5),
                Next::RetryIn(delay),
                "after attempt {attempt}"
            );
        }
        assert_eq!(schedule.next(6, None, 0.5), Next::Exhausted);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let schedule = RetrySchedule::default();
        assert_eq!(
            schedule.next(1, None, 0.0),
            Next::RetryIn(Duration::from_secs(54))
        );
        assert_eq!(
            schedule.next(1, None, 0.999_999),
            Next::RetryIn(MIN.mul_f64(1.0 + 0.1 * (2.0 * 0.999_999 - 1.0)))
        );
        for unit in [0.0, 0.25, 0.75, 0.999] {
            let Next::RetryIn(delay) = schedule.next(2, None, unit) else {
                panic!()
            };
            assert!(
                delay >= Duration::from_secs(270) && delay <= Duration::from_secs(330),
                "{delay:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let schedule = RetrySchedule::default();
        assert_eq!(
            schedule.next(1, Some(Duration::from_secs(17)), 0.9),
            Next::RetryIn(Duration::from_secs(17))
        );
        assert_eq!(
            schedule.next(1, Some(Duration::ZERO), 0.9),
            Next::RetryIn(MIN_RETRY_AFTER)
        );
        assert_eq!(
            schedule.next(1, Some(Duration::from_secs(7 * 86400)), 0.9),
            Next::RetryIn(Duration::from_secs(86400))
        );
        assert_eq!(
            schedule.next(6, Some(Duration::from_secs(5)), 0.5),
            Next::Exhausted
        );
    }

    #[test]
    fn schedules_are_configurable_and_checked() {
        let fast = RetrySchedule::parse("10ms, 20ms", 0.0).unwrap();
        assert_eq!(
            fast.next(1, None, 0.3),
            Next::RetryIn(Duration::from_millis(10))
        );
        assert_eq!(
            fast.next(2, None, 0.3),
            Next::RetryIn(Duration::from_millis(20))
        );
        assert_eq!(fast.next(3, None, 0.3), Next::Exhausted);
        assert_eq!(
            RetrySchedule::parse("", 0.1).unwrap().next(1, None, 0.5),
            Next::Exhausted
        );
        assert_eq!(
            RetrySchedule::parse("1m,soon", 0.1),
            Err(ScheduleError::BadDelay("soon".into()))
        );
        assert_eq!(RetrySchedule::parse("0s", 0.1), Err(ScheduleError::Zero));
        assert_eq!(
            RetrySchedule::parse("1m", 1.5),
            Err(ScheduleError::BadJitter)
        );
    }
}
