//! Pacing of upstream requests.
//!
//! * [`TokenBucket`] caps the request rate: a burst of `capacity` requests, then
//!   `refill_per_sec` on average. It is shared (`Arc`) by every task that talks to
//!   the upstream, so the quota holds for the whole process, not per task.
//! * [`Backoff`] spaces retries after failures (429, 5xx, timeouts): exponential
//!   with jitter, so many clients that failed together do not retry together, and
//!   never sooner than the upstream's own `Retry-After`.

use rand::Rng;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Floating-point slack when comparing token counts: refill math on `f64` can land
/// a hair below a whole token after exactly the advertised wait.
const EPSILON: f64 = 1e-9;

/// A token bucket: starts full, holds at most `capacity` tokens, gains
/// `refill_per_sec` tokens per second; one request costs one token.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    refill_per_sec: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    /// When `tokens` was last brought up to date; refill is computed from here.
    updated_at: Instant,
}

impl TokenBucket {
    /// The wait reported when no token will ever come. Finite on purpose: callers
    /// add waits to `Instant`s and turn them into milliseconds, and
    /// `Duration::MAX` would overflow both.
    pub const NEVER: Duration = Duration::from_secs(365 * 24 * 60 * 60);

    /// Negative or non-finite settings count as zero: a bucket with capacity below
    /// one never grants a token, one with zero refill grants only its initial burst.
    pub fn new(capacity: f64, refill_per_sec: f64) -> Self {
        Self::new_at(capacity, refill_per_sec, Instant::now())
    }

    fn new_at(capacity: f64, refill_per_sec: f64, now: Instant) -> Self {
        let capacity = sanitize(capacity);
        Self {
            capacity,
            refill_per_sec: sanitize(refill_per_sec),
            state: Mutex::new(BucketState {
                tokens: capacity,
                updated_at: now,
            }),
        }
    }

    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    pub fn refill_per_sec(&self) -> f64 {
        self.refill_per_sec
    }

    /// Tokens available now (fractional), for stats and logs.
    pub fn available(&self) -> f64 {
        self.available_at(Instant::now())
    }

    fn available_at(&self, now: Instant) -> f64 {
        let mut state = self.lock();
        self.refill(&mut state, now);
        state.tokens
    }

    /// Takes a token if one is available. Otherwise tells how long until one will
    /// be; [`Self::NEVER`] when none ever will (zero refill, or capacity below one).
    pub fn try_take(&self) -> Result<(), Duration> {
        self.try_take_at(Instant::now())
    }

    /// [`Self::try_take`] at a given instant, so tests control time. Instants
    /// earlier than one already seen are treated as that one (no negative refill).
    pub fn try_take_at(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.lock();
        self.refill(&mut state, now);
        if state.tokens + EPSILON >= 1.0 {
            state.tokens = (state.tokens - 1.0).max(0.0);
            return Ok(());
        }
        Err(self.wait_for_next(state.tokens))
    }

    /// How long until a token is available, without taking one; zero if one is
    /// available now. For reporting ("retry in N ms") after [`Self::take`] failed.
    pub fn time_until_available(&self) -> Duration {
        self.time_until_available_at(Instant::now())
    }

    /// [`Self::time_until_available`] at a given instant.
    pub fn time_until_available_at(&self, now: Instant) -> Duration {
        let mut state = self.lock();
        self.refill(&mut state, now);
        if state.tokens + EPSILON >= 1.0 {
            Duration::ZERO
        } else {
            self.wait_for_next(state.tokens)
        }
    }

    fn wait_for_next(&self, tokens: f64) -> Duration {
        if self.capacity + EPSILON < 1.0 || self.refill_per_sec <= 0.0 {
            return Self::NEVER;
        }
        let secs = (1.0 - tokens) / self.refill_per_sec;
        // Round up to the next microsecond so that waiting exactly this long is
        // enough; rounding down would make callers spin on a sub-microsecond wait.
        let micros = (secs * 1e6).ceil();
        if !micros.is_finite() || micros >= Self::NEVER.as_micros() as f64 {
            return Self::NEVER;
        }
        Duration::from_micros(micros as u64)
    }

