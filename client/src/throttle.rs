//! Bandwidth limits: a pacer that keeps the average rate of block transfers at or below a
//! limit, changeable while transfers run (the daemon re-reads the settings before each pass).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Transfers are cut into batches of about this many seconds' worth at the limit, so a limited
/// transfer moves steadily instead of in long bursts and long pauses.
const BATCH_SECONDS: u64 = 1;

/// Smallest batch under a limit (a few blocks).
const BATCH_BYTES_MIN: usize = 256 * 1024;

/// Paces transfers in one direction.
#[derive(Debug, Default)]
pub struct Throttle {
    /// Bytes per second; 0 when unlimited.
    limit: AtomicU64,
    /// When the bytes sent so far are paid for at the limit.
    next_free: Mutex<Option<Instant>>,
}

impl Throttle {
    /// Sets the limit in bytes per second (`None` or 0: unlimited).
    pub fn set(&self, bytes_per_second: Option<u64>) {
        self.limit
            .store(bytes_per_second.unwrap_or(0), Ordering::Relaxed);
    }

    /// The limit, bytes per second.
    pub fn limit(&self) -> Option<u64> {
        Some(self.limit.load(Ordering::Relaxed)).filter(|&l| l > 0)
    }

    /// How many bytes to move per request: `unlimited` without a limit, else about
    /// [`BATCH_SECONDS`] at the limit (never under [`BATCH_BYTES_MIN`] nor over `unlimited`).
    pub fn batch_bytes(&self, unlimited: usize) -> usize {
        match self.limit() {
            None => unlimited,
            Some(limit) => usize::try_from(limit.saturating_mul(BATCH_SECONDS))
                .unwrap_or(usize::MAX)
                .clamp(BATCH_BYTES_MIN, unlimited.max(BATCH_BYTES_MIN)),
        }
    }

    /// Accounts `bytes` moved by a transfer that began at `started`, and sleeps until they are
    /// paid for at the limit.
    pub async fn pace(&self, started: Instant, bytes: u64) {
        let Some(limit) = self.limit() else {
            return;
        };
        let until = {
            let mut next_free = self
                .next_free
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let until = paid_until(*next_free, started, bytes, limit);
            *next_free = Some(until);
            until
        };
        tokio::time::sleep_until(until.into()).await;
    }
}

/// When `bytes` that began moving at `started` are paid for at `limit` bytes per second, after
/// what was paid for until `next_free` (idle time earns no credit beyond the transfer's start).
pub fn paid_until(next_free: Option<Instant>, started: Instant, bytes: u64, limit: u64) -> Instant {
    let begin = next_free.map_or(started, |free| free.max(started));
    #[allow(clippy::cast_precision_loss)]
    let cost = Duration::from_secs_f64(bytes as f64 / limit.max(1) as f64);
    begin + cost
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_are_paid_back_to_back_at_the_limit() {
        let t0 = Instant::now();
        let first = paid_until(None, t0, 1000, 1000);
        assert_eq!(first, t0 + Duration::from_secs(1));
        // A transfer that starts before the first is paid for queues behind it.
        let second = paid_until(Some(first), t0 + Duration::from_millis(100), 500, 1000);
        assert_eq!(second, t0 + Duration::from_millis(1500));
        // After an idle gap, no credit was saved up.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            paid_until(Some(second), later, 2000, 1000),
            later + Duration::from_secs(2)
        );
    }

    #[test]
    fn batches_shrink_to_about_a_second_under_a_limit() {
        let throttle = Throttle::default();
        assert_eq!(throttle.batch_bytes(16 << 20), 16 << 20);
        throttle.set(Some(4 << 20));
        assert_eq!(throttle.batch_bytes(16 << 20), 4 << 20);
        throttle.set(Some(1000));
        assert_eq!(throttle.batch_bytes(16 << 20), BATCH_BYTES_MIN);
        throttle.set(Some(0));
        assert_eq!(throttle.limit(), None);
    }

    #[tokio::test]
    async fn pace_holds_the_average_rate_down() {
        let throttle = Throttle::default();
        throttle.set(Some(1_000_000));
        let start = Instant::now();
        for _ in 0..10 {
            throttle.pace(Instant::now(), 50_000).await;
        }
        // 500 kB at 1 MB/s cannot take less than 0.5 s.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(490), "{took:?}");
        // Unlimited does not wait.
        throttle.set(None);
        let start = Instant::now();
        throttle.pace(Instant::now(), 1 << 30).await;
        assert!(start.elapsed() < Duration::from_millis(400));
    }
}
