//! `GET /api/v1/quotes` (the latest quote of each symbol asked for) and
//! `GET /api/v1/quotes/{symbol}/intraday` (today's series of one symbol).
//!
//! A symbol nobody watches is fetched for the asker (batched with the
//! poller's next round, within the shared rate budget), waiting at most
//! `upstream.request_timeout_ms`; it is cached like any other afterwards but
//! not polled again unless someone watches it.

use super::openapi::{Authenticated, SymbolList};
use super::{ApiError, ErrorBody};
use crate::auth::Caller;
use crate::domain::Symbol;
use crate::feed::QuoteMap;
use crate::quote::{Known, Point, WireQuote};
use crate::state::AppState;
use actix_web::{get, web, HttpResponse};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// Most symbols one `GET /api/v1/quotes` may ask for.
pub const MAX_QUOTE_SYMBOLS: usize = 50;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QuotesQuery {
    /// Comma-separated symbols, 1 to 50 (blank entries are skipped).
    #[param(required = true, value_type = SymbolList, inline)]
    symbols: Option<String>,
}

/// The latest quote of each symbol asked for.
#[derive(Serialize, ToSchema)]
pub struct Quotes<'a> {
    /// In the order asked for.
    pub quotes: Vec<WireQuote<'a>>,
}

/// Today's price series of one symbol.
#[derive(Serialize, ToSchema)]
pub struct Intraday {
    pub symbol: Symbol,
    /// `[unix_seconds, price]`, oldest first.
    #[schema(value_type = Vec<(i64, f64)>)]
    pub points: Vec<Point>,
}

/// The latest known quote of each symbol.
///
/// A symbol nobody watches is fetched first, waiting at most
/// `upstream.request_timeout_ms`; one still unknown then has `null` prices.
#[utoipa::path(
    tag = "quotes",
    operation_id = "get_quotes",
    security(("bearer" = [])),
    params(QuotesQuery),
    responses(
        (status = 200, description = "One quote per symbol.", body = Quotes),
        (status = 400, description = "The query string does not parse (`bad_request`).",
            body = ErrorBody),
        (status = 422, description = "No symbols, more than 50, or one that is not a symbol \
            (`invalid_value`).", body = ErrorBody),
        Authenticated,
    ),
)]
#[get("/quotes")]
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
    Ok(HttpResponse::Ok().json(Quotes { quotes }))
}

/// Today's price series of one symbol.
///
/// The same series WebSocket snapshots carry with `intraday`: the
/// upstream's 5-minute points and the ticks seen since.
#[utoipa::path(
    tag = "quotes",
    operation_id = "get_intraday",
    security(("bearer" = [])),
    params(("symbol" = Symbol, Path)),
    responses(
        (status = 200, description = "The series; empty when nothing is known yet.",
            body = Intraday),
        (status = 422, description = "Not a symbol (`invalid_value`).", body = ErrorBody),
        Authenticated,
    ),
)]
#[get("/quotes/{symbol}/intraday")]
pub async fn intraday(
    _caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<web::Json<Intraday>, ApiError> {
    let symbol = Symbol::parse(&path)?;
    if !state.intraday.contains(&symbol) {
        known_now(&state, std::slice::from_ref(&symbol)).await;
    }
    let points = state.intraday.series(&symbol);
    Ok(web::Json(Intraday { symbol, points }))
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
