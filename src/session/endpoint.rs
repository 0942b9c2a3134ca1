//! The two WebSocket endpoints, `GET /ws/v1/watchlists/{id}` and
//! `GET /ws/v1`: every refusal (400, 401, 403, 404, 429, 503) is decided
//! here, before the upgrade, and answered with the JSON error body, so a
//! client can tell "retry" from "give up".

use super::admission;
use super::frames::Limits;
use super::lookups::{Credentials, Found, Lookup};
use super::outbox::Outbox;
use super::table::{LimitError, NewSession};
use super::transport::{PendingSession, ViaUpgrade};
use super::{Endpoint, FirstSubscription, SessionDeps, WsSession};
use crate::api::ApiError;
use crate::auth::{self, AuthError, Caller, TicketError};
use crate::net::ConnSocket;
use crate::protocol::{self, Since};
use crate::state::AppState;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct WsQuery {
    ticket: Option<String>,
    /// v1 recovery: `EPOCH:SEQ` of the last message the client got.
    since: Option<String>,
    /// v1: snapshots with intraday series (`1` or `true`).
    intraday: Option<String>,
}

impl Credentials {
    /// A single-use ticket, else the Authorization header. A ticket issued
    /// for one watchlist opens only that watchlist's v1 socket.
    async fn of(
        req: &HttpRequest,
        state: &AppState,
        query: &WsQuery,
        watchlist: Option<i64>,
    ) -> Result<Self, ApiError> {
        match (&query.ticket, auth::bearer_token(req)?) {
            (Some(ticket), _) => match state.tickets.consume(ticket.clone(), watchlist).await {
                Ok(t) => Ok(Credentials::Checked(Caller {
                    user: t.user,
                    token_id: t.token_id,
                })),
                Err(TicketError::Invalid) => Err(ApiError::Unauthorized(
                    "invalid, used or expired ticket".into(),
                )),
                Err(TicketError::WrongWatchlist) => Err(ApiError::Forbidden(
                    "ticket was issued for another watchlist".into(),
                )),
                Err(TicketError::Unavailable(e)) => {
                    Err(ApiError::Unavailable(format!("tickets unavailable: {e}")))
                }
            },
            (None, Some(token)) => Ok(Credentials::Bearer(token)),
            (None, None) => Err(AuthError::Missing.into()),
        }
    }
}

/// `GET /ws/v1/watchlists/{id}`: a socket on one watchlist.
pub async fn connect_watchlist(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<WsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    admit(&req, &state)?;
    let watchlist_id: i64 = path
        .parse()
        .map_err(|_| ApiError::NotFound("no such watchlist".into()))?;
    let since = match query.since.as_deref() {
        None => None,
        Some(raw) => Some(Since::parse_query(raw).ok_or_else(|| {
            ApiError::BadRequest(
                "since: expected EPOCH:SEQ (from a snapshot or quotes message)".into(),
            )
        })?),
    };
    let intraday = flag(query.intraday.as_deref())?;
    let creds = Credentials::of(&req, &state, &query, Some(watchlist_id)).await?;

    // The token, the watchlist and its items, in a trip shared with the
    // upgrades arriving at the same time (see `lookups`).
    let Found { caller, items } = state
        .lookups
        .find(Lookup {
            credentials: creds,
            watchlist: Some(watchlist_id),
        })
        .await?;
    let first = FirstSubscription {
        watchlist_id,
        items,
        since,
        intraday,
    };
    start(&req, &state, caller, Endpoint::Watchlist(first)).await
}

/// `GET /ws/v1`: a socket that subscribes to watchlists by message.
pub async fn connect_multi(
    req: HttpRequest,
    query: web::Query<WsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    admit(&req, &state)?;
    if query.since.is_some() || query.intraday.is_some() {
        return Err(ApiError::BadRequest(
            "since and intraday go with each subscribe message on /ws/v1".into(),
        ));
    }
    let creds = Credentials::of(&req, &state, &query, None).await?;
    let Found { caller, .. } = state
        .lookups
        .find(Lookup {
            credentials: creds,
            watchlist: None,
        })
        .await?;
    start(&req, &state, caller, Endpoint::Multi).await
}

