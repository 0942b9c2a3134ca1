//! Property tests of everything that parses input from outside: the domain
//! types (HTTP bodies, paths, CLI arguments), the client's WebSocket messages
//! and the Yahoo answers. They stand in for fuzzing (which needs a nightly
//! toolchain): generated inputs, from arbitrary text and JSON trees to the
//! recorded Yahoo fixtures cut short or with a field of the wrong type, must
//! never panic and must keep each parser's invariants.
//!
//! Failing cases are shrunk by proptest; a real bug found here gets a fix and a
//! regression unit test beside the code, not a seed file.

use chrono::{DateTime, FixedOffset, Utc};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::strategy::Union;
use proptest::test_runner::TestCaseError;
use quotecast::domain::Symbol;
use quotecast::quote::MarketQuote;
use serde_json::{json, Map, Value};
use std::collections::HashSet;

/// The fields of a Yahoo answer's `meta` the parsers read.
const META_KEYS: &[&str] = &[
    "regularMarketPrice",
    "regularMarketTime",
    "regularMarketVolume",
    "previousClose",
    "chartPreviousClose",
    "longName",
    "shortName",
    "currency",
    "marketState",
    "symbol",
];

/// Keys and words Yahoo answers and client messages are made of (with
/// [`META_KEYS`], see [`vocabulary`]).
const WORDS: &[&str] = &[
    "spark",
    "result",
    "response",
    "meta",
    "chart",
    "error",
    "code",
    "description",
    "Not Found",
    "close",
    "timestamp",
    "indicators",
    "quote",
    "currentTradingPeriod",
    "regular",
    "start",
    "end",
    "type",
    "ping",
    "snapshot",
    "0",
    "AAPL",
    "aapl",
    "7203.T",
    "6758.T",
    "ZZZZ",
];

/// Keys and words Yahoo answers and client messages are made of, so generated
/// trees reach the paths the parsers look at instead of only random keys.
fn vocabulary() -> Vec<&'static str> {
    [WORDS, META_KEYS].concat()
}

/// Any text, or text of one of these shapes (regexes), each as likely: the
/// shapes reach the paths of a parser that random text rarely does.
fn text_or(shapes: &[&'static str]) -> impl Strategy<Value = String> {
    let mut arms = vec![any::<String>().boxed()];
    arms.extend(shapes.iter().map(|&shape| shape.boxed()));
    Union::new(arms)
}

/// Symbols the generated answers and requests are drawn from: the fixtures'
/// own and a few with the characters that need care (`^`, `=`, `-`).
const SYMBOL_POOL: &[&str] = &[
    "7203.T", "6758.T", "AAPL", "ZZZZ", "^N225", "USDJPY=X", "BRK-B",
];

/// Numbers at and beyond the edges of what f64 and i64 hold.
fn huge_number() -> impl Strategy<Value = Value> {
    select(vec![
        json!(1e308),
        json!(-1e308),
        json!(f64::MAX),
        json!(f64::MIN),
        json!(i64::MAX as f64),
        json!(18_446_744_073_709_551_616.0_f64), // 2^64
        json!(u64::MAX),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(f64::MIN_POSITIVE),
        json!(5e-324),
        json!(-0.0),
        json!(1e12),
        json!(-1e12),
    ])
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Non-finite floats become null in serde_json, which is fine here.
        prop::num::f64::ANY.prop_map(Value::from),
        huge_number(),
        select(vocabulary()).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vocabulary()).prop_map(str::to_owned),
        1 => ".{0,8}",
    ]
}

/// An arbitrary JSON tree, bounded in depth and size.
fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((json_key(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// A value of any JSON type, to put where the fixture has another.
fn replacement_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        "[ -~]{0,10}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop::num::f64::NORMAL.prop_map(Value::from),
        huge_number(),
        Just(json!([])),
        Just(json!({})),
        prop::collection::vec(json_leaf(), 1..4).prop_map(Value::Array),
        json_value(),
    ]
}

/// proptest's defaults (256 cases, `PROPTEST_CASES` overrides) without seed
/// files: a failure found here becomes a unit test beside the code instead.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn sym(s: &str) -> Symbol {
    Symbol::parse(s).unwrap()
}

fn syms(list: &[&str]) -> Vec<Symbol> {
    list.iter().map(|s| sym(s)).collect()
}

/// Requested symbols: from the pool (so answers mention them) or any valid
/// symbol, duplicates allowed, as the fetcher could pass them.
fn requested_symbols() -> impl Strategy<Value = Vec<Symbol>> {
    let one = prop_oneof![
        3 => select(SYMBOL_POOL).prop_map(sym),
        1 => "[A-Z0-9.^=-]{1,20}".prop_map(|s| sym(&s)),
    ];
    prop::collection::vec(one, 0..6)
}

fn upstream_now() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_102_444_800).prop_map(|secs| DateTime::from_timestamp(secs, 0).unwrap())
}

// ---------------------------------------------------------------------------
// Domain types
// ---------------------------------------------------------------------------

mod domain {
    use super::*;
    use quotecast::domain::{BoundedText, Description, Memo, Price, Quantity, WatchlistName};

    const SYMBOL_EXTRA: &str = ".-^=";

