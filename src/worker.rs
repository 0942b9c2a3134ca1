//! The PriceWorker: one actor per watchlist that has at least one
//! subscription (a v1 socket on it, or a subscription on a multi-watchlist
//! socket).
//!
//! It owns its watchlist's subscribers, positions, totals, `seq` and
//! history. Every round of the feed it diffs the quotes of its own symbols
//! against what it last sent, serializes one `quotes` frame and hands the
//! same bytes to every subscriber, whatever endpoint it came from, as one
//! batch per HTTP worker thread (see [`crate::session::relay`]). It never
//! calls the upstream itself.
//!
//! Recovery: every message with a `seq` (quotes, and the snapshot after a
//! change) is kept, encoded, in a bounded history named by an `epoch` (this
//! worker's life). A subscriber that says where it left off is registered,
//! then sent the missed messages from the history, then the live ones: all in
//! one actor turn and through one relay, so there is no gap and no
//! duplicate. Otherwise it gets a snapshot.
//!
//! Lifecycle: the [supervisor](crate::supervisor) starts it on the first
//! registration and stops it on the last unregistration (or when the
//! watchlist is deleted). Its feed registration ([`WatchGuard`]), its
//! subscriber table and its history die with it; it has no timer of its own.

use crate::db::{models::Item, repo, Db, DbError};
use crate::domain::Symbol;
use crate::feed::{
    Demand, IntradayStore, QuoteCache, QuoteTick, UpstreamHealth, WatchGuard, WorkerRegistry,
};
use crate::metrics::Metrics;
use crate::protocol::{self, EndReason, QuotesHead, Since, SnapshotHead};
use crate::quote::{Known, Point, Position, Total, WireQuote};
use crate::session::messages::{Body, Subscription, SubscriptionEnded};
use crate::session::outbox::Wire;
use crate::session::relay::{Batch, Drops, RelayHandle, Target};
use crate::supervisor::{Supervisor, WorkerGone};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// A watchlist item as the worker needs it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ItemView {
    pub symbol: Symbol,
    pub quantity: Option<f64>,
    pub purchase_price: Option<f64>,
}

impl ItemView {
    /// Rows were validated on the way in; a row that no longer parses (edited
    /// by hand in the database) is skipped rather than trusted.
    pub fn from_row(item: &Item) -> Option<Self> {
        Some(Self {
            symbol: Symbol::parse(&item.symbol).ok()?,
            quantity: item.quantity,
            purchase_price: item.purchase_price,
        })
    }
}

/// What a worker needs from the rest of the service.
#[derive(Clone)]
pub struct WorkerDeps {
    pub db: Db,
    pub cache: QuoteCache,
    pub intraday: IntradayStore,
    /// Where the worker registers for ticks.
    pub registry: WorkerRegistry,
    /// Where an admin refresh is passed on to the poller.
    pub demand: Arc<dyn Demand>,
    pub metrics: Arc<Metrics>,
    /// Messages kept for recovery (`realtime.history_size`).
    pub history_size: usize,
}

struct Subscriber {
    target: Target,
    control: Recipient<SubscriptionEnded>,
    /// The relay of the session's thread: every frame goes through it.
    relay: RelayHandle,
    user_id: i64,
    /// Its snapshots carry the intraday series.
    intraday: bool,
}

/// The subscribers grouped by relay, as sent with each broadcast.
type Groups = Vec<(RelayHandle, Arc<[Target]>)>;

