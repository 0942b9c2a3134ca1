//! [`PinnedSymbols`]: symbols the poller fetches whether or not any worker
//! watches them (the symbols of enabled price alerts). Their owner replaces
//! the whole set; the demand reads it.

use crate::domain::Symbol;
use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};
use tokio::sync::Notify;

/// Cheap to clone.
#[derive(Clone, Default)]
pub struct PinnedSymbols {
    inner: Arc<RwLock<BTreeSet<Symbol>>>,
    /// Pinged when a replacement added a symbol.
    grown: Arc<Notify>,
}

impl PinnedSymbols {
    pub fn replace(&self, symbols: BTreeSet<Symbol>) {
        let grew = {
            let mut set = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            let grew = symbols.iter().any(|s| !set.contains(s));
            *set = symbols;
            grew
        };
        if grew {
            self.grown.notify_one();
        }
    }

    pub fn get(&self) -> BTreeSet<Symbol> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Resolves when a replacement added a symbol.
    pub async fn grown(&self) {
        self.grown.notified().await
    }
}
