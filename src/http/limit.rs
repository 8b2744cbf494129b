//! Per-source admission for `POST /v1/events`: a token bucket counting events (429 +
//! `Retry-After` when empty) and a cap on requests in flight (503 + `Retry-After`).
//!
//! Owns: the buckets and in-flight counts, keyed by source name. Must not touch: the body (the
//! check runs after authentication and before the body is read) or the sequencer.
//!
//! The event count of a request is known only once its body is parsed, but the check must come
//! before the body is read. So a request is admitted if its source has at least one token; it
//! spends one then, and the rest of its events once parsed ([`Admission::spend`]), which may
//! leave the bucket in debt. A source in debt is refused until the refill has paid it back. So a
//! batch larger than the burst is admissible (it borrows against the refill), and over any
//! interval `T` a source gets at most `burst + rate * T` events plus one request's overshoot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ApiError;

/// A monotonic clock: time since an arbitrary fixed origin (injectable so tests can step it).
pub type MonotonicClock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// The system's monotonic clock.
#[must_use]
pub fn system_monotonic_clock() -> MonotonicClock {
    let origin = Instant::now();
    Arc::new(move || origin.elapsed())
}

/// Per-source limits; 0 means unlimited.
#[derive(Clone)]
pub struct SourceLimits {
    /// Sustained events per second per source.
    pub rate: u64,
    /// Bucket size: events a source may send at once after being quiet.
    pub burst: u64,
    /// `POST /v1/events` requests one source may have in flight.
    pub concurrency: usize,
    /// Time for the buckets.
    pub clock: MonotonicClock,
}

impl Default for SourceLimits {
    fn default() -> Self {
        Self {
            rate: 100_000,
            burst: 200_000,
            concurrency: 128,
            clock: system_monotonic_clock(),
        }
    }
}

impl std::fmt::Debug for SourceLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceLimits")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// One token in the bucket's fixed-point unit (integer arithmetic, so boundaries are exact).
const TOKEN: i128 = 1_000_000;

#[derive(Debug)]
struct Bucket {
    /// Tokens times [`TOKEN`]; negative while in debt.
    tokens: i128,
    /// When `tokens` was last brought up to date, in microseconds of the clock.
    updated: i128,
    in_flight: usize,
}

/// The admission state of every source that has posted.
pub struct SourceLimiter {
    limits: SourceLimits,
    // A plain mutex: held for a few arithmetic operations and never across an await. The map
    // holds one entry per source that has posted (sources are registered, so it is bounded).
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl std::fmt::Debug for SourceLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceLimiter")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// An admitted request: holds its source's in-flight slot until dropped.
#[derive(Debug)]
#[must_use = "the in-flight slot is released when the admission is dropped"]
pub struct Admission {
    limiter: Arc<SourceLimiter>,
    source: String,
}

impl SourceLimiter {
    /// A limiter with empty state.
    #[must_use]
    pub fn new(mut limits: SourceLimits) -> Self {
        if limits.rate > 0 {
            // An empty bucket that can never hold a token would refuse everything.
            limits.burst = limits.burst.max(1);
        }
        Self {
            limits,
            buckets: Mutex::default(),
        }
    }

    /// The limits in force.
    #[must_use]
    pub fn limits(&self) -> &SourceLimits {
        &self.limits
    }