pub struct PriceWorker {
    watchlist_id: i64,
    items: Vec<ItemView>,
    /// Last state sent for each of this watchlist's symbols.
    known: HashMap<Symbol, Known>,
    /// By session id: a session subscribes to a watchlist at most once.
    subscribers: HashMap<u64, Subscriber>,
    /// Built from `subscribers` at the first broadcast after a change.
    groups: Option<Groups>,
    /// Frames of this worker the relays refused, and the count when a
    /// broadcast last found no subscription lagging (see [`Drops`]).
    drops: Drops,
    drops_seen: u64,
    seq: u64,
    /// Names this worker's history; random, so a new worker for the same
    /// watchlist (here or on another instance) never matches an old one.
    epoch: Arc<str>,
    /// The latest messages with a `seq`, oldest first, contiguous.
    history: VecDeque<(u64, Wire)>,
    /// Recomputed whenever items or their quotes change.
    totals: Vec<Total>,
    /// Counts `ItemsChanged`: a reload that began before one must not
    /// overwrite its newer items.
    items_version: u64,
    /// Set when the watchlist was made private (to its owner's id): a
    /// subscription of anyone else that was checked before and arrives
    /// after is ended at once.
    private_to: Option<i64>,
    /// The encoded snapshot at a `seq`, without and with intraday series:
    /// sessions joining between two ticks share one encoding.
    snapshot_cache: [Option<(u64, Wire)>; 2],
    health: UpstreamHealth,
    started_at: DateTime<Utc>,
    ticks: u64,
    last_tick_at: Option<DateTime<Utc>>,
    /// The latest upstream failure seen, kept after recovery for admins.
    last_error: Option<String>,
    supervisor: Addr<Supervisor>,
    deps: WorkerDeps,
    registration: Option<WatchGuard>,
}

/// A row of `GET /admin/v1/workers`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    pub watchlist_id: i64,
    pub sessions: usize,
    pub symbols: Vec<String>,
    #[schema(format = DateTime)]
    pub started_at: String,
    pub ticks: u64,
    #[schema(format = DateTime, required = true)]
    pub last_tick_at: Option<String>,
    #[schema(required = true)]
    pub last_error: Option<String>,
    pub seq: u64,
    pub epoch: String,
}

/// A new random epoch (64 bits, hex).
fn new_epoch() -> Arc<str> {
    format!("{:016x}", rand::random::<u64>()).into()
}

impl PriceWorker {
    pub fn new(
        watchlist_id: i64,
        items: Vec<ItemView>,
        supervisor: Addr<Supervisor>,
        deps: WorkerDeps,
    ) -> Self {
        let mut w = Self {
            watchlist_id,
            items: Vec::new(),
            known: HashMap::new(),
            subscribers: HashMap::new(),
            groups: None,
            drops: Drops::default(),
            drops_seen: 0,
            seq: 0,
            epoch: new_epoch(),
            history: VecDeque::new(),
            totals: Vec::new(),
            items_version: 0,
            private_to: None,
            snapshot_cache: [None, None],
            health: UpstreamHealth::ok(),
            started_at: Utc::now(),
            ticks: 0,
            last_tick_at: None,
            last_error: None,
            supervisor,
            deps,
            registration: None,
        };
        w.set_items(items);
        w
    }

    fn symbols(&self) -> Vec<Symbol> {
        self.items.iter().map(|i| i.symbol.clone()).collect()
    }

    /// Replaces the items, taking the state of new symbols from the cache.
    fn set_items(&mut self, items: Vec<ItemView>) {
        let cache = self.deps.cache.snapshot();
        self.known = items
            .iter()
            .map(|i| {
                let k = cache.get(&i.symbol).cloned().unwrap_or(Known::Pending);
                (i.symbol.clone(), k)
            })
            .collect();
        self.items = items;
        self.recompute_totals();
    }

    fn recompute_totals(&mut self) {
        const PENDING: Known = Known::Pending;
        self.totals = crate::quote::totals(self.items.iter().map(|i| Position {
            quantity: i.quantity,
            purchase_price: i.purchase_price,
            known: self.known.get(&i.symbol).unwrap_or(&PENDING),
        }));
    }

    fn wire<'a>(&'a self, item: &'a ItemView) -> WireQuote<'a> {
        const PENDING: Known = Known::Pending;
        let known = self.known.get(&item.symbol).unwrap_or(&PENDING);
        WireQuote::build(&item.symbol, known, item.quantity, item.purchase_price)
    }

