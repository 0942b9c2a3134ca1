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
use crate::feed::{BusError, Round, Seams, UpstreamHealth};
use crate::metrics::Metrics;
use crate::quote::{Known, MarketQuote};
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
    pub metrics: Arc<Metrics>,
    pub stats: Arc<UpstreamStats>,
}

pub struct Fetcher {
    deps: FetcherDeps,
    cfg: FetcherConfig,
    /// When each symbol is next due. Absent: never fetched, due now.
    due_at: HashMap<Symbol, Instant>,
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
            if !seams.role.is_poller() {
                self.forget();
                continue;
            }
            self.cycle(full).await;
        }
        log::debug!("fetcher stopped");
    }

    /// Another instance polls now: what this one knew of schedules and
    /// backoff is stale by the time it polls again.
    fn forget(&mut self) {
        self.due_at.clear();
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
        let forced = demand.take_forced().await;
        if watched.is_empty() {
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
                    self.publish(full, Vec::new()).await;
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
            .cloned()
            .collect();
        if due.is_empty() && !full {
            return;
        }

        let mut updates: Vec<(Symbol, Known)> = Vec::new();
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
            let got: BTreeSet<Symbol> = quotes.iter().map(|q| q.symbol.clone()).collect();
            for q in quotes {
                self.schedule(&q);
                updates.push((q.symbol.clone(), Known::Quote(q)));
            }
            // Absent from the batch: one chart request tells unknown from
            // temporarily missing.
            for sym in batch.iter().filter(|s| !got.contains(*s)) {
                if let Err(wait) = self.permit().await {
                    end = TickEnd::NoToken(wait);
                    break 'batches;
                }
                match self.timed(self.deps.provider.fetch_one(sym.clone())).await {
                    Ok(Some(q)) => {
                        self.schedule(&q);
                        updates.push((sym.clone(), Known::Quote(q)));
                    }
                    Ok(None) => {
                        self.due_at
                            .insert(sym.clone(), Instant::now() + self.cfg.unknown_recheck);
                        updates.push((sym.clone(), Known::Unknown));
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

        self.deps.saver.record(&updates);
        if full || !due.is_empty() {
            self.publish(full, updates).await;
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

    async fn publish(&mut self, full: bool, changed: Vec<(Symbol, Known)>) {
        let round = Round {
            changed,
            health: self.health.clone(),
        };
        match self.deps.seams.bus.publish(full, round).await {
            Ok(_) => {}
            Err(BusError::Fenced) => {
                log::info!("another instance polls now; this round was not published");
                self.forget();
            }
            Err(e) => log::warn!("round not published: {e}"),
        }
    }
}
