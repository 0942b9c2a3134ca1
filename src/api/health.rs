//! `GET /healthz` (the process answers) and `GET /readyz` (it can serve:
//! the database answers, and in cluster mode Redis).

use super::{ApiError, ErrorBody};
use crate::db::repo;
use crate::state::AppState;
use actix_web::{get, web};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(value_type = String, pattern = "^ok$")]
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    #[schema(value_type = String, pattern = "^ready$")]
    pub status: &'static str,
    /// Which database backend serves.
    #[schema(value_type = String, pattern = "^(sqlite|postgres)$")]
    pub database: &'static str,
}

/// The process answers.
#[utoipa::path(
    tag = "health",
    operation_id = "healthz",
    responses((status = 200, description = "Alive.", body = Health)),
)]
#[get("/healthz")]
pub async fn healthz() -> web::Json<Health> {
    web::Json(Health { status: "ok" })
}

/// Ready when the database answers, and in cluster mode when the bus
/// (Redis) does: a balancer then sends new users to instances that can
/// serve them.
#[utoipa::path(
    tag = "health",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready.", body = Ready),
        (status = 503, description = "The database, or in cluster mode Redis, does not answer (`unavailable`).",
            body = ErrorBody),
    ),
)]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<web::Json<Ready>, ApiError> {
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
    Ok(web::Json(Ready {
        status: "ready",
        database: state.db.backend(),
    }))
}