    fn symbol_like() -> impl Strategy<Value = String> {
        text_or(&[
            "\\s{0,2}[A-Za-z0-9.^=-]{0,22}\\s{0,2}",
            "[ -~]{0,24}",
            "\\PC{0,24}",
        ])
    }

    fn amount() -> impl Strategy<Value = f64> {
        prop_oneof![
            prop::num::f64::ANY,
            0.0..=1e15,
            select(vec![
                f64::NAN,
                -f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                0.0,
                -0.0,
                5e-324,
                -5e-324,
                f64::MIN_POSITIVE,
                1e15,
                1e15_f64.next_up(),
                1e15_f64.next_down(),
                f64::MAX,
                f64::MIN,
            ]),
        ]
    }

    /// The accept/refuse oracle and the round trip shared by both amounts.
    fn check_amount<T: Copy + PartialEq + std::fmt::Debug>(
        value: f64,
        parse: fn(f64) -> Result<T, quotecast::domain::DomainError>,
        get: fn(T) -> f64,
    ) -> Result<(), TestCaseError> {
        let should_accept = (0.0..=1e15).contains(&value);
        match parse(value) {
            Ok(amount) => {
                prop_assert!(should_accept, "{value:e} accepted");
                let got = get(amount);
                prop_assert!(got.is_finite() && got <= 1e15);
                // Not even -0.0: it would be echoed to clients as "-0.0".
                prop_assert!(got.is_sign_positive(), "{got:e}");
                prop_assert_eq!(got, value);
                prop_assert_eq!(parse(got), Ok(amount));
            }
            Err(e) => {
                prop_assert!(!should_accept, "{value:e} refused: {e}");
                prop_assert!(!e.message.is_empty());
            }
        }
        Ok(())
    }

    fn text_near(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(any::<char>(), max - 5..max + 5)
            .prop_map(|chars| chars.into_iter().collect())
    }

    fn check_bounded<const MAX: usize>(raw: &str) -> Result<(), TestCaseError> {
        match BoundedText::<MAX>::parse("field", raw) {
            Ok(text) => {
                prop_assert!(raw.chars().count() <= MAX);
                let inner = text.clone().into_inner();
                prop_assert_eq!(&inner, raw);
                prop_assert_eq!(BoundedText::<MAX>::parse("field", &inner), Ok(text));
            }
            Err(e) => {
                prop_assert!(raw.chars().count() > MAX);
                prop_assert_eq!(e.field, "field");
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn symbol_parse_accepts_exactly_the_allowed_set(raw in symbol_like()) {
            let trimmed = raw.trim();
            let allowed = !trimmed.is_empty()
                && trimmed.chars().count() <= Symbol::MAX_LEN
                && trimmed
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || SYMBOL_EXTRA.contains(c));
            match Symbol::parse(&raw) {
                Ok(symbol) => {
                    prop_assert!(allowed, "{raw:?} accepted");
                    let s = symbol.as_str();
                    prop_assert_eq!(s, trimmed.to_ascii_uppercase());
                    prop_assert!((1..=Symbol::MAX_LEN).contains(&s.len()));
                    prop_assert!(s.chars().all(|c| c.is_ascii_uppercase()
                        || c.is_ascii_digit()
                        || SYMBOL_EXTRA.contains(c)));
                    prop_assert_eq!(Symbol::parse(&symbol.to_string()), Ok(symbol.clone()));
                    prop_assert_eq!(String::from(symbol.clone()), symbol.to_string());
                }
                Err(e) => {
                    prop_assert!(!allowed, "{raw:?} refused: {e}");
                    prop_assert_eq!(e.field, "symbol");
                }
            }
        }

        #[test]
        fn every_valid_symbol_is_accepted_in_any_case(
            raw in "[A-Za-z0-9.^=-]{1,20}",
            pad_left in "[ \t]{0,2}",
            pad_right in "[ \t\n]{0,2}",
        ) {
            let symbol = Symbol::parse(&format!("{pad_left}{raw}{pad_right}"));
            prop_assert_eq!(symbol.map(|s| s.to_string()), Ok(raw.to_ascii_uppercase()));
        }

        #[test]
        fn symbol_serde_agrees_with_parse(raw in symbol_like()) {
            let from_json: Result<Symbol, _> = serde_json::from_value(Value::from(raw.as_str()));
            let parsed = Symbol::parse(&raw);
            prop_assert_eq!(from_json.as_ref().ok(), parsed.as_ref().ok());
            if let Ok(symbol) = parsed {
                prop_assert_eq!(serde_json::to_value(&symbol).unwrap(), json!(symbol.as_str()));
            }
        }

        #[test]
        fn watchlist_names_are_trimmed_bounded_and_round_trip(
            raw in prop_oneof![
                any::<String>(),
                "\\s{0,2}\\PC{0,110}\\s{0,2}",
                prop::collection::vec(any::<char>(), 95..106)
                    .prop_map(|c| c.into_iter().collect::<String>()),
            ],
        ) {
            let trimmed = raw.trim();
            let allowed = !trimmed.is_empty()
                && trimmed.chars().count() <= WatchlistName::MAX_LEN
                && !trimmed.chars().any(char::is_control);
            match WatchlistName::parse(&raw) {
                Ok(name) => {
                    prop_assert!(allowed, "{raw:?} accepted");
                    prop_assert_eq!(name.as_str(), trimmed);
                    prop_assert_eq!(WatchlistName::parse(name.as_str()), Ok(name.clone()));
                    prop_assert_eq!(String::from(name), trimmed);
                }
                Err(e) => {
                    prop_assert!(!allowed, "{raw:?} refused: {e}");
                    prop_assert_eq!(e.field, "name");
                }
            }
        }

        #[test]
        fn descriptions_and_memos_count_characters(
            raw in prop_oneof![any::<String>(), text_near(500), text_near(1000)],
        ) {
            check_bounded::<1000>(&raw)?;
            check_bounded::<500>(&raw)?;
            // The aliases are the caps the SPEC names.
            prop_assert_eq!(
                Description::parse("description", &raw).is_ok(),
                raw.chars().count() <= 1000
            );
            prop_assert_eq!(Memo::parse("memo", &raw).is_ok(), raw.chars().count() <= 500);
        }

        #[test]
        fn quantities_are_finite_non_negative_and_bounded(value in amount()) {
            check_amount(value, Quantity::parse, Quantity::get)?;
        }

        #[test]
        fn prices_are_finite_non_negative_and_bounded(value in amount()) {
            check_amount(value, Price::parse, Price::get)?;
        }
    }
}

// ---------------------------------------------------------------------------
// Client WebSocket messages
// ---------------------------------------------------------------------------

mod protocol {
    use super::*;
    use quotecast::protocol::{parse_client, ClientError, ClientMessage, Since};

