//! The shared fetcher: the only caller of the upstream.
//!
//! Every tick it takes the union of the symbols of all live PriceWorkers
//! (from [`Watchers`]), fetches each due symbol once, in batches of at most
//! `batch_size`, each request through the token bucket, and publishes the
//! resulting state to every worker. Upstream requests per tick are therefore
//! ceil(due symbols / batch size), whatever the number of watchlists and
//! sessions.
//!
//! * Symbols whose market is closed are due every `closed_poll_interval_ms`.
//! * A symbol missing from a batch answer gets one single-symbol request;
//!   if the upstream calls it unknown it is left alone for
//!   `unknown_recheck_ms`.
//! * Any failed request backs the whole fetcher off (exponential with jitter,
//!   honouring `Retry-After`); workers are told `degraded`, and `ok` again
//!   after the next success. Nothing here can stop a worker.
//!
//! * The latest state is also written to the database, so snapshots survive
//!   a restart: at most once per [`PERSIST_EVERY`], off the tick's path, and
//!   once more on shutdown. A crash loses at most that much history; the
//!   in-memory cache, which every reader uses, is always current.
//!
//! Lifecycle: started once by [`crate::startup`], it runs until the shutdown
//! signal it is given fires, then writes what is still unsaved and returns.

use super::bucket::{Backoff, TokenBucket};
use super::{QuoteProvider, UpstreamError};
use crate::db::{models::StoredQuote, now_micros, repo, Db};
use crate::domain::Symbol;
use crate::fanout::{QuoteCache, QuoteMap, QuoteTick, UpstreamHealth, Watchers};
use crate::metrics::Metrics;
use crate::quote::{Known, MarketQuote};
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often the latest quotes are written to the database at most.
pub const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// Timing rules of the fetcher, from `[upstream]`.
#[derive(Debug, Clone)]
pub struct FetcherConfig {
    pub poll_interval: Duration,
    pub closed_poll_interval: Duration,
    pub unknown_recheck: Duration,
    pub batch_size: usize,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Longest wait for a rate-limit token before the rest of a tick is skipped.
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

pub struct Fetcher {
    provider: Arc<dyn QuoteProvider>,
    bucket: Option<Arc<TokenBucket>>,
    watchers: Watchers,
    cache: QuoteCache,
    db: Db,
    metrics: Arc<Metrics>,
    stats: Arc<UpstreamStats>,
    cfg: FetcherConfig,
    /// When each symbol is next due. Absent: never fetched, due now.
    due_at: HashMap<Symbol, Instant>,
    backoff: Backoff,
    backoff_until: Option<Instant>,
    health: Arc<UpstreamHealth>,
    /// Latest state per symbol not written to the database yet (one entry
    /// per watched symbol at most).
    unsaved: HashMap<String, StoredQuote>,
    last_saved: Instant,
    /// The write in flight, if any: never more than one.
    saving: Option<tokio::task::JoinHandle<()>>,
}

/// How a tick ended, for the health report.
enum TickEnd {
    Done,
    Failed(UpstreamError),
    NoToken(Duration),
}

impl Fetcher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        provider: Arc<dyn QuoteProvider>,
        bucket: Option<Arc<TokenBucket>>,
        watchers: Watchers,
        cache: QuoteCache,
        db: Db,
        metrics: Arc<Metrics>,
        stats: Arc<UpstreamStats>,
        cfg: FetcherConfig,
    ) -> Self {
        let backoff = Backoff::new(cfg.backoff_base, cfg.backoff_max);
        Self {
            provider,
            bucket,
            watchers,
            cache,
            db,
            metrics,
            stats,
            cfg,
            due_at: HashMap::new(),
            backoff,
            backoff_until: None,
            health: Arc::new(UpstreamHealth {
                degraded: false,
                message: "upstream ok".into(),
                retry_in_ms: None,
            }),
            unsaved: HashMap::new(),
            last_saved: Instant::now(),
            saving: None,
        }
    }

    /// Runs until `shutdown` turns true (or its sender is dropped).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        // Ticks sit on the process clock grid, so the sessions' heartbeats
        // can be put between them (see `crate::clock`).
        let poll = self.cfg.poll_interval;
        let next_on_grid = || Instant::from_std(crate::clock::next_on_grid(poll, Duration::ZERO));
        let mut next_tick = next_on_grid();
        loop {
            let save_at = self.last_saved + PERSIST_EVERY;
            let full = tokio::select! {
                _ = tokio::time::sleep_until(next_tick) => true,
                _ = self.watchers.woken() => false,
                _ = tokio::time::sleep_until(save_at), if !self.unsaved.is_empty() => {
                    self.save();
                    continue;
                }
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
            self.cycle(full).await;
        }
        self.flush().await;
        log::debug!("fetcher stopped");
    }

    /// Starts writing the unsaved quotes, unless the previous write is still
    /// running: then they wait for the next turn (and newer states replace
    /// them meanwhile). A slow database thus delays the saves, never the
    /// ticks, and writes cannot pile up.
    fn save(&mut self) {
        self.last_saved = Instant::now();
        let busy = self.saving.as_ref().is_some_and(|h| !h.is_finished());
        if busy || self.unsaved.is_empty() {
            return;
        }
        let rows: Vec<StoredQuote> = std::mem::take(&mut self.unsaved).into_values().collect();
        let db = self.db.clone();
        self.saving = Some(tokio::spawn(async move {
            if let Err(e) = db.run(move |c| repo::upsert_latest_quotes(c, &rows)).await {
                log::warn!("could not store latest quotes: {e}");
            }
        }));
    }

    /// At shutdown: the write in flight, then everything still unsaved.
    async fn flush(&mut self) {
        if let Some(write) = self.saving.take() {
            let _ = write.await;
        }
        self.save();
        if let Some(write) = self.saving.take() {
            let _ = write.await;
        }
    }

    /// One round. A full round (the tick) fetches every due symbol and
    /// publishes to every worker; a wake-up round only fetches symbols never
    /// seen or forced by a refresh, so new watchlists fill in at once without
    /// adding requests to the steady tick.
    async fn cycle(&mut self, full: bool) {
        let watched = self.watchers.union();
        self.due_at.retain(|s, _| watched.contains(s));
        let forced = self.watchers.take_forced();
        if watched.is_empty() {
            return;
        }
        if full {
            self.stats.cycles.fetch_add(1, Ordering::Relaxed);
        }
        let now = Instant::now();
        if let Some(until) = self.backoff_until {
            if now < until {
                if full {
                    let wait = until - now;
                    self.set_health(true, self.health.message.clone(), Some(wait));
                    self.publish(self.cache.snapshot());
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
            let res = self.timed(self.provider.fetch_batch(batch.to_vec())).await;
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
                match self.timed(self.provider.fetch_one(sym.clone())).await {
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
                    self.provider.name()
                );
                self.set_health(true, format!("upstream unavailable: {e}"), Some(delay));
            }
            TickEnd::NoToken(wait) => {
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .upstream_requests
                    .with_label_values(&["throttled"])
                    .inc();
                self.set_health(
                    true,
                    "request budget exhausted (local rate limit)".into(),
                    Some(wait),
                );
            }
        }

        let map = if updates.is_empty() {
            self.cache.snapshot()
        } else {
            let mut map: QuoteMap = (*self.cache.snapshot()).clone();
            for (s, k) in updates {
                if let Some(row) = stored(&s, &k) {
                    self.unsaved.insert(row.symbol.clone(), row);
                }
                map.insert(s, k);
            }
            let map = Arc::new(map);
            self.cache.replace(map.clone());
            map
        };
        if full || !due.is_empty() {
            self.publish(map);
        }
    }

    /// A rate-limit token, waiting at most `max_token_wait`; the error says
    /// how long until one would be available.
    async fn permit(&self) -> Result<(), Duration> {
        let Some(bucket) = &self.bucket else {
            return Ok(());
        };
        if bucket.take(self.cfg.max_token_wait).await {
            return Ok(());
        }
        Err(bucket.time_until_available())
    }

    /// Runs one upstream request, counting it by outcome.
    async fn timed<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        let started = std::time::Instant::now();
        let res = fut.await;
        self.metrics
            .upstream_latency
            .observe(started.elapsed().as_secs_f64());
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let outcome = match &res {
            Ok(_) => {
                self.stats.record_success();
                "ok"
            }
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                if matches!(e, UpstreamError::RateLimited { .. }) {
                    self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                }
                e.outcome()
            }
        };
        self.metrics
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
        self.health = Arc::new(UpstreamHealth {
            degraded,
            message,
            retry_in_ms: retry_in.map(|d| d.as_millis() as u64),
        });
    }

    fn publish(&self, quotes: Arc<QuoteMap>) {
        self.watchers.publish(QuoteTick {
            quotes,
            health: self.health.clone(),
        });
    }
}

