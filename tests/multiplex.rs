//! `GET /ws/v1`: many watchlists on one socket, recovery after reconnect,
//! totals and intraday series, over real sockets on SQLite and PostgreSQL;
//! and what v1 sockets gained (`epoch`, `totals`, `upstream`, `?since=`).

mod support;

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use support::fake_yahoo::{FakeYahoo, Fault};
use support::{code, items, numbered, positions, quote, Api, Backend, TestApp, Ws, DEADLINE};

fn multi_url(app: &TestApp) -> String {
    format!("ws://{}/ws/v1", app.addr)
}

async fn multi(app: &TestApp, token: &str) -> Ws {
    app.try_ws(&multi_url(app), Some(token))
        .await
        .unwrap_or_else(|(s, b)| panic!("upgrade refused: {s} {b}"))
}

async fn subscribe(ws: &mut Ws, id: i64) -> Value {
    ws.send_json(json!({"type": "subscribe", "watchlist_id": id}))
        .await;
    wait_type_for(ws, "subscribed", id).await
}

/// Subscribes to watchlist `id` from a position (`{"epoch", "seq"}`), without
/// waiting.
async fn subscribe_since(ws: &mut Ws, id: i64, since: Value) {
    ws.send_json(json!({"type": "subscribe", "watchlist_id": id, "since": since}))
        .await;
}

/// Waits for a message of type `kind` about watchlist `id`, skipping others.
async fn wait_type_for(ws: &mut Ws, kind: &str, id: i64) -> Value {
    ws.wait_for(&format!("{kind} of watchlist {id}"), |v| {
        v["type"] == kind && v["watchlist_id"] == id
    })
    .await
}

/// The next message about watchlist `id` or an error, skipping others.
async fn next_for(ws: &mut Ws, id: i64) -> Value {
    ws.wait_for(&format!("a message of watchlist {id}"), |v| {
        v["watchlist_id"] == id
    })
    .await
}

