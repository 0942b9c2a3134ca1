//! The fan-out seam between the shared fetcher and the PriceWorkers.
//!
//! [`Watchers`] is the registry of live workers and the symbols each watches:
//! the fetcher reads the union of symbols from it and publishes every tick's
//! quotes through it. It is the one place that knows where quotes go, so
//! sharing quotes between instances later (through Redis) is a new publisher
//! and subscriber here, not a change to workers or sessions.
//!
//! [`QuoteCache`] holds the latest known state of every symbol: the fetcher
//! writes it, workers read it for instant snapshots.

use crate::domain::Symbol;
use crate::quote::Known;
use actix::prelude::*;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Notify;

pub type QuoteMap = HashMap<Symbol, Known>;

/// Health of the upstream as the fetcher sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamHealth {
    pub degraded: bool,
    pub message: String,
    pub retry_in_ms: Option<u64>,
}

impl UpstreamHealth {
    /// Whether two health reports would read the same to a client (the
    /// countdown alone changing is not news).
    pub fn same_state(&self, other: &Self) -> bool {
        self.degraded == other.degraded && self.message == other.message
    }
}

/// One tick's result: the full latest state (shared, not copied per worker)
/// so a worker that missed a tick loses nothing, plus the upstream health.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct QuoteTick {
    pub quotes: Arc<QuoteMap>,
    pub health: Arc<UpstreamHealth>,
}

/// Latest known state of every symbol.
#[derive(Clone, Default)]
pub struct QuoteCache {
    inner: Arc<RwLock<Arc<QuoteMap>>>,
}

impl QuoteCache {
    pub fn new(initial: QuoteMap) -> Self {
        Self {
            inner: Arc::new(RwLock::new(Arc::new(initial))),
        }
    }

    pub fn snapshot(&self) -> Arc<QuoteMap> {
        self.inner.read().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn replace(&self, map: Arc<QuoteMap>) {
        if let Ok(mut m) = self.inner.write() {
            *m = map;
        }
    }
}

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
    /// Symbols to fetch at the next wake-up whatever their schedule
    /// (admin refresh).
    forced: HashSet<Symbol>,
}

/// Registry of live workers' symbols. Cheap to clone.
#[derive(Clone, Default)]
pub struct Watchers {
    inner: Arc<Mutex<Inner>>,
    wake: Arc<Notify>,
}

/// A worker's registration; dropping it unregisters.
pub struct WatchGuard {
    watchers: Watchers,
    id: u64,
}

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, symbols: Vec<Symbol>, tick: Recipient<QuoteTick>) -> WatchGuard {
        let id = {
            let mut inner = self.lock();
            inner.next_id += 1;
            let id = inner.next_id;
            inner.watches.insert(id, Watch { symbols, tick });
            id
        };
        // New symbols should not wait a whole tick; the fetcher fetches only
        // never-seen symbols on such a wake-up.
        self.wake.notify_one();
        WatchGuard {
            watchers: self.clone(),
            id,
        }
    }

    /// Distinct symbols over all live workers.
    pub fn union(&self) -> BTreeSet<Symbol> {
        self.lock()
            .watches
            .values()
            .flat_map(|w| w.symbols.iter().cloned())
            .collect()
    }

    /// Delivers a tick to every live worker. A worker whose mailbox is full
    /// skips this tick; the next one carries the full state again.
    pub fn publish(&self, tick: QuoteTick) {
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

    /// Asks the fetcher to fetch these symbols now.
    pub fn force(&self, symbols: impl IntoIterator<Item = Symbol>) {
        self.lock().forced.extend(symbols);
        self.wake.notify_one();
    }

    pub fn take_forced(&self) -> HashSet<Symbol> {
        std::mem::take(&mut self.lock().forced)
    }

    /// Resolves when a worker registered or a refresh was asked for.
    pub async fn woken(&self) {
        self.wake.notified().await
    }
}

impl WatchGuard {
    pub fn update(&self, symbols: Vec<Symbol>) {
        if let Some(w) = self.watchers.lock().watches.get_mut(&self.id) {
            w.symbols = symbols;
        }
        self.watchers.wake.notify_one();
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.watchers.lock().watches.remove(&self.id);
    }
}
