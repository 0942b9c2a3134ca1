//! [`Signal`]: "something grew", heard by every listener on its own.
//!
//! A plain `Notify` wakes one waiter, and a notification raised while that
//! waiter is busy is kept for it alone; with two consumers (the poll loop
//! and, in cluster mode, the interest refresher) one of them would miss it.
//! Each listener here has its own `Notify`, so each keeps its own permit.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct Signal {
    /// Dropped listeners are pruned when the signal is raised.
    listeners: Arc<Mutex<Vec<Weak<Notify>>>>,
}

impl Signal {
    /// A new listener; hold it, and await `notified()` on it.
    pub fn listen(&self) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&n));
        n
    }

    pub fn raise(&self) {
        let mut listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners.retain(|l| match l.upgrade() {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_listener_keeps_its_own_permit() {
        let s = Signal::default();
        let a = s.listen();
        let b = s.listen();
        s.raise();
        // Neither was waiting: both still get it.
        a.notified().await;
        b.notified().await;
        drop(a);
        s.raise();
        assert_eq!(s.listeners.lock().unwrap().len(), 1);
    }
}
