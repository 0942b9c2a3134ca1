//! The WebSocket session: one [`WsSession`] actor per socket.
//!
//! Two endpoints, one actor: `GET /ws/v1/watchlists/{id}` (v1) subscribes
//! the socket to one watchlist for its whole life, and losing that
//! watchlist closes it; `GET /ws/v1` opens a socket with no subscription,
//! and the client subscribes and unsubscribes by message (see
//! [`crate::protocol`]). Each subscription is one registration with the
//! watchlist's PriceWorker through the supervisor, so the worker rules
//! (first in starts it, last out stops it) hold per subscription.
//!
//! Lifecycle: the HTTP handler in [`endpoint`] authenticates, checks access
//! and limits, reserves a place in the [`table`] and answers 101; the
//! connection ([`transport`]) then starts the actor on its socket. Its
//! subscriptions join in `started` (v1) or on request, and all leave in
//! `stopped`. Its heartbeat timer is owned by its context and ends with it.
//! The table entry is released when both the actor and its connection's
//! writer are dropped, so a session that vanishes by any path is no longer
//! counted, and a connection still flushing after its actor stopped is.
//!
//! Inbound frames are decoded by [`frames`], so that size limits hold from
//! the first header byte; outbound frames are queued, already framed, in the
//! session's [`outbox`], which the connection writes. After the 101 the
//! socket is the session's, read and written by [`transport`] rather than
//! by actix-http's h1 dispatcher. A worker's frames go
//! into the outbox straight from the relay of the session's thread, framed
//! once per broadcast, with no message to the actor: the actor is there for
//! what the client says and for the session's own rules. Of actix-web-actors
//! (deprecated upstream) only the handshake is used, here in `endpoint`.

pub mod admission;
pub mod endpoint;
pub mod frames;
pub mod lookups;
pub mod messages;
pub mod outbox;
pub mod relay;
pub mod table;
pub mod transport;

use crate::access::{self, Access, AccessError};
use crate::config::Settings;
use crate::db::{repo, Db};
use crate::metrics::Metrics;
use crate::protocol::{self, close, ClientError, ClientMessage, EndReason, Frame, Refusal, Since};
use crate::supervisor::{Join, Leave, SnapshotFor, Supervisor};
use crate::worker::{ItemView, Subscribe};
use actix::prelude::*;
use frames::Inbound;
use messages::{CatchUp, CloseSession, Closer, Subscription, SubscriptionEnded, UserFrame};
use outbox::Outbox;
use relay::RelayHandle;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use table::{SessionGuard, SessionTable};

/// Timing and size rules of a session, from `[realtime]` and `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct SessionRules {
    pub heartbeat: Duration,
    /// Where on the clock grid the pings go: half a fetcher tick.
    pub beat_offset: Duration,
    pub client_timeout: Duration,
    /// `realtime.session_queue`: worker messages a subscription may have
    /// waiting.
    pub queue: usize,
    pub max_message_bytes: usize,
    pub max_subscriptions: usize,
}

impl SessionRules {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            heartbeat: settings.heartbeat_interval(),
            beat_offset: crate::clock::between_ticks(
                settings.poll_interval(),
                settings.heartbeat_interval(),
            ),
            client_timeout: settings.client_timeout(),
            queue: settings.realtime.session_queue,
            max_message_bytes: settings.realtime.max_message_bytes,
            max_subscriptions: settings.limits.max_subscriptions_per_session,
        }
    }
}

/// What a session needs from the rest of the service: one per HTTP worker
/// thread, shared by that thread's sessions (cloning its handles for each
/// session was a dozen allocations, freed again at its end).
pub struct SessionDeps {
    pub table: SessionTable,
    pub supervisor: Addr<Supervisor>,
    /// For access checks of subscriptions made by message.
    pub db: Db,
    /// The relay of this session's thread, handed to the worker on join.
    pub relay: RelayHandle,
    pub metrics: Arc<Metrics>,
    pub rules: SessionRules,
}

/// Which endpoint a session came through.
pub enum Endpoint {
    /// `GET /ws/v1/watchlists/{id}`: this subscription is made when the
    /// session starts, and its end closes the socket.
    Watchlist(FirstSubscription),
    /// `GET /ws/v1`: subscriptions by message.
    Multi,
}

/// The v1 endpoint's subscription, as the upgrade checked it.
pub struct FirstSubscription {
    pub watchlist_id: i64,
    /// Items as read at upgrade time, for a worker this join may start
    /// (shared by every upgrade the same trip answered).
    pub items: Arc<[ItemView]>,
    pub since: Option<Since>,
    pub intraday: bool,
}

