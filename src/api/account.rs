//! `GET /api/v1/me`: who the caller is.

use crate::auth::Caller;
use actix_web::HttpResponse;
use serde_json::json;

pub async fn me(caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "id": caller.user.id,
        "name": caller.user.name,
        "is_admin": caller.user.is_admin,
        "token_id": caller.token_id,
    }))
}
