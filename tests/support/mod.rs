//! Shared test harness: a real server on port 0 against a real database
//! (a temporary SQLite file, or a fresh PostgreSQL database dropped
//! afterwards), real HTTP through reqwest and real WebSockets through
//! tokio-tungstenite. Tests wait for events with deadlines, never fixed sleeps:
//! [`eventually`] (or [`poll`]) for a state to be reached, [`throughout`] for
//! one to hold. [`TestApp::watch`] and [`TestApp::open`] are the usual set-up:
//! a watchlist and sockets on it past their first snapshot.
#![allow(dead_code)]

// Not every test file that includes this module talks to the fake.
#[allow(unused_imports)]
pub use fake_yahoo;
pub mod api;
pub mod cluster;
pub mod raw_ws;
pub mod webdriver;

pub use api::{Api, Http};
// Not every test file checks error codes or sends raw bodies.
#[allow(unused_imports)]
pub use api::{code, Body};
use futures_util::{SinkExt, StreamExt};
use quotecast::config::Settings;
use quotecast::db::Db;
use quotecast::startup::{AppHandle, Application};
use quotecast::state::AppState;
use serde_json::{json, Value};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Default wait for an expected event.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// How often a test looks again while waiting for a state.
pub const POLL: Duration = Duration::from_millis(20);

/// What one look of a wait reports: done (with a value), or not yet (with
/// what it saw, for the message when the wait times out).
pub trait Probe {
    type Value;
    fn outcome(self) -> Result<Self::Value, String>;
}

impl Probe for bool {
    type Value = ();
    fn outcome(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err(String::new())
        }
    }
}

