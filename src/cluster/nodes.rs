//! The nodes of the cluster and their sessions.
//!
//! * Every node writes a heartbeat into the hash `PREFIX:nodes` (address,
//!   session and worker counts, the watchlists it has workers for, whether
//!   it polls, when it was seen, in Redis time); nodes not seen for 3 ×
//!   lease are dropped from it. This is the admin's `GET /admin/v1/cluster`.
//! * `limits.max_sessions_per_user` counts cluster-wide: each user has a
//!   sorted set `PREFIX:user_sessions:UID` of session ids scored by expiry.
//!   A session is added (or refused) atomically before its upgrade, removed
//!   when it ends, and kept alive by its node's heartbeat; a node that dies
//!   stops counting after 3 × lease.

use super::lease::Lease;
use super::{unless_shutdown, Cluster, ClusterError, LUA_NOW_MS};
use crate::feed::PollerRole;
use crate::session::table::SessionTable;
use crate::supervisor::{Supervisor, WatchedIds};
use actix::Addr;
use redis::Script;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A node as its heartbeat describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: String,
    pub addr: String,
    pub sessions: usize,
    pub workers: usize,
    /// Watchlists it has workers for (admin refresh finds them here).
    #[serde(default)]
    pub watchlists: Vec<i64>,
    /// Milliseconds of Redis time.
    pub last_seen_ms: i64,
    pub poller: bool,
}

/// A session leaving, for its user's cluster-wide count.
pub struct Released {
    pub user_id: i64,
    pub session_id: u64,
}

/// Bound of the queue of released sessions; beyond it a release is left to
/// expire on its own (after 3 × lease).
const RELEASES: usize = 65_536;

pub struct Nodes {
    cluster: Arc<Cluster>,
    releases: mpsc::Sender<Released>,
    releases_rx: std::sync::Mutex<Option<mpsc::Receiver<Released>>>,
}

impl Nodes {
    pub fn new(cluster: Arc<Cluster>) -> Arc<Self> {
        let (releases, rx) = mpsc::channel(RELEASES);
        Arc::new(Self {
            cluster,
            releases,
            releases_rx: std::sync::Mutex::new(Some(rx)),
        })
    }

    fn ttl_ms(&self) -> u64 {
        self.cluster.lease_ms * 3
    }

    fn user_key(&self, user_id: i64) -> String {
        self.cluster.keys.key(&format!("user_sessions:{user_id}"))
    }

    /// Counts a new session of `user_id` cluster-wide; false if the user is
    /// at `max` already.
    pub async fn reserve(
        &self,
        user_id: i64,
        session_id: u64,
        max: usize,
    ) -> Result<bool, ClusterError> {
        let script = format!(
            "{LUA_NOW_MS}
            redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
            if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
            redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
            redis.call('PEXPIRE', KEYS[1], ARGV[3])
            return 1"
        );
        let key = self.user_key(user_id);
        let ttl = self.ttl_ms();
        let ok: i64 = self
            .cluster
            .redis
            .run(move |mut c| async move {
                Script::new(&script)
                    .key(key)
                    .arg(session_id)
                    .arg(max)
                    .arg(ttl)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(ok == 1)
    }

    /// A session ended (called from its guard's drop: never waits).
    pub fn release(&self, user_id: i64, session_id: u64) {
        let _ = self.releases.try_send(Released {
            user_id,
            session_id,
        });
    }

    /// Removes released sessions from their users' sets until `shutdown`.
    pub async fn run_releases(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let Some(mut rx) = self.releases_rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        loop {
            let Some(Some(first)) = unless_shutdown(&mut shutdown, rx.recv()).await else {
                break;
            };
            let mut pipe = redis::pipe();
            pipe.zrem(self.user_key(first.user_id), first.session_id);
            while let Ok(r) = rx.try_recv() {
                pipe.zrem(self.user_key(r.user_id), r.session_id);
            }
            let mut conn = self.cluster.redis.conn();
            if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                log::debug!("session release: {e}");
            }
        }
    }

    /// Heartbeats until `shutdown`, then removes this node's entry.
    pub async fn run_heartbeat(
        self: Arc<Self>,
        sessions: SessionTable,
        supervisor: Addr<Supervisor>,
        lease: Arc<Lease>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let every = Duration::from_millis((self.cluster.lease_ms / 3).clamp(50, 1000));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if unless_shutdown(&mut shutdown, tick.tick()).await.is_none() {
                break;
            }
            let watchlists = supervisor.send(WatchedIds).await.unwrap_or_default();
            if let Err(e) = self.beat(&sessions, watchlists, lease.is_poller()).await {
                log::debug!("heartbeat: {e}");
            }
        }
        let mut conn = self.cluster.redis.conn();
        let _: redis::RedisResult<()> = redis::pipe()
            .hdel(self.cluster.keys.key("nodes"), &self.cluster.node_id)
            .hdel(self.cluster.keys.key("nodes_seen"), &self.cluster.node_id)
            .query_async(&mut conn)
            .await;
    }