/// The stored form of a symbol's state (nothing to store while pending).
fn stored(symbol: &Symbol, known: &Known) -> Option<StoredQuote> {
    let now = now_micros();
    match known {
        Known::Pending => None,
        Known::Unknown => Some(StoredQuote {
            symbol: symbol.to_string(),
            is_unknown: true,
            name: None,
            price: None,
            previous_close: None,
            volume: None,
            currency: None,
            market_state: None,
            market_time: None,
            updated_at: now,
        }),
        Known::Quote(q) => Some(StoredQuote {
            symbol: symbol.to_string(),
            is_unknown: false,
            name: q.name.clone(),
            price: q.price,
            previous_close: q.previous_close,
            volume: q.volume,
            currency: q.currency.clone(),
            market_state: q.market_state.clone(),
            market_time: q.market_time.map(|t| t.timestamp_micros()),
            updated_at: now,
        }),
    }
}

/// A stored row back to the in-memory state (start-up).
pub fn from_stored(row: StoredQuote) -> Option<(Symbol, Known)> {
    let symbol = Symbol::parse(&row.symbol).ok()?;
    if row.is_unknown {
        return Some((symbol, Known::Unknown));
    }
    let q = MarketQuote {
        symbol: symbol.clone(),
        name: row.name,
        price: row.price,
        previous_close: row.previous_close,
        volume: row.volume,
        currency: row.currency,
        market_state: row.market_state,
        market_time: row.market_time.map(crate::db::from_micros),
    };
    Some((symbol, Known::Quote(q)))
}
