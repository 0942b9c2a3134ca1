//! Health, the caller, quotes and WebSocket tickets.

use super::ApiError;
use crate::auth::Caller;
use crate::db::{repo, DbError};
use crate::domain::Symbol;
use crate::quote::{Known, WireQuote};
use crate::startup::AppState;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

/// Most symbols one `GET /api/v1/quotes` may ask for.
pub const MAX_QUOTE_SYMBOLS: usize = 100;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state
        .db
        .run(|c| repo::count_users(c).map(|_| ()))
        .await
        .map_err(|e| ApiError::Unavailable(format!("database not ready: {e}")))?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready", "database": state.db.backend()})))
}

pub async fn me(caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "id": caller.user.id,
        "name": caller.user.name,
        "is_admin": caller.user.is_admin,
        "token_id": caller.token_id,
    }))
}

#[derive(Deserialize)]
pub struct QuotesQuery {
    symbols: Option<String>,
}

/// Latest known quote of each symbol asked for, from the in-memory cache
/// (which holds every stored quote from start-up on); symbols never fetched
/// come back with `null` values.
pub async fn quotes(
    _caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<QuotesQuery>,
) -> Result<HttpResponse, ApiError> {
    let raw = query.symbols.as_deref().unwrap_or("");
    let symbols: Vec<Symbol> = raw
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Symbol::parse)
        .collect::<Result<_, _>>()?;
    if symbols.is_empty() {
        return Err(ApiError::Invalid(
            "symbols: give one or more, comma-separated".into(),
        ));
    }
    if symbols.len() > MAX_QUOTE_SYMBOLS {
        return Err(ApiError::Invalid(format!(
            "symbols: at most {MAX_QUOTE_SYMBOLS}"
        )));
    }
    let known = state.quotes.snapshot();
    let quotes: Vec<WireQuote<'_>> = symbols
        .iter()
        .map(|s| WireQuote::build(s, known.get(s).unwrap_or(&Known::Pending), None, None))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "quotes": quotes })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    watchlist_id: i64,
}

/// A single-use WebSocket ticket, checked against the watchlist now so a
/// browser learns "no access" from this answer rather than a failed socket.
pub async fn ws_ticket(
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Json<TicketRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = body.watchlist_id;
    let me = caller.user.id;
    state
        .db
        .run(move |c| {
            let w = repo::get_watchlist(c, id)?;
            if w.owner_id != me && !w.is_public {
                return Err(DbError::Forbidden);
            }
            Ok(())
        })
        .await
        .map_err(|e| match e {
            DbError::NotFound => ApiError::NotFound("no such watchlist".into()),
            DbError::Forbidden => ApiError::Forbidden("this watchlist is private".into()),
            other => other.into(),
        })?;
    let ticket = state
        .tickets
        .issue(caller.user, caller.token_id, id)
        .ok_or_else(|| ApiError::TooManySessions("too many outstanding tickets".into()))?;
    Ok(HttpResponse::Ok().json(json!({
        "ticket": ticket,
        "expires_in": state.tickets.ttl().as_secs_f64().ceil() as u64,
    })))
}