    /// The state at the current `seq`. Every change of items or quotes bumps
    /// `seq`, so the cache is valid exactly while `seq` is unchanged.
    fn snapshot_frame(&mut self, intraday: bool) -> Wire {
        let slot = usize::from(intraday);
        if let Some((seq, frame)) = &self.snapshot_cache[slot] {
            if *seq == self.seq {
                return frame.clone();
            }
        }
        let series: Vec<Vec<Point>> = if intraday {
            self.items
                .iter()
                .map(|i| self.deps.intraday.series(&i.symbol))
                .collect()
        } else {
            Vec::new()
        };
        let quotes: Vec<WireQuote<'_>> = self
            .items
            .iter()
            .enumerate()
            .map(|(n, i)| {
                let mut q = self.wire(i);
                q.intraday = series.get(n).map(Vec::as_slice);
                q
            })
            .collect();
        let stale = self
            .items
            .iter()
            .any(|i| matches!(self.known.get(&i.symbol), None | Some(Known::Pending)));
        let head = SnapshotHead {
            watchlist_id: self.watchlist_id,
            epoch: &self.epoch,
            seq: self.seq,
            stale,
            degraded: self.health.degraded,
            totals: &self.totals,
        };
        let frame = Wire::new(&protocol::snapshot(&head, &quotes));
        self.snapshot_cache[slot] = Some((self.seq, frame.clone()));
        frame
    }

    fn status_frame(&self) -> Wire {
        Wire::new(&protocol::status(
            self.health.degraded,
            &self.health.message,
            self.health.retry_in_ms,
        ))
    }

    /// Hands one frame to every subscriber, as one batch per relay (HTTP
    /// worker thread). The frame is shared, never re-encoded. Lagging
    /// subscriptions get a snapshot instead.
    fn broadcast(&mut self, body: Body) {
        let started = Instant::now();
        let drops = self.drops.get();
        let lagging = drops != self.drops_seen
            && self
                .subscribers
                .values()
                .any(|s| s.target.sub.lagged.load(Ordering::Relaxed));
        if !lagging {
            self.drops_seen = drops;
        }
        let catch_up = lagging.then(|| self.snapshot_frame(false));
        for (relay, targets) in self.groups() {
            let batch = Batch {
                body: body.clone(),
                catch_up: catch_up.clone(),
                targets,
                drops: self.drops.clone(),
            };
            relay.send(batch, &self.deps.metrics);
        }
        self.deps
            .metrics
            .fanout_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// A message with the next `seq`: kept for recovery, then broadcast.
    fn broadcast_seq(&mut self, frame: Wire) {
        self.history.push_back((self.seq, frame.clone()));
        while self.history.len() > self.deps.history_size {
            self.history.pop_front();
        }
        self.broadcast(Body::Frame(frame));
    }

    fn groups(&mut self) -> Groups {
        if let Some(groups) = &self.groups {
            return groups.clone();
        }
        let mut by_relay: HashMap<u64, (RelayHandle, Vec<Target>)> = HashMap::new();
        for sub in self.subscribers.values() {
            by_relay
                .entry(sub.relay.id())
                .or_insert_with(|| (sub.relay.clone(), Vec::new()))
                .1
                .push(sub.target.clone());
        }
        let groups: Groups = by_relay
            .into_values()
            .map(|(relay, targets)| (relay, Arc::from(targets)))
            .collect();
        self.groups = Some(groups.clone());
        groups
    }

    /// One frame for one session, through its relay like every other frame,
    /// so it cannot overtake a broadcast made before it.
    fn send_to(&self, session_id: u64, body: Body) {
        if let Some(sub) = self.subscribers.get(&session_id) {
            let batch = Batch {
                body,
                catch_up: None,
                targets: Arc::from([sub.target.clone()]),
                drops: self.drops.clone(),
            };
            sub.relay.send(batch, &self.deps.metrics);
        }
    }

    /// The messages after `since`, if this worker's history still holds all
    /// of them (`Some(empty)`: nothing was missed).
    fn missed_since(&self, since: &Since) -> Option<Vec<Wire>> {
        if *since.epoch != *self.epoch || since.seq > self.seq {
            return None;
        }
        if since.seq == self.seq {
            return Some(Vec::new());
        }
        let oldest = self.history.front()?.0;
        if since.seq + 1 < oldest {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|(seq, _)| *seq > since.seq)
                .map(|(_, f)| f.clone())
                .collect(),
        )
    }

