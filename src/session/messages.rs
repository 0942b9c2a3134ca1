//! The messages a session actor takes from the rest of the service, and the
//! counters it shares with whoever feeds it.

use super::outbox::Wire;
use crate::protocol::Frame;
use actix::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a worker sends a subscription (through the relay of the session's
/// thread, into the session's [`super::outbox::Outbox`]), framed once by
/// the worker for every session it goes to.
#[derive(Clone, Debug)]
pub enum Body {
    /// A live message (quotes, snapshot, ...).
    Frame(Wire),
    /// A `status` frame: a session subscribed to several watchlists gets the
    /// same one from each worker and writes it once.
    Status(Wire),
    /// What a join opens with: the `subscribed` ack, the replay or the
    /// snapshot, then the status when degraded. One message, so it takes one
    /// slot of the session's queue however long the replay (up to
    /// `realtime.history_size` frames, more than the queue holds), and
    /// subscribing to many watchlists at once cannot overflow it.
    Opening {
        frames: Vec<Wire>,
        status: Option<Wire>,
    },
}

/// Sent to a session actor by its writer: frames of its subscriptions were
/// refused while its queue was full, and the queue has drained now; the
/// lagging subscriptions ask for the latest state.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct CatchUp;

/// Sent to a session actor: write this frame, which is about the user, not
/// a watchlist (an alert that fired). Best effort: dropped when the
/// session's queue is full.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct UserFrame(pub Frame);

/// Sent to a session actor: its subscription `sub` ended without the client
/// asking (the watchlist was deleted, or access was lost).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct SubscriptionEnded {
    pub watchlist_id: i64,
    pub sub: u64,
    pub reason: crate::protocol::EndReason,
}

/// One subscription of a session to a watchlist, shared by the session, its
/// worker and the relays that carry its frames.
#[derive(Debug)]
pub struct Subscription {
    /// Unique per session; a re-subscription gets a new one.
    pub id: u64,
    /// A frame could not be queued for it: it gets a full snapshot (the
    /// latest state, coalesced) as soon as it has room again.
    pub lagged: AtomicBool,
    /// The session has ended it (unsubscribed, or the worker ended it): a
    /// frame of it still on the way is dropped, never shown after the end
    /// or under a new subscription.
    ended: AtomicBool,
}

impl Subscription {
    pub fn new(id: u64) -> Self {
        Self {
            id,
            lagged: AtomicBool::new(false),
            ended: AtomicBool::new(false),
        }
    }

    pub fn end(&self) {
        self.ended.store(true, Ordering::Relaxed);
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }
}

/// Sent to a session actor: close the socket with this code.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct CloseSession {
    pub code: u16,
    pub reason: &'static str,
}

/// A session's address for [`CloseSession`], made once per session and
/// shared by whoever may close it (its connection's writer, the session
/// table, its joins): a clone is a reference count, where a clone of an
/// actix recipient is three allocations, freed again on whichever thread
/// lets go of it.
pub type Closer = Arc<Recipient<CloseSession>>;

/// Counters shared between a session actor and whoever feeds it, and the
/// session's outbound queue (see [`super::outbox::Outbox`]). Aligned so that
/// the counters and the queue's lock share one 128-byte block, which the CPU
/// fetches as one on a relay's pass.
#[repr(C, align(128))]
pub struct SessionStats {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    /// Bumped each time the connection takes a frame or finds it has
    /// written all there was. A connection whose socket cannot drain stops
    /// asking (actix-web #2441), so a count that stands still while frames
    /// wait is how a stalled session is recognised from outside. A count,
    /// not a clock: it is bumped for every frame, and reading the clock
    /// there was 3% of the server's CPU at 10,000 sessions.
    progress: AtomicU64,
    /// The stall sweep's view: the count it saw last, and when it changed
    /// (milliseconds since [`epoch`]).
    seen: AtomicU64,
    seen_changed_ms: AtomicU64,
    pub(super) queue: Mutex<super::outbox::Inner>,
}

/// Where the stall sweep's clock starts: once per process, not per session,
/// which keeps [`SessionStats`]' counters within 40 bytes.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl std::fmt::Debug for SessionStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStats")
            .field("sent", &self.sent)
            .field("dropped", &self.dropped)
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

impl SessionStats {
    pub fn new() -> Self {
        Self {
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            progress: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            seen_changed_ms: AtomicU64::new(0),
            queue: Mutex::new(super::outbox::Inner::new()),
        }
    }

    pub fn mark_progress(&self) {
        // One writer thread bumps it (the session's), so no read-modify-write.
        let n = self.progress.load(Ordering::Relaxed);
        self.progress.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    /// For the stall sweep: how long the connection has made no progress,
    /// as seen by this and earlier calls (so at most one sweep interval
    /// late).
    pub fn idle_ms(&self) -> u64 {
        let now = epoch().elapsed().as_millis() as u64;
        let progress = self.progress.load(Ordering::Relaxed);
        if self.seen.swap(progress, Ordering::Relaxed) != progress {
            self.seen_changed_ms.store(now, Ordering::Relaxed);
            return 0;
        }
        now.saturating_sub(self.seen_changed_ms.load(Ordering::Relaxed))
    }
}

impl Default for SessionStats {
    fn default() -> Self {
        Self::new()
    }
}
