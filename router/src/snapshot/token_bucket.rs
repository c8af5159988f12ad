//! Node-wide bytes-per-second limit of snapshot sends.
//!
//! It runs on `tokio::time`, so tests pause the tokio clock
//! (`#[tokio::test(start_paused = true)]`) and measure transfer durations in
//! virtual time, deterministic and instant.

use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

/// A token bucket in "debt" form: `acquire(n)` always takes its `n` tokens
/// at once, possibly driving the balance negative, then sleeps until the
/// balance is back to zero. Callers are served in the order they call, a
/// chunk is never split, and the long-run rate is exactly `rate` even for
/// chunks larger than the burst.
#[derive(Debug)]
pub struct TokenBucket {
    bytes_per_sec: f64,
    burst_bytes: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket holding `burst_bytes`, refilled at `bytes_per_sec`.
    ///
    /// ```
    /// # tokio_test_block_on(async {
    /// use flotilla_router::snapshot::TokenBucket;
    /// let bucket = TokenBucket::new(1 << 20, 1 << 20);
    /// bucket.acquire(1 << 20).await; // the burst: no wait
    /// # });
    /// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
    /// # }
    /// ```
    pub fn new(bytes_per_sec: u64, burst_bytes: u64) -> TokenBucket {
        TokenBucket {
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            burst_bytes: burst_bytes as f64,
            state: Mutex::new(State {
                tokens: burst_bytes as f64,
                refilled_at: Instant::now(),
            }),
        }
    }

    /// Takes `bytes` tokens, waiting as long as the rate requires.
    pub async fn acquire(&self, bytes: u64) {
        let wait = {
            let mut state = self.state.lock();
            let now = Instant::now();
            let elapsed = now
                .saturating_duration_since(state.refilled_at)
                .as_secs_f64();
            state.tokens = (state.tokens + elapsed * self.bytes_per_sec).min(self.burst_bytes);
            state.refilled_at = now;
            state.tokens -= bytes as f64;
            if state.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-state.tokens / self.bytes_per_sec)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}
