//! Fakes for the unit tests of the feed, the fetcher, the supervisor and
//! the worker: no server, no HTTP, no network.
//!
//! * [`FakeProvider`]: a scriptable [`QuoteProvider`] that records its calls.
//! * [`RecordingBus`] and [`SwitchRole`]: a [`QuoteBus`] that keeps the rounds
//!   (and can refuse one as fenced), a [`PollerRole`] a test can flip.
//! * [`watcher`]: a stand-in worker registered in a [`WorkerRegistry`].
//! * [`Rig`]: a [`Supervisor`] with real [`WorkerDeps`] on a scratch SQLite
//!   database, and fake [`Session`]s that record what they are sent.
//!
//! Waits are for events, with [`DEADLINE`]; nothing sleeps a fixed time.

use crate::db::repo::{self, ItemInput, WatchlistInput};
use crate::db::{Db, DbUrl};
use crate::domain::Symbol;
use crate::feed::local::LocalDemand;
use crate::feed::{
    BusError, Distributor, PollerRole, QuoteBus, QuoteCache, QuoteTick, Round, UpstreamHealth,
    WatchGuard, WorkerRegistry,
};
use crate::feed::{IntradayStore, PinnedSymbols};
use crate::metrics::Metrics;
use crate::protocol::{close, EndReason};
use crate::quote::{Fetched, Known, MarketQuote, MARKET_CLOSED, MARKET_REGULAR};
use crate::session::messages::{
    CatchUp, CloseSession, Closer, SessionStats, Subscription, SubscriptionEnded,
};
use crate::session::outbox::{Outbox, Writer};
use crate::session::relay::RelayHandle;
use crate::supervisor::{Join, Leave, Supervisor};
use crate::upstream::{QuoteProvider, UpstreamError};
use crate::worker::{ItemView, Subscribe, WorkerDeps};
use actix::prelude::*;
use actix_http::ws::{OpCode, Parser};
use bytes::BytesMut;
use futures_util::future::{self, BoxFuture, FutureExt};
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// How long a test waits for an expected event.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

pub(crate) fn sym(s: &str) -> Symbol {
    Symbol::parse(s).expect("valid symbol")
}

pub(crate) fn syms(list: &[&str]) -> Vec<Symbol> {
    list.iter().map(|s| sym(s)).collect()
}

/// A quote of `symbol` at `price`, its market open.
pub(crate) fn quote(symbol: &str, price: f64) -> MarketQuote {
    MarketQuote {
        symbol: sym(symbol),
        name: Some(format!("{symbol} Inc.")),
        price: Some(price),
        previous_close: Some(price - 1.0),
        volume: Some(1000),
        currency: Some("USD".into()),
        market_state: Some(MARKET_REGULAR.into()),
        market_time: None,
    }
}

/// Waits until `check` is true, looking every few milliseconds; panics
/// naming `what` after [`DEADLINE`].
pub(crate) async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A [`QuoteProvider`] that answers from a script and records every call.
/// Symbols it was not told about are unknown: absent from batch answers,
/// `None` from a single request.
#[derive(Default)]
pub(crate) struct FakeProvider {
    script: Mutex<Script>,
}

#[derive(Default)]
struct Script {
    quotes: HashMap<Symbol, MarketQuote>,
    /// Known, but left out of batch answers: only a single request finds them.
    batch_shy: HashSet<Symbol>,
    /// Failures for the next requests, batch or single, in order.
    failures: VecDeque<UpstreamError>,
    batches: Vec<Vec<String>>,
    singles: Vec<String>,
}

/// The requests a [`FakeProvider`] got: batches (their symbols) and single
/// requests.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Calls {
    pub batches: Vec<Vec<String>>,
    pub singles: Vec<String>,
}

impl Calls {
    pub fn none() -> Self {
        Self::default()
    }

    /// Every symbol asked for, batch or single.
    pub fn symbols(&self) -> Vec<String> {
        let mut all: Vec<String> = self.batches.iter().flatten().cloned().collect();
        all.extend(self.singles.iter().cloned());
        all.sort();
        all
    }
}

impl FakeProvider {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Answers for `symbol`, at `price`, its market open.
    pub fn knows(&self, symbol: &str, price: f64) {
        lock(&self.script)
            .quotes
            .insert(sym(symbol), quote(symbol, price));
    }

    /// Answers for `symbol`, its market closed.
    pub fn knows_closed(&self, symbol: &str, price: f64) {
        let mut q = quote(symbol, price);
        q.market_state = Some(MARKET_CLOSED.into());
        lock(&self.script).quotes.insert(sym(symbol), q);
    }

