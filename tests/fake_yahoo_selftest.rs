//! The fake Yahoo and the Yahoo provider, tested against each other: the fake
//! must answer what the fixtures show, and the provider must turn each of those
//! answers (and each way the network fails) into the right result.
//!
//! It lives with the server's tests rather than in the `fake-yahoo` crate: most
//! of it checks the server's provider, and there it needs no dependency of
//! `fake-yahoo` on the server, which already dev-depends on `fake-yahoo`.

use chrono::Utc;
use fake_yahoo::{Endpoint, FakeYahoo, Fault};
use quotecast::domain::Symbol;
use quotecast::quote::{MarketQuote, MARKET_CLOSED, MARKET_REGULAR};
use quotecast::upstream::yahoo::{self, YahooProvider};
use quotecast::upstream::{QuoteProvider, UpstreamError};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The provider's answers without their intraday points, which these
/// checks do not look at.
trait QuotesOnly {
    async fn quotes(&self, symbols: Vec<Symbol>) -> Result<Vec<MarketQuote>, UpstreamError>;
    async fn quote(&self, symbol: Symbol) -> Result<Option<MarketQuote>, UpstreamError>;
}

impl<P: QuoteProvider> QuotesOnly for P {
    async fn quotes(&self, symbols: Vec<Symbol>) -> Result<Vec<MarketQuote>, UpstreamError> {
        Ok(self
            .fetch_batch(symbols)
            .await?
            .into_iter()
            .map(|f| f.quote)
            .collect())
    }

    async fn quote(&self, symbol: Symbol) -> Result<Option<MarketQuote>, UpstreamError> {
        Ok(self.fetch_one(symbol).await?.map(|f| f.quote))
    }
}

const WAIT: Duration = Duration::from_secs(10);

fn sym(s: &str) -> Symbol {
    Symbol::parse(s).unwrap()
}

fn syms(list: &[&str]) -> Vec<Symbol> {
    list.iter().map(|s| sym(s)).collect()
}

fn provider_for(base_url: &str, request_timeout: Duration) -> YahooProvider {
    YahooProvider::new(base_url, request_timeout, Duration::from_secs(2)).unwrap()
}

fn provider(fake: &FakeYahoo) -> YahooProvider {
    provider_for(&fake.base_url(), WAIT)
}

struct Raw {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: Vec<u8>,
}

/// The fake's spark URL for `symbols` (comma-separated), as the provider
/// asks it.
fn spark_url(fake: &FakeYahoo, symbols: &str) -> String {
    let base = fake.base_url();
    format!("{base}/v7/finance/spark?symbols={symbols}&range=1d&interval=5m")
}

/// The fake's chart URL for `symbol`, as the provider asks it.
fn chart_url(fake: &FakeYahoo, symbol: &str) -> String {
    let base = fake.base_url();
    format!("{base}/v8/finance/chart/{symbol}?range=1d&interval=5m")
}

async fn raw_get(url: &str) -> Raw {
    let response = reqwest::get(url).await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after");
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap().to_vec();
    Raw {
        status,
        content_type,
        retry_after,
        body,
    }
}

