//! `GET /api/v1/me`: who the caller is, with the webhook secret that signs
//! their alert webhooks; `POST /api/v1/me/webhook-secret` replaces it.

use super::openapi::Authenticated;
use super::ApiError;
use crate::alerts::webhook::new_secret;
use crate::auth::Caller;
use crate::db::repo;
use crate::state::AppState;
use actix_web::{get, post, web};
use serde::Serialize;
use utoipa::ToSchema;

/// The caller: the user the bearer token belongs to.
#[derive(Serialize, ToSchema)]
pub struct Me {
    pub id: i64,
    pub name: String,
    pub is_admin: bool,
    /// The id of the token in use (what `quotecast token revoke` takes).
    pub token_id: i64,
    /// Signs this user's alert webhooks (`X-Quotecast-Signature`); made on
    /// first use.
    #[schema(pattern = "^whsec_[0-9a-f]{64}$")]
    pub webhook_secret: String,
}

/// A new webhook secret.
#[derive(Serialize, ToSchema)]
pub struct WebhookSecret {
    #[schema(pattern = "^whsec_[0-9a-f]{64}$")]
    pub webhook_secret: String,
}

/// Who the caller is.
#[utoipa::path(
    tag = "account",
    operation_id = "get_me",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller.", body = Me), Authenticated),
)]
#[get("/me")]
pub async fn me(caller: Caller, state: web::Data<AppState>) -> Result<web::Json<Me>, ApiError> {
    let user_id = caller.user.id;
    let candidate = new_secret();
    let webhook_secret = state
        .db
        .run(move |c| repo::webhook_secret(c, user_id, &candidate))
        .await?;
    Ok(web::Json(Me {
        id: caller.user.id,
        name: caller.user.name,
        is_admin: caller.user.is_admin,
        token_id: caller.token_id,
        webhook_secret,
    }))
}

/// Replaces the caller's webhook secret; deliveries from now on, retries
/// of earlier events included, are signed with the new one.
#[utoipa::path(
    tag = "account",
    operation_id = "rotate_webhook_secret",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new secret.", body = WebhookSecret),
        Authenticated,
    ),
)]
#[post("/me/webhook-secret")]
pub async fn rotate_webhook_secret(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<web::Json<WebhookSecret>, ApiError> {
    let user_id = caller.user.id;
    let webhook_secret = new_secret();
    let stored = webhook_secret.clone();
    state
        .db
        .run(move |c| repo::set_webhook_secret(c, user_id, &stored))
        .await?;
    Ok(web::Json(WebhookSecret { webhook_secret }))
}
