//! The Yahoo Finance provider.
//!
//! Two endpoints (see SPEC "Upstream: the yahoo provider" and
//! `tests/fixtures/yahoo/README.md` for the answer shapes):
//!
//! * `GET /v7/finance/spark?symbols=A,B&range=1d&interval=5m` for batches of up to
//!   [`MAX_BATCH`] symbols. It answers in a current shape (a chart object per
//!   symbol) or, on older deployments, a legacy flat shape; both are parsed.
//! * `GET /v8/finance/chart/{symbol}?range=1d&interval=5m` for one symbol; its 404
//!   with a `chart.error` body is how Yahoo says a symbol does not exist.
//!
//! The network half ([`YahooProvider`]) only moves bytes; everything that looks at
//! them is a pure function of (status, `Retry-After`, body), so the mapping from
//! every answer Yahoo gives to a result or an [`UpstreamError`] is unit-tested
//! against the recorded fixtures without a server.

use super::{QuoteProvider, UpstreamError};
use crate::domain::Symbol;
use crate::quote::{Fetched, MarketQuote, Point, MARKET_CLOSED, MARKET_REGULAR};
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::time::Duration;

/// Yahoo refuses spark requests for more symbols than this (HTTP 400).
pub const MAX_BATCH: usize = 20;

/// Largest (decompressed) body accepted. A real spark answer for 20 symbols is
/// well under 100 KiB; the cap keeps a broken or hostile upstream from exhausting
/// memory.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Yahoo throttles requests with no or a library User-Agent much harder than
/// browsers' (429 or 403 after a handful), so the provider presents itself as one.
pub const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                              (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

/// Longest `Retry-After` believed. Honouring a bogus "retry in a year" would
/// silence the service for good; an hour bounds the damage of such a value.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Most intraday points kept from one answer (a day of 5-minute bars is
/// under 300; a wider range asked by mistake must not grow memory).
pub const MAX_POINTS: usize = crate::feed::intraday::MAX_POINTS;

/// Text fields (names, currency) longer than this are cut; they end up in every
/// WebSocket message of the symbol.
const MAX_TEXT_CHARS: usize = 200;

/// The query every request carries: one day of five-minute bars is the smallest
/// answer that still includes the `meta` block with the live price.
const RANGE_QUERY: &str = "range=1d&interval=5m";

/// Quotes from Yahoo Finance. Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct YahooProvider {
    client: reqwest::Client,
    /// Without a trailing slash, so paths can be appended as `/v7/...`.
    base_url: String,
}

impl YahooProvider {
    /// `request_timeout` bounds a whole request (connect, headers and body);
    /// `connect_timeout` bounds the TCP and TLS set-up alone, so an unreachable
    /// upstream is reported quickly even when the request timeout is generous.
    /// Fails when `base_url` is not an absolute URL with a host.
    pub fn new(
        base_url: &str,
        request_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .gzip(true)
            .build()?;
        let provider = Self {
            client,
            base_url: base_url.trim().trim_end_matches('/').to_owned(),
        };
        // Let reqwest judge the URL now, so a bad base_url stops start-up instead
        // of failing every request later.
        provider.client.get(provider.chart_url_str("A")).build()?;
        Ok(provider)
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The spark URL for a batch; duplicate symbols are sent once.
    pub fn spark_url(&self, symbols: &[Symbol]) -> String {
        let mut seen = HashSet::new();
        let list: Vec<String> = symbols
            .iter()
            .filter(|s| seen.insert(s.as_str()))
            .map(|s| encode_component(s.as_str()))
            .collect();
        format!(
            "{}/v7/finance/spark?symbols={}&{RANGE_QUERY}",
            self.base_url,
            list.join(",")
        )
    }

    pub fn chart_url(&self, symbol: &Symbol) -> String {
        self.chart_url_str(symbol.as_str())
    }

    fn chart_url_str(&self, symbol: &str) -> String {
        format!(
            "{}/v8/finance/chart/{}?{RANGE_QUERY}",
            self.base_url,
            encode_component(symbol)
        )
    }
}

impl QuoteProvider for YahooProvider {
    fn name(&self) -> &'static str {
        "yahoo"
    }

    /// Callers chunk to [`MAX_BATCH`]; a larger batch earns `Status { status: 400 }`.
    fn fetch_batch(
        &self,
        symbols: Vec<Symbol>,
    ) -> BoxFuture<'static, Result<Vec<Fetched>, UpstreamError>> {
        let client = self.client.clone();
        let url = self.spark_url(&symbols);
        Box::pin(async move {
            if symbols.is_empty() {
                return Ok(Vec::new());
            }
            let raw = get(&client, &url).await?;
            spark_full_from_response(&symbols, raw.answer(Utc::now()))
        })
    }

    fn fetch_one(
        &self,
        symbol: Symbol,
    ) -> BoxFuture<'static, Result<Option<Fetched>, UpstreamError>> {
        let client = self.client.clone();
        let url = self.chart_url(&symbol);
        Box::pin(async move {
            let raw = get(&client, &url).await?;
            chart_full_from_response(&symbol, raw.answer(Utc::now()))
        })
    }
}

