//! [`PinnedSymbols`]: symbols the poller fetches whether or not any worker
//! watches them (the symbols of enabled price alerts). Their owner replaces
//! the whole set; the demand reads it.

use super::signal::Signal;
use crate::domain::Symbol;
use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};
use tokio::sync::Notify;

/// Cheap to clone.
#[derive(Clone, Default)]
pub struct PinnedSymbols {
    inner: Arc<RwLock<BTreeSet<Symbol>>>,
    /// Raised when a replacement added a symbol.
    grown: Signal,
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
            self.grown.raise();
        }
    }

    pub fn get(&self) -> BTreeSet<Symbol> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A listener woken when a replacement added a symbol.
    pub fn listen(&self) -> Arc<Notify> {
        self.grown.listen()
    }
}
