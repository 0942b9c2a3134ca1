//! Admin endpoints (admin users only) and `/metrics`.

use super::{Admin, ApiError};
use crate::control::ControlEvent;
use crate::quote::format_ts;
use crate::state::AppState;
use crate::supervisor::{ListWorkers, RefreshWorker};
use actix_web::{web, HttpResponse};
use serde_json::json;
use std::sync::atomic::Ordering;

pub async fn stats(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let up = &state.upstream;
    Ok(HttpResponse::Ok().json(json!({
        "sessions": state.sessions.len(),
        "workers": state.metrics.workers.get(),
        "watched_symbols": state.registry.symbols().len(),
        "upstream": {
            "provider": state.provider,
            "requests": up.requests.load(Ordering::Relaxed),
            "errors": up.errors.load(Ordering::Relaxed),
            "rate_limited": up.rate_limited.load(Ordering::Relaxed),
            "cycles": up.cycles.load(Ordering::Relaxed),
            "idle_ticks": up.idle_ticks.load(Ordering::Relaxed),
            "last_success_at": up.last_success_at().map(format_ts),
        },
        "uptime_s": state.started.elapsed().as_secs(),
    })))
}

pub async fn workers(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let infos = state
        .supervisor
        .send(ListWorkers)
        .await
        .map_err(|e| ApiError::Unavailable(format!("supervisor unavailable: {e}")))?;
    Ok(HttpResponse::Ok().json(infos))
}

pub async fn sessions(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.sessions.list()))
}

/// Closes one session with 1008.
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

/// Makes a worker's symbols be fetched now.
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
        Ok(HttpResponse::Accepted().json(json!({"status": "refresh requested"})))
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
