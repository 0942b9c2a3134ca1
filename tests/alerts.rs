//! Price alerts end to end: a real server on a fake Yahoo whose prices the
//! test pins, real HTTP, real WebSockets, and webhook receivers that are
//! small HTTP servers on 127.0.0.1 (so these apps allow private webhook
//! addresses; the refusal of such addresses is tested with the rule on, and
//! never sends traffic anywhere).
//!
//! Prices move one step at a time: [`Market::step`] pins the prices, waits
//! until the fetcher has published a round with them and the evaluator has
//! handled it, so a test can then assert what fired and what did not.

mod support;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use hmac::{Hmac, Mac};
use quotecast::config::{ProviderKind, Settings};
use quotecast::db::repo::{self, Firing};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::fake_yahoo::FakeYahoo;
use support::{eventually, throughout, Api, Backend, TestApp, Ws};

// ---- set-up ---------------------------------------------------------------------

/// Settings of every app here: the fake Yahoo at `base_url` with a fast
/// tick, webhook receivers on loopback allowed, quick retries and reloads.
fn alert_settings(s: &mut Settings, base_url: &str) {
    s.upstream.provider = ProviderKind::Yahoo;
    s.upstream.base_url = base_url.parse().expect("fake base url");
    s.upstream.poll_interval_ms = 100;
    s.upstream.request_timeout_ms = 2000;
    s.upstream.backoff_base_ms = 100;
    s.upstream.backoff_max_ms = 500;
    s.upstream.rate_limit.capacity = 10_000.0;
    s.upstream.rate_limit.refill_per_sec = 10_000.0;
    s.alerts.allow_private_webhooks = true;
    s.alerts.webhook_backoff_ms = 100;
    s.alerts.webhook_timeout_ms = 3000;
    s.alerts.reload_interval_ms = 500;
}

/// A fake Yahoo whose prices stay where they are set, and an app on it.
///
/// A user of its own keeps an alert that never fires on `KEEP`, so that
/// the poller publishes a round every tick whatever the test's alerts do
/// ([`Market::step`] needs one after the prices it set).
struct Market {
    fake: FakeYahoo,
    app: TestApp,
    keeper: (String, i64),
}

impl Market {
    async fn start(backend: Backend) -> Market {
        Self::start_with(backend, |_| {}).await
    }

    async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Market {
        let fake = FakeYahoo::start();
        fake.set_prices_move(false);
        let base = fake.base_url();
        let app = TestApp::spawn_with(backend, |s| {
            alert_settings(s, &base);
            tweak(s)
        })
        .await;
        let token = app.user("keeper");
        let keep = alert(
            &app,
            &token,
            json!({"symbol": "KEEP", "condition": "above", "threshold": 1e12}),
        )
        .await;
        let keeper = (token, keep["id"].as_i64().unwrap());
        Market { fake, app, keeper }
    }

    /// Deletes the keeper's alert: rounds stop when nothing else is wanted.
    async fn drop_keeper(&self) {
        let (token, id) = &self.keeper;
        let (s, _) = self
            .app
            .delete(&format!("/api/v1/alerts/{id}"), token)
            .await;
        assert_eq!(s, 204);
    }

    /// Pins prices for the next answers, without waiting.
    fn set(&self, prices: &[(&str, f64)]) {
        for (symbol, price) in prices {
            self.fake.set_price(symbol, *price);
        }
    }

    /// Pins prices (of symbols being fetched, that is of alerts) and waits
    /// until a round with them has been published and handled by the
    /// evaluator.
    async fn step(&self, prices: &[(&str, f64)]) {
        let before: Vec<u64> = prices
            .iter()
            .map(|(s, _)| self.fake.times_served(s))
            .collect();
        self.set(prices);
        eventually("the new prices fetched", async || {
            let lagging: Vec<&str> = prices
                .iter()
                .zip(&before)
                .filter(|((s, _), n)| self.fake.times_served(s) <= **n)
                .map(|((s, _), _)| *s)
                .collect();
            if lagging.is_empty() {
                Ok(())
            } else {
                Err(format!("not yet: {lagging:?}"))
            }
        })
        .await;
        // The round that carried them is the next one fed to the evaluator
        // or was fed already; either way it is fed once a round after now
        // is (rounds are fed in order).
        let alerts = &self.app.state.alerts;
        let fed = alerts.fed_tick();
        eventually("a round after the new prices", async || {
            alerts.fed_tick() > fed
        })
        .await;
        self.handled().await;
    }

    /// Waits until every round published so far has been handled by the
    /// evaluator.
    async fn handled(&self) {
        let alerts = &self.app.state.alerts;
        let fed = alerts.fed_tick();
        eventually(&format!("round {fed} evaluated"), async || {
            alerts.handled_tick() >= fed
        })
        .await;
    }

    /// Pins a symbol's previous close (its change is then the price's
    /// distance from it).
    fn close(&self, symbol: &str, previous_close: f64) {
        self.fake.set_previous_close(symbol, Some(previous_close));
    }

    /// Stops the server and starts it again on the same database and fake
    /// upstream; `while_down` runs in between and may change its settings.
    async fn restart(self, while_down: impl FnOnce(&mut Settings)) -> Market {
        let Market { fake, app, keeper } = self;
        Market {
            fake,
            app: app.restart(while_down).await,
            keeper,
        }
    }
}

