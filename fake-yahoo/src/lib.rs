//! A fake Yahoo Finance for integration tests and benchmarks.
//!
//! It speaks the real wire format (field names and error bodies of the
//! repository's `tests/fixtures/yahoo/`), on `127.0.0.1:0`, on its own thread
//! with its own actix system, so it serves the same whether the test runs under
//! `#[actix_web::test]`, `#[tokio::test]` or no runtime at all.
//!
//! * Prices move: each time a symbol is served its price rises by [`PRICE_STEP`]
//!   from a base derived from the symbol (see [`FakeYahoo::price_at`]).
//! * Unknown symbols (default: any starting with `ZZZZ`) are left out of spark
//!   answers and get Yahoo's 404 `chart.error` body from the chart endpoint.
//! * Faults (429, 503, garbage, hang, any custom answer) for the next N requests
//!   or until cleared, switchable while the server runs.
//! * Every request is recorded, so tests can count upstream traffic and wait for
//!   it instead of sleeping.
//!
//! Dropping the [`FakeYahoo`] stops the server (hanging requests included) and
//! joins its thread.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

macro_rules! fixture {
    ($name:literal) => {
        // The fixtures stay in the repository's tests/, where the server's
        // parser tests read them too.
        include_str!(concat!("../../tests/fixtures/yahoo/", $name))
    };
}

/// Yahoo's answer to a spark request for more than [`YAHOO_MAX_BATCH`] symbols (400).
pub const TOO_MANY_SYMBOLS_BODY: &str = fixture!("spark_too_many_symbols_400.json");
/// Yahoo's answer for an unknown symbol on the chart endpoint (404).
pub const NOT_FOUND_BODY: &str = fixture!("chart_unknown_404.json");
/// Yahoo's rate-limit answer (429, plain text).
pub const RATE_LIMITED_BODY: &str = fixture!("rate_limited_429.txt");
/// Yahoo's outage page (503, HTML).
pub const SERVER_ERROR_BODY: &str = fixture!("server_error_503.html");
/// What [`Fault::Garbage`] sends with status 200.
pub const GARBAGE_BODY: &[u8] = b"\x00\x1f\x8b{\"spark\":{\"result\":[{\"symbol\":";

/// Most symbols Yahoo accepts in one spark request.
pub const YAHOO_MAX_BATCH: usize = 20;
/// How much a symbol's price rises each time it is served (while prices move).
pub const PRICE_STEP: f64 = 0.25;
/// How often hanging and delayed requests look whether they may go on.
const POLL: Duration = Duration::from_millis(5);
/// A hang never outlives this, so a forgotten hang cannot keep a test alive.
const MAX_HANG: Duration = Duration::from_secs(600);

/// Which endpoint a request hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Spark,
    Chart,
    /// Any other path (answered 404).
    Other,
}

/// A misbehaviour to inject instead of the normal answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 429 with the plain-text fixture body; `retry_after` is the header value
    /// verbatim (seconds or an HTTP-date).
    RateLimited { retry_after: Option<String> },
    /// 503 with the HTML fixture body.
    ServerError { retry_after: Option<String> },
    /// 200 with a body that is not JSON.
    Garbage,
    /// No answer until the faults are cleared (then the normal answer) or the
    /// server stops.
    Hang,
    /// Anything else: status, content type and body as given.
    Custom {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    },
}

impl Fault {
    pub fn rate_limited(retry_after_secs: Option<u64>) -> Self {
        Fault::RateLimited {
            retry_after: retry_after_secs.map(|s| s.to_string()),
        }
    }

    pub fn server_error() -> Self {
        Fault::ServerError { retry_after: None }
    }
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub endpoint: Endpoint,
    pub path: String,
    /// Spark: the `symbols` list (upper-cased); chart: the one symbol.
    pub symbols: Vec<String>,
    pub received_at: Instant,
    pub user_agent: Option<String>,
    pub accept_encoding: Option<String>,
    /// The fault it was answered with, if any.
    pub fault: Option<Fault>,
}

