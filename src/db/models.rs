//! Rows as read from the database (plain nouns) and as written (`New*`).

use super::schema::*;
use crate::domain::Symbol;
use crate::quote::{Known, MarketQuote};
use diesel::prelude::*;

#[derive(
    Debug, Clone, Queryable, Selectable, Identifiable, serde::Serialize, serde::Deserialize,
)]
#[diesel(table_name = users)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub is_admin: bool,
    pub created_at: i64,
}

#[derive(Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub name: &'a str,
    pub is_admin: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = api_tokens)]
pub struct ApiToken {
    pub id: i64,
    pub user_id: i64,
    pub token_hash: String,
    pub label: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Insertable)]
#[diesel(table_name = api_tokens)]
pub struct NewApiToken<'a> {
    pub user_id: i64,
    pub token_hash: &'a str,
    pub label: Option<&'a str>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = watchlists)]
pub struct Watchlist {
    pub id: i64,
    pub owner_id: i64,
    pub name: String,
    pub description: String,
    pub is_public: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Insertable)]
#[diesel(table_name = watchlists)]
pub struct NewWatchlist<'a> {
    pub owner_id: i64,
    pub name: &'a str,
    pub description: &'a str,
    pub is_public: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = watchlist_items)]
pub struct Item {
    pub id: i64,
    pub watchlist_id: i64,
    pub symbol: String,
    pub quantity: Option<f64>,
    pub purchase_price: Option<f64>,
    pub memo: String,
    pub position: i64,
    pub added_at: i64,
}

#[derive(Insertable)]
#[diesel(table_name = watchlist_items)]
pub struct NewItem<'a> {
    pub watchlist_id: i64,
    pub symbol: &'a str,
    pub quantity: Option<f64>,
    pub purchase_price: Option<f64>,
    pub memo: &'a str,
    pub position: i64,
    pub added_at: i64,
}

/// The latest known quote of one symbol, kept so that snapshots after a
/// restart are instant.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = latest_quotes)]
#[diesel(treat_none_as_null = true)]
pub struct StoredQuote {
    pub symbol: String,
    pub is_unknown: bool,
    pub name: Option<String>,
    pub price: Option<f64>,
    pub previous_close: Option<f64>,
    pub volume: Option<i64>,
    pub currency: Option<String>,
    pub market_state: Option<String>,
    pub market_time: Option<i64>,
    pub updated_at: i64,
}

impl StoredQuote {
    /// The stored form of a symbol's state; nothing to store while pending.
    pub fn from_known(symbol: &Symbol, known: &Known, updated_at: i64) -> Option<Self> {
        let empty = |is_unknown| StoredQuote {
            symbol: symbol.to_string(),
            is_unknown,
            name: None,
            price: None,
            previous_close: None,
            volume: None,
            currency: None,
            market_state: None,
            market_time: None,
            updated_at,
        };
        match known {
            Known::Pending => None,
            Known::Unknown => Some(empty(true)),
            Known::Quote(q) => Some(StoredQuote {
                name: q.name.clone(),
                price: q.price,
                previous_close: q.previous_close,
                volume: q.volume,
                currency: q.currency.clone(),
                market_state: q.market_state.clone(),
                market_time: q.market_time.map(|t| t.timestamp_micros()),
                ..empty(false)
            }),
        }
    }

    /// Back to the in-memory state. A row whose symbol no longer parses
    /// (edited by hand) is skipped rather than trusted.
    pub fn into_known(self) -> Option<(Symbol, Known)> {
        let symbol = Symbol::parse(&self.symbol).ok()?;
        if self.is_unknown {
            return Some((symbol, Known::Unknown));
        }
        let q = MarketQuote {
            symbol: symbol.clone(),
            name: self.name,
            price: self.price,
            previous_close: self.previous_close,
            volume: self.volume,
            currency: self.currency,
            market_state: self.market_state,
            market_time: self.market_time.map(super::from_micros),
        };
        Some((symbol, Known::quote(q)))
    }
}

// ---- price alerts -----------------------------------------------------------

/// A price alert rule. `condition`, `repeat_mode` and `state` hold the
/// names of [`crate::alerts::rule`]'s enums; `version` grows with every
/// change, and state changes are conditional on it.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = alerts)]
pub struct Alert {
    pub id: i64,
    pub user_id: i64,
    pub symbol: String,
    pub condition: String,
    pub threshold: f64,
    pub repeat_mode: String,
    pub rearm_margin_pct: f64,
    pub cooldown_s: i64,
    pub webhook_url: Option<String>,
    pub note: String,
    pub enabled: bool,
    pub state: String,
    pub version: i64,
    pub last_fired_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = alerts)]
pub struct NewAlert<'a> {
    pub user_id: i64,
    pub symbol: &'a str,
    pub condition: &'a str,
    pub threshold: f64,
    pub repeat_mode: &'a str,
    pub rearm_margin_pct: f64,
    pub cooldown_s: i64,
    pub webhook_url: Option<&'a str>,
    pub note: &'a str,
    pub enabled: bool,
    pub state: &'a str,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One firing of an alert, as stored before it is delivered; also the
/// webhook outbox entry when `webhook_status` is set.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = alert_events)]
pub struct AlertEvent {
    pub id: i64,
    pub alert_id: i64,
    pub user_id: i64,
    pub symbol: String,
    pub condition: String,
    pub threshold: f64,
    pub price: f64,
    pub change_percent: Option<f64>,
    pub fired_at: i64,
    pub tick: i64,
    pub webhook_url: Option<String>,
    pub webhook_status: Option<String>,
    pub webhook_attempts: i64,
    pub webhook_next_at: Option<i64>,
    pub webhook_last_error: Option<String>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = alert_events)]
pub struct NewAlertEvent<'a> {
    pub alert_id: i64,
    pub user_id: i64,
    pub symbol: &'a str,
    pub condition: &'a str,
    pub threshold: f64,
    pub price: f64,
    pub change_percent: Option<f64>,
    pub fired_at: i64,
    pub tick: i64,
    pub webhook_url: Option<&'a str>,
    pub webhook_status: Option<&'a str>,
    pub webhook_next_at: Option<i64>,
}
