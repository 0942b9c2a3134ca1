//! `GET /api/v1/quotes`: the latest known quote of each symbol asked for.

use super::ApiError;
use crate::auth::Caller;
use crate::domain::Symbol;
use crate::quote::{Known, WireQuote};
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

/// Most symbols one `GET /api/v1/quotes` may ask for.
pub const MAX_QUOTE_SYMBOLS: usize = 100;

#[derive(Deserialize)]
pub struct QuotesQuery {
    symbols: Option<String>,
}

/// From the in-memory cache (which holds every stored quote from start-up
/// on); symbols never fetched come back with `null` values.
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