    /// Items changed: every session gets a fresh snapshot.
    fn apply_items(&mut self, items: Vec<ItemView>) {
        if items == self.items {
            return;
        }
        self.set_items(items);
        if let Some(reg) = &self.registration {
            reg.update(self.symbols());
        }
        self.seq += 1;
        let frame = self.snapshot_frame(false);
        self.broadcast_seq(frame);
    }

    /// Ends subscriptions (deletion, lost access); the sessions unregister
    /// through the supervisor as they learn it.
    fn end(&mut self, reason: EndReason, which: impl Fn(&Subscriber) -> bool) {
        let ended: Vec<u64> = self
            .subscribers
            .iter()
            .filter(|(_, s)| which(s))
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            if let Some(s) = self.subscribers.remove(&id) {
                s.control.do_send(SubscriptionEnded {
                    watchlist_id: self.watchlist_id,
                    sub: s.target.sub.id,
                    reason,
                });
                self.groups = None;
            }
        }
    }

    fn deleted(&mut self, ctx: &mut Context<Self>) {
        self.end(EndReason::Deleted, |_| true);
        ctx.stop();
    }

    /// Reads the watchlist again (existence, visibility, items) and applies
    /// what changed. An item change that arrives while the read runs is
    /// newer than what was read, which then leaves the items alone.
    fn reload(&mut self, ctx: &mut Context<Self>) {
        let db = self.deps.db.clone();
        let id = self.watchlist_id;
        let version = self.items_version;
        let read = async move {
            db.run(move |c| {
                let w = repo::get_watchlist(c, id)?;
                Ok::<_, DbError>((w, repo::get_items(c, id)?))
            })
            .await
        };
        ctx.spawn(read.into_actor(self).map(move |res, act, ctx| match res {
            Ok((w, rows)) => {
                act.apply_access(w.owner_id, w.is_public);
                if act.items_version == version {
                    act.apply_items(rows.iter().filter_map(ItemView::from_row).collect());
                }
            }
            Err(DbError::NotFound) => {
                act.supervisor.do_send(WorkerGone {
                    watchlist_id: act.watchlist_id,
                    worker: ctx.address(),
                });
                act.deleted(ctx);
            }
            Err(e) => log::warn!("worker {}: could not reload: {e}", act.watchlist_id),
        }));
    }

    fn apply_access(&mut self, owner_id: i64, is_public: bool) {
        if is_public {
            self.private_to = None;
        } else {
            self.private_to = Some(owner_id);
            self.end(EndReason::Forbidden, |s| s.user_id != owner_id);
        }
    }
}

impl Actor for PriceWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.deps.metrics.workers.inc();
        self.registration = Some(
            self.deps
                .registry
                .register(self.symbols(), ctx.address().recipient()),
        );
        // The items came from the first session's upgrade; read them again in
        // case the watchlist changed (or went) in between.
        self.reload(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // Unregister from the feed now, not whenever the struct is dropped.
        self.registration.take();
        self.deps.metrics.workers.dec();
        log::debug!("worker {} stopped", self.watchlist_id);
    }
}

/// A session subscribes: it gets, in this order, a `subscribed` ack (when
/// `ack`), then either the messages it missed since `since` or a snapshot,
/// then the upstream status when it is degraded, then the live messages.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub session_id: u64,
    pub user_id: i64,
    pub sub: Arc<Subscription>,
    pub out: crate::session::outbox::Outbox,
    pub control: Recipient<SubscriptionEnded>,
    pub relay: RelayHandle,
    pub since: Option<Since>,
    pub intraday: bool,
    /// Send a `subscribed` message first (the multi-watchlist endpoint, and
    /// the v1 endpoint when the client asked to recover).
    pub ack: bool,
}

