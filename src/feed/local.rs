//! The single-process implementations of the feed's seams: everything stays
//! in this process, no Redis involved.

use super::{
    BusError, Demand, Distributor, PinnedSymbols, PollerRole, QuoteBus, RateLimiter, Round,
    WorkerRegistry,
};
use crate::domain::Symbol;
use crate::upstream::bucket::TokenBucket;
use futures_util::future::{self, BoxFuture, FutureExt};
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;

/// Demand of one process: the live workers' symbols and the pinned (alert)
/// symbols, plus refreshes asked for by admins and one-off REST fetches.
pub struct LocalDemand {
    registry: WorkerRegistry,
    pinned: PinnedSymbols,
    /// This demand's own listeners of growth (see [`super::signal`]).
    registry_grown: Arc<Notify>,
    pinned_grown: Arc<Notify>,
    forced: Mutex<HashSet<Symbol>>,
    /// Bounded by what REST callers may ask at once (50 symbols a request)
    /// and emptied by every round.
    once: Mutex<HashSet<Symbol>>,
    force_asked: Notify,
}

impl LocalDemand {
    pub fn new(registry: WorkerRegistry, pinned: PinnedSymbols) -> Self {
        Self {
            registry_grown: registry.listen(),
            pinned_grown: pinned.listen(),
            registry,
            pinned,
            forced: Mutex::new(HashSet::new()),
            once: Mutex::new(HashSet::new()),
            force_asked: Notify::new(),
        }
    }

    fn forced(&self) -> std::sync::MutexGuard<'_, HashSet<Symbol>> {
        self.forced.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn once(&self) -> std::sync::MutexGuard<'_, HashSet<Symbol>> {
        self.once.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Demand for LocalDemand {
    fn wanted(&self) -> BoxFuture<'_, BTreeSet<Symbol>> {
        let mut wanted = self.registry.symbols();
        wanted.extend(self.pinned.get());
        future::ready(wanted).boxed()
    }

    fn take_forced(&self) -> BoxFuture<'_, HashSet<Symbol>> {
        future::ready(std::mem::take(&mut *self.forced())).boxed()
    }

    fn force(&self, symbols: Vec<Symbol>) {
        self.forced().extend(symbols);
        self.force_asked.notify_one();
    }

    fn fetch_once(&self, symbols: Vec<Symbol>) {
        self.once().extend(symbols);
        self.force_asked.notify_one();
    }

    fn take_once(&self) -> BoxFuture<'_, HashSet<Symbol>> {
        future::ready(std::mem::take(&mut *self.once())).boxed()
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        async move {
            tokio::select! {
                _ = self.registry_grown.notified() => {}
                _ = self.pinned_grown.notified() => {}
                _ = self.force_asked.notified() => {}
            }
        }
        .boxed()
    }
}

/// Rounds go straight to this process's workers. Tick ids are
/// `max(previous + 1, grid point)`, as in a cluster: they increase, also
/// across restarts.
pub struct LocalBus {
    distributor: Distributor,
    last_tick: AtomicU64,
    poll: Duration,
}

impl LocalBus {
    pub fn new(distributor: Distributor, poll: Duration) -> Self {
        Self {
            distributor,
            last_tick: AtomicU64::new(0),
            poll,
        }
    }
}

impl QuoteBus for LocalBus {
    fn publish(&self, _full: bool, round: Round) -> BoxFuture<'_, Result<u64, BusError>> {
        let grid = crate::clock::grid_index(self.poll);
        let prev = self
            .last_tick
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some((t + 1).max(grid))
            })
            .unwrap_or(0);
        let tick = (prev + 1).max(grid);
        self.distributor.deliver(tick, round);
        future::ready(Ok(tick)).boxed()
    }
}

/// The in-process token bucket in front of every upstream request.
impl RateLimiter for TokenBucket {
    fn acquire(&self, max_wait: Duration) -> BoxFuture<'_, Result<(), Duration>> {
        async move {
            if self.take(max_wait).await {
                Ok(())
            } else {
                Err(self.time_until_available())
            }
        }
        .boxed()
    }
}

/// For providers whose requests cost nothing (the simulator).
pub struct Unlimited;

impl RateLimiter for Unlimited {
    fn acquire(&self, _: Duration) -> BoxFuture<'_, Result<(), Duration>> {
        future::ready(Ok(())).boxed()
    }
}

/// A single process always polls.
pub struct AlwaysPoller;

impl PollerRole for AlwaysPoller {
    fn is_poller(&self) -> bool {
        true
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        future::pending().boxed()
    }
}
