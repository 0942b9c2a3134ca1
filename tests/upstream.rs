//! The yahoo provider and the shared fetcher against a local fake Yahoo
//! that speaks the real wire format: coalescing, batching, unknown
//! symbols, both answer shapes, faults and backoff, the rate limiter,
//! market-aware polling and restart behaviour.

mod support;

use futures_util::future::join_all;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use support::fake_yahoo::{Endpoint, FakeYahoo, Fault, RequestRecord};
use support::{eventually, items, quote, Api, TestApp, Ws, DEADLINE, POLL};

/// A test app on the yahoo provider pointed at `fake`, with a fast tick and
/// short backoff.
async fn app_with(
    fake: &FakeYahoo,
    tweak: impl FnOnce(&mut quotecast::config::Settings),
) -> TestApp {
    TestApp::on_fake_yahoo(fake, |s| {
        s.upstream.poll_interval_ms = 200;
        s.upstream.backoff_max_ms = 1000;
        s.limits.max_watchlists_per_user = 1000;
        s.limits.max_sessions_per_user = 10_000;
        support::relaxed_liveness(s);
        tweak(s);
    })
    .await
}

/// Alice watching one symbol over one socket: the set-up many tests share.
async fn watching(app: &TestApp, symbol: &str) -> (String, i64, Ws) {
    let alice = app.user("alice");
    let id = app.private_watchlist(&alice, items(&[symbol])).await;
    let ws = app.ws(id, &alice).await;
    (alice, id, ws)
}

/// A fake Yahoo, an app on it (adjusted by `tweak`) and alice watching
/// `symbol` over one socket, which has had its first `quotes` (returned too).
async fn flowing(
    symbol: &str,
    tweak: impl FnOnce(&mut quotecast::config::Settings),
) -> (FakeYahoo, TestApp, Ws, Value) {
    let fake = FakeYahoo::start();
    let app = app_with(&fake, tweak).await;
    let (_, _, mut ws) = watching(&app, symbol).await;
    let first = ws.wait_type("quotes").await;
    (fake, app, ws, first)
}

fn spark_requests(fake: &FakeYahoo) -> Vec<RequestRecord> {
    fake.requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::Spark)
        .collect()
}

/// Groups requests into ticks: requests of one tick are close together, and
/// ticks are a poll interval apart.
fn ticks(records: &[RequestRecord], gap: Duration) -> Vec<Vec<RequestRecord>> {
    let mut out: Vec<Vec<RequestRecord>> = Vec::new();
    for r in records {
        match out.last_mut() {
            Some(t) if r.received_at.duration_since(t.last().unwrap().received_at) < gap => {
                t.push(r.clone())
            }
            _ => out.push(vec![r.clone()]),
        }
    }
    out
}

/// Waits for a condition on the fake while reading the socket, so the
/// client keeps answering the server's pings (a client that stops reading is
/// dropped as silent, and its worker with it).
async fn reading_until(ws: &mut Ws, fake: &FakeYahoo, cond: impl Fn(&FakeYahoo) -> bool) -> bool {
    support::poll(DEADLINE, Duration::ZERO, async || {
        cond(fake) || {
            let _ = ws.next_event(POLL).await;
            false
        }
    })
    .await
    .is_ok()
}

async fn wait_status(ws: &mut Ws, upstream: &str) -> Value {
    ws.wait_for(&format!("status {upstream}"), |v| {
        v["type"] == "status" && v["upstream"] == upstream
    })
    .await
}

