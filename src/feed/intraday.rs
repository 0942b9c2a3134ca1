//! Today's price series per symbol ([`IntradayStore`]): the upstream's own
//! 5-minute points (Yahoo's spark and chart answers carry them; the
//! simulator makes up a plausible morning) plus the ticks seen since.
//!
//! Bounded per symbol: ticks are kept at most one a minute (a later tick in
//! the same minute replaces the earlier one), and a series never holds more
//! than [`MAX_POINTS`] points (the oldest go first). New upstream points
//! replace the old ones, so yesterday's go when today's arrive.

use crate::domain::Symbol;
use crate::quote::Point;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, PoisonError, RwLock};

/// Most points kept per symbol: a whole trading day at one a minute (6.5 h
/// is 390) with the upstream's 5-minute points before it.
pub const MAX_POINTS: usize = 600;

/// Ticks closer together than this share one point.
const TICK_BUCKET_S: i64 = 60;

#[derive(Default)]
struct Series {
    /// The upstream's points, oldest first.
    bars: Arc<[Point]>,
    /// Ticks after the last bar, oldest first, one per minute.
    ticks: VecDeque<Point>,
}

impl Series {
    fn last_bar_time(&self) -> i64 {
        self.bars.last().map_or(i64::MIN, |p| p.0)
    }

    /// Drops the oldest points past [`MAX_POINTS`] (bars come before ticks).
    fn trim(&mut self) {
        let over = (self.bars.len() + self.ticks.len()).saturating_sub(MAX_POINTS);
        if over == 0 {
            return;
        }
        let from_bars = over.min(self.bars.len());
        if from_bars > 0 {
            self.bars = self.bars[from_bars..].into();
        }
        self.ticks.drain(..over - from_bars);
    }
}

/// Series of every symbol seen. Cheap to clone.
#[derive(Clone, Default)]
pub struct IntradayStore {
    inner: Arc<RwLock<HashMap<Symbol, Series>>>,
}

impl IntradayStore {
    // One map update per call; a panic elsewhere cannot leave it half done.
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Symbol, Series>> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The upstream's points for a symbol, replacing the previous ones;
    /// ticks at or before the last of them are now covered by it.
    pub fn set_bars(&self, symbol: &Symbol, bars: Arc<[Point]>) {
        let mut map = self.write();
        let s = map.entry(symbol.clone()).or_default();
        s.bars = bars;
        let last = s.last_bar_time();
        s.ticks.retain(|p| p.0 > last);
        s.trim();
    }

    /// A tick's price at `at` (unix seconds). Out-of-order or non-finite
    /// ticks are ignored.
    pub fn add_tick(&self, symbol: &Symbol, at: i64, price: f64) {
        if !price.is_finite() {
            return;
        }
        let mut map = self.write();
        let s = map.entry(symbol.clone()).or_default();
        if at <= s.last_bar_time() {
            return;
        }
        match s.ticks.back_mut() {
            Some(last) if at < last.0 => return,
            Some(last) if at.div_euclid(TICK_BUCKET_S) == last.0.div_euclid(TICK_BUCKET_S) => {
                *last = (at, price);
            }
            _ => s.ticks.push_back((at, price)),
        }
        s.trim();
    }

    /// The whole series, oldest first (empty for a symbol never seen).
    pub fn series(&self, symbol: &Symbol) -> Vec<Point> {
        let map = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        map.get(symbol)
            .map(|s| s.bars.iter().chain(s.ticks.iter()).copied().collect())
            .unwrap_or_default()
    }

    pub fn contains(&self, symbol: &Symbol) -> bool {
        let map = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        map.contains_key(symbol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym() -> Symbol {
        Symbol::parse("AAPL").unwrap()
    }

    #[test]
    fn bars_then_ticks_one_a_minute_in_order() {
        let store = IntradayStore::default();
        store.set_bars(&sym(), vec![(0, 1.0), (300, 2.0)].into());
        store.add_tick(&sym(), 200, 9.0); // covered by a bar
        store.add_tick(&sym(), 360, 3.0);
        store.add_tick(&sym(), 390, 3.5); // same minute: replaces
        store.add_tick(&sym(), 350, 7.0); // out of order
        store.add_tick(&sym(), 420, f64::NAN);
        store.add_tick(&sym(), 430, 4.0);
        assert_eq!(
            store.series(&sym()),
            vec![(0, 1.0), (300, 2.0), (390, 3.5), (430, 4.0)]
        );
        // New bars cover the ticks before their end.
        store.set_bars(&sym(), vec![(300, 2.0), (400, 3.6)].into());
        assert_eq!(
            store.series(&sym()),
            vec![(300, 2.0), (400, 3.6), (430, 4.0)]
        );
    }

    #[test]
    fn a_series_is_bounded() {
        let store = IntradayStore::default();
        let bars: Vec<Point> = (0..100).map(|i| (i * 300, i as f64)).collect();
        store.set_bars(&sym(), bars.into());
        for i in 0..10_000 {
            store.add_tick(&sym(), 100_000 + i * 60, i as f64);
        }
        let s = store.series(&sym());
        assert_eq!(s.len(), MAX_POINTS);
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(s.last(), Some(&(100_000 + 9_999 * 60, 9_999.0)));
    }
}
