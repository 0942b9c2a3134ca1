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

use crate::protocol::close;
use crate::session::messages::{CloseSession, Closer};
use crate::worker::{
    AccessChanged, Deleted, GetInfo, ItemView, ItemsChanged, PriceWorker, Refresh, Reload,
    SendSnapshot, StopWorker, Subscribe, Unsubscribe, WorkerDeps, WorkerInfo,
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
    /// Items as the session read them, for a worker spawned now: shared,
    /// since a join almost always finds its worker running and drops them.
    pub items: Arc<[ItemView]>,
    /// To close the session when the server is draining.
    pub close: Closer,
    /// What the watchlist's worker is handed, as it is.
    pub subscribe: Subscribe,
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
            let worker = PriceWorker::new(
                msg.watchlist_id,
                msg.items.to_vec(),
                ctx.address(),
                deps.clone(),
            )
            .start();
            Entry {
                worker,
                sessions: HashSet::new(),
            }
        });
        entry.sessions.insert(msg.subscribe.session_id);
        entry.worker.do_send(msg.subscribe);
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

/// The watchlists that have a worker here (the cluster heartbeat).
#[derive(Message)]
#[rtype(result = "Vec<i64>")]
pub struct WatchedIds;

impl Handler<WatchedIds> for Supervisor {
    type Result = MessageResult<WatchedIds>;
    fn handle(&mut self, _: WatchedIds, _: &mut Context<Self>) -> Self::Result {
        let mut ids: Vec<i64> = self.workers.keys().copied().collect();
        ids.sort_unstable();
        MessageResult(ids)
    }
}

/// Every worker reads its watchlist again (after the control plane may have
/// missed events: a Redis outage).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReloadAll;

