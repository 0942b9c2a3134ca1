//! `GET /api/v1/me`: who the caller is.

use super::openapi::Authenticated;
use crate::auth::Caller;
use actix_web::{get, web};
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
}

/// Who the caller is.
#[utoipa::path(
    tag = "account",
    operation_id = "get_me",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller.", body = Me), Authenticated),
)]
#[get("/me")]
pub async fn me(caller: Caller) -> web::Json<Me> {
    web::Json(Me {
        id: caller.user.id,
        name: caller.user.name,
        is_admin: caller.user.is_admin,
        token_id: caller.token_id,
    })
}
