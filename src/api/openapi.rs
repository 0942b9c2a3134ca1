//! The OpenAPI 3.1 document of the HTTP API, served at
//! `GET /api/v1/openapi.json`, and what it is built from.
//!
//! Nothing here lists operations: each handler carries its own description
//! (`#[utoipa::path]` beside its actix route attribute), and [`Documented`]
//! adds it to the document as it registers the handler, so the document and
//! the routes come from the same calls in [`super::routes`]. This module
//! owns the rest: the document's frame ([`base`]: info, the bearer scheme, the
//! error envelope), the error answers operations share ([`Authenticated`],
//! [`JsonBody`], [`ReadsWatchlist`], [`OwnsWatchlist`], [`OwnsItem`], [`OwnsAlert`]), and the patterns that say in the document what the domain
//! parsers accept.

use super::{ApiError, ErrorBody};
use crate::domain::{Symbol, WatchlistName};
use actix_web::dev::HttpServiceFactory;
use actix_web::http::Method;
use actix_web::{get, web, HttpResponse};
use std::borrow::Cow;
use std::collections::HashMap;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, PathItem, RefOr};
use utoipa::{IntoResponses, Modify, PartialSchema, ToSchema};
use utoipa_actix_web::OpenApiFactory;

/// The name of the bearer-token security scheme in the document.
pub const BEARER: &str = "bearer";

/// What `char::is_whitespace` (and so `str::trim`) accepts, spelled for an
/// ECMA-262 (and Python, and Rust `regex`) character class.
macro_rules! ws {
    () => {
        r"\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000"
    };
}
/// Control characters (`char::is_control`, Unicode Cc).
macro_rules! cc {
    () => {
        r"\u0000-\u001F\u007F-\u009F"
    };
}
/// One symbol as [`crate::domain::Symbol::parse`] reads it: trimmed, then
/// 1-20 characters of `A-Z a-z 0-9 . - ^ =` (upper-cased when stored).
macro_rules! symbol {
    () => {
        concat!("[", ws!(), "]*[A-Za-z0-9.^=-]{1,20}[", ws!(), "]*")
    };
}

/// A symbol, as [`crate::domain::Symbol::parse`] accepts it.
pub const SYMBOL_PATTERN: &str = concat!("^", symbol!(), "$");

/// A watchlist name, as [`crate::domain::WatchlistName::parse`] accepts it:
/// 1-100 characters after trimming, none of them a control character.
pub const NAME_PATTERN: &str = concat!(
    "^[",
    ws!(),
    "]*(?:[^",
    cc!(),
    ws!(),
    "]|[^",
    cc!(),
    ws!(),
    "][^",
    cc!(),
    "]{0,98}[^",
    cc!(),
    ws!(),
    "])[",
    ws!(),
    "]*$"
);

/// The `symbols` query of `GET /api/v1/quotes`: comma-separated symbols,
/// blank entries skipped, 1 to [`super::quotes::MAX_QUOTE_SYMBOLS`] of them.
pub const SYMBOLS_PATTERN: &str = concat!(
    "^(?:[",
    ws!(),
    "]*,)*",
    symbol!(),
    "(?:,(?:[",
    ws!(),
    "]*,)*",
    symbol!(),
    "){0,49}(?:,[",
    ws!(),
    "]*)*$"
);

/// A string schema with a pattern: the domain types that cross the API as
/// strings.
fn pattern_schema(pattern: &str, description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .examples([example])
        .into()
}

impl PartialSchema for Symbol {
    fn schema() -> RefOr<Schema> {
        pattern_schema(
            SYMBOL_PATTERN,
            "A ticker symbol: 1-20 characters of `A-Z 0-9 . - ^ =` (any case; stored \
             upper-cased), surrounding whitespace ignored.",
            "7203.T",
        )
    }
}

impl ToSchema for Symbol {}

impl PartialSchema for WatchlistName {
    fn schema() -> RefOr<Schema> {
        pattern_schema(
            NAME_PATTERN,
            "1-100 characters, surrounding whitespace ignored, no control characters.",
            "Japan",
        )
    }
}

impl ToSchema for WatchlistName {}

/// The `symbols` query of `GET /api/v1/quotes`, for the document only.
pub struct SymbolList;

impl PartialSchema for SymbolList {
    fn schema() -> RefOr<Schema> {
        pattern_schema(
            SYMBOLS_PATTERN,
            "1-50 symbols, comma-separated; blank entries are skipped.",
            "AAPL,7203.T",
        )
    }
}

impl ToSchema for SymbolList {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("SymbolList")
    }
}