impl Handler<Subscribe> for PriceWorker {
    type Result = ();
    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        let session_id = msg.session_id;
        if self.private_to.is_some_and(|owner| owner != msg.user_id) {
            msg.control.do_send(SubscriptionEnded {
                watchlist_id: self.watchlist_id,
                sub: msg.sub.id,
                reason: EndReason::Forbidden,
            });
            return;
        }
        self.subscribers.insert(
            session_id,
            Subscriber {
                target: Target {
                    out: msg.out,
                    sub: msg.sub,
                },
                control: msg.control,
                relay: msg.relay,
                user_id: msg.user_id,
                intraday: msg.intraday,
            },
        );
        self.groups = None;
        let missed = msg.since.as_ref().and_then(|s| self.missed_since(s));
        let mut frames = Vec::with_capacity(2 + missed.as_ref().map_or(0, Vec::len));
        if msg.ack {
            frames.push(Wire::new(&protocol::subscribed(
                self.watchlist_id,
                &self.epoch,
                missed.is_some(),
            )));
        }
        match missed {
            Some(replay) => frames.extend(replay),
            None => frames.push(self.snapshot_frame(msg.intraday)),
        }
        let status = self.health.degraded.then(|| self.status_frame());
        self.send_to(session_id, Body::Opening { frames, status });
    }
}

/// A session unsubscribed (or left).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub session_id: u64,
    pub sub: u64,
}

impl Handler<Unsubscribe> for PriceWorker {
    type Result = ();
    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        if self
            .subscribers
            .get(&msg.session_id)
            .is_some_and(|s| s.target.sub.id == msg.sub)
        {
            self.subscribers.remove(&msg.session_id);
            self.groups = None;
        }
    }
}

/// A round of the feed: broadcast what changed for this watchlist.
impl Handler<QuoteTick> for PriceWorker {
    type Result = ();
    fn handle(&mut self, tick: QuoteTick, _: &mut Context<Self>) {
        self.ticks += 1;
        self.last_tick_at = Some(Utc::now());
        self.deps.metrics.worker_ticks.inc();

        if !tick.health.same_state(&self.health) {
            self.health = (*tick.health).clone();
            if self.health.degraded {
                self.last_error = Some(self.health.message.clone());
            }
            let status = self.status_frame();
            self.broadcast(Body::Status(status));
        } else {
            self.health.retry_in_ms = tick.health.retry_in_ms;
        }

        // One lookup and at most one clone per changed quote: this runs for
        // every item of every watchlist on every tick.
        let mut changed = Vec::new();
        let mut positions_changed = false;
        for (idx, item) in self.items.iter().enumerate() {
            let Some(new) = tick.quotes.get(&item.symbol) else {
                continue;
            };
            match self.known.get_mut(&item.symbol) {
                Some(old) if old == new => continue,
                Some(old) => *old = new.clone(),
                None => {
                    self.known.insert(item.symbol.clone(), new.clone());
                }
            }
            positions_changed |= item.quantity.is_some();
            changed.push(idx);
        }
        if changed.is_empty() {
            return;
        }
        if positions_changed {
            self.recompute_totals();
        }
        self.seq += 1;
        let quotes: Vec<WireQuote<'_>> = changed
            .iter()
            .map(|&idx| self.wire(&self.items[idx]))
            .collect();
        let head = QuotesHead {
            watchlist_id: self.watchlist_id,
            epoch: &self.epoch,
            seq: self.seq,
            tick: tick.tick,
            totals: &self.totals,
        };
        let frame = Wire::new(&protocol::quotes(&head, &quotes));
        self.broadcast_seq(frame);
    }
}

/// The watchlist's items changed through the API.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ItemsChanged(pub Vec<ItemView>);

impl Handler<ItemsChanged> for PriceWorker {
    type Result = ();
    fn handle(&mut self, msg: ItemsChanged, _: &mut Context<Self>) {
        self.items_version += 1;
        self.apply_items(msg.0);
    }
}

