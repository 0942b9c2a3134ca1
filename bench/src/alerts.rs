//! The `alerts` scenario: what price alerts add to a tick. quotecast (sim
//! provider, every symbol fetched every tick) gets 10,000 alerts on 500
//! symbols through the REST API (all six conditions, thresholds a little
//! off each symbol's price, `rearm` so some fire again and again), no
//! session at all; then the server's own histogram
//! `quotecast_alert_eval_seconds` (the in-memory evaluation of each round)
//! is read over the window. The budget is 1 ms a tick.

use super::{check, parse_env, progress, Opts};
use crate::report::ScenarioReport;
use crate::target::{ServerSetup, Target};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One histogram of the `/metrics` text: cumulative bucket counts by upper
/// bound, the sum and the count.
#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl Histogram {
    fn parse(text: &str, name: &str) -> Histogram {
        let mut h = Histogram::default();
        for line in text.lines().filter(|l| l.starts_with(name)) {
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            let rest = &key[name.len()..];
            if let Some(le) = rest
                .strip_prefix("_bucket{le=\"")
                .and_then(|r| r.strip_suffix("\"}"))
            {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                h.buckets.push((le, v));
            } else if rest == "_sum" {
                h.sum = v;
            } else if rest == "_count" {
                h.count = v;
            }
        }
        h
    }

    /// What was observed between `before` and `self`.
    fn since(&self, before: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(le, n)| {
                    let b = before
                        .buckets
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0.0, |x| x.1);
                    (*le, n - b)
                })
                .collect(),
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    /// The upper bound of the bucket holding quantile `q`.
    fn quantile_bound(&self, q: f64) -> Option<f64> {
        let want = q * self.count;
        self.buckets
            .iter()
            .find(|(_, n)| *n >= want && *n > 0.0)
            .map(|(le, _)| *le)
    }
}

fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn us(seconds: f64) -> String {
    if seconds.is_infinite() {
        "> 100 ms".into()
    } else {
        format!("{:.0} µs", seconds * 1e6)
    }
}

/// The alert bodies: alert `i` is on symbol `i mod symbols`, its condition
/// `(i / symbols) mod 6`, its threshold 0.25% to 5% off the price.
fn bodies(count: usize, names: &[String], prices: &HashMap<String, f64>) -> Vec<Value> {
    let conditions = [
        "above",
        "below",
        "cross_above",
        "cross_below",
        "change_pct_above",
        "change_pct_below",
    ];
    (0..count)
        .map(|i| {
            let symbol = &names[i % names.len()];
            let round = i / names.len();
            let condition = conditions[round % conditions.len()];
            let off = 0.25 * (1 + (round / conditions.len()) % 20) as f64;
            let price = prices.get(symbol).copied().unwrap_or(100.0);
            let threshold = match condition {
                "above" | "cross_above" => price * (1.0 + off / 100.0),
                "below" | "cross_below" => price * (1.0 - off / 100.0),
                "change_pct_above" => off,
                _ => -off,
            };
            json!({
                "symbol": symbol,
                "condition": condition,
                "threshold": (threshold * 100.0).round() / 100.0,
                "repeat": "rearm",
                "rearm_margin_pct": 0.5,
                "cooldown_s": 30,
            })
        })
        .collect()
}

