//! The supervisor: the registry of PriceWorkers, one per watched watchlist.
//!
//! All registrations go through this one actor, one message at a time, so
//! they are race-free by construction: N sessions joining one watchlist at
//! once get exactly one worker, and the session count that decides when a
//! worker stops is only ever changed here. When the last session leaves, the
//! entry is removed *before* the worker is told to stop, so a session that
//! arrives at that moment starts a fresh worker instead of joining a dying
//! one; neither is orphaned. A session on the multi-watchlist endpoint joins
//! once per subscription; the rules hold per subscription.
//!
//! At shutdown it drains: every worker stops, and a join that arrives after
//! that is refused (its session is closed with 1001) instead of starting a
//! worker nobody would stop.

use crate::protocol::{close, Since};
use crate::session::messages::{
    CloseSession, Deliver, SessionStats, Subscription, SubscriptionEnded,
};
use crate::session::relay::RelayHandle;
use crate::worker::{
    AccessChanged, Deleted, GetInfo, ItemView, ItemsChanged, PriceWorker, Refresh, SendSnapshot,
    StopWorker, Subscribe, Unsubscribe, WorkerDeps, WorkerInfo,
};
use actix::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

struct Entry {
    worker: Addr<PriceWorker>,
    sessions: HashSet<u64>,
}

pub struct Supervisor {
    workers: HashMap<i64, Entry>,
    deps: WorkerDeps,
    /// Set by [`ShutdownAll`]: no worker starts any more.
    draining: bool,
}

impl Supervisor {
    pub fn new(deps: WorkerDeps) -> Self {
        Self {
            workers: HashMap::new(),
            deps,
            draining: false,
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        for (_, e) in self.workers.drain() {
            e.worker.do_send(StopWorker);
        }
        Running::Stop
    }
}

/// A session subscribes to a watchlist.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub watchlist_id: i64,
    pub session_id: u64,
    pub user_id: i64,
    pub sub: Arc<Subscription>,
    pub deliver: Recipient<Deliver>,
    pub ended: Recipient<SubscriptionEnded>,
    /// To close the session when the server is draining.
    pub close: Recipient<CloseSession>,
    pub stats: Arc<SessionStats>,
    /// The relay of the session's thread.
    pub relay: RelayHandle,
    /// Items as the session read them, for a worker spawned now.
    pub items: Vec<ItemView>,
    pub since: Option<Since>,
    pub intraday: bool,
    pub ack: bool,
}

impl Handler<Join> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) {
        if self.draining {
            msg.close.do_send(CloseSession {
                code: close::GOING_AWAY,
                reason: "server shutting down",
            });
            return;
        }
        let deps = &self.deps;
        let entry = self.workers.entry(msg.watchlist_id).or_insert_with(|| {
            log::debug!("starting worker for watchlist {}", msg.watchlist_id);
            let worker =
                PriceWorker::new(msg.watchlist_id, msg.items, ctx.address(), deps.clone()).start();
            Entry {
                worker,
                sessions: HashSet::new(),
            }
        });
        entry.sessions.insert(msg.session_id);
        entry.worker.do_send(Subscribe {
            session_id: msg.session_id,
            user_id: msg.user_id,
            sub: msg.sub,
            deliver: msg.deliver,
            control: msg.ended,
            stats: msg.stats,
            relay: msg.relay,
            since: msg.since,
            intraday: msg.intraday,
            ack: msg.ack,
        });
    }
}

/// A session unsubscribes (or goes); the last one out stops the worker.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub watchlist_id: i64,
    pub session_id: u64,
    pub sub: u64,
}

impl Handler<Leave> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        let Some(entry) = self.workers.get_mut(&msg.watchlist_id) else {
            return;
        };
        if !entry.sessions.remove(&msg.session_id) {
            return;
        }
        if entry.sessions.is_empty() {
            if let Some(entry) = self.workers.remove(&msg.watchlist_id) {
                log::debug!(
                    "last session left watchlist {}, stopping its worker",
                    msg.watchlist_id
                );
                entry.worker.do_send(StopWorker);
            }
        } else {
            entry.worker.do_send(Unsubscribe {
                session_id: msg.session_id,
                sub: msg.sub,
            });
        }
    }
}

