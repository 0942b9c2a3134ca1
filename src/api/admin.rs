//! Admin endpoints (admin users only) and `/metrics`.

use super::openapi::Authenticated;
use super::{Admin, ApiError, ErrorBody};
use crate::cluster::ClusterError;
use crate::control::ControlEvent;
use crate::quote::format_ts;
use crate::session::table::SessionInfo;
use crate::state::AppState;
use crate::supervisor::{ListWorkers, RefreshWorker};
use crate::worker::WorkerInfo;
use actix_web::{delete, get, post, web, HttpResponse};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use utoipa::ToSchema;

/// `GET /admin/v1/stats`.
#[derive(Serialize, ToSchema)]
pub struct Stats {
    /// Open WebSocket sessions on this instance.
    pub sessions: usize,
    /// Running PriceWorkers on this instance (one per watched watchlist).
    pub workers: i64,
    /// Distinct symbols being fetched.
    pub watched_symbols: usize,
    pub upstream: UpstreamStats,
    pub uptime_s: u64,
    /// This instance (`cluster.node_id`, or generated at start).
    pub node_id: String,
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
        node_id: state.node_id.clone(),
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

/// The sessions of the whole cluster (of this instance alone otherwise),
/// each with the node it is on.
#[utoipa::path(
    tag = "admin",
    operation_id = "list_sessions",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One row per session, of every instance in cluster mode.",
            body = [SessionInfo]),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        Authenticated,
    ),
)]
#[get("/sessions")]
pub async fn sessions(
    _: Admin,
    state: web::Data<AppState>,
) -> Result<web::Json<Vec<SessionInfo>>, ApiError> {
    Ok(web::Json(all_sessions(&state).await?))
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
        Ok(HttpResponse::Accepted().json(RefreshRequested {
            status: "refresh requested",
        }))
    } else {
        Err(ApiError::NotFound("no worker for this watchlist".into()))
    }
}

/// `GET /admin/v1/cluster`.
#[derive(Serialize, ToSchema)]
pub struct ClusterView {
    /// The instance that answered.
    pub node_id: String,
    /// The instance holding the poller lease; null while none does.
    #[schema(required = true)]
    pub poller: Option<String>,
    /// The instances seen in the last 3 × lease.
    pub nodes: Vec<NodeRow>,
}

/// One instance of the cluster.
#[derive(Serialize, ToSchema)]
pub struct NodeRow {
    pub node_id: String,
    /// The address it serves on (`server.bind`).
    pub addr: String,
    pub sessions: usize,
    pub workers: usize,
    /// Its last heartbeat.
    #[schema(format = DateTime, required = true)]
    pub last_seen_at: Option<String>,
    /// It holds the poller lease.
    pub poller: bool,
}

/// This node, the poller, and the nodes seen in the last 3 × lease. A
/// single process is a cluster of one.
#[utoipa::path(
    tag = "admin",
    operation_id = "get_cluster",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The cluster as this instance sees it.", body = ClusterView),
        (status = 403, description = NOT_ADMIN, body = ErrorBody),
        Authenticated,
    ),
)]
#[get("/cluster")]
pub async fn cluster(
    _: Admin,
    state: web::Data<AppState>,
) -> Result<web::Json<ClusterView>, ApiError> {
    let Some(parts) = &state.cluster else {
        return Ok(web::Json(ClusterView {
            node_id: state.node_id.clone(),
            poller: Some(state.node_id.clone()),
            nodes: vec![NodeRow {
                node_id: state.node_id.clone(),
                addr: state.settings.server.bind.to_string(),
                sessions: state.sessions.len(),
                workers: state.metrics.workers.get().max(0) as usize,
                last_seen_at: Some(format_ts(chrono::Utc::now())),
                poller: true,
            }],
        }));
    };
    let nodes = parts.nodes.live().await.map_err(cluster_down)?;
    let poller = parts.lease.holder().await;
    let rows = nodes
        .into_iter()
        .map(|n| NodeRow {
            poller: poller.as_deref() == Some(n.node_id.as_str()),
            last_seen_at: chrono::DateTime::from_timestamp_millis(n.last_seen_ms).map(format_ts),
            node_id: n.node_id,
            addr: n.addr,
            sessions: n.sessions,
            workers: n.workers,
        })
        .collect();
    Ok(web::Json(ClusterView {
        node_id: state.node_id.clone(),
        poller,
        nodes: rows,
    }))
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
