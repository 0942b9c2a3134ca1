//! Request extractors for credentials: [`Caller`] (any valid token) and
//! [`Admin`] (a token of an admin user).

use super::ApiError;
use crate::auth::{self, Caller};
use crate::state::AppState;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = auth::bearer_token(req);
        let db = req.app_data::<web::Data<AppState>>().map(|s| s.db.clone());
        Box::pin(async move {
            let token =
                token?.ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
            let db = db.ok_or_else(|| ApiError::Internal("no application state".into()))?;
            Ok(auth::authenticate(&db, token).await?)
        })
    }
}

/// A caller who is an admin; anyone else gets 403.
pub struct Admin(pub Caller);

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = Caller::from_request(req, payload);
        Box::pin(async move {
            let caller = caller.await?;
            if caller.user.is_admin {
                Ok(Admin(caller))
            } else {
                Err(ApiError::Forbidden("admin only".into()))
            }
        })
    }
}
