//! The poller lease: exactly one instance at a time believes it polls, and
//! even when two briefly do (a pause, a failover), the older one is fenced
//! out of publishing (see [`super::bus`]).
//!
//! `PREFIX:poller` holds `NODE:FENCE` with a TTL of `cluster.lease_ms`;
//! `FENCE` comes from `INCR PREFIX:fence`, so every new holder has a higher
//! one. The holder renews by compare-and-`PEXPIRE` every lease/3 (or every
//! poll interval, if shorter), and stops calling itself the poller once its
//! own monotonic clock says the lease may have run out (lease minus a
//! margin) since the last renewal that succeeded. At shutdown it hands the
//! lease back (compare-and-delete) and says so on `PREFIX:lease_released`,
//! so another instance takes over at once.

use super::Cluster;
use crate::feed::PollerRole;
use futures_util::future::{BoxFuture, FutureExt};
use redis::Script;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// Acquire (when free) or renew (when ours); answers the value held, or nil.
const ACQUIRE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  if cur == ARGV[2] then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return cur
  end
  return false
end
local fence = redis.call('INCR', KEYS[2])
local v = ARGV[1] .. ':' .. fence
redis.call('SET', KEYS[1], v, 'PX', ARGV[3])
return v
";

/// Compare-and-delete, then tell the others.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[2], ARGV[1])
  return 1
end
return 0
";

struct Held {
    value: String,
    renewed_at: Instant,
}

/// This instance's view of the lease.
pub struct Lease {
    cluster: Arc<Cluster>,
    held: Mutex<Option<Held>>,
    /// Pinged when [`PollerRole::is_poller`] may have changed.
    flipped: Notify,
    lease: Duration,
    /// How long before the lease's end a holder stops trusting it.
    margin: Duration,
}

impl Lease {
    pub fn new(cluster: Arc<Cluster>) -> Arc<Self> {
        let lease = Duration::from_millis(cluster.lease_ms);
        Arc::new(Self {
            cluster,
            held: Mutex::new(None),
            flipped: Notify::new(),
            lease,
            margin: (lease / 5).max(Duration::from_millis(50)),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lease value (`NODE:FENCE`) while this instance may poll.
    pub fn value(&self) -> Option<String> {
        let held = self.held();
        held.as_ref()
            .filter(|h| h.renewed_at.elapsed() + self.margin < self.lease)
            .map(|h| h.value.clone())
    }

    /// The poller's node id, from Redis (for the admin view).
    pub async fn holder(&self) -> Option<String> {
        let key = self.cluster.keys.key("poller");
        let value: Option<String> = self
            .cluster
            .redis
            .run(move |mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await
            .ok()
            .flatten();
        value.and_then(|v| v.rsplit_once(':').map(|(node, _)| node.to_owned()))
    }

    /// One acquire-or-renew round trip.
    async fn attempt(&self) {
        let mine = self
            .held()
            .as_ref()
            .map(|h| h.value.clone())
            .unwrap_or_default();
        let started = Instant::now();
        let keys = &self.cluster.keys;
        let mut conn = self.cluster.redis.conn();
        let res: redis::RedisResult<Option<String>> = Script::new(ACQUIRE)
            .key(keys.key("poller"))
            .key(keys.key("fence"))
            .arg(&self.cluster.node_id)
            .arg(&mine)
            .arg(self.cluster.lease_ms)
            .invoke_async(&mut conn)
            .await;
        let was = self.value().is_some();
        match res {
            Ok(Some(value)) => {
                if value != mine {
                    log::info!(
                        "node {}: took the poller lease ({value})",
                        self.cluster.node_id
                    );
                }
                // Counted from before the request: the lease may have been
                // set that early.
                *self.held() = Some(Held {
                    value,
                    renewed_at: started,
                });
            }
            Ok(None) => {
                if self.held().take().is_some() {
                    log::warn!("node {}: lost the poller lease", self.cluster.node_id);
                }
            }
            // Unreachable: keep what is held until it runs out by the clock.
            Err(e) => log::debug!("lease renewal failed: {e}"),
        }
        let now = self.value().is_some();
        self.cluster.metrics.cluster_poller.set(i64::from(now));
        if was != now {
            self.flipped.notify_waiters();
        }
    }

    async fn release(&self) {
        let Some(held) = self.held().take() else {
            return;
        };
        let keys = &self.cluster.keys;
        let mut conn = self.cluster.redis.conn();
        let res: redis::RedisResult<i64> = Script::new(RELEASE)
            .key(keys.key("poller"))
            .key(keys.key("lease_released"))
            .arg(&held.value)
            .invoke_async(&mut conn)
            .await;
        match res {
            Ok(1) => log::info!(
                "node {}: handed the poller lease back",
                self.cluster.node_id
            ),
            Ok(_) => {}
            Err(e) => log::warn!("could not hand the poller lease back: {e}"),
        }
        self.cluster.metrics.cluster_poller.set(0);
        self.flipped.notify_waiters();
    }

    /// Keeps trying to hold the lease until `shutdown`, then hands it back.
    /// Runs on the realtime arbiter.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let every = (self.lease / 3).min(Duration::from_millis(self.cluster.poll_ms.max(50)));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let released = Arc::new(Notify::new());
        let listener = tokio::spawn(
            self.cluster
                .clone()
                .listen("lease_released", released.clone()),
        );
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = released.notified() => {}
                // The clock may run the lease out between two attempts.
                _ = tokio::time::sleep(self.until_stale()) => {
                    self.cluster.metrics.cluster_poller.set(i64::from(self.value().is_some()));
                    self.flipped.notify_waiters();
                    continue;
                }
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() { break; }
                    continue;
                }
            }
            self.attempt().await;
        }
        listener.abort();
        self.release().await;
    }

    fn until_stale(&self) -> Duration {
        match self.held().as_ref() {
            Some(h) => (self.lease.saturating_sub(self.margin))
                .saturating_sub(h.renewed_at.elapsed())
                .max(Duration::from_millis(1)),
            None => Duration::from_secs(3600),
        }
    }
}

impl PollerRole for Lease {
    fn is_poller(&self) -> bool {
        self.value().is_some()
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        self.flipped.notified().boxed()
    }
}
