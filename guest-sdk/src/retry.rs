//! When [`crate::http`] repeats a request, fixed by `wit/fixtures/http.json`
//! (`retry`) and checked against it by both SDKs' tests:
//!
//! - **what is repeated**: a request safe to repeat (GET, HEAD, OPTIONS,
//!   PUT, DELETE; a POST or PATCH only when marked
//!   [`idempotent`](crate::http::Request::idempotent)) whose attempt was
//!   throttled or found the service unavailable (429, 502, 503, 504), or
//!   failed before anything was sent (`DNS-timeout`, `connection-refused`,
//!   `connection-timeout`);
//! - **how often**: at most [`Retry::max_retries`] times per request and
//!   [`CALL_BUDGET`] times per call, across its requests;
//! - **when**: after the service's `Retry-After` (seconds or an HTTP date),
//!   else after a jittered exponential backoff ([`backoff_bounds`]);
//! - **within the call's deadline**: the last part of the time left when
//!   the request was first sent is kept for the answer ([`reserve`]); a
//!   retry whose wait and a shortest attempt would not end before it is
//!   not made, and every attempt's timeout ends before it. When retries are
//!   spent, the last attempt's answer or error is the request's.

use std::time::Duration;

/// The statuses that are retried: throttled, or the service unavailable.
pub(crate) const STATUSES: [u16; 4] = [429, 502, 503, 504];

/// The wasi:http error codes (WIT case names) of failures that happened
/// before anything was sent, which are retried.
pub(crate) const ERROR_CODES: [&str; 3] =
    ["DNS-timeout", "connection-refused", "connection-timeout"];

/// The methods repeated without being marked idempotent.
pub(crate) const SAFE_METHODS: [&str; 5] = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"];

/// Retries one call may make across all its requests.
pub const CALL_BUDGET: u32 = 8;

/// The shortest attempt a retry must leave time for.
pub const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// The most of the call's time kept for the answer.
const MAX_RESERVE: Duration = Duration::from_secs(1);

/// How a request is repeated: [`Retry::default`] for every request; turn it
/// off with [`Retry::none`] (or [`crate::http::Request::no_retry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    max_retries: u32,
    base_delay: Duration,
    max_delay: Duration,
}

impl Default for Retry {
    /// Four retries, the first after 125 to 250 ms, each range doubling up
    /// to 4 to 8 s.
    fn default() -> Self {
        Self {
            max_retries: 4,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl Retry {
    /// No retries: the first attempt's answer or error is the request's.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// At most `retries` retries of the request.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// The backoff: retry `n` waits between half and all of
    /// `base · 2^(n-1)`, at most `max`.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.base_delay = base;
        self.max_delay = max.max(base);
        self
    }

    /// Retries allowed for one request.
    pub(crate) fn retries(&self) -> u32 {
        self.max_retries
    }

    /// The shortest and longest wait before retry `attempt` (1 for the
    /// first) when the service says nothing.
    pub fn backoff_bounds(&self, attempt: u32) -> (Duration, Duration) {
        let doublings = attempt.saturating_sub(1).min(30);
        let longest = self
            .base_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay);
        (longest / 2, longest)
    }

    /// The wait before retry `attempt`, `random` picking it within
    /// [`Retry::backoff_bounds`].
    pub(crate) fn wait(&self, attempt: u32, random: u64) -> Duration {
        let (shortest, longest) = self.backoff_bounds(attempt);
        let span = u64::try_from((longest - shortest).as_millis()).unwrap_or(u64::MAX);
        shortest + Duration::from_millis(random % (span + 1))
    }
}

/// Whether a request with `method` may be repeated.
pub fn repeatable(method: &str, idempotent: bool) -> bool {
    idempotent || SAFE_METHODS.contains(&method)
}

/// Whether an answer with `status` is retried.
pub fn retried_status(status: u16) -> bool {
    STATUSES.contains(&status)
}

/// Whether a failure with wasi:http error code `case` (its WIT name) is
/// retried.
pub fn retried_code(case: &str) -> bool {
    ERROR_CODES.contains(&case)
}

/// The time kept for the answer out of `first_left`, the time the call had
/// left when the request was first sent: a fifth of it, at most a second.
pub fn reserve(first_left: Duration) -> Duration {
    (first_left / 5).min(MAX_RESERVE)
}

/// The wait a `Retry-After` value asks for, `now` being the wall clock in
/// seconds since the Unix epoch: whole seconds, or an HTTP date (a date
/// past is no wait). `None` when it is neither.
pub fn retry_after(value: &str, now: u64) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let at = http_date(value)?;
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Seconds since the Unix epoch of an IMF-fixdate (`Sun, 06 Nov 1994
/// 08:49:37 GMT`), the form HTTP dates are sent in.
fn http_date(text: &str) -> Option<u64> {
    let rest = text.split_once(", ")?.1;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as u64 + 1;
    let day: u64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let year: u64 = year.parse().ok().filter(|y| *y >= 1970)?;
    let clock: Vec<u64> = time
        .split(':')
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    let [hours, minutes, seconds] = clock.as_slice() else {
        return None;
    };
    if *hours > 23 || *minutes > 59 || *seconds > 60 {
        return None;
    }
    Some(days_since_epoch(year, month, day) * 86_400 + hours * 3600 + minutes * 60 + seconds)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's days-from-civil), for years from 1970.
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_read_to_the_second() {
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            http_date("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(1_835_438_400)
        );
        assert_eq!(http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 UTC"), None);
    }

    #[test]
    fn a_wait_is_within_its_bounds() {
        let retry = Retry::default();
        for attempt in 1..10 {
            let (shortest, longest) = retry.backoff_bounds(attempt);
            for random in [0, 1, 77, u64::MAX] {
                let wait = retry.wait(attempt, random);
                assert!(shortest <= wait && wait <= longest, "{attempt}: {wait:?}");
            }
        }
    }
}
