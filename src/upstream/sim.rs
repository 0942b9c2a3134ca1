//! The simulated provider (`upstream.provider = "sim"`, the default): no
//! network, deterministic prices.
//!
//! Each symbol follows its own seeded random walk: the n-th fetch of a symbol
//! always gives the same price, whatever else is fetched. A small catalog
//! gives common Tokyo and US symbols real names, currencies and price levels;
//! any other valid symbol gets a plausible synthetic series. Symbols starting
//! with `ZZZZ` are treated as unknown, like Yahoo's answer for a symbol that
//! does not exist, so the unknown-symbol path can be exercised without Yahoo.

use super::{QuoteProvider, UpstreamError};
use crate::domain::Symbol;
use crate::quote::{Fetched, MarketQuote, Point, MARKET_REGULAR};
use chrono::Utc;
use futures_util::future::{self, BoxFuture};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// (symbol, name, currency, reference price)
const CATALOG: &[(&str, &str, &str, f64)] = &[
    ("7203.T", "Toyota Motor Corporation", "JPY", 2850.0),
    ("6758.T", "Sony Group Corporation", "JPY", 3350.0),
    ("9984.T", "SoftBank Group Corp.", "JPY", 9200.0),
    (
        "9432.T",
        "Nippon Telegraph and Telephone Corporation",
        "JPY",
        152.0,
    ),
    (
        "8306.T",
        "Mitsubishi UFJ Financial Group, Inc.",
        "JPY",
        1780.0,
    ),
    ("6861.T", "Keyence Corporation", "JPY", 64000.0),
    ("7974.T", "Nintendo Co., Ltd.", "JPY", 9800.0),
    ("^N225", "Nikkei 225", "JPY", 38500.0),
    ("AAPL", "Apple Inc.", "USD", 228.0),
    ("MSFT", "Microsoft Corporation", "USD", 421.0),
    ("GOOGL", "Alphabet Inc.", "USD", 172.0),
    ("AMZN", "Amazon.com, Inc.", "USD", 186.0),
    ("NVDA", "NVIDIA Corporation", "USD", 121.0),
    ("TSLA", "Tesla, Inc.", "USD", 248.0),
    ("META", "Meta Platforms, Inc.", "USD", 522.0),
    ("^GSPC", "S&P 500", "USD", 5630.0),
];

/// The simulated day so far, in 5-minute bars: six hours' worth.
const BACKFILL_BARS: u64 = 72;
const BAR_S: i64 = 300;

/// Prefix of symbols the simulator calls unknown.
pub const UNKNOWN_PREFIX: &str = "ZZZZ";

struct Walk {
    seed: u64,
    step: u64,
    price: f64,
    previous_close: f64,
    volume: i64,
}

/// The simulated provider.
#[derive(Clone, Default)]
pub struct SimProvider {
    walks: Arc<Mutex<HashMap<Symbol, Walk>>>,
}

/// FNV-1a: stable across runs and platforms, unlike `DefaultHasher`.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// splitmix64: a tiny, good-enough generator for a reproducible walk.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// Uniform in [0, 1) from a seed and step.
fn unit(seed: u64, step: u64, salt: u64) -> f64 {
    (mix(seed ^ mix(step.wrapping_mul(31).wrapping_add(salt))) >> 11) as f64 / (1u64 << 53) as f64
}

impl SimProvider {
    pub fn new() -> Self {
        Self::default()
    }

    fn catalog(symbol: &Symbol) -> Option<(&'static str, &'static str, f64)> {
        CATALOG
            .iter()
            .find(|(s, ..)| *s == symbol.as_str())
            .map(|(_, n, c, p)| (*n, *c, *p))
    }

    fn decimals(currency: &str) -> i32 {
        if currency == "JPY" {
            1
        } else {
            2
        }
    }

    /// Today so far, for a symbol seen for the first time: [`BACKFILL_BARS`]
    /// 5-minute points up to the last 5-minute mark, walking back from
    /// `open` (deterministic, like the walk itself).
    fn backfill(seed: u64, open: f64, factor: f64, now: i64) -> Vec<Point> {
        let last_mark = now.div_euclid(BAR_S) * BAR_S;
        let mut price = open;
        let mut points: Vec<Point> = (0..BACKFILL_BARS)
            .map(|k| {
                let at = last_mark - k as i64 * BAR_S;
                let point = (at, price);
                let size = 0.0005 + unit(seed, k, 12) * 0.002;
                let up = unit(seed, k, 13) < 0.5;
                price =
                    (price * if up { 1.0 + size } else { 1.0 - size } * factor).round() / factor;
                point
            })
            .collect();
        points.reverse();
        points
    }