#[tokio::test]
async fn spark_speaks_the_wire_format_and_prices_move() {
    let fake = FakeYahoo::start();
    let url = spark_url(&fake, "7203.T,AAPL,ZZZZ");
    let requested = syms(&["7203.T", "AAPL", "ZZZZ"]);

    let first = raw_get(&url).await;
    assert_eq!(first.status, 200);
    assert!(first.content_type.starts_with("application/json"));
    let json: Value = serde_json::from_slice(&first.body).unwrap();
    let meta = &json["spark"]["result"][0]["response"][0]["meta"];
    assert_eq!(meta["symbol"], "7203.T");
    assert!(meta["regularMarketPrice"].is_f64());
    assert!(meta["currentTradingPeriod"]["regular"]["start"].is_i64());
    assert_eq!(json["spark"]["result"].as_array().unwrap().len(), 2);

    let quotes = yahoo::spark_from_response(
        &requested,
        yahoo::Answer::new(200, None, &first.body, Utc::now()),
    )
    .unwrap();
    assert_eq!(quotes.len(), 2, "ZZZZ is unknown");
    let toyota = &quotes[0];
    assert_eq!(toyota.symbol.as_str(), "7203.T");
    assert_eq!(toyota.price, Some(FakeYahoo::price_at("7203.T", 0)));
    assert_eq!(
        toyota.previous_close,
        Some(FakeYahoo::price_at("7203.T", 0))
    );
    assert_eq!(toyota.currency.as_deref(), Some("JPY"));
    assert_eq!(toyota.name.as_deref(), Some("Toyota Motor Corporation"));
    assert_eq!(toyota.market_state.as_deref(), Some(MARKET_REGULAR));
    assert!(toyota.market_time.is_some() && toyota.volume.is_some());

    let second = raw_get(&url).await;
    let quotes = yahoo::parse_spark(&requested, &second.body).unwrap();
    assert_eq!(quotes[0].price, Some(FakeYahoo::price_at("7203.T", 1)));
    assert_eq!(quotes[1].price, Some(FakeYahoo::price_at("AAPL", 1)));
    assert_eq!(
        fake.last_price("AAPL"),
        Some(FakeYahoo::price_at("AAPL", 1))
    );
    assert_eq!(fake.times_served("AAPL"), 2);
    assert_eq!(fake.times_served("ZZZZ"), 0);
}

#[actix_web::test]
async fn provider_reads_both_spark_shapes_from_an_actix_test() {
    let fake = FakeYahoo::start();
    let yahoo = provider(&fake);
    let requested = syms(&["7203.T", "AAPL", "ZZZZ"]);

    let quotes = yahoo.quotes(requested.clone()).await.unwrap();
    let names: Vec<&str> = quotes.iter().map(|q| q.symbol.as_str()).collect();
    assert_eq!(names, ["7203.T", "AAPL"]);
    assert!(quotes[0].name.is_some());

    fake.set_legacy_shape(true);
    let quotes = yahoo.quotes(requested.clone()).await.unwrap();
    assert_eq!(quotes.len(), 2);
    let aapl = quotes.iter().find(|q| q.symbol.as_str() == "AAPL").unwrap();
    assert_eq!(aapl.price, Some(FakeYahoo::price_at("AAPL", 1)));
    assert_eq!(aapl.previous_close, Some(FakeYahoo::price_at("AAPL", 0)));
    assert_eq!(aapl.name, None, "the legacy shape carries no names");

    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.endpoint == Endpoint::Spark));
    assert_eq!(requests[0].symbols, ["7203.T", "AAPL", "ZZZZ"]);
    assert!(requests[0].received_at <= requests[1].received_at);
    assert_eq!(fake.max_spark_symbols(), 3);
}