/// 50 watchlists x 10 sessions over 30 distinct symbols, batch 20: exactly
/// two spark requests per tick, none above 20 symbols, each symbol once.
#[actix_web::test]
async fn coalesced_fetching_two_requests_per_tick() {
    let fake = FakeYahoo::start();
    // Ticks a second apart, grouped by gaps of half a second: a tick the
    // loaded CI machine runs late by up to half a tick still stands alone.
    let app = app_with(&fake, |s| s.upstream.poll_interval_ms = 1000).await;
    let alice = app.user("alice");
    let universe: Vec<String> = (0..30).map(|i| format!("C{i:02}.T")).collect();
    let mut ids = Vec::new();
    for w in 0..50 {
        let mine: Vec<String> = (0..10)
            .map(|k| universe[(w * 3 + k) % 30].clone())
            .collect();
        ids.push(
            app.watchlist(&alice, &format!("W{w}"), false, items(&mine))
                .await,
        );
    }
    let mut sockets: Vec<Ws> = Vec::new();
    for chunk in ids.chunks(10) {
        let batch = join_all(
            chunk
                .iter()
                .flat_map(|&id| (0..10).map(move |_| id))
                .map(|id| app.ws(id, &alice)),
        )
        .await;
        sockets.extend(batch);
    }
    let stats = app.wait_counts(500, 50).await;
    assert_eq!(stats["watched_symbols"], 30);
    // Steady state: forget the set-up traffic, then watch a few ticks.
    fake.reset_counters();
    let cycles = app.cycles().await;
    app.wait_cycles(cycles + 7).await;
    let records = spark_requests(&fake);
    let groups = ticks(&records, Duration::from_millis(500));
    assert!(groups.len() >= 3, "{groups:?}");
    // The first and last group may be cut by the window.
    let full: Vec<_> = groups[1..groups.len() - 1].to_vec();
    assert!(full.len() >= 4, "{} ticks", full.len());
    for t in &full {
        assert_eq!(t.len(), 2, "spark requests in one tick: {t:?}");
        let symbols: Vec<&String> = t.iter().flat_map(|r| r.symbols.iter()).collect();
        let distinct: HashSet<&String> = symbols.iter().copied().collect();
        assert_eq!(symbols.len(), 30, "each symbol once per tick");
        assert_eq!(distinct.len(), 30);
    }
    assert!(fake.max_spark_symbols() <= 20);
    assert_eq!(
        fake.chart_requests(),
        0,
        "no fallbacks when every symbol is answered"
    );
    // Every session got prices.
    for ws in sockets.iter_mut().step_by(37) {
        let q = ws.wait_type("quotes").await;
        assert!(q["quotes"][0]["price"].is_f64(), "{q}");
    }
    join_all(sockets.into_iter().map(Ws::close)).await;
    app.wait_counts(0, 0).await;
}

/// A smaller batch size is respected too.
#[actix_web::test]
async fn batch_size_is_respected() {
    let fake = FakeYahoo::start();
    // Ticks far apart compared with one tick's requests, so the requests
    // group into ticks by time without doubt.
    let app = app_with(&fake, |s| {
        s.upstream.batch_size = 7;
        s.upstream.poll_interval_ms = 600;
    })
    .await;
    let alice = app.user("alice");
    let symbols: Vec<String> = (0..30).map(|i| format!("B{i}")).collect();
    let id = app.private_watchlist(&alice, items(&symbols)).await;
    let mut ws = app.ws(id, &alice).await;
    ws.wait_type("quotes").await;
    let cycles = app.cycles().await;
    fake.reset_counters();
    // A cycle already under way at the reset counts when it ends, with its
    // requests (some or all) forgotten: one more makes three whole ticks.
    app.wait_cycles(cycles + 4).await;
    assert!(
        fake.max_spark_symbols() <= 7,
        "{}",
        fake.max_spark_symbols()
    );
    let groups = ticks(&spark_requests(&fake), Duration::from_millis(300));
    assert!(groups.len() >= 3, "{groups:?}");
    for t in &groups[1..groups.len() - 1] {
        assert_eq!(t.len(), 5, "ceil(30 / 7) requests per tick");
    }
    ws.close().await;
}