/// The frame of the document: what is not an operation.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "quotecast",
        description = "Real-time stock quotes: watchlists over REST, prices over WebSocket. \
            Every error answers `{\"error\":{\"code\",\"message\"}}` (`ErrorBody`). \
            Not described here: the WebSocket upgrades `GET /ws/v1` and \
            `GET /ws/v1/watchlists/{id}` (a protocol, not a REST operation; see the README), \
            `GET /metrics` (Prometheus text) and the dashboard's static files."
    ),
    modifiers(&BearerScheme),
    // Path parameters refer to these; bodies bring the rest.
    components(schemas(ErrorBody, Symbol, WatchlistName)),
    tags(
        (name = "health", description = "Liveness and readiness, for load balancers."),
        (name = "account", description = "The caller."),
        (name = "watchlists", description = "Watchlists and their items: the owner writes; \
            anyone signed in reads a public one."),
        (name = "quotes", description = "Latest quotes and today's series."),
        (name = "realtime", description = "Credentials for the WebSocket endpoints."),
        (name = "admin", description = "Admin users only."),
        (name = "openapi", description = "This document."),
    )
)]
struct Base;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut OpenApi) {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`quotecast user add NAME`, `quotecast token issue NAME`) \
                         as `Authorization: Bearer TOKEN`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document's frame, before any operation is added.
pub fn base() -> OpenApi {
    use utoipa::OpenApi as _;
    Base::openapi()
}

/// The answers of every operation behind the bearer token.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only described, never built.
pub enum Authenticated {
    /// No token, a malformed `Authorization` header, or an unknown or revoked
    /// token (`unauthorized`).
    #[response(status = 401, headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
    Unauthorized(ErrorBody),
    /// A fault of the server (`internal_error`); the details are in its log.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// The database is unreachable or busy (`unavailable`); retry later.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The answers of every operation that reads a JSON body, besides 422.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only described, never built.
pub enum JsonBody {
    /// The body is not JSON (`malformed_json`).
    #[response(status = 400)]
    Malformed(ErrorBody),
    /// The body is larger than 64 KiB (`payload_too_large`).
    #[response(status = 413)]
    TooLarge(ErrorBody),
}

/// An `IntoResponses` enum of the 403 and 404 an operation on one owned
/// thing answers: only the descriptions differ from one to the next.
macro_rules! refusals {
    ($(#[doc = $doc:literal])* $name:ident, forbidden: $forbidden:literal, not_found: $not_found:literal $(,)?) => {
        $(#[doc = $doc])*
        #[derive(IntoResponses)]
        #[allow(dead_code)] // Only described, never built.
        pub enum $name {
            #[doc = $forbidden]
            #[response(status = 403)]
            Forbidden(ErrorBody),
            #[doc = $not_found]
            #[response(status = 404)]
            NotFound(ErrorBody),
        }
    };
}

refusals!(
    /// The refusals of an operation that reads a watchlist.
    ReadsWatchlist,
    forbidden: "The watchlist is private and not the caller's (`forbidden`).",
    not_found: "No such watchlist (`not_found`).",
);
refusals!(
    /// The refusals of an operation that changes a watchlist or its items.
    OwnsWatchlist,
    forbidden: "The watchlist is not the caller's (`forbidden`).",
    not_found: "No such watchlist (`not_found`).",
);
refusals!(
    /// The refusals of an operation on one item of a watchlist.
    OwnsItem,
    forbidden: "The watchlist is not the caller's (`forbidden`).",
    not_found: "No such watchlist, or no such item in it (`not_found`).",
);
refusals!(
    /// The refusals of an operation on one alert.
    OwnsAlert,
    forbidden: "The alert is not the caller's (`forbidden`).",
    not_found: "No such alert (`not_found`).",
);

/// Registers handlers and adds their operations to the document: the only
/// way [`super::routes`] registers an API handler, so none is left out.
pub struct Documented<'c> {
    cfg: &'c mut web::ServiceConfig,
    doc: OpenApi,
}

impl<'c> Documented<'c> {
    pub fn new(cfg: &'c mut web::ServiceConfig) -> Self {
        Self { cfg, doc: base() }
    }

    /// Registers `service` (a handler, or a `utoipa_actix_web::scope` of
    /// them) and documents its operations.
    pub fn service<F: HttpServiceFactory + OpenApiFactory + 'static>(
        &mut self,
        service: F,
    ) -> &mut Self {
        let mut schemas = Vec::new();
        service.schemas(&mut schemas);
        self.doc.paths.merge(service.paths());
        self.doc
            .components
            .get_or_insert_with(Default::default)
            .schemas
            .extend(schemas);
        self.cfg.service(service);
        self
    }

    /// The finished document, also made available to [`openapi_json`] and
    /// to the answer for a wrong method (its `Allow` header).
    pub fn finish(self) -> web::Data<ApiDocument> {
        let doc = web::Data::new(ApiDocument::new(self.doc));
        self.cfg.app_data(doc.clone());
        doc
    }
}

/// The document, serialized once, and the methods of each of its paths.
pub struct ApiDocument {
    json: String,
    methods: HashMap<String, Vec<Method>>,
}

impl ApiDocument {
    fn new(doc: OpenApi) -> Self {
        let methods = doc
            .paths
            .paths
            .iter()
            .map(|(path, item)| (path.clone(), methods_of(item)))
            .collect();
        let mut json = serde_json::to_value(&doc).expect("the OpenAPI document serializes");
        camel_case_links(&mut json);
        Self {
            json: json.to_string(),
            methods,
        }
    }

