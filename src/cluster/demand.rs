//! The cluster's demand: the union of the symbols wanted on every instance.
//!
//! Each instance refreshes its symbols (its workers' and its pinned ones)
//! in the sorted set `PREFIX:interest`, scored by an expiry in Redis time,
//! every poll interval and at once when it starts watching something new
//! (then it also says so on `PREFIX:wake`, so the poller fetches at once).
//! The poller reads the members that have not expired and prunes the rest:
//! a node that dies stops being counted after a few intervals.
//! "Fetch now" (admin refresh) and "fetch once" (REST) are sets the poller
//! takes and empties.

use super::{Cluster, LUA_NOW_MS};
use crate::domain::Symbol;
use crate::feed::{Demand, PinnedSymbols, WorkerRegistry};
use futures_util::future::{BoxFuture, FutureExt};
use redis::Script;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

/// Symbols stay in the interest set for this many poll intervals after
/// their last refresh.
const INTEREST_INTERVALS: u64 = 3;

pub struct ClusterDemand {
    cluster: Arc<Cluster>,
    registry: WorkerRegistry,
    pinned: PinnedSymbols,
    /// Growth as the poll loop hears it ([`Demand::changed`]) and as the
    /// interest refresher hears it: separate listeners, separate permits.
    poll_grown: [Arc<Notify>; 2],
    refresh_grown: [Arc<Notify>; 2],
    /// A wake-up on `PREFIX:wake` (another instance watches something new,
    /// or asked for a refresh).
    woken: Arc<Notify>,
    /// Asks sent by this instance (refresh, fetch once), written by the
    /// refresher task so callers never wait on Redis.
    asks: mpsc::Sender<Ask>,
    asks_rx: std::sync::Mutex<Option<mpsc::Receiver<Ask>>>,
}

enum Ask {
    Forced(Vec<Symbol>),
    Once(Vec<Symbol>),
}

/// Bound of the queue of asks; a burst beyond it is dropped (the next tick
/// fetches anyway, as refreshes and one-off fetches are hints).
const ASKS: usize = 1024;

impl ClusterDemand {
    pub fn new(
        cluster: Arc<Cluster>,
        registry: WorkerRegistry,
        pinned: PinnedSymbols,
    ) -> Arc<Self> {
        let (asks, rx) = mpsc::channel(ASKS);
        Arc::new(Self {
            poll_grown: [registry.listen(), pinned.listen()],
            refresh_grown: [registry.listen(), pinned.listen()],
            cluster,
            registry,
            pinned,
            woken: Arc::new(Notify::new()),
            asks,
            asks_rx: std::sync::Mutex::new(Some(rx)),
        })
    }

    fn local(&self) -> BTreeSet<Symbol> {
        let mut set = self.registry.symbols();
        set.extend(self.pinned.get());
        set
    }

    fn ttl_ms(&self) -> u64 {
        self.cluster.poll_ms * INTEREST_INTERVALS
    }

    async fn refresh(&self, wake: bool) -> redis::RedisResult<()> {
        let symbols = self.local();
        if symbols.is_empty() {
            return Ok(());
        }
        let script = format!(
            "{LUA_NOW_MS}
            for i = 1, #ARGV - 1 do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[#ARGV]), ARGV[i]) end
            if KEYS[2] ~= '' then redis.call('PUBLISH', KEYS[2], 'interest') end
            return 1"
        );
        let mut conn = self.cluster.redis.conn();
        let script = Script::new(&script);
        let mut inv = script.prepare_invoke();
        inv.key(self.cluster.keys.key("interest")).key(if wake {
            self.cluster.keys.key("wake")
        } else {
            String::new()
        });
        for s in &symbols {
            inv.arg(s.as_str());
        }
        inv.arg(self.ttl_ms());
        inv.invoke_async::<i64>(&mut conn).await.map(drop)
    }