/// An unknown symbol yields `unknown_symbol`, and its chart fallback is not
/// repeated every tick.
#[actix_web::test]
async fn unknown_symbol_is_checked_once() {
    let fake = FakeYahoo::start();
    let app = app_with(&fake, |_| {}).await;
    let alice = app.user("alice");
    let id = app
        .private_watchlist(
            &alice,
            json!([{"symbol": "7203.T", "quantity": 1, "purchase_price": 1}, {"symbol": "ZZZZ"}]),
        )
        .await;
    let mut ws = app.ws(id, &alice).await;
    let q = ws
        .wait_for("unknown_symbol", |v| {
            v["quotes"]
                .as_array()
                .is_some_and(|qs| qs.iter().any(|q| q["error"] == "unknown_symbol"))
        })
        .await;
    let z = quote(&q, "ZZZZ");
    assert_eq!(z["price"], Value::Null);
    let cycles = app.cycles().await;
    app.wait_cycles(cycles + 5).await;
    let charts: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::Chart)
        .collect();
    assert_eq!(
        charts.len(),
        1,
        "one chart fallback, not one per tick: {charts:?}"
    );
    assert_eq!(charts[0].symbols, vec!["ZZZZ".to_string()]);
    // Later spark requests leave the unknown symbol out.
    let last = spark_requests(&fake).pop().unwrap();
    assert_eq!(last.symbols, vec!["7203.T".to_string()]);
    // The request looked like a browser's and accepted compression.
    assert!(last.user_agent.unwrap_or_default().contains("Mozilla"));
    assert!(last.accept_encoding.unwrap_or_default().contains("gzip"));
    ws.close().await;
}

/// The legacy flat answer shape is parsed.
#[actix_web::test]
async fn legacy_shape_is_parsed() {
    let fake = FakeYahoo::start();
    fake.set_legacy_shape(true);
    let app = app_with(&fake, |_| {}).await;
    let alice = app.user("alice");
    let id = app
        .private_watchlist(
            &alice,
            json!([{"symbol": "AAPL", "quantity": 2, "purchase_price": 100}]),
        )
        .await;
    let mut ws = app.ws(id, &alice).await;
    let q = ws.wait_type("quotes").await;
    let aapl = &q["quotes"][0];
    let price = aapl["price"].as_f64().expect("price from the legacy shape");
    assert_eq!(price, fake.last_price("AAPL").unwrap_or(price));
    assert!((aapl["unrealized_pl"].as_f64().unwrap() - (price - 100.0) * 2.0).abs() < 1e-9);
    ws.close().await;
}

/// 429 with Retry-After: no request before the wait is over; clients see
/// degraded, then ok.
#[actix_web::test]
async fn rate_limited_429_honours_retry_after() {
    let (fake, app, mut ws, _) = flowing("AAPL", |_| {}).await;
    fake.fail_next(1, Fault::rate_limited(Some(2)));
    let degraded = wait_status(&mut ws, "degraded").await;
    assert!(
        degraded["retry_in_ms"].as_u64().unwrap() >= 1500,
        "{degraded}"
    );
    assert!(
        degraded["message"].as_str().unwrap().contains("429"),
        "{degraded}"
    );
    wait_status(&mut ws, "ok").await;
    ws.wait_type("quotes").await;
    let records = fake.requests();
    let limited = records
        .iter()
        .position(|r| r.fault.is_some())
        .expect("the 429 was served");
    let next = &records[limited + 1];
    let waited = next
        .received_at
        .duration_since(records[limited].received_at);
    assert!(
        waited >= Duration::from_secs(2),
        "next request after {waited:?}"
    );
    let stats = app.stats().await;
    assert!(stats["upstream"]["rate_limited"].as_u64().unwrap() >= 1);
    assert!(stats["upstream"]["errors"].as_u64().unwrap() >= 1);
    ws.close().await;
}

