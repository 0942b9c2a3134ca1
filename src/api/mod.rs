//! The HTTP API: REST under `/api/v1`, admin under `/admin/v1`, health,
//! metrics, the dashboard, and the WebSocket upgrade route (handled in
//! [`crate::session::endpoint`]).
//!
//! Errors are [`ApiError`] everywhere. actix's extractor failures (bad JSON,
//! oversized body, bad path or query) are turned into it by the handlers
//! configured in [`routes`], and unknown routes answer JSON 404 too.

pub mod account;
pub mod admin;
pub mod alerts;
mod caller;
mod error;
pub mod health;
pub mod quotes;
pub mod tickets;
pub mod watchlists;

pub use caller::Admin;
pub use error::ApiError;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{web, HttpRequest, HttpResponse};

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

fn path_error(_: PathError, _: &HttpRequest) -> actix_web::Error {
    // A path segment that does not parse (an id that is not a number) names
    // nothing that exists.
    ApiError::NotFound("not found".into()).into()
}

fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("bad query string: {err}")).into()
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".into()))
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed(
        "method not allowed on this route".into(),
    ))
}

/// Every route of the service.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY_BYTES)
            // Clients that forget the content type still get their JSON read.
            .content_type_required(false)
            .error_handler(json_error),
    )
    .app_data(web::PathConfig::default().error_handler(path_error))
    .app_data(web::QueryConfig::default().error_handler(query_error))
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .route("/metrics", web::get().to(admin::metrics))
    .service(
        web::scope("/api/v1")
            .route("/me", web::get().to(account::me))
            .route(
                "/me/webhook-secret",
                web::post().to(account::rotate_webhook_secret),
            )
            .route("/quotes", web::get().to(quotes::quotes))
            .route("/quotes/{symbol}/intraday", web::get().to(quotes::intraday))
            .route("/ws-tickets", web::post().to(tickets::ws_ticket))
            .service(
                web::resource("/watchlists")
                    .route(web::get().to(watchlists::list))
                    .route(web::post().to(watchlists::create))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/watchlists/{id}")
                    .route(web::get().to(watchlists::get))
                    .route(web::patch().to(watchlists::update))
                    .route(web::delete().to(watchlists::delete))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/watchlists/{id}/items")
                    .route(web::get().to(watchlists::list_items))
                    .route(web::post().to(watchlists::add_item))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/watchlists/{id}/items/{symbol}")
                    .route(web::patch().to(watchlists::patch_item))
                    .route(web::delete().to(watchlists::delete_item))
                    .default_service(web::to(method_not_allowed)),
            )
            // Price alerts; `/alerts/events` before `/alerts/{id}`.
            .service(
                web::resource("/alerts")
                    .route(web::get().to(alerts::list))
                    .route(web::post().to(alerts::create))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/alerts/events")
                    .route(web::get().to(alerts::events))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/alerts/{id}")
                    .route(web::get().to(alerts::get))
                    .route(web::patch().to(alerts::update))
                    .route(web::delete().to(alerts::delete))
                    .default_service(web::to(method_not_allowed)),
            ),
    )
    .service(
        web::scope("/admin/v1")
            .route("/stats", web::get().to(admin::stats))
            .route("/workers", web::get().to(admin::workers))
            .route("/sessions", web::get().to(admin::sessions))
            .route("/sessions/{id}", web::delete().to(admin::kick))
            .route(
                "/workers/{watchlist_id}/refresh",
                web::post().to(admin::refresh),
            ),
    )
    .route(
        "/ws/v1/watchlists/{id}",
        web::get().to(crate::session::endpoint::connect_watchlist),
    )
    .route(
        "/ws/v1",
        web::get().to(crate::session::endpoint::connect_multi),
    )
    .configure(crate::dashboard::routes)
    .default_service(web::to(not_found));
}
