//! Edges of the WebSocket endpoints past the contract's bad-input list:
//! foreign origins and per-address connect rates, over real sockets.

mod support;

use support::{connect_ws, Api, TestApp};

/// A WebSocket upgrade with a foreign `Origin` is refused 403 before the
/// upgrade; none, the service's own, and configured ones are let in. On
/// both endpoints.
#[actix_web::test]
async fn foreign_origins_are_refused() {
    let (app, alice) = TestApp::for_alice_with(support::Backend::Sqlite, |s| {
        s.server.allowed_origins = vec!["https://dash.example".into()];
    })
    .await;
    let id = app
        .watchlist(&alice, "W", false, serde_json::json!([]))
        .await;
    let own = format!("http://{}", app.addr);
    for path in [format!("/ws/v1/watchlists/{id}"), "/ws/v1".to_owned()] {
        let url = format!("ws://{}{path}", app.addr);
        for (origin, ok) in [
            (None, true),
            (Some(own.as_str()), true),
            (Some("https://dash.example"), true),
            (Some("https://evil.example"), false),
            (Some("http://127.0.0.1:1"), false),
            (Some("null"), false),
        ] {
            let res = support::connect_ws_with(&url, Some(&alice), origin).await;
            match (res, ok) {
                (Ok(ws), true) => ws.close().await,
                (Err((status, body)), false) => {
                    assert_eq!(status, 403, "{origin:?}: {body}");
                    assert_eq!(body["error"]["code"], "forbidden");
                }
                (Ok(_), false) => panic!("{path} let {origin:?} in"),
                (Err(e), true) => panic!("{path} refused {origin:?}: {e:?}"),
            }
        }
    }
    app.wait_counts(0, 0).await;
}

/// Beyond `limits.connects_per_ip_per_s` (burst twice that) upgrades from
/// one address get 429 with `Retry-After`, before any other check.
#[actix_web::test]
async fn connects_per_address_are_limited() {
    let (app, alice) = TestApp::for_alice_with(support::Backend::Sqlite, |s| {
        s.limits.connects_per_ip_per_s = 2;
    })
    .await;
    let id = app
        .watchlist(&alice, "W", false, serde_json::json!([]))
        .await;
    let url = app.ws_url(id);
    let mut open = Vec::new();
    // The burst: 4, however fast.
    for _ in 0..4 {
        open.push(
            connect_ws(&url, Some(&alice))
                .await
                .expect("within the burst"),
        );
    }
    let (status, body) = connect_ws(&url, Some(&alice)).await.err().expect("refused");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_requests");
    // Refused before the credentials are even looked at.
    let (status, _) = connect_ws(&url, None).await.err().expect("refused");
    assert_eq!(status, 429);
    let res = reqwest::Client::new()
        .get(format!("http://{}/ws/v1", app.addr))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // REST is not affected.
    let (s, _) = app.get("/api/v1/me", &alice).await;
    assert_eq!(s, 200);
    for ws in open {
        ws.close().await;
    }
}
