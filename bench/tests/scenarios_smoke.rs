//! Smoke tests of the `multiplex`, `storm` and `cpu` scenarios: each runs at
//! a tiny scale against servers the bench starts, and the report must have
//! the structure the docs describe and the invariants that hold on any
//! machine (every session connected and back, no duplicates, nothing left
//! on the server). Timings and the targets' verdicts are not asserted: they
//! belong to docs/BENCHMARKS.md, measured on a quiet machine with release
//! builds.

mod support;

use serde_json::Value;
use support::{assert_nothing_left, assert_nums, bench, check_named, delivery_ratio, num, runs};

/// Gaps are allowed only where the server says it coalesced a lagging
/// session's messages (a loaded machine makes sessions lag), at most one
/// per dropped message; duplicates never.
fn assert_sequence_sound(r: &Value, what: &str) {
    assert_eq!(num(r, "delivery.duplicates"), 0.0, "{what}: duplicates");
    if r["target"] == "quotecast" {
        assert!(
            num(r, "delivery.seq_gaps") <= num(r, "server.messages_dropped_run"),
            "{what}: more seq gaps than dropped messages: {r:#}"
        );
    } else {
        assert_eq!(num(r, "delivery.seq_gaps"), 0.0, "{what}: ceiling gaps");
    }
}

#[test]
fn multiplex_alternates_both_shapes_on_one_server() {
    let rep = bench(
        "multiplex --sessions 10 --watchlists 5 --subscriptions 5 --tick-ms 100 --warmup 0.5
         --duration 1 --rounds 2",
    );
    let (runs, _) = runs(&rep);
    // ABBA: /ws/v1 first in even rounds.
    let subs: Vec<u64> = runs
        .iter()
        .map(|r| r["shape"]["subscriptions"].as_u64().unwrap())
        .collect();
    assert_eq!(subs, [5, 0, 0, 5]);
    for r in runs {
        let what = format!("subscriptions {}", r["shape"]["subscriptions"]);
        assert_eq!(r["target"], "quotecast", "{what}");
        let sockets = if r["shape"]["subscriptions"] == 5 {
            10
        } else {
            50
        };
        assert_eq!(r["shape"]["sessions"], sockets, "{what}");
        assert_eq!(num(r, "connect.ok"), sockets as f64, "{what}: {r:#}");
        assert_eq!(num(r, "connect.failed"), 0.0, "{what}");
        assert!(num(r, "delivery.messages") > 0.0, "{what}: no quotes");
        assert_eq!(num(r, "delivery.live_sessions"), sockets as f64, "{what}");
        assert_eq!(num(r, "delivery.unexpected_closes"), 0.0, "{what}");
        assert_sequence_sound(r, &what);
        assert_nothing_left(r, &what);
    }
    assert!(delivery_ratio(&rep)["what"]
        .as_str()
        .unwrap()
        .contains("/ws/v1"));
    for prefix in ["msgs/s, /ws/v1 vs v1", "p99 delivery latency, /ws/v1 vs v1"] {
        assert!(check_named(&rep, prefix)["pass"].is_boolean());
    }
}

#[test]
fn storm_drops_every_session_and_all_come_back() {
    let rep = bench(
        // The revocation sweep drops the sessions; no need to wait 5 s for it.
        "storm --sessions 100 --tick-ms 200 --warmup 0.5 --duration 1 --rss-watch 1 --rss-step 0.5
         --server-env QUOTECAST__REALTIME__AUTH_RECHECK_INTERVAL_MS=100",
    );
    let (runs, targets) = runs(&rep);
    assert_eq!(targets, ["ceiling", "quotecast"]);
    for r in runs {
        let t = r["target"].as_str().unwrap();
        assert_eq!(num(r, "connect.ok"), 100.0, "{t}: {r:#}");
        assert!(num(r, "connect.per_s") > 0.0, "{t}");
        let st = &r["storm"];
        assert_nums(
            st,
            &format!("{t}: storm"),
            &[
                ("sessions", 100.0),
                ("dropped", 100.0),
                ("reconnected", 100.0),
                ("failed", 0.0),
                ("pending", 0.0),
                ("reconnect_latency.samples", 100.0),
            ],
        );
        assert_eq!(st["close_codes"]["1008"], 100, "{t}: every drop is a 1008");
        assert!(num(st, "drop_window_s") >= 0.0, "{t}");
        assert!(num(st, "storm_s") >= num(st, "drop_window_s"), "{t}");
        assert!(num(st, "sessions_per_s") > 0.0, "{t}");
        assert!(num(st, "rss_peak") >= num(st, "rss_baseline"), "{t}");
        let trace = st["rss_after_close"].as_array().expect("rss_after_close");
        assert_eq!(trace.len(), 3, "{t}: samples at 0, 0.5 and 1 s: {trace:?}");
        assert!(
            trace
                .windows(2)
                .all(|w| w[0][0].as_f64() < w[1][0].as_f64()),
            "{t}: {trace:?}"
        );
        // After the storm every session is live and getting quotes again.
        assert_eq!(num(r, "delivery.live_sessions"), 100.0, "{t}");
        assert!(
            num(r, "delivery.messages") > 0.0,
            "{t}: no quotes after the storm"
        );
        assert_sequence_sound(r, t);
        assert_eq!(num(r, "after_close.clean_closes"), 100.0, "{t}");
        assert!(r["server"]["bytes_per_session"].is_number(), "{t}");
    }
    assert_nothing_left(&runs[1], "quotecast");
    for prefix in [
        "ceiling: sessions back after the storm",
        "quotecast: sessions back after the storm",
    ] {
        assert_eq!(check_named(&rep, prefix)["pass"], true, "{prefix}");
    }
    for prefix in [
        "quotecast RSS after all 100 sessions closed",
        "connects/s vs ceiling",
        "reconnect storm: drop to all sessions back",
    ] {
        assert!(check_named(&rep, prefix)["pass"].is_boolean(), "{prefix}");
    }
    let ratios = rep["ratios"].as_array().expect("ratios");
    assert_eq!(ratios.len(), 1);
    assert!(num(&ratios[0], "connects_per_s") > 0.0);
}

#[test]
fn cpu_reports_both_shapes_against_the_ceiling() {
    let rep = bench("cpu --sessions 50 --warmup 0.5 --duration 1.5");
    let (runs, _) = runs(&rep);
    let seen: Vec<(&str, u64)> = runs
        .iter()
        .map(|r| {
            (
                r["target"].as_str().unwrap(),
                r["shape"]["tick_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("ceiling", 100),
            ("quotecast", 100),
            ("ceiling", 1000),
            ("quotecast", 1000)
        ]
    );
    for r in runs {
        let t = format!("{} at {} ms", r["target"], r["shape"]["tick_ms"]);
        assert_eq!(num(r, "connect.ok"), 50.0, "{t}");
        assert!(num(r, "delivery.messages") > 0.0, "{t}");
        assert!(num(r, "server.cpu_us_per_msg") >= 0.0, "{t}: {r:#}");
        assert_sequence_sound(r, &t);
    }
    for label in ["50 sessions x 100 ms tick", "50 sessions x 1000 ms tick"] {
        let c = check_named(&rep, &format!("server CPU per delivered message, {label}"));
        assert!(c["measured"].as_str().unwrap().contains(" us vs "), "{c}");
    }
    let ratios = rep["ratios"].as_array().expect("ratios");
    assert_eq!(ratios.len(), 2);
    for r in ratios {
        assert_eq!(r["what"], "quotecast / ceiling");
        assert!(r.get("cpu_us_per_msg").is_some(), "{r}");
    }
}
