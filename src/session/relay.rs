//! One [`Relay`] actor per HTTP worker thread hands a worker's frames to the
//! sessions that live on that thread.
//!
//! A PriceWorker runs on the realtime arbiter and its sessions on the HTTP
//! worker threads. Queuing a frame for a session on another thread costs a
//! cross-thread wake-up each time; at 10,000 sessions that loop alone took
//! about 30 ms per tick, all of it inside the delivery latency. So the worker
//! sends each frame once per thread, with the list of that thread's sessions,
//! and the relay queues it for each of them locally. Everything a worker sends
//! to a session goes this way, so a session sees frames in the order the
//! worker made them.
//!
//! Lifecycle: started by the application factory on each HTTP worker thread
//! (see [`crate::startup`]); it lives as long as that thread's arbiter. It
//! holds no session: the lists come with each batch.

use super::messages::{Body, CloseSession, Closer, Subscription};
use super::outbox::{Outbox, Refused, Wire};
use crate::metrics::Metrics;
use actix::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Batches a relay may hold before a worker's sends to it count as dropped
/// (and the sessions concerned catch up with a snapshot).
pub const RELAY_QUEUE: usize = 4096;

/// Where a frame goes (one subscription of one session), and the counters
/// that say how that went.
#[derive(Clone)]
pub struct Target {
    pub out: Outbox,
    pub sub: Arc<Subscription>,
}

impl Target {
    /// Queues a frame without waiting, and returns how many frames went in.
    /// A full session queue marks the subscription lagging (it gets a
    /// snapshot later) and counts a drop. A closed session, or a
    /// subscription the session has ended, is left alone: its `Leave` is on
    /// the way to the worker.
    fn offer(&self, body: &Body, metrics: &Metrics, drops: &Drops) -> usize {
        if self.sub.is_ended() {
            return 0;
        }
        match self.out.offer(body) {
            Ok(n) => {
                // Written only when it changes: the worker reads every
                // subscription's flag before each broadcast, and a store here
                // on every frame would take the line from its cache each time.
                if self.sub.lagged.load(Ordering::Relaxed) {
                    self.sub.lagged.store(false, Ordering::Relaxed);
                }
                n
            }
            Err(Refused::Full) => {
                self.dropped(metrics, drops);
                0
            }
            Err(Refused::Closed) => 0,
        }
    }

    fn dropped(&self, metrics: &Metrics, drops: &Drops) {
        self.sub.lagged.store(true, Ordering::Relaxed);
        drops.0.fetch_add(1, Ordering::Release);
        self.out.stats().dropped.fetch_add(1, Ordering::Relaxed);
        metrics.messages_dropped.inc();
    }
}

/// How many frames of one worker were refused (each marks a subscription
/// lagging), counted by the relays. The worker looks for lagging
/// subscriptions only when this has moved since it last found none: reading
/// every subscriber's flag before every broadcast cost a cache miss per
/// subscriber (at 10,000 subscribers, more than the rest of the broadcast).
#[derive(Clone, Default)]
pub struct Drops(Arc<AtomicU64>);

impl Drops {
    /// The count so far. A subscription marked lagging before this read is
    /// seen by a scan after it; one marked after it moves the count again.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// A frame for some sessions of one thread. Subscriptions marked lagging
/// get `catch_up` (a snapshot, which carries the upstream state too)
/// instead, when there is one.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Batch {
    pub body: Body,
    pub catch_up: Option<Wire>,
    pub targets: Arc<[Target]>,
    /// The sending worker's count of refused frames.
    pub drops: Drops,
}

pub struct Relay {
    metrics: Arc<Metrics>,
}

impl Actor for Relay {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(RELAY_QUEUE);
    }
}

// Counted on drop, not in `stopped`: a relay ends when its thread's arbiter
// is torn down, which drops the actor without stopping it first.
impl Drop for Relay {
    fn drop(&mut self) {
        self.metrics.relays.dec();
    }
}

impl Handler<Batch> for Relay {
    type Result = ();
    fn handle(&mut self, batch: Batch, _: &mut Self::Context) {
        let catch_up = batch.catch_up.map(Body::Frame);
        let mut sent = 0;
        for t in batch.targets.iter() {
            let body = match &catch_up {
                Some(snap) if t.sub.lagged.load(Ordering::Relaxed) => snap,
                _ => &batch.body,
            };
            sent += t.offer(body, &self.metrics, &batch.drops);
        }
        self.metrics.messages_sent.inc_by(sent as u64);
    }
}

/// Sessions of this relay's thread to close. Sent as one message so that
/// the closes become work queued on that thread, in order with the rest:
/// a message sent to each session from another thread is a wake-up from
/// outside, which tokio's `LocalSet` serves only after its own queue, so in
/// a mass close (revocation, shutdown) the closes waited behind the work of
/// the clients already reconnecting (docs/BENCHMARKS.md, storm).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseAll {
    pub sessions: Vec<Closer>,
    pub close: CloseSession,
}

impl Handler<CloseAll> for Relay {
    type Result = ();
    fn handle(&mut self, msg: CloseAll, _: &mut Self::Context) {
        for s in msg.sessions {
            s.do_send(msg.close.clone());
        }
    }
}

/// A relay's address and identity (workers group sessions by it). Cloned
/// for every session of its thread (the session table's entry, each
/// subscription at its worker): a clone is a reference count, where a
/// clone of its two actix recipients was six allocations, freed again on
/// whichever thread let go of them.
#[derive(Clone)]
pub struct RelayHandle(Arc<RelayAddr>);

struct RelayAddr {
    id: u64,
    addr: Recipient<Batch>,
    closes: Recipient<CloseAll>,
}

impl RelayHandle {
    /// Starts a relay on the current thread's arbiter.
    pub fn start(metrics: Arc<Metrics>) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        metrics.relays.inc();
        let relay = Relay { metrics }.start();
        Self(Arc::new(RelayAddr {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            addr: relay.clone().recipient(),
            closes: relay.recipient(),
        }))
    }

    /// This relay's identity, unique in the process.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Closes these sessions of the relay's thread. Never dropped for a
    /// full mailbox (a close must arrive); if the relay is gone, so is its
    /// thread and every session on it.
    pub fn close_all(&self, sessions: Vec<Closer>, close: CloseSession) {
        self.0.closes.do_send(CloseAll { sessions, close });
    }

    /// Hands a batch over without waiting; if the relay is full or gone, the
    /// batch counts as dropped for each of its sessions.
    pub fn send(&self, batch: Batch, metrics: &Metrics) {
        if let Err(SendError::Full(b) | SendError::Closed(b)) = self.0.addr.try_send(batch) {
            for t in b.targets.iter() {
                t.dropped(metrics, &b.drops);
            }
        }
    }
}
