//! The poll loop: the only caller of the upstream.
//!
//! Every tick, on the instance that holds the poller role
//! ([`PollerRole`](crate::feed::PollerRole)),
//! it takes the symbols wanted anywhere ([`Demand`](crate::feed::Demand)), fetches each due symbol
//! once, in batches of at most `batch_size`, each request after a permit from
//! the [`RateLimiter`](crate::feed::RateLimiter), and publishes what it learnt
//! as one round on the [`QuoteBus`](crate::feed::QuoteBus). Upstream requests per tick are therefore ceil(due symbols /
//! batch size), whatever the number of watchlists, sessions and instances.
//!
//! * Symbols whose market is closed are due every `closed_poll_interval_ms`.
//! * A symbol missing from a batch answer gets one single-symbol request;
//!   if the upstream calls it unknown it is left alone for
//!   `unknown_recheck_ms`.
//! * Any failed request backs the whole loop off (exponential with jitter,
//!   honouring `Retry-After`); workers are told `degraded`, and `ok` again
//!   after the next success. Nothing here can stop a worker.
//! * What a round learnt is also handed to the [`QuoteSaver`].
//!
//! Lifecycle: started once by [`crate::startup`], it runs until the shutdown
//! signal it is given fires; its [`QuoteSaver`] handle goes with it, which
//! lets the saver write what is left and end.

use super::bucket::Backoff;
use super::{QuoteProvider, UpstreamError};
use crate::domain::Symbol;
use crate::feed::{BusError, Round, RoundObserver, Seams, UpstreamHealth};
use crate::metrics::Metrics;
use crate::quote::{Fetched, Known, MarketQuote, Point};
use crate::quote_store::QuoteSaver;
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Timing rules of the fetcher, from `[upstream]`.
#[derive(Debug, Clone)]
pub struct FetcherConfig {
    pub poll_interval: Duration,
    pub closed_poll_interval: Duration,
    pub unknown_recheck: Duration,
    pub batch_size: usize,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Longest wait for a rate-limit permit before the rest of a tick is skipped.
    pub max_token_wait: Duration,
}

/// Counters for admin stats (the same numbers feed `/metrics`).
#[derive(Debug, Default)]
pub struct UpstreamStats {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Full ticks run while something was watched.
    pub cycles: AtomicU64,
    /// Full ticks that found nothing watched: the poller woke and had
    /// nothing to do. Lets a test tell that a tick went by while idle.
    pub idle_ticks: AtomicU64,
    last_success_at: Mutex<Option<DateTime<Utc>>>,
}

impl UpstreamStats {
    pub fn last_success_at(&self) -> Option<DateTime<Utc>> {
        *self
            .last_success_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn record_success(&self) {
        *self
            .last_success_at
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Utc::now());
    }
}

/// What the poll loop needs from the rest of the service.
pub struct FetcherDeps {
    pub provider: Arc<dyn QuoteProvider>,
    pub seams: Seams,
    pub saver: QuoteSaver,
    /// Told of every round published (price alerts).
    pub observers: Vec<Arc<dyn RoundObserver>>,
    pub metrics: Arc<Metrics>,
    pub stats: Arc<UpstreamStats>,
}

pub struct Fetcher {
    deps: FetcherDeps,
    cfg: FetcherConfig,
    /// When each symbol is next due. Absent: never fetched, due now.
    due_at: HashMap<Symbol, Instant>,
    /// Length and last time of the intraday points last published per
    /// symbol, so unchanged points are not sent again every tick.
    bars_sent: HashMap<Symbol, (usize, i64)>,
    backoff: Backoff,
    backoff_until: Option<Instant>,
    health: UpstreamHealth,
}

/// How a tick ended, for the health report.
enum TickEnd {
    Done,
    Failed(UpstreamError),
    NoToken(Duration),
}

impl Fetcher {
    pub fn new(deps: FetcherDeps, cfg: FetcherConfig) -> Self {
        let backoff = Backoff::new(cfg.backoff_base, cfg.backoff_max);
        Self {
            deps,
            cfg,
            due_at: HashMap::new(),
            bars_sent: HashMap::new(),
            backoff,
            backoff_until: None,
            health: UpstreamHealth::ok(),
        }
    }