/// A session asks for a snapshot.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SnapshotFor {
    pub watchlist_id: i64,
    pub session_id: u64,
}

impl Handler<SnapshotFor> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: SnapshotFor, _: &mut Context<Self>) {
        if let Some(e) = self.workers.get(&msg.watchlist_id) {
            e.worker.do_send(SendSnapshot {
                session_id: msg.session_id,
            });
        }
    }
}

/// The API changed a watchlist's items.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WatchlistChanged {
    pub watchlist_id: i64,
    pub items: Vec<ItemView>,
}

impl Handler<WatchlistChanged> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: WatchlistChanged, _: &mut Context<Self>) {
        if let Some(e) = self.workers.get(&msg.watchlist_id) {
            e.worker.do_send(ItemsChanged(msg.items));
        }
    }
}

/// The API deleted a watchlist: its subscriptions end (v1 sockets close
/// with 4404), its worker stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WatchlistDeleted {
    pub watchlist_id: i64,
}

impl Handler<WatchlistDeleted> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: WatchlistDeleted, _: &mut Context<Self>) {
        if let Some(e) = self.workers.remove(&msg.watchlist_id) {
            e.worker.do_send(Deleted);
        }
    }
}

/// The API set a watchlist's visibility: when private, other users'
/// subscriptions end (v1 sockets close with 1008).
#[derive(Message)]
#[rtype(result = "()")]
pub struct WatchlistAccess {
    pub watchlist_id: i64,
    pub owner_id: i64,
    pub is_public: bool,
}

impl Handler<WatchlistAccess> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: WatchlistAccess, _: &mut Context<Self>) {
        if let Some(e) = self.workers.get(&msg.watchlist_id) {
            e.worker.do_send(AccessChanged {
                owner_id: msg.owner_id,
                is_public: msg.is_public,
            });
        }
    }
}

/// A worker found its watchlist gone and stopped by itself.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerGone {
    pub watchlist_id: i64,
    pub worker: Addr<PriceWorker>,
}

impl Handler<WorkerGone> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: WorkerGone, _: &mut Context<Self>) {
        if self
            .workers
            .get(&msg.watchlist_id)
            .is_some_and(|e| e.worker == msg.worker)
        {
            self.workers.remove(&msg.watchlist_id);
        }
    }
}

/// Admin: describe every worker.
#[derive(Message)]
#[rtype(result = "Vec<WorkerInfo>")]
pub struct ListWorkers;

impl Handler<ListWorkers> for Supervisor {
    type Result = ResponseFuture<Vec<WorkerInfo>>;
    fn handle(&mut self, _: ListWorkers, _: &mut Context<Self>) -> Self::Result {
        let asks: Vec<_> = self
            .workers
            .values()
            .map(|e| e.worker.send(GetInfo))
            .collect();
        Box::pin(async move {
            let mut infos: Vec<WorkerInfo> = futures_util::future::join_all(asks)
                .await
                .into_iter()
                .filter_map(Result::ok)
                .collect();
            infos.sort_by_key(|i| i.watchlist_id);
            infos
        })
    }
}

/// Admin: make a worker fetch now. False if the watchlist has no worker.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct RefreshWorker {
    pub watchlist_id: i64,
}

impl Handler<RefreshWorker> for Supervisor {
    type Result = bool;
    fn handle(&mut self, msg: RefreshWorker, _: &mut Context<Self>) -> bool {
        match self.workers.get(&msg.watchlist_id) {
            Some(e) => {
                e.worker.do_send(Refresh);
                true
            }
            None => false,
        }
    }
}

/// Shutdown: stop every worker and refuse joins from now on. (The sessions
/// themselves are closed with 1001 through the session table.)
#[derive(Message)]
#[rtype(result = "()")]
pub struct ShutdownAll;

impl Handler<ShutdownAll> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: ShutdownAll, _: &mut Context<Self>) {
        self.draining = true;
        for (_, e) in self.workers.drain() {
            e.worker.do_send(StopWorker);
        }
    }
}
