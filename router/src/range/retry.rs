//! The client-side retry loop: follow leader hints at once, back off on
//! "busy" answers, and give up after a bounded number of attempts or a
//! deadline. Time comes from tokio, so tests run on paused (virtual) time.

use std::future::Future;
use std::time::Duration;

/// How hard to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub attempts_max: u32,
    /// First back-off; doubles each time up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Overall deadline from the first attempt.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts_max: 10,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(1_000),
            deadline: Duration::from_secs(10),
        }
    }
}

/// What one failed attempt says about the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt<E> {
    /// A hint points elsewhere (a leader, fresh descriptors): retry now.
    Redirect(E),
    /// Temporarily unable (no leader yet, busy): retry after a back-off.
    Backoff(E),
    /// The request itself is wrong: do not retry.
    Fail(E),
}

/// Why the retry loop gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryError<E: std::fmt::Debug> {
    #[error("gave up after {attempts} attempts; last error: {last:?}")]
    Exhausted { attempts: u32, last: E },
    /// `last` is `None` when the attempt in progress overran the deadline.
    #[error("deadline passed after {attempts} attempts; last error: {last:?}")]
    DeadlineExceeded { attempts: u32, last: Option<E> },
    #[error("request failed: {0:?}")]
    Failed(E),
}

/// Run `op` until it succeeds or the policy says stop. `op` gets the
/// attempt number (0-based).
pub async fn retry<T, E, F, Fut>(policy: &RetryPolicy, mut op: F) -> Result<T, RetryError<E>>
where
    E: std::fmt::Debug,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Attempt<E>>>,
{
    let deadline = tokio::time::Instant::now() + policy.deadline;
    let mut backoff = policy.backoff_initial;
    let mut attempt = 0;
    loop {
        let Ok(outcome) = tokio::time::timeout_at(deadline, op(attempt)).await else {
            return Err(RetryError::DeadlineExceeded {
                attempts: attempt + 1,
                last: None,
            });
        };
        attempt += 1;
        let (last, wait) = match outcome {
            Ok(value) => return Ok(value),
            Err(Attempt::Fail(e)) => return Err(RetryError::Failed(e)),
            Err(Attempt::Redirect(e)) => (e, Duration::ZERO),
            Err(Attempt::Backoff(e)) => {
                let wait = backoff;
                backoff = (backoff * 2).min(policy.backoff_max);
                (e, wait)
            }
        };
        if attempt >= policy.attempts_max {
            return Err(RetryError::Exhausted {
                attempts: attempt,
                last,
            });
        }
        if tokio::time::Instant::now() + wait >= deadline {
            return Err(RetryError::DeadlineExceeded {
                attempts: attempt,
                last: Some(last),
            });
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn redirects_are_immediate_and_backoff_doubles() {
        let policy = RetryPolicy::default();
        let started = tokio::time::Instant::now();
        // Two redirects, then two busy answers, then success.
        let result: Result<u32, RetryError<&str>> = retry(&policy, |attempt| async move {
            match attempt {
                0 | 1 => Err(Attempt::Redirect("not leader")),
                2 | 3 => Err(Attempt::Backoff("busy")),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(result, Ok(4));
        // 10 ms + 20 ms of back-off on virtual time, none for redirects.
        assert_eq!(started.elapsed(), Duration::from_millis(30));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_on_attempts_deadline_and_failures() {
        let policy = RetryPolicy {
            attempts_max: 3,
            ..RetryPolicy::default()
        };
        let exhausted: Result<(), _> =
            retry(&policy, |_| async { Err(Attempt::Redirect("moved")) }).await;
        assert_eq!(
            exhausted,
            Err(RetryError::Exhausted {
                attempts: 3,
                last: "moved"
            })
        );

        let failed: Result<(), _> =
            retry(&policy, |_| async { Err(Attempt::Fail("bad key")) }).await;
        assert_eq!(failed, Err(RetryError::Failed("bad key")));

        let short = RetryPolicy {
            attempts_max: 100,
            deadline: Duration::from_millis(100),
            ..RetryPolicy::default()
        };
        let late: Result<(), _> = retry(&short, |_| async { Err(Attempt::Backoff("busy")) }).await;
        assert!(matches!(
            late,
            Err(RetryError::DeadlineExceeded {
                last: Some("busy"),
                ..
            })
        ));

        let hung: Result<(), RetryError<&str>> = retry(&short, |_| std::future::pending()).await;
        assert_eq!(
            hung,
            Err(RetryError::DeadlineExceeded {
                attempts: 1,
                last: None
            })
        );
    }
}