/// What came back, owned: the [`Answer`] it is read as borrows from it.
struct RawAnswer {
    status: u16,
    retry_after: Option<String>,
    body: Vec<u8>,
}

impl RawAnswer {
    fn answer(&self, now: DateTime<Utc>) -> Answer<'_> {
        Answer::new(self.status, self.retry_after.as_deref(), &self.body, now)
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Result<RawAnswer, UpstreamError> {
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json,text/plain,*/*")
        .send()
        .await
        .map_err(from_reqwest)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Only successes and 404 (whose body tells "unknown symbol" apart) are read;
    // other error bodies are never looked at, so they cost no time or memory.
    let body = if response.status().is_success() || status == 404 {
        read_capped(&mut response, MAX_BODY_BYTES).await?
    } else {
        Vec::new()
    };
    Ok(RawAnswer {
        status,
        retry_after,
        body,
    })
}

async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, UpstreamError> {
    let too_big = || UpstreamError::BadData(format!("body exceeds {cap} bytes"));
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(from_reqwest)? {
        if body.len() + chunk.len() > cap {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn from_reqwest(err: reqwest::Error) -> UpstreamError {
    if err.is_timeout() {
        UpstreamError::Timeout
    } else if err.is_decode() {
        // A gzip stream that does not inflate: the bytes arrived, they are bad.
        UpstreamError::BadData(error_chain(&err))
    } else {
        // Refused or reset connections, TLS failures, a peer closing mid-body:
        // all mean the upstream could not be talked to this time.
        UpstreamError::Connect(error_chain(&err))
    }
}

/// reqwest's own message is only the outermost layer ("error sending request");
/// the cause (refused, DNS, TLS) is in the source chain.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// RFC 3986 unreserved characters pass; everything else (`^`, `=`, ...) is
/// percent-encoded, so a symbol is one path segment or one list item whatever it
/// contains.
fn encode_component(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Pure parsing: (status, Retry-After, body) in, result out.
// ---------------------------------------------------------------------------

/// An answer as it came back, before anyone looked at it: the status, the
/// `Retry-After` header and the body, judged at `now` (an HTTP-date
/// `Retry-After` is relative to it).
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub status: u16,
    pub retry_after: Option<&'a str>,
    pub body: &'a [u8],
    pub now: DateTime<Utc>,
}

impl<'a> Answer<'a> {
    pub fn new(
        status: u16,
        retry_after: Option<&'a str>,
        body: &'a [u8],
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            status,
            retry_after,
            body,
            now,
        }
    }

    fn check_status(&self) -> Result<(), UpstreamError> {
        check_status(self.status, self.retry_after, self.now)
    }
}

/// A spark answer as a whole: the status decides first, then the body.
pub fn spark_from_response(
    requested: &[Symbol],
    answer: Answer<'_>,
) -> Result<Vec<MarketQuote>, UpstreamError> {
    spark_full_from_response(requested, answer)
        .map(|all| all.into_iter().map(|f| f.quote).collect())
}

/// [`spark_from_response`] with each quote's intraday points.
pub fn spark_full_from_response(
    requested: &[Symbol],
    answer: Answer<'_>,
) -> Result<Vec<Fetched>, UpstreamError> {
    answer.check_status()?;
    parse_spark_full(requested, answer.body)
}

/// A chart answer as a whole: `Ok(None)` is Yahoo saying the symbol does not
/// exist (404 with a `chart.error` body); a 404 without one (a proxy's page, a
/// wrong base URL) is an error like any other status.
pub fn chart_from_response(
    requested: &Symbol,
    answer: Answer<'_>,
) -> Result<Option<MarketQuote>, UpstreamError> {
    chart_full_from_response(requested, answer).map(|f| f.map(|f| f.quote))
}

/// [`chart_from_response`] with the quote's intraday points.
pub fn chart_full_from_response(
    requested: &Symbol,
    answer: Answer<'_>,
) -> Result<Option<Fetched>, UpstreamError> {
    if answer.status == 404 && chart_error(answer.body).is_some() {
        return Ok(None);
    }
    answer.check_status()?;
    parse_chart_full(requested, answer.body)
}

/// Maps a non-2xx status to its error: 429 is rate limiting, anything else a
/// plain status error; both carry the upstream's `Retry-After` when it has one.
pub fn check_status(
    status: u16,
    retry_after: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), UpstreamError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let retry_after = retry_after.and_then(|v| parse_retry_after(v, now));
    Err(if status == 429 {
        UpstreamError::RateLimited { retry_after }
    } else {
        UpstreamError::Status {
            status,
            retry_after,
        }
    })
}

/// `Retry-After` as delay-seconds or an HTTP-date (relative to `now`; a date in
/// the past means "now"), capped at [`MAX_RETRY_AFTER`]. Anything else is ignored.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only but too long for u64 is still "a very long time".
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = DateTime::parse_from_rfc2822(value).ok()?;
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Quotes from a 2xx spark body, in either shape. Only requested symbols are
/// returned, each at most once, under the requested spelling; requested symbols
/// the answer does not mention are absent.
pub fn parse_spark(requested: &[Symbol], body: &[u8]) -> Result<Vec<MarketQuote>, UpstreamError> {
    parse_spark_full(requested, body).map(|all| all.into_iter().map(|f| f.quote).collect())
}

/// [`parse_spark`] with each quote's intraday points.
pub fn parse_spark_full(requested: &[Symbol], body: &[u8]) -> Result<Vec<Fetched>, UpstreamError> {
    let root = parse_json(body)?;
    let Some(object) = root.as_object() else {
        return Err(bad_shape("spark answer is not a JSON object", body));
    };
    let mut picker = Picker::new(requested);
    match object.get("spark") {
        Some(spark) => parse_spark_current(spark, &mut picker, body)?,
        None => parse_spark_legacy(object, &mut picker, body)?,
    }
    Ok(picker.quotes)
}

/// The quote in a 2xx chart body. `Ok(None)` when the body is Yahoo's
/// "Not Found" error (some deployments send it with 200).
pub fn parse_chart(requested: &Symbol, body: &[u8]) -> Result<Option<MarketQuote>, UpstreamError> {
    parse_chart_full(requested, body).map(|f| f.map(|f| f.quote))
}

/// [`parse_chart`] with the quote's intraday points.
pub fn parse_chart_full(requested: &Symbol, body: &[u8]) -> Result<Option<Fetched>, UpstreamError> {
    let root = parse_json(body)?;
    let Some(chart) = root.get("chart").filter(|c| c.is_object()) else {
        return Err(bad_shape("no `chart` object", body));
    };
    let first = chart
        .get("result")
        .and_then(Value::as_array)
        .and_then(|r| r.first());
    match first {
        Some(item) => quote_from_chart(requested, item)
            .map(Some)
            .ok_or_else(|| bad_shape("chart.result[0] has no `meta` object", body)),
        None => match chart_error_of(chart) {
            Some(error) if error.code.eq_ignore_ascii_case("Not Found") => Ok(None),
            Some(error) => Err(UpstreamError::BadData(format!(
                "chart error {}: {}",
                error.code, error.description
            ))),
            None => Err(bad_shape("chart.result is empty", body)),
        },
    }
}

/// Yahoo's `{"chart":{"error":{"code","description"}}}`, if the body is one.
fn chart_error(body: &[u8]) -> Option<YahooError> {
    let root: Value = serde_json::from_slice(body).ok()?;
    chart_error_of(root.get("chart")?)
}

struct YahooError {
    code: String,
    description: String,
}

fn chart_error_of(container: &Value) -> Option<YahooError> {
    let error = container.get("error")?.as_object()?;
    Some(YahooError {
        code: text(error, "code").unwrap_or_default(),
        description: text(error, "description").unwrap_or_default(),
    })
}

/// `spark.result[]`, each `{symbol, response:[chart]}`.
fn parse_spark_current(
    spark: &Value,
    picker: &mut Picker<'_>,
    body: &[u8],
) -> Result<(), UpstreamError> {
    let items = match spark.get("result") {
        Some(Value::Array(items)) => items,
        _ => {
            return Err(match chart_error_of(spark) {
                Some(e) => {
                    UpstreamError::BadData(format!("spark error {}: {}", e.code, e.description))
                }
                None => bad_shape("spark.result is not an array", body),
            })
        }
    };
    for item in items {
        let Some(chart) = item
            .get("response")
            .and_then(Value::as_array)
            .and_then(|r| r.first())
        else {
            continue;
        };
        let name = item
            .get("symbol")
            .and_then(Value::as_str)
            .or_else(|| chart.pointer("/meta/symbol").and_then(Value::as_str));
        let Some(symbol) = name.and_then(|n| picker.wanted(n)) else {
            continue;
        };
        if let Some(fetched) = quote_from_chart(symbol, chart) {
            picker.push(fetched);
        }
    }
    Ok(())
}

/// `{SYM: {symbol, timestamp, close, previousClose, chartPreviousClose, ...}}`.
fn parse_spark_legacy(
    object: &Map<String, Value>,
    picker: &mut Picker<'_>,
    body: &[u8],
) -> Result<(), UpstreamError> {
    // Every value must look like a legacy entry (or be null, a symbol without
    // data); otherwise this is some other JSON (an error envelope such as
    // `{"finance":{"error":...}}`), not quotes.
    let looks_legacy = |v: &Value| match v {
        Value::Null => true,
        Value::Object(o) => {
            o.contains_key("close") || o.contains_key("timestamp") || o.contains_key("symbol")
        }
        _ => false,
    };
    if !object.values().all(looks_legacy) {
        return Err(bad_shape(
            "neither the current nor the legacy spark shape",
            body,
        ));
    }
    for (key, entry) in object {
        let Some(entry) = entry.as_object() else {
            continue;
        };
        let name = text(entry, "symbol").unwrap_or_else(|| key.clone());
        let Some(symbol) = picker.wanted(&name) else {
            continue;
        };
        let last = last_close(entry.get("close"));
        let market_time = last
            .and_then(|(index, _)| entry.get("timestamp")?.as_array()?.get(index).cloned())
            .and_then(|t| unix_seconds(&t));
        let quote = MarketQuote {
            symbol: symbol.clone(),
            name: None,
            price: last.map(|(_, price)| price),
            previous_close: number(entry, "previousClose")
                .or_else(|| number(entry, "chartPreviousClose")),
            volume: None,
            currency: None,
            market_state: None,
            market_time: market_time.and_then(|t| DateTime::from_timestamp(t, 0)),
        };
        picker.push(Fetched {
            quote,
            intraday: series(entry.get("timestamp"), entry.get("close")),
        });
    }
    Ok(())
}

/// A quote and its points from one chart object (`{meta, timestamp,
/// indicators}`); `None` when it has no `meta`.
fn quote_from_chart(symbol: &Symbol, chart: &Value) -> Option<Fetched> {
    let meta = chart.get("meta")?.as_object()?;
    let market_seconds = meta.get("regularMarketTime").and_then(unix_seconds);
    let price = number(meta, "regularMarketPrice")
        .or_else(|| last_close(chart.pointer("/indicators/quote/0/close")).map(|(_, price)| price));
    let quote = MarketQuote {
        symbol: symbol.clone(),
        name: text(meta, "longName").or_else(|| text(meta, "shortName")),
        price,
        previous_close: number(meta, "previousClose")
            .or_else(|| number(meta, "chartPreviousClose")),
        volume: number(meta, "regularMarketVolume").and_then(to_volume),
        currency: text(meta, "currency"),
        market_state: text(meta, "marketState")
            .map(|s| s.to_ascii_uppercase())
            .or_else(|| market_state_from_period(meta, market_seconds?)),
        market_time: market_seconds.and_then(|t| DateTime::from_timestamp(t, 0)),
    };
    Some(Fetched {
        quote,
        intraday: series(
            chart.get("timestamp"),
            chart.pointer("/indicators/quote/0/close"),
        ),
    })
}

/// The (time, close) points of parallel `timestamp` and `close` arrays:
/// bars without trades (null) are skipped, times must increase, and at most
/// [`MAX_POINTS`] of the latest are kept.
fn series(timestamps: Option<&Value>, closes: Option<&Value>) -> Vec<Point> {
    let (Some(Value::Array(times)), Some(Value::Array(closes))) = (timestamps, closes) else {
        return Vec::new();
    };
    let mut points: Vec<Point> = Vec::with_capacity(times.len().min(MAX_POINTS));
    for (t, c) in times.iter().zip(closes) {
        let (Some(t), Some(c)) = (unix_seconds(t), finite(c)) else {
            continue;
        };
        if points.last().is_some_and(|last| last.0 >= t) {
            continue;
        }
        points.push((t, c));
    }
    if points.len() > MAX_POINTS {
        points.drain(..points.len() - MAX_POINTS);
    }
    points
}

/// REGULAR when the last trade lies inside today's regular session (bounds
/// included), else CLOSED; unknown without a session.
fn market_state_from_period(meta: &Map<String, Value>, market_seconds: i64) -> Option<String> {
    let regular = meta.get("currentTradingPeriod")?.get("regular")?;
    let start = unix_seconds(regular.get("start")?)?;
    let end = unix_seconds(regular.get("end")?)?;
    let open = (start..=end).contains(&market_seconds);
    Some(if open { MARKET_REGULAR } else { MARKET_CLOSED }.to_owned())
}

/// Index and value of the last non-null number in a `close` array; bars without
/// trades (a lunch break) are null.
fn last_close(closes: Option<&Value>) -> Option<(usize, f64)> {
    closes?
        .as_array()?
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, v)| finite(v).map(|x| (i, x)))
}

fn finite(value: &Value) -> Option<f64> {
    value.as_f64().filter(|x| x.is_finite())
}

fn number(object: &Map<String, Value>, key: &str) -> Option<f64> {
    object.get(key).and_then(finite)
}

fn unix_seconds(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        let x = finite(value)?;
        // Inside chrono's range by a wide margin; anything beyond is nonsense.
        (x.abs() < 1e12).then_some(x as i64)
    })
}

fn to_volume(x: f64) -> Option<i64> {
    (0.0..9e18).contains(&x).then_some(x.round() as i64)
}

fn text(object: &Map<String, Value>, key: &str) -> Option<String> {
    let s = object.get(key)?.as_str()?.trim();
    if s.is_empty() {
        return None;
    }
    Some(s.chars().take(MAX_TEXT_CHARS).collect())
}

/// Matches answer entries to the requested symbols (case-insensitively, as
/// Yahoo echoes symbols in its own spelling) and keeps the first quote of each.
struct Picker<'a> {
    requested: &'a [Symbol],
    done: HashSet<&'a str>,
    quotes: Vec<Fetched>,
}

impl<'a> Picker<'a> {
    fn new(requested: &'a [Symbol]) -> Self {
        Self {
            requested,
            done: HashSet::new(),
            quotes: Vec::new(),
        }
    }

    /// The requested symbol `name` stands for, unless it was not asked for or
    /// already has a quote.
    fn wanted(&self, name: &str) -> Option<&'a Symbol> {
        let name = name.trim();
        self.requested
            .iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
            .filter(|s| !self.done.contains(s.as_str()))
    }

    fn push(&mut self, fetched: Fetched) {
        if let Some(s) = self.requested.iter().find(|s| **s == fetched.quote.symbol) {
            if self.done.insert(s.as_str()) {
                self.quotes.push(fetched);
            }
        }
    }
}

fn parse_json(body: &[u8]) -> Result<Value, UpstreamError> {
    serde_json::from_slice(body).map_err(|e| {
        UpstreamError::BadData(format!(
            "not JSON ({e}); body starts {:?}",
            body_start(body)
        ))
    })
}

fn bad_shape(what: &str, body: &[u8]) -> UpstreamError {
    UpstreamError::BadData(format!("{what}; body starts {:?}", body_start(body)))
}

/// The first few characters of a body, for error messages and logs.
fn body_start(body: &[u8]) -> String {
    let head = &body[..body.len().min(120)];
    String::from_utf8_lossy(head).chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/yahoo/",
                $name
            ))
            .as_slice()
        };
    }

    const SPARK: &[u8] = fixture!("spark_7203.T_6758.T_AAPL_ZZZZ.json");
    const LEGACY: &[u8] = fixture!("spark_legacy_flat_7203.T_AAPL.json");
    const TOO_MANY: &[u8] = fixture!("spark_too_many_symbols_400.json");
    const CHART: &[u8] = fixture!("chart_7203.T.json");
    const CHART_404: &[u8] = fixture!("chart_unknown_404.json");
    const TEXT_429: &[u8] = fixture!("rate_limited_429.txt");
    const HTML_503: &[u8] = fixture!("server_error_503.html");

    fn sym(s: &str) -> Symbol {
        Symbol::parse(s).unwrap()
    }

    fn syms(list: &[&str]) -> Vec<Symbol> {
        list.iter().map(|s| sym(s)).collect()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_791_181_800, 0).unwrap()
    }

    fn at(secs: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(secs, 0)
    }

    /// A fixture with one edit applied, for the variations Yahoo also sends.
    fn edited(body: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut value: Value = serde_json::from_slice(body).unwrap();
        edit(&mut value);
        serde_json::to_vec(&value).unwrap()
    }

    fn find<'a>(quotes: &'a [MarketQuote], s: &str) -> &'a MarketQuote {
        quotes.iter().find(|q| q.symbol.as_str() == s).unwrap()
    }

    #[test]
    fn current_spark_shape_maps_every_field() {
        let requested = syms(&["7203.T", "6758.T", "AAPL", "ZZZZ"]);
        let quotes = spark_from_response(&requested, Answer::new(200, None, SPARK, now())).unwrap();
        assert_eq!(quotes.len(), 3, "ZZZZ is missing from the answer");
        assert_eq!(
            find(&quotes, "7203.T"),
            &MarketQuote {
                symbol: sym("7203.T"),
                name: Some("Toyota Motor Corporation".into()),
                price: Some(2893.5),
                previous_close: Some(2856.5),
                volume: Some(23_901_000),
                currency: Some("JPY".into()),
                market_state: Some(MARKET_REGULAR.into()),
                market_time: at(1_791_181_800),
            }
        );
        let aapl = find(&quotes, "AAPL");
        assert_eq!(aapl.price, Some(227.48));
        assert_eq!(aapl.previous_close, Some(225.77));
        assert_eq!(aapl.currency.as_deref(), Some("USD"));
        assert_eq!(aapl.name.as_deref(), Some("Apple Inc."));
        assert_eq!(find(&quotes, "6758.T").volume, Some(8_120_400));
        assert!(quotes.iter().all(|q| q.symbol.as_str() != "ZZZZ"));
    }

    #[test]
    fn spark_returns_only_requested_symbols_in_the_requested_spelling() {
        let quotes = parse_spark(&syms(&["aapl"]), SPARK).unwrap();
        assert_eq!(quotes.len(), 1);
        assert_eq!(quotes[0].symbol, sym("AAPL"));

        let lower = edited(SPARK, |v| {
            v["spark"]["result"][0]["symbol"] = "7203.t".into();
            v["spark"]["result"][0]["response"][0]["meta"]["symbol"] = "7203.t".into();
        });
        let quotes = parse_spark(&syms(&["7203.T"]), &lower).unwrap();
        assert_eq!(quotes.len(), 1);
        assert_eq!(quotes[0].symbol.as_str(), "7203.T");
    }

    #[test]
    fn spark_keeps_the_first_of_duplicate_entries() {
        let doubled = edited(SPARK, |v| {
            let first = v["spark"]["result"][0].clone();
            let mut second = first.clone();
            second["response"][0]["meta"]["regularMarketPrice"] = 1.0.into();
            *v["spark"]["result"].as_array_mut().unwrap() = vec![first, second];
        });
        let quotes = parse_spark(&syms(&["7203.T", "7203.T"]), &doubled).unwrap();
        assert_eq!(quotes.len(), 1);
        assert_eq!(quotes[0].price, Some(2893.5));
    }

    #[test]
    fn price_falls_back_to_the_last_non_null_close() {
        let no_price = edited(SPARK, |v| {
            let chart = &mut v["spark"]["result"][0]["response"][0];
            chart["meta"]
                .as_object_mut()
                .unwrap()
                .remove("regularMarketPrice");
            chart["indicators"]["quote"][0]["close"] = serde_json::json!([2873.5, 2880.0, null]);
        });
        let quotes = parse_spark(&syms(&["7203.T"]), &no_price).unwrap();
        assert_eq!(quotes[0].price, Some(2880.0));
    }

    #[test]
    fn names_and_previous_close_have_fallbacks() {
        let body = edited(CHART, |v| {
            let meta = v["chart"]["result"][0]["meta"].as_object_mut().unwrap();
            meta.remove("longName");
            meta.insert("previousClose".into(), Value::Null);
            meta.insert("chartPreviousClose".into(), 2800.0.into());
        });
        let quote = parse_chart(&sym("7203.T"), &body).unwrap().unwrap();
        assert_eq!(quote.name.as_deref(), Some("TOYOTA MOTOR CORP"));
        assert_eq!(quote.previous_close, Some(2800.0));
    }

    #[test]
    fn market_state_comes_from_the_answer_or_the_trading_period() {
        let outside = edited(CHART, |v| {
            v["chart"]["result"][0]["meta"]["regularMarketTime"] = 1_791_181_801.into();
        });
        let quote = parse_chart(&sym("7203.T"), &outside).unwrap().unwrap();
        assert_eq!(quote.market_state.as_deref(), Some(MARKET_CLOSED));
        assert!(quote.market_closed());

        let at_open = edited(CHART, |v| {
            v["chart"]["result"][0]["meta"]["regularMarketTime"] = 1_791_158_400.into();
        });
        let quote = parse_chart(&sym("7203.T"), &at_open).unwrap().unwrap();
        assert_eq!(quote.market_state.as_deref(), Some(MARKET_REGULAR));

        let explicit = edited(CHART, |v| {
            v["chart"]["result"][0]["meta"]["marketState"] = "post".into();
        });
        let quote = parse_chart(&sym("7203.T"), &explicit).unwrap().unwrap();
        assert_eq!(quote.market_state.as_deref(), Some("POST"));

        let no_period = edited(CHART, |v| {
            let meta = v["chart"]["result"][0]["meta"].as_object_mut().unwrap();
            meta.remove("currentTradingPeriod");
        });
        let quote = parse_chart(&sym("7203.T"), &no_period).unwrap().unwrap();
        assert_eq!(quote.market_state, None);
    }

    #[test]
    fn odd_field_types_become_unknown_values_not_errors() {
        let body = edited(CHART, |v| {
            let meta = &mut v["chart"]["result"][0]["meta"];
            meta["regularMarketPrice"] = "2893.5".into();
            meta["regularMarketVolume"] = 2.39e7.into();
            meta["regularMarketTime"] = Value::Null;
            meta["currency"] = 5.into();
            meta["longName"] = "  ".into();
        });
        let quote = parse_chart(&sym("7203.T"), &body).unwrap().unwrap();
        assert_eq!(quote.price, Some(2893.5), "falls back to the last close");
        assert_eq!(quote.volume, Some(23_900_000));
        assert_eq!(quote.market_time, None);
        assert_eq!(quote.market_state, None);
        assert_eq!(quote.currency, None);
        assert_eq!(quote.name.as_deref(), Some("TOYOTA MOTOR CORP"));
    }

    #[test]
    fn spark_entries_without_a_chart_are_skipped() {
        let body = edited(SPARK, |v| {
            v["spark"]["result"][0]["response"] = serde_json::json!([]);
            v["spark"]["result"][1]["response"][0]
                .as_object_mut()
                .unwrap()
                .remove("meta");
            v["spark"]["result"][2] = serde_json::json!("AAPL");
        });
        let quotes = parse_spark(&syms(&["7203.T", "6758.T", "AAPL"]), &body).unwrap();
        assert!(quotes.is_empty());
    }

    #[test]
    fn legacy_spark_shape_takes_the_last_non_null_close() {
        let requested = syms(&["7203.T", "AAPL", "ZZZZ"]);
        let quotes =
            spark_from_response(&requested, Answer::new(200, None, LEGACY, now())).unwrap();
        assert_eq!(quotes.len(), 2);
        assert_eq!(
            find(&quotes, "7203.T"),
            &MarketQuote {
                symbol: sym("7203.T"),
                name: None,
                price: Some(2893.5),
                previous_close: Some(2856.5),
                volume: None,
                currency: None,
                market_state: None,
                market_time: at(1_791_159_600),
            }
        );
        assert_eq!(find(&quotes, "AAPL").price, Some(227.48));

        let trailing_null = edited(LEGACY, |v| {
            v["7203.T"]["close"] = serde_json::json!([2873.5, 2885.0, null, 2889.5, null]);
        });
        let quotes = parse_spark(&syms(&["7203.T"]), &trailing_null).unwrap();
        assert_eq!(quotes[0].price, Some(2889.5));
        assert_eq!(quotes[0].market_time, at(1_791_159_300));

        let all_null = edited(LEGACY, |v| {
            v["AAPL"]["close"] = serde_json::json!([null, null]);
        });
        let quotes = parse_spark(&syms(&["AAPL"]), &all_null).unwrap();
        assert_eq!(quotes[0].price, None);
    }

    #[test]
    fn empty_answers_mean_no_symbol_was_found() {
        assert!(parse_spark(&syms(&["ZZZZ"]), b"{}").unwrap().is_empty());
        let null_entry = br#"{"ZZZZ":null,"AAPL":{"symbol":"AAPL","close":[1.5]}}"#;
        let quotes = parse_spark(&syms(&["ZZZZ", "AAPL"]), null_entry).unwrap();
        assert_eq!(quotes.len(), 1);
        assert_eq!(quotes[0].price, Some(1.5));
        let none = br#"{"spark":{"result":[],"error":null}}"#;
        assert!(parse_spark(&syms(&["ZZZZ"]), none).unwrap().is_empty());
    }

    #[test]
    fn chart_answer_maps_meta() {
        let quote = chart_from_response(&sym("7203.T"), Answer::new(200, None, CHART, now()))
            .unwrap()
            .unwrap();
        assert_eq!(quote.symbol, sym("7203.T"));
        assert_eq!(quote.price, Some(2893.5));
        assert_eq!(quote.previous_close, Some(2856.5));
        assert_eq!(quote.volume, Some(23_901_000));
        assert_eq!(quote.market_time, at(1_791_181_800));
        assert_eq!(quote.market_state.as_deref(), Some(MARKET_REGULAR));
    }

    #[test]
    fn chart_not_found_is_an_unknown_symbol() {
        let zzzz = sym("ZZZZ");
        assert_eq!(
            chart_from_response(&zzzz, Answer::new(404, None, CHART_404, now())).unwrap(),
            None
        );
        // Same body with 200, as some deployments send it.
        assert_eq!(
            chart_from_response(&zzzz, Answer::new(200, None, CHART_404, now())).unwrap(),
            None
        );
        // A 404 that is not Yahoo's (wrong base URL, a proxy page) is an error.
        assert!(matches!(
            chart_from_response(&zzzz, Answer::new(404, None, HTML_503, now())),
            Err(UpstreamError::Status { status: 404, .. })
        ));
        let other =
            br#"{"chart":{"result":null,"error":{"code":"Bad Request","description":"x"}}}"#;
        assert!(matches!(
            chart_from_response(&zzzz, Answer::new(200, None, other, now())),
            Err(UpstreamError::BadData(_))
        ));
    }

    /// The error a spark answer for AAPL is read as.
    fn spark_error(status: u16, retry_after: Option<&str>, body: &[u8]) -> UpstreamError {
        spark_from_response(
            &syms(&["AAPL"]),
            Answer::new(status, retry_after, body, now()),
        )
        .unwrap_err()
    }

    /// The error a chart answer for AAPL is read as.
    fn chart_error(status: u16, retry_after: Option<&str>, body: &[u8]) -> UpstreamError {
        chart_from_response(&sym("AAPL"), Answer::new(status, retry_after, body, now()))
            .unwrap_err()
    }

    #[test]
    fn rate_limiting_carries_retry_after() {
        assert!(matches!(
            spark_error(429, Some("7"), TEXT_429),
            UpstreamError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            chart_error(429, None, TEXT_429),
            UpstreamError::RateLimited { retry_after: None }
        ));
        // The text body is never mistaken for data, whatever the status says.
        assert!(matches!(
            parse_spark(&syms(&["AAPL"]), TEXT_429),
            Err(UpstreamError::BadData(_))
        ));
    }

    #[test]
    fn server_errors_and_html_are_errors() {
        assert!(matches!(
            spark_error(503, Some("120"), HTML_503),
            UpstreamError::Status { status: 503, retry_after: Some(d) } if d == Duration::from_secs(120)
        ));
        let err = spark_error(200, None, HTML_503);
        let UpstreamError::BadData(message) = err else {
            panic!("{err:?}")
        };
        assert!(message.contains("<!DOCTYPE html>"), "{message}");
        assert!(matches!(
            chart_error(200, None, HTML_503),
            UpstreamError::BadData(_)
        ));
    }

    #[test]
    fn too_many_symbols_is_a_client_error() {
        let err = spark_error(400, None, TOO_MANY);
        assert!(matches!(err, UpstreamError::Status { status: 400, .. }));
        assert_eq!(err.outcome(), "client_error");
        // The same body with 200 is still not quotes.
        assert!(matches!(
            parse_spark(&syms(&["AAPL"]), TOO_MANY),
            Err(UpstreamError::BadData(m)) if m.contains("less than or equal to 20")
        ));
    }

    #[test]
    fn wrong_shapes_are_bad_data_never_panics() {
        let requested = syms(&["AAPL", "7203.T"]);
        let bodies: &[&[u8]] = &[
            b"",
            b"\x00\xff\xfe garbage",
            b"null",
            b"[]",
            b"42",
            b"{\"spark\":5}",
            b"{\"spark\":{\"result\":{}}}",
            b"{\"finance\":{\"result\":null,\"error\":{\"code\":\"x\"}}}",
            b"{\"AAPL\":1}",
            b"{\"AAPL\":{\"close\":",
            b"<!DOCTYPE html>",
        ];
        for body in bodies {
            assert!(
                matches!(
                    parse_spark(&requested, body),
                    Err(UpstreamError::BadData(_))
                ),
                "{:?}",
                String::from_utf8_lossy(body)
            );
            assert!(
                matches!(
                    parse_chart(&requested[0], body),
                    Err(UpstreamError::BadData(_))
                ),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        // Real answers cut short (a dropped connection). A prime stride keeps
        // the test fast while still cutting inside every kind of token.
        // A prefix that lacks only the trailing newline is still a whole answer,
        // so cuts stop two bytes short of the end.
        for cut in (0..SPARK.len() - 2).step_by(31) {
            let result = parse_spark(&requested, &SPARK[..cut]);
            assert!(matches!(result, Err(UpstreamError::BadData(_))), "{cut}");
        }
        for cut in (0..CHART.len() - 2).step_by(7) {
            let result = parse_chart(&requested[1], &CHART[..cut]);
            assert!(matches!(result, Err(UpstreamError::BadData(_))), "{cut}");
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("30", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("999999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("86400", now), Some(MAX_RETRY_AFTER));
        for bad in ["", "-5", "1.5", "soon", "Wed, 99 Oct 2015"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn urls_percent_encode_symbols() {
        let yahoo = YahooProvider::new(
            "http://127.0.0.1:9/",
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(yahoo.base_url(), "http://127.0.0.1:9");
        assert_eq!(
            yahoo.spark_url(&syms(&["^N225", "USDJPY=X", "7203.T", "BRK-B", "^n225"])),
            "http://127.0.0.1:9/v7/finance/spark?symbols=%5EN225,USDJPY%3DX,7203.T,BRK-B\
             &range=1d&interval=5m"
        );
        assert_eq!(
            yahoo.chart_url(&sym("^N225")),
            "http://127.0.0.1:9/v8/finance/chart/%5EN225?range=1d&interval=5m"
        );
        assert_eq!(yahoo.name(), "yahoo");
        assert!(yahoo.rate_limited());
    }

    #[test]
    fn a_base_url_that_is_not_a_url_is_refused() {
        let timeout = Duration::from_secs(1);
        assert!(YahooProvider::new("not a url", timeout, timeout).is_err());
        assert!(YahooProvider::new("", timeout, timeout).is_err());
        assert!(YahooProvider::new("https://query1.finance.yahoo.com", timeout, timeout).is_ok());
    }
}
