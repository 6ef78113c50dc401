//! Rate limits on login and refresh, behind [`RateLimiter`]: the in-process
//! [`LocalRateLimiter`] is the embedded default; `crate::redis_shared::RedisRateLimiter` shares
//! counters between instances.
//!
//! The rule is a fixed window per key: at most `limit` hits per `window`. The decision
//! ([`Window::hit`]) is pure; the limiter only keeps windows in a bounded map.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::limits::RATE_LIMIT_KEYS_MAX;

/// A counting window for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start of the window, ms.
    pub start_ms: i64,
    /// Hits counted in it.
    pub hits: u32,
}

impl Window {
    /// Counts a hit at `now_ms`: the updated window, and `Err(retry_after)` when over `limit`.
    pub fn hit(self, now_ms: i64, limit: u32, window: Duration) -> (Window, Result<(), Duration>) {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let current = if now_ms - self.start_ms >= window_ms {
            Window {
                start_ms: now_ms,
                hits: 0,
            }
        } else {
            self
        };
        if current.hits >= limit {
            let left_ms = (current.start_ms + window_ms - now_ms).max(1);
            let retry = Duration::from_millis(u64::try_from(left_ms).unwrap_or(1));
            return (current, Err(retry));
        }
        (
            Window {
                hits: current.hits + 1,
                ..current
            },
            Ok(()),
        )
    }
}

/// Counts hits per key and refuses those over the limit.
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts a hit for `key`; `Err(retry_after)` when it is over `limit` per `window`.
    fn check<'a>(
        &'a self,
        key: &'a str,
        limit: u32,
        window: Duration,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<(), Duration>>;
}

/// The in-process limiter: windows in a map, bounded by [`RATE_LIMIT_KEYS_MAX`].
#[derive(Debug, Default)]
pub struct LocalRateLimiter {
    windows: Mutex<HashMap<String, Window>>,
}

impl RateLimiter for LocalRateLimiter {
    fn check<'a>(
        &'a self,
        key: &'a str,
        limit: u32,
        window: Duration,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<(), Duration>> {
        Box::pin(std::future::ready(self.count(key, limit, window, now_ms)))
    }
}

impl LocalRateLimiter {
    fn count(&self, key: &str, limit: u32, window: Duration, now_ms: i64) -> Result<(), Duration> {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if windows.len() >= RATE_LIMIT_KEYS_MAX && !windows.contains_key(key) {
            // Drop windows that have ended; if all are live, drop everything rather than grow:
            // forgetting counts errs on the side of letting users in.
            let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
            windows.retain(|_, w| now_ms - w.start_ms < window_ms);
            if windows.len() >= RATE_LIMIT_KEYS_MAX {
                windows.clear();
            }
        }
        let slot = windows.entry(key.to_owned()).or_insert(Window {
            start_ms: now_ms,
            hits: 0,
        });
        let (updated, verdict) = slot.hit(now_ms, limit, window);
        *slot = updated;
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn refuses_over_the_limit_until_the_window_ends() {
        let limiter = LocalRateLimiter::default();
        for _ in 0..5 {
            assert_eq!(limiter.count("user:ann", 5, MINUTE, 1_000), Ok(()));
        }
        assert_eq!(
            limiter.count("user:ann", 5, MINUTE, 31_000),
            Err(Duration::from_secs(30))
        );
        assert_eq!(
            limiter.count("user:bob", 5, MINUTE, 31_000),
            Ok(()),
            "keys are independent"
        );
        assert_eq!(
            limiter.count("user:ann", 5, MINUTE, 61_000),
            Ok(()),
            "a new window"
        );
    }
}
