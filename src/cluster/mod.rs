//! Cluster mode: several instances sharing one Redis (and one PostgreSQL)
//! act as one service. Each piece implements a seam the single-process
//! service already has, so nothing above the seams knows which mode runs.
//!
//! | module | seam | what it keeps in Redis |
//! |---|---|---|
//! | [`lease`] | [`PollerRole`](crate::feed::PollerRole) | `poller` (the lease: `NODE:FENCE`), `fence` |
//! | [`bus`] | [`QuoteBus`](crate::feed::QuoteBus) | `ticks` (stream of rounds), `tick`, `last` (latest state per symbol), `meta` |
//! | [`demand`] | [`Demand`](crate::feed::Demand) | `interest` (symbols wanted, scored by expiry), `forced`, `once`, `wake` (channel) |
//! | [`limiter`] | [`RateLimiter`](crate::feed::RateLimiter) | `bucket` (GCRA) |
//! | [`control`] | [`ControlPlane`](crate::control::ControlPlane) | `control` (stream of events) |
//! | [`tickets`] | [`Tickets`](crate::auth::Tickets) | `ticket:ID` |
//! | [`nodes`] | admin views, cluster-wide session limits | `nodes`, `user_sessions:UID`, `node_seq` |
//!
//! Every key starts with `cluster.key_prefix` and `:`. Time (the tick grid,
//! the bucket, expiries) comes from Redis `TIME`, never from an instance's
//! clock. Correctness does not rest on pub/sub: rounds and control events
//! travel through streams that a reader resumes from its last id; pub/sub
//! only carries wake-up hints.
//!
//! Connections: one multiplexed connection manager, created on the realtime
//! arbiter and used through [`Redis::run`] from other threads; blocking
//! stream reads and subscriptions get connections of their own.
//!
//! Lifecycle: [`Cluster::connect`] joins (failing start-up if Redis does not
//! answer); [`crate::startup`] spawns the tasks of the modules above on the
//! realtime arbiter; they end when the shutdown signal fires, and the
//! arbiter is stopped only after the lease has been handed back.

pub mod bus;
pub mod control;
pub mod demand;
pub mod lease;
pub mod limiter;
pub mod nodes;
pub mod tickets;

use crate::config::Settings;
use crate::metrics::Metrics;
use actix::ArbiterHandle;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, RedisResult};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch, Notify};

/// How long any one Redis command may take before it counts as failed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors of the cluster layer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cluster tasks are not running")]
    Stopped,
    #[error("unexpected answer from redis: {0}")]
    Protocol(String),
}

/// Redis for callers on any thread: commands run on the realtime arbiter,
/// where the connection's driver lives. Cheap to clone.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    arbiter: ArbiterHandle,
}

impl Redis {
    /// Runs `f` with the shared connection on the cluster's arbiter.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, ClusterError>
    where
        T: Send + 'static,
        F: FnOnce(ConnectionManager) -> Fut + Send + 'static,
        Fut: Future<Output = RedisResult<T>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let conn = self.conn.clone();
        self.arbiter.spawn(async move {
            let res = tokio::time::timeout(COMMAND_TIMEOUT, f(conn)).await;
            let _ = tx.send(res);
        });
        match rx.await {
            Ok(Ok(res)) => Ok(res?),
            Ok(Err(_)) => Err(ClusterError::Redis(redis::RedisError::from(
                std::io::Error::new(std::io::ErrorKind::TimedOut, "redis did not answer in time"),
            ))),
            Err(_) => Err(ClusterError::Stopped),
        }
    }

    /// The shared connection, for code already running on the arbiter.
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

/// Key names, all under the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }
}

