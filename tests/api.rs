//! REST API, end to end over real HTTP, on SQLite and PostgreSQL.

mod support;

use quotecast::db::{models::StoredQuote, repo};
use reqwest::Method;
use serde_json::{json, Value};
use support::{code, items, numbered, Api, Backend, Body, TestApp};

async fn health_and_me(b: Backend) {
    let app = TestApp::spawn(b).await;
    let (s, body) = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!((s, body), (200, json!({"status": "ok"})));
    let (s, body) = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(body["status"], "ready");

    let alice = app.user("alice");
    let (s, me) = app.get("/api/v1/me", &alice).await;
    assert_eq!(s, 200);
    assert_eq!(me["name"], "alice");
    assert_eq!(me["is_admin"], false);

    // Missing, malformed, unknown and oversized credentials.
    let (s, body) = app.request(Method::GET, "/api/v1/me", None, None).await;
    assert_eq!((s, code(&body)), (401, "unauthorized"));
    let (s, body) = app.get("/api/v1/me", "qc_not_a_real_token").await;
    assert_eq!((s, code(&body)), (401, "unauthorized"));
    let (s, body) = app.get("/api/v1/me", &"x".repeat(5000)).await;
    assert_eq!((s, code(&body)), (401, "unauthorized"));
    let res = app
        .client()
        .get(app.url("/api/v1/me"))
        .header("authorization", "Basic YWxpY2U6cHc=")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // Revoked token.
    let token_id = me["token_id"].as_i64().unwrap();
    quotecast::cli::revoke_token(app.db(), token_id).unwrap();
    let (s, body) = app.get("/api/v1/me", &alice).await;
    assert_eq!((s, code(&body)), (401, "unauthorized"));
}

async fn watchlist_crud(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let (s, created) = app
        .post(
            "/api/v1/watchlists",
            &alice,
            json!({
                "name": "日本株 ポートフォリオ 📈",
                "description": "Tokyo",
                "items": [
                    {"symbol": "7203.t", "quantity": 100, "purchase_price": 2400.0, "memo": "トヨタ"},
                    {"symbol": "AAPL"}
                ]
            }),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["name"], "日本株 ポートフォリオ 📈");
    assert_eq!(created["is_public"], false);
    assert_eq!(
        created["items"][0]["symbol"], "7203.T",
        "symbols are stored upper-cased"
    );
    assert_eq!(created["items"][0]["memo"], "トヨタ");
    assert_eq!(created["items"][1]["quantity"], Value::Null);
    let id = created["id"].as_i64().unwrap();

    let (s, list) = app.get("/api/v1/watchlists", &alice).await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id);

    let (s, got) = app.get(&format!("/api/v1/watchlists/{id}"), &alice).await;
    assert_eq!(s, 200);
    assert_eq!(got["items"].as_array().unwrap().len(), 2);

    let (s, patched) = app
        .patch_watchlist(&alice, id, json!({"name": "Renamed", "is_public": true}))
        .await;
    assert_eq!(s, 200, "{patched}");
    assert_eq!(patched["name"], "Renamed");
    assert_eq!(patched["is_public"], true);
    assert_eq!(patched["description"], "Tokyo", "untouched fields stay");

    // Duplicate names per owner: 409 on create and on rename.
    let other = app.watchlist(&alice, "Other", false, json!([])).await;
    let (s, body) = app
        .post("/api/v1/watchlists", &alice, json!({"name": "Renamed"}))
        .await;
    assert_eq!((s, code(&body)), (409, "duplicate"));
    let (s, body) = app
        .patch_watchlist(&alice, other, json!({"name": "Renamed"}))
        .await;
    assert_eq!((s, code(&body)), (409, "duplicate"));
    // Another user may use the same name.
    let bob = app.user("bob");
    app.watchlist(&bob, "Renamed", false, json!([])).await;

    // Delete removes the items too.
    assert_eq!(app.delete_watchlist(&alice, id).await.0, 204);
    let (s, body) = app.get(&format!("/api/v1/watchlists/{id}"), &alice).await;
    assert_eq!((s, code(&body)), (404, "not_found"));
    let left = app.db().run_sync(move |c| repo::get_items(c, id)).unwrap();
    assert!(
        left.is_empty(),
        "items of a deleted watchlist remain: {left:?}"
    );
    assert_eq!(app.delete_watchlist(&alice, id).await.0, 404);
}

