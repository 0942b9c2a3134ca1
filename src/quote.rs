//! Quote data as it flows from the upstream to the wire.
//!
//! [`MarketQuote`] is what a provider reports for one symbol. [`WireQuote`] is the
//! SPEC's Quote object: market data plus the watchlist item's position and the
//! derived change and P/L fields.

use crate::domain::Symbol;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};
use std::sync::Arc;

/// Market state names used on the wire. Providers map their own values onto
/// these; anything not open counts as closed for polling purposes.
pub const MARKET_REGULAR: &str = "REGULAR";
pub const MARKET_CLOSED: &str = "CLOSED";

/// One symbol's latest market data, as a provider reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketQuote {
    pub symbol: Symbol,
    pub name: Option<String>,
    pub price: Option<f64>,
    pub previous_close: Option<f64>,
    pub volume: Option<i64>,
    pub currency: Option<String>,
    /// `REGULAR`, `CLOSED`, `PRE`, `POST`, ... (provider's own value where it has one).
    pub market_state: Option<String>,
    #[serde(serialize_with = "ser_time", default)]
    pub market_time: Option<DateTime<Utc>>,
}

impl MarketQuote {
    /// True when the market for this symbol is known to be closed; such symbols
    /// are polled at the slow interval.
    pub fn market_closed(&self) -> bool {
        matches!(self.market_state.as_deref(), Some(s) if s != MARKET_REGULAR && s != "PRE" && s != "POST" && s != "PREPRE" && s != "POSTPOST")
    }

    pub fn change(&self) -> Option<f64> {
        Some(self.price? - self.previous_close?)
    }

    pub fn change_percent(&self) -> Option<f64> {
        let prev = self.previous_close?;
        if prev == 0.0 {
            return None;
        }
        Some(self.change()? / prev * 100.0)
    }
}

/// What a provider reports for one symbol: its quote, and today's points
/// where the answer carries them (oldest first).
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub quote: MarketQuote,
    pub intraday: Vec<Point>,
}

impl From<MarketQuote> for Fetched {
    fn from(quote: MarketQuote) -> Self {
        Fetched {
            quote,
            intraday: Vec::new(),
        }
    }
}

/// What is known of a symbol right now.
///
/// A quote is shared, not copied: the round that fetched it, the cache and
/// every worker watching the symbol hold the same one, so a worker keeping
/// it or comparing it with the next round's costs a reference count, not
/// four strings (every item of every watchlist, every tick).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", content = "quote", rename_all = "snake_case")]
pub enum Known {
    /// Not fetched yet (or only stored from before a restart but absent).
    Pending,
    /// The upstream says the symbol does not exist.
    Unknown,
    Quote(Arc<MarketQuote>),
}

impl Known {
    pub fn quote(q: MarketQuote) -> Self {
        Self::Quote(Arc::new(q))
    }
}

impl PartialEq for Known {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Pending, Self::Pending) | (Self::Unknown, Self::Unknown) => true,
            // The same quote (unchanged since the last round) needs no look
            // inside; a new one with the same values is still equal.
            (Self::Quote(a), Self::Quote(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        }
    }
}

/// One point of an intraday series: (unix seconds, price).
pub type Point = (i64, f64);

/// The SPEC's Quote object. Unknown values are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = Quote)]
pub struct WireQuote<'a> {
    pub symbol: &'a str,
    #[schema(required = true)]
    pub name: Option<&'a str>,
    #[schema(required = true)]
    pub price: Option<f64>,
    #[schema(required = true)]
    pub previous_close: Option<f64>,
    #[schema(required = true)]
    pub change: Option<f64>,
    #[schema(required = true)]
    pub change_percent: Option<f64>,
    #[schema(required = true)]
    pub volume: Option<i64>,
    #[schema(required = true)]
    pub currency: Option<&'a str>,
    #[schema(required = true)]
    pub market_state: Option<&'a str>,
    /// RFC 3339, UTC.
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub market_time: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub quantity: Option<f64>,
    #[schema(required = true)]
    pub purchase_price: Option<f64>,
    #[schema(required = true)]
    pub unrealized_pl: Option<f64>,
    /// `unknown_symbol` when the upstream does not know the symbol.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// Today's series, in snapshots asked for with `intraday`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<(i64, f64)>>)]
    pub intraday: Option<&'a [Point]>,
}

impl<'a> WireQuote<'a> {
    pub fn build(
        symbol: &'a Symbol,
        known: &'a Known,
        quantity: Option<f64>,
        purchase_price: Option<f64>,
    ) -> Self {
        let (q, error) = match known {
            Known::Quote(q) => (Some(&**q), None),
            Known::Unknown => (None, Some("unknown_symbol")),
            Known::Pending => (None, None),
        };
        let price = q.and_then(|q| q.price);
        Self {
            symbol: symbol.as_str(),
            name: q.and_then(|q| q.name.as_deref()),
            price,
            previous_close: q.and_then(|q| q.previous_close),
            change: q.and_then(MarketQuote::change),
            change_percent: q.and_then(MarketQuote::change_percent),
            volume: q.and_then(|q| q.volume),
            currency: q.and_then(|q| q.currency.as_deref()),
            market_state: q.and_then(|q| q.market_state.as_deref()),
            market_time: q.and_then(|q| q.market_time),
            quantity,
            purchase_price,
            unrealized_pl: unrealized_pl(price, quantity, purchase_price),
            error,
            intraday: None,
        }
    }
}

/// Portfolio totals of one currency (the `totals` of `snapshot` and
/// `quotes`), over the watchlist's positions (items with a quantity) whose
/// currency is known. Each sum covers the positions whose inputs are known;
/// a sum no position contributes to is `null`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Total {
    pub currency: String,
    /// Σ price × quantity.
    pub market_value: Option<f64>,
    /// Σ purchase price × quantity.
    pub cost: Option<f64>,
    /// Σ (price − purchase price) × quantity.
    pub unrealized_pl: Option<f64>,
    /// Σ (price − previous close) × quantity.
    pub day_change: Option<f64>,
}

