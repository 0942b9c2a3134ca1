//! This instance's side of the feed: which PriceWorkers are alive and what
//! they watch ([`WorkerRegistry`]), and the [`Distributor`] that turns a
//! published round into a [`QuoteTick`] for each of them.

use super::signal::Signal;
use super::{IntradayStore, QuoteCache, QuoteTick, Round};
use crate::domain::Symbol;
use crate::quote::Known;
use actix::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Notify;

struct Watch {
    symbols: Vec<Symbol>,
    tick: Recipient<QuoteTick>,
}

#[derive(Default)]
struct Inner {
    /// Keyed by registration, not by watchlist: a stopping worker and its
    /// successor for the same watchlist may overlap for a moment, and the
    /// old one leaving must not unregister the new one.
    watches: HashMap<u64, Watch>,
    next_id: u64,
    /// The distinct symbols of `watches`, made when first asked for after a
    /// change. The fetcher asks every tick, and rebuilding it then cloned
    /// every symbol of every worker (2,000 at 100 watchlists of 20) to keep
    /// a tenth of them.
    distinct: Option<BTreeSet<Symbol>>,
}

impl Inner {
    fn changed(&mut self) {
        self.distinct = None;
    }
}

/// The live workers of this instance and their symbols. Cheap to clone.
#[derive(Clone, Default)]
pub struct WorkerRegistry {
    inner: Arc<Mutex<Inner>>,
    /// Raised when a worker registers or changes its symbols.
    grown: Signal,
}

/// A worker's registration; dropping it unregisters.
pub struct WatchGuard {
    registry: WorkerRegistry,
    id: u64,
}

impl WorkerRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update below is a single map operation: a panic elsewhere
        // cannot leave the map half changed.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn register(&self, symbols: Vec<Symbol>, tick: Recipient<QuoteTick>) -> WatchGuard {
        let id = {
            let mut inner = self.lock();
            inner.next_id += 1;
            let id = inner.next_id;
            inner.watches.insert(id, Watch { symbols, tick });
            inner.changed();
            id
        };
        self.grown.raise();
        WatchGuard {
            registry: self.clone(),
            id,
        }
    }

    /// Distinct symbols over all live workers of this instance.
    pub fn symbols(&self) -> BTreeSet<Symbol> {
        let mut inner = self.lock();
        let Inner {
            watches, distinct, ..
        } = &mut *inner;
        distinct
            .get_or_insert_with(|| {
                let refs: BTreeSet<&Symbol> =
                    watches.values().flat_map(|w| w.symbols.iter()).collect();
                refs.into_iter().cloned().collect()
            })
            .clone()
    }

    /// A listener woken when a worker registers or changes its symbols.
    pub fn listen(&self) -> Arc<Notify> {
        self.grown.listen()
    }

    /// Delivers a tick to every live worker. A worker whose mailbox is full
    /// skips this tick; the next one carries the full state again.
    fn deliver(&self, tick: QuoteTick) {
        let targets: Vec<Recipient<QuoteTick>> = self
            .lock()
            .watches
            .values()
            .map(|w| w.tick.clone())
            .collect();
        for t in targets {
            let _ = t.try_send(tick.clone());
        }
    }
}

impl WatchGuard {
    pub fn update(&self, symbols: Vec<Symbol>) {
        let mut inner = self.registry.lock();
        if let Some(w) = inner.watches.get_mut(&self.id) {
            w.symbols = symbols;
            inner.changed();
        }
        drop(inner);
        self.registry.grown.raise();
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if inner.watches.remove(&self.id).is_some() {
            inner.changed();
        }
    }
}

/// Where every published round ends on an instance: into the cache and the
/// intraday series, then to every local worker. Cheap to clone.
#[derive(Clone)]
pub struct Distributor {
    pub cache: QuoteCache,
    pub intraday: IntradayStore,
    pub registry: WorkerRegistry,
}

impl Distributor {
    pub fn deliver(&self, tick: u64, round: Round) {
        for (symbol, bars) in round.intraday {
            self.intraday.set_bars(&symbol, bars);
        }
        let now = chrono::Utc::now().timestamp();
        for (symbol, known) in &round.changed {
            if let Known::Quote(q) = known {
                if let Some(price) = q.price {
                    let at = q.market_time.map_or(now, |t| t.timestamp());
                    self.intraday.add_tick(symbol, at, price);
                }
            }
        }
        let quotes = self.cache.apply(round.changed);
        self.registry.deliver(QuoteTick {
            tick,
            quotes,
            health: Arc::new(round.health),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{syms, watcher};

    fn set(names: &[&str]) -> BTreeSet<Symbol> {
        syms(names).into_iter().collect()
    }

    #[actix::test]
    async fn the_distinct_symbols_follow_every_change() {
        let registry = WorkerRegistry::default();
        assert!(registry.symbols().is_empty());
        let a = watcher(&registry, &["AAPL", "MSFT"]);
        let b = watcher(&registry, &["MSFT", "TSLA"]);
        assert_eq!(registry.symbols(), set(&["AAPL", "MSFT", "TSLA"]));
        // Asked again with nothing changed: the same set.
        assert_eq!(registry.symbols(), set(&["AAPL", "MSFT", "TSLA"]));
        b.update(syms(&["NVDA"]));
        assert_eq!(registry.symbols(), set(&["AAPL", "MSFT", "NVDA"]));
        drop(a);
        assert_eq!(registry.symbols(), set(&["NVDA"]));
        drop(b);
        assert!(registry.symbols().is_empty());
    }
}