/// One subscription as the session tracks it.
struct Sub {
    state: Arc<Subscription>,
    /// Joined; false while its access check is running.
    joined: bool,
}

pub struct WsSession {
    /// Shared with the writer: the table counts the session until both
    /// the actor and its connection are gone.
    guard: Arc<SessionGuard>,
    user_id: i64,
    /// The v1 watchlist, for the life of the socket; `None` on `/ws/v1`.
    single: Option<i64>,
    /// Taken in `started`.
    first: Option<FirstSubscription>,
    subs: HashMap<i64, Sub>,
    next_sub: u64,
    /// What the connection writes; the relays queue into it too.
    out: Outbox,
    /// Its own address for closes, shared with its connection's writer
    /// (set by [`transport`] before the actor starts; made when first
    /// needed otherwise).
    closer: Option<Closer>,
    deps: Arc<SessionDeps>,
    /// When the peer was last heard from (any frame, including pongs).
    last_heard: Instant,
    bad_messages: u32,
}

impl WsSession {
    pub fn new(
        guard: Arc<SessionGuard>,
        user_id: i64,
        endpoint: Endpoint,
        out: Outbox,
        deps: Arc<SessionDeps>,
    ) -> Self {
        let (single, first) = match endpoint {
            Endpoint::Watchlist(first) => (Some(first.watchlist_id), Some(first)),
            Endpoint::Multi => (None, None),
        };
        Self {
            guard,
            user_id,
            single,
            first,
            subs: HashMap::new(),
            next_sub: 0,
            out,
            closer: None,
            deps,
            last_heard: Instant::now(),
            bad_messages: 0,
        }
    }

    fn close(&self, ctx: &mut Context<Self>, code: u16, reason: &str) {
        self.out.close(Some(code), reason);
        ctx.stop();
    }

    fn closer(&mut self, ctx: &mut Context<Self>) -> Closer {
        self.closer
            .get_or_insert_with(|| Arc::new(ctx.address().recipient()))
            .clone()
    }

    fn send(&self, frame: Frame) {
        self.out.text(frame);
        self.deps.metrics.messages_sent.inc();
    }

    fn bad_message(&mut self, ctx: &mut Context<Self>, err: ClientError) {
        self.bad_messages += 1;
        self.send(protocol::error(err.code(), err.message()));
        if self.bad_messages >= protocol::MAX_BAD_MESSAGES {
            self.close(ctx, close::POLICY, "too many bad messages");
        }
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.last_heard.elapsed() > self.deps.rules.client_timeout {
            log::info!("session {}: peer silent, dropping", self.guard.id);
            self.close(ctx, close::GOING_AWAY, "client timeout");
            return;
        }
        self.out.ping();
    }

    /// Records a new subscription (not joined yet) and returns its state.
    fn add_sub(&mut self, watchlist_id: i64) -> Arc<Subscription> {
        self.next_sub += 1;
        let state = Arc::new(Subscription::new(self.next_sub));
        self.subs.insert(
            watchlist_id,
            Sub {
                state: state.clone(),
                joined: false,
            },
        );
        // A v1 socket's one subscription is in its table entry from the
        // upgrade on.
        if self.single.is_none() {
            self.publish_subscriptions();
        }
        state
    }

    fn publish_subscriptions(&self) {
        let mut ids: Vec<i64> = self.subs.keys().copied().collect();
        ids.sort_unstable();
        self.deps.table.set_subscriptions(self.guard.id, ids);
    }

    /// Registers subscription `sub` with the watchlist's worker.
    fn join(&mut self, ctx: &mut Context<Self>, first: FirstSubscription, ack: bool) {
        self.size_queue();
        let close = self.closer(ctx);
        let Some(sub) = self.subs.get_mut(&first.watchlist_id) else {
            return;
        };
        sub.joined = true;
        self.deps.supervisor.do_send(Join {
            watchlist_id: first.watchlist_id,
            items: first.items,
            close,
            subscribe: Subscribe {
                session_id: self.guard.id,
                user_id: self.user_id,
                sub: sub.state.clone(),
                out: self.out.clone(),
                control: ctx.address().recipient(),
                relay: self.deps.relay.clone(),
                since: first.since,
                intraday: first.intraday,
                ack,
            },
        });
    }

    /// Every subscription gets `realtime.session_queue` slots: a socket of
    /// ten watchlists is sent ten messages a tick, and should lag no sooner
    /// (in ticks) than a socket of one.
    fn size_queue(&self) {
        let subs = self.subs.len().max(1);
        self.out
            .set_capacity(self.deps.rules.queue.saturating_mul(subs));
    }

