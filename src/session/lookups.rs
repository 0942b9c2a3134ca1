//! The database side of an upgrade, several upgrades to a trip.
//!
//! Every upgrade needs its caller (bearer token → user) and, on the v1
//! endpoint, the watchlist (for the access rule) and its items. One trip to
//! the database per upgrade is one hand-off to the blocking pool and back,
//! and connects come in bursts: after a restart or a kick-all, thousands in
//! the same second, mostly with the same few tokens and watchlists. So the
//! upgrades that arrive while a trip is running wait for the next one, which
//! answers all of them, and reads each distinct token and watchlist once.
//!
//! Nothing is kept between trips: every answer is read after its request
//! arrived, so a revoked token, a deleted watchlist or one made private is
//! refused exactly as it would be with a trip of its own.
//!
//! Lifecycle: a trip is a task started by the request that finds none
//! running; it takes up to [`MAX_BATCH`] waiting requests per round and ends
//! when none are left. The queue holds at most one entry per upgrade in
//! progress: an upgrade is a connection of actix-server's until its 101,
//! and actix-server takes at most 25,600 connections per worker thread at
//! once. If the task is dropped (its worker thread stopping), the requests
//! still waiting get an error instead of waiting for ever, and the next
//! request starts a new task.

use crate::access::{self, Access};
use crate::api::ApiError;
use crate::auth::{self, Caller};
use crate::db::{models::Watchlist, Db, DbConn, DbError};
use crate::worker::ItemView;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

/// Most upgrades answered by one trip: a trip holds a pooled connection,
/// and the rest of the pool should not wait long behind it.
pub const MAX_BATCH: usize = 256;

/// Who is connecting, before the database has been asked.
pub enum Credentials {
    /// From a ticket, checked when it was issued.
    Checked(Caller),
    /// A bearer token, to look up.
    Bearer(String),
}

/// What an upgrade asks.
pub struct Lookup {
    pub credentials: Credentials,
    /// The watchlist of a v1 socket, to be read by the caller.
    pub watchlist: Option<i64>,
}

/// What it is told.
#[derive(Debug)]
pub struct Found {
    pub caller: Caller,
    /// The watchlist's items, when one was asked for: one copy per trip and
    /// watchlist, shared by the upgrades it answers.
    pub items: Arc<[ItemView]>,
}

type Reply = oneshot::Sender<Result<Found, ApiError>>;

#[derive(Default)]
struct Pending {
    queue: VecDeque<(Lookup, Reply)>,
    /// A task is taking requests from the queue.
    running: bool,
}

/// The connect-time lookups of one application.
pub struct ConnectLookups {
    db: Db,
    pending: Mutex<Pending>,
}

impl ConnectLookups {
    pub fn new(db: Db) -> Arc<Self> {
        Arc::new(Self {
            db,
            pending: Mutex::default(),
        })
    }

    /// Answers `lookup` in the next trip to the database.
    pub async fn find(self: &Arc<Self>, lookup: Lookup) -> Result<Found, ApiError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut pending = self.lock();
            pending.queue.push_back((lookup, tx));
            !std::mem::replace(&mut pending.running, true)
        };
        if start {
            let me = self.clone();
            tokio::spawn(async move { me.drain().await });
        }
        rx.await
            .map_err(|_| ApiError::Unavailable("server is shutting down".into()))?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Two fields changed together under the lock, with nothing that can
        // panic in between: a poisoned lock still holds a consistent state.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn drain(self: Arc<Self>) {
        let stop = StopGuard(&self);
        loop {
            let batch: Vec<(Lookup, Reply)> = {
                let mut pending = self.lock();
                if pending.queue.is_empty() {
                    pending.running = false;
                    std::mem::forget(stop);
                    return;
                }
                let n = pending.queue.len().min(MAX_BATCH);
                pending.queue.drain(..n).collect()
            };
            let (lookups, replies): (Vec<Lookup>, Vec<Reply>) = batch.into_iter().unzip();
            match self
                .db
                .run(move |c| Ok::<_, DbError>(answer(c, lookups)))
                .await
            {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        // The upgrade may have been abandoned meanwhile.
                        let _ = reply.send(answer);
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(DbError::Pool(why.clone()).into()));
                    }
                }
            }
        }
    }
}

/// Ends a dropped task's round: its waiting requests are refused (their
/// senders dropped) and the next request starts a new task.
struct StopGuard<'a>(&'a ConnectLookups);

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        let mut pending = self.0.lock();
        pending.running = false;
        pending.queue.clear();
    }
}

/// One trip's answers, in the order asked. Each distinct token, watchlist
/// and item list is read once; a failed read is not remembered, so each
/// request sees its own error.
fn answer(c: &mut DbConn, lookups: Vec<Lookup>) -> Vec<Result<Found, ApiError>> {
    let mut callers: HashMap<String, Caller> = HashMap::new();
    let mut watchlists: HashMap<i64, Watchlist> = HashMap::new();
    let mut items: HashMap<i64, Arc<[ItemView]>> = HashMap::new();
    lookups
        .into_iter()
        .map(|lookup| {
            let caller = match lookup.credentials {
                Credentials::Checked(caller) => caller,
                Credentials::Bearer(token) => match callers.get(&token) {
                    Some(caller) => caller.clone(),
                    None => {
                        let caller = auth::lookup(c, &token)?;
                        callers.insert(token, caller.clone());
                        caller
                    }
                },
            };
            let Some(id) = lookup.watchlist else {
                return Ok(Found {
                    caller,
                    items: Arc::new([]),
                });
            };
            let watchlist = match watchlists.get(&id) {
                Some(w) => w,
                None => {
                    let w = access::load(c, id, caller.user.id, Access::Read)?;
                    watchlists.entry(id).or_insert(w)
                }
            };
            access::check(watchlist, caller.user.id, Access::Read)?;
            let views = match items.get(&id) {
                Some(views) => views.clone(),
                None => {
                    let rows = crate::db::repo::get_items(c, id)?;
                    let views: Arc<[ItemView]> =
                        rows.iter().filter_map(ItemView::from_row).collect();
                    items.insert(id, views.clone());
                    views
                }
            };
            Ok(Found {
                caller,
                items: views,
            })
        })
        .collect()
}