impl RequestRecord {
    pub fn symbol_count(&self) -> usize {
        self.symbols.len()
    }
}

/// A running fake Yahoo. All setters take effect for the next request.
pub struct FakeYahoo {
    shared: Arc<Shared>,
    port: u16,
    server: Option<actix_web::dev::ServerHandle>,
    thread: Option<JoinHandle<()>>,
}

impl FakeYahoo {
    /// Starts the server; it is accepting connections when this returns.
    pub fn start() -> Self {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("fake yahoo: bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("fake yahoo: local addr")
            .port();
        let shared = Arc::new(Shared::default());
        let data = web::Data::from(Arc::clone(&shared));
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("fake-yahoo".into())
            .spawn(move || {
                let result = actix_web::rt::System::new().block_on(async move {
                    let server = HttpServer::new(move || {
                        App::new()
                            // Yahoo gzips its answers; so does the fake, so the
                            // client's decompression is exercised in every test.
                            .wrap(actix_web::middleware::Compress::default())
                            .app_data(data.clone())
                            .route("/v7/finance/spark", web::get().to(spark))
                            .route("/v8/finance/chart/{symbol}", web::get().to(chart))
                            .default_service(web::to(other))
                    })
                    .workers(1)
                    // The test process owns Ctrl-C, not the fake.
                    .disable_signals()
                    .shutdown_timeout(0)
                    .listen(listener)?
                    .run();
                    let _ = handle_tx.send(server.handle());
                    server.await
                });
                if let Err(e) = result {
                    eprintln!("fake yahoo stopped with an error: {e}");
                }
            })
            .expect("fake yahoo: spawn thread");
        let server = handle_rx.recv().expect("fake yahoo: server did not start");
        Self {
            shared,
            port,
            server: Some(server),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server and joins its thread; also done on drop.
    pub fn stop(&mut self) {
        self.state().stopping = true;
        if let Some(server) = self.server.take() {
            // The stop command is sent when `stop` is called; awaiting the
            // returned future would only wait for completion, which the join
            // below does too.
            drop(server.stop(false));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    // --- answers --------------------------------------------------------------

    /// Spark answers in the legacy flat shape instead of the current one.
    pub fn set_legacy_shape(&self, legacy: bool) {
        self.state().legacy = legacy;
    }

    /// Symbols starting with `prefix` are unknown (`None`: no prefix rule).
    /// Default `Some("ZZZZ")`.
    pub fn set_unknown_prefix(&self, prefix: Option<&str>) {
        self.state().unknown_prefix = prefix.map(str::to_ascii_uppercase);
    }

    /// Makes one symbol unknown (or known again), besides the prefix rule.
    pub fn set_unknown(&self, symbol: &str, unknown: bool) {
        toggle(&mut self.state().unknown, symbol, unknown);
    }

    /// A known symbol that spark answers leave out (as Yahoo sometimes does), so
    /// only the chart endpoint reports it.
    pub fn set_omitted_from_spark(&self, symbol: &str, omitted: bool) {
        toggle(&mut self.state().omitted_from_spark, symbol, omitted);
    }

    /// Marks a symbol's market closed: its last trade lies outside
    /// `currentTradingPeriod.regular` (and `marketState` is CLOSED when sent).
    pub fn set_market_closed(&self, symbol: &str, closed: bool) {
        toggle(&mut self.state().closed, symbol, closed);
    }

    /// Whether `meta` carries `marketState` (REGULAR/CLOSED). Default false, as
    /// the chart and spark endpoints usually leave it out.
    pub fn set_market_state_field(&self, send: bool) {
        self.state().market_state_field = send;
    }

    /// Whether prices move on each request. Default true.
    pub fn set_prices_move(&self, moving: bool) {
        self.state().prices_move = moving;
    }

    /// Sets a symbol's price: its next answer carries exactly `price` (which is
    /// also its previous close, unless one was set with
    /// [`Self::set_previous_close`]), later ones move on from there.
    pub fn set_price(&self, symbol: &str, price: f64) {
        let mut state = self.state();
        let symbol = symbol.to_ascii_uppercase();
        state.served.insert(symbol.clone(), 0);
        state.base_prices.insert(symbol, price);
    }

    /// Pins a symbol's previous close (so its change is the price's distance
    /// from it); `None` goes back to the previous close following the price.
    pub fn set_previous_close(&self, symbol: &str, close: Option<f64>) {
        let mut state = self.state();
        let symbol = symbol.to_ascii_uppercase();
        match close {
            Some(c) => state.previous_closes.insert(symbol, c),
            None => state.previous_closes.remove(&symbol),
        };
    }

    /// Wait this long before every answer (faults included).
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// Spark requests with more symbols than this answer 400. Default 20.
    pub fn set_max_batch(&self, max: usize) {
        self.state().max_batch = max;
    }

    /// The price the `n`-th answer (counting from 0) for `symbol` carries while
    /// prices move and no price was set.
    pub fn price_at(symbol: &str, n: u64) -> f64 {
        base_price(&symbol.to_ascii_uppercase()) + PRICE_STEP * n as f64
    }

    /// The price of the latest answer served for `symbol`, if any.
    pub fn last_price(&self, symbol: &str) -> Option<f64> {
        let state = self.state();
        state.last_prices.get(&symbol.to_ascii_uppercase()).copied()
    }

    /// How many answers carried `symbol` (spark and chart).
    pub fn times_served(&self, symbol: &str) -> u64 {
        let state = self.state();
        state
            .served_total
            .get(&symbol.to_ascii_uppercase())
            .copied()
            .unwrap_or(0)
    }

    // --- faults ---------------------------------------------------------------

    /// The next `n` requests (any endpoint) get `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.set_fault(fault, None, Some(n));
    }

    /// The next `n` requests to `endpoint` get `fault`; others answer normally.
    pub fn fail_next_on(&self, endpoint: Endpoint, n: usize, fault: Fault) {
        self.set_fault(fault, Some(endpoint), Some(n));
    }

    /// Every request gets `fault` until [`Self::clear_faults`].
    pub fn fail_all(&self, fault: Fault) {
        self.set_fault(fault, None, None);
    }

    /// Every request to `endpoint` gets `fault` until cleared.
    pub fn fail_all_on(&self, endpoint: Endpoint, fault: Fault) {
        self.set_fault(fault, Some(endpoint), None);
    }

    /// Back to normal answers; requests hanging now get their normal answer.
    pub fn clear_faults(&self) {
        let mut state = self.state();
        state.fault = None;
        state.hang_generation += 1;
    }

    fn set_fault(&self, fault: Fault, only: Option<Endpoint>, remaining: Option<usize>) {
        self.state().fault = Some(ActiveFault {
            fault,
            only,
            remaining,
        });
    }

    // --- counters -------------------------------------------------------------

    pub fn spark_requests(&self) -> usize {
        self.count(Endpoint::Spark)
    }

    pub fn chart_requests(&self) -> usize {
        self.count(Endpoint::Chart)
    }

    pub fn total_requests(&self) -> usize {
        self.state().requests.len()
    }

    /// Most symbols seen in one spark request.
    pub fn max_spark_symbols(&self) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.endpoint == Endpoint::Spark)
            .map(RequestRecord::symbol_count)
            .max()
            .unwrap_or(0)
    }

    /// Every request since start or the last reset, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state().requests.clone()
    }

    /// Forgets recorded requests (prices keep moving from where they are).
    pub fn reset_counters(&self) {
        self.state().requests.clear();
    }

    /// Polls until at least `n` spark requests arrived; false at the deadline.
    pub fn wait_for_spark_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |f| f.spark_requests() >= n)
    }

    /// Polls until at least `n` chart requests arrived; false at the deadline.
    pub fn wait_for_chart_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |f| f.chart_requests() >= n)
    }

    /// Polls `condition` every few milliseconds until it holds; false at the
    /// deadline. Blocks the calling thread: from async tests call it through
    /// `spawn_blocking`, or use [`Self::wait_until_async`].
    pub fn wait_until(&self, timeout: Duration, condition: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(answer) = self.settled(deadline, &condition) {
                return answer;
            }
            std::thread::sleep(POLL);
        }
    }

    /// [`Self::wait_until`] that yields to the runtime between polls, for async
    /// tests whose own tasks must run meanwhile.
    pub async fn wait_until_async(
        &self,
        timeout: Duration,
        condition: impl Fn(&Self) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(answer) = self.settled(deadline, &condition) {
                return answer;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A wait's answer, once it has one: true when `condition` holds, false
    /// past `deadline`.
    fn settled(&self, deadline: Instant, condition: &impl Fn(&Self) -> bool) -> Option<bool> {
        if condition(self) {
            Some(true)
        } else {
            (Instant::now() >= deadline).then_some(false)
        }
    }

    fn count(&self, endpoint: Endpoint) -> usize {
        let state = self.state();
        state
            .requests
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .count()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }
}

impl Drop for FakeYahoo {
    fn drop(&mut self) {
        self.stop();
    }
}

fn toggle(set: &mut HashSet<String>, symbol: &str, on: bool) {
    let symbol = symbol.to_ascii_uppercase();
    if on {
        set.insert(symbol);
    } else {
        set.remove(&symbol);
    }
}

// --- server side -------------------------------------------------------------

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not take the server down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct ActiveFault {
    fault: Fault,
    only: Option<Endpoint>,
    /// `None`: until cleared.
    remaining: Option<usize>,
}

struct State {
    legacy: bool,
    unknown_prefix: Option<String>,
    unknown: HashSet<String>,
    omitted_from_spark: HashSet<String>,
    closed: HashSet<String>,
    market_state_field: bool,
    prices_move: bool,
    delay: Duration,
    max_batch: usize,
    fault: Option<ActiveFault>,
    /// Bumped by `clear_faults`; a hanging request waits for a change.
    hang_generation: u64,
    stopping: bool,
    /// Per symbol: answers since its price was last set, the step count.
    served: HashMap<String, u64>,
    /// Per symbol: all answers, for tests.
    served_total: HashMap<String, u64>,
    base_prices: HashMap<String, f64>,
    /// Previous closes pinned apart from the price.
    previous_closes: HashMap<String, f64>,
    last_prices: HashMap<String, f64>,
    requests: Vec<RequestRecord>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            legacy: false,
            unknown_prefix: Some("ZZZZ".into()),
            unknown: HashSet::new(),
            omitted_from_spark: HashSet::new(),
            closed: HashSet::new(),
            market_state_field: false,
            prices_move: true,
            delay: Duration::ZERO,
            max_batch: YAHOO_MAX_BATCH,
            fault: None,
            hang_generation: 0,
            stopping: false,
            served: HashMap::new(),
            served_total: HashMap::new(),
            base_prices: HashMap::new(),
            previous_closes: HashMap::new(),
            last_prices: HashMap::new(),
            requests: Vec::new(),
        }
    }
}