    /// Waits for a token, at most `max_wait`. Returns false, without waiting the
    /// whole `max_wait`, as soon as it is clear no token will come in time.
    pub async fn take(&self, max_wait: Duration) -> bool {
        let deadline = Instant::now().checked_add(max_wait);
        loop {
            let wait = match self.try_take() {
                Ok(()) => return true,
                // Never is never, whatever the caller is willing to wait.
                Err(wait) if wait >= Self::NEVER => return false,
                Err(wait) => wait,
            };
            let now = Instant::now();
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(now),
                None => Duration::MAX,
            };
            if wait > left {
                return false;
            }
            // Another task may take the token first; the loop then waits again.
            tokio::time::sleep(wait).await;
        }
    }

    fn refill(&self, state: &mut BucketState, now: Instant) {
        let elapsed = now.saturating_duration_since(state.updated_at);
        if now > state.updated_at {
            state.updated_at = now;
        }
        let gained = elapsed.as_secs_f64() * self.refill_per_sec;
        state.tokens = (state.tokens + gained).min(self.capacity);
    }

    fn lock(&self) -> MutexGuard<'_, BucketState> {
        // The state is two numbers updated together under the lock, so a panic
        // elsewhere cannot leave it half-written; carrying on is safe.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn sanitize(value: f64) -> f64 {
    if value.is_finite() && value > 0.0 {
        value
    } else {
        0.0
    }
}

