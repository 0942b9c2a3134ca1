//! [`QuoteCache`]: the latest known state of every symbol this instance has
//! seen. The [`Distributor`](super::Distributor) writes it; workers read it
//! for instant snapshots and `GET /api/v1/quotes` for answers.

use crate::domain::Symbol;
use crate::quote::Known;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use tokio::sync::Notify;

pub type QuoteMap = HashMap<Symbol, Known>;

/// Latest known state of every symbol. Cheap to clone; readers get an
/// `Arc` of the whole map, so a read never copies it.
#[derive(Clone, Default)]
pub struct QuoteCache {
    inner: Arc<RwLock<Arc<QuoteMap>>>,
    /// Woken after every change, for readers waiting for a symbol.
    changed: Arc<Notify>,
}

impl QuoteCache {
    pub fn new(initial: QuoteMap) -> Self {
        Self {
            inner: Arc::new(RwLock::new(Arc::new(initial))),
            changed: Arc::default(),
        }
    }

    /// Waits until every symbol of `symbols` is known (fetched, or called
    /// unknown by the upstream), at most until `deadline`; returns the map
    /// as it is then.
    pub async fn wait_known(
        &self,
        symbols: &[Symbol],
        deadline: tokio::time::Instant,
    ) -> Arc<QuoteMap> {
        loop {
            // Registered before the check, so a change in between wakes it.
            let changed = self.changed.notified();
            let map = self.snapshot();
            let pending = symbols
                .iter()
                .any(|s| matches!(map.get(s), None | Some(Known::Pending)));
            if !pending || tokio::time::timeout_at(deadline, changed).await.is_err() {
                return map;
            }
        }
    }

    // The lock only guards swapping one `Arc` for another, which a panic
    // cannot leave half done, so a poisoned lock still holds a whole map:
    // reading and writing through the poison is correct, and nothing is lost.

    pub fn snapshot(&self) -> Arc<QuoteMap> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Applies changes and returns the new full map (unchanged, and not
    /// copied, when there are none).
    pub fn apply(&self, changed: impl IntoIterator<Item = (Symbol, Known)>) -> Arc<QuoteMap> {
        let mut changed = changed.into_iter().peekable();
        let mut guard = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if changed.peek().is_none() {
            return guard.clone();
        }
        let map = Arc::make_mut(&mut guard);
        map.extend(changed);
        let map = guard.clone();
        drop(guard);
        self.changed.notify_waiters();
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Symbol {
        Symbol::parse(s).unwrap()
    }

    #[test]
    fn apply_merges_and_readers_keep_their_copy() {
        let cache = QuoteCache::default();
        let before = cache.snapshot();
        let after = cache.apply([(sym("A"), Known::Unknown)]);
        assert!(before.is_empty());
        assert_eq!(after.get(&sym("A")), Some(&Known::Unknown));
        let same = cache.apply([]);
        assert!(Arc::ptr_eq(&same, &after));
        cache.apply([(sym("B"), Known::Pending)]);
        assert_eq!(cache.snapshot().len(), 2);
        assert_eq!(after.len(), 1);
    }

    #[test]
    fn a_poisoned_lock_loses_nothing() {
        let cache = QuoteCache::default();
        let c = cache.clone();
        let _ = std::thread::spawn(move || {
            let _guard = c.inner.write().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(cache.inner.is_poisoned());
        cache.apply([(sym("A"), Known::Unknown)]);
        assert_eq!(cache.snapshot().get(&sym("A")), Some(&Known::Unknown));
    }
}