    /// The methods the document lists for an actix route pattern (the two
    /// spell path parameters alike, `{id}`).
    pub fn methods(&self, pattern: &str) -> Option<&[Method]> {
        self.methods.get(pattern).map(Vec::as_slice)
    }
}

/// utoipa 5 writes a Link Object's fields as Rust names (`operation_id`);
/// OpenAPI spells them `operationId`, `operationRef`, `requestBody`.
fn camel_case_links(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links")?.as_object_mut())
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        for (rust, openapi) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(v) = link.remove(rust) {
                link.insert(openapi.to_owned(), v);
            }
        }
    }
}

fn methods_of(item: &PathItem) -> Vec<Method> {
    [
        (&item.get, Method::GET),
        (&item.put, Method::PUT),
        (&item.post, Method::POST),
        (&item.delete, Method::DELETE),
        (&item.options, Method::OPTIONS),
        (&item.head, Method::HEAD),
        (&item.patch, Method::PATCH),
        (&item.trace, Method::TRACE),
    ]
    .into_iter()
    .filter(|(op, _)| op.is_some())
    .map(|(_, m)| m)
    .collect()
}

/// This document.
#[utoipa::path(
    tag = "openapi",
    operation_id = "get_openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.",
        content_type = "application/json", body = Object)),
)]
#[get("/openapi.json")]
pub async fn openapi_json(doc: web::Data<ApiDocument>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.json.clone())
}

/// The answer for a route that exists with another method: 405 and, as
/// RFC 9110 asks, `Allow`.
pub fn method_not_allowed(allowed: &[Method]) -> HttpResponse {
    use actix_web::ResponseError;
    let mut res =
        ApiError::MethodNotAllowed("method not allowed on this route".into()).error_response();
    let allow = allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&allow) {
        res.headers_mut().insert(actix_web::http::header::ALLOW, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Symbol, WatchlistName};
    use proptest::prelude::*;
    use regex::Regex;

    /// Characters where the parsers and the patterns could part ways:
    /// every kind of whitespace, control characters, the symbol alphabet in
    /// both cases, commas, and other letters.
    fn tricky() -> impl Strategy<Value = char> {
        prop::sample::select(vec![
            ' ', '\t', '\n', '\u{0B}', '\u{0C}', '\r', '\u{1C}', '\u{85}', '\u{A0}', '\u{1680}',
            '\u{2000}', '\u{200B}', '\u{2028}', '\u{202F}', '\u{3000}', '\u{FEFF}', '\0', '\u{7}',
            '\u{7F}', '\u{9F}', 'a', 'Z', '0', '.', '-', '^', '=', ',', '_', 'é', 'ß', 'Ω', '日',
        ])
    }

    fn strings(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(tricky(), 0..max).prop_map(String::from_iter)
    }

    fn quotes_accepts(raw: &str) -> bool {
        let parsed: Result<Vec<Symbol>, _> = raw
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Symbol::parse)
            .collect();
        parsed.is_ok_and(|s| (1..=super::super::quotes::MAX_QUOTE_SYMBOLS).contains(&s.len()))
    }

    /// The document's `pattern` accepts `s` exactly when the server does.
    fn pattern_agrees(pattern: &str, s: &str, accepted: bool) -> Result<(), TestCaseError> {
        prop_assert_eq!(
            Regex::new(pattern).unwrap().is_match(s),
            accepted,
            "{:?}",
            s
        );
        Ok(())
    }

    proptest! {
        #[test]
        fn symbol_pattern_is_the_parser(s in strings(24)) {
            pattern_agrees(SYMBOL_PATTERN, &s, Symbol::parse(&s).is_ok())?;
        }

        #[test]
        fn name_pattern_is_the_parser(s in strings(8), long in 0usize..3) {
            // Around the length limit too.
            let s = match long {
                0 => s,
                1 => format!("{s}{}", "n".repeat(WatchlistName::MAX_LEN - 2)),
                _ => format!("{}{s}", "n".repeat(WatchlistName::MAX_LEN - 2)),
            };
            pattern_agrees(NAME_PATTERN, &s, WatchlistName::parse(&s).is_ok())?;
        }

        #[test]
        fn symbols_pattern_is_the_handler(s in strings(30), many in 0usize..3) {
            let s = match many {
                0 => s,
                // 49, 50 or 51 symbols.
                n => format!("{}{s}", "A,".repeat(48 + n)),
            };
            pattern_agrees(SYMBOLS_PATTERN, &s, quotes_accepts(&s))?;
        }
    }
}
