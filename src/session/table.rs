//! The table of live sessions: the one place that counts them (for limits,
//! admin and metrics), finds them (kick, revocation) and, as a last resort,
//! cuts the socket of one that no longer drains.
//!
//! An entry exists exactly as long as its [`SessionGuard`]: the guard is taken
//! before the upgrade (so limits are checked and reserved atomically) and
//! lives inside the session actor, so the entry goes when the actor goes,
//! whatever the reason.

use super::messages::{CloseSession, Closer, SessionStats, UserFrame};
use super::relay::RelayHandle;
use crate::net::ConnSocket;
use crate::protocol::Frame;
use actix::prelude::*;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// What the table knows of one session.
pub struct SessionEntry {
    pub id: u64,
    /// Who it is for, as reserved.
    pub who: NewSession,
    /// The watchlists it is subscribed to now (kept by the session).
    pub subscriptions: Vec<i64>,
    pub connected_at: DateTime<Utc>,
    pub stats: Arc<SessionStats>,
    /// Set once the actor has started.
    pub control: Option<Closer>,
    /// Set once the actor has started: frames about the user.
    pub user_frames: Option<Recipient<UserFrame>>,
    /// A close asked for before the actor started: sent the moment it does.
    pub pending_close: Option<CloseSession>,
    /// Set once the actor has started: the relay of its thread, through
    /// which closes of many sessions at once go (see [`RelayHandle::close_all`]).
    pub relay: Option<RelayHandle>,
}

/// A row of `GET /admin/v1/sessions`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SessionInfo {
    pub id: u64,
    /// The instance the session is on.
    pub node_id: String,
    pub user: String,
    #[schema(required = true)]
    pub watchlist_id: Option<i64>,
    pub subscriptions: Vec<i64>,
    #[schema(required = true)]
    pub peer: Option<String>,
    #[schema(format = DateTime)]
    pub connected_at: String,
    pub sent: u64,
    pub dropped: u64,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    sessions: HashMap<u64, SessionEntry>,
    per_user: HashMap<i64, usize>,
}

/// Below this capacity a map is left as it is.
const SHRINK_FLOOR: usize = 64;

/// Gives back most of a map's room once three quarters of it are empty.
///
/// Why: a hash map keeps the capacity it grew to. After 10,000 sessions
/// left, the session table still held 5 MiB for them (heaptrack,
/// docs/BENCHMARKS.md, storm). Halving at a quarter full costs one rehash of
/// what is left, at most a quarter of the capacity, per halving: constant
/// per removal on average, and a table that moves around one size does not
/// resize back and forth.
fn shrink_if_sparse<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > SHRINK_FLOOR && map.len() * 4 < map.capacity() {
        map.shrink_to((map.len() * 2).max(SHRINK_FLOOR));
    }
}

/// Why a session was refused before the upgrade.
#[derive(Debug, PartialEq, Eq)]
pub enum LimitError {
    /// `limits.max_sessions` reached: 503.
    ServerFull,
    /// `limits.max_sessions_per_user` reached: 429.
    UserFull,
}

/// The live session table. Cheap to clone.
#[derive(Clone)]
pub struct SessionTable {
    inner: Arc<Mutex<Inner>>,
    /// This instance's node id, shown with every session.
    node_id: Arc<str>,
    /// Told of every session that goes (cluster mode: its user's
    /// cluster-wide count).
    on_release: Option<Arc<dyn Fn(i64, u64) + Send + Sync>>,
    /// Pinged whenever the last session goes.
    emptied: Arc<Notify>,
    max_sessions: usize,
    max_per_user: usize,
}

/// A reservation in the table; dropping it removes the entry.
pub struct SessionGuard {
    table: SessionTable,
    pub id: u64,
    pub stats: Arc<SessionStats>,
}

/// Who a new session is for.
pub struct NewSession {
    pub user_id: i64,
    pub user: String,
    pub token_id: i64,
    /// The watchlist of a v1 socket; `None` on `/ws/v1`.
    pub watchlist_id: Option<i64>,
    pub peer: Option<SocketAddr>,
    pub socket: Option<ConnSocket>,
}