pub async fn scenario(o: &Opts, rep: &mut ScenarioReport) -> Result<(), String> {
    if o.url.is_some() {
        return Err(
            "alerts: needs a server the bench starts (it reads its metrics); drop --url".into(),
        );
    }
    let count = o.alerts.unwrap_or(10_000);
    let symbols = o.distinct.unwrap_or(500).max(1);
    let tick_ms = o.tick_ms.unwrap_or(1000);
    let warmup = o.warmup.unwrap_or(5.0);
    let duration = o.duration.unwrap_or(60.0);
    let mut env = vec![(
        "QUOTECAST__LIMITS__MAX_ALERTS_PER_USER".to_owned(),
        (count + 10).to_string(),
    )];
    env.extend(parse_env(o)?);
    progress(format!(
        "quotecast: {count} alerts on {symbols} symbols, tick {tick_ms} ms, no sessions"
    ));
    let t = Target::start_quotecast(ServerSetup {
        bin: &o.server_bin,
        tick_ms,
        sessions: 0,
        watchlists: 0,
        symbols: 0,
        extra_env: env,
        forward_log: o.server_log,
        token: None,
    })
    .await?;

    let names: Vec<String> = (0..symbols).map(crate::target::symbol_name).collect();
    // Today's prices, so thresholds sit near them (50 symbols a request).
    let mut prices = HashMap::new();
    for chunk in names.chunks(50) {
        let path = format!("/api/v1/quotes?symbols={}", chunk.join(","));
        let (status, body) = t.call(reqwest::Method::GET, &path, None).await?;
        if status != 200 {
            return Err(format!("GET {path}: {status} {body}"));
        }
        for q in body["quotes"].as_array().into_iter().flatten() {
            if let (Some(s), Some(p)) = (q["symbol"].as_str(), q["price"].as_f64()) {
                prices.insert(s.to_owned(), p);
            }
        }
    }

    let started = Instant::now();
    let results: Vec<Result<(), String>> =
        futures_util::stream::iter(bodies(count, &names, &prices))
            .map(|body| {
                let t = &t;
                async move {
                    let (status, answer) = t
                        .call(reqwest::Method::POST, "/api/v1/alerts", Some(&body))
                        .await?;
                    if status == 201 {
                        Ok(())
                    } else {
                        Err(format!("POST /api/v1/alerts: {status} {answer}"))
                    }
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
    let created_s = started.elapsed().as_secs_f64();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        return Err(e.clone());
    }
    progress(format!(
        "  created {count} alerts in {created_s:.1} s ({:.0}/s)",
        count as f64 / created_s
    ));

    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    let before = t.metrics_text().await.ok_or("no /metrics")?;
    let stats_before = t.stats().await;
    tokio::time::sleep(Duration::from_secs_f64(duration)).await;
    let after = t.metrics_text().await.ok_or("no /metrics")?;
    let stats_after = t.stats().await;
    t.stop().await?;

    let name = "quotecast_alert_eval_seconds";
    let h = Histogram::parse(&after, name).since(&Histogram::parse(&before, name));
    let rounds = h.count;
    let mean = if rounds > 0.0 {
        h.sum / rounds
    } else {
        f64::NAN
    };
    let p50 = h.quantile_bound(0.5);
    let p99 = h.quantile_bound(0.99);
    let max = h.quantile_bound(1.0);
    let events = counter(&after, "quotecast_alert_events_total")
        - counter(&before, "quotecast_alert_events_total");
    let skipped = counter(&after, "quotecast_alert_rounds_skipped_total")
        - counter(&before, "quotecast_alert_rounds_skipped_total");
    let cycles = |s: &Option<Value>| s.as_ref().and_then(|s| s["upstream"]["cycles"].as_u64());
    let ticks = match (cycles(&stats_before), cycles(&stats_after)) {
        (Some(a), Some(b)) => (b - a) as f64,
        _ => f64::NAN,
    };
    let bound = |b: Option<f64>| b.map_or("-".into(), |v| format!("<= {}", us(v)));
    rep.checks.push(check(
        &format!("alert evaluation per round ({count} alerts, {symbols} symbols), p99"),
        "<= 1 ms",
        format!(
            "mean {}, p50 {}, p99 {}, max {} over {rounds:.0} rounds",
            us(mean),
            bound(p50),
            bound(p99),
            bound(max)
        ),
        rounds > 0.0 && p99.is_some_and(|v| v <= 0.001),
    ));
    rep.checks.push(check(
        "rounds evaluated vs full ticks (none skipped)",
        "every tick",
        format!("{rounds:.0} rounds over {ticks:.0} ticks, {skipped:.0} skipped"),
        rounds >= ticks && skipped == 0.0,
    ));
    let mut below = 0.0;
    let spread: Vec<String> = h
        .buckets
        .iter()
        .filter_map(|(le, n)| {
            let in_bucket = n - below;
            below = *n;
            (in_bucket > 0.0).then(|| format!("{}: {in_bucket:.0}", bound(Some(*le))))
        })
        .collect();
    rep.notes
        .push(format!("rounds by evaluation time: {}", spread.join(", ")));
    rep.notes.push(format!(
        "{count} alerts created through the API in {created_s:.1} s ({:.0}/s, 8 at a time, SQLite)",
        count as f64 / created_s
    ));
    rep.notes.push(format!(
        "{events:.0} events fired in the {duration:.0} s window (rearm, 30 s cooldown); \
         storing them is not part of the evaluation time"
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_read_from_the_exposition_format() {
        let before = "x_bucket{le=\"0.001\"} 1\nx_bucket{le=\"0.01\"} 2\nx_bucket{le=\"+Inf\"} 2\nx_sum 0.005\nx_count 2\n";
        let after = "x_bucket{le=\"0.001\"} 9\nx_bucket{le=\"0.01\"} 11\nx_bucket{le=\"+Inf\"} 12\nx_sum 0.105\nx_count 12\n";
        let h = Histogram::parse(after, "x").since(&Histogram::parse(before, "x"));
        assert_eq!(h.count, 10.0);
        assert!((h.sum - 0.1).abs() < 1e-12);
        assert_eq!(h.quantile_bound(0.5), Some(0.001));
        assert_eq!(h.quantile_bound(0.9), Some(0.01));
        assert_eq!(h.quantile_bound(1.0), Some(f64::INFINITY));
        assert_eq!(counter("a_total 3\nab_total 4\n", "ab_total"), 4.0);
    }
}