impl<T> Probe for Option<T> {
    type Value = T;
    fn outcome(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: std::fmt::Display> Probe for Result<T, E> {
    type Value = T;
    fn outcome(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Looks with `probe` every `every` until it reports done, for at most
/// `limit` (it always looks at least once, and once more at the end); on
/// timeout, what the last look saw.
pub async fn poll<P: Probe>(
    limit: Duration,
    every: Duration,
    mut probe: impl AsyncFnMut() -> P,
) -> Result<P::Value, String> {
    let end = Instant::now() + limit;
    loop {
        let timed_out = Instant::now() >= end;
        match probe().await.outcome() {
            Ok(v) => return Ok(v),
            Err(last) if timed_out => return Err(last),
            Err(_) => {
                tokio::time::sleep(every.min(end.saturating_duration_since(Instant::now()))).await
            }
        }
    }
}

/// Waits until `probe` reports done, looking every [`POLL`] for at most
/// [`DEADLINE`]; past it, panics naming `what` and what was last seen.
pub async fn eventually<P: Probe>(what: &str, probe: impl AsyncFnMut() -> P) -> P::Value {
    eventually_within(DEADLINE, what, probe).await
}

/// [`eventually`] with another deadline.
pub async fn eventually_within<P: Probe>(
    limit: Duration,
    what: &str,
    probe: impl AsyncFnMut() -> P,
) -> P::Value {
    match poll(limit, POLL, probe).await {
        Ok(v) => v,
        Err(last) if last.is_empty() => panic!("timed out after {limit:?} waiting for {what}"),
        Err(last) => panic!("timed out after {limit:?} waiting for {what}; last seen: {last}"),
    }
}

/// Runs `check` (which asserts) every [`POLL`] for the whole of `span`:
/// for "nothing happens", which has no event to wait for.
pub async fn throughout(span: Duration, mut check: impl AsyncFnMut()) {
    let end = Instant::now() + span;
    loop {
        check().await;
        if Instant::now() >= end {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Which database a test runs on.
pub enum Backend {
    Sqlite,
    Postgres(String),
}

const PG_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";

impl Backend {
    /// The PostgreSQL admin URL if a server answers. When none does, the
    /// PostgreSQL runs are skipped, loudly; with QUOTECAST_REQUIRE_PG=1
    /// (as in CI) a missing server fails the test instead.
    pub fn postgres(test: &str) -> Option<Backend> {
        let url = std::env::var("QUOTECAST_TEST_PG_URL").unwrap_or_else(|_| PG_DEFAULT.to_owned());
        static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
        let available = AVAILABLE.get_or_init(|| {
            quotecast::db::pg_connect(&url)
                .map(|_| ())
                .map_err(|e| e.to_string().lines().next().unwrap_or_default().to_owned())
        });
        match available {
            Ok(()) => Some(Backend::Postgres(url)),
            Err(e) => {
                skip_unless_required(
                    "QUOTECAST_REQUIRE_PG",
                    &format!("PostgreSQL run of {test}: no server at {url} ({e})"),
                    "set QUOTECAST_TEST_PG_URL",
                );
                None
            }
        }
    }
}

/// A service a test needs is `missing`. With `require=1` in the
/// environment (as in CI) the test fails; otherwise it is skipped, and says
/// so past the test harness's capture on purpose, so a local run says
/// plainly what it did not test.
pub fn skip_unless_required(require: &str, missing: &str, hint: &str) {
    if std::env::var(require).is_ok_and(|v| v == "1") {
        panic!("{require}=1 but {missing}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {missing}; {hint}");
}

/// Runs each named `async fn name(Backend)` once on SQLite and once on
/// PostgreSQL, as `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[actix_web::test]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await
            }
            #[actix_web::test]
            async fn postgres() {
                if let Some(b) = $crate::support::Backend::postgres(concat!(module_path!())) {
                    super::$name(b).await
                }
            }
        }
    )* };
}

/// A scratch database that removes itself.
pub enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    pub fn create(backend: &Backend) -> (TestDb, String) {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}/quotecast.db", dir.path().display());
                (TestDb::Sqlite(dir), url)
            }
            Backend::Postgres(admin_url) => {
                use diesel::connection::SimpleConnection;
                static N: AtomicU32 = AtomicU32::new(0);
                let name = format!(
                    "qc_test_{}_{}_{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed),
                    rand::random::<u32>()
                );
                let mut c = quotecast::db::pg_connect(admin_url).expect("pg admin connection");
                c.batch_execute(&format!("CREATE DATABASE {name}"))
                    .expect("create database");
                let mut url = url::Url::parse(admin_url).expect("pg url");
                url.set_path(&name);
                (
                    TestDb::Postgres {
                        admin_url: admin_url.clone(),
                        name,
                    },
                    url.to_string(),
                )
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { admin_url, name } = self {
            use diesel::connection::SimpleConnection;
            if let Ok(mut c) = quotecast::db::pg_connect(admin_url) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

/// Points `s` at the fake Yahoo at `base`, with a request timeout and
/// backoff short enough for tests and a rate budget that never throttles.
pub fn use_fake_yahoo(s: &mut Settings, base: &str) {
    s.upstream.provider = quotecast::config::ProviderKind::Yahoo;
    s.upstream.base_url = base.parse().expect("fake base url");
    s.upstream.request_timeout_ms = 1000;
    s.upstream.backoff_base_ms = 100;
    s.upstream.backoff_max_ms = 400;
    s.upstream.rate_limit.capacity = 10_000.0;
    s.upstream.rate_limit.refill_per_sec = 10_000.0;
}

/// For tests that hold sockets without reading them for a while: a
/// heartbeat every second and a minute before a silent peer is dropped
/// (liveness has its own tests).
pub fn relaxed_liveness(s: &mut Settings) {
    s.realtime.heartbeat_interval_ms = 1000;
    s.realtime.client_timeout_ms = 60_000;
}

/// Settings for tests: port 0, fast ticks and heartbeats, no demo data.
pub fn test_settings(db_url: &str) -> Settings {
    let env = [
        ("QUOTECAST__SERVER__BIND", "127.0.0.1:0"),
        ("QUOTECAST__SERVER__DEMO_DATA", "false"),
        ("QUOTECAST__SERVER__WORKERS", "2"),
        ("QUOTECAST__SERVER__SHUTDOWN_TIMEOUT_S", "2"),
        ("QUOTECAST__DATABASE__URL", db_url),
        ("QUOTECAST__DATABASE__POOL_SIZE", "4"),
        ("QUOTECAST__UPSTREAM__POLL_INTERVAL_MS", "100"),
        // Generous, so a test that holds a socket without reading for a while
        // on a loaded machine is not dropped as silent; the liveness tests
        // set their own short timeouts.
        ("QUOTECAST__REALTIME__HEARTBEAT_INTERVAL_MS", "250"),
        ("QUOTECAST__REALTIME__CLIENT_TIMEOUT_MS", "5000"),
        ("QUOTECAST__REALTIME__AUTH_RECHECK_INTERVAL_MS", "100"),
        // Tests open sockets faster than a browser would; the limit has its
        // own tests.
        ("QUOTECAST__LIMITS__CONNECTS_PER_IP_PER_S", "0"),
    ];
    Settings::load_with_env(
        None,
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .expect("test settings")
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub http: Http,
    pub state: actix_web::web::Data<AppState>,
    pub handle: AppHandle,
    pub db_url: String,
    server: Option<actix_web::rt::task::JoinHandle<std::io::Result<()>>>,
    // Dropped last: the database outlives the server.
    _db: TestDb,
}

/// A test that ends without [`TestApp::stop`] would leave its server
/// running until the test binary exits: sweeps with database trips, the
/// poll loop and the workers, against a database that is dropped next. This
/// ends them (the HTTP workers stay, idle, until the binary exits).
impl Drop for TestApp {
    fn drop(&mut self) {
        if self.server.is_some() {
            self.handle.abandon();
        }
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts the app with settings adjusted by `tweak`.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let (db, url) = TestDb::create(&backend);
        let mut settings = test_settings(&url);
        tweak(&mut settings);
        Self::start(settings, db).await
    }

    /// Starts the app on SQLite with `fake` as its upstream (see
    /// [`use_fake_yahoo`]) and settings adjusted by `tweak`.
    pub async fn on_fake_yahoo(
        fake: &fake_yahoo::FakeYahoo,
        tweak: impl FnOnce(&mut Settings),
    ) -> TestApp {
        let base = fake.base_url();
        Self::spawn_with(Backend::Sqlite, move |s| {
            use_fake_yahoo(s, &base);
            tweak(s);
        })
        .await
    }

    pub async fn start(settings: Settings, db: TestDb) -> TestApp {
        let db_url = settings.database.url.to_string();
        let app = Application::build(settings)
            .await
            .expect("application starts");
        let addr = app.addr();
        let state = app.state();
        let handle = app.handle();
        let server = actix_web::rt::spawn(app.run_until_stopped());
        // Unique, so an app restarted on the same database gets its own.
        let admin_token = user_token(&state.db, &format!("admin-{}", rand::random::<u32>()), true);
        TestApp {
            addr,
            http: Http {
                base: format!("http://{addr}"),
                client: reqwest::Client::new(),
                admin_token,
            },
            state,
            handle,
            db_url,
            server: Some(server),
            _db: db,
        }
    }

    /// Shuts the server down gracefully and waits for it; returns the
    /// database so a test can start again on the same data.
    pub async fn stop(mut self) -> TestDb {
        self.handle.shutdown().await;
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        // Move the database out; the rest drops now.
        std::mem::replace(&mut self._db, TestDb::Sqlite(tempfile::tempdir().unwrap()))
    }

    /// Stops the server and starts it again on the same database;
    /// `while_down` runs in between and may change its settings.
    pub async fn restart(self, while_down: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = self.state.settings.as_ref().clone();
        let db = self.stop().await;
        while_down(&mut settings);
        Self::start(settings, db).await
    }

    pub fn db(&self) -> &Db {
        &self.state.db
    }

    /// A new user (through the same code as `quotecast user add`) and its token.
    pub fn user(&self, name: &str) -> String {
        user_token(&self.state.db, name, false)
    }

    /// A fresh app with alice: the app and her token.
    pub async fn for_alice(b: Backend) -> (TestApp, String) {
        Self::for_alice_with(b, |_| {}).await
    }

    /// [`TestApp::for_alice`] with settings adjusted by `tweak`.
    pub async fn for_alice_with(
        b: Backend,
        tweak: impl FnOnce(&mut Settings),
    ) -> (TestApp, String) {
        let app = TestApp::spawn_with(b, tweak).await;
        let alice = app.user("alice");
        (app, alice)
    }

    /// A fresh app with alice and one private watchlist of hers holding
    /// `items`: the app, her token and the watchlist's id.
    pub async fn with_alice_watching(b: Backend, items: Value) -> (TestApp, String, i64) {
        let (app, alice) = TestApp::for_alice(b).await;
        let id = app.private_watchlist(&alice, items).await;
        (app, alice, id)
    }

    /// A private watchlist named `W` of these items; its id.
    pub async fn private_watchlist(&self, token: &str, items: Value) -> i64 {
        self.watchlist(token, "W", false, items).await
    }

    /// Opens a socket and reads its first message, the snapshot.
    pub async fn open(&self, watchlist_id: i64, token: &str) -> (Ws, Value) {
        let mut ws = self.ws(watchlist_id, token).await;
        let snapshot = ws.wait_type("snapshot").await;
        (ws, snapshot)
    }

    /// `n` sockets on a watchlist, opened one after another, each past its
    /// first snapshot.
    pub async fn open_n(&self, watchlist_id: i64, token: &str, n: usize) -> Vec<Ws> {
        let mut sockets = Vec::with_capacity(n);
        for _ in 0..n {
            sockets.push(self.open(watchlist_id, token).await.0);
        }
        sockets
    }

    /// The set-up most realtime tests start from: a private watchlist `W`
    /// of `items` for `token`, and `n` sockets on it past their snapshots.
    pub async fn watch(&self, token: &str, items: Value, n: usize) -> (i64, Vec<Ws>) {
        let id = self.private_watchlist(token, items).await;
        (id, self.open_n(id, token, n).await)
    }

    /// [`TestApp::watch`] with one socket.
    pub async fn watch_one(&self, token: &str, items: Value) -> (i64, Ws) {
        let (id, mut sockets) = self.watch(token, items, 1).await;
        (id, sockets.pop().expect("one socket"))
    }

    /// Closes `sockets`, one after another, and waits until no session and
    /// no worker is left.
    pub async fn close_all(&self, sockets: impl IntoIterator<Item = Ws>) -> Value {
        for ws in sockets {
            ws.close().await;
        }
        self.wait_counts(0, 0).await
    }

    pub async fn stats(&self) -> Value {
        self.admin("/admin/v1/stats").await
    }

    /// Waits until admin stats satisfy `pred`; panics with the last stats
    /// after the deadline.
    pub async fn wait_stats(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        eventually(what, async || {
            let s = self.stats().await;
            if pred(&s) {
                Ok(s)
            } else {
                Err(s)
            }
        })
        .await
    }

    /// Full fetcher ticks so far (ticks while something was watched).
    pub async fn cycles(&self) -> u64 {
        self.stats().await["upstream"]["cycles"].as_u64().unwrap()
    }

    /// Waits until the fetcher has run `at_least` full ticks in all.
    pub async fn wait_cycles(&self, at_least: u64) {
        self.wait_stats(&format!("{at_least} fetcher cycles"), |s| {
            s["upstream"]["cycles"].as_u64().unwrap() >= at_least
        })
        .await;
    }

    /// Waits for this many sessions and workers.
    pub async fn wait_counts(&self, sessions: u64, workers: u64) -> Value {
        self.wait_stats(&format!("{sessions} sessions and {workers} workers"), |s| {
            s["sessions"] == sessions && s["workers"] == workers
        })
        .await
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let res = self
            .client()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        res.text().await.expect("metrics body")
    }

    /// One unlabelled series of `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        metric_in(&self.metrics_text().await, name)
    }

    pub async fn workers(&self) -> Vec<Value> {
        self.admin_rows("/admin/v1/workers").await
    }

    pub async fn sessions(&self) -> Vec<Value> {
        self.admin_rows("/admin/v1/sessions").await
    }

    /// The rows of an admin list.
    async fn admin_rows(&self, path: &str) -> Vec<Value> {
        match self.admin(path).await {
            Value::Array(rows) => rows,
            other => panic!("{path}: not a list: {other}"),
        }
    }

    pub fn ws_url(&self, watchlist_id: i64) -> String {
        format!("ws://{}/ws/v1/watchlists/{watchlist_id}", self.addr)
    }

    /// Opens a WebSocket with a bearer token.
    pub async fn ws(&self, watchlist_id: i64, token: &str) -> Ws {
        self.try_ws(&self.ws_url(watchlist_id), Some(token))
            .await
            .unwrap_or_else(|(s, b)| panic!("upgrade refused: {s} {b}"))
    }

    /// Opens a WebSocket; a refusal gives its status and JSON body.
    pub async fn try_ws(&self, url: &str, token: Option<&str>) -> Result<Ws, (u16, Value)> {
        connect_ws(url, token).await
    }

    /// Opens a WebSocket that must be refused: the refusal's status and
    /// JSON body.
    pub async fn ws_refused(&self, url: &str, token: Option<&str>) -> (u16, Value) {
        match self.try_ws(url, token).await {
            Ok(_) => panic!("{url} was accepted"),
            Err(refusal) => refusal,
        }
    }

    pub async fn ticket(&self, token: &str, watchlist_id: i64) -> String {
        let (status, body) = self
            .post(
                "/api/v1/ws-tickets",
                token,
                json!({"watchlist_id": watchlist_id}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["ticket"].as_str().unwrap().to_owned()
    }
}

impl Api for TestApp {
    fn http(&self) -> &Http {
        &self.http
    }
}

/// One unlabelled series of a `/metrics` text.
pub fn metric_in(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// Watchlist items of these symbols, without positions.
pub fn items<S: AsRef<str>>(symbols: &[S]) -> Value {
    Value::Array(
        symbols
            .iter()
            .map(|s| json!({"symbol": s.as_ref()}))
            .collect(),
    )
}

/// `n` symbols `{prefix}0`, `{prefix}1`, ...
pub fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Watchlist items of [`numbered`] symbols, each a position of one.
pub fn positions(prefix: &str, n: usize) -> Value {
    let item = |symbol| json!({"symbol": symbol, "quantity": 1});
    Value::Array(numbered(prefix, n).into_iter().map(item).collect())
}

/// The quote of `symbol` in a `snapshot` or `quotes` message.
pub fn quote<'a>(msg: &'a Value, symbol: &str) -> &'a Value {
    msg["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["symbol"] == symbol)
        .unwrap_or_else(|| panic!("{symbol} missing from {msg}"))
}

/// Creates a user the way `quotecast user add` does; returns its token.
pub fn user_token(db: &Db, name: &str, admin: bool) -> String {
    quotecast::cli::add_user(db, name, admin)
        .expect("user created")
        .2
}

/// Opens a WebSocket on any server; a refusal gives its status and JSON
/// body.
pub async fn connect_ws(url: &str, token: Option<&str>) -> Result<Ws, (u16, Value)> {
    connect_ws_with(url, token, None).await
}

/// [`connect_ws`] with an `Origin` header, as a browser sends.
pub async fn connect_ws_with(
    url: &str,
    token: Option<&str>,
    origin: Option<&str>,
) -> Result<Ws, (u16, Value)> {
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((stream, _)) => Ok(Ws { stream }),
        Err(tungstenite::Error::Http(res)) => {
            let status = res.status().as_u16();
            let body = res
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((status, body))
        }
        Err(e) => panic!("websocket connect failed: {e}"),
    }
}

/// A WebSocket client.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the client saw next.
#[derive(Debug)]
pub enum Event {
    Json(Value),
    Closed(Option<u16>),
}

impl Ws {
    /// The next text message or close, answering pings on the way.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(end, self.stream.next())
                .await
                .ok()?;
            match msg {
                None => return Some(Event::Closed(None)),
                Some(Err(_)) => return Some(Event::Closed(None)),
                Some(Ok(Message::Text(t))) => {
                    return Some(Event::Json(
                        serde_json::from_str(&t).expect("server sends JSON"),
                    ))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Some(Event::Closed(frame.map(|f| u16::from(f.code))))
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next event before `end`; panics naming `what` after it.
    async fn next_before(&mut self, end: Instant, what: &str) -> Event {
        let left = end.saturating_duration_since(Instant::now());
        self.next_event(left)
            .await
            .unwrap_or_else(|| panic!("timed out waiting for {what}"))
    }

    /// Waits for a JSON message matching `pred`, skipping others.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + DEADLINE;
        loop {
            match self.next_before(end, what).await {
                Event::Json(v) if pred(&v) => return v,
                Event::Json(_) => continue,
                Event::Closed(code) => panic!("closed ({code:?}) while waiting for {what}"),
            }
        }
    }

    pub async fn wait_type(&mut self, kind: &str) -> Value {
        self.wait_for(kind, |v| v["type"] == kind).await
    }

    /// Sends a `ping` and waits for its `pong`: the socket is open and
    /// served.
    pub async fn ping(&mut self) {
        self.send_json(json!({"type": "ping"})).await;
        self.wait_type("pong").await;
    }

    /// Sends a `ping` and fails on any `alert` frame before its `pong`: by
    /// then anything meant for this socket would have arrived.
    pub async fn assert_no_alert(&mut self, whose: &str) {
        self.send_json(json!({"type": "ping"})).await;
        let end = Instant::now() + DEADLINE;
        loop {
            match self.next_before(end, "pong").await {
                Event::Json(v) if v["type"] == "pong" => return,
                Event::Json(v) => assert_ne!(v["type"], "alert", "{whose} got an alert: {v}"),
                other => panic!("{whose}: no pong: {other:?}"),
            }
        }
    }

    /// Waits for the close frame, skipping messages; returns its code.
    pub async fn wait_close(&mut self) -> Option<u16> {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Event::Closed(code) = self.next_before(end, "close").await {
                return code;
            }
        }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(v.to_string()).await
    }

    pub async fn close(mut self) {
        let _ = self
            .stream
            .close(Some(tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
        // Read until the server's close reply: the handshake is then done
        // (the server drops the TCP connection after its linger period).
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(m)) = self.stream.next().await {
                if m.is_close() {
                    break;
                }
            }
        })
        .await;
    }
}