    /// Drops a subscription and, if it had joined, unregisters it.
    fn drop_sub(&mut self, watchlist_id: i64) -> bool {
        let Some(sub) = self.subs.remove(&watchlist_id) else {
            return false;
        };
        self.leave(watchlist_id, sub);
        self.publish_subscriptions();
        true
    }

    /// Ends a subscription taken out of `subs`.
    fn leave(&self, watchlist_id: i64, sub: Sub) {
        sub.state.end();
        if sub.joined {
            self.deps.supervisor.do_send(Leave {
                watchlist_id,
                session_id: self.guard.id,
                sub: sub.state.id,
            });
        }
    }

    fn refuse(&self, refusal: Refusal, watchlist_id: i64) {
        self.send(protocol::refusal(refusal, watchlist_id));
    }

    /// `subscribe` on `/ws/v1`: checked here (limit, duplicate), then access
    /// in the database, then joined.
    fn subscribe(
        &mut self,
        ctx: &mut Context<Self>,
        watchlist_id: i64,
        since: Option<Since>,
        intraday: bool,
    ) {
        if self.subs.contains_key(&watchlist_id) {
            return self.refuse(Refusal::AlreadySubscribed, watchlist_id);
        }
        if self.subs.len() >= self.deps.rules.max_subscriptions {
            return self.refuse(Refusal::LimitExceeded, watchlist_id);
        }
        let sub = self.add_sub(watchlist_id).id;
        let user_id = self.user_id;
        let db = self.deps.db.clone();
        let check = async move {
            db.run(move |c| {
                access::load(c, watchlist_id, user_id, Access::Read)?;
                Ok::<_, AccessError>(repo::get_items(c, watchlist_id)?)
            })
            .await
        };
        ctx.spawn(check.into_actor(self).map(move |res, act, ctx| {
            // Unsubscribed (or re-subscribed) meanwhile: this check is moot.
            if act.subs.get(&watchlist_id).map(|s| s.state.id) != Some(sub) {
                return;
            }
            let refusal = match res {
                Ok(rows) => {
                    let first = FirstSubscription {
                        watchlist_id,
                        items: rows.iter().filter_map(ItemView::from_row).collect(),
                        since,
                        intraday,
                    };
                    return act.join(ctx, first, true);
                }
                Err(AccessError::NotFound) => Refusal::NotFound,
                Err(AccessError::Denied(_)) => Refusal::Forbidden,
                Err(AccessError::Db(e)) => {
                    log::warn!("session {}: subscription check failed: {e}", act.guard.id);
                    Refusal::Unavailable
                }
            };
            act.drop_sub(watchlist_id);
            act.refuse(refusal, watchlist_id);
        }));
    }

    fn client_message(&mut self, ctx: &mut Context<Self>, msg: ClientMessage) {
        match (msg, self.single) {
            (ClientMessage::Ping, _) => self.send(protocol::pong()),
            (ClientMessage::Snapshot { .. }, Some(watchlist_id)) => self.snapshot_for(watchlist_id),
            (ClientMessage::Snapshot { watchlist_id: None }, None) => {
                self.bad_message(ctx, ClientError::InvalidMessage)
            }
            (
                ClientMessage::Snapshot {
                    watchlist_id: Some(id),
                },
                None,
            ) => match self.subs.get(&id) {
                Some(_) => self.snapshot_for(id),
                None => self.refuse(Refusal::NotSubscribed, id),
            },
            (
                ClientMessage::Subscribe {
                    watchlist_id,
                    since,
                    intraday,
                },
                None,
            ) => self.subscribe(ctx, watchlist_id, since, intraday),
            (ClientMessage::Unsubscribe { watchlist_id }, None) => {
                if self.drop_sub(watchlist_id) {
                    self.size_queue();
                    self.send(protocol::unsubscribed(watchlist_id, None));
                } else {
                    self.refuse(Refusal::NotSubscribed, watchlist_id);
                }
            }
            // The v1 grammar has no such messages (see `parse`).
            (ClientMessage::Subscribe { .. } | ClientMessage::Unsubscribe { .. }, Some(_)) => {
                self.bad_message(ctx, ClientError::UnknownType)
            }
        }
    }

    fn parse(&self, text: &str) -> Result<ClientMessage, ClientError> {
        if self.single.is_some() {
            protocol::parse_client_v1(text)
        } else {
            protocol::parse_client(text)
        }
    }

    fn snapshot_for(&self, watchlist_id: i64) {
        self.deps.supervisor.do_send(SnapshotFor {
            watchlist_id,
            session_id: self.guard.id,
        });
    }
}

