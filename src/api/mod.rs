//! The HTTP API: REST under `/api/v1`, admin under `/admin/v1`, health,
//! metrics, the dashboard, and the WebSocket upgrade routes (handled in
//! [`crate::session::endpoint`]).
//!
//! [`routes`] registers every route. The REST, admin and health handlers go
//! through [`openapi::Documented`], which adds each one's description to the
//! OpenAPI document as it registers it; the few routes outside the document
//! are registered apart, each with the reason.
//!
//! Errors are [`ApiError`] everywhere. actix's extractor failures (bad JSON,
//! oversized body, bad path or query) are turned into it by the handlers
//! configured in [`routes`]; unknown routes answer JSON 404, and a known
//! route asked with another method answers JSON 405 with `Allow`.

pub mod account;
pub mod admin;
pub mod alerts;
mod caller;
mod error;
pub mod health;
pub mod json;
pub mod openapi;
pub mod quotes;
pub mod tickets;
pub mod watchlists;

pub use caller::Admin;
pub use error::{ApiError, ErrorBody, ErrorCode, ErrorDetail};

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use utoipa_actix_web::scope;

/// Largest JSON body accepted (SPEC: 413 beyond 64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

fn json_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge(format!("body larger than {MAX_BODY_BYTES} bytes"))
        }
        JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::Invalid(e.to_string()),
        JsonPayloadError::Deserialize(e) => ApiError::MalformedJson(format!("malformed JSON: {e}")),
        JsonPayloadError::ContentType => ApiError::MalformedJson("expected a JSON body".into()),
        other => ApiError::MalformedJson(format!("unreadable body: {other}")),
    };
    api.into()
}

fn path_error(_: PathError, req: &HttpRequest) -> actix_web::Error {
    // `PATCH /alerts/events` falls through from `/alerts/events` (GET only)
    // to `/alerts/{id}`, whose id does not parse: the path is a route's, and
    // only the method is wrong.
    if let Some(allowed) = route_methods(req) {
        if !allowed.contains(req.method()) {
            return actix_web::error::InternalError::from_response(
                "method not allowed",
                openapi::method_not_allowed(&allowed),
            )
            .into();
        }
    }
    // A path segment that does not parse (an id that is not a number) names
    // nothing that exists.
    ApiError::NotFound("not found".into()).into()
}

fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("bad query string: {err}")).into()
}

/// The methods of the first route whose pattern `req`'s path matches.
fn route_methods(req: &HttpRequest) -> Option<Vec<Method>> {
    let pattern = req.resource_map().match_pattern(req.path())?;
    let documented = req
        .app_data::<web::Data<openapi::ApiDocument>>()
        .and_then(|doc| doc.methods(&pattern).map(<[Method]>::to_vec));
    // Every route outside the document is a GET.
    Some(documented.unwrap_or_else(|| vec![Method::GET]))
}

/// Every request no route took: 405 (with `Allow`) when the path is a
/// route's and only the method is wrong, else 404.
async fn unrouted(req: HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    match route_methods(&req) {
        Some(allowed) => openapi::method_not_allowed(&allowed),
        None => ApiError::NotFound("no such route".into()).error_response(),
    }
}

/// Every route of the service.
///
/// A new API handler carries `#[utoipa::path(...)]` above its actix route
/// attribute (`#[get("/things")]`) and joins its scope below with
/// `.service(handler)`; `tests/openapi.rs` fails for a route registered any
/// other way and left out of the document.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY_BYTES)
            // Clients that forget the content type still get their JSON read.
            .content_type_required(false)
            .error_handler(json_error),
    )
    .app_data(web::PathConfig::default().error_handler(path_error))
    .app_data(web::QueryConfig::default().error_handler(query_error));

    let mut api = openapi::Documented::new(cfg);
    api.service(health::healthz)
        .service(health::readyz)
        .service(
            scope("/api/v1")
                .service(openapi::openapi_json)
                .service(account::me)
                .service(account::rotate_webhook_secret)
                .service(quotes::quotes)
                .service(quotes::intraday)
                .service(tickets::ws_ticket)
                .service(watchlists::list)
                .service(watchlists::create)
                .service(watchlists::get)
                .service(watchlists::update)
                .service(watchlists::delete)
                .service(watchlists::list_items)
                .service(watchlists::add_item)
                .service(watchlists::patch_item)
                .service(watchlists::delete_item)
                // Price alerts; `/alerts/events` before `/alerts/{id}`.
                .service(alerts::list)
                .service(alerts::create)
                .service(alerts::events)
                .service(alerts::get)
                .service(alerts::update)
                .service(alerts::delete),
        )
        .service(
            scope("/admin/v1")
                .service(admin::stats)
                .service(admin::cluster)
                .service(admin::workers)
                .service(admin::sessions)
                .service(admin::kick)
                .service(admin::refresh),
        );
    api.finish();

    // Outside the document. Prometheus scrapers read `/metrics`, which is
    // text, not JSON.
    cfg.route("/metrics", web::get().to(admin::metrics))
        // WebSocket upgrades: a protocol OpenAPI cannot describe (README and
        // SPEC do); their refusals are the same JSON errors as everywhere.
        .route(
            "/ws/v1/watchlists/{id}",
            web::get().to(crate::session::endpoint::connect_watchlist),
        )
        .route(
            "/ws/v1",
            web::get().to(crate::session::endpoint::connect_multi),
        )
        // The dashboard's static files.
        .configure(crate::dashboard::routes)
        .default_service(web::to(unrouted));
}