/// Exponential backoff with equal jitter: after the n-th consecutive failure
/// (counting from zero) the delay is uniformly drawn from
/// `[d/2, d]` where `d = min(base * 2^n, max)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// `max` below `base` is raised to `base`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            failures: 0,
        }
    }

    /// Counts a failure and returns how long to wait before the next attempt.
    /// A `retry_after` from the upstream is a floor: the delay is never shorter,
    /// even if it exceeds `max`, because retrying earlier only earns another 429.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        self.next_delay_with(retry_after, &mut rand::thread_rng())
    }

    /// [`Self::next_delay`] with a given random source, so tests are repeatable.
    pub fn next_delay_with<R: Rng + ?Sized>(
        &mut self,
        retry_after: Option<Duration>,
        rng: &mut R,
    ) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        let spread = ceiling - half;
        let jitter = spread.mul_f64(rng.gen_range(0.0..=1.0));
        let delay = half + jitter;
        match retry_after {
            Some(floor) => delay.max(floor),
            None => delay,
        }
    }

    /// The upper bound of the next delay (before any `retry_after`).
    pub fn ceiling(&self) -> Duration {
        // 2^31 * base overflows any sensible base; past that the cap applies anyway.
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// Forgets past failures, after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures since creation or the last [`Self::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn starts_full_and_empties() {
        let t0 = Instant::now();
        let bucket = TokenBucket::new_at(3.0, 0.0, t0);
        for _ in 0..3 {
            assert_eq!(bucket.try_take_at(t0), Ok(()));
        }
        assert_eq!(bucket.try_take_at(t0), Err(TokenBucket::NEVER));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(bucket.try_take_at(later), Err(TokenBucket::NEVER));
        // Reported waits stay usable in time arithmetic.
        assert!(later.checked_add(TokenBucket::NEVER).is_some());
    }

    #[test]
    fn refills_at_the_configured_rate_up_to_capacity() {
        let t0 = Instant::now();
        let bucket = TokenBucket::new_at(2.0, 0.5, t0);
        assert!(bucket.try_take_at(t0).is_ok());
        assert!(bucket.try_take_at(t0).is_ok());
        // Empty: one token every two seconds.
        assert_eq!(bucket.try_take_at(t0), Err(Duration::from_secs(2)));
        assert_eq!(bucket.try_take_at(t0 + ms(500)), Err(ms(1500)));
        assert!(bucket.try_take_at(t0 + Duration::from_secs(2)).is_ok());
        // A long idle period refills only up to capacity.
        let later = t0 + Duration::from_secs(1000);
        assert!((bucket.available_at(later) - 2.0).abs() < 1e-9);
        assert!(bucket.try_take_at(later).is_ok());
        assert!(bucket.try_take_at(later).is_ok());
        assert!(bucket.try_take_at(later).is_err());
    }

    #[test]
    fn the_returned_wait_is_enough_and_not_much_more() {
        let t0 = Instant::now();
        let bucket = TokenBucket::new_at(1.0, 3.0, t0);
        assert!(bucket.try_take_at(t0).is_ok());
        let wait = bucket.try_take_at(t0).unwrap_err();
        assert!(wait >= Duration::from_secs_f64(1.0 / 3.0));
        assert!(wait <= Duration::from_secs_f64(1.0 / 3.0) + Duration::from_micros(2));
        assert!(bucket
            .try_take_at(t0 + wait - Duration::from_micros(5))
            .is_err());
        assert!(bucket.try_take_at(t0 + wait).is_ok());
    }

    #[test]
    fn peeking_at_the_wait_takes_nothing() {
        let t0 = Instant::now();
        let bucket = TokenBucket::new_at(1.0, 2.0, t0);
        assert_eq!(bucket.time_until_available_at(t0), Duration::ZERO);
        assert_eq!(bucket.time_until_available_at(t0), Duration::ZERO);
        assert!(bucket.try_take_at(t0).is_ok());
        assert_eq!(bucket.time_until_available_at(t0 + ms(100)), ms(400));
        assert_eq!(bucket.try_take_at(t0 + ms(100)), Err(ms(400)));
        let empty = TokenBucket::new_at(0.0, 0.0, t0);
        assert_eq!(empty.time_until_available_at(t0), TokenBucket::NEVER);
    }

    #[test]
    fn never_grants_more_than_capacity_plus_refill() {
        let t0 = Instant::now();
        let (capacity, rate) = (5.0, 10.0);
        let bucket = TokenBucket::new_at(capacity, rate, t0);
        let mut granted = 0u32;
        // Hammer it every millisecond for two seconds.
        for step in 0..=2000u64 {
            let now = t0 + ms(step);
            while bucket.try_take_at(now).is_ok() {
                granted += 1;
            }
            let allowed = capacity + rate * (step as f64 / 1000.0);
            assert!(
                f64::from(granted) <= allowed + 1e-6,
                "{granted} > {allowed}"
            );
        }
        assert_eq!(granted, 25);
    }

    #[test]
    fn time_going_backwards_grants_nothing() {
        let t0 = Instant::now();
        let bucket = TokenBucket::new_at(1.0, 1.0, t0 + Duration::from_secs(10));
        assert!(bucket.try_take_at(t0 + Duration::from_secs(10)).is_ok());
        assert!(bucket.try_take_at(t0).is_err());
        assert!(bucket.try_take_at(t0 + Duration::from_secs(10)).is_err());
    }

    #[test]
    fn degenerate_settings_never_grant_or_panic() {
        let t0 = Instant::now();
        for (cap, rate) in [
            (0.0, 1.0),
            (0.5, 100.0),
            (f64::NAN, 1.0),
            (-3.0, f64::INFINITY),
        ] {
            let bucket = TokenBucket::new_at(cap, rate, t0);
            assert_eq!(
                bucket.try_take_at(t0 + Duration::from_secs(5)),
                Err(TokenBucket::NEVER)
            );
        }
        let tiny = TokenBucket::new_at(1.0, 1e-300, t0);
        assert!(tiny.try_take_at(t0).is_ok());
        assert_eq!(tiny.try_take_at(t0), Err(TokenBucket::NEVER));
    }

    #[tokio::test]
    async fn take_waits_for_a_refill_within_the_deadline() {
        let bucket = TokenBucket::new(1.0, 50.0);
        assert!(bucket.take(Duration::ZERO).await);
        let started = Instant::now();
        assert!(bucket.take(Duration::from_secs(5)).await);
        assert!(started.elapsed() >= ms(19));
    }

    #[tokio::test]
    async fn take_gives_up_at_once_when_the_wait_is_too_long() {
        let bucket = TokenBucket::new(1.0, 0.01);
        assert!(bucket.take(Duration::ZERO).await);
        let started = Instant::now();
        assert!(!bucket.take(Duration::from_secs(1)).await);
        assert!(started.elapsed() < Duration::from_secs(1));
        let empty = TokenBucket::new(0.0, 0.0);
        assert!(!empty.take(Duration::MAX).await);
    }

    #[test]
    fn backoff_doubles_within_jitter_bounds_and_caps() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut backoff = Backoff::new(ms(100), ms(1000));
        let ceilings = [100, 200, 400, 800, 1000, 1000, 1000];
        for (n, ceiling) in ceilings.into_iter().enumerate() {
            assert_eq!(backoff.failures(), n as u32);
            let delay = backoff.next_delay_with(None, &mut rng);
            assert!(
                delay >= ms(ceiling / 2) && delay <= ms(ceiling),
                "{n}: {delay:?}"
            );
        }
        for _ in 0..100 {
            assert!(backoff.next_delay(None) <= ms(1000));
        }
    }

    #[test]
    fn backoff_jitter_actually_varies() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<Duration> = (0..20)
            .map(|_| {
                let mut b = Backoff::new(ms(1000), ms(1000));
                b.next_delay_with(None, &mut rng)
            })
            .collect();
        assert!(delays.iter().any(|d| *d != delays[0]));
    }

    #[test]
    fn backoff_honours_retry_after() {
        let mut backoff = Backoff::new(ms(100), ms(1000));
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert!(backoff.next_delay(Some(ms(1))) >= ms(100));
        assert_eq!(backoff.failures(), 2);
    }

    #[test]
    fn backoff_reset_starts_over_and_huge_counts_do_not_overflow() {
        let mut backoff = Backoff::new(ms(100), Duration::from_secs(60));
        for _ in 0..200 {
            assert!(backoff.next_delay(None) <= Duration::from_secs(60));
        }
        assert_eq!(backoff.failures(), 200);
        assert_eq!(backoff.ceiling(), Duration::from_secs(60));
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert!(backoff.next_delay(None) <= ms(100));
        let odd = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(odd.ceiling(), Duration::from_secs(5));
    }
}