impl Handler<ReloadAll> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: ReloadAll, _: &mut Context<Self>) {
        for e in self.workers.values() {
            e.worker.do_send(Reload);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::UpstreamHealth;
    use crate::quote::Known;
    use crate::testkit::{eventually, quote, sym, Rig, Session};
    use std::collections::BTreeSet;

    async fn workers(rig: &Rig) -> Vec<WorkerInfo> {
        rig.supervisor.send(ListWorkers).await.expect("supervisor")
    }

    /// Waits for `session`'s first frame and checks it is the snapshot.
    async fn snapshot(session: &mut Session) -> serde_json::Value {
        let snap = session.frame().await;
        assert_eq!(snap["type"], "snapshot", "{snap}");
        snap
    }

    #[actix_web::test]
    async fn the_first_join_starts_one_worker_and_the_last_leave_stops_it() {
        let mut rig = Rig::start();
        let (id, items) = rig.watchlist(&["AAPL"]);
        let (mut a, mut b) = (rig.session(), rig.session());
        assert_eq!(rig.workers(), 0);

        rig.join(&a, id, &items);
        assert_eq!(snapshot(&mut a).await["watchlist_id"], id);
        assert_eq!(rig.workers(), 1);
        assert_eq!(rig.deps.registry.symbols(), BTreeSet::from([sym("AAPL")]));
        rig.join(&b, id, &items);
        snapshot(&mut b).await;
        assert_eq!(rig.workers(), 1, "the second session joins the same worker");
        let infos = workers(&rig).await;
        assert_eq!(infos.len(), 1);
        assert_eq!((infos[0].watchlist_id, infos[0].sessions), (id, 2));

        rig.leave(&a, id);
        let infos = workers(&rig).await;
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].sessions, 1);
        assert_eq!(rig.workers(), 1);
        rig.leave(&b, id);
        rig.wait_no_workers().await;
        assert!(workers(&rig).await.is_empty());
    }

    #[actix_web::test]
    async fn concurrent_joins_start_exactly_one_worker() {
        let mut rig = Rig::start();
        let (id, items) = rig.watchlist(&["AAPL"]);
        let mut sessions: Vec<Session> = (0..20).map(|_| rig.session()).collect();
        // Each from a thread of its own, all at once.
        let threads: Vec<_> = sessions
            .iter()
            .map(|s| {
                let (supervisor, join) = (rig.supervisor.clone(), rig.join_message(s, id, &items));
                std::thread::spawn(move || supervisor.do_send(join))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for s in sessions.iter_mut() {
            snapshot(s).await;
        }
        assert_eq!(rig.workers(), 1);
        let infos = workers(&rig).await;
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].sessions, 20);

        for s in &sessions {
            rig.leave(s, id);
        }
        rig.wait_no_workers().await;
    }

    #[actix_web::test]
    async fn a_join_racing_the_last_leave_gets_a_live_worker() {
        let mut rig = Rig::start();
        let (id, items) = rig.watchlist(&["AAPL"]);
        let mut old = rig.session();
        rig.join(&old, id, &items);
        snapshot(&mut old).await;
        for round in 0..20 {
            // The last session leaves (its worker is told to stop) as a new
            // one arrives.
            let mut new = rig.session();
            rig.leave(&old, id);
            rig.join(&new, id, &items);
            snapshot(&mut new).await;
            let price = 100.0 + f64::from(round);
            rig.publish(
                vec![(sym("AAPL"), Known::quote(quote("AAPL", price)))],
                UpstreamHealth::ok(),
            );
            let q = new.frame().await;
            assert_eq!(q["type"], "quotes", "the newcomer's worker ticks: {q}");
            assert_eq!(q["quotes"][0]["price"], price);
            eventually("the old worker to stop", async || rig.workers() == 1).await;
            old = new;
        }
        rig.leave(&old, id);
        rig.wait_no_workers().await;
    }

    #[actix_web::test]
    async fn a_deleted_watchlist_closes_its_sessions_with_4404_and_stops_its_worker() {
        let mut rig = Rig::start();
        let (id, items) = rig.watchlist(&["AAPL"]);
        let (mut a, mut b) = (rig.session(), rig.session());
        rig.join(&a, id, &items);
        rig.join(&b, id, &items);
        snapshot(&mut a).await;
        snapshot(&mut b).await;

        rig.supervisor
            .do_send(WatchlistDeleted { watchlist_id: id });
        assert_eq!(a.closed().await, 4404);
        assert_eq!(b.closed().await, 4404);
        rig.wait_no_workers().await;
        assert!(workers(&rig).await.is_empty());
        // Their leaves, arriving late, disturb nothing.
        rig.leave(&a, id);
        rig.leave(&b, id);
        assert!(workers(&rig).await.is_empty());
    }

    #[actix_web::test]
    async fn a_worker_whose_watchlist_is_gone_closes_with_4404_and_is_forgotten() {
        let mut rig = Rig::start();
        let (_, items) = rig.watchlist(&["AAPL"]);
        let mut a = rig.session();
        // Deleted between the session's upgrade and its worker's start.
        rig.join(&a, 424242, &items);
        assert_eq!(a.closed().await, 4404);
        rig.wait_no_workers().await;
        assert!(workers(&rig).await.is_empty(), "the supervisor forgot it");
    }

    /// A join that arrives during shutdown used to start a worker nobody
    /// would stop; now the supervisor drains: the session is closed with
    /// 1001 and no worker starts.
    #[actix_web::test]
    async fn a_join_during_shutdown_starts_no_worker() {
        let mut rig = Rig::start();
        let (id, items) = rig.watchlist(&["AAPL"]);
        let mut a = rig.session();
        rig.join(&a, id, &items);
        snapshot(&mut a).await;
        rig.supervisor.send(ShutdownAll).await.unwrap();
        rig.wait_no_workers().await;

        let mut late = rig.session();
        rig.join(&late, id, &items);
        assert_eq!(late.closed().await, 1001);
        assert!(workers(&rig).await.is_empty());
        assert_eq!(rig.workers(), 0);
    }

    #[actix_web::test]
    async fn a_refresh_asks_the_poller_for_the_workers_symbols() {
        let mut rig = Rig::start();
        let (id, items) = rig.watchlist(&["AAPL", "MSFT"]);
        let mut a = rig.session();
        rig.join(&a, id, &items);
        snapshot(&mut a).await;

        let found = rig.supervisor.send(RefreshWorker { watchlist_id: id });
        assert!(found.await.unwrap());
        let missing = rig.supervisor.send(RefreshWorker {
            watchlist_id: id + 1,
        });
        assert!(!missing.await.unwrap());
        let demand = rig.deps.demand.clone();
        let mut forced = Default::default();
        eventually("the refresh to reach the demand", async || {
            forced = demand.take_forced().await;
            !forced.is_empty()
        })
        .await;
        assert_eq!(forced, [sym("AAPL"), sym("MSFT")].into());
    }
}