impl State {
    fn is_unknown(&self, symbol: &str) -> bool {
        self.unknown.contains(symbol)
            || self
                .unknown_prefix
                .as_deref()
                .is_some_and(|p| symbol.starts_with(p))
    }

    /// Records the request and decides whether it gets a fault.
    fn admit(&mut self, endpoint: Endpoint, req: &HttpRequest, symbols: Vec<String>) -> Admission {
        let fault = match &mut self.fault {
            Some(active) if active.only.is_none_or(|e| e == endpoint) => {
                let fault = active.fault.clone();
                if let Some(left) = &mut active.remaining {
                    *left = left.saturating_sub(1);
                    if *left == 0 {
                        self.fault = None;
                    }
                }
                Some(fault)
            }
            _ => None,
        };
        self.requests.push(RequestRecord {
            endpoint,
            path: req.path().to_owned(),
            symbols,
            received_at: Instant::now(),
            user_agent: header(req, "user-agent"),
            accept_encoding: header(req, "accept-encoding"),
            fault: fault.clone(),
        });
        Admission {
            fault,
            delay: self.delay,
            hang_generation: self.hang_generation,
        }
    }

    /// Next price of a symbol; counts the answer.
    fn serve(&mut self, symbol: &str) -> Served {
        let base = self
            .base_prices
            .get(symbol)
            .copied()
            .unwrap_or_else(|| base_price(symbol));
        let steps = self.served.entry(symbol.to_owned()).or_insert(0);
        let price = if self.prices_move {
            base + PRICE_STEP * *steps as f64
        } else {
            base
        };
        *steps += 1;
        *self.served_total.entry(symbol.to_owned()).or_insert(0) += 1;
        self.last_prices.insert(symbol.to_owned(), price);
        Served {
            symbol: symbol.to_owned(),
            price,
            previous_close: self.previous_closes.get(symbol).copied().unwrap_or(base),
            volume: 1_000_000 + 100 * *steps as i64,
            closed: self.closed.contains(symbol),
            market_state_field: self.market_state_field,
        }
    }
}

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    let value = req.headers().get(name)?.to_str().ok()?;
    Some(value.to_owned())
}