/// One position as the totals need it.
pub struct Position<'a> {
    pub quantity: Option<f64>,
    pub purchase_price: Option<f64>,
    pub known: &'a Known,
}

/// Totals per currency, in currency order.
pub fn totals<'a>(positions: impl IntoIterator<Item = Position<'a>>) -> Vec<Total> {
    fn add(sum: &mut Option<f64>, x: Option<f64>) {
        if let Some(x) = x {
            *sum = Some(sum.unwrap_or(0.0) + x);
        }
    }
    let mut by_currency: std::collections::BTreeMap<&str, Total> = Default::default();
    for p in positions {
        let (Some(qty), Known::Quote(q)) = (p.quantity, p.known) else {
            continue;
        };
        let Some(currency) = q.currency.as_deref() else {
            continue;
        };
        let t = by_currency.entry(currency).or_insert_with(|| Total {
            currency: currency.to_owned(),
            market_value: None,
            cost: None,
            unrealized_pl: None,
            day_change: None,
        });
        add(&mut t.market_value, q.price.map(|p| p * qty));
        add(&mut t.cost, p.purchase_price.map(|c| c * qty));
        add(
            &mut t.unrealized_pl,
            unrealized_pl(q.price, Some(qty), p.purchase_price),
        );
        add(&mut t.day_change, q.change().map(|c| c * qty));
    }
    by_currency.into_values().collect()
}

/// (price - purchase_price) * quantity, when all three are known.
pub fn unrealized_pl(
    price: Option<f64>,
    quantity: Option<f64>,
    purchase: Option<f64>,
) -> Option<f64> {
    Some((price? - purchase?) * quantity?)
}

/// RFC 3339 UTC with microseconds, as the SPEC's `ts` example shows.
pub fn format_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn ser_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(price: f64, prev: f64) -> MarketQuote {
        MarketQuote {
            symbol: Symbol::parse("7203.T").unwrap(),
            name: Some("Toyota".into()),
            price: Some(price),
            previous_close: Some(prev),
            volume: Some(10),
            currency: Some("JPY".into()),
            market_state: Some(MARKET_REGULAR.into()),
            market_time: None,
        }
    }

    #[test]
    fn a_shared_quote_equals_itself_and_a_copy_of_it() {
        let a = Known::quote(quote(2500.0, 2400.0));
        assert_eq!(a, a.clone(), "the same quote");
        assert_eq!(a, Known::quote(quote(2500.0, 2400.0)), "equal values");
        assert_ne!(a, Known::quote(quote(2501.0, 2400.0)));
        assert_ne!(a, Known::Pending);
        assert_ne!(Known::Unknown, Known::Pending);
        assert_eq!(Known::Unknown, Known::Unknown);
        // Shared, the quote keeps the wire shape it had as a plain value.
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({"state": "quote", "quote": serde_json::to_value(quote(2500.0, 2400.0)).unwrap()})
        );
    }

    #[test]
    fn pl_and_change_are_derived() {
        let q = Known::quote(quote(2500.0, 2400.0));
        let sym = Symbol::parse("7203.T").unwrap();
        let w = WireQuote::build(&sym, &q, Some(100.0), Some(2400.0));
        assert_eq!(w.change, Some(100.0));
        assert!((w.change_percent.unwrap() - 4.1666666).abs() < 1e-6);
        assert_eq!(w.unrealized_pl, Some(10000.0));
        let w = WireQuote::build(&sym, &q, None, Some(2400.0));
        assert_eq!(w.unrealized_pl, None);
    }

    #[test]
    fn totals_are_per_currency_over_known_inputs() {
        let toyota = Known::quote(quote(2500.0, 2400.0));
        let mut apple = quote(200.0, 190.0);
        apple.currency = Some("USD".into());
        let apple = Known::quote(apple);
        let pending = Known::Pending;
        let t = totals([
            Position {
                quantity: Some(100.0),
                purchase_price: Some(2000.0),
                known: &toyota,
            },
            Position {
                quantity: Some(10.0),
                purchase_price: None,
                known: &toyota,
            },
            Position {
                quantity: None,
                purchase_price: Some(1.0),
                known: &toyota,
            },
            Position {
                quantity: Some(2.0),
                purchase_price: Some(150.0),
                known: &apple,
            },
            Position {
                quantity: Some(5.0),
                purchase_price: Some(1.0),
                known: &pending,
            },
        ]);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].currency, "JPY");
        assert_eq!(t[0].market_value, Some(2500.0 * 110.0));
        assert_eq!(t[0].cost, Some(200_000.0));
        assert_eq!(t[0].unrealized_pl, Some(50_000.0));
        assert_eq!(t[0].day_change, Some(100.0 * 110.0));
        assert_eq!(t[1].currency, "USD");
        assert_eq!(t[1].unrealized_pl, Some(100.0));
        assert!(totals([Position {
            quantity: Some(1.0),
            purchase_price: None,
            known: &pending
        }])
        .is_empty());
    }

    #[test]
    fn unknown_symbols_carry_the_error_and_null_prices() {
        let sym = Symbol::parse("ZZZZ").unwrap();
        let json =
            serde_json::to_value(WireQuote::build(&sym, &Known::Unknown, Some(1.0), None)).unwrap();
        assert_eq!(json["error"], "unknown_symbol");
        assert!(json["price"].is_null());
        let json =
            serde_json::to_value(WireQuote::build(&sym, &Known::Pending, None, None)).unwrap();
        assert!(json.get("error").is_none());
    }
}
