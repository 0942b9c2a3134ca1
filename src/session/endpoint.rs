//! `GET /ws/v1/watchlists/{id}`: every refusal (401, 403, 404, 429, 503) is
//! decided here, before the upgrade, and answered with the JSON error body,
//! so a client can tell "retry" from "give up".

use super::frames::{Limits, Messages};
use super::relay::RelayHandle;
use super::table::{LimitError, NewSession};
use super::{SessionDeps, WsSession};
use crate::access::{self, Access};
use crate::api::ApiError;
use crate::auth::{self, AuthError, Caller, TicketError};
use crate::db::repo;
use crate::net::ConnSocket;
use crate::protocol;
use crate::state::AppState;
use crate::worker::ItemView;
use actix::AsyncContext;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use futures_util::stream;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
pub struct WsQuery {
    ticket: Option<String>,
}

/// Who is connecting, before the database has been asked.
enum Credentials {
    /// From a ticket, checked when it was issued.
    Checked(Caller),
    /// A bearer token, to look up.
    Bearer(String),
}

pub async fn connect(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<WsQuery>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let watchlist_id: i64 = path
        .parse()
        .map_err(|_| ApiError::NotFound("no such watchlist".into()))?;

    // Credentials: a single-use ticket, else the Authorization header.
    let creds = match (&query.ticket, auth::bearer_token(&req)?) {
        (Some(ticket), _) => match state.tickets.consume(ticket, watchlist_id) {
            Ok(t) => Credentials::Checked(Caller {
                user: t.user,
                token_id: t.token_id,
            }),
            Err(TicketError::Invalid) => {
                return Err(ApiError::Unauthorized(
                    "invalid, used or expired ticket".into(),
                ))
            }
            Err(TicketError::WrongWatchlist) => {
                return Err(ApiError::Forbidden(
                    "ticket was issued for another watchlist".into(),
                ))
            }
        },
        (None, Some(token)) => Credentials::Bearer(token),
        (None, None) => return Err(AuthError::Missing.into()),
    };

    // One trip to the database for the token, the watchlist and its items:
    // each trip is a hand-off to the blocking pool and back, and connects
    // come in bursts.
    let (Caller { user, token_id }, items) = state
        .db
        .run(move |c| {
            let caller = match creds {
                Credentials::Checked(caller) => caller,
                Credentials::Bearer(token) => auth::lookup(c, &token)?,
            };
            access::load(c, watchlist_id, caller.user.id, Access::Read)?;
            Ok::<_, ApiError>((caller, repo::get_items(c, watchlist_id)?))
        })
        .await?;

    // Refuse before the upgrade when the server is shutting down.
    if state.is_shutting_down() {
        return Err(ApiError::Unavailable("server is shutting down".into()));
    }

    let socket = req.conn_data::<ConnSocket>().copied();
    let guard = state
        .sessions
        .reserve(NewSession {
            user_id: user.id,
            user: user.name.clone(),
            token_id,
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

    // Each HTTP worker thread has its relay (see `startup`).
    let relay = req
        .app_data::<web::Data<RelayHandle>>()
        .map(|r| r.get_ref().clone())
        .ok_or_else(|| ApiError::Internal("no relay on this thread".into()))?;
    let items: Vec<ItemView> = items.iter().filter_map(ItemView::from_row).collect();
    let rules = state.session_rules;
    let session = WsSession::new(
        guard,
        watchlist_id,
        Arc::new(items),
        SessionDeps {
            table: state.sessions.clone(),
            supervisor: state.supervisor.clone(),
            relay,
            metrics: state.metrics.clone(),
            rules,
        },
    );
    let limits = Limits {
        max_message_bytes: rules.max_message_bytes,
        max_fragments: protocol::MAX_FRAGMENTS,
    };
    let mut response = ws::handshake(&req)
        .map_err(|e| ApiError::BadRequest(format!("not a WebSocket upgrade: {e}")))?;
    // The context's own decoder buffers a whole frame before it checks its
    // size; it gets an input that never yields, and the socket goes to
    // `frames::Messages` instead. The context still writes the frames out.
    let outbound = ws::WebsocketContext::with_factory(stream::pending(), move |ctx| {
        ctx.add_stream(Messages::new(payload, limits));
        session
    });
    Ok(response.streaming(outbound))
}