struct Admission {
    fault: Option<Fault>,
    delay: Duration,
    hang_generation: u64,
}

/// One symbol's answer data.
struct Served {
    symbol: String,
    price: f64,
    previous_close: f64,
    volume: i64,
    closed: bool,
    market_state_field: bool,
}

/// A deterministic starting price per symbol, somewhere in 100..10000 with two
/// decimals, so different symbols have visibly different prices.
fn base_price(symbol: &str) -> f64 {
    let hash = symbol.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    });
    100.0 + f64::from(hash % 990_000) / 100.0
}

async fn spark(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    let symbols: Vec<String> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .filter(|(key, _)| key == "symbols")
        .flat_map(|(_, value)| {
            value
                .split(',')
                .map(|s| s.trim().to_ascii_uppercase())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    let admission = shared.lock().admit(Endpoint::Spark, &req, symbols.clone());
    if let Some(response) = misbehave(&shared, &admission).await {
        return response;
    }
    let mut state = shared.lock();
    if symbols.is_empty() {
        return json_response(
            400,
            json!({"spark": {"result": null, "error": {
                "code": "Bad Request",
                "description": "Missing value for the \"symbols\" argument"
            }}})
            .to_string(),
        );
    }
    if symbols.len() > state.max_batch {
        return json_response(400, TOO_MANY_SYMBOLS_BODY.to_owned());
    }
    let mut seen = HashSet::new();
    let mut served = Vec::new();
    for symbol in &symbols {
        let listed = !state.is_unknown(symbol) && !state.omitted_from_spark.contains(symbol);
        if listed && seen.insert(symbol.as_str()) {
            served.push(state.serve(symbol));
        }
    }
    let now = unix_now();
    let body = if state.legacy {
        let entries: serde_json::Map<String, Value> = served
            .iter()
            .map(|s| (s.symbol.clone(), legacy_entry(s, now)))
            .collect();
        Value::Object(entries)
    } else {
        let result: Vec<Value> = served
            .iter()
            .map(|s| json!({"symbol": s.symbol, "response": [chart_object(s, now)]}))
            .collect();
        json!({"spark": {"result": result, "error": null}})
    };
    json_response(200, body.to_string())
}

async fn chart(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    let symbol = req
        .match_info()
        .get("symbol")
        .unwrap_or_default()
        .trim()
        .to_ascii_uppercase();
    let admission = shared
        .lock()
        .admit(Endpoint::Chart, &req, vec![symbol.clone()]);
    if let Some(response) = misbehave(&shared, &admission).await {
        return response;
    }
    let mut state = shared.lock();
    if symbol.is_empty() || state.is_unknown(&symbol) {
        return json_response(404, NOT_FOUND_BODY.to_owned());
    }
    let served = state.serve(&symbol);
    let body = json!({"chart": {"result": [chart_object(&served, unix_now())], "error": null}});
    json_response(200, body.to_string())
}

async fn other(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    let admission = shared.lock().admit(Endpoint::Other, &req, Vec::new());
    if let Some(response) = misbehave(&shared, &admission).await {
        return response;
    }
    HttpResponse::NotFound()
        .content_type("text/html")
        .body("<html><body>Not Found</body></html>")
}

/// Applies the delay and the fault; `None` means "answer normally".
async fn misbehave(shared: &Shared, admission: &Admission) -> Option<HttpResponse> {
    if !admission.delay.is_zero() {
        let until = Instant::now() + admission.delay;
        while Instant::now() < until {
            if shared.lock().stopping {
                return Some(HttpResponse::ServiceUnavailable().finish());
            }
            actix_web::rt::time::sleep(POLL.min(until.saturating_duration_since(Instant::now())))
                .await;
        }
    }
    let fault = admission.fault.as_ref()?;
    Some(match fault {
        Fault::RateLimited { retry_after } => {
            with_retry_after(HttpResponse::TooManyRequests(), retry_after)
                .content_type("text/plain")
                .body(RATE_LIMITED_BODY)
        }
        Fault::ServerError { retry_after } => {
            with_retry_after(HttpResponse::ServiceUnavailable(), retry_after)
                .content_type("text/html")
                .body(SERVER_ERROR_BODY)
        }
        Fault::Garbage => HttpResponse::Ok()
            .content_type("application/json")
            .body(GARBAGE_BODY),
        Fault::Custom {
            status,
            content_type,
            body,
        } => HttpResponse::build(status_code(*status))
            .content_type(content_type.as_str())
            .body(body.clone()),
        Fault::Hang => {
            let until = Instant::now() + MAX_HANG;
            loop {
                {
                    let state = shared.lock();
                    if state.stopping {
                        return Some(HttpResponse::ServiceUnavailable().finish());
                    }
                    if state.hang_generation != admission.hang_generation {
                        return None;
                    }
                }
                if Instant::now() >= until {
                    return None;
                }
                actix_web::rt::time::sleep(POLL).await;
            }
        }
    })
}

fn with_retry_after(
    mut builder: actix_web::HttpResponseBuilder,
    retry_after: &Option<String>,
) -> actix_web::HttpResponseBuilder {
    if let Some(value) = retry_after {
        builder.insert_header(("Retry-After", value.as_str()));
    }
    builder
}

fn status_code(status: u16) -> actix_web::http::StatusCode {
    actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR)
}

fn json_response(status: u16, body: String) -> HttpResponse {
    HttpResponse::build(status_code(status))
        .content_type("application/json;charset=utf-8")
        .body(body)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Trading session times: open symbols traded just now inside today's session;
/// closed ones last traded hours ago, and the current session lies ahead.
fn session(served: &Served, now: i64) -> (i64, i64, i64) {
    if served.closed {
        (now + 12 * 3600, now + 18 * 3600, now - 6 * 3600)
    } else {
        (now - 3600, now + 5 * 3600, now)
    }
}

struct Exchange {
    currency: &'static str,
    exchange: &'static str,
    full_exchange: &'static str,
    timezone: &'static str,
    zone_name: &'static str,
    gmtoffset: i64,
}

fn exchange_of(symbol: &str) -> Exchange {
    if symbol.ends_with(".T") {
        Exchange {
            currency: "JPY",
            exchange: "JPX",
            full_exchange: "Tokyo",
            timezone: "JST",
            zone_name: "Asia/Tokyo",
            gmtoffset: 32400,
        }
    } else {
        Exchange {
            currency: "USD",
            exchange: "NMS",
            full_exchange: "NasdaqGS",
            timezone: "EDT",
            zone_name: "America/New_York",
            gmtoffset: -14400,
        }
    }
}

fn names_of(symbol: &str) -> (String, String) {
    match symbol {
        "7203.T" => (
            "Toyota Motor Corporation".into(),
            "TOYOTA MOTOR CORP".into(),
        ),
        "6758.T" => (
            "Sony Group Corporation".into(),
            "SONY GROUP CORPORATION".into(),
        ),
        "AAPL" => ("Apple Inc.".into(), "Apple Inc.".into()),
        _ => (format!("{symbol} Holdings Inc."), format!("{symbol} HLDGS")),
    }
}

/// Five five-minute bars ending at the last trade, one of them empty (null), as
/// in the fixtures; the last close is the price.
fn bars(served: &Served, last_trade: i64) -> (Vec<i64>, Vec<Value>) {
    let timestamps: Vec<i64> = (0..5).map(|i| last_trade - (4 - i) * 300).collect();
    let closes = (0..5)
        .map(|i| match i {
            2 => Value::Null,
            4 => json!(served.price),
            _ => json!(served.price - PRICE_STEP * (4 - i) as f64),
        })
        .collect();
    (timestamps, closes)
}

/// The chart object of the current spark shape and the chart endpoint.
fn chart_object(served: &Served, now: i64) -> Value {
    let (start, end, last_trade) = session(served, now);
    let ex = exchange_of(&served.symbol);
    let (long_name, short_name) = names_of(&served.symbol);
    let period = |from: i64, to: i64| json!({"timezone": ex.timezone, "start": from, "end": to, "gmtoffset": ex.gmtoffset});
    let (timestamps, closes) = bars(served, last_trade);
    let volumes: Vec<Value> = closes
        .iter()
        .map(|c| {
            if c.is_null() {
                Value::Null
            } else {
                json!(100_000)
            }
        })
        .collect();
    let mut meta = json!({
        "currency": ex.currency,
        "symbol": served.symbol,
        "exchangeName": ex.exchange,
        "fullExchangeName": ex.full_exchange,
        "instrumentType": "EQUITY",
        "firstTradeDate": 925_948_800,
        "regularMarketTime": last_trade,
        "hasPrePostMarketData": false,
        "gmtoffset": ex.gmtoffset,
        "timezone": ex.timezone,
        "exchangeTimezoneName": ex.zone_name,
        "regularMarketPrice": served.price,
        "fiftyTwoWeekHigh": served.price * 1.3,
        "fiftyTwoWeekLow": served.previous_close * 0.8,
        "regularMarketDayHigh": served.price.max(served.previous_close),
        "regularMarketDayLow": served.price.min(served.previous_close),
        "regularMarketVolume": served.volume,
        "longName": long_name,
        "shortName": short_name,
        "chartPreviousClose": served.previous_close,
        "previousClose": served.previous_close,
        "scale": 3,
        "priceHint": 2,
        "currentTradingPeriod": {
            "pre": period(start, start),
            "regular": period(start, end),
            "post": period(end, end),
        },
        "tradingPeriods": [[period(start, end)]],
        "dataGranularity": "5m",
        "range": "1d",
        "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
    });
    if served.market_state_field {
        meta["marketState"] = json!(if served.closed { "CLOSED" } else { "REGULAR" });
    }
    json!({
        "meta": meta,
        "timestamp": timestamps,
        "indicators": {"quote": [{
            "open": closes,
            "high": closes,
            "low": closes,
            "close": closes,
            "volume": volumes,
        }]},
    })
}

/// One symbol of the legacy flat spark shape.
fn legacy_entry(served: &Served, now: i64) -> Value {
    let (_, _, last_trade) = session(served, now);
    let (timestamps, closes) = bars(served, last_trade);
    json!({
        "symbol": served.symbol,
        "timestamp": timestamps,
        "close": closes,
        "previousClose": null,
        "chartPreviousClose": served.previous_close,
        "dataGranularity": 300,
        "start": null,
        "end": null,
    })
}
