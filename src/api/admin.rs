//! Admin endpoints (admin users only) and `/metrics`.

use super::{Admin, ApiError};
use crate::cluster::ClusterError;
use crate::control::ControlEvent;
use crate::quote::format_ts;
use crate::session::table::SessionInfo;
use crate::state::AppState;
use crate::supervisor::{ListWorkers, RefreshWorker};
use actix_web::{web, HttpResponse};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;

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
        "node_id": state.node_id,
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

/// The sessions of the whole cluster (of this instance alone otherwise),
/// each with the node it is on.
pub async fn sessions(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(all_sessions(&state).await?))
}

async fn all_sessions(state: &AppState) -> Result<Vec<SessionInfo>, ApiError> {
    let Some(parts) = &state.cluster else {
        return Ok(state.sessions.list());
    };
    let nodes = parts.nodes.live().await.map_err(cluster_down)?;
    let lists = parts
        .control
        .list_sessions(nodes.len(), LIST_WAIT)
        .await
        .map_err(cluster_down)?;
    let mut rows: Vec<SessionInfo> = lists.into_iter().flat_map(|n| n.sessions).collect();
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// How long a cluster-wide session list waits for the other nodes.
const LIST_WAIT: Duration = Duration::from_secs(1);

fn cluster_down(e: ClusterError) -> ApiError {
    ApiError::Unavailable(format!("cluster unavailable: {e}"))
}

/// Closes one session with 1008, on whichever instance it is.
pub async fn kick(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let session_id = path.into_inner();
    let exists = state.sessions.contains(session_id)
        || (state.cluster.is_some()
            && all_sessions(&state)
                .await?
                .iter()
                .any(|s| s.id == session_id));
    if exists {
        state.control.publish(ControlEvent::Kick { session_id });
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("no such session".into()))
    }
}

/// Makes a worker's symbols be fetched now (whichever instance runs it).
pub async fn refresh(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let watchlist_id = path.into_inner();
    let found = match &state.cluster {
        None => state
            .supervisor
            .send(RefreshWorker { watchlist_id })
            .await
            .map_err(|e| ApiError::Unavailable(format!("supervisor unavailable: {e}")))?,
        Some(parts) => {
            let watched = parts.nodes.watched().await.map_err(cluster_down)?;
            if watched.contains(&watchlist_id) {
                state
                    .control
                    .publish(ControlEvent::Refresh { watchlist_id });
            }
            watched.contains(&watchlist_id)
        }
    };
    if found {
        Ok(HttpResponse::Accepted().json(json!({"status": "refresh requested"})))
    } else {
        Err(ApiError::NotFound("no worker for this watchlist".into()))
    }
}

/// `GET /admin/v1/cluster`: this node, the poller, and the nodes seen in the
/// last 3 × lease. A single process is a cluster of one.
pub async fn cluster(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let Some(parts) = &state.cluster else {
        return Ok(HttpResponse::Ok().json(json!({
            "node_id": state.node_id,
            "poller": state.node_id,
            "nodes": [{
                "node_id": state.node_id,
                "addr": state.settings.server.bind.to_string(),
                "sessions": state.sessions.len(),
                "workers": state.metrics.workers.get(),
                "last_seen_at": format_ts(chrono::Utc::now()),
                "poller": true,
            }],
        })));
    };
    let nodes = parts.nodes.live().await.map_err(cluster_down)?;
    let poller = parts.lease.holder().await;
    let rows: Vec<_> = nodes
        .iter()
        .map(|n| {
            json!({
                "node_id": n.node_id,
                "addr": n.addr,
                "sessions": n.sessions,
                "workers": n.workers,
                "last_seen_at": chrono::DateTime::from_timestamp_millis(n.last_seen_ms).map(format_ts),
                "poller": poller.as_deref() == Some(n.node_id.as_str()),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "node_id": state.node_id,
        "poller": poller,
        "nodes": rows,
    })))
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
