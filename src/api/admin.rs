//! Admin endpoints (admin users only) and `/metrics`.

use super::openapi::Authenticated;
use super::{Admin, ApiError, ErrorBody};
use crate::control::ControlEvent;
use crate::quote::format_ts;
use crate::session::table::SessionInfo;
use crate::state::AppState;
use crate::supervisor::{ListWorkers, RefreshWorker};
use crate::worker::WorkerInfo;
use actix_web::{delete, get, post, web, HttpResponse};
use serde::Serialize;
use std::sync::atomic::Ordering;
use utoipa::ToSchema;

/// `GET /admin/v1/stats`.
#[derive(Serialize, ToSchema)]
pub struct Stats {
    /// Open WebSocket sessions.
    pub sessions: usize,
    /// Running PriceWorkers (one per watched watchlist).
    pub workers: i64,
    /// Distinct symbols being fetched.
    pub watched_symbols: usize,
    pub upstream: UpstreamStats,
    pub uptime_s: u64,
}

/// The upstream fetcher's counters since start.
#[derive(Serialize, ToSchema)]
pub struct UpstreamStats {
    /// `sim` or `yahoo`.
    pub provider: &'static str,
    pub requests: u64,
    pub errors: u64,
    pub rate_limited: u64,
    /// Fetch rounds run.
    pub cycles: u64,
    /// Rounds with nothing to fetch.
    pub idle_ticks: u64,
    #[schema(format = DateTime, required = true)]
    pub last_success_at: Option<String>,
}

/// `POST /admin/v1/workers/{watchlist_id}/refresh`.
#[derive(Serialize, ToSchema)]
pub struct RefreshRequested {
    #[schema(value_type = String, pattern = "^refresh requested$")]
    pub status: &'static str,
}

/// 403 for a signed-in user who is not an admin.
const NOT_ADMIN: &str = "The caller is not an admin (`forbidden`).";

/// Counts of sessions, workers, symbols and upstream traffic.
#[utoipa::path(
    tag = "admin",
    operation_id = "get_stats",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The counts.", body = Stats),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        Authenticated,
    ),
)]
#[get("/stats")]
pub async fn stats(_: Admin, state: web::Data<AppState>) -> web::Json<Stats> {
    let up = &state.upstream;
    web::Json(Stats {
        sessions: state.sessions.len(),
        workers: state.metrics.workers.get(),
        watched_symbols: state.registry.symbols().len(),
        upstream: UpstreamStats {
            provider: state.provider,
            requests: up.requests.load(Ordering::Relaxed),
            errors: up.errors.load(Ordering::Relaxed),
            rate_limited: up.rate_limited.load(Ordering::Relaxed),
            cycles: up.cycles.load(Ordering::Relaxed),
            idle_ticks: up.idle_ticks.load(Ordering::Relaxed),
            last_success_at: up.last_success_at().map(format_ts),
        },
        uptime_s: state.started.elapsed().as_secs(),
    })
}

/// The running PriceWorkers.
#[utoipa::path(
    tag = "admin",
    operation_id = "list_workers",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One row per worker.", body = [WorkerInfo]),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        Authenticated,
    ),
)]
#[get("/workers")]
pub async fn workers(
    _: Admin,
    state: web::Data<AppState>,
) -> Result<web::Json<Vec<WorkerInfo>>, ApiError> {
    let infos = state
        .supervisor
        .send(ListWorkers)
        .await
        .map_err(|e| ApiError::Unavailable(format!("supervisor unavailable: {e}")))?;
    Ok(web::Json(infos))
}

/// The open WebSocket sessions.
#[utoipa::path(
    tag = "admin",
    operation_id = "list_sessions",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One row per session.", body = [SessionInfo]),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        Authenticated,
    ),
)]
#[get("/sessions")]
pub async fn sessions(_: Admin, state: web::Data<AppState>) -> web::Json<Vec<SessionInfo>> {
    web::Json(state.sessions.list())
}

/// Closes one session with 1008.
#[utoipa::path(
    tag = "admin",
    operation_id = "kick_session",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "The session's id (`GET /admin/v1/sessions`).")),
    responses(
        (status = 204, description = "The session is closing."),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 404, description = "No such session (`not_found`).", body = ErrorBody),
        Authenticated,
    ),
)]
#[delete("/sessions/{id}")]
pub async fn kick(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let session_id = path.into_inner();
    if state.sessions.contains(session_id) {
        state.control.publish(ControlEvent::Kick { session_id });
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("no such session".into()))
    }
}

/// Makes a worker fetch its symbols now.
#[utoipa::path(
    tag = "admin",
    operation_id = "refresh_worker",
    security(("bearer" = [])),
    params(("watchlist_id" = i64, Path, description = "The watchlist whose worker to refresh.")),
    responses(
        (status = 202, description = "Asked; the fetch follows.", body = RefreshRequested),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        (status = 404, description = "No worker runs for this watchlist (`not_found`).",
            body = ErrorBody),
        Authenticated,
    ),
)]
#[post("/workers/{watchlist_id}/refresh")]
pub async fn refresh(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let found = state
        .supervisor
        .send(RefreshWorker {
            watchlist_id: path.into_inner(),
        })
        .await
        .map_err(|e| ApiError::Unavailable(format!("supervisor unavailable: {e}")))?;
    if found {
        Ok(HttpResponse::Accepted().json(RefreshRequested {
            status: "refresh requested",
        }))
    } else {
        Err(ApiError::NotFound("no worker for this watchlist".into()))
    }
}

/// Prometheus text format. Unauthenticated, as scrapers expect; it carries
/// counts only, no user data.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.sessions.set(state.sessions.len() as i64);
    state
        .metrics
        .watched_symbols
        .set(state.registry.symbols().len() as i64);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