#[tokio::test]
async fn provider_fetches_one_symbol_and_tells_unknown_ones() {
    let fake = FakeYahoo::start();
    let yahoo = provider(&fake);

    let nikkei = yahoo.quote(sym("^N225")).await.unwrap().unwrap();
    assert_eq!(nikkei.symbol.as_str(), "^N225");
    assert_eq!(nikkei.price, Some(FakeYahoo::price_at("^N225", 0)));
    let fx = yahoo.quote(sym("USDJPY=X")).await.unwrap().unwrap();
    assert_eq!(fx.symbol.as_str(), "USDJPY=X");
    let requests = fake.requests();
    assert_eq!(requests[0].path, "/v8/finance/chart/%5EN225");
    assert_eq!(requests[1].path, "/v8/finance/chart/USDJPY%3DX");
    let seen: Vec<Vec<String>> = requests.iter().map(|r| r.symbols.clone()).collect();
    assert_eq!(
        seen,
        [["^N225"], ["USDJPY=X"]],
        "percent-encoding round-trips"
    );
    let agent = requests[0].user_agent.as_deref().unwrap_or_default();
    assert!(agent.starts_with("Mozilla/5.0"), "{agent}");
    let encodings = requests[0].accept_encoding.as_deref().unwrap_or_default();
    assert!(encodings.contains("gzip"), "{encodings}");

    assert_eq!(yahoo.quote(sym("ZZZZ")).await.unwrap(), None);
    fake.set_unknown("DELISTED", true);
    assert_eq!(yahoo.quote(sym("DELISTED")).await.unwrap(), None);
    let raw = raw_get(&chart_url(&fake, "ZZZZ")).await;
    assert_eq!(raw.status, 404);
    assert_eq!(raw.body, fake_yahoo::NOT_FOUND_BODY.as_bytes());

    // Missing from a batch but known: only the chart endpoint can tell.
    fake.set_omitted_from_spark("MSFT", true);
    let batch = yahoo.quotes(syms(&["MSFT", "AAPL"])).await.unwrap();
    assert_eq!(batch.len(), 1);
    assert!(yahoo.quote(sym("MSFT")).await.unwrap().is_some());
    assert_eq!(fake.chart_requests(), 6);
    assert_eq!(fake.spark_requests(), 1);
}

#[tokio::test]
async fn closed_markets_are_reported_closed() {
    let fake = FakeYahoo::start();
    let yahoo = provider(&fake);
    fake.set_market_closed("7203.T", true);

    let quotes = yahoo.quotes(syms(&["7203.T", "AAPL"])).await.unwrap();
    assert_eq!(quotes[0].market_state.as_deref(), Some(MARKET_CLOSED));
    assert!(quotes[0].market_closed());
    assert_eq!(quotes[1].market_state.as_deref(), Some(MARKET_REGULAR));

    fake.set_market_state_field(true);
    let one = yahoo.quote(sym("7203.T")).await.unwrap().unwrap();
    assert_eq!(one.market_state.as_deref(), Some(MARKET_CLOSED));
    fake.set_market_closed("7203.T", false);
    let one = yahoo.quote(sym("7203.T")).await.unwrap().unwrap();
    assert_eq!(one.market_state.as_deref(), Some(MARKET_REGULAR));
}

#[tokio::test]
async fn prices_can_be_pinned() {
    let fake = FakeYahoo::start();
    let yahoo = provider(&fake);
    fake.set_price("AAPL", 200.0);
    fake.set_prices_move(false);
    for _ in 0..2 {
        let quote = yahoo.quote(sym("AAPL")).await.unwrap().unwrap();
        assert_eq!(quote.price, Some(200.0));
        assert_eq!(quote.previous_close, Some(200.0));
    }
    fake.set_prices_move(true);
    let quote = yahoo.quote(sym("AAPL")).await.unwrap().unwrap();
    assert_eq!(quote.price, Some(200.0 + 2.0 * fake_yahoo::PRICE_STEP));
    fake.set_prices_move(false);
    fake.set_previous_close("AAPL", Some(190.0));
    fake.set_price("AAPL", 209.0);
    let quote = yahoo.quote(sym("AAPL")).await.unwrap().unwrap();
    assert_eq!(
        (quote.price, quote.previous_close),
        (Some(209.0), Some(190.0))
    );
    fake.set_previous_close("AAPL", None);
    let quote = yahoo.quote(sym("AAPL")).await.unwrap().unwrap();
    assert_eq!(quote.previous_close, Some(209.0));
}