/// A 503 HTML page and a garbage body: degraded, the worker survives, ok again.
#[actix_web::test]
async fn server_errors_and_garbage_degrade_then_recover() {
    let (fake, app, mut ws, _) = flowing("MSFT", |_| {}).await;
    for fault in [Fault::server_error(), Fault::Garbage] {
        fake.fail_next(1, fault);
        let d = wait_status(&mut ws, "degraded").await;
        assert!(d["retry_in_ms"].as_u64().is_some(), "{d}");
        wait_status(&mut ws, "ok").await;
        ws.wait_type("quotes").await;
    }
    assert_eq!(app.workers().await.len(), 1, "the worker survived");
    let text = app.metrics_text().await;
    for outcome in ["server_error", "bad_data", "ok"] {
        assert!(
            text.contains(&format!(
                "quotecast_upstream_requests_total{{outcome=\"{outcome}\"}}"
            )),
            "{outcome}"
        );
    }
    ws.close().await;
}

/// A timeout (the fake never answers): degraded within the timeout.
#[actix_web::test]
async fn timeout_degrades_within_the_timeout() {
    let (fake, _app, mut ws, _) = flowing("NVDA", |s| s.upstream.request_timeout_ms = 500).await;
    fake.fail_all(Fault::Hang);
    let hung_at = Instant::now();
    let d = wait_status(&mut ws, "degraded").await;
    // At most one tick to start the request, plus the timeout, plus slack.
    assert!(
        hung_at.elapsed() < Duration::from_millis(200 + 500 + 500),
        "{:?}",
        hung_at.elapsed()
    );
    assert!(d["message"].as_str().unwrap().contains("in time"), "{d}");
    fake.clear_faults();
    wait_status(&mut ws, "ok").await;
    ws.wait_type("quotes").await;
    ws.close().await;
}

/// Connection refused: degraded, and nothing panics.
#[actix_web::test]
async fn connection_refused_degrades() {
    let mut fake = FakeYahoo::start();
    let app = app_with(&fake, |_| {}).await;
    fake.stop();
    let (_, _, mut ws) = watching(&app, "AAPL").await;
    let snap = ws.wait_type("snapshot").await;
    assert_eq!(snap["stale"], true);
    let d = wait_status(&mut ws, "degraded").await;
    assert!(
        d["message"].as_str().unwrap().contains("unreachable"),
        "{d}"
    );
    ws.ping().await;
    ws.close().await;
    app.wait_counts(0, 0).await;
}

/// The token bucket: over any window, requests never exceed capacity plus
/// the refill for that window.
#[actix_web::test]
async fn rate_limiter_never_exceeds_its_budget() {
    let fake = FakeYahoo::start();
    let (capacity, refill) = (3.0, 4.0);
    let app = app_with(&fake, |s| {
        s.upstream.poll_interval_ms = 50;
        s.upstream.batch_size = 5;
        s.upstream.rate_limit.capacity = capacity;
        s.upstream.rate_limit.refill_per_sec = refill;
    })
    .await;
    let alice = app.user("alice");
    let symbols: Vec<String> = (0..20).map(|i| format!("R{i}")).collect();
    let id = app.private_watchlist(&alice, items(&symbols)).await;
    let mut ws = app.ws(id, &alice).await;
    // Demand is 4 requests per 50 ms tick; the budget is far below that.
    let d = wait_status(&mut ws, "degraded").await;
    assert!(d["message"].as_str().unwrap().contains("rate limit"), "{d}");
    let start = Instant::now();
    assert!(reading_until(&mut ws, &fake, |f| f.total_requests() >= 12).await);
    let records = fake.requests();
    for (i, a) in records.iter().enumerate() {
        for (j, b) in records.iter().enumerate().skip(i) {
            let window = b.received_at.duration_since(a.received_at).as_secs_f64();
            let count = (j - i + 1) as f64;
            // A small allowance for the time between the bucket granting a
            // token and the fake recording the request.
            assert!(
                count <= capacity + refill * (window + 0.05),
                "{count} requests in {window:.3}s"
            );
        }
    }
    assert!(
        start.elapsed() > Duration::from_millis(1500),
        "12 requests need at least (12-3)/4 s"
    );
    assert!(
        app.stats().await["upstream"]["rate_limited"]
            .as_u64()
            .unwrap()
            > 0
    );
    ws.close().await;
}

