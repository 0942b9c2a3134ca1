//! `GET /api/v1/me`: who the caller is, with the webhook secret that signs
//! their alert webhooks; `POST /api/v1/me/webhook-secret` replaces it.

use super::ApiError;
use crate::alerts::webhook::new_secret;
use crate::auth::Caller;
use crate::db::repo;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde_json::json;

pub async fn me(caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let user_id = caller.user.id;
    let candidate = new_secret();
    let secret = state
        .db
        .run(move |c| repo::webhook_secret(c, user_id, &candidate))
        .await?;
    Ok(HttpResponse::Ok().json(json!({
        "id": caller.user.id,
        "name": caller.user.name,
        "is_admin": caller.user.is_admin,
        "token_id": caller.token_id,
        "webhook_secret": secret,
    })))
}

/// A new webhook secret; deliveries from now on are signed with it.
pub async fn rotate_webhook_secret(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user_id = caller.user.id;
    let secret = new_secret();
    let stored = secret.clone();
    state
        .db
        .run(move |c| repo::set_webhook_secret(c, user_id, &stored))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "webhook_secret": secret })))
}