#[tokio::test]
async fn more_than_twenty_symbols_are_refused_like_yahoo() {
    let fake = FakeYahoo::start();
    let yahoo = provider(&fake);
    let many: Vec<Symbol> = (0..21).map(|i| sym(&format!("S{i}"))).collect();

    let err = yahoo.quotes(many.clone()).await.unwrap_err();
    assert!(
        matches!(err, UpstreamError::Status { status: 400, .. }),
        "{err:?}"
    );
    assert_eq!(fake.max_spark_symbols(), 21);
    assert_eq!(yahoo.quotes(many[..20].to_vec()).await.unwrap().len(), 20);

    let list: Vec<String> = (0..21).map(|i| format!("S{i}")).collect();
    let raw = raw_get(&spark_url(&fake, &list.join(","))).await;
    assert_eq!(raw.status, 400);
    assert_eq!(raw.body, fake_yahoo::TOO_MANY_SYMBOLS_BODY.as_bytes());
}

#[tokio::test]
async fn injected_faults_map_to_upstream_errors() {
    let fake = FakeYahoo::start();
    let yahoo = provider(&fake);
    let batch = || yahoo.quotes(syms(&["AAPL"]));

    fake.fail_next(1, Fault::rate_limited(Some(3)));
    let err = batch().await.unwrap_err();
    assert!(
        matches!(err, UpstreamError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(3)),
        "{err:?}"
    );
    assert!(batch().await.is_ok(), "only the next request was to fail");

    let in_30s = (Utc::now() + chrono::Duration::seconds(30))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    fake.fail_next_on(
        Endpoint::Chart,
        1,
        Fault::RateLimited {
            retry_after: Some(in_30s),
        },
    );
    assert!(batch().await.is_ok(), "the fault is for the chart endpoint");
    let err = yahoo.quote(sym("AAPL")).await.unwrap_err();
    let wait = err.retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );

    fake.fail_next(1, Fault::server_error());
    let err = batch().await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Status {
                status: 503,
                retry_after: None
            }
        ),
        "{err:?}"
    );

    fake.fail_next(1, Fault::Garbage);
    assert!(matches!(batch().await, Err(UpstreamError::BadData(_))));

    fake.fail_next(
        1,
        Fault::Custom {
            status: 200,
            content_type: "text/html".into(),
            body: fake_yahoo::SERVER_ERROR_BODY.as_bytes().to_vec(),
        },
    );
    assert!(matches!(batch().await, Err(UpstreamError::BadData(_))));

    // Valid JSON, but more of it than any answer should be.
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(yahoo::MAX_BODY_BYTES));
    fake.fail_next(
        1,
        Fault::Custom {
            status: 200,
            content_type: "application/json".into(),
            body: huge.into_bytes(),
        },
    );
    let err = batch().await.unwrap_err();
    assert!(
        matches!(&err, UpstreamError::BadData(m) if m.contains("exceeds")),
        "{err:?}"
    );

    fake.fail_all(Fault::Garbage);
    for _ in 0..3 {
        assert!(matches!(batch().await, Err(UpstreamError::BadData(_))));
    }
    fake.clear_faults();
    assert!(batch().await.is_ok());

    let faults: Vec<Option<Fault>> = fake.requests().into_iter().map(|r| r.fault).collect();
    assert_eq!(faults.iter().filter(|f| f.is_some()).count(), 9);
}