    /// Leaves `symbol` out of batch answers.
    pub fn batch_shy(&self, symbol: &str) {
        lock(&self.script).batch_shy.insert(sym(symbol));
    }

    /// The next request fails with `e`.
    pub fn fail_next(&self, e: UpstreamError) {
        lock(&self.script).failures.push_back(e);
    }

    /// The requests since the last call, in order.
    pub fn take_calls(&self) -> Calls {
        let mut s = lock(&self.script);
        Calls {
            batches: std::mem::take(&mut s.batches),
            singles: std::mem::take(&mut s.singles),
        }
    }
}

impl QuoteProvider for FakeProvider {
    fn fetch_one(
        &self,
        symbol: Symbol,
    ) -> BoxFuture<'static, Result<Option<Fetched>, UpstreamError>> {
        let mut s = lock(&self.script);
        s.singles.push(symbol.to_string());
        let answer = match s.failures.pop_front() {
            Some(e) => Err(e),
            None => Ok(s.quotes.get(&symbol).cloned().map(Fetched::from)),
        };
        future::ready(answer).boxed()
    }

    fn fetch_batch(
        &self,
        symbols: Vec<Symbol>,
    ) -> BoxFuture<'static, Result<Vec<Fetched>, UpstreamError>> {
        let mut s = lock(&self.script);
        s.batches
            .push(symbols.iter().map(Symbol::to_string).collect());
        let answer = match s.failures.pop_front() {
            Some(e) => Err(e),
            None => Ok(symbols
                .iter()
                .filter(|x| !s.batch_shy.contains(*x))
                .filter_map(|x| s.quotes.get(x).cloned().map(Fetched::from))
                .collect()),
        };
        future::ready(answer).boxed()
    }

    fn rate_limited(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "fake"
    }
}

/// A [`QuoteBus`] that keeps every round published (as `(full, round)`),
/// and refuses the next one as fenced when asked to.
#[derive(Default)]
pub(crate) struct RecordingBus {
    rounds: Mutex<Vec<(bool, Round)>>,
    fence_next: AtomicBool,
}

impl RecordingBus {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The rounds published since the last call.
    pub fn take(&self) -> Vec<(bool, Round)> {
        std::mem::take(&mut *lock(&self.rounds))
    }

    /// The next publish fails with [`BusError::Fenced`] (and lands nowhere).
    pub fn fence_next(&self) {
        self.fence_next.store(true, Ordering::Relaxed);
    }
}

impl QuoteBus for RecordingBus {
    fn publish(&self, full: bool, round: Round) -> BoxFuture<'_, Result<u64, BusError>> {
        if self.fence_next.swap(false, Ordering::Relaxed) {
            return future::ready(Err(BusError::Fenced)).boxed();
        }
        let mut rounds = lock(&self.rounds);
        rounds.push((full, round));
        future::ready(Ok(rounds.len() as u64)).boxed()
    }
}

/// A [`PollerRole`] the test switches.
pub(crate) struct SwitchRole {
    poller: AtomicBool,
    changed: Notify,
}

impl SwitchRole {
    pub fn new(poller: bool) -> Arc<Self> {
        Arc::new(Self {
            poller: AtomicBool::new(poller),
            changed: Notify::new(),
        })
    }

    pub fn set(&self, poller: bool) {
        self.poller.store(poller, Ordering::Relaxed);
        self.changed.notify_one();
    }
}

impl PollerRole for SwitchRole {
    fn is_poller(&self) -> bool {
        self.poller.load(Ordering::Relaxed)
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        self.changed.notified().boxed()
    }
}

/// Stands as a worker in a registry: takes ticks, keeps nothing.
struct TickSink;

impl Actor for TickSink {
    type Context = Context<Self>;
}

impl Handler<QuoteTick> for TickSink {
    type Result = ();
    fn handle(&mut self, _: QuoteTick, _: &mut Context<Self>) {}
}

/// Registers a stand-in worker watching `symbols` (inside an actix system);
/// it watches until the guard is dropped.
pub(crate) fn watcher(registry: &WorkerRegistry, symbols: &[&str]) -> WatchGuard {
    registry.register(syms(symbols), TickSink.start().recipient())
}

/// What a fake session was sent.
#[derive(Debug)]
pub(crate) enum Seen {
    Frame(Value),
    Closed(u16),
}

/// Stands for a session actor: closes its outbox as a session would. What
/// the outbox's writer yields (frames from the relay, then the close) goes
/// to its [`Session`], in order.
struct FakeSession {
    out: Outbox,
}

impl Actor for FakeSession {
    type Context = Context<Self>;
}