    async fn push(&self, ask: Ask) -> redis::RedisResult<()> {
        let (set, symbols) = match ask {
            Ask::Forced(s) => ("forced", s),
            Ask::Once(s) => ("once", s),
        };
        if symbols.is_empty() {
            return Ok(());
        }
        let mut conn = self.cluster.redis.conn();
        let mut pipe = redis::pipe();
        pipe.cmd("SADD").arg(self.cluster.keys.key(set));
        for s in &symbols {
            pipe.arg(s.as_str());
        }
        pipe.cmd("PUBLISH")
            .arg(self.cluster.keys.key("wake"))
            .arg(set);
        pipe.query_async::<()>(&mut conn).await
    }

    /// Keeps this instance's interest fresh and passes its asks on, until
    /// `shutdown`. Runs on the realtime arbiter.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let Some(mut asks) = self.asks_rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let listener = tokio::spawn(self.cluster.clone().listen("wake", self.woken.clone()));
        let mut tick = tokio::time::interval(Duration::from_millis(self.cluster.poll_ms.max(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let res = tokio::select! {
                _ = tick.tick() => self.refresh(false).await,
                _ = self.refresh_grown[0].notified() => self.refresh(true).await,
                _ = self.refresh_grown[1].notified() => self.refresh(true).await,
                Some(ask) = asks.recv() => self.push(ask).await,
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() { break; }
                    continue;
                }
            };
            if let Err(e) = res {
                log::debug!("cluster demand: {e}");
            }
        }
        listener.abort();
    }

    /// Takes and empties one of the ask sets.
    async fn take(&self, set: &str) -> HashSet<Symbol> {
        let key = self.cluster.keys.key(set);
        let mut conn = self.cluster.redis.conn();
        let res: redis::RedisResult<(Vec<String>, i64)> = redis::pipe()
            .atomic()
            .cmd("SMEMBERS")
            .arg(&key)
            .cmd("DEL")
            .arg(&key)
            .query_async(&mut conn)
            .await;
        match res {
            Ok((members, _)) => members
                .iter()
                .filter_map(|m| Symbol::parse(m).ok())
                .collect(),
            Err(e) => {
                log::debug!("cluster demand: {e}");
                HashSet::new()
            }
        }
    }
}

impl Demand for ClusterDemand {
    fn wanted(&self) -> BoxFuture<'_, BTreeSet<Symbol>> {
        async move {
            let mut wanted = self.local();
            let script = format!(
                "{LUA_NOW_MS}
                redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
                return redis.call('ZRANGE', KEYS[1], 0, -1)"
            );
            let mut conn = self.cluster.redis.conn();
            let res: redis::RedisResult<Vec<String>> = Script::new(&script)
                .key(self.cluster.keys.key("interest"))
                .invoke_async(&mut conn)
                .await;
            match res {
                Ok(members) => wanted.extend(members.iter().filter_map(|m| Symbol::parse(m).ok())),
                // The poller cannot publish without Redis either; what this
                // instance wants is the best it knows.
                Err(e) => log::debug!("cluster demand: {e}"),
            }
            wanted
        }
        .boxed()
    }

    fn take_forced(&self) -> BoxFuture<'_, HashSet<Symbol>> {
        self.take("forced").boxed()
    }

    fn force(&self, symbols: Vec<Symbol>) {
        if self.asks.try_send(Ask::Forced(symbols)).is_err() {
            log::debug!("cluster demand: refresh dropped (queue full)");
        }
    }

    fn fetch_once(&self, symbols: Vec<Symbol>) {
        if self.asks.try_send(Ask::Once(symbols)).is_err() {
            log::debug!("cluster demand: one-off fetch dropped (queue full)");
        }
    }

    fn take_once(&self) -> BoxFuture<'_, HashSet<Symbol>> {
        self.take("once").boxed()
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        async move {
            tokio::select! {
                _ = self.poll_grown[0].notified() => {}
                _ = self.poll_grown[1].notified() => {}
                _ = self.woken.notified() => {}
            }
        }
        .boxed()
    }
}
