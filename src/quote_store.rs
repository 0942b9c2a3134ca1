//! The latest quotes in the database, so that a restarted server's first
//! snapshots have prices at once.
//!
//! [`load`] reads them at start-up. [`QuoteSaver`] writes what the poller
//! learnt: at most once per [`SAVE_EVERY`], off the tick's path, one write
//! at a time, and once more when it is closed. A crash loses at most that
//! much history; the in-memory [`QuoteCache`](crate::feed::QuoteCache),
//! which every reader uses, is always current.
//!
//! Lifecycle: [`QuoteSaver::spawn`] starts the writing task; it ends when
//! the last [`QuoteSaver`] handle is dropped (the poll loop's, at shutdown),
//! after writing what is still unsaved.

use crate::db::{models::StoredQuote, now_micros, repo, Db, DbError};
use crate::domain::Symbol;
use crate::feed::QuoteMap;
use crate::quote::Known;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often the latest quotes are written to the database at most.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Every stored quote, as the cache holds them.
pub async fn load(db: &Db) -> Result<QuoteMap, DbError> {
    let rows = db.run(repo::load_latest_quotes).await?;
    Ok(rows
        .into_iter()
        .filter_map(StoredQuote::into_known)
        .collect())
}

/// Hands quotes to the writing task. Dropping the last handle makes the
/// task write what is left and end.
#[derive(Clone)]
pub struct QuoteSaver {
    /// Latest state per symbol not written yet: one entry per symbol at
    /// most, so it is bounded by the symbols watched, however slow the
    /// database is.
    unsaved: Arc<Mutex<HashMap<String, StoredQuote>>>,
    /// Wakes the task (capacity 1: a wake-up already pending is enough);
    /// all senders gone means "close".
    wake: mpsc::Sender<()>,
}

impl QuoteSaver {
    /// Starts the writing task on the current runtime.
    pub fn spawn(db: Db) -> (QuoteSaver, JoinHandle<()>) {
        let unsaved = Arc::new(Mutex::new(HashMap::new()));
        let (wake, rx) = mpsc::channel(1);
        let task = tokio::spawn(write_loop(db, unsaved.clone(), rx));
        (QuoteSaver { unsaved, wake }, task)
    }

    /// A saver with no writing task, for tests: what it was handed stays in
    /// [`QuoteSaver::unsaved`].
    #[cfg(test)]
    pub(crate) fn detached() -> QuoteSaver {
        QuoteSaver {
            unsaved: Arc::default(),
            wake: mpsc::channel(1).0,
        }
    }

    /// What was handed over and not written yet, by symbol.
    #[cfg(test)]
    pub(crate) fn unsaved(&self) -> HashMap<String, StoredQuote> {
        self.unsaved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records the states a round learnt (pending ones carry nothing).
    pub fn record(&self, changed: &[(Symbol, Known)]) {
        let now = now_micros();
        let mut added = false;
        {
            let mut unsaved = self.unsaved.lock().unwrap_or_else(PoisonError::into_inner);
            for (symbol, known) in changed {
                if let Some(row) = StoredQuote::from_known(symbol, known, now) {
                    unsaved.insert(row.symbol.clone(), row);
                    added = true;
                }
            }
        }
        if added {
            let _ = self.wake.try_send(());
        }
    }
}

async fn write_loop(
    db: Db,
    unsaved: Arc<Mutex<HashMap<String, StoredQuote>>>,
    mut wake: mpsc::Receiver<()>,
) {
    let take = || std::mem::take(&mut *unsaved.lock().unwrap_or_else(PoisonError::into_inner));
    let mut last_write = Instant::now() - SAVE_EVERY;
    loop {
        let open = wake.recv().await.is_some();
        if open {
            // Newer states replace older ones while this waits.
            tokio::time::sleep_until(last_write + SAVE_EVERY).await;
        }
        let rows: Vec<StoredQuote> = take().into_values().collect();
        if !rows.is_empty() {
            last_write = Instant::now();
            let n = rows.len();
            if let Err(e) = db.run(move |c| repo::upsert_latest_quotes(c, &rows)).await {
                log::warn!("could not store {n} latest quotes: {e}");
            }
        }
        if !open {
            log::debug!("quote saver stopped");
            return;
        }
    }
}
