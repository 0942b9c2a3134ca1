//! The realtime core end to end: real WebSocket clients against a real
//! server, on SQLite and PostgreSQL. Every wait is for an event, with a
//! deadline.

mod support;

use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{
    code, eventually, items, positions, quote, throughout, Api, Backend, TestApp, Ws, DEADLINE,
    POLL,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Case 1: A session registers and removes both itself and the worker.
async fn connect_then_disconnect(b: Backend) {
    let (app, alice, id) = TestApp::with_alice_watching(b, items(&["AAPL"])).await;
    app.wait_counts(0, 0).await;
    let (ws, snap) = app.open(id, &alice).await;
    assert_eq!(snap["watchlist_id"], id);
    let stats = app.wait_counts(1, 1).await;
    assert_eq!(stats["watched_symbols"], 1);
    let sessions = app.sessions().await;
    assert_eq!(sessions[0]["user"], "alice");
    assert_eq!(sessions[0]["watchlist_id"], id);
    assert!(sessions[0]["peer"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    ws.close().await;
    let stats = app.wait_counts(0, 0).await;
    assert_eq!(stats["watched_symbols"], 0);
}

/// Case 2: Three sessions share one worker, which lives until the last leaves.
async fn sessions_share_a_worker(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let (id, mut clients) = app.watch(&alice, items(&["AAPL"]), 3).await;
    app.wait_counts(3, 1).await;
    let workers = app.workers().await;
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0]["watchlist_id"], id);
    assert_eq!(workers[0]["sessions"], 3);
    assert_eq!(workers[0]["symbols"], json!(["AAPL"]));
    let last = clients.pop().unwrap();
    for ws in clients {
        ws.close().await;
    }
    app.wait_counts(1, 1).await;
    last.close().await;
    app.wait_counts(0, 0).await;
}

/// Case 3: Ten concurrent connects give exactly one worker; ten concurrent
/// disconnects give none.
async fn concurrent_connects_one_worker(b: Backend) {
    let (app, alice, id) = TestApp::with_alice_watching(b, items(&["MSFT"])).await;
    let clients: Vec<Ws> = join_all((0..10).map(|_| app.ws(id, &alice))).await;
    let stats = app.wait_counts(10, 1).await;
    assert_eq!(stats["workers"], 1);
    assert_eq!(app.workers().await[0]["sessions"], 10);
    join_all(clients.into_iter().map(Ws::close)).await;
    app.wait_counts(0, 0).await;
    assert!(app.workers().await.is_empty());
}

/// A worker being stopped while a new session arrives orphans neither: the
/// newcomer always ends up on a live worker that ticks.
async fn leave_and_join_race(b: Backend) {
    let (app, alice, id) = TestApp::with_alice_watching(b, items(&["AAPL"])).await;
    for _ in 0..30 {
        let old = app.ws(id, &alice).await;
        // Close the last session and open a new one at the same moment.
        let (_, mut new) = futures_util::join!(old.close(), app.ws(id, &alice));
        new.wait_type("snapshot").await;
        new.wait_type("quotes").await;
        app.wait_counts(1, 1).await;
        new.close().await;
    }
    app.wait_counts(0, 0).await;
}

/// Case 4: A worker whose sessions are gone stops, and so do its ticks.
async fn worker_stops_and_its_ticks_stop(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let a = app.watchlist(&alice, "A", false, items(&["AAPL"])).await;
    let b_id = app.watchlist(&alice, "B", false, items(&["MSFT"])).await;
    let ws_a = app.ws(a, &alice).await;
    let (ws_b, _) = app.open(b_id, &alice).await;
    app.wait_counts(2, 2).await;
    ws_a.close().await;
    app.wait_counts(1, 1).await;

    // From here on every worker tick in the process must be B's.
    let total_before = app.metric("quotecast_worker_ticks_total").await;
    let b_before = app.workers().await[0]["ticks"].as_f64().unwrap();
    let b_after = eventually("worker B to tick", async || {
        let t = app.workers().await[0]["ticks"].as_f64().unwrap();
        (t >= b_before + 5.0).then_some(t)
    })
    .await;
    let total_after = app.metric("quotecast_worker_ticks_total").await;
    assert!(b_after - b_before >= 5.0);
    // Reads are not atomic together; allow B one tick between them.
    let others = (total_after - total_before) - (b_after - b_before);
    assert!(others.abs() <= 1.0, "ticks of a stopped worker: {others}");
    ws_b.close().await;
    app.wait_counts(0, 0).await;
    let t = app.metric("quotecast_worker_ticks_total").await;
    // Wait for two more fetcher ticks (so one began and ended after this
    // point): with no worker, nothing ticks.
    let upstream = app.stats().await["upstream"].clone();
    let cycles = upstream["cycles"].as_u64().unwrap();
    let idle = upstream["idle_ticks"].as_u64().unwrap();
    app.wait_stats("two idle fetcher ticks", |s| {
        s["upstream"]["idle_ticks"].as_u64().unwrap() >= idle + 2
    })
    .await;
    if app.metric("quotecast_worker_ticks_total").await != t {
        panic!("worker ticks continued after the last worker stopped");
    }
    assert_eq!(
        app.stats().await["upstream"]["cycles"].as_u64().unwrap(),
        cycles,
        "fetcher idles with nothing watched"
    );
}

/// Case 5: A broadcast reaches every session with the same seq; a dead session is
/// removed without disturbing the others.
async fn broadcast_and_dead_session(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let id = app
        .private_watchlist(&alice, items(&["7203.T", "AAPL"]))
        .await;
    let mut clients: Vec<Ws> = join_all((0..3).map(|_| app.ws(id, &alice))).await;
    app.wait_counts(3, 1).await;
    // Take a seq that every session must see.
    let target = clients[0].wait_type("quotes").await["seq"]
        .as_u64()
        .unwrap()
        + 2;
    for ws in clients.iter_mut() {
        let m = ws
            .wait_for("target seq", |v| {
                v["type"] == "quotes" && v["seq"].as_u64() >= Some(target)
            })
            .await;
        assert_eq!(
            m["seq"].as_u64(),
            Some(target),
            "every session sees every seq"
        );
        assert!(m["ts"].as_str().unwrap().ends_with('Z'));
    }
    // Kill one without a close handshake.
    let dead = clients.remove(1);
    drop(dead);
    app.wait_counts(2, 1).await;
    for ws in clients.iter_mut() {
        let m = ws.wait_type("quotes").await;
        let next = ws.wait_type("quotes").await;
        assert_eq!(
            next["seq"].as_u64().unwrap(),
            m["seq"].as_u64().unwrap() + 1,
            "no gap"
        );
    }
    join_all(clients.into_iter().map(Ws::close)).await;
    app.wait_counts(0, 0).await;
}

/// Case 6: Access: owner, public for others, private refused, missing 404; and
/// the credentials themselves.
async fn access_and_credentials(b: Backend) {
    let (app, alice) = TestApp::for_alice_with(b, |s| s.realtime.ticket_ttl_ms = 300).await;
    let bob = app.user("bob");
    let private = app.watchlist(&alice, "private", false, json!([])).await;
    let public = app.watchlist(&alice, "public", true, json!([])).await;

    app.ws(private, &alice).await.close().await;
    app.open(public, &bob).await.0.close().await;

    let cases = [
        (app.ws_url(private), Some(bob.as_str()), 403, "forbidden"),
        (app.ws_url(424242), Some(alice.as_str()), 404, "not_found"),
        (
            format!("ws://{}/ws/v1/watchlists/abc", app.addr),
            Some(alice.as_str()),
            404,
            "not_found",
        ),
        (app.ws_url(private), None, 401, "unauthorized"),
        (app.ws_url(private), Some("qc_wrong"), 401, "unauthorized"),
        (
            format!("{}?ticket=forged", app.ws_url(private)),
            None,
            401,
            "unauthorized",
        ),
    ];
    for (url, token, status, want) in cases {
        let (s, body) = app.ws_refused(&url, token).await;
        assert_eq!((s, code(&body)), (status, want), "{url}");
    }

    // Tickets: single use, bound to their watchlist, short-lived.
    let ticket = app.ticket(&alice, private).await;
    let url = format!("{}?ticket={ticket}", app.ws_url(private));
    let mut ws = app.try_ws(&url, None).await.expect("ticket accepted");
    ws.wait_type("snapshot").await;
    // Used twice.
    assert_eq!(app.ws_refused(&url, None).await.0, 401);
    ws.close().await;
    let ticket = app.ticket(&alice, private).await;
    let for_another = format!("{}?ticket={ticket}", app.ws_url(public));
    assert_eq!(app.ws_refused(&for_another, None).await.0, 403);
    let ticket = app.ticket(&alice, private).await;
    let url = format!("{}?ticket={ticket}", app.ws_url(private));
    wait_for_expiry(&app, &alice, private, public).await;
    // Expired.
    assert_eq!(app.ws_refused(&url, None).await.0, 401);
    app.wait_counts(0, 0).await;
}

/// Upgrades that arrive together share their trips to the database
/// (`session::lookups`): each still gets its own answer, and nothing read for
/// one burst is kept for the next, so a watchlist made public, a revoked
/// token and a deleted watchlist are seen by the very next upgrade.
async fn connect_burst_answers_each(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let bob = app.user("bob");
    let private = app.private_watchlist(&alice, items(&["MSFT"])).await;
    let multi = format!("ws://{}/ws/v1", app.addr);
    let missing = app.ws_url(424242);
    let cases: Vec<(String, &str, Option<u16>)> = (0..60)
        .map(|i| match i % 6 {
            0 | 1 => (app.ws_url(private), alice.as_str(), None),
            2 => (app.ws_url(private), bob.as_str(), Some(403)),
            3 => (app.ws_url(private), "qc_wrong", Some(401)),
            4 => (missing.clone(), alice.as_str(), Some(404)),
            _ => (multi.clone(), bob.as_str(), None),
        })
        .collect();
    let outcomes = join_all(
        cases
            .iter()
            .map(|(url, token, _)| app.try_ws(url, Some(token))),
    )
    .await;
    let mut open = Vec::new();
    for ((url, token, want), got) in cases.iter().zip(outcomes) {
        match (want, got) {
            (None, Ok(ws)) => open.push(ws),
            (Some(status), Err((s, body))) => {
                assert_eq!(s, *status, "{url} as {token}: {body}")
            }
            (want, Err((s, body))) => panic!("{url} as {token}: wanted {want:?}, got {s} {body}"),
            (want, Ok(_)) => panic!("{url} as {token}: wanted {want:?}, got a socket"),
        }
    }
    assert_eq!(open.len(), 30);
    app.wait_counts(30, 1).await;
    app.close_all(open).await;

    let (s, _) = app
        .patch_watchlist(&alice, private, json!({"is_public": true}))
        .await;
    assert_eq!(s, 200);
    let ws = app.try_ws(&app.ws_url(private), Some(&bob)).await;
    ws.expect("public now").close().await;
    let (_, me) = app.get("/api/v1/me", &alice).await;
    quotecast::cli::revoke_token(app.db(), me["token_id"].as_i64().unwrap()).unwrap();
    let (s, body) = app.ws_refused(&app.ws_url(private), Some(&alice)).await;
    assert_eq!((s, code(&body)), (401, "unauthorized"));
    let carol = app.user("carol");
    let gone = app.private_watchlist(&carol, json!([])).await;
    app.ws(gone, &carol).await.close().await;
    let (s, _) = app.delete_watchlist(&carol, gone).await;
    assert_eq!(s, 204);
    assert_eq!(app.ws_refused(&app.ws_url(gone), Some(&carol)).await.0, 404);
    app.wait_counts(0, 0).await;
}

/// Returns once a ticket for `private` issued before the call has expired.
///
/// Trying that ticket itself would use it up (and, too early, open a
/// socket). Instead, probe tickets issued after it, which expire no earlier,
/// are tried one by one on `other`: an unexpired probe is refused with 403
/// (wrong watchlist) and opens nothing; the first one refused with 401 has
/// expired, and so has every ticket issued before it.
async fn wait_for_expiry(app: &TestApp, token: &str, private: i64, other: i64) {
    let ttl = app.state.tickets.ttl();
    let every = ttl / 8;
    // One probe per look over the lifetime, and some to spare.
    let mut probes = Vec::new();
    for _ in 0..12 {
        probes.push(app.ticket(token, private).await);
    }
    let mut probes = probes.into_iter();
    support::poll(DEADLINE, every, async || {
        let probe = probes.next().expect("probe tickets outlast the lifetime");
        let url = format!("{}?ticket={probe}", app.ws_url(other));
        match app.try_ws(&url, None).await {
            Err((401, _)) => true,
            Err((403, _)) => false,
            Err((s, body)) => panic!("probe ticket refused with {s}: {body}"),
            Ok(_) => panic!("a ticket for another watchlist was accepted"),
        }
    })
    .await
    .expect("a ticket to expire");
}

/// Case 7: An empty watchlist's snapshot.
async fn empty_watchlist_snapshot(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let id = app.watchlist(&alice, "empty", false, json!([])).await;
    let (ws, snap) = app.open(id, &alice).await;
    assert_eq!(snap["quotes"], json!([]));
    assert_eq!(snap["stale"], false);
    assert!(snap["seq"].is_u64());
    ws.close().await;
}

/// Cases 8 and 9: P/L fields, and an unknown symbol's nulls and error.
async fn pl_and_unknown_symbols(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let items = json!([
        {"symbol": "7203.T", "quantity": 100, "purchase_price": 2400},
        {"symbol": "AAPL", "quantity": 2.5},
        {"symbol": "ZZZZ", "quantity": 1, "purchase_price": 1}
    ]);
    let id = app.private_watchlist(&alice, items).await;
    let (mut ws, snap) = app.open(id, &alice).await;
    assert_eq!(snap["quotes"].as_array().unwrap().len(), 3);
    // Wait until both known symbols and the unknown one have been fetched.
    let snap = eventually("a fresh snapshot", async || {
        ws.send_json(json!({"type": "snapshot"})).await;
        let s = ws.wait_type("snapshot").await;
        if s["stale"] == false {
            Ok(s)
        } else {
            ws.wait_type("quotes").await;
            Err(s)
        }
    })
    .await;
    let toyota = quote(&snap, "7203.T");
    let price = toyota["price"].as_f64().unwrap();
    assert_eq!(toyota["quantity"], 100.0);
    assert_eq!(toyota["purchase_price"], 2400.0);
    assert!((toyota["unrealized_pl"].as_f64().unwrap() - (price - 2400.0) * 100.0).abs() < 1e-6);
    assert_eq!(toyota["currency"], "JPY");
    assert_eq!(toyota["name"], "Toyota Motor Corporation");
    let change = toyota["change"].as_f64().unwrap();
    let prev = toyota["previous_close"].as_f64().unwrap();
    assert!((change - (price - prev)).abs() < 1e-6);
    assert!((toyota["change_percent"].as_f64().unwrap() - change / prev * 100.0).abs() < 1e-6);
    assert!(toyota["market_time"].as_str().unwrap().ends_with('Z'));
    assert!(toyota.get("error").is_none());
    let apple = quote(&snap, "AAPL");
    assert!(apple["price"].is_f64());
    assert_eq!(
        apple["unrealized_pl"],
        Value::Null,
        "no purchase price, no P/L"
    );
    let z = quote(&snap, "ZZZZ");
    assert_eq!(z["error"], "unknown_symbol");
    for field in [
        "price",
        "previous_close",
        "change",
        "change_percent",
        "volume",
        "unrealized_pl",
    ] {
        assert_eq!(z[field], Value::Null, "{field}");
    }
    assert_eq!(z["quantity"], 1.0);
    // Quotes messages carry only what changed, with the same fields.
    let q = ws.wait_type("quotes").await;
    for item in q["quotes"].as_array().unwrap() {
        assert_ne!(
            item["symbol"], "ZZZZ",
            "an unchanged unknown symbol is not re-sent"
        );
        let p = item["price"].as_f64().unwrap();
        if item["symbol"] == "7203.T" {
            assert!((item["unrealized_pl"].as_f64().unwrap() - (p - 2400.0) * 100.0).abs() < 1e-6);
        }
    }
    ws.close().await;
}

/// Bad client input gets `error` and the socket stays open; the tenth bad
/// message closes with 1008; an oversized frame closes with 1009.
async fn bad_client_messages(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let (id, mut ws) = app.watch_one(&alice, json!([])).await;

    ws.ping().await;
    ws.send_text("{not json").await;
    assert_eq!(ws.wait_type("error").await["code"], "malformed_json");
    ws.send_json(json!({"type": "subscribe", "symbols": ["AAPL"]}))
        .await;
    assert_eq!(ws.wait_type("error").await["code"], "unknown_type");
    ws.stream
        .send(Message::Binary(vec![1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(ws.wait_type("error").await["code"], "binary_not_supported");
    ws.send_text("\"just a string\"").await;
    assert_eq!(ws.wait_type("error").await["code"], "malformed_json");
    // Still open and serving.
    ws.send_json(json!({"type": "snapshot"})).await;
    ws.wait_type("snapshot").await;
    for i in 5..10 {
        ws.send_text(format!("bad {i}")).await;
        assert_eq!(ws.wait_type("error").await["code"], "malformed_json");
    }
    // Nine errors so far; the socket is still open.
    ws.ping().await;
    ws.send_text("tenth").await;
    // The tenth is answered too, and the close comes after the answer (both
    // go through the session's one outbox, in order).
    assert_eq!(ws.wait_type("error").await["code"], "malformed_json");
    assert_eq!(ws.wait_close().await, Some(1008));

    let (mut ws, _) = app.open(id, &alice).await;
    ws.send_text(format!(
        "{{\"type\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(5000)
    ))
    .await;
    assert_eq!(ws.wait_close().await, Some(1009));
    let (mut ws, _) = app.open(id, &alice).await;
    ws.stream.send(Message::Binary(vec![0; 1 << 20])).await.ok();
    assert_eq!(ws.wait_close().await, Some(1009));
    app.wait_counts(0, 0).await;
}

/// A snapshot on request carries the current seq (no gap for others), and
/// quotes messages count up by one.
async fn seq_and_snapshot_requests(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let (_, mut ws) = app.watch_one(&alice, items(&["NVDA"])).await;
    let a = ws.wait_type("quotes").await["seq"].as_u64().unwrap();
    let b2 = ws.wait_type("quotes").await["seq"].as_u64().unwrap();
    assert_eq!(b2, a + 1);
    ws.send_json(json!({"type": "snapshot"})).await;
    let snap = ws.wait_type("snapshot").await["seq"].as_u64().unwrap();
    let next = ws.wait_type("quotes").await["seq"].as_u64().unwrap();
    assert_eq!(next, snap + 1);
    ws.close().await;
}

/// Alice's public watchlist of AAPL with a socket of hers and one of bob's
/// on it, past their snapshots: (alice, bob, id, hers, his).
async fn shared_with_bob(app: &TestApp) -> (String, String, i64, Ws, Ws) {
    let alice = app.user("alice");
    let bob = app.user("bob");
    let id = app.watchlist(&alice, "W", true, items(&["AAPL"])).await;
    let (mine, _) = app.open(id, &alice).await;
    let (theirs, _) = app.open(id, &bob).await;
    (alice, bob, id, mine, theirs)
}

/// Item changes reach live sessions as a fresh snapshot; deleting the
/// watchlist closes with 4404 and stops the worker.
async fn live_watchlist_changes(b: Backend) {
    let app = TestApp::spawn(b).await;
    let (alice, _, id, mut mine, mut theirs) = shared_with_bob(&app).await;

    let (s, _) = app
        .add_item(&alice, id, json!({"symbol": "msft", "quantity": 3}))
        .await;
    assert_eq!(s, 201);
    for ws in [&mut mine, &mut theirs] {
        let snap = ws
            .wait_for("snapshot with MSFT", |v| {
                v["type"] == "snapshot"
                    && v["quotes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|q| q["symbol"] == "MSFT")
            })
            .await;
        assert_eq!(quote(&snap, "MSFT")["quantity"], 3.0);
    }
    let (s, _) = app
        .patch_item(
            &alice,
            id,
            "MSFT",
            json!({"quantity": 7, "purchase_price": 400}),
        )
        .await;
    assert_eq!(s, 200);
    let snap = mine
        .wait_for("patched snapshot", |v| {
            v["type"] == "snapshot" && quote(v, "MSFT")["quantity"] == 7.0
        })
        .await;
    assert_eq!(quote(&snap, "MSFT")["purchase_price"], 400.0);
    assert_eq!(app.delete_item(&alice, id, "AAPL").await.0, 204);
    mine.wait_for("snapshot without AAPL", |v| {
        v["type"] == "snapshot"
            && v["quotes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|q| q["symbol"] != "AAPL")
    })
    .await;
    let workers = app.workers().await;
    assert_eq!(workers[0]["symbols"], json!(["MSFT"]));

    assert_eq!(app.delete_watchlist(&alice, id).await.0, 204);
    assert_eq!(mine.wait_close().await, Some(4404));
    assert_eq!(theirs.wait_close().await, Some(4404));
    app.wait_counts(0, 0).await;
}

/// Making a public watchlist private closes other users' sessions on it
/// with 1008 (and they cannot come back); the owner's stay.
async fn going_private_closes_other_users(b: Backend) {
    let app = TestApp::spawn(b).await;
    let (alice, bob, id, mut mine, mut theirs) = shared_with_bob(&app).await;
    let (s, _) = app
        .patch_watchlist(&alice, id, json!({"is_public": false}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(theirs.wait_close().await, Some(1008));
    assert_eq!(app.ws_refused(&app.ws_url(id), Some(&bob)).await.0, 403);
    mine.ping().await;
    app.wait_counts(1, 1).await;
    mine.close().await;
}

/// Revoking a token closes the sessions it opened (header or ticket) with 1008.
async fn revoked_token_closes_sessions(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let other = quotecast::cli::issue_token(app.db(), "alice", Some("second"))
        .unwrap()
        .1;
    let id = app.private_watchlist(&alice, json!([])).await;
    let mut by_header = app.ws(id, &alice).await;
    let ticket = app.ticket(&alice, id).await;
    let mut by_ticket = app
        .try_ws(&format!("{}?ticket={ticket}", app.ws_url(id)), None)
        .await
        .unwrap();
    let mut untouched = app.ws(id, &other).await;
    for ws in [&mut by_header, &mut by_ticket, &mut untouched] {
        ws.wait_type("snapshot").await;
    }
    let (_, me) = app.get("/api/v1/me", &alice).await;
    quotecast::cli::revoke_token(app.db(), me["token_id"].as_i64().unwrap()).unwrap();
    assert_eq!(by_header.wait_close().await, Some(1008));
    assert_eq!(by_ticket.wait_close().await, Some(1008));
    app.wait_counts(1, 1).await;
    untouched.ping().await;
    untouched.close().await;
}

/// Admin: kick (1008), refresh (202), non-admins refused.
async fn admin_kick_and_refresh(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let (id, mut ws) = app.watch_one(&alice, items(&["AAPL"])).await;
    let sid = app.sessions().await[0]["id"].as_u64().unwrap();
    let admin = app.admin_token();
    let (s, body) = app.kick(&alice, sid).await;
    assert_eq!((s, code(&body)), (403, "forbidden"));
    assert_eq!(app.refresh(&alice, id).await.0, 403);
    assert_eq!(app.refresh(admin, id).await.0, 202);
    assert_eq!(app.refresh(admin, 424242).await.0, 404);
    assert_eq!(app.kick(admin, 999999).await.0, 404);
    assert_eq!(app.delete("/admin/v1/sessions/nope", admin).await.0, 404);
    assert_eq!(app.kick(admin, sid).await.0, 204);
    assert_eq!(ws.wait_close().await, Some(1008));
    app.wait_counts(0, 0).await;
    let sessions = app.sessions().await;
    assert!(sessions.is_empty());
}

/// Session limits are enforced before the upgrade: 429 per user, 503 overall.
async fn session_limits(b: Backend) {
    let (app, alice) = TestApp::for_alice_with(b, |s| {
        s.limits.max_sessions = 3;
        s.limits.max_sessions_per_user = 2;
    })
    .await;
    let bob = app.user("bob");
    let id = app.watchlist(&alice, "W", true, json!([])).await;
    let a1 = app.ws(id, &alice).await;
    let a2 = app.ws(id, &alice).await;
    let (s, body) = app.ws_refused(&app.ws_url(id), Some(&alice)).await;
    assert_eq!((s, code(&body)), (429, "too_many_sessions"));
    let b1 = app.ws(id, &bob).await;
    let (s, body) = app.ws_refused(&app.ws_url(id), Some(&bob)).await;
    assert_eq!((s, code(&body)), (503, "unavailable"));
    a1.close().await;
    app.wait_counts(2, 1).await;
    let a3 = app.ws(id, &alice).await;
    app.close_all([a2, b1, a3]).await;
}

/// Churn: 1,000 connect/disconnect cycles over 20 watchlists end at zero.
async fn churn(b: Backend) {
    let (app, alice) = TestApp::for_alice_with(b, |s| s.limits.max_sessions_per_user = 100).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            app.watchlist(
                &alice,
                &format!("W{i}"),
                false,
                json!([{"symbol": format!("S{i}")}, {"symbol": "AAPL"}]),
            )
            .await,
        );
    }
    let app = &app;
    let alice = &alice;
    join_all(ids.iter().map(|&id| async move {
        for round in 0..50 {
            let mut ws = app.ws(id, alice).await;
            if round % 2 == 0 {
                ws.wait_type("snapshot").await;
                ws.close().await;
            } else {
                // Half leave without a close handshake.
                drop(ws);
            }
        }
    }))
    .await;
    app.wait_counts(0, 0).await;
    let opened = app.metric("quotecast_sessions_opened_total").await;
    let closed = app.metric("quotecast_sessions_closed_total").await;
    assert_eq!(opened, 1000.0);
    assert_eq!(closed, 1000.0);
    assert!(app.workers().await.is_empty());
}

/// A client that completes the handshake and never reads: its queue stays
/// bounded (updates are dropped and counted, not queued) and it is cut off
/// within the client timeout although its actor is no longer polled.
async fn stalled_reader_is_dropped(b: Backend) {
    let (app, alice) = TestApp::for_alice_with(b, |s| {
        s.upstream.poll_interval_ms = 20;
        s.realtime.heartbeat_interval_ms = 200;
        s.realtime.client_timeout_ms = 1500;
    })
    .await;
    let id = app
        .watchlist(&alice, "big", false, positions("STALL", 100))
        .await;

    // A small receive window so the server's side fills quickly.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(app.addr).await.unwrap();
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        app.ws_url(id),
    )
    .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {alice}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    let (mut sink, stream) = ws.split();
    // Ask for many large snapshots, then keep talking (so the heartbeat sees
    // a live peer) but never read again.
    let writer = actix_web::rt::spawn(async move {
        for _ in 0..400 {
            if sink
                .send(Message::Text(r#"{"type":"snapshot"}"#.into()))
                .await
                .is_err()
            {
                return;
            }
        }
        loop {
            if sink
                .send(Message::Text(r#"{"type":"ping"}"#.into()))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    });
    // The worker starts dropping instead of queueing...
    eventually("updates dropped for a stalled reader", async || {
        let sessions = app.sessions().await;
        if sessions
            .first()
            .is_some_and(|s| s["dropped"].as_u64() > Some(0))
        {
            return Ok(());
        }
        assert!(!sessions.is_empty(), "session vanished before it lagged");
        Err(format!("{sessions:?}"))
    })
    .await;
    let lagging_since = Instant::now();
    // ...and the session is cut off from outside its unpolled actor, within
    // the client timeout plus a heartbeat of detection slack; the worker goes
    // with it.
    app.wait_counts(0, 0).await;
    assert!(
        lagging_since.elapsed() < Duration::from_millis(1500 + 200 + 2000),
        "took {:?}",
        lagging_since.elapsed()
    );
    assert_eq!(
        app.metric("quotecast_sessions_cut_total").await,
        1.0,
        "cut by the stall watchdog"
    );
    let _ = writer.await;
    drop(stream);
}

/// Pings keep coming whether quotes flow or not, and a peer that answers
/// them is kept well past the client timeout.
async fn pings_with_and_without_data(b: Backend) {
    let (app, alice) = TestApp::for_alice_with(b, |s| {
        s.realtime.heartbeat_interval_ms = 100;
        s.realtime.client_timeout_ms = 600;
    })
    .await;
    let busy = app.watchlist(&alice, "Busy", false, items(&["AAPL"])).await;
    let quiet = app.watchlist(&alice, "Quiet", false, json!([])).await;
    for (id, expect_quotes) in [(busy, true), (quiet, false)] {
        let mut ws = app.ws(id, &alice).await;
        let (mut pings, mut quotes) = (0, 0);
        let started = Instant::now();
        // Twice the client timeout: a peer that only answers pings stays.
        while pings < 3 || started.elapsed() < Duration::from_millis(1200) {
            let msg = tokio::time::timeout(DEADLINE, ws.stream.next())
                .await
                .expect("no ping before the deadline")
                .expect("stream ended")
                .expect("socket error");
            match msg {
                // tungstenite queues the pong; the next read flushes it.
                Message::Ping(_) => pings += 1,
                Message::Text(t) if t.contains(r#""type":"quotes""#) => quotes += 1,
                Message::Close(f) => panic!("closed while answering pings: {f:?}"),
                _ => {}
            }
        }
        // At a 100 ms heartbeat, 1.2 s holds at least 8 pings.
        assert!(pings >= 8, "only {pings} pings in {:?}", started.elapsed());
        assert_eq!(quotes > 0, expect_quotes, "quotes seen: {quotes}");
        assert_eq!(app.sessions().await.len(), 1, "session was dropped");
        ws.close().await;
        app.wait_counts(0, 0).await;
    }
}

/// One relay per HTTP worker thread while the server runs, none after it
/// stops; frames still reach sessions on both threads.
async fn relays_live_with_the_server(b: Backend) {
    let app = TestApp::spawn(b).await;
    let threads = app.state.settings.server.workers as f64;
    let alice = app.user("alice");
    let id = app.private_watchlist(&alice, items(&["AAPL"])).await;
    // Enough sessions that both threads have some (connections are spread
    // over the workers); every one of them gets quotes through its relay.
    let mut sockets = join_all((0..8).map(|_| app.ws(id, &alice))).await;
    for ws in sockets.iter_mut() {
        ws.wait_type("quotes").await;
    }
    assert_eq!(app.metric("quotecast_relays").await, threads);
    assert_eq!(app.metric("quotecast_pool_refreshers").await, threads);
    app.close_all(sockets).await;
    let state = app.state.clone();
    app.stop().await;
    eventually("the relays to end with the server", async || {
        state.metrics.relays.get() == 0
    })
    .await;
    eventually("the pool refreshers to end with the server", async || {
        state.metrics.pool_refreshers.get() == 0
    })
    .await;
}

/// A crowd of sessions that leaves has its memory given back: the sweeps
/// decide, and each HTTP worker thread renews actix's pools, then trims (a
/// trim is counted only after its thread's renewal).
async fn a_crowd_that_leaves_is_trimmed(b: Backend) {
    quotecast::net::raise_fd_limit();
    let app = TestApp::spawn_with(b, |s| {
        s.limits.max_sessions_per_user = 10_000;
        s.limits.connects_per_ip_per_s = 100_000;
    })
    .await;
    let threads = app.state.settings.server.workers as f64;
    let alice = app.user("alice");
    let id = app.private_watchlist(&alice, items(&["AAPL"])).await;
    let n = quotecast::memory::MIN_PEAK + 20;
    let mut crowd = Vec::new();
    while crowd.len() < n {
        let batch = 100.min(n - crowd.len());
        crowd.extend(join_all((0..batch).map(|_| app.ws(id, &alice))).await);
    }
    app.wait_counts(n as u64, 1).await;
    // The sweeps count the sessions once a second: the crowd stays until
    // they have seen it.
    throughout(Duration::from_millis(1_100), async || {
        assert_eq!(app.state.sessions.len(), n)
    })
    .await;
    let trims = async || app.metric("quotecast_memory_trims_total").await;
    assert_eq!(trims().await, 0.0);
    app.close_all(crowd).await;
    eventually("every thread's renewal and trim", async || {
        trims().await >= threads
    })
    .await;
    app.stop().await;
}

/// The harness's own lifecycle: a test that ends without `stop` drops its
/// app, and that ends the app's poll loop, supervisor and workers instead of
/// leaving them ticking until the test binary exits.
async fn a_dropped_test_app_ends_its_tasks(b: Backend) {
    let app = TestApp::spawn(b).await;
    let alice = app.user("alice");
    let id = app.private_watchlist(&alice, items(&["AAPL"])).await;
    let mut ws = app.ws(id, &alice).await;
    ws.wait_type("quotes").await;
    let state = app.state.clone();
    drop(app);
    eventually("the supervisor to stop", async || {
        !state.supervisor.connected()
    })
    .await;
    // A worker ticks every 100 ms while it lives.
    let ticks = state.metrics.worker_ticks.get();
    throughout(Duration::from_millis(500), async || {
        assert_eq!(
            state.metrics.worker_ticks.get(),
            ticks,
            "a worker still ticks"
        );
    })
    .await;
}

/// A peer that reads but never answers pings is dropped after the timeout.
async fn silent_peer_is_dropped(b: Backend) {
    let (app, alice) = TestApp::for_alice_with(b, |s| {
        s.realtime.heartbeat_interval_ms = 200;
        s.realtime.client_timeout_ms = 1500;
    })
    .await;
    let id = app.private_watchlist(&alice, json!([])).await;
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let req = format!(
        "GET /ws/v1/watchlists/{id} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {alice}\r\n\r\n",
        app.addr
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    app.wait_counts(1, 1).await;
    // Read (and ignore pings) until the server closes.
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let outcome = tokio::time::timeout(DEADLINE, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(outcome.is_ok(), "silent peer was never dropped");
    // The close frame (opcode 0x88) carries 1001.
    let close = all
        .windows(4)
        .any(|w| w[0] == 0x88 && w[2] == 0x03 && w[3] == 0xE9);
    assert!(close, "no 1001 close frame");
    app.wait_counts(0, 0).await;
}

/// /metrics carries the series the contract names.
async fn metrics_endpoint(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let (_, mut ws) = app.watch_one(&alice, items(&["AAPL"])).await;
    ws.wait_type("quotes").await;
    let res = app.client().get(app.url("/metrics")).send().await.unwrap();
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = res.text().await.unwrap();
    for series in [
        "quotecast_sessions 1",
        "quotecast_workers 1",
        "quotecast_messages_sent_total",
        "quotecast_messages_dropped_total",
        "quotecast_upstream_requests_total{outcome=\"ok\"}",
        "quotecast_upstream_request_duration_seconds_bucket",
        "quotecast_fanout_duration_seconds_bucket",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    ws.close().await;
}

on_both_backends!(
    a_dropped_test_app_ends_its_tasks,
    connect_then_disconnect,
    sessions_share_a_worker,
    concurrent_connects_one_worker,
    leave_and_join_race,
    worker_stops_and_its_ticks_stop,
    broadcast_and_dead_session,
    access_and_credentials,
    connect_burst_answers_each,
    empty_watchlist_snapshot,
    pl_and_unknown_symbols,
    bad_client_messages,
    seq_and_snapshot_requests,
    live_watchlist_changes,
    revoked_token_closes_sessions,
    going_private_closes_other_users,
    admin_kick_and_refresh,
    session_limits,
    churn,
    stalled_reader_is_dropped,
    silent_peer_is_dropped,
    pings_with_and_without_data,
    relays_live_with_the_server,
    a_crowd_that_leaves_is_trimmed,
    metrics_endpoint,
);
