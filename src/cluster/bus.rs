//! The quote bus through Redis: the poller publishes each round into the
//! stream `PREFIX:ticks`; every instance (the poller too) reads the stream
//! from its last id and hands each round to its own
//! [`crate::feed::Distributor`], exactly as the local bus does.
//!
//! Publishing is one Lua script, so nothing half-done is ever visible:
//! * it is **fenced**: it lands only while `PREFIX:poller` still holds the
//!   publisher's lease value, so a paused or replaced poller cannot publish;
//! * it is **idempotent**: each round carries the publisher's own id for it
//!   (`NODE:FENCE:N`); publishing the same round again (a retry after an
//!   answer was lost) answers the tick it already got, without a second
//!   entry. A new poller's round for the same moment is simply the next
//!   round, with fresher data, which harms nothing;
//! * the round's id (`tick`) is `max(previous + 1, grid point of Redis
//!   time)`: it increases, the same on every instance, across failovers and
//!   even when Redis itself restarted empty;
//! * it records each symbol's latest state in `PREFIX:last` and the upstream
//!   health in `PREFIX:meta`, so a reader that (re)starts, or finds it missed
//!   entries (each entry names the tick before it), seeds itself from there.
//!
//! The reader keeps its own connection for `XREAD BLOCK`. It never trusts
//! silence: when the `tick` counter moves but nothing arrives, it
//! reconnects; when Redis cannot be reached, its workers are told
//! `degraded` (the message names the cluster bus) and `/readyz` answers 503
//! until it can again.

use super::{unless_shutdown, Cluster};
use crate::domain::Symbol;
use crate::feed::{BusError, Distributor, QuoteBus, Round, UpstreamHealth};
use crate::quote::{Known, Point};
use futures_util::future::{BoxFuture, FutureExt};
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Entries kept in the stream (approximately): a reader further behind than
/// this seeds itself from `PREFIX:last` instead.
pub const STREAM_LEN: usize = 1000;

const PUBLISH: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local poll = tonumber(ARGV[2])
local grid = math.floor(now / poll)
if redis.call('HGET', KEYS[5], 'round') == ARGV[3] then
  return tonumber(redis.call('GET', KEYS[2]))
end
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local tick = math.max(prev + 1, grid)
redis.call('SET', KEYS[2], tick)
redis.call('HSET', KEYS[5], 'round', ARGV[3])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], tick .. '-0',
  'node', ARGV[6], 'prev', prev, 'round', ARGV[4])
redis.call('HSET', KEYS[5], 'health', ARGV[7])
for i = 8, #ARGV, 2 do redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1]) end
return tick
";

/// The state to seed a reader from: the tick counter, the latest state of
/// every symbol, the upstream health; read at one instant.
const SEED: &str = r"
return {redis.call('GET', KEYS[1]) or '0', redis.call('HGETALL', KEYS[2]), redis.call('HGET', KEYS[3], 'health') or ''}
";

/// A round as it travels through the stream.
#[derive(Serialize, Deserialize)]
struct Wire {
    changed: Vec<(Symbol, Known)>,
    intraday: Vec<(Symbol, Vec<Point>)>,
    health: UpstreamHealth,
}

/// The poller's side: publishes rounds, fenced by its lease.
pub struct RedisBus {
    cluster: Arc<Cluster>,
    lease: Arc<super::lease::Lease>,
    /// Numbers this publisher's rounds, for idempotent publishing.
    rounds: std::sync::atomic::AtomicU64,
}