/// The checks before any other (see [`super::admission`]): the page's origin
/// and the client address's connect rate.
fn admit(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    if !admission::origin_allowed(req, &state.settings.server.allowed_origins) {
        return Err(ApiError::Forbidden(
            "WebSocket from a page of another origin".into(),
        ));
    }
    if let Some(peer) = req.peer_addr() {
        state
            .connects
            .check(peer.ip())
            .map_err(|retry_after| ApiError::RateLimited {
                message: "too many connects from this address; retry later".into(),
                retry_after,
            })?;
    }
    Ok(())
}

/// A query flag: absent, `0`/`false` or `1`/`true`.
fn flag(raw: Option<&str>) -> Result<bool, ApiError> {
    match raw {
        None | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "expected 1 or 0, got {other:?}"
        ))),
    }
}

/// The checks every upgrade shares (shutdown, limits), then the upgrade.
async fn start(
    req: &HttpRequest,
    state: &AppState,
    caller: Caller,
    endpoint: Endpoint,
) -> Result<HttpResponse, ApiError> {
    // Refuse before the upgrade when the server is shutting down.
    if state.is_shutting_down() {
        return Err(ApiError::Unavailable("server is shutting down".into()));
    }
    let watchlist_id = match &endpoint {
        Endpoint::Watchlist(first) => Some(first.watchlist_id),
        Endpoint::Multi => None,
    };
    let socket = req.conn_data::<ConnSocket>().copied();
    let guard = state
        .sessions
        .reserve(NewSession {
            user_id: caller.user.id,
            user: caller.user.name.clone(),
            token_id: caller.token_id,
            watchlist_id,
            peer: req.peer_addr(),
            socket,
        })
        .map_err(|e| match e {
            LimitError::ServerFull => {
                ApiError::Unavailable("session limit of the server reached".into())
            }
            LimitError::UserFull => {
                ApiError::TooManySessions("too many sessions for this user".into())
            }
        })?;
    // In cluster mode the user's limit counts sessions on every instance.
    if let Some(parts) = &state.cluster {
        let max = state.settings.limits.max_sessions_per_user;
        match parts.nodes.reserve(caller.user.id, guard.id, max).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(ApiError::TooManySessions(
                    "too many sessions for this user".into(),
                ))
            }
            Err(e) => return Err(ApiError::Unavailable(format!("cluster unavailable: {e}"))),
        }
    }

    // Each HTTP worker thread has its relay, and its sessions share one
    // set of handles to the rest of the service (see `startup`).
    let deps = req
        .app_data::<web::Data<SessionDeps>>()
        .map(|d| d.clone().into_inner())
        .ok_or_else(|| ApiError::Internal("no session handles on this thread".into()))?;
    let rules = deps.rules;
    let limits = Limits {
        max_message_bytes: rules.max_message_bytes,
        max_fragments: protocol::MAX_FRAGMENTS,
    };
    let mut response = handshake(req)?.finish();
    let out = Outbox::new(rules.queue, guard.stats.clone());
    let guard = std::sync::Arc::new(guard);
    let session = WsSession::new(guard.clone(), caller.user.id, endpoint, out.clone(), deps);
    // The connection starts the actor once the 101 is written (see
    // `transport`): it reads the client's messages (paused while its
    // outbox is backlogged) and the connection writes the outbox.
    response
        .extensions_mut()
        .insert(PendingSession::new(session, out, guard, limits));
    Ok(response)
}

/// The 101, if this is a WebSocket upgrade that the connection can hand
/// over (see [`ViaUpgrade`]).
fn handshake(req: &HttpRequest) -> Result<actix_web::HttpResponseBuilder, ApiError> {
    let response = ws::handshake(req)
        .map_err(|e| ApiError::BadRequest(format!("not a WebSocket upgrade: {e}")))?;
    if req.extensions().get::<ViaUpgrade>().is_none() {
        // actix-http hands over only requests whose Upgrade header is
        // exactly `websocket`; actix-web-actors accepts any that contains it.
        return Err(ApiError::BadRequest(
            "not a WebSocket upgrade: the Upgrade header must be websocket".into(),
        ));
    }
    Ok(response)
}
