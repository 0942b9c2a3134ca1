//! `POST /api/v1/ws-tickets`: single-use WebSocket credentials for browsers,
//! which cannot set headers on a WebSocket.

use super::json::Object;
use super::openapi::{Authenticated, JsonBody, ReadsWatchlist};
use super::watchlists::on_watchlist;
use super::{ApiError, ErrorBody};
use crate::access::Access;
use crate::auth::{Caller, Claim};
use crate::state::AppState;
use actix_web::{post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    /// The watchlist whose v1 socket the ticket opens; absent: a ticket for
    /// `GET /ws/v1`, whose subscriptions are checked one by one.
    #[serde(default, deserialize_with = "super::json::optional_integer")]
    #[schema(minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)]
    watchlist_id: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct Ticket {
    /// For `?ticket=` on the WebSocket upgrade; works once.
    pub ticket: String,
    /// Seconds until it expires unused.
    pub expires_in: u64,
}

/// A single-use ticket for a WebSocket upgrade (`?ticket=`).
///
/// Access is checked now, so a browser learns "no access" from this answer
/// rather than from a failed socket. `{}` asks for a ticket for `GET /ws/v1`.
#[utoipa::path(
    tag = "realtime",
    operation_id = "create_ws_ticket",
    security(("bearer" = [])),
    request_body = TicketRequest,
    responses(
        (status = 200, description = "The ticket.", body = Ticket),
        ReadsWatchlist,
        (status = 422, description = "`watchlist_id` is not an integer (`invalid_value`).",
            body = ErrorBody),
        (status = 429, description = "Too many tickets outstanding (`too_many_sessions`).",
            body = ErrorBody),
        JsonBody,
        Authenticated,
    ),
)]
#[post("/ws-tickets")]
pub async fn ws_ticket(
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<Object<TicketRequest>>,
) -> Result<web::Json<Ticket>, ApiError> {
    let Object(request) = body.into_inner();
    let id = request.watchlist_id;
    if let Some(id) = id {
        on_watchlist(&state, &caller, id, Access::Read, |_, _| Ok(())).await?;
    }
    let claim = Claim {
        user: caller.user,
        token_id: caller.token_id,
        watchlist_id: id,
    };
    let ticket = match state.tickets.issue(claim).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(ApiError::TooManySessions(
                "too many outstanding tickets".into(),
            ))
        }
        Err(e) => return Err(ApiError::Unavailable(format!("tickets unavailable: {e:?}"))),
    };
    Ok(web::Json(Ticket {
        ticket,
        expires_in: state.tickets.ttl().as_secs_f64().ceil() as u64,
    }))
}