async fn items_crud(b: Backend) {
    let (app, alice, id) = TestApp::with_alice_watching(b, json!([])).await;

    let (s, item) = app
        .add_item(
            &alice,
            id,
            json!({"symbol": "^n225", "quantity": 1.5, "purchase_price": 38000, "memo": "index"}),
        )
        .await;
    assert_eq!(s, 201, "{item}");
    assert_eq!(item["symbol"], "^N225");
    assert_eq!(item["quantity"], 1.5);

    for (bad, status, want) in [
        (json!({"symbol": "^N225"}), 409, "duplicate"),
        (json!({"symbol": "BAD SYMBOL"}), 422, "invalid_value"),
        (json!({"symbol": "A".repeat(21)}), 422, "invalid_value"),
        (json!({"symbol": "X", "quantity": -1}), 422, "invalid_value"),
        (
            json!({"symbol": "X", "purchase_price": "12"}),
            422,
            "invalid_value",
        ),
        (
            json!({"symbol": "X", "memo": "m".repeat(501)}),
            422,
            "invalid_value",
        ),
        (json!({"symbol": "X", "extra": true}), 422, "invalid_value"),
    ] {
        let (s, body) = app.add_item(&alice, id, bad.clone()).await;
        assert_eq!((s, code(&body)), (status, want), "{bad}");
    }

    // PATCH changes only what is given; null clears.
    let one = "%5EN225";
    let (s, p) = app
        .patch_item(&alice, id, one, json!({"quantity": 3}))
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["quantity"], 3.0);
    assert_eq!(p["purchase_price"], 38000.0);
    assert_eq!(p["memo"], "index");
    let (s, p) = app
        .patch_item(
            &alice,
            id,
            one,
            json!({"purchase_price": null, "memo": "メモ"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(p["purchase_price"], Value::Null);
    assert_eq!(p["quantity"], 3.0);
    assert_eq!(p["memo"], "メモ");
    let (s, p) = app.patch_item(&alice, id, one, json!({})).await;
    assert_eq!(s, 200, "an empty patch changes nothing: {p}");
    for (symbol, patch, status, want) in [
        (one, json!({"quantity": -5}), 422, "invalid_value"),
        ("MSFT", json!({"quantity": 1}), 404, "not_found"),
        ("bad%20sym", json!({"quantity": 1}), 404, "not_found"),
    ] {
        let (s, body) = app.patch_item(&alice, id, symbol, patch).await;
        assert_eq!((s, code(&body)), (status, want), "{symbol}");
    }

    assert_eq!(app.delete_item(&alice, id, one).await.0, 204);
    let (s, body) = app.delete_item(&alice, id, one).await;
    assert_eq!((s, code(&body)), (404, "not_found"));

    // Items of a watchlist that does not exist.
    let (s, body) = app
        .add_item(&alice, 999999, json!({"symbol": "AAPL"}))
        .await;
    assert_eq!((s, code(&body)), (404, "not_found"));
}

async fn malformed_and_hostile_input(b: Backend) {
    let (app, alice, id) = TestApp::with_alice_watching(b, json!([])).await;
    let raw = |s: &str| Some(Body::Raw(s.to_owned()));

    let cases: Vec<(Method, String, Option<Body>, u16, &str)> = vec![
        (
            Method::POST,
            "/api/v1/watchlists".into(),
            raw("{\"name\":"),
            400,
            "malformed_json",
        ),
        (
            Method::POST,
            "/api/v1/watchlists".into(),
            raw("not json"),
            400,
            "malformed_json",
        ),
        (
            Method::POST,
            "/api/v1/watchlists".into(),
            raw(""),
            400,
            "malformed_json",
        ),
        (
            Method::POST,
            "/api/v1/watchlists".into(),
            raw("{\"name\": 5}"),
            422,
            "invalid_value",
        ),
        (
            Method::POST,
            "/api/v1/watchlists".into(),
            raw("{\"name\": \"\"}"),
            422,
            "invalid_value",
        ),
        (
            Method::POST,
            "/api/v1/watchlists".into(),
            raw("{}"),
            422,
            "invalid_value",
        ),
        (
            Method::POST,
            "/api/v1/watchlists".into(),
            raw("[]"),
            422,
            "invalid_value",
        ),
        // A body is an object: serde would read an array as the fields in
        // order, and this created a watchlist (found by schemathesis).
        (
            Method::POST,
            "/api/v1/watchlists".into(),
            raw("[\"by position\", null, null, null]"),
            422,
            "invalid_value",
        ),
        (
            Method::POST,
            "/api/v1/ws-tickets".into(),
            raw("[]"),
            422,
            "invalid_value",
        ),
        (
            Method::POST,
            "/api/v1/watchlists".into(),
            Some(Body::Json(json!({"name": "n".repeat(101)}))),
            422,
            "invalid_value",
        ),
        (
            Method::POST,
            "/api/v1/watchlists".into(),
            Some(Body::Json(json!({"name": "a\u{0007}b"}))),
            422,
            "invalid_value",
        ),
        (
            Method::POST,
            "/api/v1/watchlists".into(),
            Some(Body::Json(
                json!({"name": "x", "items": [{"symbol": "A"}, {"symbol": "a"}]}),
            )),
            409,
            "duplicate",
        ),
        (
            Method::POST,
            "/api/v1/watchlists".into(),
            Some(Body::Json(
                json!({"name": "x", "items": [{"symbol": "'; DROP TABLE users; --"}]}),
            )),
            422,
            "invalid_value",
        ),
        (
            Method::PATCH,
            format!("/api/v1/watchlists/{id}"),
            raw("{\"is_public\": \"yes\"}"),
            422,
            "invalid_value",
        ),
        (
            Method::PATCH,
            format!("/api/v1/watchlists/{id}"),
            raw("{"),
            400,
            "malformed_json",
        ),
        (
            Method::GET,
            "/api/v1/watchlists/abc".into(),
            None,
            404,
            "not_found",
        ),
        (
            Method::GET,
            "/api/v1/watchlists/99999999999999999999999".into(),
            None,
            404,
            "not_found",
        ),
        (
            Method::GET,
            "/api/v1/watchlists/424242".into(),
            None,
            404,
            "not_found",
        ),
        (
            Method::GET,
            "/api/v1/nothing-here".into(),
            None,
            404,
            "not_found",
        ),
        (
            Method::PUT,
            "/api/v1/watchlists".into(),
            None,
            405,
            "method_not_allowed",
        ),
        (
            Method::POST,
            "/api/v1/ws-tickets".into(),
            raw("{\"watchlist_id\": \"1\"}"),
            422,
            "invalid_value",
        ),
        (
            Method::POST,
            "/api/v1/ws-tickets".into(),
            raw("{\"watchlist_id\": 424242}"),
            404,
            "not_found",
        ),
        // JSON has one kind of number: 424242.0 is the integer 424242 (found
        // by schemathesis: it was refused 422), 1.5 is no id.
        (
            Method::POST,
            "/api/v1/ws-tickets".into(),
            raw("{\"watchlist_id\": 424242.0}"),
            404,
            "not_found",
        ),
        (
            Method::POST,
            "/api/v1/ws-tickets".into(),
            raw("{\"watchlist_id\": 1.5}"),
            422,
            "invalid_value",
        ),
        // The number as written, not a neighbour: 1000000000000000.1 (the
        // double just above the 1e15 limit) was read as 1e15 and accepted
        // (found by schemathesis).
        (
            Method::POST,
            format!("/api/v1/watchlists/{id}/items"),
            raw("{\"symbol\": \"A\", \"quantity\": 1000000000000000.1}"),
            422,
            "invalid_value",
        ),
        (
            Method::GET,
            "/api/v1/quotes".into(),
            None,
            422,
            "invalid_value",
        ),
        (
            Method::GET,
            "/api/v1/quotes?symbols=AAPL,no%20way".into(),
            None,
            422,
            "invalid_value",
        ),
    ];
    for (method, path, body, status, want) in cases {
        let (s, got) = app.request(method.clone(), &path, Some(&alice), body).await;
        assert_eq!((s, code(&got)), (status, want), "{method} {path}: {got}");
    }

    // A 1 MiB body is refused with 413 and the JSON error, on every JSON endpoint.
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(1 << 20));
    for (method, path) in [
        (Method::POST, "/api/v1/watchlists".to_string()),
        (Method::PATCH, format!("/api/v1/watchlists/{id}")),
        (Method::POST, format!("/api/v1/watchlists/{id}/items")),
        (Method::POST, "/api/v1/ws-tickets".to_string()),
    ] {
        let (s, got) = app
            .request(
                method.clone(),
                &path,
                Some(&alice),
                Some(Body::Raw(big.clone())),
            )
            .await;
        assert_eq!(
            (s, code(&got)),
            (413, "payload_too_large"),
            "{method} {path}"
        );
    }
    // The server is still fine afterwards.
    let (s, _) = app.get("/api/v1/watchlists", &alice).await;
    assert_eq!(s, 200);
}

/// Each call, made with `token`, is refused with 403 `forbidden`.
async fn all_forbidden(
    app: &TestApp,
    token: &str,
    calls: impl IntoIterator<Item = (Method, String, Option<Value>)>,
) {
    for (method, path, body) in calls {
        let (s, got) = app
            .request(method.clone(), &path, Some(token), body.map(Body::Json))
            .await;
        assert_eq!((s, code(&got)), (403, "forbidden"), "{method} {path}");
    }
}

async fn other_users_watchlists(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let bob = app.user("bob");
    let private = app
        .watchlist(&alice, "private", false, items(&["AAPL"]))
        .await;
    let public = app
        .watchlist(&alice, "public", true, items(&["MSFT"]))
        .await;

    // Private: nothing at all for bob.
    let at = format!("/api/v1/watchlists/{private}");
    all_forbidden(
        &app,
        &bob,
        [
            (Method::GET, at.clone(), None),
            (Method::PATCH, at.clone(), Some(json!({"name": "mine"}))),
            (Method::DELETE, at.clone(), None),
            (Method::GET, format!("{at}/items"), None),
            (
                Method::POST,
                format!("{at}/items"),
                Some(json!({"symbol": "X"})),
            ),
            (
                Method::PATCH,
                format!("{at}/items/AAPL"),
                Some(json!({"quantity": 1})),
            ),
            (Method::DELETE, format!("{at}/items/AAPL"), None),
            (
                Method::POST,
                "/api/v1/ws-tickets".to_string(),
                Some(json!({"watchlist_id": private})),
            ),
        ],
    )
    .await;
    // Public: readable, not writable.
    let at = format!("/api/v1/watchlists/{public}");
    let (s, got) = app.get(&at, &bob).await;
    assert_eq!(s, 200);
    assert_eq!(got["items"][0]["symbol"], "MSFT");
    assert_eq!(app.get(&format!("{at}/items"), &bob).await.0, 200);
    let (s, _) = app
        .post("/api/v1/ws-tickets", &bob, json!({"watchlist_id": public}))
        .await;
    assert_eq!(s, 200);
    all_forbidden(
        &app,
        &bob,
        [
            (Method::PATCH, at.clone(), Some(json!({"is_public": false}))),
            (Method::DELETE, at.clone(), None),
            (
                Method::POST,
                format!("{at}/items"),
                Some(json!({"symbol": "X"})),
            ),
            (
                Method::PATCH,
                format!("{at}/items/MSFT"),
                Some(json!({"memo": "hi"})),
            ),
            (Method::DELETE, format!("{at}/items/MSFT"), None),
        ],
    )
    .await;
    // Bob's list has only his own watchlists.
    let (_, list) = app.get("/api/v1/watchlists", &bob).await;
    assert_eq!(list, json!([]));
    // Admin endpoints are for admins.
    for path in ["/admin/v1/stats", "/admin/v1/workers", "/admin/v1/sessions"] {
        let (s, got) = app.get(path, &bob).await;
        assert_eq!((s, code(&got)), (403, "forbidden"), "{path}");
        let (s, _) = app.request(Method::GET, path, None, None).await;
        assert_eq!(s, 401, "{path}");
    }
}

async fn limits(b: Backend) {
    let (app, alice) = TestApp::for_alice_with(b, |s| {
        s.limits.max_watchlists_per_user = 2;
        s.limits.max_items_per_watchlist = 2;
    })
    .await;
    let id = app
        .watchlist(&alice, "one", false, items(&["A", "B"]))
        .await;
    let (s, body) = app
        .post("/api/v1/watchlists", &alice, json!({"name": "too many items", "items": [{"symbol": "A"}, {"symbol": "B"}, {"symbol": "C"}]}))
        .await;
    assert_eq!((s, code(&body)), (422, "limit_exceeded"));
    let (s, body) = app.add_item(&alice, id, json!({"symbol": "C"})).await;
    assert_eq!((s, code(&body)), (422, "limit_exceeded"));
    app.watchlist(&alice, "two", false, json!([])).await;
    let (s, body) = app
        .post("/api/v1/watchlists", &alice, json!({"name": "three"}))
        .await;
    assert_eq!((s, code(&body)), (422, "limit_exceeded"));
    // Limits are per user.
    let bob = app.user("bob");
    app.watchlist(&bob, "one", false, json!([])).await;
}

/// Stored quotes are what the server knows at start; the REST answer comes
/// from memory, so the rows are written and the server restarted.
async fn quotes_from_the_store(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let row = |symbol: &str, price: Option<f64>, unknown: bool| StoredQuote {
        symbol: symbol.into(),
        is_unknown: unknown,
        name: price.map(|_| "Toyota Motor Corporation".into()),
        price,
        previous_close: price.map(|p| p - 10.0),
        volume: Some(1000),
        currency: Some("JPY".into()),
        market_state: Some("REGULAR".into()),
        market_time: Some(1_764_000_000_000_000),
        updated_at: 0,
    };
    let rows = vec![row("7203.T", Some(2510.0), false), row("ZZZZ", None, true)];
    app.db()
        .run_sync(move |c| repo::upsert_latest_quotes(c, &rows))
        .unwrap();
    // Upsert replaces.
    let rows = vec![row("7203.T", Some(2520.0), false)];
    app.db()
        .run_sync(move |c| repo::upsert_latest_quotes(c, &rows))
        .unwrap();
    let app = app.restart(|_| {}).await;

    let (s, body) = app
        .get("/api/v1/quotes?symbols=7203.t,ZZZZ,MSFT", &alice)
        .await;
    assert_eq!(s, 200, "{body}");
    let q = &body["quotes"];
    assert_eq!(q[0]["symbol"], "7203.T");
    assert_eq!(q[0]["price"], 2520.0);
    assert_eq!(q[0]["change"], 10.0);
    assert_eq!(q[0]["market_time"], "2025-11-24T16:00:00Z");
    assert_eq!(q[1]["error"], "unknown_symbol");
    assert_eq!(q[1]["price"], Value::Null);
    // v2: a symbol nobody watches is fetched for the asker (it used to
    // answer null prices).
    assert!(q[2]["price"].is_number(), "{body}");
    assert!(q[2].get("error").is_none());
    let (s, _) = app
        .request(Method::GET, "/api/v1/quotes?symbols=AAPL", None, None)
        .await;
    assert_eq!(s, 401);
    let (s, body) = app.quotes(&alice, &numbered("S", 101)).await;
    assert_eq!((s, code(&body)), (422, "invalid_value"));
}

async fn tickets(b: Backend) {
    let (app, alice, id) = TestApp::with_alice_watching(b, json!([])).await;
    let (s, body) = app
        .post("/api/v1/ws-tickets", &alice, json!({"watchlist_id": id}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(body["expires_in"], 60);
    assert!(body["ticket"].as_str().unwrap().len() >= 32);
    let t1 = app.ticket(&alice, id).await;
    let t2 = app.ticket(&alice, id).await;
    assert_ne!(t1, t2);
    let (s, body) = app
        .request(
            Method::POST,
            "/api/v1/ws-tickets",
            None,
            Some(Body::Json(json!({"watchlist_id": id}))),
        )
        .await;
    assert_eq!((s, code(&body)), (401, "unauthorized"));
}

/// Concurrent writers all succeed (no "database is locked" on SQLite).
async fn concurrent_writes(b: Backend) {
    let (app, alice) =
        TestApp::for_alice_with(b, |s| s.limits.max_watchlists_per_user = 1000).await;
    let results = futures_util::future::join_all((0..64).map(|i| {
        let app = &app;
        let alice = &alice;
        async move {
            app.post(
                "/api/v1/watchlists",
                alice,
                json!({"name": format!("W{i}"), "items": [{"symbol": "AAPL"}, {"symbol": format!("S{i}")}]}),
            )
            .await
        }
    }))
    .await;
    for (s, body) in &results {
        assert_eq!(*s, 201, "{body}");
    }
    let (_, list) = app.get("/api/v1/watchlists", &alice).await;
    assert_eq!(list.as_array().unwrap().len(), 64);
}

on_both_backends!(
    concurrent_writes,
    health_and_me,
    watchlist_crud,
    items_crud,
    malformed_and_hostile_input,
    other_users_watchlists,
    limits,
    quotes_from_the_store,
    tickets,
);