/// This instance's membership of the cluster.
pub struct Cluster {
    pub node_id: String,
    /// A number unique to this node's life, from `node_seq`: the high bits of
    /// its session ids, so they are unique cluster-wide.
    pub node_num: u64,
    pub keys: Keys,
    pub redis: Redis,
    /// For connections of their own (stream readers, subscriptions).
    pub client: redis::Client,
    pub lease_ms: u64,
    pub poll_ms: u64,
    /// The address this node serves on, for the admin view.
    pub addr: String,
    /// False while this node cannot reach the bus: `/readyz` answers 503.
    bus_ok: AtomicBool,
    pub metrics: Arc<Metrics>,
}

impl Cluster {
    /// Connects to Redis on `arbiter` and joins the cluster. Fails when Redis
    /// does not answer: cluster mode does not start without it.
    pub async fn connect(
        settings: &Settings,
        addr: std::net::SocketAddr,
        arbiter: ArbiterHandle,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let c = &settings.cluster;
        let client = redis::Client::open(c.redis_url.as_str())?;
        let (tx, rx) = oneshot::channel();
        let cl = client.clone();
        arbiter.spawn(async move {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(COMMAND_TIMEOUT))
                .set_response_timeout(Some(COMMAND_TIMEOUT))
                .set_number_of_retries(2);
            let res = cl.get_connection_manager_with_config(config).await;
            let _ = tx.send(res);
        });
        let conn = rx.await.map_err(|_| ClusterError::Stopped)??;
        let redis = Redis { conn, arbiter };
        let keys = Keys::new(&c.key_prefix);
        let seq_key = keys.key("node_seq");
        let node_num: u64 = redis
            .run(move |mut conn| async move {
                redis::cmd("INCR").arg(seq_key).query_async(&mut conn).await
            })
            .await?;
        let node_id = if c.node_id.is_empty() {
            generated_node_id()
        } else {
            c.node_id.clone()
        };
        Ok(Arc::new(Cluster {
            node_id,
            node_num,
            keys,
            redis,
            client,
            lease_ms: c.lease_ms,
            poll_ms: settings.upstream.poll_interval_ms,
            addr: addr.to_string(),
            bus_ok: AtomicBool::new(true),
            metrics,
        }))
    }

    /// A connection of its own, for a blocking read: no response timeout
    /// shorter than the block.
    pub async fn dedicated(&self, block: Duration) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(block + COMMAND_TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    pub fn bus_ok(&self) -> bool {
        self.bus_ok.load(Ordering::Relaxed)
    }

    pub(crate) fn set_bus_ok(&self, ok: bool) {
        self.bus_ok.store(ok, Ordering::Relaxed);
    }

    /// The first id of this node's sessions: ids are unique cluster-wide.
    pub fn session_id_base(&self) -> u64 {
        self.node_num << 32
    }

    /// Turns messages on the channel `PREFIX:name` into wake-ups of
    /// `notify`, for as long as the task runs (its owner aborts it),
    /// resubscribing after a lost connection. Only ever a hint: whoever
    /// waits on `notify` also acts on a timer, so a lost message costs
    /// latency, not correctness.
    pub(crate) async fn listen(self: Arc<Self>, name: &'static str, notify: Arc<Notify>) {
        let channel = self.keys.key(name);
        loop {
            match self.client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if pubsub.subscribe(&channel).await.is_ok() {
                        let mut messages = pubsub.on_message();
                        while messages.next().await.is_some() {
                            notify.notify_one();
                        }
                    }
                }
                Err(e) => log::debug!("listener on {channel}: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// `step`'s output, or `None` once `shutdown` is signalled (or its sender is
/// gone) first: how the cluster's loops wait for their next piece of work.
pub(crate) async fn unless_shutdown<F: Future>(
    shutdown: &mut watch::Receiver<bool>,
    step: F,
) -> Option<F::Output> {
    tokio::pin!(step);
    loop {
        tokio::select! {
            out = &mut step => return Some(out),
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return None;
                }
            }
        }
    }
}

/// `host-pid-random`, as the contract says.
pub fn generated_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().replace([':', ' '], "-"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// Milliseconds of Redis `TIME`, for Lua scripts.
pub(crate) const LUA_NOW_MS: &str =
    "local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)";