    /// Every message a client may send, as JSON and as parsed. A new message
    /// type is one line here (with a strategy for its fields if it has any).
    fn client_message() -> impl Strategy<Value = (Value, ClientMessage)> {
        prop_oneof![
            Just(()).prop_map(|()| (json!({"type": "ping"}), ClientMessage::Ping)),
            Just(()).prop_map(|()| (
                json!({"type": "snapshot"}),
                ClientMessage::Snapshot { watchlist_id: None }
            )),
            any::<i64>().prop_map(|id| (
                json!({"type": "snapshot", "watchlist_id": id}),
                ClientMessage::Snapshot { watchlist_id: Some(id) }
            )),
            (any::<i64>(), any::<bool>()).prop_map(|(id, intraday)| (
                json!({"type": "subscribe", "watchlist_id": id, "intraday": intraday}),
                ClientMessage::Subscribe { watchlist_id: id, since: None, intraday }
            )),
            (any::<i64>(), "[0-9a-f]{1,16}", any::<u64>()).prop_map(|(id, epoch, seq)| (
                json!({"type": "subscribe", "watchlist_id": id, "since": {"epoch": epoch, "seq": seq}}),
                ClientMessage::Subscribe {
                    watchlist_id: id,
                    since: Some(Since { epoch, seq }),
                    intraday: false,
                }
            )),
            any::<i64>().prop_map(|id| (
                json!({"type": "unsubscribe", "watchlist_id": id}),
                ClientMessage::Unsubscribe { watchlist_id: id }
            )),
        ]
    }

    /// Extra fields a client may add; the prefix keeps them clear of any
    /// message's own fields.
    fn extra_fields() -> impl Strategy<Value = Vec<(String, Value)>> {
        prop::collection::vec(("x_[a-z_]{0,8}", json_value()), 0..4)
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_text_never_panics(text in text_or(&[
            "[\\[\\]{}\":,a-z0-9 ]{0,40}",
            "\\{\"type\":\"[a-z]{0,10}\"[,}\\]]{0,2}",
        ])) {
            let result = parse_client(&text);
            if !serde_json::from_str::<Value>(&text).is_ok_and(|v| v.is_object()) {
                prop_assert_eq!(result, Err(ClientError::MalformedJson));
            }
        }

        #[test]
        fn arbitrary_json_never_panics(value in json_value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                value.to_string()
            };
            let result = parse_client(&text);
            match &value {
                Value::Object(object) => {
                    prop_assert_ne!(&result, &Err(ClientError::MalformedJson));
                    // Every message is tagged, so nothing parses without a `type`.
                    if result.is_ok() {
                        prop_assert!(object.get("type").is_some_and(Value::is_string));
                    }
                }
                _ => prop_assert_eq!(result, Err(ClientError::MalformedJson)),
            }
        }

        #[test]
        fn valid_messages_parse(
            (message, expected) in client_message(),
            extra in extra_fields(),
            pretty in any::<bool>(),
        ) {
            let mut object = message.as_object().unwrap().clone();
            object.extend(extra);
            let value = Value::Object(object);
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                value.to_string()
            };
            prop_assert_eq!(parse_client(&text), Ok(expected));
        }