impl SessionTable {
    pub fn new(max_sessions: usize, max_per_user: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            node_id: Arc::from(""),
            on_release: None,
            emptied: Arc::default(),
            max_sessions,
            max_per_user,
        }
    }

    /// Names the instance in the rows of [`SessionTable::list`].
    pub fn named(mut self, node_id: &str) -> Self {
        self.node_id = Arc::from(node_id);
        self
    }

    /// Cluster mode: session ids start at `id_base` (unique to this node),
    /// and `on_release(user_id, session_id)` is told of every session that
    /// goes.
    pub fn clustered(
        mut self,
        id_base: u64,
        on_release: Arc<dyn Fn(i64, u64) + Send + Sync>,
    ) -> Self {
        self.lock().next_id = id_base;
        self.on_release = Some(on_release);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks both limits and reserves a place, atomically.
    pub fn reserve(&self, s: NewSession) -> Result<SessionGuard, LimitError> {
        let mut inner = self.lock();
        if inner.sessions.len() >= self.max_sessions {
            return Err(LimitError::ServerFull);
        }
        let mine = inner.per_user.get(&s.user_id).copied().unwrap_or(0);
        if mine >= self.max_per_user {
            return Err(LimitError::UserFull);
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let stats = Arc::new(SessionStats::new());
        stats.mark_progress();
        *inner.per_user.entry(s.user_id).or_default() += 1;
        inner.sessions.insert(
            id,
            SessionEntry {
                id,
                subscriptions: s.watchlist_id.into_iter().collect(),
                who: s,
                connected_at: Utc::now(),
                stats: stats.clone(),
                control: None,
                user_frames: None,
                pending_close: None,
                relay: None,
            },
        );
        Ok(SessionGuard {
            table: self.clone(),
            id,
            stats,
        })
    }

    fn release(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(e) = inner.sessions.remove(&id) {
            let user_id = e.who.user_id;
            if let Some(n) = inner.per_user.get_mut(&user_id) {
                *n -= 1;
                if *n == 0 {
                    inner.per_user.remove(&user_id);
                }
            }
            if let Some(hook) = &self.on_release {
                hook(user_id, id);
            }
            shrink_if_sparse(&mut inner.sessions);
            shrink_if_sparse(&mut inner.per_user);
        }
        if inner.sessions.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    /// Session ids by user (the cluster heartbeat keeps them counted).
    pub fn ids_by_user(&self) -> HashMap<i64, Vec<u64>> {
        let mut out: HashMap<i64, Vec<u64>> = HashMap::new();
        for e in self.lock().sessions.values() {
            out.entry(e.who.user_id).or_default().push(e.id);
        }
        out
    }

    /// Resolves once the table is empty.
    pub async fn until_empty(&self) {
        loop {
            // Registered before the check, so a release in between wakes it.
            let emptied = self.emptied.notified();
            if self.is_empty() {
                return;
            }
            emptied.await;
        }
    }

    /// The actor started: from now on it can be asked to close, and a close
    /// asked for before now is passed on at once.
    pub fn set_control(
        &self,
        id: u64,
        control: Closer,
        user_frames: Recipient<UserFrame>,
        relay: Option<RelayHandle>,
    ) {
        let pending = match self.lock().sessions.get_mut(&id) {
            Some(e) => {
                e.control = Some(control.clone());
                e.user_frames = Some(user_frames);
                e.relay = relay;
                e.pending_close.take()
            }
            None => None,
        };
        if let Some(close) = pending {
            control.do_send(close);
        }
    }

    pub fn set_subscriptions(&self, id: u64, subscriptions: Vec<i64>) {
        if let Some(e) = self.lock().sessions.get_mut(&id) {
            e.subscriptions = subscriptions;
        }
    }

    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let inner = self.lock();
        let mut rows: Vec<SessionInfo> = inner
            .sessions
            .values()
            .map(|e| SessionInfo {
                id: e.id,
                node_id: self.node_id.to_string(),
                user: e.who.user.clone(),
                watchlist_id: e.who.watchlist_id,
                subscriptions: e.subscriptions.clone(),
                peer: e.who.peer.map(|p| p.to_string()),
                connected_at: crate::quote::format_ts(e.connected_at),
                sent: e.stats.sent.load(Ordering::Relaxed),
                dropped: e.stats.dropped.load(Ordering::Relaxed),
            })
            .collect();
        rows.sort_by_key(|r| r.id);
        rows
    }

    /// Asks one session to close; false if there is no such session.
    pub fn close(&self, id: u64, code: u16, reason: &'static str) -> bool {
        self.close_where(|e| e.id == id, code, reason) > 0
    }

    /// Asks every session matching `pred` to close; returns how many. The
    /// one way to close sessions (kick, shutdown, revoked tokens). A session
    /// reserved but not started yet is closed as soon as it starts.
    pub fn close_where(
        &self,
        pred: impl Fn(&SessionEntry) -> bool,
        code: u16,
        reason: &'static str,
    ) -> usize {
        let close = CloseSession { code, reason };
        // Grouped by thread: one message to each thread's relay, which
        // passes the closes on there (see `RelayHandle::close_all`).
        let mut by_thread: HashMap<u64, (RelayHandle, Vec<Closer>)> = HashMap::new();
        let mut direct = Vec::new();
        let mut n = 0;
        for e in self.lock().sessions.values_mut().filter(|e| pred(e)) {
            n += 1;
            match (&e.control, &e.relay) {
                (Some(c), Some(r)) => by_thread
                    .entry(r.id())
                    .or_insert_with(|| (r.clone(), Vec::new()))
                    .1
                    .push(c.clone()),
                (Some(c), None) => direct.push(c.clone()),
                (None, _) => e.pending_close = Some(close.clone()),
            }
        }
        for (relay, sessions) in by_thread.into_values() {
            relay.close_all(sessions, close.clone());
        }
        for c in direct {
            c.do_send(close.clone());
        }
        n
    }

    /// Hands a frame to every started session of a user; returns how many
    /// took it (a full queue drops it: such frames are best effort).
    pub fn send_to_user(&self, user_id: i64, frame: Frame) -> usize {
        let targets: Vec<Recipient<UserFrame>> = self
            .lock()
            .sessions
            .values()
            .filter(|e| e.who.user_id == user_id)
            .filter_map(|e| e.user_frames.clone())
            .collect();
        targets
            .iter()
            .filter(|t| t.try_send(UserFrame(frame.clone())).is_ok())
            .count()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.lock().sessions.contains_key(&id)
    }

    /// Token ids of live sessions, for the revocation check.
    pub fn token_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .lock()
            .sessions
            .values()
            .map(|e| e.who.token_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Cuts the sockets of sessions whose connection has made no progress
    /// for `timeout_ms` (their socket stopped draining, so they cannot even
    /// write a close frame). Returns how many were cut.
    pub fn cut_stalled(&self, timeout_ms: u64) -> usize {
        let stalled: Vec<(u64, ConnSocket)> = self
            .lock()
            .sessions
            .values()
            .filter(|e| e.stats.idle_ms() > timeout_ms)
            .filter_map(|e| e.who.socket.map(|s| (e.id, s)))
            .collect();
        let mut cut = 0;
        for (id, socket) in stalled {
            if socket.shutdown() {
                log::info!("session {id}: socket stalled for over {timeout_ms} ms, cut off");
                cut += 1;
            }
        }
        cut
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.table.release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(user_id: i64) -> NewSession {
        NewSession {
            user_id,
            user: format!("u{user_id}"),
            token_id: user_id * 10,
            watchlist_id: Some(1),
            peer: None,
            socket: None,
        }
    }

    /// Records the closes it is asked for.
    struct Closes(std::sync::mpsc::Sender<u16>);

    impl Actor for Closes {
        type Context = Context<Self>;
    }

    impl Handler<CloseSession> for Closes {
        type Result = ();
        fn handle(&mut self, msg: CloseSession, _: &mut Context<Self>) {
            let _ = self.0.send(msg.code);
        }
    }

    impl Handler<UserFrame> for Closes {
        type Result = ();
        fn handle(&mut self, _: UserFrame, _: &mut Context<Self>) {}
    }

    /// A crowd's room goes with the crowd: the table shrinks as its
    /// sessions leave, and still counts and limits exactly.
    #[test]
    fn the_table_gives_back_a_crowds_room() {
        let t = SessionTable::new(20_000, 20_000);
        let guards: Vec<_> = (0..10_000)
            .map(|i| t.reserve(new(i % 3)).unwrap())
            .collect();
        let grown = t.lock().sessions.capacity();
        assert!(grown >= 10_000, "{grown}");
        let mut guards = guards.into_iter();
        let kept: Vec<_> = guards.by_ref().take(10).collect();
        drop(guards);
        let inner = t.lock();
        assert_eq!(inner.sessions.len(), 10);
        assert!(
            inner.sessions.capacity() <= 2 * SHRINK_FLOOR,
            "{}",
            inner.sessions.capacity()
        );
        assert_eq!(inner.per_user.values().sum::<usize>(), 10);
        drop(inner);
        drop(kept);
        assert!(t.is_empty());
    }

    /// A kick of a session reserved but not started yet used to report
    /// success and do nothing; now it reaches the session as it starts.
    #[actix_web::test]
    async fn a_close_before_the_start_is_delivered_at_the_start() {
        let t = SessionTable::new(10, 10);
        let g = t.reserve(new(1)).unwrap();
        assert!(t.close(g.id, 1008, "kicked by an admin"));
        assert!(!t.close(g.id + 1, 1008, "no such session"));
        let (tx, rx) = std::sync::mpsc::channel();
        let addr = Closes(tx).start();
        t.set_control(
            g.id,
            Arc::new(addr.clone().recipient()),
            addr.recipient(),
            None,
        );
        let code =
            tokio::task::spawn_blocking(move || rx.recv_timeout(std::time::Duration::from_secs(5)))
                .await
                .unwrap();
        assert_eq!(code, Ok(1008));
    }

    /// Started sessions are closed through their thread's relay, each of
    /// them once, however many match.
    #[actix_web::test]
    async fn closes_go_through_each_sessions_relay() {
        let t = SessionTable::new(10, 10);
        let relay = RelayHandle::start(Arc::new(crate::metrics::Metrics::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let guards: Vec<_> = (0..3).map(|_| t.reserve(new(1)).unwrap()).collect();
        for g in &guards {
            let addr = Closes(tx.clone()).start();
            t.set_control(
                g.id,
                Arc::new(addr.clone().recipient()),
                addr.recipient(),
                Some(relay.clone()),
            );
        }
        assert_eq!(t.close_where(|_| true, 1001, "server shutting down"), 3);
        let codes = tokio::task::spawn_blocking(move || {
            (0..3)
                .map(|_| rx.recv_timeout(std::time::Duration::from_secs(5)))
                .collect::<Result<Vec<u16>, _>>()
        })
        .await
        .unwrap();
        assert_eq!(codes, Ok(vec![1001; 3]));
    }

    /// Shutdown waits for the table to empty on an event, not by polling.
    #[tokio::test]
    async fn until_empty_resolves_when_the_last_session_goes() {
        let t = SessionTable::new(10, 10);
        let a = t.reserve(new(1)).unwrap();
        let b = t.reserve(new(2)).unwrap();
        let waiter = tokio::spawn({
            let t = t.clone();
            async move { t.until_empty().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("resolved")
            .unwrap();
    }

    #[test]
    fn limits_are_enforced_and_released_with_the_guard() {
        let t = SessionTable::new(3, 2);
        let a = t.reserve(new(1)).unwrap();
        let _b = t.reserve(new(1)).unwrap();
        assert_eq!(t.reserve(new(1)).err(), Some(LimitError::UserFull));
        let _c = t.reserve(new(2)).unwrap();
        assert_eq!(t.reserve(new(3)).err(), Some(LimitError::ServerFull));
        drop(a);
        assert_eq!(t.len(), 2);
        assert!(t.reserve(new(1)).is_ok());
        assert_eq!(t.token_ids(), vec![10, 20]);
    }
}
