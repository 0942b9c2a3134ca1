//! `GET /healthz` (the process answers) and `GET /readyz` (it can serve:
//! the database answers).

use super::ApiError;
use crate::db::repo;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde_json::json;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the database answers, and in cluster mode when the bus
/// (Redis) does: a balancer then sends new users to instances that can
/// serve them.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Some(parts) = &state.cluster {
        if !parts.cluster.bus_ok() {
            return Err(ApiError::Unavailable(
                "cluster bus (Redis) unavailable".into(),
            ));
        }
    }
    state
        .db
        .run(|c| repo::count_users(c).map(|_| ()))
        .await
        .map_err(|e| ApiError::Unavailable(format!("database not ready: {e}")))?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready", "database": state.db.backend()})))
}