/// Symbols whose market is closed are polled at the slow interval.
#[actix_web::test]
async fn closed_markets_are_polled_slowly() {
    let fake = FakeYahoo::start();
    fake.set_market_closed("SHUT", true);
    let app = app_with(&fake, |s| {
        s.upstream.poll_interval_ms = 100;
        s.upstream.closed_poll_interval_ms = 1000;
    })
    .await;
    let alice = app.user("alice");
    let id = app
        .private_watchlist(&alice, items(&["OPEN", "SHUT"]))
        .await;
    let mut ws = app.ws(id, &alice).await;
    let snap = ws.wait_type("snapshot").await;
    assert_eq!(snap["quotes"].as_array().unwrap().len(), 2);
    let start = Instant::now();
    assert!(reading_until(&mut ws, &fake, |f| f.times_served("OPEN") >= 25).await);
    let elapsed = start.elapsed().as_secs_f64();
    let shut = fake.times_served("SHUT") as f64;
    assert!(
        shut <= elapsed / 1.0 + 2.0,
        "closed symbol served {shut} times in {elapsed:.1}s"
    );
    assert!(shut >= 1.0);
    let q = ws
        .wait_for("SHUT's state", |v| {
            v["type"] == "snapshot"
                || v["quotes"]
                    .as_array()
                    .is_some_and(|qs| qs.iter().any(|q| q["symbol"] == "SHUT"))
        })
        .await;
    drop(q);
    ws.send_json(json!({"type": "snapshot"})).await;
    let snap = ws.wait_type("snapshot").await;
    let shut_q = quote(&snap, "SHUT");
    assert_eq!(shut_q["market_state"], "CLOSED");
    ws.close().await;
}

/// The latest quotes reach the database while the server runs (at most a
/// second later), not only when it shuts down.
#[actix_web::test]
async fn quotes_are_saved_while_running() {
    let (_fake, app, ws, seen) = flowing("6758.T", |_| {}).await;
    assert!(seen["quotes"][0]["price"].is_number(), "{seen}");
    eventually("the quote stored while running", async || {
        let rows = app
            .db()
            .run(|c| quotecast::db::repo::get_latest_quotes(c, &["6758.T".into()]))
            .await
            .unwrap();
        rows.first().is_some_and(|r| r.price.is_some())
    })
    .await;
    ws.close().await;
}

/// After a restart, the first snapshot has the last stored prices before any
/// new fetch (the upstream hangs throughout the second run).
#[actix_web::test]
async fn restart_snapshot_uses_stored_prices() {
    let fake = FakeYahoo::start();
    let app = app_with(&fake, |_| {}).await;
    let (alice, id, mut ws) = watching(&app, "6758.T").await;
    ws.wait_type("quotes").await;
    // The price stops moving before the socket goes: a round still in
    // flight when the last session leaves cannot then change the price the
    // server ends with (it did, under load, between the read below and the
    // restart).
    let last = 1975.5;
    fake.set_prices_move(false);
    fake.set_price("6758.T", last);
    while ws.wait_type("quotes").await["quotes"][0]["price"].as_f64() != Some(last) {}
    ws.close().await;
    app.wait_counts(0, 0).await;
    let stored = app.get("/api/v1/quotes?symbols=6758.T", &alice).await.1["quotes"][0]["price"]
        .as_f64()
        .expect("stored price");
    assert_eq!(stored, last);
    let app = app.restart(|_| fake.fail_all(Fault::Hang)).await;
    let mut ws = app.ws(id, &alice).await;
    let snap = ws.wait_type("snapshot").await;
    assert_eq!(snap["stale"], false);
    assert_eq!(snap["quotes"][0]["price"].as_f64(), Some(stored));
    ws.close().await;
    fake.clear_faults();
}
