//! Failed requests logged at most once per interval per cause, so that no
//! client can grow the log at will: the first failure of a cause is logged,
//! the ones after it within the interval are counted, and the next one
//! logged says how many there were.
//!
//! A cause is the operation, the task type's metrics label (bounded: an
//! unknown type is `_unknown`) and the gRPC code, so there are few causes,
//! whatever the requests; the metrics count every failure.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// How long a cause stays quiet after it was logged.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What a failure is, for logging.
pub type Cause = (&'static str, String, tonic::Code);

/// The causes logged lately.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    causes: Mutex<HashMap<Cause, Window>>,
}

#[derive(Debug)]
struct Window {
    logged_at: Instant,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new(LOG_INTERVAL)
    }
}

impl LogLimiter {
    /// Logs each cause at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            causes: Mutex::default(),
        }
    }

    /// Whether a failure of `cause` is logged now; if so, how many of its
    /// failures were not since it last was.
    pub fn admit(&self, cause: Cause) -> Option<u64> {
        let now = Instant::now();
        let mut causes = self.causes.lock().unwrap_or_else(PoisonError::into_inner);
        match causes.get_mut(&cause) {
            Some(window) if now.duration_since(window.logged_at) < self.interval => {
                window.suppressed += 1;
                None
            }
            Some(window) => {
                let suppressed = std::mem::take(&mut window.suppressed);
                window.logged_at = now;
                Some(suppressed)
            }
            None => {
                causes.insert(
                    cause,
                    Window {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause(code: tonic::Code) -> Cause {
        ("get", "echo".to_owned(), code)
    }

    #[test]
    fn a_cause_is_logged_once_per_interval_with_what_it_held_back() {
        let limiter = LogLimiter::new(Duration::from_millis(50));
        assert_eq!(limiter.admit(cause(tonic::Code::InvalidArgument)), Some(0));
        for _ in 0..5 {
            assert_eq!(limiter.admit(cause(tonic::Code::InvalidArgument)), None);
        }
        // Another cause has a window of its own.
        assert_eq!(limiter.admit(cause(tonic::Code::NotFound)), Some(0));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(limiter.admit(cause(tonic::Code::InvalidArgument)), Some(5));
        assert_eq!(limiter.admit(cause(tonic::Code::InvalidArgument)), None);
    }
}