/// The watchlist's visibility was set: when private, subscriptions of
/// anyone but its owner end.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AccessChanged {
    pub owner_id: i64,
    pub is_public: bool,
}

impl Handler<AccessChanged> for PriceWorker {
    type Result = ();
    fn handle(&mut self, msg: AccessChanged, _: &mut Context<Self>) {
        self.apply_access(msg.owner_id, msg.is_public);
    }
}

/// Read the watchlist again from the database.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reload;

impl Handler<Reload> for PriceWorker {
    type Result = ();
    fn handle(&mut self, _: Reload, ctx: &mut Context<Self>) {
        self.reload(ctx);
    }
}

/// A session asked for a snapshot: it gets one at the current `seq`, so the
/// others see no gap.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SendSnapshot {
    pub session_id: u64,
}

impl Handler<SendSnapshot> for PriceWorker {
    type Result = ();
    fn handle(&mut self, msg: SendSnapshot, _: &mut Context<Self>) {
        let intraday = self
            .subscribers
            .get(&msg.session_id)
            .is_some_and(|s| s.intraday);
        let snap = self.snapshot_frame(intraday);
        self.send_to(msg.session_id, Body::Frame(snap));
    }
}

/// The watchlist was deleted: end every subscription and stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deleted;

impl Handler<Deleted> for PriceWorker {
    type Result = ();
    fn handle(&mut self, _: Deleted, ctx: &mut Context<Self>) {
        self.deleted(ctx);
    }
}

/// The last session left, or the server is shutting down.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopWorker;