/// Creates an alert; its JSON.
async fn alert(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, body) = app.post("/api/v1/alerts", token, body).await;
    assert_eq!(status, 201, "create alert: {body}");
    body
}

/// An alert on `symbol` above 100 that calls `hook` when it fires.
async fn hook_alert(app: &TestApp, token: &str, symbol: &str, hook: &Hook) -> Value {
    alert(
        app,
        token,
        json!({"symbol": symbol, "condition": "above", "threshold": 100.0,
               "webhook_url": hook.url()}),
    )
    .await
}

/// The id of the caller's first event, once there is one.
async fn first_event_id(app: &TestApp, token: &str) -> i64 {
    eventually("the event", async || {
        events(app, token, 0)
            .await
            .first()
            .map(|e| e["event_id"].as_i64().unwrap())
    })
    .await
}

/// The caller's events after `after`.
async fn events(app: &TestApp, token: &str, after: i64) -> Vec<Value> {
    let (status, body) = app
        .get(&format!("/api/v1/alerts/events?after={after}"), token)
        .await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

/// Symbols of events, in order.
fn symbols(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["symbol"].as_str().unwrap().to_owned())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn get_alert(app: &TestApp, token: &str, id: &Value) -> Value {
    let (status, body) = app.get(&format!("/api/v1/alerts/{id}"), token).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The caller's alerts as `GET /api/v1/alerts` lists them.
async fn list_alerts(app: &TestApp, token: &str) -> Vec<Value> {
    app.get("/api/v1/alerts", token)
        .await
        .1
        .as_array()
        .unwrap()
        .clone()
}

/// `PATCH /api/v1/alerts/{id}` with `changes`: the status and body.
async fn patch_alert(app: &TestApp, token: &str, id: &Value, changes: Value) -> (u16, Value) {
    app.patch(&format!("/api/v1/alerts/{id}"), token, changes)
        .await
}

/// Opens `GET /ws/v1` (no subscription).
async fn multi(app: &TestApp, token: &str) -> Ws {
    app.try_ws(&format!("ws://{}/ws/v1", app.addr), Some(token))
        .await
        .unwrap_or_else(|(s, b)| panic!("upgrade refused: {s} {b}"))
}

/// The 422 envelope with `invalid_value`.
fn assert_invalid(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 422, "{what}: {body}");
    assert_eq!(body["error"]["code"], "invalid_value", "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

// ---- a webhook receiver ---------------------------------------------------------

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    signature: Option<String>,
    event_id: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

#[derive(Default)]
struct HookState {
    /// Statuses to answer, in order; then `then`.
    script: VecDeque<u16>,
    then: u16,
    got: Vec<Delivery>,
}

/// A webhook receiver on 127.0.0.1 that answers scripted statuses and
/// records what it got.
struct Hook {
    addr: SocketAddr,
    state: Arc<Mutex<HookState>>,
    server: actix_web::dev::ServerHandle,
}

impl Hook {
    async fn start(script: &[u16], then: u16) -> Hook {
        let state = Arc::new(Mutex::new(HookState {
            script: script.iter().copied().collect(),
            then,
            got: Vec::new(),
        }));
        let shared = state.clone();
        let server = HttpServer::new(move || {
            let shared = shared.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let shared = shared.clone();
                async move {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let mut s = shared.lock().unwrap();
                    s.got.push(Delivery {
                        signature: header("x-quotecast-signature"),
                        event_id: header("x-quotecast-event-id"),
                        content_type: header("content-type"),
                        body: body.to_vec(),
                    });
                    let status = s.script.pop_front().unwrap_or(s.then);
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                        .body("ok")
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind receiver");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Hook {
            addr,
            state,
            server: handle,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn got(&self) -> Vec<Delivery> {
        self.state.lock().unwrap().got.clone()
    }

    fn answer(&self, then: u16) {
        let mut s = self.state.lock().unwrap();
        s.script.clear();
        s.then = then;
    }

    async fn wait_for(&self, n: usize) -> Vec<Delivery> {
        eventually(&format!("{n} webhook deliveries"), async || {
            let got = self.got();
            if got.len() >= n {
                Ok(got)
            } else {
                Err(format!("{} so far", got.len()))
            }
        })
        .await
    }

    async fn stop(self) {
        self.server.stop(false).await;
    }
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Waits until event `id` of `token`'s shows this webhook status; the event.
async fn wait_webhook(app: &TestApp, token: &str, id: i64, status: &str) -> Value {
    eventually(&format!("event {id} webhook {status}"), async || {
        let all = events(app, token, id - 1).await;
        let ev = all.into_iter().find(|e| e["event_id"] == id);
        match ev {
            Some(e) if e["webhook"]["status"] == status => Ok(e),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

// ---- conditions ---------------------------------------------------------------

/// Every condition fires when it should and not when it should not; `once`
/// disables the alert; events come back in order from `after=`.
async fn conditions_fire_exactly_when_they_should(b: Backend) {
    let m = Market::start(b).await;
    let app = &m.app;
    let alice = app.user("alice");
    m.close("PA", 100.0);
    m.close("PB", 100.0);
    // The crossings start on the far side already.
    let start = [
        ("AB", 90.0),
        ("BE", 110.0),
        ("CA", 110.0),
        ("CB", 90.0),
        ("PA", 100.0),
        ("PB", 100.0),
    ];
    m.set(&start);
    let mut ids = std::collections::HashMap::new();
    for (symbol, condition, threshold) in [
        ("AB", "above", 100.0),
        ("BE", "below", 100.0),
        ("CA", "cross_above", 100.0),
        ("CB", "cross_below", 100.0),
        ("PA", "change_pct_above", 5.0),
        ("PB", "change_pct_below", -5.0),
    ] {
        let a = alert(
            app,
            &alice,
            json!({"symbol": symbol, "condition": condition, "threshold": threshold}),
        )
        .await;
        assert_eq!(a["state"], "armed");
        assert_eq!(a["enabled"], true);
        assert_eq!(a["repeat"], "once");
        ids.insert(symbol, a["id"].clone());
    }
    // Keeps AB fetched once its `once` alert is done with it.
    alert(
        app,
        &alice,
        json!({"symbol": "AB", "condition": "above", "threshold": 1e12}),
    )
    .await;
    // The same prices, now evaluated (the first tick only arms the
    // crossings): nothing is on its side or crossed.
    m.step(&start).await;
    m.step(&start).await;
    assert!(events(app, &alice, 0).await.is_empty());
    // Close, but not there.
    m.step(&[
        ("AB", 99.99),
        ("BE", 100.01),
        ("CA", 120.0),
        ("CB", 80.0),
        ("PA", 104.9),
        ("PB", 95.1),
    ])
    .await;
    assert!(events(app, &alice, 0).await.is_empty());
    // On the threshold (above/below), past it (change), back across
    // (crossings arm for the next tick).
    m.step(&[
        ("AB", 100.0),
        ("BE", 100.0),
        ("CA", 90.0),
        ("CB", 110.0),
        ("PA", 106.0),
        ("PB", 94.0),
    ])
    .await;
    let first = events(app, &alice, 0).await;
    assert_eq!(
        sorted(symbols(&first)),
        ["AB", "BE", "PA", "PB"],
        "{first:?}"
    );
    m.step(&[("CA", 100.5), ("CB", 99.5), ("AB", 120.0)]).await;
    let all = events(app, &alice, 0).await;
    assert_eq!(sorted(symbols(&all[4..])), ["CA", "CB"], "{all:?}");
    assert_eq!(all.len(), 6, "{all:?}");
    // Fired once each, then disabled (and no longer fetched, but for AB).
    m.step(&[("AB", 90.0)]).await;
    m.step(&[("AB", 130.0)]).await;
    assert_eq!(events(app, &alice, 0).await.len(), 6);
    for id in ids.values() {
        let a = get_alert(app, &alice, id).await;
        assert_eq!(
            (&a["enabled"], &a["state"]),
            (&json!(false), &json!("fired")),
            "{a}"
        );
        assert!(a["last_fired_at"].is_string(), "{a}");
    }

    // The events: in id order, with what fired them.
    let ev_ids: Vec<i64> = all
        .iter()
        .map(|e| e["event_id"].as_i64().unwrap())
        .collect();
    assert!(ev_ids.windows(2).all(|w| w[0] < w[1]), "{ev_ids:?}");
    let ab = &all.iter().find(|e| e["symbol"] == "AB").unwrap();
    assert_eq!(ab["type"], "alert");
    assert_eq!(ab["alert_id"], ids["AB"]);
    assert_eq!(ab["condition"], "above");
    assert_eq!(ab["threshold"], 100.0);
    assert_eq!(ab["price"], 100.0);
    assert!(ab["fired_at"].as_str().unwrap().ends_with('Z'), "{ab}");
    assert!(ab["tick"].as_i64().unwrap() > 0, "{ab}");
    assert_eq!(ab["webhook"], Value::Null);
    let pa = &all.iter().find(|e| e["symbol"] == "PA").unwrap();
    assert_eq!(pa["price"], 106.0);
    assert!(
        (pa["change_percent"].as_f64().unwrap() - 6.0).abs() < 1e-9,
        "{pa}"
    );
    // Paging from any point gives the rest, in order.
    assert_eq!(events(app, &alice, ev_ids[2]).await, all[3..].to_vec());
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let (s, page) = app
            .get(
                &format!("/api/v1/alerts/events?after={after}&limit=4"),
                &alice,
            )
            .await;
        assert_eq!(s, 200, "{page}");
        let page = page.as_array().unwrap().clone();
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        after = last["event_id"].as_i64().unwrap();
        paged.extend(page);
    }
    assert_eq!(paged, all);
    // Nobody else sees them.
    let bob = app.user("bob");
    assert!(events(app, &bob, 0).await.is_empty());
}

/// `rearm` fires once on a price oscillating inside the margin, again after
/// a real return; the cooldown holds a re-armed alert back.
async fn rearm_does_not_flap_and_cooldown_holds(b: Backend) {
    let m = Market::start(b).await;
    let app = &m.app;
    let alice = app.user("alice");
    m.set(&[("RA", 95.0), ("CD", 95.0)]);
    let ra = alert(
        app,
        &alice,
        json!({"symbol": "ra", "condition": "above", "threshold": 100.0,
               "repeat": "rearm", "rearm_margin_pct": 1.0}),
    )
    .await;
    assert_eq!(ra["symbol"], "RA");
    m.step(&[("RA", 95.0)]).await;
    let count = async |symbol: &str| {
        let all = events(app, &alice, 0).await;
        all.iter().filter(|e| e["symbol"] == symbol).count()
    };
    m.step(&[("RA", 101.0)]).await;
    assert_eq!(count("RA").await, 1);
    let a = get_alert(app, &alice, &ra["id"]).await;
    assert_eq!(
        (&a["enabled"], &a["state"]),
        (&json!(true), &json!("fired"))
    );
    // Inside the margin (re-armed only below 99): no new firing.
    for p in [99.5, 100.5, 99.0, 100.2, 99.9, 101.0] {
        m.step(&[("RA", p)]).await;
    }
    assert_eq!(count("RA").await, 1, "flapped");
    assert_eq!(get_alert(app, &alice, &ra["id"]).await["state"], "fired");
    m.step(&[("RA", 98.9)]).await;
    assert_eq!(get_alert(app, &alice, &ra["id"]).await["state"], "armed");
    m.step(&[("RA", 100.0)]).await;
    assert_eq!(count("RA").await, 2);

    // Cooldown 3 s: a second firing only 3 s after the first.
    let cd = alert(
        app,
        &alice,
        json!({"symbol": "CD", "condition": "above", "threshold": 100.0,
               "repeat": "rearm", "rearm_margin_pct": 0, "cooldown_s": 3}),
    )
    .await;
    m.step(&[("CD", 95.0)]).await;
    m.step(&[("CD", 101.0)]).await;
    let seen_first = Instant::now();
    assert_eq!(count("CD").await, 1);
    m.step(&[("CD", 99.0)]).await;
    assert_eq!(get_alert(app, &alice, &cd["id"]).await["state"], "armed");
    m.step(&[("CD", 101.0)]).await;
    // Only meaningful while inside the cooldown, which a slow machine may
    // have left already.
    if seen_first.elapsed() < Duration::from_millis(2500) {
        assert_eq!(count("CD").await, 1, "fired inside the cooldown");
    }
    let two = eventually("the second firing after the cooldown", async || {
        let all = events(app, &alice, 0).await;
        let cd: Vec<Value> = all.into_iter().filter(|e| e["symbol"] == "CD").collect();
        if cd.len() == 2 {
            Some(cd)
        } else {
            None
        }
    })
    .await;
    let at =
        |e: &Value| chrono::DateTime::parse_from_rfc3339(e["fired_at"].as_str().unwrap()).unwrap();
    let gap = at(&two[1]) - at(&two[0]);
    assert!(gap >= chrono::Duration::seconds(3), "{gap:?}");
}

// ---- sockets ------------------------------------------------------------------

/// The `alert` frame reaches every socket of the owner, on both endpoints,
/// and no one else's.
async fn alert_frames_reach_the_owners_sockets_only(b: Backend) {
    let m = Market::start(b).await;
    let app = &m.app;
    let alice = app.user("alice");
    let bob = app.user("bob");
    m.set(&[("SK", 150.0), ("OTHER", 10.0)]);
    let alice_list = app
        .private_watchlist(&alice, json!([{"symbol": "OTHER"}]))
        .await;
    let bob_list = app
        .private_watchlist(&bob, json!([{"symbol": "OTHER"}]))
        .await;
    let mut mine = vec![
        app.open(alice_list, &alice).await.0,
        app.open(alice_list, &alice).await.0,
        multi(app, &alice).await,
    ];
    let mut theirs = vec![app.open(bob_list, &bob).await.0, multi(app, &bob).await];
    let a = alert(
        app,
        &alice,
        json!({"symbol": "SK", "condition": "above", "threshold": 100.0}),
    )
    .await;
    for ws in &mut mine {
        let frame = ws.wait_type("alert").await;
        assert_eq!(frame["alert_id"], a["id"], "{frame}");
        assert_eq!(frame["symbol"], "SK");
        assert_eq!(frame["price"], 150.0);
        assert!(frame["event_id"].as_i64().unwrap() > 0);
    }
    let stored = events(app, &alice, 0).await;
    assert_eq!(stored.len(), 1);
    // The frames went out together; by now anything meant for bob would be
    // ahead of the answer to his ping.
    for ws in &mut theirs {
        ws.assert_no_alert("bob").await;
    }
}

// ---- demand ---------------------------------------------------------------------

/// An alert's symbol is fetched with no watchlist open, stops being fetched
/// when its alert is disabled or deleted, and is fetched again when enabled.
async fn alert_symbols_join_and_leave_the_demand(b: Backend) {
    let m = Market::start(b).await;
    let app = &m.app;
    let alice = app.user("alice");
    let a = alert(
        app,
        &alice,
        json!({"symbol": "PIN", "condition": "above", "threshold": 1e9}),
    )
    .await;
    m.drop_keeper().await;
    let fetched = async |more: u64| {
        let n = m.fake.times_served("PIN");
        eventually("PIN fetched", async || {
            m.fake.times_served("PIN") >= n + more
        })
        .await;
    };
    fetched(3).await;
    assert_eq!(app.stats().await["workers"], 0, "no watchlist is open");

    let idle = async || {
        app.stats().await["upstream"]["idle_ticks"]
            .as_u64()
            .unwrap()
    };
    let not_fetched = async || {
        // Once the poller idles, a few more idle ticks with no request.
        let i = idle().await;
        eventually("the poller idle", async || idle().await > i).await;
        let n = m.fake.times_served("PIN");
        let i = idle().await;
        eventually("three idle ticks", async || idle().await >= i + 3).await;
        assert_eq!(m.fake.times_served("PIN"), n, "still fetched");
    };
    let id = a["id"].clone();
    let (s, body) = patch_alert(app, &alice, &id, json!({"enabled": false})).await;
    assert_eq!(s, 200, "{body}");
    not_fetched().await;
    let (s, body) = patch_alert(app, &alice, &id, json!({"enabled": true})).await;
    assert_eq!((s, &body["state"]), (200, &json!("armed")), "{body}");
    fetched(3).await;
    // Two alerts on it: deleting one keeps it fetched.
    let second = alert(
        app,
        &alice,
        json!({"symbol": "PIN", "condition": "below", "threshold": 1.0}),
    )
    .await;
    let (s, _) = app.delete(&format!("/api/v1/alerts/{id}"), &alice).await;
    assert_eq!(s, 204);
    m.handled().await;
    fetched(3).await;
    let (s, _) = app
        .delete(&format!("/api/v1/alerts/{}", second["id"]), &alice)
        .await;
    assert_eq!(s, 204);
    not_fetched().await;
}

// ---- webhooks -------------------------------------------------------------------

/// A webhook is signed with the owner's secret; 500, 500, 200 gives
/// `delivered` after 3 attempts; a rotated secret signs the next ones.
async fn webhooks_are_signed_and_retried(b: Backend) {
    let m = Market::start(b).await;
    let app = &m.app;
    let alice = app.user("alice");
    let hook = Hook::start(&[500, 500], 200).await;
    m.set(&[("WH", 50.0)]);
    alert(
        app,
        &alice,
        json!({"symbol": "WH", "condition": "cross_above", "threshold": 100.0,
               "repeat": "rearm", "rearm_margin_pct": 10, "webhook_url": hook.url()}),
    )
    .await;
    m.step(&[("WH", 50.0)]).await;
    m.step(&[("WH", 150.0)]).await;
    let ev = &events(app, &alice, 0).await[0];
    let id = ev["event_id"].as_i64().unwrap();
    let done = wait_webhook(app, &alice, id, "delivered").await;
    assert_eq!(done["webhook"]["attempts"], 3, "{done}");
    let got = hook.got();
    assert_eq!(got.len(), 3, "{got:?}");

    let (_, me) = app.get("/api/v1/me", &alice).await;
    let secret = me["webhook_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{me}");
    for d in &got {
        assert_eq!(d.body, got[0].body, "every attempt sends the same body");
        assert_eq!(
            d.signature.as_deref(),
            Some(sign(&secret, &d.body).as_str())
        );
        assert_ne!(
            d.signature.as_deref(),
            Some(sign("whsec_other", &d.body).as_str())
        );
        assert_eq!(d.event_id.as_deref(), Some(id.to_string().as_str()));
        assert_eq!(d.content_type.as_deref(), Some("application/json"));
    }
    let body = got[0].json();
    assert_eq!(body["type"], "alert");
    assert_eq!(body["event_id"], id);
    assert_eq!(body["symbol"], "WH");
    assert_eq!(body["price"], 150.0);
    assert_eq!(body["fired_at"], ev["fired_at"]);

    // A new secret signs what comes next.
    let (s, rotated) = app
        .post("/api/v1/me/webhook-secret", &alice, json!({}))
        .await;
    assert_eq!(s, 200, "{rotated}");
    let new_secret = rotated["webhook_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(
        app.get("/api/v1/me", &alice).await.1["webhook_secret"],
        new_secret
    );
    m.step(&[("WH", 80.0)]).await;
    m.step(&[("WH", 120.0)]).await;
    let got = hook.wait_for(4).await;
    let last = &got[3];
    assert_eq!(
        last.signature.as_deref(),
        Some(sign(&new_secret, &last.body).as_str())
    );
    hook.stop().await;
}

/// Attempts stop at `alerts.webhook_max_attempts`: the delivery is `failed`.
async fn webhooks_fail_after_the_last_attempt(b: Backend) {
    let m = Market::start_with(b, |s| s.alerts.webhook_max_attempts = 3).await;
    let app = &m.app;
    let alice = app.user("alice");
    let hook = Hook::start(&[], 503).await;
    m.set(&[("WF", 150.0)]);
    hook_alert(app, &alice, "WF", &hook).await;
    let id = first_event_id(app, &alice).await;
    let failed = wait_webhook(app, &alice, id, "failed").await;
    assert_eq!(failed["webhook"]["attempts"], 3, "{failed}");
    assert!(
        failed["webhook"]["last_error"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{failed}"
    );
    throughout(Duration::from_millis(500), async || {
        assert_eq!(hook.got().len(), 3)
    })
    .await;
    hook.stop().await;
}

/// A delivery pending when the server stops is made after it starts again.
async fn pending_deliveries_survive_a_restart(b: Backend) {
    let m = Market::start_with(b, |s| {
        s.alerts.webhook_max_attempts = 1000;
        s.alerts.webhook_backoff_ms = 200;
    })
    .await;
    let alice = m.app.user("alice");
    let hook = Hook::start(&[], 503).await;
    m.set(&[("RS", 150.0)]);
    hook_alert(&m.app, &alice, "RS", &hook).await;
    hook.wait_for(2).await;
    let ev = events(&m.app, &alice, 0).await[0].clone();
    assert_eq!(ev["webhook"]["status"], "pending", "{ev}");
    let mut tried = 0;
    let m = m
        .restart(|_| {
            tried = hook.got().len();
            hook.answer(200);
        })
        .await;
    let id = ev["event_id"].as_i64().unwrap();
    let done = wait_webhook(&m.app, &alice, id, "delivered").await;
    // Attempts cut short by the stop are not recorded; all others are, and
    // the one that delivered.
    assert!(
        done["webhook"]["attempts"].as_i64().unwrap() >= tried as i64,
        "{done}"
    );
    let got = hook.got();
    assert_eq!(got.last().unwrap().json()["event_id"], id);
    // Stored once: the restart fired nothing again (`once`, disabled).
    assert_eq!(events(&m.app, &alice, 0).await.len(), 1);
    hook.stop().await;
}

/// The address rules apply at delivery too: a URL saved while private
/// addresses were allowed is refused once they are not.
async fn delivery_checks_the_address_again(b: Backend) {
    let m = Market::start(b).await;
    let alice = m.app.user("alice");
    let hook = Hook::start(&[], 200).await;
    m.set(&[("DC", 50.0)]);
    hook_alert(&m.app, &alice, "DC", &hook).await;
    m.step(&[("DC", 50.0)]).await;
    let m = m
        .restart(|s| {
            s.alerts.allow_private_webhooks = false;
            s.alerts.webhook_max_attempts = 1;
        })
        .await;
    m.step(&[("DC", 150.0)]).await;
    let id = first_event_id(&m.app, &alice).await;
    let failed = wait_webhook(&m.app, &alice, id, "failed").await;
    let err = failed["webhook"]["last_error"].as_str().unwrap();
    assert!(err.contains("loopback"), "{err}");
    assert!(hook.got().is_empty(), "nothing sent: {:?}", hook.got());
    hook.stop().await;
}

// ---- storage ------------------------------------------------------------------

/// Two evaluators deciding the same firing (a stale poller beside the new
/// one) store one event: the write is conditional on the version read.
async fn a_firing_is_stored_once_whoever_decides_it(b: Backend) {
    let (app, alice) = TestApp::for_alice(b).await;
    let a = alert(
        &app,
        &alice,
        json!({"symbol": "EO", "condition": "above", "threshold": 1e9}),
    )
    .await;
    let (alert_id, user_id) = (a["id"].as_i64().unwrap(), {
        let (_, me) = app.get("/api/v1/me", &alice).await;
        me["id"].as_i64().unwrap()
    });
    let version = app
        .db()
        .run_sync(|c| repo::get_alert(c, alert_id))
        .unwrap()
        .version;
    let racers: Vec<_> = (0..4)
        .map(|i| {
            let db = app.db().clone();
            std::thread::spawn(move || {
                db.run_sync(|c| {
                    repo::fire_alert(
                        c,
                        &Firing {
                            version,
                            state: "fired",
                            enabled: false,
                            event: quotecast::db::models::NewAlertEvent {
                                alert_id,
                                user_id,
                                symbol: "EO",
                                condition: "above",
                                threshold: 1e9,
                                price: 2e9 + f64::from(i),
                                change_percent: None,
                                fired_at: quotecast::db::now_micros(),
                                tick: 1,
                                webhook_url: None,
                                webhook_status: None,
                                webhook_next_at: None,
                            },
                        },
                    )
                })
            })
        })
        .collect();
    let stored: Vec<_> = racers
        .into_iter()
        .map(|t| t.join().unwrap().expect("no database error"))
        .collect();
    assert_eq!(
        stored.iter().filter(|s| s.is_some()).count(),
        1,
        "{stored:?}"
    );
    assert_eq!(events(&app, &alice, 0).await.len(), 1);
    let now = get_alert(&app, &alice, &a["id"]).await;
    assert_eq!(
        (&now["enabled"], &now["state"]),
        (&json!(false), &json!("fired"))
    );
}

/// The alert tasks (evaluator, webhook deliverer) run with the server and
/// end with it.
async fn alert_tasks_end_with_the_server(b: Backend) {
    let app = TestApp::spawn(b).await;
    let alerts = app.state.alerts.clone();
    assert_eq!(alerts.tasks_running(), 2);
    app.stop().await;
    eventually("the alert tasks to end", async || {
        alerts.tasks_running() == 0
    })
    .await;
}

on_both_backends!(
    conditions_fire_exactly_when_they_should,
    rearm_does_not_flap_and_cooldown_holds,
    alert_frames_reach_the_owners_sockets_only,
    alert_symbols_join_and_leave_the_demand,
    webhooks_are_signed_and_retried,
    webhooks_fail_after_the_last_attempt,
    pending_deliveries_survive_a_restart,
    delivery_checks_the_address_again,
    a_firing_is_stored_once_whoever_decides_it,
    alert_tasks_end_with_the_server,
);

// ---- the REST resource ------------------------------------------------------------

/// Bad input on every field answers 422 with the error envelope.
#[actix_web::test]
async fn bad_input_on_every_field_is_refused() {
    let (app, alice) = TestApp::for_alice(Backend::Sqlite).await;
    let ok = json!({"symbol": "AAPL", "condition": "above", "threshold": 100.0});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let cases = [
        ("symbol empty", with("symbol", json!(""))),
        ("symbol bad", with("symbol", json!("AA PL"))),
        ("symbol long", with("symbol", json!("A".repeat(21)))),
        ("symbol type", with("symbol", json!(5))),
        (
            "symbol missing",
            json!({"condition": "above", "threshold": 1.0}),
        ),
        ("condition", with("condition", json!("sideways"))),
        ("condition type", with("condition", json!(true))),
        (
            "condition missing",
            json!({"symbol": "AAPL", "threshold": 1.0}),
        ),
        ("threshold zero", with("threshold", json!(0))),
        ("threshold negative", with("threshold", json!(-5))),
        ("threshold huge", with("threshold", json!(1e300))),
        ("threshold type", with("threshold", json!("100"))),
        (
            "threshold missing",
            json!({"symbol": "AAPL", "condition": "above"}),
        ),
        (
            "pct threshold",
            json!({"symbol": "AAPL", "condition": "change_pct_above", "threshold": 2e6}),
        ),
        ("repeat", with("repeat", json!("twice"))),
        ("margin negative", with("rearm_margin_pct", json!(-1))),
        ("margin over 100", with("rearm_margin_pct", json!(100.5))),
        ("margin type", with("rearm_margin_pct", json!("1"))),
        ("cooldown negative", with("cooldown_s", json!(-1))),
        ("cooldown huge", with("cooldown_s", json!(100_000_000))),
        ("cooldown fraction", with("cooldown_s", json!(1.5))),
        (
            "webhook scheme",
            with("webhook_url", json!("ftp://example.com/x")),
        ),
        ("webhook not a url", with("webhook_url", json!("not a url"))),
        (
            "webhook credentials",
            with("webhook_url", json!("https://u:p@example.com/")),
        ),
        ("webhook type", with("webhook_url", json!(7))),
        ("note long", with("note", json!("n".repeat(501)))),
        ("note type", with("note", json!(["x"]))),
        ("unknown field", with("colour", json!("red"))),
    ];
    for (what, body) in cases {
        let (s, b) = app.post("/api/v1/alerts", &alice, body).await;
        assert_invalid(s, &b, what);
    }
    assert!(list_alerts(&app, &alice).await.is_empty());

    let a = alert(&app, &alice, ok.clone()).await;
    let path = format!("/api/v1/alerts/{}", a["id"]);
    for (what, body) in [
        ("threshold", json!({"threshold": -1})),
        ("threshold null", json!({"threshold": null})),
        ("threshold type", json!({"threshold": "x"})),
        ("enabled type", json!({"enabled": "yes"})),
        ("enabled null", json!({"enabled": null})),
        ("note long", json!({"note": "n".repeat(501)})),
        ("webhook", json!({"webhook_url": "gopher://x"})),
        ("symbol not patchable", json!({"symbol": "MSFT"})),
        ("condition not patchable", json!({"condition": "below"})),
    ] {
        let (s, b) = app.patch(&path, &alice, body).await;
        assert_invalid(s, &b, what);
    }
    for (what, query) in [
        ("after", "after=abc"),
        ("after negative", "after=-1"),
        ("limit zero", "limit=0"),
        ("limit over", "limit=501"),
    ] {
        let (s, b) = app
            .get(&format!("/api/v1/alerts/events?{query}"), &alice)
            .await;
        assert_invalid(s, &b, what);
    }
    let (s, b) = app
        .request(
            reqwest::Method::POST,
            "/api/v1/alerts",
            Some(&alice),
            Some(support::Body::Raw("{not json".into())),
        )
        .await;
    assert_eq!((s, &b["error"]["code"]), (400, &json!("malformed_json")));
}

/// Create, read, change, delete; owner only; the per-user limit.
#[actix_web::test]
async fn the_alert_resource_is_its_owners() {
    let (app, alice) = TestApp::for_alice_with(Backend::Sqlite, |s| {
        s.limits.max_alerts_per_user = 3;
        // Only for the loopback URL below; the alert never fires.
        s.alerts.allow_private_webhooks = true;
    })
    .await;
    let bob = app.user("bob");
    let a = alert(
        &app,
        &alice,
        json!({"symbol": "7203.t", "condition": "cross_below", "threshold": 0.01,
               "repeat": "rearm", "rearm_margin_pct": 2, "cooldown_s": 60,
               "note": "buy more"}),
    )
    .await;
    for (k, v) in [
        ("symbol", json!("7203.T")),
        ("condition", json!("cross_below")),
        ("threshold", json!(0.01)),
        ("repeat", json!("rearm")),
        ("rearm_margin_pct", json!(2.0)),
        ("cooldown_s", json!(60)),
        ("webhook_url", Value::Null),
        ("note", json!("buy more")),
        ("enabled", json!(true)),
        ("state", json!("armed")),
        ("last_fired_at", Value::Null),
    ] {
        assert_eq!(a[k], v, "{k}: {a}");
    }
    assert!(
        a["id"].as_i64().is_some() && a["created_at"].is_string(),
        "{a}"
    );
    let defaults = alert(
        &app,
        &alice,
        json!({"symbol": "MSFT", "condition": "change_pct_below", "threshold": -50}),
    )
    .await;
    assert_eq!(defaults["repeat"], "once");
    assert_eq!(defaults["rearm_margin_pct"], 0.5);
    assert_eq!(defaults["cooldown_s"], 0);
    assert_eq!(defaults["note"], "");

    let path = format!("/api/v1/alerts/{}", a["id"]);
    assert_eq!(app.get(&path, &alice).await, (200, a.clone()));
    // Someone else's: 403, as for a private watchlist; none: 404.
    for (s, b) in [
        app.get(&path, &bob).await,
        app.patch(&path, &bob, json!({"note": "mine"})).await,
        app.delete(&path, &bob).await,
    ] {
        assert_eq!((s, &b["error"]["code"]), (403, &json!("forbidden")), "{b}");
    }
    for p in ["/api/v1/alerts/999999", "/api/v1/alerts/abc"] {
        let (s, b) = app.get(p, &alice).await;
        assert_eq!((s, &b["error"]["code"]), (404, &json!("not_found")), "{b}");
    }
    let (s, _) = app
        .request(reqwest::Method::GET, "/api/v1/alerts", None, None)
        .await;
    assert_eq!(s, 401);
    let (s, _) = app
        .request(reqwest::Method::PUT, &path, Some(&alice), None)
        .await;
    assert_eq!(s, 405);

    let (s, b) = app
        .patch(
            &path,
            &alice,
            json!({"threshold": 0.02, "note": "", "enabled": false}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (&b["threshold"], &b["note"], &b["enabled"]),
        (&json!(0.02), &json!(""), &json!(false))
    );
    let url = "http://127.0.0.1:9/hook";
    let (s, b) = app.patch(&path, &alice, json!({"webhook_url": url})).await;
    assert_eq!((s, &b["webhook_url"]), (200, &json!(url)), "{b}");
    let (s, b) = app.patch(&path, &alice, json!({})).await;
    assert_eq!(
        (s, &b["webhook_url"], &b["enabled"]),
        (200, &json!(url), &json!(false))
    );
    let (s, b) = app
        .patch(&path, &alice, json!({"webhook_url": null, "enabled": true}))
        .await;
    assert_eq!(
        (s, &b["webhook_url"], &b["enabled"]),
        (200, &Value::Null, &json!(true))
    );
    assert_eq!(b["state"], "armed");

    assert_eq!(list_alerts(&app, &alice).await.len(), 2);
    assert!(list_alerts(&app, &bob).await.is_empty());

    // The limit counts each user's alerts.
    alert(
        &app,
        &alice,
        json!({"symbol": "X", "condition": "above", "threshold": 1e12}),
    )
    .await;
    let (s, b) = app
        .post(
            "/api/v1/alerts",
            &alice,
            json!({"symbol": "Y", "condition": "above", "threshold": 1e12}),
        )
        .await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (422, &json!("limit_exceeded")),
        "{b}"
    );
    assert!(b["error"]["message"].as_str().unwrap().contains('3'), "{b}");
    alert(
        &app,
        &bob,
        json!({"symbol": "Y", "condition": "above", "threshold": 1e12}),
    )
    .await;

    let (s, _) = app.delete(&path, &alice).await;
    assert_eq!(s, 204);
    assert_eq!(app.get(&path, &alice).await.0, 404);
    assert_eq!(app.delete(&path, &alice).await.0, 404);
    alert(
        &app,
        &alice,
        json!({"symbol": "Y", "condition": "above", "threshold": 1e12}),
    )
    .await;
}

/// Webhook URLs that reach loopback, private, link-local, multicast or
/// unspecified addresses are refused unless allowed. Nothing is sent: the
/// alerts that are accepted can never fire.
#[actix_web::test]
async fn webhook_addresses_are_refused_unless_allowed() {
    let urls = [
        ("http://127.0.0.1:8080/x", "loopback"),
        ("http://localhost/x", "loopback"),
        ("http://[::1]/x", "loopback"),
        ("http://10.0.0.8/x", "private"),
        ("https://172.16.5.4/x", "private"),
        ("http://192.168.1.20/x", "private"),
        ("http://[fd00::1]/x", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[fe80::1]/x", "link-local"),
        ("http://224.0.0.1/x", "multicast"),
        ("http://0.0.0.0/x", "unspecified"),
        ("http://[::ffff:127.0.0.1]/x", "loopback"),
    ];
    let body = |url: &str| json!({"symbol": "NEVER", "condition": "above", "threshold": 1e12, "webhook_url": url});
    let strict = TestApp::spawn(Backend::Sqlite).await;
    let alice = strict.user("alice");
    for (url, kind) in urls {
        let (s, b) = strict.post("/api/v1/alerts", &alice, body(url)).await;
        assert_invalid(s, &b, url);
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(kind) && msg.contains("webhook_url"),
            "{url}: {msg}"
        );
    }
    let a = alert(
        &strict,
        &alice,
        json!({"symbol": "NEVER", "condition": "above", "threshold": 1e12}),
    )
    .await;
    let (s, b) = patch_alert(
        &strict,
        &alice,
        &a["id"],
        json!({"webhook_url": "http://10.1.1.1/"}),
    )
    .await;
    assert_invalid(s, &b, "patch");

    let lax =
        TestApp::spawn_with(Backend::Sqlite, |s| s.alerts.allow_private_webhooks = true).await;
    let alice = lax.user("alice");
    for (url, _) in &urls[..6] {
        let (s, b) = lax.post("/api/v1/alerts", &alice, body(url)).await;
        assert_eq!(s, 201, "{url}: {b}");
    }
}
