// TEMPORARY stand-in until the real token bucket lands.
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct TokenBucket {
    capacity: f64,
    refill: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(capacity: f64, refill_per_sec: f64) -> Self {
        Self {
            capacity,
            refill: refill_per_sec,
            state: Mutex::new((capacity, Instant::now())),
        }
    }
    pub fn try_take(&self) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap();
        let now = Instant::now();
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.refill).min(self.capacity);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            Ok(())
        } else if self.refill > 0.0 {
            Err(Duration::from_secs_f64((1.0 - s.0) / self.refill))
        } else {
            Err(Duration::from_secs(3600))
        }
    }
    pub async fn take(&self, max_wait: Duration) -> bool {
        match self.try_take() {
            Ok(()) => true,
            Err(w) if w <= max_wait => {
                tokio::time::sleep(w).await;
                self.try_take().is_ok()
            }
            Err(_) => false,
        }
    }
}

pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: 0,
        }
    }
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1 << self.failures.min(20))
            .min(self.max);
        self.failures += 1;
        retry_after.map_or(exp, |r| r.max(exp.min(r)))
    }
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}