    fn now_micros(&self) -> i128 {
        i128::try_from((self.limits.clock)().as_micros()).unwrap_or(i128::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bucket>> {
        // A panic while holding the lock cannot leave a bucket half-updated in a way that
        // matters more than refusing every later request would.
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits one request of `source`, spending one token: 503 if the source already has
    /// `concurrency` requests in flight, 429 if its bucket is empty or in debt.
    pub fn admit(self: &Arc<Self>, source: &str) -> Result<Admission, ApiError> {
        let limits = &self.limits;
        let now = self.now_micros();
        let mut buckets = self.lock();
        let bucket = buckets.entry(source.to_owned()).or_insert_with(|| Bucket {
            tokens: i128::from(limits.burst) * TOKEN,
            updated: now,
            in_flight: 0,
        });
        if limits.concurrency > 0 && bucket.in_flight >= limits.concurrency {
            return Err(ApiError::Unavailable(format!(
                "source {source:?} has {} requests in flight, the most allowed (--source-concurrency)",
                limits.concurrency
            )));
        }
        if limits.rate > 0 {
            refill(bucket, limits, now);
            if bucket.tokens < TOKEN {
                let retry_after = seconds_until_one_token(bucket.tokens, limits.rate);
                return Err(ApiError::RateLimited {
                    message: format!(
                        "source {source:?} is over its rate of {} events/s (burst {}): retry in {retry_after} s",
                        limits.rate, limits.burst
                    ),
                    retry_after,
                });
            }
            bucket.tokens -= TOKEN;
        }
        bucket.in_flight += 1;
        Ok(Admission {
            limiter: Arc::clone(self),
            source: source.to_owned(),
        })
    }
}

/// Adds the tokens earned since the last update, up to the burst.
fn refill(bucket: &mut Bucket, limits: &SourceLimits, now: i128) {
    let elapsed = (now - bucket.updated).max(0);
    let capacity = i128::from(limits.burst) * TOKEN;
    // tokens += elapsed_us * rate (one token is 10^6 units, one second 10^6 us).
    bucket.tokens = bucket
        .tokens
        .saturating_add(elapsed.saturating_mul(i128::from(limits.rate)))
        .min(capacity);
    bucket.updated = bucket.updated.max(now);
}

/// Whole seconds until the bucket holds one token again (at least 1, as `Retry-After` needs).
fn seconds_until_one_token(tokens: i128, rate: u64) -> u64 {
    let missing = TOKEN - tokens;
    // Microseconds until the refill covers `missing`: ceil(missing / rate); then whole seconds.
    let micros = (missing + i128::from(rate) - 1) / i128::from(rate);
    let seconds = (micros + 999_999) / 1_000_000;
    u64::try_from(seconds.max(1)).unwrap_or(u64::MAX)
}

impl Admission {
    /// Charges the request's events beyond the one paid at admission (the bucket may go into
    /// debt: the next request of this source waits until it is repaid).
    pub fn spend(&self, events: usize) {
        let limits = &self.limiter.limits;
        if limits.rate == 0 || events <= 1 {
            return;
        }
        let now = self.limiter.now_micros();
        let mut buckets = self.limiter.lock();
        if let Some(bucket) = buckets.get_mut(&self.source) {
            refill(bucket, limits, now);
            let extra = i128::try_from(events - 1).unwrap_or(i128::MAX);
            bucket.tokens = bucket.tokens.saturating_sub(extra.saturating_mul(TOKEN));
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(bucket) = self.limiter.lock().get_mut(&self.source) {
            bucket.in_flight = bucket.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A clock the test moves by hand.
    fn manual_clock() -> (MonotonicClock, Arc<AtomicU64>) {
        let micros = Arc::new(AtomicU64::new(0));
        let read = Arc::clone(&micros);
        (
            Arc::new(move || Duration::from_micros(read.load(Ordering::SeqCst))),
            micros,
        )
    }

    fn limiter(rate: u64, burst: u64, concurrency: usize) -> (Arc<SourceLimiter>, Arc<AtomicU64>) {
        let (clock, micros) = manual_clock();
        let limiter = SourceLimiter::new(SourceLimits {
            rate,
            burst,
            concurrency,
            clock,
        });
        (Arc::new(limiter), micros)
    }

    fn retry_after(result: Result<Admission, ApiError>) -> u64 {
        match result {
            Err(ApiError::RateLimited { retry_after, .. }) => retry_after,
            other => panic!("expected 429, got {other:?}"),
        }
    }

    #[test]
    fn burst_then_exactly_the_refill_rate() {
        let (limiter, micros) = limiter(2, 3, 0);
        for _ in 0..3 {
            drop(limiter.admit("a").unwrap());
        }
        // Empty: one token takes 0.5 s at 2/s, reported as 1 s.
        assert_eq!(retry_after(limiter.admit("a")), 1);
        micros.store(499_999, Ordering::SeqCst);
        assert_eq!(retry_after(limiter.admit("a")), 1);
        micros.store(500_000, Ordering::SeqCst);
        drop(limiter.admit("a").unwrap());
        assert_eq!(retry_after(limiter.admit("a")), 1);
        // Other sources have their own buckets.
        drop(limiter.admit("b").unwrap());
        // A long pause refills only up to the burst.
        micros.store(100_000_000, Ordering::SeqCst);
        for _ in 0..3 {
            drop(limiter.admit("a").unwrap());
        }
        assert!(matches!(
            limiter.admit("a"),
            Err(ApiError::RateLimited { .. })
        ));
    }

    #[test]
    fn a_batch_larger_than_the_burst_is_admitted_and_repaid_before_the_next() {
        let (limiter, micros) = limiter(10, 5, 0);
        let admission = limiter.admit("a").unwrap();
        admission.spend(1000);
        drop(admission);
        // 5 - 1000 = -995 tokens; one more needs 996 tokens at 10/s = 99.6 s, so 100 s.
        assert_eq!(retry_after(limiter.admit("a")), 100);
        micros.store(99_599_999, Ordering::SeqCst);
        assert_eq!(retry_after(limiter.admit("a")), 1);
        micros.store(99_600_000, Ordering::SeqCst);
        drop(limiter.admit("a").unwrap());
    }

    #[test]
    fn in_flight_requests_are_capped_per_source_and_released_on_drop() {
        let (limiter, _) = limiter(0, 0, 2);
        let first = limiter.admit("a").unwrap();
        let second = limiter.admit("a").unwrap();
        assert!(matches!(limiter.admit("a"), Err(ApiError::Unavailable(_))));
        let other = limiter.admit("b").unwrap();
        drop(first);
        let third = limiter.admit("a").unwrap();
        drop((second, third, other));
    }

    #[test]
    fn zero_means_unlimited() {
        let (limiter, _) = limiter(0, 0, 0);
        let held: Vec<_> = (0..10_000).map(|_| limiter.admit("a").unwrap()).collect();
        held[0].spend(1_000_000);
        drop(limiter.admit("a").unwrap());
    }

    #[test]
    fn a_clock_stepping_back_refills_nothing() {
        let (limiter, micros) = limiter(1, 1, 0);
        micros.store(10_000_000, Ordering::SeqCst);
        drop(limiter.admit("a").unwrap());
        micros.store(0, Ordering::SeqCst);
        assert!(limiter.admit("a").is_err());
        micros.store(10_999_999, Ordering::SeqCst);
        assert!(limiter.admit("a").is_err());
        micros.store(11_000_000, Ordering::SeqCst);
        drop(limiter.admit("a").unwrap());
    }
}
