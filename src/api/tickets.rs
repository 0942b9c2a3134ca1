//! `POST /api/v1/ws-tickets`: single-use WebSocket credentials for browsers,
//! which cannot set headers on a WebSocket.

use super::ApiError;
use crate::access::{self, Access};
use crate::auth::Caller;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    /// The watchlist whose v1 socket the ticket opens; absent: a ticket for
    /// `GET /ws/v1`, whose subscriptions are checked one by one.
    watchlist_id: Option<i64>,
}

/// Access is checked now, so a browser learns "no access" from this answer
/// rather than from a failed socket. `{}` asks for a ticket for `GET /ws/v1`.
pub async fn ws_ticket(
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<TicketRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = body.watchlist_id;
    let me = caller.user.id;
    if let Some(id) = id {
        state
            .db
            .run(move |c| access::load(c, id, me, Access::Read).map(drop))
            .await?;
    }
    let ticket = match state.tickets.issue(caller.user, caller.token_id, id).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(ApiError::TooManySessions(
                "too many outstanding tickets".into(),
            ))
        }
        Err(e) => return Err(ApiError::Unavailable(format!("tickets unavailable: {e:?}"))),
    };
    Ok(HttpResponse::Ok().json(json!({
        "ticket": ticket,
        "expires_in": state.tickets.ttl().as_secs_f64().ceil() as u64,
    })))
}