    /// Runs until `shutdown` turns true (or its sender is dropped).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        // Ticks sit on the process clock grid, so the sessions' heartbeats
        // can be put between them (see `crate::clock`).
        let poll = self.cfg.poll_interval;
        let next_on_grid = || Instant::from_std(crate::clock::next_on_grid(poll, Duration::ZERO));
        let mut next_tick = next_on_grid();
        let seams = self.deps.seams.clone();
        loop {
            let full = tokio::select! {
                _ = tokio::time::sleep_until(next_tick) => true,
                _ = seams.demand.changed() => false,
                _ = seams.role.changed() => false,
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() { break; }
                    continue;
                }
            };
            if full {
                // A cycle that overruns the tick skips grid points rather
                // than firing late ones back to back.
                next_tick = next_on_grid();
            }
            self.wake(full).await;
        }
        log::debug!("fetcher stopped");
    }

    /// One wake-up of the loop: a round if this instance is the poller,
    /// else nothing fetched and the schedule forgotten.
    async fn wake(&mut self, full: bool) {
        if !self.deps.seams.role.is_poller() {
            self.forget();
            return;
        }
        self.cycle(full).await;
    }

    /// Another instance polls now: what this one knew of schedules and
    /// backoff is stale by the time it polls again.
    fn forget(&mut self) {
        self.due_at.clear();
        self.bars_sent.clear();
        self.backoff.reset();
        self.backoff_until = None;
    }

    /// One round. A full round (the tick) fetches every due symbol and
    /// publishes to every worker; a wake-up round only fetches symbols never
    /// seen or forced by a refresh, so new watchlists fill in at once without
    /// adding requests to the steady tick.
    async fn cycle(&mut self, full: bool) {
        let demand = self.deps.seams.demand.clone();
        let watched = demand.wanted().await;
        self.due_at.retain(|s, _| watched.contains(s));
        self.bars_sent.retain(|s, _| watched.contains(s));
        let forced = demand.take_forced().await;
        // Asked for once (REST): fetched with this round's batches, never
        // scheduled again unless someone watches them.
        let once: BTreeSet<Symbol> = demand
            .take_once()
            .await
            .into_iter()
            .filter(|s| !watched.contains(s))
            .collect();
        if watched.is_empty() && once.is_empty() {
            if full {
                self.deps.stats.idle_ticks.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if full {
            self.deps.stats.cycles.fetch_add(1, Ordering::Relaxed);
        }
        let now = Instant::now();
        if let Some(until) = self.backoff_until {
            if now < until {
                if full {
                    let wait = until - now;
                    self.set_health(true, self.health.message.clone(), Some(wait));
                    self.publish(full, Round::default()).await;
                }
                return;
            }
            self.backoff_until = None;
        }
        let due: Vec<Symbol> = watched
            .iter()
            .filter(|s| {
                forced.contains(*s)
                    || match self.due_at.get(*s) {
                        None => true,
                        Some(t) => full && *t <= now,
                    }
            })
            .chain(once.iter())
            .cloned()
            .collect();
        if due.is_empty() && !full {
            return;
        }

        let mut round = Round::default();
        let mut end = TickEnd::Done;
        let mut any_success = false;
        'batches: for batch in due.chunks(self.cfg.batch_size) {
            if let Err(wait) = self.permit().await {
                end = TickEnd::NoToken(wait);
                break;
            }
            let res = self
                .timed(self.deps.provider.fetch_batch(batch.to_vec()))
                .await;
            let quotes = match res {
                Ok(q) => q,
                Err(e) => {
                    end = TickEnd::Failed(e);
                    break;
                }
            };
            any_success = true;
            let got: BTreeSet<Symbol> = quotes.iter().map(|f| f.quote.symbol.clone()).collect();
            for f in quotes {
                self.learnt(f, &mut round);
            }
            // Absent from the batch: one chart request tells unknown from
            // temporarily missing.
            for sym in batch.iter().filter(|s| !got.contains(*s)) {
                if let Err(wait) = self.permit().await {
                    end = TickEnd::NoToken(wait);
                    break 'batches;
                }
                match self.timed(self.deps.provider.fetch_one(sym.clone())).await {
                    Ok(Some(f)) => self.learnt(f, &mut round),
                    Ok(None) => {
                        self.due_at
                            .insert(sym.clone(), Instant::now() + self.cfg.unknown_recheck);
                        round.changed.push((sym.clone(), Known::Unknown));
                    }
                    Err(e) => {
                        end = TickEnd::Failed(e);
                        break 'batches;
                    }
                }
            }
        }

        match end {
            TickEnd::Done => {
                if any_success {
                    self.backoff.reset();
                    self.set_health(false, "upstream ok".into(), None);
                }
            }
            TickEnd::Failed(e) => {
                let delay = self.backoff.next_delay(e.retry_after());
                self.backoff_until = Some(Instant::now() + delay);
                log::warn!(
                    "upstream error ({}), backing off {delay:?}: {e}",
                    self.deps.provider.name()
                );
                self.set_health(true, format!("upstream unavailable: {e}"), Some(delay));
            }
            TickEnd::NoToken(wait) => {
                self.deps.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                self.deps
                    .metrics
                    .upstream_requests
                    .with_label_values(&["throttled"])
                    .inc();
                self.set_health(
                    true,
                    "request budget exhausted (rate limit)".into(),
                    Some(wait),
                );
            }
        }

        self.deps.saver.record(&round.changed);
        if full || !due.is_empty() {
            self.publish(full, round).await;
        }
    }

    /// A rate-limit permit, waiting at most `max_token_wait`; the error says
    /// how long until one would be available.
    async fn permit(&self) -> Result<(), Duration> {
        self.deps
            .seams
            .limiter
            .acquire(self.cfg.max_token_wait)
            .await
    }

    /// Runs one upstream request, counting it by outcome.
    async fn timed<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        let started = std::time::Instant::now();
        let res = fut.await;
        let (metrics, stats) = (&self.deps.metrics, &self.deps.stats);
        metrics
            .upstream_latency
            .observe(started.elapsed().as_secs_f64());
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let outcome = match &res {
            Ok(_) => {
                stats.record_success();
                "ok"
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                if matches!(e, UpstreamError::RateLimited { .. }) {
                    stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                }
                e.outcome()
            }
        };
        metrics
            .upstream_requests
            .with_label_values(&[outcome])
            .inc();
        res
    }

    /// A symbol's answer goes into the round; its points only when they
    /// differ from the ones published last.
    fn learnt(&mut self, f: Fetched, round: &mut Round) {
        self.schedule(&f.quote);
        let symbol = f.quote.symbol.clone();
        if let Some(last) = f.intraday.last() {
            let shape = (f.intraday.len(), last.0);
            if self.bars_sent.insert(symbol.clone(), shape) != Some(shape) {
                let points: std::sync::Arc<[Point]> = f.intraday.into();
                round.intraday.push((symbol.clone(), points));
            }
        }
        round.changed.push((symbol, Known::quote(f.quote)));
    }

    fn schedule(&mut self, q: &MarketQuote) {
        let next = if q.market_closed() {
            Instant::now() + self.cfg.closed_poll_interval
        } else {
            // Due at every tick from now on.
            Instant::now()
        };
        self.due_at.insert(q.symbol.clone(), next);
    }

    fn set_health(&mut self, degraded: bool, message: String, retry_in: Option<Duration>) {
        self.health = UpstreamHealth {
            degraded,
            message,
            retry_in_ms: retry_in.map(|d| d.as_millis() as u64),
        };
    }

    async fn publish(&mut self, full: bool, mut round: Round) {
        round.health = self.health.clone();
        // The observers see the round as published; the bus takes it.
        let seen = (!self.deps.observers.is_empty()).then(|| round.clone());
        match self.deps.seams.bus.publish(full, round).await {
            Ok(tick) => {
                if let Some(round) = seen {
                    for o in &self.deps.observers {
                        o.published(tick, &round);
                    }
                }
            }
            Err(BusError::Fenced) => {
                log::info!("another instance polls now; this round was not published");
                self.forget();
            }
            Err(e) => log::warn!("round not published: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::local::{LocalDemand, Unlimited};
    use crate::feed::{Demand, RateLimiter, WatchGuard, WorkerRegistry};
    use crate::testkit::{sym, watcher, Calls, FakeProvider, RecordingBus, SwitchRole};
    use crate::upstream::bucket::TokenBucket;
    use tokio::time::advance;

    const POLL: Duration = Duration::from_secs(1);
    const CLOSED_POLL: Duration = Duration::from_secs(60);
    const RECHECK: Duration = Duration::from_secs(600);
    const MS: Duration = Duration::from_millis(1);

    fn config(batch_size: usize) -> FetcherConfig {
        FetcherConfig {
            poll_interval: POLL,
            closed_poll_interval: CLOSED_POLL,
            unknown_recheck: RECHECK,
            batch_size,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
            max_token_wait: Duration::from_secs(1),
        }
    }

    /// A fetcher on fakes, and the handles a test drives and reads it by.
    /// Rounds are driven one at a time through `wake`, the loop's body; time
    /// is paused where it matters, so schedules are exact.
    struct Harness {
        fetcher: Fetcher,
        provider: Arc<FakeProvider>,
        bus: Arc<RecordingBus>,
        role: Arc<SwitchRole>,
        demand: Arc<LocalDemand>,
        registry: WorkerRegistry,
        saver: QuoteSaver,
        stats: Arc<UpstreamStats>,
        metrics: Arc<Metrics>,
    }

    impl Harness {
        /// Batches of 10, no rate limit, the poller.
        fn new() -> Harness {
            Self::with(config(10), Arc::new(Unlimited), true)
        }

        /// [`Harness::new`] on a paused clock, which only the test moves.
        fn paused() -> Harness {
            tokio::time::pause();
            Self::new()
        }

        fn with(cfg: FetcherConfig, limiter: Arc<dyn RateLimiter>, poller: bool) -> Harness {
            let provider = FakeProvider::new();
            let bus = RecordingBus::new();
            let role = SwitchRole::new(poller);
            let registry = WorkerRegistry::default();
            let demand = Arc::new(LocalDemand::new(
                registry.clone(),
                crate::feed::PinnedSymbols::default(),
            ));
            let saver = QuoteSaver::detached();
            let stats = Arc::new(UpstreamStats::default());
            let metrics = Arc::new(Metrics::new());
            let deps = FetcherDeps {
                provider: provider.clone(),
                seams: Seams {
                    demand: demand.clone(),
                    bus: bus.clone(),
                    limiter,
                    role: role.clone(),
                },
                saver: saver.clone(),
                observers: Vec::new(),
                metrics: metrics.clone(),
                stats: stats.clone(),
            };
            Harness {
                fetcher: Fetcher::new(deps, cfg),
                provider,
                bus,
                role,
                demand,
                registry,
                saver,
                stats,
                metrics,
            }
        }

        /// A worker watching these symbols, as long as the guard lives.
        fn watch(&self, symbols: &[&str]) -> WatchGuard {
            watcher(&self.registry, symbols)
        }

        /// The provider knows `open` (its market open) and `closed` (its
        /// market closed) at these prices, and a worker watches both, as long
        /// as the guard lives.
        fn watch_open_and_closed(&self, open: (&str, f64), closed: (&str, f64)) -> WatchGuard {
            self.provider.knows(open.0, open.1);
            self.provider.knows_closed(closed.0, closed.1);
            self.watch(&[open.0, closed.0])
        }

        /// A tick (a full round): what it asked the provider, and the rounds
        /// it published as `(full, round)`.
        async fn tick(&mut self) -> (Calls, Vec<(bool, Round)>) {
            self.fetcher.wake(true).await;
            (self.provider.take_calls(), self.bus.take())
        }

        /// A wake-up between ticks (new demand, a refresh, a role change).
        async fn wake_up(&mut self) -> (Calls, Vec<(bool, Round)>) {
            self.fetcher.wake(false).await;
            (self.provider.take_calls(), self.bus.take())
        }

        /// A tick that asks the provider for exactly `expected`: the rounds
        /// it published.
        async fn tick_asking(&mut self, expected: &[&[&str]]) -> Vec<(bool, Round)> {
            let (calls, rounds) = self.tick().await;
            assert_eq!(calls.batches, batches(expected));
            rounds
        }

        /// A wake-up that asks the provider for exactly `expected`: the
        /// rounds it published.
        async fn wake_up_asking(&mut self, expected: &[&[&str]]) -> Vec<(bool, Round)> {
            let (calls, rounds) = self.wake_up().await;
            assert_eq!(calls.batches, batches(expected));
            rounds
        }

        fn count(&self, counter: &AtomicU64) -> u64 {
            counter.load(Ordering::Relaxed)
        }
    }

    fn batches(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter()
            .map(|b| b.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// The one round published, asserting it is one of this kind.
    fn only(rounds: Vec<(bool, Round)>, full: bool) -> Round {
        assert_eq!(rounds.len(), 1, "{rounds:?}");
        let (was_full, round) = rounds.into_iter().next().unwrap();
        assert_eq!(was_full, full, "{round:?}");
        round
    }

    /// The symbols a round learnt, sorted.
    fn learnt(round: &Round) -> Vec<String> {
        let mut s: Vec<String> = round.changed.iter().map(|(s, _)| s.to_string()).collect();
        s.sort();
        s
    }

    fn state<'a>(round: &'a Round, symbol: &str) -> &'a Known {
        &round
            .changed
            .iter()
            .find(|(s, _)| s.as_str() == symbol)
            .unwrap_or_else(|| panic!("{symbol} not in {round:?}"))
            .1
    }

    #[actix_web::test]
    async fn every_due_symbol_is_fetched_once_in_batches_of_at_most_batch_size() {
        let mut h = Harness::new();
        let names: Vec<String> = (0..25).map(|i| format!("S{i:02}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        for n in &names {
            h.provider.knows(n, 10.0);
        }
        let _all = h.watch(&names);
        // A second worker on some of the same symbols adds no request.
        let _some = h.watch(&names[..5]);

        let (calls, rounds) = h.tick().await;
        assert_eq!(calls.batches.len(), 3, "ceil(25 / 10) requests: {calls:?}");
        assert!(calls.batches.iter().all(|b| b.len() <= 10), "{calls:?}");
        assert!(calls.singles.is_empty(), "{calls:?}");
        assert_eq!(calls.symbols(), strings(&names), "each symbol once");
        let round = only(rounds, true);
        assert_eq!(learnt(&round), strings(&names));
        assert_eq!(round.health, UpstreamHealth::ok());
        assert_eq!(h.count(&h.stats.cycles), 1);
        assert_eq!(h.count(&h.stats.requests), 3);

        // Open markets are due again at the next tick, in the same batches.
        let (again, _) = h.tick().await;
        assert_eq!(again, calls);
    }

    #[actix_web::test]
    async fn a_symbol_missing_from_a_batch_answer_gets_one_request_of_its_own() {
        let mut h = Harness::new();
        h.provider.knows("AAPL", 100.0);
        h.provider.knows("SHY", 5.0);
        h.provider.batch_shy("SHY");
        let _w = h.watch(&["AAPL", "SHY"]);

        let (calls, rounds) = h.tick().await;
        assert_eq!(calls.batches, batches(&[&["AAPL", "SHY"]]));
        assert_eq!(calls.singles, strings(&["SHY"]));
        let round = only(rounds, true);
        assert!(matches!(state(&round, "SHY"), Known::Quote(q) if q.price == Some(5.0)));
        assert!(matches!(state(&round, "AAPL"), Known::Quote(_)));
        assert_eq!(round.health, UpstreamHealth::ok());
    }

    #[actix_web::test]
    async fn an_unknown_symbol_is_not_asked_for_again_until_the_recheck() {
        let mut h = Harness::paused();
        h.provider.knows("AAPL", 100.0);
        let _w = h.watch(&["AAPL", "ZZZZ"]);

        let (calls, rounds) = h.tick().await;
        assert_eq!(calls.batches, batches(&[&["AAPL", "ZZZZ"]]));
        assert_eq!(calls.singles, strings(&["ZZZZ"]));
        assert_eq!(state(&only(rounds, true), "ZZZZ"), &Known::Unknown);

        advance(POLL).await;
        let (calls, _) = h.tick().await;
        assert_eq!(
            calls.batches,
            batches(&[&["AAPL"]]),
            "left out until the recheck"
        );
        assert!(calls.singles.is_empty());

        advance(RECHECK - POLL - MS).await;
        let (calls, _) = h.tick().await;
        assert_eq!(calls.batches, batches(&[&["AAPL"]]), "a millisecond early");

        advance(MS).await;
        let (calls, rounds) = h.tick().await;
        assert_eq!(calls.batches, batches(&[&["AAPL", "ZZZZ"]]), "rechecked");
        assert_eq!(calls.singles, strings(&["ZZZZ"]));
        assert_eq!(state(&only(rounds, true), "ZZZZ"), &Known::Unknown);
    }

    #[actix_web::test]
    async fn closed_markets_are_polled_at_the_slow_interval() {
        let mut h = Harness::paused();
        let _w = h.watch_open_and_closed(("AAPL", 100.0), ("SHUT", 7.0));

        h.tick_asking(&[&["AAPL", "SHUT"]]).await;
        advance(POLL).await;
        let rounds = h.tick_asking(&[&["AAPL"]]).await;
        assert_eq!(learnt(&only(rounds, true)), strings(&["AAPL"]));

        advance(CLOSED_POLL - POLL - MS).await;
        let (calls, _) = h.tick().await;
        assert_eq!(calls.batches, batches(&[&["AAPL"]]), "a millisecond early");
        advance(MS).await;
        h.tick_asking(&[&["AAPL", "SHUT"]]).await;
    }

    #[actix_web::test]
    async fn a_failure_backs_off_honouring_retry_after_then_reports_ok() {
        let mut h = Harness::paused();
        h.provider.knows("AAPL", 100.0);
        let _w = h.watch(&["AAPL"]);
        // The jittered delay of a first failure is at most 1 s: the
        // upstream's 3 s win.
        h.provider.fail_next(UpstreamError::RateLimited {
            retry_after: Some(Duration::from_secs(3)),
        });

        let (calls, rounds) = h.tick().await;
        assert_eq!(calls.batches.len(), 1);
        let round = only(rounds, true);
        assert!(round.changed.is_empty());
        assert!(round.health.degraded);
        assert_eq!(
            round.health.message,
            "upstream unavailable: rate limited by the upstream (HTTP 429)"
        );
        assert_eq!(round.health.retry_in_ms, Some(3000));
        assert_eq!(h.count(&h.stats.errors), 1);
        assert_eq!(h.count(&h.stats.rate_limited), 1);

        // While backing off: no request; ticks still tell the workers how
        // long is left; a wake-up does nothing.
        advance(Duration::from_secs(1)).await;
        let (calls, rounds) = h.tick().await;
        assert_eq!(calls, Calls::none());
        let round = only(rounds, true);
        assert!(round.changed.is_empty());
        assert!(round.health.degraded);
        assert_eq!(round.health.retry_in_ms, Some(2000));
        let (calls, rounds) = h.wake_up().await;
        assert_eq!(calls, Calls::none());
        assert!(rounds.is_empty());

        advance(Duration::from_secs(2)).await;
        let rounds = h.tick_asking(&[&["AAPL"]]).await;
        let round = only(rounds, true);
        assert_eq!(round.health, UpstreamHealth::ok());
        assert_eq!(learnt(&round), strings(&["AAPL"]));
    }

    #[actix_web::test]
    async fn the_backoff_grows_with_each_failure_and_resets_after_a_success() {
        let mut h = Harness::paused();
        h.provider.knows("AAPL", 100.0);
        let _w = h.watch(&["AAPL"]);
        let fail = async |h: &mut Harness| {
            h.provider.fail_next(UpstreamError::Timeout);
            let (calls, rounds) = h.tick().await;
            assert_eq!(calls.batches.len(), 1);
            let health = only(rounds, true).health;
            assert!(health.degraded);
            assert_eq!(
                health.message,
                "upstream unavailable: upstream did not answer in time"
            );
            Duration::from_millis(health.retry_in_ms.unwrap())
        };
        // Base 1 s, jittered into [d/2, d]. The wait is reported in whole
        // milliseconds, rounded down: one more and it is over.
        let first = fail(&mut h).await;
        assert!((500..=1000).contains(&first.as_millis()), "{first:?}");
        advance(first + MS).await;
        let second = fail(&mut h).await;
        assert!((1000..=2000).contains(&second.as_millis()), "{second:?}");
        advance(second + MS).await;
        let (_, rounds) = h.tick().await;
        assert_eq!(only(rounds, true).health, UpstreamHealth::ok());
        let third = fail(&mut h).await;
        assert!((500..=1000).contains(&third.as_millis()), "{third:?}");
    }

    #[actix_web::test]
    async fn a_refused_rate_limit_permit_cuts_the_tick_short_and_reports_degraded() {
        // One token and no refill: the second batch finds none.
        let mut h = Harness::with(config(1), Arc::new(TokenBucket::new(1.0, 0.0)), true);
        h.provider.knows("A", 1.0);
        h.provider.knows("B", 2.0);
        let _w = h.watch(&["A", "B"]);

        let rounds = h.tick_asking(&[&["A"]]).await;
        let round = only(rounds, true);
        assert_eq!(
            learnt(&round),
            strings(&["A"]),
            "what was fetched still lands"
        );
        assert!(round.health.degraded);
        assert_eq!(
            round.health.message,
            "request budget exhausted (rate limit)"
        );
        assert_eq!(
            round.health.retry_in_ms,
            Some(TokenBucket::NEVER.as_millis() as u64)
        );
        assert_eq!(h.count(&h.stats.rate_limited), 1);
        let throttled = h
            .metrics
            .upstream_requests
            .with_label_values(&["throttled"]);
        assert_eq!(throttled.get(), 1);
    }

    #[actix_web::test]
    async fn a_wake_up_fetches_only_new_and_forced_symbols() {
        let mut h = Harness::new();
        for s in ["A", "B", "C"] {
            h.provider.knows(s, 1.0);
        }
        let _ab = h.watch(&["A", "B"]);
        h.tick().await;

        // Everything is on its schedule: a wake-up fetches and publishes nothing.
        let (calls, rounds) = h.wake_up().await;
        assert_eq!(calls, Calls::none());
        assert!(rounds.is_empty());

        // A refresh: only the forced symbol, at once, in an extra round.
        h.demand.force(vec![sym("B")]);
        let rounds = h.wake_up_asking(&[&["B"]]).await;
        assert_eq!(learnt(&only(rounds, false)), strings(&["B"]));
        // Taken once: the next wake-up has nothing to do again.
        assert_eq!(h.wake_up().await.0, Calls::none());

        // A new watchlist's symbol fills in at once too.
        let _c = h.watch(&["C"]);
        let rounds = h.wake_up_asking(&[&["C"]]).await;
        assert_eq!(learnt(&only(rounds, false)), strings(&["C"]));
        assert_eq!(h.count(&h.stats.cycles), 1, "wake-ups are not ticks");
    }

    #[actix_web::test]
    async fn nothing_is_fetched_unless_this_instance_is_the_poller() {
        let mut h = Harness::with(config(10), Arc::new(Unlimited), false);
        let _w = h.watch_open_and_closed(("A", 1.0), ("SHUT", 1.0));
        let (calls, rounds) = h.tick().await;
        assert_eq!(calls, Calls::none());
        assert!(rounds.is_empty());
        assert_eq!(h.count(&h.stats.cycles), 0);

        h.role.set(true);
        let rounds = h.tick_asking(&[&["A", "SHUT"]]).await;
        only(rounds, true);

        // Losing the role forgets the schedule: SHUT (not due for a minute)
        // is fetched at once when the role comes back.
        h.role.set(false);
        assert_eq!(h.tick().await.0, Calls::none());
        h.role.set(true);
        h.wake_up_asking(&[&["A", "SHUT"]]).await;
    }

    #[actix_web::test]
    async fn a_fenced_publish_forgets_the_schedule_and_the_backoff() {
        let mut h = Harness::paused();
        let _w = h.watch_open_and_closed(("A", 1.0), ("SHUT", 1.0));
        h.tick().await;
        assert_eq!(h.wake_up().await.0, Calls::none(), "all on schedule");

        advance(POLL).await;
        h.bus.fence_next();
        let rounds = h.tick_asking(&[&["A"]]).await;
        assert!(rounds.is_empty(), "a fenced round lands nowhere");
        // Forgotten: every symbol counts as never fetched.
        h.wake_up_asking(&[&["A", "SHUT"]]).await;

        // A backoff is forgotten the same way.
        advance(POLL).await;
        h.provider.fail_next(UpstreamError::RateLimited {
            retry_after: Some(Duration::from_secs(60)),
        });
        h.bus.fence_next();
        h.tick().await;
        let (calls, rounds) = h.tick().await;
        assert_eq!(calls.batches, batches(&[&["A", "SHUT"]]), "no backoff left");
        assert_eq!(only(rounds, true).health, UpstreamHealth::ok());
    }

    #[actix_web::test]
    async fn what_a_round_learnt_goes_to_the_saver() {
        let mut h = Harness::new();
        h.provider.knows("AAPL", 123.0);
        let _w = h.watch(&["AAPL", "ZZZZ"]);
        h.tick().await;
        let unsaved = h.saver.unsaved();
        assert_eq!(unsaved["AAPL"].price, Some(123.0));
        assert!(unsaved["ZZZZ"].is_unknown);
        assert_eq!(unsaved.len(), 2);
    }

    #[actix_web::test]
    async fn with_nothing_watched_a_tick_only_counts_itself() {
        let mut h = Harness::new();
        h.provider.knows("A", 1.0);
        let (calls, rounds) = h.tick().await;
        assert_eq!(calls, Calls::none());
        assert!(rounds.is_empty());
        h.wake_up().await;
        assert_eq!(h.count(&h.stats.idle_ticks), 1, "wake-ups are not ticks");
        assert_eq!(h.count(&h.stats.cycles), 0);

        // The last worker gone: idle again.
        let w = h.watch(&["A"]);
        h.tick().await;
        drop(w);
        let (calls, _) = h.tick().await;
        assert_eq!(calls, Calls::none());
        assert_eq!(h.count(&h.stats.idle_ticks), 2);
        assert_eq!(h.count(&h.stats.cycles), 1);
    }

    /// The loop itself, on the real clock: it polls once it holds the role
    /// (at once, not at the next tick) and ends when told to.
    #[actix_web::test]
    async fn the_loop_polls_once_it_is_the_poller_and_ends_on_shutdown() {
        let cfg = FetcherConfig {
            poll_interval: Duration::from_secs(3600),
            ..config(10)
        };
        let h = Harness::with(cfg, Arc::new(Unlimited), false);
        h.provider.knows("A", 1.0);
        let _w = h.watch(&["A"]);
        let (stop, stopped) = watch::channel(false);
        let task = actix_web::rt::spawn(h.fetcher.run(stopped));

        h.role.set(true);
        let provider = h.provider.clone();
        let mut seen = Calls::none();
        crate::testkit::eventually("a fetch once the role is held", async || {
            seen = provider.take_calls();
            !seen.batches.is_empty()
        })
        .await;
        assert_eq!(seen.batches, batches(&[&["A"]]));

        stop.send(true).unwrap();
        tokio::time::timeout(crate::testkit::DEADLINE, task)
            .await
            .expect("the loop ends on shutdown")
            .unwrap();
    }
}