    async fn beat(
        &self,
        sessions: &SessionTable,
        watchlists: Vec<i64>,
        poller: bool,
    ) -> redis::RedisResult<()> {
        let by_user = sessions.ids_by_user();
        let info = NodeInfo {
            node_id: self.cluster.node_id.clone(),
            addr: self.cluster.addr.clone(),
            sessions: by_user.values().map(Vec::len).sum(),
            workers: watchlists.len(),
            watchlists,
            last_seen_ms: 0,
            poller,
        };
        let json = serde_json::to_string(&info).unwrap_or_default();
        // Seen-at in Redis time, in a hash of its own (no JSON surgery in
        // Lua); nodes not seen for 3 × lease are pruned from both.
        let script = format!(
            "{LUA_NOW_MS}
            redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
            redis.call('HSET', KEYS[2], ARGV[1], now)
            local seen = redis.call('HGETALL', KEYS[2])
            for i = 1, #seen, 2 do
              if tonumber(seen[i + 1]) < now - tonumber(ARGV[3]) then
                redis.call('HDEL', KEYS[1], seen[i])
                redis.call('HDEL', KEYS[2], seen[i])
              end
            end
            return now"
        );
        let mut conn = self.cluster.redis.conn();
        let now: i64 = Script::new(&script)
            .key(self.cluster.keys.key("nodes"))
            .key(self.cluster.keys.key("nodes_seen"))
            .arg(&self.cluster.node_id)
            .arg(json)
            .arg(self.ttl_ms())
            .invoke_async(&mut conn)
            .await?;
        // Keep this node's sessions counted.
        let ttl = self.ttl_ms() as i64;
        let mut pipe = redis::pipe();
        for (user, ids) in &by_user {
            let key = self.user_key(*user);
            for id in ids {
                pipe.cmd("ZADD")
                    .arg(&key)
                    .arg("XX")
                    .arg(now + ttl)
                    .arg(*id)
                    .ignore();
            }
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
        }
        if !by_user.is_empty() {
            pipe.query_async::<()>(&mut conn).await?;
        }
        Ok(())
    }

    /// The live nodes (seen within 3 × lease), by node id.
    pub async fn live(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let keys = [
            self.cluster.keys.key("nodes"),
            self.cluster.keys.key("nodes_seen"),
        ];
        let ttl = self.ttl_ms() as i64;
        let script = format!(
            "{LUA_NOW_MS} return {{now, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}}"
        );
        let (now, infos, seen): (i64, Vec<String>, Vec<String>) = self
            .cluster
            .redis
            .run(move |mut c| async move {
                Script::new(&script)
                    .key(&keys[0])
                    .key(&keys[1])
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let seen: std::collections::HashMap<&str, i64> = seen
            .chunks(2)
            .filter_map(|p| Some((p.first()?.as_str(), p.get(1)?.parse().ok()?)))
            .collect();
        let mut nodes: Vec<NodeInfo> = infos
            .chunks(2)
            .filter_map(|pair| serde_json::from_str::<NodeInfo>(pair.get(1)?).ok())
            .filter_map(|mut n| {
                n.last_seen_ms = *seen.get(n.node_id.as_str())?;
                Some(n)
            })
            .filter(|n| n.last_seen_ms >= now - ttl)
            .collect();
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(nodes)
    }

    /// The watchlists that have a worker on some live node.
    pub async fn watched(&self) -> Result<BTreeSet<i64>, ClusterError> {
        Ok(self
            .live()
            .await?
            .into_iter()
            .flat_map(|n| n.watchlists)
            .collect())
    }
}
