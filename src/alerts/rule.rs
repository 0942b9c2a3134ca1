//! What an alert is: its validated parts (condition, threshold, repeat mode,
//! re-arm margin, cooldown, note) and the one function that decides, from a
//! tick's price, whether it fires or re-arms ([`Trigger::decide`], on the
//! packed form of a [`Rule`] the evaluator walks).
//!
//! Semantics (the SPEC's "Price alerts", made exact):
//! * `above` / `below` fire when the price is at or above (at or below) the
//!   threshold at a tick; `change_pct_above` / `change_pct_below` the same
//!   on the quote's `change_percent`.
//! * `cross_above` / `cross_below` fire when the previous tick of the symbol
//!   was strictly on the other side. Without a previous tick (the first tick
//!   after a start, or of a new alert's symbol) they only arm.
//! * `once`: the alert is disabled when it fires. `rearm`: after firing it
//!   is `fired`, and becomes `armed` again only once the value has gone back
//!   past the threshold by the margin (strictly below `threshold - d` for the
//!   upward conditions, above `threshold + d` for the downward ones; `d` is
//!   `rearm_margin_pct` percent of the threshold for price conditions, and
//!   `rearm_margin_pct` percentage points for `change_pct_*`). An armed alert
//!   fires only if `cooldown_s` have passed since its last firing; while
//!   cooling down it stays armed. A price oscillating inside the margin
//!   therefore fires once.

use crate::domain::{BoundedText, DomainError};
use serde::Serialize;

fn invalid(field: &'static str, message: impl Into<String>) -> DomainError {
    DomainError {
        field,
        message: message.into(),
    }
}

/// What an alert watches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    Above,
    Below,
    CrossAbove,
    CrossBelow,
    ChangePctAbove,
    ChangePctBelow,
}

impl Condition {
    pub const ALL: [Condition; 6] = [
        Condition::Above,
        Condition::Below,
        Condition::CrossAbove,
        Condition::CrossBelow,
        Condition::ChangePctAbove,
        Condition::ChangePctBelow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Above => "above",
            Condition::Below => "below",
            Condition::CrossAbove => "cross_above",
            Condition::CrossBelow => "cross_below",
            Condition::ChangePctAbove => "change_pct_above",
            Condition::ChangePctBelow => "change_pct_below",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == raw)
            .ok_or_else(|| {
                invalid(
                    "condition",
                    "must be one of above, below, cross_above, cross_below, \
                     change_pct_above, change_pct_below",
                )
            })
    }

    /// Fires on the way up (else on the way down).
    pub fn upward(self) -> bool {
        matches!(
            self,
            Condition::Above | Condition::CrossAbove | Condition::ChangePctAbove
        )
    }

    /// Compares `change_percent` (else the price).
    pub fn on_change_pct(self) -> bool {
        matches!(self, Condition::ChangePctAbove | Condition::ChangePctBelow)
    }

    /// Needs the previous tick.
    pub fn crossing(self) -> bool {
        matches!(self, Condition::CrossAbove | Condition::CrossBelow)
    }
}

/// What happens after an alert fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Repeat {
    /// Disabled after firing.
    Once,
    /// Fires again after a return past the threshold by the margin.
    Rearm,
}

impl Repeat {
    pub fn as_str(self) -> &'static str {
        match self {
            Repeat::Once => "once",
            Repeat::Rearm => "rearm",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        match raw {
            "once" => Ok(Repeat::Once),
            "rearm" => Ok(Repeat::Rearm),
            _ => Err(invalid("repeat", "must be \"once\" or \"rearm\"")),
        }
    }
}

/// Whether an alert may fire now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Armed,
    Fired,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Armed => "armed",
            AlertState::Fired => "fired",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        match raw {
            "armed" => Ok(AlertState::Armed),
            "fired" => Ok(AlertState::Fired),
            _ => Err(invalid("state", "must be \"armed\" or \"fired\"")),
        }
    }
}

/// The value a condition compares with: a price (positive, at most 1e15)
/// or a change in percent (within ±1e6).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Threshold(f64);

impl Threshold {
    pub const MAX_PRICE: f64 = 1e15;
    pub const MAX_PCT: f64 = 1e6;