    /// Advances one symbol's walk by one step and reports it.
    fn step(&self, symbol: &Symbol) -> Option<Fetched> {
        if symbol.as_str().starts_with(UNKNOWN_PREFIX) {
            return None;
        }
        let (name, currency, base) = match Self::catalog(symbol) {
            Some((n, c, p)) => (n.to_owned(), c, p),
            None => {
                let seed = fnv(symbol.as_str());
                let currency = if symbol.as_str().ends_with(".T") {
                    "JPY"
                } else {
                    "USD"
                };
                // Synthetic level: 10 to ~5000, log-uniform.
                let base = 10f64 * 500f64.powf(unit(seed, 0, 7));
                (format!("{} (simulated)", symbol.as_str()), currency, base)
            }
        };
        let factor = 10f64.powi(Self::decimals(currency));
        let mut walks = self.walks.lock().unwrap_or_else(|p| p.into_inner());
        let first = !walks.contains_key(symbol);
        let w = walks.entry(symbol.clone()).or_insert_with(|| {
            let seed = fnv(symbol.as_str());
            let open = (base * (1.0 + (unit(seed, 0, 1) - 0.5) * 0.02) * factor).round() / factor;
            Walk {
                seed,
                step: 0,
                price: open,
                previous_close: (base * factor).round() / factor,
                volume: (unit(seed, 0, 2) * 1_000_000.0) as i64 + 10_000,
            }
        });
        w.step += 1;
        // A move of 0.02% to 0.3%, up or down; at least one price tick so the
        // dashboard visibly moves every tick.
        let size = 0.0002 + unit(w.seed, w.step, 3) * 0.0028;
        let up =
            unit(w.seed, w.step, 4) < 0.5 + (w.previous_close - w.price) / w.previous_close * 5.0;
        let delta = (w.price * size * factor).round().max(1.0) / factor;
        w.price = ((w.price + if up { delta } else { -delta }) * factor).round() / factor;
        if w.price <= 0.0 {
            w.price = 1.0 / factor;
        }
        w.volume += (unit(w.seed, w.step, 5) * 5_000.0) as i64 + 100;
        let now = Utc::now();
        let intraday = if first {
            Self::backfill(w.seed, w.price, factor, now.timestamp())
        } else {
            Vec::new()
        };
        let quote = MarketQuote {
            symbol: symbol.clone(),
            name: Some(name),
            price: Some(w.price),
            previous_close: Some(w.previous_close),
            volume: Some(w.volume),
            currency: Some(currency.to_owned()),
            market_state: Some(MARKET_REGULAR.to_owned()),
            market_time: Some(now),
        };
        Some(Fetched { quote, intraday })
    }
}

impl QuoteProvider for SimProvider {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn rate_limited(&self) -> bool {
        false
    }

    fn fetch_batch(
        &self,
        symbols: Vec<Symbol>,
    ) -> BoxFuture<'static, Result<Vec<Fetched>, UpstreamError>> {
        let quotes = symbols.iter().filter_map(|s| self.step(s)).collect();
        Box::pin(future::ready(Ok(quotes)))
    }

    fn fetch_one(
        &self,
        symbol: Symbol,
    ) -> BoxFuture<'static, Result<Option<Fetched>, UpstreamError>> {
        Box::pin(future::ready(Ok(self.step(&symbol))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Symbol {
        Symbol::parse(s).unwrap()
    }

    fn prices(p: &SimProvider, s: &str, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| p.step(&sym(s)).unwrap().quote.price.unwrap())
            .collect()
    }

    #[test]
    fn walks_are_deterministic_per_symbol() {
        let a = SimProvider::new();
        let b = SimProvider::new();
        // Interleaving other symbols does not change a symbol's series.
        let _ = prices(&b, "MSFT", 3);
        assert_eq!(prices(&a, "7203.T", 20), prices(&b, "7203.T", 20));
    }

    #[test]
    fn prices_change_every_step_and_stay_plausible() {
        let p = SimProvider::new();
        let series = prices(&p, "AAPL", 500);
        for w in series.windows(2) {
            assert_ne!(w[0], w[1]);
        }
        assert!(
            series.iter().all(|x| *x > 150.0 && *x < 320.0),
            "{series:?}"
        );
    }

    #[test]
    fn catalog_and_synthetic_symbols() {
        let p = SimProvider::new();
        let q = p.step(&sym("7203.T")).unwrap().quote;
        assert_eq!(q.name.as_deref(), Some("Toyota Motor Corporation"));
        assert_eq!(q.currency.as_deref(), Some("JPY"));
        let q = p.step(&sym("QQQX")).unwrap().quote;
        assert_eq!(q.currency.as_deref(), Some("USD"));
        assert!(q.price.unwrap() >= 5.0);
        assert!(p.step(&sym("ZZZZ")).is_none());
    }

    #[test]
    fn first_fetch_brings_a_plausible_morning() {
        let p = SimProvider::new();
        let first = p.step(&sym("AAPL")).unwrap();
        let bars = &first.intraday;
        assert_eq!(bars.len() as u64, BACKFILL_BARS);
        assert!(bars.windows(2).all(|w| w[1].0 - w[0].0 == BAR_S));
        assert!(bars
            .iter()
            .all(|(_, price)| *price > 150.0 && *price < 320.0));
        assert!(p.step(&sym("AAPL")).unwrap().intraday.is_empty());
    }
}