impl Handler<StopWorker> for PriceWorker {
    type Result = ();
    fn handle(&mut self, _: StopWorker, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Admin: describe yourself.
#[derive(Message)]
#[rtype(result = "WorkerInfo")]
pub struct GetInfo;

impl Handler<GetInfo> for PriceWorker {
    type Result = MessageResult<GetInfo>;
    fn handle(&mut self, _: GetInfo, _: &mut Context<Self>) -> Self::Result {
        MessageResult(WorkerInfo {
            watchlist_id: self.watchlist_id,
            sessions: self.subscribers.len(),
            symbols: self.items.iter().map(|i| i.symbol.to_string()).collect(),
            started_at: crate::quote::format_ts(self.started_at),
            ticks: self.ticks,
            last_tick_at: self.last_tick_at.map(crate::quote::format_ts),
            last_error: self.last_error.clone(),
            seq: self.seq,
            epoch: self.epoch.to_string(),
        })
    }
}

/// Admin: fetch this watchlist's symbols now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Refresh;

impl Handler<Refresh> for PriceWorker {
    type Result = ();
    fn handle(&mut self, _: Refresh, _: &mut Context<Self>) {
        self.deps.demand.force(self.symbols());
    }
}

#[cfg(test)]
mod tests {
    use crate::feed::UpstreamHealth;
    use crate::quote::Known;
    use crate::supervisor::{SnapshotFor, WatchlistChanged};
    use crate::testkit::{item_views, quote, sym, Rig, Session};
    use serde_json::Value;
    use std::collections::BTreeSet;

    fn seq(frame: &Value) -> u64 {
        frame["seq"].as_u64().expect("a seq")
    }

    fn symbols(frame: &Value) -> Vec<&str> {
        frame["quotes"]
            .as_array()
            .expect("quotes")
            .iter()
            .map(|q| q["symbol"].as_str().unwrap())
            .collect()
    }

    fn priced(symbol: &str, price: f64) -> (crate::domain::Symbol, Known) {
        (sym(symbol), Known::quote(quote(symbol, price)))
    }

    /// A worker on a watchlist of `symbols` with `n` sessions past their
    /// snapshots; the watchlist's id and the snapshots' seq.
    async fn watched(rig: &mut Rig, symbols: &[&str], n: usize) -> (i64, Vec<Session>, u64) {
        let (id, items) = rig.watchlist(symbols);
        let mut sessions: Vec<Session> = (0..n).map(|_| rig.session()).collect();
        let mut seqs = BTreeSet::new();
        for s in sessions.iter_mut() {
            rig.join(s, id, &items);
            let snap = s.frame().await;
            assert_eq!(snap["type"], "snapshot", "{snap}");
            seqs.insert(seq(&snap));
        }
        assert_eq!(seqs.len(), 1, "one seq for all: {seqs:?}");
        (id, sessions, seqs.pop_first().unwrap())
    }

    #[actix_web::test]
    async fn a_tick_sends_one_quotes_frame_with_only_what_changed() {
        let mut rig = Rig::start();
        let (_, mut sessions, start) = watched(&mut rig, &["AAPL", "MSFT"], 2).await;

        rig.publish(vec![priced("AAPL", 101.0)], UpstreamHealth::ok());
        for s in sessions.iter_mut() {
            let q = s.frame().await;
            assert_eq!(q["type"], "quotes", "{q}");
            assert_eq!(seq(&q), start + 1);
            assert_eq!(symbols(&q), ["AAPL"]);
            assert_eq!(q["quotes"][0]["price"], 101.0);
        }
        // Nothing new for this watchlist (the same price, another symbol):
        // no frame, so the next change comes with the very next seq.
        rig.publish(vec![priced("AAPL", 101.0)], UpstreamHealth::ok());
        rig.publish(vec![priced("NVDA", 5.0)], UpstreamHealth::ok());
        rig.publish(
            vec![priced("MSFT", 50.0), priced("AAPL", 101.0)],
            UpstreamHealth::ok(),
        );
        for s in sessions.iter_mut() {
            let q = s.frame().await;
            assert_eq!(seq(&q), start + 2, "{q}");
            assert_eq!(symbols(&q), ["MSFT"]);
        }
    }

    /// A session whose queue was full when a broadcast came gets the next
    /// one as a snapshot (the latest state, `seq` jumping), and then
    /// quotes again; the others are not disturbed. The worker looks for such
    /// sessions only after the relays counted a refused frame.
    #[actix_web::test]
    async fn a_session_that_lagged_catches_up_with_a_snapshot() {
        let mut rig = Rig::start();
        let (id, items) = rig.watchlist(&["AAPL"]);
        let mut quick = rig.session();
        rig.join(&quick, id, &items);
        let start = seq(&quick.frame().await);
        // Room for one offer: its opening fills it.
        let mut slow = rig.stalled_session(1);
        rig.join(&slow, id, &items);
        slow.queued(1).await;
        for (n, price) in [101.0, 102.0].into_iter().enumerate() {
            rig.publish(vec![priced("AAPL", price)], UpstreamHealth::ok());
            let q = quick.frame().await;
            assert_eq!(
                (q["type"].as_str(), seq(&q)),
                (Some("quotes"), start + 1 + n as u64)
            );
        }
        slow.resume();
        let opening = slow.frame().await;
        assert_eq!(
            (opening["type"].as_str(), seq(&opening)),
            (Some("snapshot"), start)
        );
        rig.publish(vec![priced("AAPL", 103.0)], UpstreamHealth::ok());
        let q = quick.frame().await;
        assert_eq!((q["type"].as_str(), seq(&q)), (Some("quotes"), start + 3));
        let caught_up = slow.frame().await;
        assert_eq!(caught_up["type"], "snapshot", "{caught_up}");
        assert_eq!(seq(&caught_up), start + 3);
        assert_eq!(caught_up["quotes"][0]["price"], 103.0);
        rig.publish(vec![priced("AAPL", 104.0)], UpstreamHealth::ok());
        for s in [&mut quick, &mut slow] {
            let q = s.frame().await;
            assert_eq!(
                (q["type"].as_str(), seq(&q)),
                (Some("quotes"), start + 4),
                "{q}"
            );
        }
    }

    #[actix_web::test]
    async fn an_upstream_state_change_reaches_every_session_once() {
        let mut rig = Rig::start();
        let (id, mut sessions, _) = watched(&mut rig, &["AAPL"], 1).await;
        let degraded = |retry| UpstreamHealth {
            degraded: true,
            message: "upstream unavailable: down".into(),
            retry_in_ms: Some(retry),
        };
        let a = &mut sessions[0];

        rig.publish(vec![], degraded(1000));
        let status = a.any_frame().await;
        assert_eq!(status["type"], "status");
        assert_eq!(status["upstream"], "degraded");
        assert_eq!(status["message"], "upstream unavailable: down");
        assert_eq!(status["retry_in_ms"], 1000);
        // Only the countdown moved: not news.
        rig.publish(vec![], degraded(500));
        rig.publish(vec![], UpstreamHealth::ok());
        let status = a.any_frame().await;
        assert_eq!(
            (&status["type"], &status["upstream"]),
            (&"status".into(), &"ok".into())
        );

        // A session joining while the upstream is down is told at once.
        rig.publish(vec![], degraded(2000));
        assert_eq!(a.any_frame().await["upstream"], "degraded");
        let mut late = rig.session();
        let items: std::sync::Arc<[super::ItemView]> = item_views(&["AAPL"]).into();
        rig.join(&late, id, &items);
        assert_eq!(late.any_frame().await["type"], "snapshot");
        let status = late.any_frame().await;
        assert_eq!(status["upstream"], "degraded", "{status}");
        assert_eq!(status["retry_in_ms"], 2000);
    }

    #[actix_web::test]
    async fn changed_items_give_every_session_a_fresh_snapshot() {
        let mut rig = Rig::start();
        let (id, mut sessions, start) = watched(&mut rig, &["AAPL"], 2).await;
        let items = item_views(&["AAPL", "MSFT"]);

        rig.supervisor.do_send(WatchlistChanged {
            watchlist_id: id,
            items: items.clone(),
        });
        for s in sessions.iter_mut() {
            let snap = s.frame().await;
            assert_eq!(snap["type"], "snapshot", "{snap}");
            assert_eq!(seq(&snap), start + 1);
            assert_eq!(symbols(&snap), ["AAPL", "MSFT"]);
            assert_eq!(snap["stale"], true, "MSFT is not known yet");
        }
        assert_eq!(
            rig.deps.registry.symbols(),
            BTreeSet::from([sym("AAPL"), sym("MSFT")]),
            "the worker watches its new symbol"
        );
        // The same items again change nothing: the next frame is a tick's.
        rig.supervisor.do_send(WatchlistChanged {
            watchlist_id: id,
            items,
        });
        rig.publish(vec![priced("MSFT", 50.0)], UpstreamHealth::ok());
        for s in sessions.iter_mut() {
            let q = s.frame().await;
            assert_eq!(q["type"], "quotes", "{q}");
            assert_eq!(seq(&q), start + 2);
        }
    }

    #[actix_web::test]
    async fn a_snapshot_on_request_goes_to_that_session_at_the_current_seq() {
        let mut rig = Rig::start();
        let (id, mut sessions, start) = watched(&mut rig, &["AAPL"], 2).await;
        rig.publish(vec![priced("AAPL", 1.0)], UpstreamHealth::ok());
        for s in sessions.iter_mut() {
            assert_eq!(seq(&s.frame().await), start + 1);
        }

        rig.supervisor.do_send(SnapshotFor {
            watchlist_id: id,
            session_id: sessions[0].id,
        });
        let snap = sessions[0].frame().await;
        assert_eq!(snap["type"], "snapshot", "{snap}");
        assert_eq!(seq(&snap), start + 1, "no gap for the others");
        assert_eq!(snap["stale"], false);
        assert_eq!(snap["quotes"][0]["price"], 1.0);
        rig.publish(vec![priced("AAPL", 2.0)], UpstreamHealth::ok());
        for s in sessions.iter_mut() {
            let q = s.frame().await;
            assert_eq!(q["type"], "quotes", "only the asker got a snapshot: {q}");
            assert_eq!(seq(&q), start + 2);
        }
    }
}
