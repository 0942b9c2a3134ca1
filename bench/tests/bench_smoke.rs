//! Smoke test of the load client (`quotecast-bench`): one small end-to-end
//! run against a quotecast it starts itself and against the ceiling
//! broadcaster, checking the report's structure and the invariants that
//! hold on any machine. Timings are not asserted: they belong to
//! docs/BENCHMARKS.md, measured on a quiet machine with release builds.

mod support;

use support::{assert_nothing_left, bench, delivery_ratio, num, runs};

const SESSIONS: u64 = 200;

#[test]
fn bench_measures_quotecast_and_the_ceiling_and_leaves_nothing_behind() {
    let rep = bench(&format!(
        "run --both --sessions {SESSIONS} --watchlists 4 --tick-ms 100 --warmup 1 --duration 2
         --concurrency 50"
    ));
    assert!(num(&rep, "machine.cpus") >= 1.0);
    assert!(num(&rep, "machine.fd_hard_limit") > 0.0);
    let (runs, targets) = runs(&rep);
    assert_eq!(targets, ["ceiling", "quotecast"]);

    for r in runs {
        let t = r["target"].as_str().unwrap();
        assert_eq!(r["shape"]["sessions"], SESSIONS, "{t}");
        assert_eq!(num(r, "connect.ok") as u64, SESSIONS, "{t}: {r:#}");
        assert_eq!(num(r, "connect.failed"), 0.0, "{t}");
        assert!(num(r, "connect.per_s") > 0.0, "{t}");
        assert!(num(r, "delivery.messages") > 0.0, "{t}: no quotes received");
        assert!(num(r, "delivery.msgs_per_s") > 0.0, "{t}");
        assert!(num(r, "delivery.bytes_per_s") > 0.0, "{t}");
        for f in ["p50_ms", "p99_ms", "p999_ms", "max_ms"] {
            assert!(num(r, &format!("delivery.latency.{f}")) >= 0.0, "{t}: {f}");
        }
        assert!(num(r, "delivery.latency.samples") > 0.0, "{t}");
        assert!(
            num(r, "delivery.latency.p50_ms") <= num(r, "delivery.latency.p99_ms")
                && num(r, "delivery.latency.p99_ms") <= num(r, "delivery.latency.max_ms"),
            "{t}: percentiles out of order"
        );
        assert_eq!(num(r, "delivery.seq_gaps"), 0.0, "{t}: seq gaps");
        assert_eq!(num(r, "delivery.duplicates"), 0.0, "{t}");
        assert_eq!(num(r, "delivery.unexpected_closes"), 0.0, "{t}");
        assert_eq!(num(r, "delivery.live_sessions") as u64, SESSIONS, "{t}");
        assert_eq!(num(r, "after_close.clean_closes") as u64, SESSIONS, "{t}");
        assert!(num(r, "server.rss_loaded") > 0.0, "{t}");
        assert!(num(r, "server.cpu_percent") >= 0.0, "{t}");
    }

    let q = &runs[1];
    assert_nothing_left(q, "quotecast");
    assert!(q["server"]["bytes_per_session"].is_number());

    delivery_ratio(&rep);
    let checks = rep["checks"].as_array().expect("checks");
    assert!(!checks.is_empty());
    for c in checks {
        assert_eq!(c["pass"], true, "check failed: {c}");
    }
}