/// Three subscriptions on one socket: each watchlist's messages come in
/// order, `subscribed`, then a snapshot, then quotes with seq counting up
/// by one, every one with its epoch; `tick` increases.
async fn three_subscriptions_contiguous_seq(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let ids = [
        app.watchlist(&alice, "A", false, positions("A", 3)).await,
        app.watchlist(&alice, "B", false, positions("B", 2)).await,
        app.watchlist(&alice, "C", false, positions("C", 4)).await,
    ];
    let mut ws = multi(&app, &alice).await;
    for id in ids {
        ws.send_json(json!({"type": "subscribe", "watchlist_id": id}))
            .await;
    }
    let mut state: HashMap<i64, (String, u64)> = HashMap::new();
    let mut quotes_seen: HashMap<i64, u32> = HashMap::new();
    let mut last_tick: HashMap<i64, u64> = HashMap::new();
    while quotes_seen.len() < 3 || quotes_seen.values().any(|n| *n < 5) {
        let m = ws
            .wait_for("a watchlist message", |v| v.get("watchlist_id").is_some())
            .await;
        let id = m["watchlist_id"].as_i64().unwrap();
        match m["type"].as_str().unwrap() {
            "subscribed" => {
                assert_eq!(m["recovered"], false, "{m}");
                assert!(!state.contains_key(&id), "subscribed twice: {m}");
            }
            "snapshot" => {
                let epoch = m["epoch"].as_str().unwrap().to_owned();
                assert!(!epoch.is_empty());
                assert_eq!(m["upstream"], "ok");
                assert!(m["totals"].is_array(), "{m}");
                state.insert(id, (epoch, m["seq"].as_u64().unwrap()));
            }
            "quotes" => {
                let (epoch, seq) = state.get_mut(&id).expect("snapshot before quotes");
                assert_eq!(m["epoch"], epoch.as_str(), "{m}");
                assert_eq!(m["seq"].as_u64().unwrap(), *seq + 1, "gap or repeat: {m}");
                *seq += 1;
                let tick = m["tick"].as_u64().unwrap();
                let last = last_tick.entry(id).or_insert(0);
                assert!(tick > *last, "tick went back: {m}");
                *last = tick;
                *quotes_seen.entry(id).or_insert(0) += 1;
            }
            other => panic!("unexpected {other}: {m}"),
        }
    }
    // One socket, three workers.
    let s = app.wait_counts(1, 3).await;
    assert_eq!(s["sessions"], 1);
    let sessions = app.sessions().await;
    assert_eq!(sessions[0]["watchlist_id"], Value::Null);
    let mut subs: Vec<i64> = sessions[0]["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    subs.sort_unstable();
    let mut want = ids.to_vec();
    want.sort_unstable();
    assert_eq!(subs, want);
    ws.close().await;
    app.wait_counts(0, 0).await;
}

/// Every refusal answers an error with its code and the watchlist id; the
/// socket stays open, and refusals are not misbehaviour.
async fn refusals_keep_the_socket_open(b: Backend) {
    let (app, alice) =
        TestApp::for_alice_with(b, |s| s.limits.max_subscriptions_per_session = 2).await;
    let bob = app.user("bob");
    let mine = app
        .watchlist(&alice, "Mine", false, positions("M", 1))
        .await;
    let other = app.watchlist(&alice, "Other", false, json!([])).await;
    let third = app.watchlist(&alice, "Third", false, json!([])).await;
    let bobs = app.watchlist(&bob, "Bob's", false, json!([])).await;
    let mut ws = multi(&app, &alice).await;

    // `{"type": kind, "watchlist_id": id}` is refused with `code`.
    let refused = async |ws: &mut Ws, kind: &str, id: i64, code: &str| {
        let msg = json!({"type": kind, "watchlist_id": id});
        ws.send_json(msg.clone()).await;
        let e = ws.wait_type("error").await;
        assert_eq!(e["code"], code, "{msg} -> {e}");
        assert_eq!(e["watchlist_id"], id, "{e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    refused(&mut ws, "subscribe", 424242, "not_found").await;
    refused(&mut ws, "subscribe", bobs, "forbidden").await;
    subscribe(&mut ws, mine).await;
    refused(&mut ws, "subscribe", mine, "already_subscribed").await;
    refused(&mut ws, "unsubscribe", other, "not_subscribed").await;
    refused(&mut ws, "snapshot", other, "not_subscribed").await;
    subscribe(&mut ws, other).await;
    refused(&mut ws, "subscribe", third, "limit_exceeded").await;
    // Many refusals do not close the socket (ten bad messages would).
    for _ in 0..12 {
        refused(&mut ws, "subscribe", mine, "already_subscribed").await;
    }
    ws.ping().await;
    // A snapshot on request, for a watchlist it holds.
    ws.send_json(json!({"type": "snapshot", "watchlist_id": mine}))
        .await;
    let snap = wait_type_for(&mut ws, "snapshot", mine).await;
    assert_eq!(snap["quotes"][0]["symbol"], "M0");

    // Malformed subscription messages are bad messages, with their own code.
    let too_long = json!({"epoch": "x".repeat(65), "seq": 1});
    for (msg, want) in [
        (json!({"type": "subscribe"}), "invalid_message"),
        (
            json!({"type": "subscribe", "watchlist_id": "7"}),
            "invalid_message",
        ),
        (json!({"type": "snapshot"}), "invalid_message"),
        (
            json!({"type": "subscribe", "watchlist_id": third, "since": too_long}),
            "invalid_message",
        ),
        (json!({"type": "frobnicate"}), "unknown_type"),
    ] {
        ws.send_json(msg.clone()).await;
        assert_eq!(ws.wait_type("error").await["code"], want, "{msg}");
    }
    ws.ping().await;
    ws.close().await;
    app.wait_counts(0, 0).await;
}

/// Unsubscribing ends that worker when it was the last subscriber, and only
/// then; `unsubscribed` answers it.
async fn unsubscribe_ends_the_last_worker(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let a = app.watchlist(&alice, "A", false, positions("A", 1)).await;
    let bb = app.watchlist(&alice, "B", false, positions("B", 1)).await;
    let mut one = multi(&app, &alice).await;
    let mut two = multi(&app, &alice).await;
    subscribe(&mut one, a).await;
    subscribe(&mut one, bb).await;
    subscribe(&mut two, a).await;
    app.wait_counts(2, 2).await;

    one.send_json(json!({"type": "unsubscribe", "watchlist_id": bb}))
        .await;
    let m = one.wait_type("unsubscribed").await;
    assert_eq!(m["watchlist_id"], bb);
    assert!(m.get("reason").is_none(), "{m}");
    app.wait_counts(2, 1).await;

    // `a` still has `two`: it stays.
    one.send_json(json!({"type": "unsubscribe", "watchlist_id": a}))
        .await;
    one.wait_type("unsubscribed").await;
    assert_eq!(app.wait_counts(2, 1).await["workers"], 1);
    assert_eq!(app.workers().await[0]["watchlist_id"], a);
    two.send_json(json!({"type": "unsubscribe", "watchlist_id": a}))
        .await;
    two.wait_type("unsubscribed").await;
    app.wait_counts(2, 0).await;

    // A socket with no subscription gets nothing about a watchlist any more,
    // not even what was in flight when it unsubscribed.
    one.send_json(json!({"type": "ping"})).await;
    let next = one.wait_for("anything", |_| true).await;
    assert_eq!(next["type"], "pong", "{next}");
    app.close_all([one, two]).await;
}

/// A client that reconnects with the epoch and seq of the last message it
/// got is sent exactly the messages it missed, then the live ones, with no
/// gap and no duplicate. A different epoch, a seq older than the history or
/// one from the future give a snapshot instead.
async fn recovery_replays_exactly_what_was_missed(b: Backend) {
    let (app, alice) = TestApp::for_alice_with(b, |s| s.realtime.history_size = 16).await;
    let id = app.watchlist(&alice, "W", false, positions("R", 3)).await;
    // A v1 socket keeps the worker (and its epoch) alive and records
    // everything the watchlist sends.
    let mut keeper = app.ws(id, &alice).await;
    let snap = keeper.wait_type("snapshot").await;
    let epoch = snap["epoch"].as_str().unwrap().to_owned();

    let mut ws = multi(&app, &alice).await;
    subscribe(&mut ws, id).await;
    let snap = next_for(&mut ws, id).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["epoch"], epoch.as_str());
    let mut last = next_for(&mut ws, id).await;
    assert_eq!(last["type"], "quotes");
    let left_at = last["seq"].as_u64().unwrap();
    ws.close().await;

    // While it is away, the keeper sees several more messages.
    let mut missed: BTreeMap<u64, Value> = BTreeMap::new();
    while missed.len() < 4 {
        let m = keeper.wait_type("quotes").await;
        let seq = m["seq"].as_u64().unwrap();
        if seq > left_at {
            missed.insert(seq, m);
        }
    }

    let mut ws = multi(&app, &alice).await;
    subscribe_since(&mut ws, id, json!({"epoch": epoch, "seq": left_at})).await;
    let ack = next_for(&mut ws, id).await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(ack["epoch"], epoch.as_str());
    // Replayed messages are the very ones the keeper got, in order, and
    // the live stream continues from there.
    let mut expect = left_at + 1;
    let until = *missed.keys().last().unwrap() + 3;
    while expect <= until {
        last = next_for(&mut ws, id).await;
        assert_eq!(last["type"], "quotes", "{last}");
        assert_eq!(
            last["seq"].as_u64().unwrap(),
            expect,
            "gap or repeat: {last}"
        );
        if let Some(m) = missed.get(&expect) {
            assert_eq!(&last, m, "replayed message differs from the original");
        }
        expect += 1;
    }
    ws.close().await;

    // Unrecoverable positions: a snapshot, and `recovered:false`.
    let current = last["seq"].as_u64().unwrap();
    for since in [
        json!({"epoch": "not-this-one", "seq": current}),
        json!({"epoch": epoch, "seq": current + 1000}),
    ] {
        let mut ws = multi(&app, &alice).await;
        subscribe_since(&mut ws, id, since.clone()).await;
        let ack = next_for(&mut ws, id).await;
        assert_eq!(
            (ack["type"].as_str(), &ack["recovered"]),
            (Some("subscribed"), &json!(false)),
            "{since}: {ack}"
        );
        assert_eq!(next_for(&mut ws, id).await["type"], "snapshot", "{since}");
        ws.close().await;
    }
    // Older than the history (16 messages): wait until it has moved on.
    loop {
        let m = keeper.wait_type("quotes").await;
        if m["seq"].as_u64().unwrap() > left_at + 20 {
            break;
        }
    }
    let mut ws = multi(&app, &alice).await;
    subscribe_since(&mut ws, id, json!({"epoch": epoch, "seq": left_at})).await;
    assert_eq!(next_for(&mut ws, id).await["recovered"], false);
    assert_eq!(next_for(&mut ws, id).await["type"], "snapshot");
    app.close_all([ws, keeper]).await;
}

/// v1 sockets take `?since=EPOCH:SEQ` with the same meaning, and are told
/// whether they recovered; a malformed `since` is refused before the
/// upgrade. Without `since`, a v1 client sees what it always did: a
/// snapshot first (now with `epoch`, `totals` and `upstream`).
async fn v1_since(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let id = app.watchlist(&alice, "W", false, positions("V", 2)).await;
    let mut keeper = app.ws(id, &alice).await;
    let snap = keeper.wait_type("snapshot").await;
    assert_eq!(snap["upstream"], "ok");
    assert!(snap["totals"].is_array());
    let epoch = snap["epoch"].as_str().unwrap().to_owned();
    let q = keeper.wait_type("quotes").await;
    let seq = q["seq"].as_u64().unwrap();
    keeper
        .wait_for("two more", |v| v["seq"].as_u64() > Some(seq + 1))
        .await;

    let url = format!("{}?since={epoch}:{seq}", app.ws_url(id));
    let mut ws = app.try_ws(&url, Some(&alice)).await.expect("upgrade");
    let ack = ws.wait_type("subscribed").await;
    assert_eq!(ack["recovered"], true, "{ack}");
    let next = ws
        .wait_for("a seq message", |v| v.get("seq").is_some())
        .await;
    assert_eq!(next["type"], "quotes");
    assert_eq!(next["seq"].as_u64().unwrap(), seq + 1);
    ws.close().await;

    for bad in ["nocolon", "e:notanumber", ":5", "e:-1"] {
        let url = format!("{}?since={bad}", app.ws_url(id));
        let (status, body) = app.ws_refused(&url, Some(&alice)).await;
        assert_eq!((status, code(&body)), (400, "bad_request"), "{bad}");
    }
    keeper.close().await;
    app.wait_counts(0, 0).await;
}

/// Deleting a watchlist or making it private ends the subscriptions of a
/// multi-watchlist socket with a reason; the socket stays open, and no
/// worker is left.
async fn deleted_and_private_end_subscriptions(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let bob = app.user("bob");
    let shared = app
        .watchlist(&alice, "Shared", true, positions("S", 1))
        .await;
    let doomed = app
        .watchlist(&alice, "Doomed", true, positions("D", 1))
        .await;
    let mut ws = multi(&app, &bob).await;
    subscribe(&mut ws, shared).await;
    subscribe(&mut ws, doomed).await;
    let mut own = multi(&app, &alice).await;
    subscribe(&mut own, shared).await;
    app.wait_counts(2, 2).await;

    let (s, _) = app
        .patch_watchlist(&alice, shared, json!({"is_public": false}))
        .await;
    assert_eq!(s, 200);
    let m = wait_type_for(&mut ws, "unsubscribed", shared).await;
    assert_eq!(m["reason"], "forbidden");
    // The owner keeps watching it.
    wait_type_for(&mut own, "quotes", shared).await;

    assert_eq!(app.delete_watchlist(&alice, doomed).await.0, 204);
    let m = wait_type_for(&mut ws, "unsubscribed", doomed).await;
    assert_eq!(m["reason"], "deleted");
    app.wait_counts(2, 1).await;
    // Open, with nothing subscribed; it can subscribe again where allowed.
    ws.send_json(json!({"type": "subscribe", "watchlist_id": shared}))
        .await;
    assert_eq!(ws.wait_type("error").await["code"], "forbidden");
    ws.ping().await;
    let sessions = app.sessions().await;
    let bobs = sessions.iter().find(|s| s["user"] == "bob").unwrap();
    assert_eq!(bobs["subscriptions"], json!([]));
    app.close_all([ws, own]).await;
}

/// Tickets: `{}` gives a ticket for `/ws/v1`; one issued for a watchlist
/// does not open it.
async fn tickets_for_the_multi_endpoint(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let id = app.watchlist(&alice, "W", false, json!([])).await;
    let (s, body) = app.post("/api/v1/ws-tickets", &alice, json!({})).await;
    assert_eq!(s, 200, "{body}");
    let ticket = body["ticket"].as_str().unwrap();
    let url = format!("{}?ticket={ticket}", multi_url(&app));
    let mut ws = app.try_ws(&url, None).await.expect("ticket opens /ws/v1");
    subscribe(&mut ws, id).await;
    ws.close().await;
    // Single use.
    assert_eq!(app.ws_refused(&url, None).await.0, 401);
    // Bound to its watchlist.
    let bound = app.ticket(&alice, id).await;
    let url = format!("{}?ticket={bound}", multi_url(&app));
    let (s, body) = app.ws_refused(&url, None).await;
    assert_eq!((s, code(&body)), (403, "forbidden"));
    // No credentials.
    assert_eq!(app.ws_refused(&multi_url(&app), None).await.0, 401);
    // `since` belongs in `subscribe`.
    let url = format!("{}?since=a:1", multi_url(&app));
    assert_eq!(app.ws_refused(&url, Some(&alice)).await.0, 400);
    app.wait_counts(0, 0).await;
}

/// Totals per currency over the positions, checked against the quotes of
/// the same message (the snapshot has them all; after that, the latest of
/// each symbol).
async fn totals_match_the_quotes(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let items = json!([
        {"symbol": "7203.T", "quantity": 100, "purchase_price": 2700},
        {"symbol": "6758.T", "quantity": 10},
        {"symbol": "AAPL", "quantity": 2, "purchase_price": 150.5},
        {"symbol": "MSFT"},
    ]);
    let id = app.watchlist(&alice, "Mixed", false, items).await;
    let mut ws = multi(&app, &alice).await;
    subscribe(&mut ws, id).await;
    let mut latest: HashMap<String, Value> = HashMap::new();
    let mut checked = 0;
    while checked < 4 {
        let m = next_for(&mut ws, id).await;
        for q in m["quotes"].as_array().unwrap() {
            latest.insert(q["symbol"].as_str().unwrap().to_owned(), q.clone());
        }
        if latest.values().any(|q| q["price"].is_null()) {
            continue;
        }
        let totals = m["totals"].as_array().unwrap();
        let by: HashMap<&str, &Value> = totals
            .iter()
            .map(|t| (t["currency"].as_str().unwrap(), t))
            .collect();
        assert_eq!(by.len(), 2, "JPY and USD: {m}");
        let close = |a: &Value, b: f64| {
            let a = a.as_f64().unwrap();
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{a} != {b} in {m}"
            );
        };
        let p = |s: &str| latest[s]["price"].as_f64().unwrap();
        let prev = |s: &str| latest[s]["previous_close"].as_f64().unwrap();
        let jpy = by["JPY"];
        close(
            &jpy["market_value"],
            p("7203.T") * 100.0 + p("6758.T") * 10.0,
        );
        close(&jpy["cost"], 270_000.0);
        close(&jpy["unrealized_pl"], (p("7203.T") - 2700.0) * 100.0);
        close(
            &jpy["day_change"],
            (p("7203.T") - prev("7203.T")) * 100.0 + (p("6758.T") - prev("6758.T")) * 10.0,
        );
        let usd = by["USD"];
        close(&usd["market_value"], p("AAPL") * 2.0);
        close(&usd["cost"], 301.0);
        close(&usd["unrealized_pl"], (p("AAPL") - 150.5) * 2.0);
        close(&usd["day_change"], (p("AAPL") - prev("AAPL")) * 2.0);
        checked += 1;
    }
    // An item change recomputes them at once.
    let (s, _) = app
        .patch_item(&alice, id, "AAPL", json!({"quantity": 4}))
        .await;
    assert_eq!(s, 200);
    let snap = wait_type_for(&mut ws, "snapshot", id).await;
    let usd = snap["totals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["currency"] == "USD")
        .unwrap()
        .clone();
    let aapl = quote(&snap, "AAPL");
    assert!(
        (usd["cost"].as_f64().unwrap() - 602.0).abs() < 1e-9,
        "{usd}"
    );
    assert!(
        (usd["market_value"].as_f64().unwrap() - aapl["price"].as_f64().unwrap() * 4.0).abs()
            < 1e-6
    );
    ws.close().await;
}

/// `intraday:true` snapshots carry today's series per quote, ordered and
/// bounded, and REST gives the same series.
async fn intraday_series(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let id = app
        .private_watchlist(&alice, items(&["AAPL", "7203.T"]))
        .await;
    let mut ws = multi(&app, &alice).await;
    // Let a few ticks land first, so the series has ticks after its bars.
    let mut plain = multi(&app, &alice).await;
    subscribe(&mut plain, id).await;
    let first = next_for(&mut plain, id).await;
    assert!(
        first["quotes"][0].get("intraday").is_none(),
        "only when asked"
    );
    for _ in 0..3 {
        next_for(&mut plain, id).await;
    }
    ws.send_json(json!({"type": "subscribe", "watchlist_id": id, "intraday": true}))
        .await;
    next_for(&mut ws, id).await;
    let snap = next_for(&mut ws, id).await;
    assert_eq!(snap["type"], "snapshot");
    for q in snap["quotes"].as_array().unwrap() {
        let series = q["intraday"]
            .as_array()
            .unwrap_or_else(|| panic!("no series: {q}"));
        assert!(series.len() > 10, "{q}");
        assert!(series.len() <= 600, "bounded");
        let times: Vec<i64> = series.iter().map(|p| p[0].as_i64().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "ordered: {times:?}");
        assert!(series
            .iter()
            .all(|p| p[1].as_f64().is_some_and(f64::is_finite)));
        let (s, rest) = app
            .get(
                &format!("/api/v1/quotes/{}/intraday", q["symbol"].as_str().unwrap()),
                &alice,
            )
            .await;
        assert_eq!(s, 200);
        let rest_points = rest["points"].as_array().unwrap();
        // REST is read a moment later: the same series, maybe one tick on.
        assert!(rest_points.len() >= series.len() - 1, "{rest}");
        assert_eq!(rest_points[0], series[0]);
    }
    // A snapshot on request keeps the subscription's choice.
    ws.send_json(json!({"type": "snapshot", "watchlist_id": id}))
        .await;
    let again = ws.wait_for("snapshot", |v| v["type"] == "snapshot").await;
    assert!(again["quotes"][0]["intraday"].is_array());
    let (s, body) = app
        .get("/api/v1/quotes/not%20a%20symbol/intraday", &alice)
        .await;
    assert_eq!((s, code(&body)), (422, "invalid_value"));
    ws.close().await;
    plain.close().await;
}

on_both_backends!(
    three_subscriptions_contiguous_seq,
    refusals_keep_the_socket_open,
    unsubscribe_ends_the_last_worker,
    recovery_replays_exactly_what_was_missed,
    v1_since,
    deleted_and_private_end_subscriptions,
    tickets_for_the_multi_endpoint,
    totals_match_the_quotes,
    intraday_series,
);

/// A symbol nobody watches is fetched for a REST caller, once: it has a
/// price, and it is not polled afterwards. More than 50 symbols is 422.
#[actix_web::test]
async fn rest_quotes_fetch_symbols_nobody_watches() {
    let fake = FakeYahoo::start();
    let app = TestApp::on_fake_yahoo(&fake, |s| {
        s.upstream.poll_interval_ms = 100;
        support::relaxed_liveness(s);
    })
    .await;
    let alice = app.user("alice");
    let asks_for = |symbol: &str| {
        let symbol = symbol.to_owned();
        move |fake: &FakeYahoo| {
            fake.requests()
                .iter()
                .filter(|r| r.symbols.contains(&symbol))
                .count()
        }
    };
    let (s, body) = app.get("/api/v1/quotes?symbols=AAPL,MSFT", &alice).await;
    assert_eq!(s, 200, "{body}");
    assert!(body["quotes"][0]["price"].is_number(), "{body}");
    assert!(body["quotes"][1]["price"].is_number(), "{body}");
    // Both in one batch: one spark request.
    assert_eq!(fake.spark_requests(), 1);
    assert_eq!(fake.requests()[0].symbols, ["AAPL", "MSFT"]);
    // Not polled afterwards: while someone watches another symbol, five
    // more ticks go by without AAPL.
    let id = app
        .watchlist(&alice, "W", false, json!([{"symbol": "NVDA"}]))
        .await;
    let mut ws = app.ws(id, &alice).await;
    ws.wait_type("snapshot").await;
    let ticks = asks_for("NVDA")(&fake);
    assert!(fake.wait_until(DEADLINE, |f| asks_for("NVDA")(f) >= ticks + 5));
    assert_eq!(asks_for("AAPL")(&fake), 1);
    // Cached now: asking again costs nothing.
    let (s, again) = app.get("/api/v1/quotes?symbols=AAPL", &alice).await;
    assert_eq!(s, 200);
    assert_eq!(again["quotes"][0]["price"], body["quotes"][0]["price"]);
    assert_eq!(asks_for("AAPL")(&fake), 1);
    ws.close().await;
    let (s, intraday) = app.get("/api/v1/quotes/AAPL/intraday", &alice).await;
    assert_eq!(s, 200);
    assert!(
        intraday["points"].as_array().is_some_and(|p| !p.is_empty()),
        "{intraday}"
    );

    let (s, body) = app.quotes(&alice, &numbered("S", 51)).await;
    assert_eq!((s, code(&body)), (422, "invalid_value"));
    let (s, body) = app.quotes(&alice, &numbered("S", 50)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["quotes"].as_array().unwrap().len(), 50);
}

/// A session that lags (its queue full) and is caught up by a snapshot also
/// learns the upstream state it missed: the snapshot says `degraded`.
#[actix_web::test]
async fn a_lagging_session_learns_the_upstream_state_from_its_catch_up() {
    let fake = FakeYahoo::start();
    let app = TestApp::on_fake_yahoo(&fake, |s| {
        support::relaxed_liveness(s);
        s.realtime.session_queue = 2;
        s.realtime.socket_send_buffer_bytes = 4096;
        s.upstream.poll_interval_ms = 20;
    })
    .await;
    let alice = app.user("alice");
    let id = app
        .watchlist(&alice, "Big", false, positions("L", 60))
        .await;
    let mut ws = multi(&app, &alice).await;
    subscribe(&mut ws, id).await;
    // Stop reading until the server has had to drop messages for it.
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let sessions = app.sessions().await;
        if sessions[0]["dropped"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never lagged: {sessions:?}"
        );
        fake.wait_for_spark_requests(fake.spark_requests() + 1, DEADLINE);
    }
    // The upstream fails while it lags; the `status` is not queued for it.
    fake.fail_all(Fault::server_error());
    let deadline = std::time::Instant::now() + DEADLINE;
    while app.workers().await[0]["last_error"].is_null() {
        assert!(std::time::Instant::now() < deadline, "never degraded");
        fake.wait_for_spark_requests(fake.spark_requests() + 1, DEADLINE);
    }
    // A change makes every subscriber get a snapshot.
    let (s, _) = app
        .patch_item(&alice, id, "L0", json!({"quantity": 2}))
        .await;
    assert_eq!(s, 200);
    // Now it reads again: whatever was in flight, then a snapshot that says
    // the upstream is degraded (it still is).
    let snap = ws
        .wait_for("a snapshot after the change", |v| {
            v["type"] == "snapshot" && v["quotes"][0]["quantity"] == 2.0
        })
        .await;
    assert_eq!(snap["upstream"], "degraded", "{}", snap["upstream"]);
    fake.clear_faults();
    ws.close().await;
}

/// A subscription's opening (`subscribed`, then the replay or the
/// snapshot) is never dropped, however small the session queue, and does
/// not crowd out the live messages after it: ten subscriptions made at once
/// all open and go on without a gap, and a replay longer than the queue
/// arrives whole. The `multiplex` benchmark found gaps after openings when
/// one 16-message queue served a whole socket and each opening took two or
/// more slots of it; now each subscription adds `session_queue` slots and
/// an opening takes one.
#[actix_web::test]
async fn openings_are_never_dropped() {
    let (app, alice) = TestApp::for_alice_with(Backend::Sqlite, |s| {
        s.realtime.session_queue = 2;
        s.realtime.history_size = 64;
        // Slow enough that a busy test machine does not make this session
        // lag on its own (it would drop after two ticks).
        s.upstream.poll_interval_ms = 200;
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let name = format!("W{i}");
        ids.push(
            app.watchlist(&alice, &name, false, positions(&name, 2))
                .await,
        );
    }
    let mut ws = multi(&app, &alice).await;
    for id in &ids {
        ws.send_json(json!({"type": "subscribe", "watchlist_id": id}))
            .await;
    }
    // Each watchlist's first two messages: its ack, then its snapshot.
    let mut opened: HashMap<i64, Vec<String>> = HashMap::new();
    while opened.len() < ids.len() || opened.values().any(|v| v.len() < 2) {
        let m = ws
            .wait_for("a watchlist message", |v| v.get("watchlist_id").is_some())
            .await;
        let seen = opened
            .entry(m["watchlist_id"].as_i64().unwrap())
            .or_default();
        if seen.len() < 2 {
            seen.push(m["type"].as_str().unwrap().to_owned());
        }
    }
    for (id, seen) in &opened {
        assert_eq!(seen, &["subscribed", "snapshot"], "watchlist {id}");
    }
    let sessions = app.sessions().await;
    assert_eq!(sessions[0]["dropped"], 0, "{sessions:?}");
    ws.close().await;

    // A replay of more messages than the queue holds.
    let id = ids[0];
    let mut keeper = app.ws(id, &alice).await;
    let snap = keeper.wait_type("snapshot").await;
    let epoch = snap["epoch"].as_str().unwrap().to_owned();
    let left_at = snap["seq"].as_u64().unwrap();
    let mut last = left_at;
    while last < left_at + 10 {
        last = keeper.wait_type("quotes").await["seq"].as_u64().unwrap();
    }
    let mut ws = multi(&app, &alice).await;
    subscribe_since(&mut ws, id, json!({"epoch": epoch, "seq": left_at})).await;
    let ack = next_for(&mut ws, id).await;
    assert_eq!(
        (&ack["type"], &ack["recovered"]),
        (&json!("subscribed"), &json!(true))
    );
    for expect in left_at + 1..=last {
        let m = next_for(&mut ws, id).await;
        assert_eq!(m["seq"].as_u64(), Some(expect), "gap in the replay: {m}");
    }
    let me = app
        .sessions()
        .await
        .into_iter()
        .find(|s| s["watchlist_id"].is_null())
        .unwrap();
    assert_eq!(me["dropped"], 0, "{me}");
    app.close_all([ws, keeper]).await;
}
