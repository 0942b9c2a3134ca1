//! The WebSocket session: one [`WsSession`] actor per socket.
//!
//! Lifecycle: the HTTP handler in [`endpoint`] authenticates, checks access and
//! limits, reserves a place in the [`table`] and starts the actor. In
//! `started` the actor joins its watchlist's PriceWorker through the
//! supervisor; in `stopped` it leaves. Its heartbeat timer is owned by its
//! context and ends with it. The table entry is released when the actor is
//! dropped, so a session that vanishes by any path is no longer counted.
//!
//! Inbound frames are decoded by [`frames`], not by actix-web-actors, so
//! that size limits hold from the first header byte; outbound frames go
//! through actix-web-actors' `WebsocketContext`. This is the only module that
//! uses actix-web-actors (deprecated upstream), so replacing it later touches
//! nothing else.

pub mod endpoint;
pub mod frames;
pub mod messages;
pub mod relay;
pub mod table;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::protocol::{self, close, ClientError, ClientMessage};
use crate::supervisor::{Join, Leave, SnapshotFor, Supervisor};
use crate::worker::ItemView;
use actix::prelude::*;
use actix_web_actors::ws;
use frames::Inbound;
use messages::{CloseSession, Deliver};
use relay::RelayHandle;
use std::sync::Arc;
use std::time::{Duration, Instant};
use table::{SessionGuard, SessionTable};

/// Timing and size rules of a session, from `[realtime]`.
#[derive(Debug, Clone, Copy)]
pub struct SessionRules {
    pub heartbeat: Duration,
    /// Where on the clock grid the pings go: half a fetcher tick.
    pub beat_offset: Duration,
    pub client_timeout: Duration,
    pub mailbox: usize,
    pub max_message_bytes: usize,
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
            mailbox: settings.realtime.session_queue,
            max_message_bytes: settings.realtime.max_message_bytes,
        }
    }
}

/// What a session needs from the rest of the service.
#[derive(Clone)]
pub struct SessionDeps {
    pub table: SessionTable,
    pub supervisor: Addr<Supervisor>,
    /// The relay of this session's thread, handed to the worker on join.
    pub relay: RelayHandle,
    pub metrics: Arc<Metrics>,
    pub rules: SessionRules,
}

pub struct WsSession {
    guard: SessionGuard,
    watchlist_id: i64,
    /// Items as read at upgrade time, for a worker this session may spawn.
    items: Arc<Vec<ItemView>>,
    deps: SessionDeps,
    /// When the peer was last heard from (any frame, including pongs).
    last_heard: Instant,
    bad_messages: u32,
}

impl WsSession {
    pub fn new(
        guard: SessionGuard,
        watchlist_id: i64,
        items: Arc<Vec<ItemView>>,
        deps: SessionDeps,
    ) -> Self {
        Self {
            guard,
            watchlist_id,
            items,
            deps,
            last_heard: Instant::now(),
            bad_messages: 0,
        }
    }

    fn close(&self, ctx: &mut ws::WebsocketContext<Self>, code: u16, reason: &str) {
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::from(code),
            description: Some(reason.to_owned()),
        }));
        ctx.stop();
    }

    fn send(&self, ctx: &mut ws::WebsocketContext<Self>, frame: protocol::Frame) {
        ctx.text(frame);
        self.guard
            .stats
            .sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.deps.metrics.messages_sent.inc();
    }

    fn bad_message(&mut self, ctx: &mut ws::WebsocketContext<Self>, err: ClientError) {
        self.bad_messages += 1;
        self.send(ctx, protocol::error(err.code(), err.message()));
        if self.bad_messages >= protocol::MAX_BAD_MESSAGES {
            self.close(ctx, close::POLICY, "too many bad messages");
        }
    }

    fn heartbeat(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        self.guard.stats.mark_polled();
        if self.last_heard.elapsed() > self.deps.rules.client_timeout {
            log::info!("session {}: peer silent, dropping", self.guard.id);
            self.close(ctx, close::GOING_AWAY, "client timeout");
            return;
        }
        ctx.ping(b"");
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A bounded mailbox is what lets the worker notice a session that
        // does not keep up (try_send fails) instead of queueing a backlog.
        ctx.set_mailbox_capacity(self.deps.rules.mailbox);
        self.guard.stats.mark_polled();
        self.deps.metrics.sessions_opened.inc();
        self.deps
            .table
            .set_control(self.guard.id, ctx.address().recipient());
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
        self.deps.supervisor.do_send(Join {
            watchlist_id: self.watchlist_id,
            session_id: self.guard.id,
            deliver: ctx.address().recipient(),
            control: ctx.address().recipient(),
            stats: self.guard.stats.clone(),
            relay: self.deps.relay.clone(),
            // Only a worker started by this join needs them; do not keep a
            // copy per session.
            items: std::mem::take(&mut self.items),
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.deps.metrics.sessions_closed.inc();
        self.deps.supervisor.do_send(Leave {
            watchlist_id: self.watchlist_id,
            session_id: self.guard.id,
        });
    }
}

/// A frame from the worker (snapshot, quotes, status): write it.
impl Handler<Deliver> for WsSession {
    type Result = ();
    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        self.guard.stats.mark_polled();
        self.send(ctx, msg.0);
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
        self.guard.stats.mark_polled();
        self.last_heard = Instant::now();
        match msg {
            Inbound::Ping(p) => ctx.pong(&p),
            Inbound::Pong => {}
            Inbound::Text(text) => match protocol::parse_client(&text) {
                Ok(ClientMessage::Ping) => self.send(ctx, protocol::pong()),
                Ok(ClientMessage::Snapshot) => self.deps.supervisor.do_send(SnapshotFor {
                    watchlist_id: self.watchlist_id,
                    session_id: self.guard.id,
                }),
                Err(e) => self.bad_message(ctx, e),
            },
            Inbound::Binary { .. } => self.bad_message(ctx, ClientError::Binary),
            Inbound::Close(frame) => {
                ctx.close(frame.map(|f| ws::CloseReason {
                    code: ws::CloseCode::from(f.code),
                    description: (!f.reason.is_empty()).then(|| f.reason.to_string()),
                }));
                ctx.stop();
            }
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

/// `WebsocketContext` insists on decoding its own input; it is given one
/// that never yields (see [`endpoint`]), so this is never called.
impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, _: Result<ws::Message, ws::ProtocolError>, _: &mut Self::Context) {}
}
