//! One rate budget for the cluster: `upstream.rate_limit.*` as a GCRA
//! (generic cell rate algorithm, the token bucket's equivalent) in one Lua
//! script, with integer microseconds of Redis `TIME`, so the sum of every
//! instance's requests never exceeds `capacity + refill × window`, whatever
//! the instances' clocks say.
//!
//! State is one key, `PREFIX:bucket`: the theoretical arrival time of the
//! next request. It expires when the bucket would be full again.

use super::Cluster;
use crate::feed::RateLimiter;
use futures_util::future::{BoxFuture, FutureExt};
use redis::Script;
use std::sync::Arc;
use std::time::Duration;

/// Answers 0 when a request may go now, else how many microseconds until
/// one may.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - burst
if now < allow_at then return allow_at - now end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1000)
return 0
";

/// The longest interval between requests used for "no refill": beyond it a
/// request is a matter of decades, and Lua's doubles still count exactly.
const NEVER_US: u64 = 1_000_000_000_000_000;

pub struct RedisLimiter {
    cluster: Arc<Cluster>,
    /// Microseconds between requests at the sustained rate.
    interval_us: u64,
    /// How far ahead of the sustained rate a burst may run (capacity - 1
    /// intervals).
    burst_us: u64,
}

impl RedisLimiter {
    pub fn new(cluster: Arc<Cluster>, capacity: f64, refill_per_sec: f64) -> Self {
        let interval_us = if refill_per_sec > 0.0 {
            ((1e6 / refill_per_sec).ceil() as u64).clamp(1, NEVER_US)
        } else {
            NEVER_US
        };
        let burst_us = ((capacity.max(1.0).floor() as u64) - 1).saturating_mul(interval_us);
        Self {
            cluster,
            interval_us,
            burst_us: burst_us.min(NEVER_US),
        }
    }

    async fn try_take(&self) -> redis::RedisResult<Duration> {
        let mut conn = self.cluster.redis.conn();
        let wait_us: u64 = Script::new(GCRA)
            .key(self.cluster.keys.key("bucket"))
            .arg(self.interval_us)
            .arg(self.burst_us)
            .invoke_async(&mut conn)
            .await?;
        Ok(Duration::from_micros(wait_us))
    }
}

impl RateLimiter for RedisLimiter {
    fn acquire(&self, max_wait: Duration) -> BoxFuture<'_, Result<(), Duration>> {
        async move {
            let deadline = tokio::time::Instant::now() + max_wait;
            loop {
                let wait = match self.try_take().await {
                    Ok(w) if w.is_zero() => return Ok(()),
                    Ok(w) => w,
                    // No budget can be granted without Redis: report "try
                    // again in a moment".
                    Err(e) => {
                        log::debug!("rate limiter: {e}");
                        return Err(Duration::from_millis(self.cluster.poll_ms));
                    }
                };
                let now = tokio::time::Instant::now();
                if now + wait > deadline {
                    return Err(wait);
                }
                tokio::time::sleep(wait).await;
            }
        }
        .boxed()
    }
}