#[tokio::test]
async fn fault_answers_carry_the_fixture_bodies() {
    let fake = FakeYahoo::start();
    let url = chart_url(&fake, "AAPL");

    fake.fail_next(1, Fault::rate_limited(Some(7)));
    let raw = raw_get(&url).await;
    assert_eq!(raw.status, 429);
    assert!(raw.content_type.starts_with("text/plain"));
    assert_eq!(raw.retry_after.as_deref(), Some("7"));
    assert_eq!(raw.body, fake_yahoo::RATE_LIMITED_BODY.as_bytes());

    fake.fail_next(1, Fault::server_error());
    let raw = raw_get(&url).await;
    assert_eq!(raw.status, 503);
    assert!(raw.content_type.starts_with("text/html"));
    assert_eq!(raw.retry_after, None);
    assert_eq!(raw.body, fake_yahoo::SERVER_ERROR_BODY.as_bytes());

    fake.fail_next(1, Fault::Garbage);
    let raw = raw_get(&url).await;
    assert_eq!(raw.status, 200);
    assert!(serde_json::from_slice::<Value>(&raw.body).is_err());

    let raw = raw_get(&url).await;
    assert_eq!(raw.status, 200);
    assert!(yahoo::parse_chart(&sym("AAPL"), &raw.body)
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn a_hanging_upstream_is_a_timeout_and_recovers_when_released() {
    let fake = FakeYahoo::start();
    let impatient = provider_for(&fake.base_url(), Duration::from_millis(300));
    fake.fail_all(Fault::Hang);

    let started = Instant::now();
    let err = impatient.quotes(syms(&["AAPL"])).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = impatient.quote(sym("AAPL")).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Timeout), "{err:?}");

    // A patient request is answered normally once the hang is lifted.
    fake.reset_counters();
    let pending = tokio::spawn(provider(&fake).fetch_batch(syms(&["AAPL"])));
    assert!(
        fake.wait_until_async(WAIT, |f| f.spark_requests() == 1)
            .await
    );
    fake.clear_faults();
    let quotes = pending.await.unwrap().unwrap();
    assert_eq!(quotes.len(), 1);
}

#[tokio::test]
async fn a_delayed_upstream_answers_late() {
    let fake = FakeYahoo::start();
    fake.set_delay(Duration::from_millis(200));
    let started = Instant::now();
    assert!(provider(&fake).quote(sym("AAPL")).await.unwrap().is_some());
    assert!(started.elapsed() >= Duration::from_millis(200));
    let impatient = provider_for(&fake.base_url(), Duration::from_millis(50));
    let err = impatient.quote(sym("AAPL")).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Timeout), "{err:?}");
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let yahoo = provider_for(&format!("http://127.0.0.1:{port}"), WAIT);
    let err = yahoo.quotes(syms(&["AAPL"])).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
    assert_eq!(err.outcome(), "connect_error");
    let err = yahoo.quote(sym("AAPL")).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
}

#[tokio::test]
async fn stopping_the_fake_ends_hanging_requests() {
    let mut fake = FakeYahoo::start();
    let base_url = fake.base_url();
    fake.fail_all(Fault::Hang);
    let pending = tokio::spawn(provider(&fake).fetch_batch(syms(&["AAPL"])));
    assert!(
        fake.wait_until_async(WAIT, |f| f.spark_requests() == 1)
            .await
    );

    let started = Instant::now();
    fake.stop();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(pending.await.unwrap().is_err());
    let err = provider_for(&base_url, WAIT)
        .quote(sym("AAPL"))
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
}

#[test]
fn blocking_waits_see_requests_from_other_threads() {
    let fake = FakeYahoo::start();
    assert!(!fake.wait_for_spark_requests(1, Duration::from_millis(20)));
    let base_url = fake.base_url();
    let client = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let yahoo = provider_for(&base_url, WAIT);
            for _ in 0..3 {
                yahoo.quotes(syms(&["AAPL", "MSFT"])).await.unwrap();
            }
            yahoo.quote(sym("AAPL")).await.unwrap();
        });
    });
    assert!(fake.wait_for_spark_requests(3, WAIT));
    assert!(fake.wait_for_chart_requests(1, WAIT));
    client.join().unwrap();
    assert_eq!(fake.total_requests(), 4);
    assert_eq!(fake.max_spark_symbols(), 2);
    assert_eq!(fake.times_served("AAPL"), 4);
    fake.reset_counters();
    assert_eq!(fake.spark_requests(), 0);
    assert_eq!(fake.requests().len(), 0);
}

#[tokio::test]
async fn other_paths_are_not_found() {
    let fake = FakeYahoo::start();
    let raw = raw_get(&format!(
        "{}/v6/finance/quote?symbols=AAPL",
        fake.base_url()
    ))
    .await;
    assert_eq!(raw.status, 404);
    assert_eq!(fake.requests()[0].endpoint, Endpoint::Other);
}
