//! Who may open a WebSocket at all, decided before anything else of the
//! upgrade (and before the database is asked):
//! * **Origin** (`server.allowed_origins`): a browser always says which page
//!   opens a socket. One of another site could otherwise ride on a user's
//!   credentials (cross-site WebSocket hijacking), so a foreign `Origin` is
//!   refused with 403. The service's own origin and clients that send no
//!   `Origin` (not browsers) are let in.
//! * **Connect rate** (`limits.connects_per_ip_per_s`, with a burst of twice
//!   that): a token bucket per client address; beyond it, 429 with
//!   `Retry-After`. The table of addresses is bounded: idle addresses (whose
//!   bucket is full again) are dropped first, then the longest idle, so
//!   many addresses cannot grow it without end.

use actix_web::HttpRequest;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Most client addresses tracked at once.
pub const MAX_TRACKED: usize = 65_536;

/// Whether an upgrade's `Origin` is acceptable.
pub fn origin_allowed(req: &HttpRequest, allowed: &[String]) -> bool {
    let Some(origin) = req.headers().get(actix_web::http::header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    // The page's own origin: same host (and port) as the request.
    let host = req
        .headers()
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok());
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Per-address connect budgets.
pub struct ConnectLimiter {
    /// Tokens per second (0: no limit).
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    max_tracked: usize,
}

impl ConnectLimiter {
    pub fn new(per_second: u32) -> Self {
        Self::with_bound(per_second, MAX_TRACKED)
    }

    pub fn with_bound(per_second: u32, max_tracked: usize) -> Self {
        let rate = f64::from(per_second);
        Self {
            rate,
            burst: rate * 2.0,
            buckets: Mutex::new(HashMap::new()),
            max_tracked: max_tracked.max(1),
        }
    }

    /// Takes a connect for `ip`, or says how long until one is allowed.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        // A counter of two numbers per address: a panic elsewhere cannot
        // leave one half written.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(&ip) && buckets.len() >= self.max_tracked {
            self.make_room(&mut buckets, now);
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }

    /// Drops the addresses whose bucket is full again (they are as good as
    /// new), or else the longest idle one.
    fn make_room(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let refill = Duration::from_secs_f64(self.burst / self.rate);
        buckets.retain(|_, b| now.saturating_duration_since(b.updated) < refill);
        if buckets.len() >= self.max_tracked {
            if let Some(oldest) = buckets
                .iter()
                .min_by_key(|(_, b)| b.updated)
                .map(|(ip, _)| *ip)
            {
                buckets.remove(&oldest);
            }
        }
    }

    pub fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn a_burst_then_the_rate() {
        let l = ConnectLimiter::new(5);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(l.check_at(ip(1), t0).is_ok());
        }
        let wait = l.check_at(ip(1), t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(200));
        assert!(l.check_at(ip(2), t0).is_ok(), "per address");
        assert!(l.check_at(ip(1), t0 + Duration::from_millis(200)).is_ok());
        assert!(l.check_at(ip(1), t0 + Duration::from_millis(200)).is_err());
    }

    #[test]
    fn zero_means_no_limit() {
        let l = ConnectLimiter::new(0);
        for _ in 0..1000 {
            assert!(l.check(ip(1)).is_ok());
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn many_addresses_cannot_grow_the_table() {
        let l = ConnectLimiter::with_bound(1, 100);
        let t0 = Instant::now();
        for n in 0..10_000 {
            let _ = l.check_at(ip(n), t0 + Duration::from_millis(u64::from(n)));
            assert!(l.tracked() <= 100);
        }
        // An address that is busy now keeps its (empty) bucket.
        let now = t0 + Duration::from_secs(20);
        let _ = l.check_at(ip(1), now);
        let _ = l.check_at(ip(1), now);
        assert!(l.check_at(ip(1), now).is_err());
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://dash.example".to_owned()];
        let req = |origin: Option<&str>| {
            let mut r = TestRequest::default().insert_header(("host", "127.0.0.1:8080"));
            if let Some(o) = origin {
                r = r.insert_header(("origin", o));
            }
            r.to_http_request()
        };
        assert!(origin_allowed(&req(None), &[]));
        assert!(origin_allowed(&req(Some("http://127.0.0.1:8080")), &[]));
        assert!(!origin_allowed(&req(Some("http://127.0.0.1:8081")), &[]));
        assert!(!origin_allowed(&req(Some("https://evil.example")), &[]));
        assert!(!origin_allowed(&req(Some("null")), &[]));
        assert!(origin_allowed(&req(Some("https://dash.example")), &allowed));
    }
}