impl Handler<CatchUp> for FakeSession {
    type Result = ();
    fn handle(&mut self, _: CatchUp, _: &mut Context<Self>) {}
}

/// What a server frame says, for the fake session: a text message's JSON,
/// or a close frame's code.
fn read_frame(frame: &[u8]) -> Option<Seen> {
    let mut buf = BytesMut::from(frame);
    let (_, op, payload) = Parser::parse(&mut buf, false, usize::MAX)
        .expect("a valid server frame")
        .expect("a whole frame");
    let payload = payload.unwrap_or_default();
    match op {
        OpCode::Text => Some(Seen::Frame(
            serde_json::from_slice(&payload).expect("frames are JSON"),
        )),
        OpCode::Close => Some(Seen::Closed(u16::from_be_bytes([payload[0], payload[1]]))),
        _ => None,
    }
}

impl Handler<SubscriptionEnded> for FakeSession {
    type Result = ();
    fn handle(&mut self, msg: SubscriptionEnded, ctx: &mut Context<Self>) {
        let code = match msg.reason {
            EndReason::Deleted => close::WATCHLIST_DELETED,
            EndReason::Forbidden => close::POLICY,
        };
        self.out.close(Some(code), "");
        ctx.stop();
    }
}

impl Handler<CloseSession> for FakeSession {
    type Result = ();
    fn handle(&mut self, msg: CloseSession, ctx: &mut Context<Self>) {
        self.out.close(Some(msg.code), msg.reason);
        ctx.stop();
    }
}

/// A fake session's side in the test: its id, and what it was sent.
pub(crate) struct Session {
    pub id: u64,
    out: Outbox,
    control: Closer,
    ended: Recipient<SubscriptionEnded>,
    /// One subscription per fake session (as on a v1 socket).
    sub: Arc<Subscription>,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// Its writer, not yet taking frames (see [`Rig::stalled_session`]).
    stalled: Option<(Writer, mpsc::UnboundedSender<Seen>)>,
}

impl Session {
    /// Waits until `n` frames wait in its queue (for a stalled session).
    pub async fn queued(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.out.len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "session {}: {} frames queued, not {n}",
                self.id,
                self.out.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Starts taking the frames queued for it, and every later one.
    pub fn resume(&mut self) {
        if let Some((mut writer, tx)) = self.stalled.take() {
            actix::spawn(async move {
                while let Some(frame) = writer.next().await {
                    if let Some(seen) = read_frame(&frame) {
                        let _ = tx.send(seen);
                    }
                }
            });
        }
    }

    /// The next thing it was sent; panics after [`DEADLINE`].
    pub async fn next(&mut self) -> Seen {
        tokio::time::timeout(DEADLINE, self.seen.recv())
            .await
            .unwrap_or_else(|_| panic!("session {}: nothing within {DEADLINE:?}", self.id))
            .expect("the fake session lives as long as the test holds it")
    }

    /// The next frame that is not a `status`; panics on a close.
    pub async fn frame(&mut self) -> Value {
        loop {
            match self.next().await {
                Seen::Frame(v) if v["type"] == "status" => continue,
                Seen::Frame(v) => return v,
                Seen::Closed(code) => panic!("session {}: closed with {code}", self.id),
            }
        }
    }

    /// The next frame (any type); panics on a close.
    pub async fn any_frame(&mut self) -> Value {
        match self.next().await {
            Seen::Frame(v) => v,
            Seen::Closed(code) => panic!("session {}: closed with {code}", self.id),
        }
    }

    /// The close code it was sent next, skipping frames.
    pub async fn closed(&mut self) -> u16 {
        loop {
            if let Seen::Closed(code) = self.next().await {
                return code;
            }
        }
    }
}

/// A supervisor with real worker dependencies on a scratch SQLite database,
/// and the relay of this thread. Start it inside an actix system.
pub(crate) struct Rig {
    pub supervisor: Addr<Supervisor>,
    pub deps: WorkerDeps,
    pub distributor: Distributor,
    relay: RelayHandle,
    owner_id: i64,
    next_session: u64,
    next_tick: u64,
    _dir: tempfile::TempDir,
}

impl Rig {
    pub fn start() -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = DbUrl::parse(&format!("sqlite://{}/unit.db", dir.path().display()))
            .expect("sqlite url");
        let db = Db::connect(&url, 2).expect("database");
        db.migrate().expect("migrations");
        let owner_id = db
            .run_sync(|c| repo::create_user(c, "owner", false))
            .expect("user")
            .id;
        let metrics = Arc::new(Metrics::new());
        let registry = WorkerRegistry::default();
        let cache = QuoteCache::default();
        let deps = WorkerDeps {
            db,
            cache: cache.clone(),
            registry: registry.clone(),
            demand: Arc::new(LocalDemand::new(registry.clone(), PinnedSymbols::default())),
            metrics: metrics.clone(),
            intraday: IntradayStore::default(),
            history_size: 64,
        };
        Rig {
            supervisor: Supervisor::new(deps.clone()).start(),
            distributor: Distributor {
                cache,
                intraday: deps.intraday.clone(),
                registry,
            },
            deps,
            relay: RelayHandle::start(metrics),
            owner_id,
            next_session: 0,
            next_tick: 0,
            _dir: dir,
        }
    }