        #[test]
        fn unknown_types_are_unknown(
            (message, _) in client_message(),
            kind in prop_oneof![
                "no_such_[a-z_]{0,8}".prop_map(Value::from),
                json_leaf().prop_filter("not a string", |v| !v.is_string()),
            ],
            case_changed in any::<bool>(),
        ) {
            let mut object = message.as_object().unwrap().clone();
            let kind = if case_changed {
                // A real type in the wrong case is not that type.
                Value::from(object["type"].as_str().unwrap().to_ascii_uppercase())
            } else {
                kind
            };
            object.insert("type".into(), kind);
            let text = Value::Object(object).to_string();
            prop_assert_eq!(parse_client(&text), Err(ClientError::UnknownType));
        }
    }

    #[test]
    fn a_type_must_be_a_string() {
        for kind in ["0", "1", "2", "true", "null", "[]", "{}", "\"\""] {
            let text = format!("{{\"type\":{kind}}}");
            assert_eq!(parse_client(&text), Err(ClientError::UnknownType), "{text}");
        }
    }

    #[test]
    fn deep_nesting_is_malformed_not_a_stack_overflow() {
        for opener in ["[", "{\"a\":", "{\"type\":"] {
            let text = opener.repeat(100_000);
            assert_eq!(parse_client(&text), Err(ClientError::MalformedJson));
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse_client(&deep), Err(ClientError::MalformedJson));
    }
}

// ---------------------------------------------------------------------------
// Yahoo answers
// ---------------------------------------------------------------------------

mod yahoo {
    use super::*;
    use quotecast::upstream::yahoo::{
        chart_from_response, check_status, parse_chart, parse_retry_after, parse_spark,
        spark_from_response, Answer, MAX_RETRY_AFTER,
    };
    use quotecast::upstream::UpstreamError;
    use serde::de::IgnoredAny;
    use std::time::Duration;

    /// Each recorded answer with the status it came with and the symbols a
    /// parse of it, untouched, gives.
    const FIXTURES: &[(&str, &[u8], u16, &[&str])] = &[
        (
            "spark",
            include_bytes!("fixtures/yahoo/spark_7203.T_6758.T_AAPL_ZZZZ.json"),
            200,
            &["7203.T", "6758.T", "AAPL"],
        ),
        (
            "legacy",
            include_bytes!("fixtures/yahoo/spark_legacy_flat_7203.T_AAPL.json"),
            200,
            &["7203.T", "AAPL"],
        ),
        (
            "too_many",
            include_bytes!("fixtures/yahoo/spark_too_many_symbols_400.json"),
            400,
            &[],
        ),
        (
            "chart",
            include_bytes!("fixtures/yahoo/chart_7203.T.json"),
            200,
            &["7203.T"],
        ),
        (
            "chart_404",
            include_bytes!("fixtures/yahoo/chart_unknown_404.json"),
            404,
            &[],
        ),
        (
            "text_429",
            include_bytes!("fixtures/yahoo/rate_limited_429.txt"),
            429,
            &[],
        ),
        (
            "html_503",
            include_bytes!("fixtures/yahoo/server_error_503.html"),
            503,
            &[],
        ),
    ];

