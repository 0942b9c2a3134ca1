//! `GET /api/v1/quotes` (the latest quote of each symbol asked for) and
//! `GET /api/v1/quotes/{symbol}/intraday` (today's series of one symbol).
//!
//! A symbol nobody watches is fetched for the asker (batched with the
//! poller's next round, within the shared rate budget), waiting at most
//! `upstream.request_timeout_ms`; it is cached like any other afterwards but
//! not polled again unless someone watches it.

use super::ApiError;
use crate::auth::Caller;
use crate::domain::Symbol;
use crate::feed::QuoteMap;
use crate::quote::{Known, WireQuote};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Most symbols one `GET /api/v1/quotes` may ask for.
pub const MAX_QUOTE_SYMBOLS: usize = 50;

#[derive(Deserialize)]
pub struct QuotesQuery {
    symbols: Option<String>,
}

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
    let known = known_now(&state, &symbols).await;
    let quotes: Vec<WireQuote<'_>> = symbols
        .iter()
        .map(|s| WireQuote::build(s, known.get(s).unwrap_or(&Known::Pending), None, None))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "quotes": quotes })))
}

pub async fn intraday(
    _caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let symbol = Symbol::parse(&path)?;
    if !state.intraday.contains(&symbol) {
        known_now(&state, std::slice::from_ref(&symbol)).await;
    }
    let points = state.intraday.series(&symbol);
    Ok(HttpResponse::Ok().json(json!({ "symbol": symbol, "points": points })))
}

/// The cache, after asking for the symbols it does not know yet and waiting
/// (at most the upstream request timeout) for them to arrive.
async fn known_now(state: &AppState, symbols: &[Symbol]) -> Arc<QuoteMap> {
    let map = state.quotes.snapshot();
    let missing: Vec<Symbol> = symbols
        .iter()
        .filter(|s| matches!(map.get(*s), None | Some(Known::Pending)))
        .cloned()
        .collect();
    if missing.is_empty() {
        return map;
    }
    state.demand.fetch_once(missing.clone());
    let wait = Duration::from_millis(state.settings.upstream.request_timeout_ms);
    let deadline = tokio::time::Instant::now() + wait;
    state.quotes.wait_known(&missing, deadline).await
}