    /// A watchlist of these symbols: its id, and its items as a session
    /// reads them on its upgrade.
    pub fn watchlist(&self, symbols: &[&str]) -> (i64, Arc<[ItemView]>) {
        let items: Vec<ItemInput> = symbols
            .iter()
            .map(|s| ItemInput {
                symbol: s.to_string(),
                quantity: None,
                purchase_price: None,
                memo: String::new(),
            })
            .collect();
        let input = WatchlistInput {
            owner_id: self.owner_id,
            name: &format!("W{}", rand::random::<u32>()),
            description: "",
            is_public: false,
            items: &items,
        };
        let id = self
            .deps
            .db
            .run_sync(|c| repo::create_watchlist(c, &input, 1000, 1000))
            .expect("watchlist")
            .id;
        (id, item_views(symbols).into())
    }

    /// A new fake session, not joined to anything yet.
    pub fn session(&mut self) -> Session {
        // Roomy, so a burst of frames is never dropped as lagging here.
        let mut s = self.stalled_session(1024);
        s.resume();
        s
    }

    /// A fake session that takes none of its frames until
    /// [`Session::resume`]: once `capacity` of a worker's offers wait, the
    /// next ones are refused and its subscription lags.
    pub fn stalled_session(&mut self, capacity: usize) -> Session {
        self.next_session += 1;
        let (tx, seen) = mpsc::unbounded_channel();
        let out = Outbox::new(capacity, Arc::new(SessionStats::new()));
        let addr = FakeSession { out: out.clone() }.start();
        let control: Closer = Arc::new(addr.clone().recipient());
        let writer = Writer::new(out.clone(), control.clone(), addr.clone().recipient(), None);
        Session {
            id: self.next_session,
            out,
            control,
            ended: addr.recipient(),
            sub: Arc::new(Subscription::new(1)),
            seen,
            stalled: Some((writer, tx)),
        }
    }

    /// Joins `session` to the watchlist, as its upgrade does.
    pub fn join(&self, session: &Session, watchlist_id: i64, items: &Arc<[ItemView]>) {
        self.supervisor
            .do_send(self.join_message(session, watchlist_id, items));
    }

    /// The [`Join`] a session's upgrade sends, to send some other way.
    pub fn join_message(
        &self,
        session: &Session,
        watchlist_id: i64,
        items: &Arc<[ItemView]>,
    ) -> Join {
        Join {
            watchlist_id,
            items: items.clone(),
            close: session.control.clone(),
            subscribe: Subscribe {
                session_id: session.id,
                user_id: self.owner_id,
                sub: session.sub.clone(),
                out: session.out.clone(),
                control: session.ended.clone(),
                relay: self.relay.clone(),
                since: None,
                intraday: false,
                ack: false,
            },
        }
    }

    pub fn leave(&self, session: &Session, watchlist_id: i64) {
        self.supervisor.do_send(Leave {
            watchlist_id,
            session_id: session.id,
            sub: session.sub.id,
        });
    }

    /// Publishes a round as the poller's bus would: into the cache, then a
    /// tick to every live worker.
    pub fn publish(&mut self, changed: Vec<(Symbol, Known)>, health: UpstreamHealth) {
        self.next_tick += 1;
        self.distributor.deliver(
            self.next_tick,
            Round {
                changed,
                health,
                ..Round::default()
            },
        );
    }

    /// Workers running now, by the `quotecast_workers` gauge.
    pub fn workers(&self) -> i64 {
        self.deps.metrics.workers.get()
    }

    /// Waits until no worker runs and none is registered for ticks.
    pub async fn wait_no_workers(&self) {
        eventually("every worker to stop and unregister", async || {
            self.workers() == 0 && self.deps.registry.symbols().is_empty()
        })
        .await;
    }
}

/// Items of these symbols, without positions.
pub(crate) fn item_views(symbols: &[&str]) -> Vec<ItemView> {
    symbols
        .iter()
        .map(|s| ItemView {
            symbol: sym(s),
            quantity: None,
            purchase_price: None,
        })
        .collect()
}