    pub fn parse(condition: Condition, value: f64) -> Result<Self, DomainError> {
        if !value.is_finite() {
            return Err(invalid("threshold", "must be a finite number"));
        }
        if condition.on_change_pct() {
            if value.abs() > Self::MAX_PCT {
                return Err(invalid("threshold", "must be within ±1000000 (percent)"));
            }
        } else if value <= 0.0 {
            return Err(invalid("threshold", "must be a price above 0"));
        } else if value > Self::MAX_PRICE {
            return Err(invalid("threshold", "is too large"));
        }
        Ok(Self(value + 0.0))
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

/// How far past the threshold a `rearm` alert's value must go back before
/// it re-arms: 0 to 100 (percent of the threshold, or percentage points
/// for `change_pct_*`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RearmMargin(f64);

impl RearmMargin {
    pub const DEFAULT: f64 = 0.5;

    pub fn parse(value: f64) -> Result<Self, DomainError> {
        if !value.is_finite() || !(0.0..=100.0).contains(&value) {
            return Err(invalid(
                "rearm_margin_pct",
                "must be a number from 0 to 100",
            ));
        }
        Ok(Self(value + 0.0))
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

/// Least time between two firings of a `rearm` alert: 0 to 30 days, in
/// seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cooldown(i64);

impl Cooldown {
    pub const MAX_S: i64 = 30 * 24 * 3600;

    pub fn parse(seconds: i64) -> Result<Self, DomainError> {
        if !(0..=Self::MAX_S).contains(&seconds) {
            return Err(invalid(
                "cooldown_s",
                format!(
                    "must be a whole number of seconds from 0 to {}",
                    Self::MAX_S
                ),
            ));
        }
        Ok(Self(seconds))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// The user's own words about an alert.
pub type Note = BoundedText<500>;

/// One symbol's values at a tick, as alerts compare them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub price: f64,
    pub change_pct: Option<f64>,
}

/// What an evaluation decided for one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Fire,
    Rearm,
}

/// What one tick's decision about a rule reads, in 32 bytes: the
/// evaluator walks every alert of every symbol in a round, and with 10,000
/// alerts what it costs is mostly how many cache lines that touches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trigger {
    pub threshold: f64,
    /// A fired `rearm` rule re-arms strictly beyond this (below it for the
    /// upward conditions, above it for the downward ones).
    pub rearm_at: f64,
    /// Microseconds since the epoch; `i64::MIN`: never fired.
    pub last_fired_at: i64,
    pub cooldown_s: u32,
    pub condition: Condition,
    pub repeat: Repeat,
    pub state: AlertState,
    /// Set by the evaluator while a decision about the rule is being
    /// stored: a busy trigger decides nothing.
    pub busy: bool,
}

impl Trigger {
    /// The value this trigger compares, if the sample has it.
    fn value(&self, s: Sample) -> Option<f64> {
        if self.condition.on_change_pct() {
            s.change_pct
        } else {
            Some(s.price)
        }
    }

    /// Decides what this tick means for the rule: `now` is the symbol's
    /// sample at this tick, `prev` at its previous tick (if known), `now_us`
    /// the time (microseconds since the epoch).
    pub fn decide(&self, now: Sample, prev: Option<Sample>, now_us: i64) -> Option<Decision> {
        if self.busy {
            return None;
        }
        let v = self.value(now)?;
        let t = self.threshold;
        let up = self.condition.upward();
        match self.state {
            AlertState::Armed => {
                let on_side = if up { v >= t } else { v <= t };
                let triggered = on_side
                    && (!self.condition.crossing()
                        || prev.and_then(|p| self.value(p)).is_some_and(|p| {
                            if up {
                                p < t
                            } else {
                                p > t
                            }
                        }));
                let cooled = self.last_fired_at == i64::MIN
                    || now_us.saturating_sub(self.last_fired_at)
                        >= i64::from(self.cooldown_s) * 1_000_000;
                (triggered && cooled).then_some(Decision::Fire)
            }
            AlertState::Fired if self.repeat == Repeat::Rearm => {
                let back = if up {
                    v < self.rearm_at
                } else {
                    v > self.rearm_at
                };
                back.then_some(Decision::Rearm)
            }
            AlertState::Fired => None,
        }
    }
}

/// The part of an alert the evaluator needs, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: i64,
    pub user_id: i64,
    /// The stored version this copy was read at (or last written at).
    pub version: i64,
    pub condition: Condition,
    pub threshold: f64,
    pub repeat: Repeat,
    pub margin: f64,
    pub cooldown_s: i64,
    pub webhook_url: Option<String>,
    pub state: AlertState,
    /// Microseconds since the epoch.
    pub last_fired_at: Option<i64>,
}

impl Rule {
    /// Reads a stored alert; `None` if a stored name no longer parses (a row
    /// edited by hand), which leaves the alert alone rather than guess.
    pub fn from_row(a: &crate::db::models::Alert) -> Option<Self> {
        Some(Self {
            id: a.id,
            user_id: a.user_id,
            version: a.version,
            condition: Condition::parse(&a.condition).ok()?,
            threshold: a.threshold,
            repeat: Repeat::parse(&a.repeat_mode).ok()?,
            margin: a.rearm_margin_pct,
            cooldown_s: a.cooldown_s,
            webhook_url: a.webhook_url.clone(),
            state: AlertState::parse(&a.state).ok()?,
            last_fired_at: a.last_fired_at,
        })
    }

    /// What a decision about this rule reads, packed.
    pub fn trigger(&self) -> Trigger {
        let t = self.threshold;
        let d = if self.condition.on_change_pct() {
            self.margin
        } else {
            t.abs() * self.margin / 100.0
        };
        Trigger {
            threshold: t,
            rearm_at: if self.condition.upward() {
                t - d
            } else {
                t + d
            },
            last_fired_at: self.last_fired_at.unwrap_or(i64::MIN),
            cooldown_s: u32::try_from(self.cooldown_s.max(0)).unwrap_or(u32::MAX),
            condition: self.condition,
            repeat: self.repeat,
            state: self.state,
            busy: false,
        }
    }

    /// Decides what this tick means for the rule (see [`Trigger::decide`]).
    pub fn decide(&self, now: Sample, prev: Option<Sample>, now_us: i64) -> Option<Decision> {
        self.trigger().decide(now, prev, now_us)
    }

    /// The state after a decision was stored.
    pub fn apply(&mut self, d: Decision, now_us: i64) {
        self.version += 1;
        match d {
            Decision::Fire => {
                self.state = AlertState::Fired;
                self.last_fired_at = Some(now_us);
            }
            Decision::Rearm => self.state = AlertState::Armed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn rule(condition: Condition, threshold: f64, repeat: Repeat) -> Rule {
        Rule {
            id: 1,
            user_id: 1,
            version: 0,
            condition,
            threshold,
            repeat,
            margin: 1.0,
            cooldown_s: 0,
            webhook_url: None,
            state: AlertState::Armed,
            last_fired_at: None,
        }
    }

    fn price(p: f64) -> Sample {
        Sample {
            price: p,
            change_pct: None,
        }
    }

    fn pct(c: f64) -> Sample {
        Sample {
            price: 100.0,
            change_pct: Some(c),
        }
    }

    /// Runs a rule over a series of samples, one tick a second, applying
    /// its decisions; the ticks (indexes) it fired at.
    fn fires(mut r: Rule, series: &[Sample]) -> Vec<usize> {
        let mut prev = None;
        let mut fired = Vec::new();
        for (i, s) in series.iter().enumerate() {
            let now = i as i64 * S;
            if let Some(d) = r.decide(*s, prev, now) {
                if d == Decision::Fire {
                    fired.push(i);
                }
                r.apply(d, now);
            }
            prev = Some(*s);
        }
        fired
    }

    fn prices(ps: &[f64]) -> Vec<Sample> {
        ps.iter().copied().map(price).collect()
    }

    #[test]
    fn level_conditions_fire_when_on_their_side() {
        let above = rule(Condition::Above, 100.0, Repeat::Once);
        assert_eq!(fires(above.clone(), &prices(&[90.0, 99.99, 100.0])), [2]);
        assert_eq!(fires(above.clone(), &prices(&[120.0])), [0], "at once");
        assert!(fires(above, &prices(&[90.0, 95.0])).is_empty());
        let below = rule(Condition::Below, 100.0, Repeat::Once);
        assert_eq!(fires(below.clone(), &prices(&[110.0, 100.5, 99.0])), [2]);
        assert!(fires(below, &prices(&[110.0, 100.01])).is_empty());
    }

    #[test]
    fn crossings_need_the_previous_tick_on_the_other_side() {
        let up = rule(Condition::CrossAbove, 100.0, Repeat::Once);
        // Already above at the first tick: no crossing seen, only armed.
        assert!(fires(up.clone(), &prices(&[110.0, 120.0])).is_empty());
        assert_eq!(fires(up.clone(), &prices(&[110.0, 90.0, 101.0])), [2]);
        // Touching the threshold from below counts; staying there does not.
        assert_eq!(fires(up, &prices(&[99.0, 100.0, 100.0])), [1]);
        let down = rule(Condition::CrossBelow, 100.0, Repeat::Once);
        assert!(fires(down.clone(), &prices(&[90.0, 80.0])).is_empty());
        assert_eq!(fires(down, &prices(&[90.0, 105.0, 95.0])), [2]);
    }

    #[test]
    fn change_pct_conditions_compare_change_percent() {
        let up = rule(Condition::ChangePctAbove, 5.0, Repeat::Once);
        assert_eq!(fires(up.clone(), &[pct(1.0), pct(4.9), pct(5.2)]), [2]);
        // No change known (no previous close): nothing to compare.
        let none = Sample {
            price: 1e9,
            change_pct: None,
        };
        assert!(fires(up, &[none, none]).is_empty());
        let down = rule(Condition::ChangePctBelow, -3.0, Repeat::Once);
        assert_eq!(fires(down, &[pct(0.0), pct(-2.0), pct(-3.5)]), [2]);
    }

    #[test]
    fn once_fires_a_single_time() {
        let r = rule(Condition::Above, 100.0, Repeat::Once);
        assert_eq!(fires(r, &prices(&[101.0, 90.0, 101.0, 90.0, 101.0])), [0]);
    }

    #[test]
    fn rearm_needs_a_return_past_the_margin() {
        // Margin 1%: re-armed strictly below 99.
        let r = rule(Condition::Above, 100.0, Repeat::Rearm);
        let flapping = prices(&[101.0, 99.5, 100.5, 99.0, 100.2, 99.9, 101.0]);
        assert_eq!(fires(r.clone(), &flapping), [0], "no flapping");
        let back = prices(&[101.0, 99.5, 98.9, 99.5, 100.0]);
        assert_eq!(fires(r, &back), [0, 4]);
        let mut down = rule(Condition::Below, 100.0, Repeat::Rearm);
        down.margin = 2.0;
        let series = prices(&[99.0, 101.0, 101.9, 99.0, 102.1, 100.0]);
        assert_eq!(fires(down, &series), [0, 5]);
        // For change_pct the margin is in points: 5% re-arms below 4%.
        let pct_rule = rule(Condition::ChangePctAbove, 5.0, Repeat::Rearm);
        let series = [pct(6.0), pct(4.5), pct(6.0), pct(3.9), pct(5.0)];
        assert_eq!(fires(pct_rule, &series), [0, 4]);
    }

    #[test]
    fn rearmed_crossings_fire_on_the_next_crossing() {
        let r = rule(Condition::CrossAbove, 100.0, Repeat::Rearm);
        let series = prices(&[90.0, 101.0, 99.5, 101.0, 98.0, 101.0]);
        assert_eq!(fires(r, &series), [1, 5]);
    }

    #[test]
    fn cooldown_holds_an_armed_alert_back() {
        let mut r = rule(Condition::Above, 100.0, Repeat::Rearm);
        r.cooldown_s = 3;
        // Ticks a second apart: fired at 0, re-armed at 1, above again at 2
        // but cooling until 3, when it fires again.
        let series = prices(&[101.0, 98.0, 101.0, 101.0, 101.0]);
        assert_eq!(fires(r, &series), [0, 3]);
    }

    #[test]
    fn triggers_are_small_and_busy_ones_decide_nothing() {
        assert_eq!(std::mem::size_of::<Trigger>(), 32);
        let r = rule(Condition::Above, 100.0, Repeat::Once);
        let mut t = r.trigger();
        assert_eq!(t.decide(price(101.0), None, 0), Some(Decision::Fire));
        t.busy = true;
        assert_eq!(t.decide(price(101.0), None, 0), None);
    }

    #[test]
    fn values_are_checked() {
        assert_eq!(
            Condition::parse("cross_above").unwrap(),
            Condition::CrossAbove
        );
        assert!(Condition::parse("sideways").is_err());
        assert!(Condition::parse("ABOVE").is_err());
        assert!(Repeat::parse("twice").is_err());
        assert!(Threshold::parse(Condition::Above, 0.0).is_err());
        assert!(Threshold::parse(Condition::Above, -1.0).is_err());
        assert!(Threshold::parse(Condition::Above, f64::NAN).is_err());
        assert!(Threshold::parse(Condition::Above, 1e16).is_err());
        assert!(Threshold::parse(Condition::ChangePctBelow, -5.0).is_ok());
        assert!(Threshold::parse(Condition::ChangePctAbove, 0.0).is_ok());
        assert!(Threshold::parse(Condition::ChangePctAbove, 2e6).is_err());
        assert!(RearmMargin::parse(-0.1).is_err());
        assert!(RearmMargin::parse(100.1).is_err());
        assert!(RearmMargin::parse(0.0).is_ok());
        assert!(Cooldown::parse(-1).is_err());
        assert!(Cooldown::parse(Cooldown::MAX_S + 1).is_err());
        assert_eq!(Cooldown::parse(60).unwrap().get(), 60);
        let e = Threshold::parse(Condition::Below, -1.0).unwrap_err();
        assert_eq!(e.field, "threshold");
    }
}