impl Actor for WsSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The mailbox takes control messages and alerts; those are offered
        // with `try_send`, and a session that does not take them is full.
        ctx.set_mailbox_capacity(self.deps.rules.queue);
        self.deps.metrics.sessions_opened.inc();
        let closer = self.closer(ctx);
        self.deps.table.set_control(
            self.guard.id,
            closer,
            ctx.address().recipient(),
            Some(self.deps.relay.clone()),
        );
        // Every session pings on one grid shared with the fetcher's ticks,
        // half a tick after a tick (see `crate::clock`): each HTTP worker sends
        // its pings in one burst, between two broadcasts, and reads the pongs
        // in one burst, instead of being woken by a steady trickle of them.
        // Per-session phases and pings riding on deliveries were measured
        // too (docs/BENCHMARKS.md, heartbeats).
        let interval = self.deps.rules.heartbeat;
        let first = crate::clock::next_on_grid(interval, self.deps.rules.beat_offset);
        ctx.run_later(
            first.saturating_duration_since(Instant::now()),
            move |act, ctx| {
                act.heartbeat(ctx);
                ctx.run_interval(interval, |act, ctx| act.heartbeat(ctx));
            },
        );
        if let Some(first) = self.first.take() {
            self.add_sub(first.watchlist_id);
            // A v1 client that asked to recover is told whether it did.
            let ack = first.since.is_some();
            self.join(ctx, first, ack);
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.out.finish();
        self.deps.metrics.sessions_closed.inc();
        // Not published: the session's entry goes with it.
        for (id, sub) in std::mem::take(&mut self.subs) {
            self.leave(id, sub);
        }
    }
}

/// Frames were refused while the queue was full, and it has drained: the
/// lagging subscriptions ask for the latest state now rather than wait for
/// the next broadcast, which may be long in coming (an upstream outage
/// broadcasts nothing).
impl Handler<CatchUp> for WsSession {
    type Result = ();
    fn handle(&mut self, _: CatchUp, _: &mut Self::Context) {
        for (&watchlist_id, sub) in &self.subs {
            if sub.state.lagged.load(std::sync::atomic::Ordering::Relaxed) {
                self.snapshot_for(watchlist_id);
            }
        }
    }
}

/// A worker ended a subscription (watchlist deleted, access lost). On v1 the
/// socket closes with 4404 or 1008; on `/ws/v1` the client is told and the
/// socket stays open.
impl Handler<SubscriptionEnded> for WsSession {
    type Result = ();
    fn handle(&mut self, msg: SubscriptionEnded, ctx: &mut Self::Context) {
        let current = self.subs.get(&msg.watchlist_id).map(|s| s.state.id);
        if current != Some(msg.sub) {
            return;
        }
        self.drop_sub(msg.watchlist_id);
        if self.single.is_some() {
            match msg.reason {
                EndReason::Deleted => {
                    self.close(ctx, close::WATCHLIST_DELETED, "watchlist deleted")
                }
                EndReason::Forbidden => self.close(ctx, close::POLICY, "watchlist is private now"),
            }
        } else {
            self.send(protocol::unsubscribed(msg.watchlist_id, Some(msg.reason)));
        }
    }
}

/// A frame about the user (an alert): written as it is.
impl Handler<UserFrame> for WsSession {
    type Result = ();
    fn handle(&mut self, msg: UserFrame, _: &mut Self::Context) {
        self.send(msg.0);
    }
}

/// A close request (kick, revocation, deletion, shutdown).
impl Handler<CloseSession> for WsSession {
    type Result = ();
    fn handle(&mut self, msg: CloseSession, ctx: &mut Self::Context) {
        self.close(ctx, msg.code, msg.reason);
    }
}

/// Messages from the client, whole, from [`frames::Messages`].
impl StreamHandler<Inbound> for WsSession {
    fn handle(&mut self, msg: Inbound, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match msg {
            Inbound::Ping(p) => self.out.pong(&p),
            Inbound::Pong => {}
            Inbound::Text(text) => match self.parse(&text) {
                Ok(m) => self.client_message(ctx, m),
                Err(e) => self.bad_message(ctx, e),
            },
            Inbound::Binary { .. } => self.bad_message(ctx, ClientError::Binary),
            // The closing handshake: echo the client's code.
            Inbound::Close(frame) => match frame {
                Some(f) => self.close(ctx, f.code, &f.reason),
                None => {
                    self.out.close(None, "");
                    ctx.stop();
                }
            },
            Inbound::Violation(v) => {
                log::debug!("session {}: {}", self.guard.id, v.reason());
                self.close(ctx, v.close_code(), v.reason());
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