impl RedisBus {
    pub fn new(cluster: Arc<Cluster>, lease: Arc<super::lease::Lease>) -> Self {
        Self {
            cluster,
            lease,
            rounds: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl QuoteBus for RedisBus {
    fn publish(&self, _full: bool, round: Round) -> BoxFuture<'_, Result<u64, BusError>> {
        async move {
            let Some(fence) = self.lease.value() else {
                return Err(BusError::Fenced);
            };
            let n = self
                .rounds
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let round_id = format!("{fence}:{n}");
            let wire = Wire {
                intraday: round
                    .intraday
                    .iter()
                    .map(|(s, p)| (s.clone(), p.to_vec()))
                    .collect(),
                health: round.health.clone(),
                changed: round.changed,
            };
            let payload =
                serde_json::to_string(&wire).map_err(|e| BusError::Unavailable(e.to_string()))?;
            let health = serde_json::to_string(&wire.health)
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            let keys = &self.cluster.keys;
            let script = Script::new(PUBLISH);
            let mut inv = script.prepare_invoke();
            inv.key(keys.key("poller"))
                .key(keys.key("tick"))
                .key(keys.key("ticks"))
                .key(keys.key("last"))
                .key(keys.key("meta"))
                .arg(&fence)
                .arg(self.cluster.poll_ms)
                .arg(&round_id)
                .arg(&payload)
                .arg(STREAM_LEN)
                .arg(&self.cluster.node_id)
                .arg(&health);
            for (symbol, known) in &wire.changed {
                let json = serde_json::to_string(known)
                    .map_err(|e| BusError::Unavailable(e.to_string()))?;
                inv.arg(symbol.as_str()).arg(json);
            }
            let mut conn = self.cluster.redis.conn();
            let res: redis::RedisResult<i64> = inv.invoke_async(&mut conn).await;
            match res {
                Ok(-1) => Err(BusError::Fenced),
                Ok(tick) if tick > 0 => {
                    self.cluster.metrics.bus_out.inc();
                    Ok(tick as u64)
                }
                Ok(other) => Err(BusError::Unavailable(format!("publish answered {other}"))),
                Err(e) => {
                    self.cluster.metrics.bus_errors.inc();
                    Err(BusError::Unavailable(e.to_string()))
                }
            }
        }
        .boxed()
    }
}

/// Every instance's side: reads the stream into the local distributor.
pub struct Reader {
    cluster: Arc<Cluster>,
    distributor: Distributor,
    /// The last tick handed on (0: none yet).
    last_tick: u64,
    /// When an entry last arrived (or the reader last seeded).
    heard_at: Instant,
    /// The last health told to the workers, so an outage is reported once.
    outage: bool,
}

impl Reader {
    pub fn new(cluster: Arc<Cluster>, distributor: Distributor) -> Self {
        Self {
            cluster,
            distributor,
            last_tick: 0,
            heard_at: Instant::now(),
            outage: false,
        }
    }

    fn block(&self) -> Duration {
        Duration::from_millis(self.cluster.poll_ms.clamp(50, 1000))
    }

    /// Reads until `shutdown`. Runs on the realtime arbiter.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut conn = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let step = async {
                if conn.is_none() {
                    let mut c = self.cluster.dedicated(self.block()).await?;
                    self.seed(&mut c).await?;
                    conn = Some(c);
                }
                let c = conn.as_mut().expect("connected above");
                self.read(c).await
            };
            let Some(res) = unless_shutdown(&mut shutdown, step).await else {
                break;
            };
            match res {
                Ok(Some(reconnect)) => {
                    if reconnect {
                        conn = None;
                    }
                    backoff = Duration::from_millis(100);
                    if self.outage {
                        self.outage = false;
                        self.cluster.set_bus_ok(true);
                        log::info!("cluster bus reachable again");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    conn = None;
                    self.cluster.metrics.bus_errors.inc();
                    self.report_outage(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(self.block());
                }
            }
        }
        log::debug!("cluster bus reader stopped");
    }

    fn report_outage(&mut self, e: &redis::RedisError) {
        if self.outage {
            return;
        }
        self.outage = true;
        self.cluster.set_bus_ok(false);
        log::warn!("cluster bus (Redis) unavailable: {e}");
        let health = UpstreamHealth {
            degraded: true,
            message: format!("cluster bus (Redis) unavailable: {e}"),
            retry_in_ms: Some(self.cluster.poll_ms),
        };
        self.distributor.deliver(
            self.last_tick,
            Round {
                health,
                ..Round::default()
            },
        );
    }

    /// Seeds the cache from `PREFIX:last` and continues after the current
    /// tick.
    async fn seed(&mut self, conn: &mut impl redis::aio::ConnectionLike) -> redis::RedisResult<()> {
        let keys = &self.cluster.keys;
        let (tick, flat, health): (String, Vec<String>, String) = Script::new(SEED)
            .key(keys.key("tick"))
            .key(keys.key("last"))
            .key(keys.key("meta"))
            .invoke_async(conn)
            .await?;
        let changed: Vec<(Symbol, Known)> = flat
            .chunks(2)
            .filter_map(|pair| {
                let symbol = Symbol::parse(pair.first()?).ok()?;
                let known = serde_json::from_str(pair.get(1)?).ok()?;
                Some((symbol, known))
            })
            .collect();
        let health = serde_json::from_str(&health).unwrap_or_else(|_| UpstreamHealth::ok());
        let tick: u64 = tick.parse().unwrap_or(0);
        self.last_tick = tick;
        self.heard_at = Instant::now();
        log::debug!(
            "cluster bus: seeded {} symbols at tick {tick}",
            changed.len()
        );
        self.distributor.deliver(
            tick,
            Round {
                changed,
                health,
                ..Round::default()
            },
        );
        Ok(())
    }

    /// One blocking read. `Some(reconnect)` after it heard something or
    /// decided to reconnect; `None` when nothing came and all is well.
    async fn read(
        &mut self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> redis::RedisResult<Option<bool>> {
        let key = self.cluster.keys.key("ticks");
        let opts = StreamReadOptions::default()
            .block(self.block().as_millis() as usize)
            .count(100);
        let from = format!("{}-0", self.last_tick);
        let reply: Option<StreamReadReply> = conn.xread_options(&[&key], &[&from], &opts).await?;
        let entries = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>())
            .unwrap_or_default();
        if entries.is_empty() {
            return self.check_silence(conn).await;
        }
        for entry in entries {
            let tick: u64 = entry
                .id
                .split('-')
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let prev: u64 = entry.get("prev").unwrap_or(0);
            if prev != self.last_tick {
                // Entries were trimmed away (or Redis restarted): what they
                // said is in `PREFIX:last`.
                log::info!(
                    "cluster bus: missed rounds {}..{tick}; seeding from the latest state",
                    self.last_tick
                );
                self.seed(conn).await?;
                if tick <= self.last_tick {
                    continue;
                }
            }
            let Some(wire) = entry
                .get::<String>("round")
                .and_then(|r| serde_json::from_str::<Wire>(&r).ok())
            else {
                log::warn!("cluster bus: entry {} does not parse", entry.id);
                self.last_tick = tick;
                continue;
            };
            self.cluster.metrics.bus_in.inc();
            self.last_tick = tick;
            self.heard_at = Instant::now();
            self.distributor.deliver(
                tick,
                Round {
                    changed: wire.changed,
                    intraday: wire
                        .intraday
                        .into_iter()
                        .map(|(s, p)| (s, Arc::from(p)))
                        .collect(),
                    health: wire.health,
                },
            );
        }
        Ok(Some(false))
    }

    /// Nothing arrived: fine while nothing is published, but if the tick
    /// counter has moved past what this reader got, it went deaf (or Redis
    /// restarted): reconnect.
    async fn check_silence(
        &mut self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> redis::RedisResult<Option<bool>> {
        let quiet_for = self.heard_at.elapsed();
        if quiet_for < Duration::from_millis(self.cluster.poll_ms * 3) {
            return Ok(None);
        }
        let counter: Option<u64> = conn.get(self.cluster.keys.key("tick")).await?;
        self.heard_at = Instant::now();
        match counter {
            Some(c) if c != self.last_tick => {
                log::warn!(
                    "cluster bus: tick counter at {c}, this reader at {}; reconnecting",
                    self.last_tick
                );
                Ok(Some(true))
            }
            _ => Ok(None),
        }
    }
}