    /// The body of the fixture named `name`.
    fn fixture(name: &str) -> &'static [u8] {
        FIXTURES.iter().find(|f| f.0 == name).expect("a fixture").1
    }

    /// The moment the fixtures were recorded at (their `regularMarketTime`).
    fn fixture_now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_791_181_800, 0).unwrap()
    }

    fn is_bad_data<T>(result: &Result<T, UpstreamError>) -> bool {
        matches!(result, Err(UpstreamError::BadData(_)))
    }

    /// `answer` parsed as a spark answer for `requested`: it must parse, and
    /// its quotes keep the invariants of [`check_quotes`].
    fn parsed_spark(
        requested: &[Symbol],
        answer: &Value,
    ) -> Result<Vec<MarketQuote>, TestCaseError> {
        let quotes = parse_spark(requested, answer.to_string().as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        check_quotes(requested, &quotes)?;
        Ok(quotes)
    }

    /// What every list of quotes from a parse must satisfy.
    fn check_quotes(requested: &[Symbol], quotes: &[MarketQuote]) -> Result<(), TestCaseError> {
        let mut seen = HashSet::new();
        for quote in quotes {
            prop_assert!(requested.contains(&quote.symbol), "{quote:?} not requested");
            prop_assert!(seen.insert(&quote.symbol), "{} twice", quote.symbol);
            check_quote(quote)?;
        }
        Ok(())
    }

    fn check_quote(quote: &MarketQuote) -> Result<(), TestCaseError> {
        for number in [quote.price, quote.previous_close].into_iter().flatten() {
            prop_assert!(number.is_finite(), "{quote:?}");
        }
        if let Some(volume) = quote.volume {
            prop_assert!(volume >= 0, "{quote:?}");
        }
        for text in [&quote.name, &quote.currency, &quote.market_state]
            .into_iter()
            .flatten()
        {
            prop_assert!(!text.trim().is_empty() && text.chars().count() <= 200);
        }
        Ok(())
    }

    type Parsed = (
        Result<Vec<MarketQuote>, UpstreamError>,
        Result<Option<MarketQuote>, UpstreamError>,
    );

    /// Both parsers on one 2xx body: never a panic, only BadData as an error,
    /// BadData whenever the body is not JSON, and quotes that keep the
    /// invariants. The results are handed back for further checks.
    fn check_parses(requested: &[Symbol], body: &[u8]) -> Result<Parsed, TestCaseError> {
        // IgnoredAny: whether it is JSON at all, without building a tree.
        let is_json = serde_json::from_slice::<IgnoredAny>(body).is_ok();

        let spark = parse_spark(requested, body);
        match &spark {
            Ok(quotes) => check_quotes(requested, quotes)?,
            Err(e) => prop_assert!(matches!(e, UpstreamError::BadData(_)), "{e:?}"),
        }
        prop_assert!(is_json || is_bad_data(&spark));

        let one = requested.first().cloned().unwrap_or_else(|| sym("AAPL"));
        let chart = parse_chart(&one, body);
        match &chart {
            Ok(Some(quote)) => {
                prop_assert_eq!(&quote.symbol, &one);
                check_quote(quote)?;
            }
            Ok(None) => {}
            Err(e) => prop_assert!(matches!(e, UpstreamError::BadData(_)), "{e:?}"),
        }
        prop_assert!(is_json || is_bad_data(&chart));
        Ok((spark, chart))
    }

    /// [`check_parses`], and the `*_from_response` wrappers agree with the
    /// parsers on a 2xx.
    fn check_body(requested: &[Symbol], body: &[u8]) -> Result<(), TestCaseError> {
        let now = fixture_now();
        let (spark, chart) = check_parses(requested, body)?;
        let whole = spark_from_response(requested, Answer::new(200, None, body, now));
        prop_assert_eq!(format!("{whole:?}"), format!("{spark:?}"));
        let one = requested.first().cloned().unwrap_or_else(|| sym("AAPL"));
        let whole = chart_from_response(&one, Answer::new(200, None, body, now));
        prop_assert_eq!(format!("{whole:?}"), format!("{chart:?}"));
        Ok(())
    }

    fn check_status_mapping(
        status: u16,
        retry_after: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), TestCaseError> {
        let expected_wait = retry_after.and_then(|v| parse_retry_after(v, now));
        match check_status(status, retry_after, now) {
            Ok(()) => prop_assert!((200..300).contains(&status)),
            Err(UpstreamError::RateLimited { retry_after }) => {
                prop_assert_eq!(status, 429);
                prop_assert_eq!(retry_after, expected_wait);
            }
            Err(UpstreamError::Status {
                status: got,
                retry_after,
            }) => {
                prop_assert!(!(200..300).contains(&status) && status != 429);
                prop_assert_eq!(got, status);
                prop_assert_eq!(retry_after, expected_wait);
            }
            Err(e) => return Err(TestCaseError::fail(format!("{status}: {e:?}"))),
        }
        Ok(())
    }

    /// Yahoo's "this symbol does not exist" body, as `chart_from_response`
    /// reads a 404.
    fn has_chart_error(body: &[u8]) -> bool {
        serde_json::from_slice::<Value>(body).is_ok_and(|v| {
            v.get("chart")
                .and_then(|c| c.get("error"))
                .is_some_and(Value::is_object)
        })
    }

    fn status() -> impl Strategy<Value = u16> {
        prop_oneof![
            any::<u16>(),
            select(vec![
                0, 100, 199, 200, 201, 204, 299, 300, 304, 400, 403, 404, 429, 500, 503, 599, 999,
            ]),
        ]
    }

    fn retry_after_text() -> impl Strategy<Value = String> {
        text_or(&[
            "\\s{0,2}[0-9]{1,30}\\s{0,2}",
            "[-+ .0-9a-zA-Z,:]{0,32}",
            // Shapes of an HTTP-date with fields out of range.
            "(Mon|Wed|Xyz), [0-9]{1,3} (Jan|Oct|Foo) [0-9]{1,6} [0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2} (GMT|UT|Z|[-+][0-9]{4})",
        ])
    }

    // --- fixtures cut short or edited ---

    #[test]
    fn untouched_fixtures_give_their_known_symbols() {
        let requested = syms(&["7203.T", "6758.T", "AAPL", "ZZZZ"]);
        for (name, body, status, expected) in FIXTURES {
            let expected: HashSet<String> = expected.iter().map(|s| s.to_string()).collect();
            let got: HashSet<String> = if name.starts_with("chart") {
                // A chart answer is for the symbol of the URL it was fetched from.
                parse_chart(&sym("7203.T"), body)
                    .ok()
                    .flatten()
                    .map(|q| q.symbol.to_string())
                    .into_iter()
                    .collect()
            } else {
                parse_spark(&requested, body)
                    .map(|quotes| quotes.iter().map(|q| q.symbol.to_string()).collect())
                    .unwrap_or_default()
            };
            assert_eq!(got, expected, "{name}");
            // The fixture's own status through the whole-answer functions.
            let now = fixture_now();
            let spark = spark_from_response(&requested, Answer::new(*status, None, body, now));
            if *status != 200 {
                assert!(
                    matches!(
                        spark,
                        Err(UpstreamError::RateLimited { .. } | UpstreamError::Status { .. })
                    ),
                    "{name}: {spark:?}"
                );
            }
        }
        let now = fixture_now();
        assert_eq!(
            chart_from_response(
                &sym("ZZZZ"),
                Answer::new(404, None, fixture("chart_404"), now)
            )
            .unwrap(),
            None
        );
    }

    /// Every prefix of every fixture, as a connection dropped at any byte
    /// would leave it.
    #[test]
    fn every_truncation_of_every_fixture_is_handled() {
        let requested = syms(&["7203.T", "6758.T", "AAPL", "ZZZZ", "7203.T"]);
        let now = fixture_now();
        for (name, body, status, _) in FIXTURES {
            // Up to the closing brace a JSON object is incomplete; only the
            // trailing newline may go missing.
            let complete_at = body.trim_ascii_end().len();
            for cut in 0..=body.len() {
                let prefix = &body[..cut];
                let (spark, chart) = check_parses(&requested, prefix)
                    .unwrap_or_else(|e| panic!("{name} cut at {cut}: {e}"));
                if body.first() == Some(&b'{') && cut < complete_at {
                    assert!(is_bad_data(&spark), "{name} {cut}");
                    assert!(is_bad_data(&chart), "{name} {cut}");
                }
                // A 404 is "unknown symbol" only once Yahoo's error body is whole.
                if *status == 404 {
                    let chart =
                        chart_from_response(&requested[3], Answer::new(404, None, prefix, now));
                    if cut < complete_at {
                        assert!(
                            matches!(chart, Err(UpstreamError::Status { status: 404, .. })),
                            "{name} {cut}: {chart:?}"
                        );
                    } else {
                        assert_eq!(chart.unwrap(), None, "{name} {cut}");
                    }
                }
            }
        }
    }

    /// JSON pointers to every value inside `value`, the root excluded.
    fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
        let children: Vec<(String, &Value)> = match value {
            Value::Object(o) => o
                .iter()
                .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v))
                .collect(),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
            _ => Vec::new(),
        };
        for (key, child) in children {
            let path = format!("{at}/{key}");
            out.push(path.clone());
            pointers(child, path, out);
        }
    }

    /// A parsed fixture and the pointers of all its values.
    struct Tree {
        name: &'static str,
        value: Value,
        pointers: Vec<String>,
    }

    fn json_fixtures() -> Vec<Tree> {
        FIXTURES
            .iter()
            .filter_map(|(name, body, _, _)| {
                let value: Value = serde_json::from_slice(body).ok()?;
                let mut all = Vec::new();
                pointers(&value, String::new(), &mut all);
                Some(Tree {
                    name,
                    value,
                    pointers: all,
                })
            })
            .collect()
    }

    /// Number literals spliced in as text, for those no `Value` can hold or
    /// that serde_json reads back as another kind of number.
    const RAW_NUMBERS: &[&str] = &[
        "1e308",
        "-1e308",
        "1e309",
        "-1e400",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "123456789012345678901234567890",
        "-0",
        "5e-324",
        "1e-400",
        "1.7976931348623157e308",
    ];

    const RAW_MARKER: &str = "@@raw-number@@";

    #[derive(Debug, Clone)]
    enum Edit {
        Replace(Value),
        Raw(&'static str),
        Remove,
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            6 => replacement_value().prop_map(Edit::Replace),
            2 => select(RAW_NUMBERS).prop_map(Edit::Raw),
            1 => Just(Edit::Remove),
        ]
    }

    /// Applies `edits` at the picked pointers; a pointer an earlier edit
    /// removed is skipped.
    fn edited(tree: &Tree, edits: &[(Index, Edit)]) -> Vec<u8> {
        let mut value = tree.value.clone();
        let mut raw = Vec::new();
        for (index, edit) in edits {
            let pointer = index.get(&tree.pointers);
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let key = key.replace("~1", "/").replace("~0", "~");
            match edit {
                Edit::Replace(new) => {
                    if let Some(slot) = value.pointer_mut(pointer) {
                        *slot = new.clone();
                    }
                }
                Edit::Raw(literal) => {
                    if let Some(slot) = value.pointer_mut(pointer) {
                        *slot = Value::from(RAW_MARKER);
                        raw.push(*literal);
                    }
                }
                Edit::Remove => match value.pointer_mut(parent) {
                    Some(Value::Object(o)) => {
                        o.remove(&key);
                    }
                    Some(Value::Array(a)) => {
                        if let Ok(i) = key.parse::<usize>() {
                            if i < a.len() {
                                a.remove(i);
                            }
                        }
                    }
                    _ => {}
                },
            }
        }
        let mut text = value.to_string();
        // Markers appear in document order, not edit order; any pairing will do.
        for literal in raw {
            text = text.replacen(&format!("\"{RAW_MARKER}\""), literal, 1);
        }
        text.into_bytes()
    }

    /// One parsed spark entry per current-shape answer item, for the oracle.
    fn usable_entries(answer: &Value) -> Vec<(String, Option<f64>)> {
        let mut out = Vec::new();
        for item in answer["spark"]["result"].as_array().into_iter().flatten() {
            let Some(chart) = item["response"].as_array().and_then(|r| r.first()) else {
                continue;
            };
            let name = item["symbol"]
                .as_str()
                .or_else(|| chart["meta"]["symbol"].as_str());
            let (Some(name), Some(meta)) = (name, chart["meta"].as_object()) else {
                continue;
            };
            let price = meta
                .get("regularMarketPrice")
                .and_then(Value::as_f64)
                .filter(|p| p.is_finite());
            out.push((name.trim().to_owned(), price));
        }
        out
    }

    /// A name as Yahoo might echo a symbol: other case, padded, or another.
    fn answer_name() -> impl Strategy<Value = String> {
        (select(SYMBOL_POOL), 0..4u8).prop_map(|(s, how)| match how {
            0 => s.to_owned(),
            1 => s.to_ascii_lowercase(),
            2 => format!(" {s}\t"),
            _ => format!("{s}X"),
        })
    }

    fn meta_field() -> impl Strategy<Value = Value> {
        prop_oneof![
            3 => (-1e6..1e7f64).prop_map(Value::from),
            1 => (1_600_000_000i64..1_900_000_000).prop_map(Value::from),
            1 => replacement_value(),
        ]
    }

    fn meta() -> impl Strategy<Value = Value> {
        let period = (meta_field(), meta_field())
            .prop_map(|(start, end)| json!({"regular": {"start": start, "end": end}}));
        (
            prop::collection::vec((select(META_KEYS), meta_field()), 0..8),
            prop::option::of(period),
        )
            .prop_map(|(fields, period)| {
                let mut meta: Map<String, Value> =
                    fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                if let Some(period) = period {
                    meta.insert("currentTradingPeriod".into(), period);
                }
                Value::Object(meta)
            })
    }

    fn closes() -> impl Strategy<Value = Value> {
        prop::collection::vec(prop_oneof![Just(Value::Null), meta_field()], 0..5)
            .prop_map(Value::Array)
    }

    /// A current-shape spark answer whose items name pool symbols (in Yahoo's
    /// spellings) with charts of random content.
    fn spark_answer() -> impl Strategy<Value = Value> {
        let item = (
            prop::option::of(answer_name()),
            prop::option::of(meta()),
            closes(),
            0..4u8,
        )
            .prop_map(|(name, meta, close, response)| {
                let mut chart = json!({"indicators": {"quote": [{"close": close}]}});
                if let Some(meta) = meta {
                    chart["meta"] = meta;
                }
                let response = match response {
                    0 => json!([]),
                    1 => json!(chart),
                    _ => json!([chart]),
                };
                let mut item = json!({"response": response});
                if let Some(name) = name {
                    item["symbol"] = name.into();
                }
                item
            });
        prop::collection::vec(item, 0..8)
            .prop_map(|items| json!({"spark": {"result": items, "error": null}}))
    }

    /// A legacy flat spark answer keyed by pool symbols.
    fn legacy_answer() -> impl Strategy<Value = Value> {
        let entry = prop_oneof![
            1 => Just(Value::Null),
            4 => (
                prop::option::of(answer_name()),
                closes(),
                prop::collection::vec(meta_field(), 0..5),
                prop::option::of(meta_field()),
            )
                .prop_map(|(name, close, timestamps, previous)| {
                    let mut entry = json!({"close": close, "timestamp": timestamps});
                    if let Some(name) = name {
                        entry["symbol"] = name.into();
                    }
                    if let Some(previous) = previous {
                        entry["previousClose"] = previous;
                    }
                    entry
                }),
        ];
        prop::collection::vec((answer_name(), entry), 0..6)
            .prop_map(|entries| Value::Object(entries.into_iter().collect()))
    }

    proptest! {
        #![proptest_config(config())]


        #[test]
        fn fixtures_with_edited_fields_never_break_invariants(
            which in any::<Index>(),
            edits in prop::collection::vec((any::<Index>(), edit()), 1..4),
            requested in requested_symbols(),
        ) {
            let trees = json_fixtures();
            let tree = which.get(&trees);
            let body = edited(tree, &edits);
            check_body(&requested, &body)
                .map_err(|e| TestCaseError::fail(format!("{}: {e}", tree.name)))?;
        }

        #[test]
        fn spark_picks_the_first_usable_entry_of_each_requested_symbol(
            answer in spark_answer(),
            requested in requested_symbols(),
        ) {
            let quotes = parsed_spark(&requested, &answer)?;
            let entries = usable_entries(&answer);
            let mut distinct: Vec<&Symbol> = Vec::new();
            for symbol in &requested {
                if !distinct.contains(&symbol) {
                    distinct.push(symbol);
                }
            }
            for symbol in distinct {
                let first = entries
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(symbol.as_str()));
                let quote = quotes.iter().find(|q| &q.symbol == symbol);
                match (first, quote) {
                    (None, None) => {}
                    (Some((_, price)), Some(quote)) => {
                        if let Some(want) = *price {
                            // serde_json's text round trip of a float may
                            // differ in the last place.
                            let got = quote.price.unwrap_or(f64::NAN);
                            prop_assert!(
                                (want - got).abs() <= 1e-12 * want.abs().max(got.abs()),
                                "{want} vs {got}"
                            );
                        }
                    }
                    (first, quote) => {
                        return Err(TestCaseError::fail(format!("{symbol}: {first:?} vs {quote:?}")))
                    }
                }
            }
        }

        #[test]
        fn legacy_spark_answers_parse_to_requested_symbols(
            answer in legacy_answer(),
            requested in requested_symbols(),
        ) {
            parsed_spark(&requested, &answer)?;
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_json_trees_never_break_invariants(
            value in prop_oneof![
                json_value(),
                json_value().prop_map(|v| json!({"spark": v})),
                json_value().prop_map(|v| json!({"spark": {"result": v}})),
                json_value().prop_map(|v| json!({"chart": v})),
                json_value().prop_map(|v| json!({"chart": {"result": [v]}})),
            ],
            requested in requested_symbols(),
        ) {
            let body = value.to_string().into_bytes();
            check_body(&requested, &body)?;
            if !value.is_object() {
                prop_assert!(is_bad_data(&parse_spark(&requested, &body)));
            }
            if !value.get("chart").is_some_and(Value::is_object) {
                prop_assert!(is_bad_data(&parse_chart(&sym("AAPL"), &body)));
            }
        }

        #[test]
        fn garbage_with_a_2xx_is_bad_data(
            body in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..200),
                "[ -~]{0,80}".prop_map(String::into_bytes),
            ],
            status in 200u16..300,
            requested in requested_symbols(),
        ) {
            prop_assume!(serde_json::from_slice::<Value>(&body).is_err());
            let now = fixture_now();
            prop_assert!(is_bad_data(&spark_from_response(&requested, Answer::new(status, None, &body, now))));
            prop_assert!(is_bad_data(&chart_from_response(&sym("AAPL"), Answer::new(status, None, &body, now))));
            check_body(&requested, &body)?;
        }

        #[test]
        fn statuses_decide_before_bodies(
            status in status(),
            retry_after in prop::option::of(retry_after_text()),
            fixture in any::<Index>(),
            now in upstream_now(),
        ) {
            let (_, body, _, _) = fixture.get(FIXTURES);
            let requested = syms(&["7203.T", "AAPL", "ZZZZ"]);
            let retry_after = retry_after.as_deref();
            check_status_mapping(status, retry_after, now)?;
            let checked = check_status(status, retry_after, now);

            let spark = spark_from_response(&requested, Answer::new(status, retry_after, body, now));
            match checked {
                Ok(()) => prop_assert_eq!(
                    format!("{spark:?}"),
                    format!("{:?}", parse_spark(&requested, body))
                ),
                Err(ref e) => prop_assert_eq!(format!("{spark:?}"), format!("{:?}", Err::<(), _>(e))),
            }

            let chart = chart_from_response(&requested[0], Answer::new(status, retry_after, body, now));
            if status == 404 && has_chart_error(body) {
                prop_assert!(matches!(chart, Ok(None)), "{chart:?}");
            } else {
                match checked {
                    Ok(()) => prop_assert_eq!(
                        format!("{chart:?}"),
                        format!("{:?}", parse_chart(&requested[0], body))
                    ),
                    Err(e) => prop_assert_eq!(format!("{chart:?}"), format!("{:?}", Err::<(), _>(e))),
                }
            }
        }

        #[test]
        fn a_404_is_unknown_only_with_yahoos_error_body(
            value in prop_oneof![
                json_value(),
                json_value().prop_map(|v| json!({"chart": v})),
                json_value().prop_map(|v| json!({"chart": {"result": null, "error": v}})),
            ],
            retry_after in prop::option::of(retry_after_text()),
        ) {
            let body = value.to_string().into_bytes();
            let now = fixture_now();
            let chart = chart_from_response(&sym("ZZZZ"), Answer::new(404, retry_after.as_deref(), &body, now));
            if has_chart_error(&body) {
                prop_assert!(matches!(chart, Ok(None)), "{chart:?}");
            } else {
                prop_assert!(
                    matches!(chart, Err(UpstreamError::Status { status: 404, .. })),
                    "{chart:?}"
                );
            }
        }

        #[test]
        fn retry_after_is_never_beyond_the_cap(
            value in retry_after_text(),
            now in prop_oneof![
                upstream_now(),
                Just(DateTime::<Utc>::MIN_UTC),
                Just(DateTime::<Utc>::MAX_UTC),
            ],
        ) {
            if let Some(wait) = parse_retry_after(&value, now) {
                prop_assert!(wait <= MAX_RETRY_AFTER);
            }
            let trimmed = value.trim();
            if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
                let secs = trimmed.parse::<u64>().unwrap_or(u64::MAX);
                prop_assert_eq!(
                    parse_retry_after(&value, now),
                    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
                );
            }
        }

        #[test]
        fn retry_after_reads_http_dates_relative_to_now(
            now in upstream_now(),
            delta in -200_000i64..200_000,
            offset_minutes in -(24 * 60 - 1)..(24 * 60),
            gmt in any::<bool>(),
        ) {
            let at = now + chrono::TimeDelta::seconds(delta);
            let text = if gmt {
                at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
            } else {
                let offset = FixedOffset::east_opt(offset_minutes * 60).unwrap();
                at.with_timezone(&offset).to_rfc2822()
            };
            let expected = Duration::from_secs(delta.clamp(0, 3600) as u64);
            prop_assert_eq!(parse_retry_after(&text, now), Some(expected), "{}", text);
        }
    }
}
