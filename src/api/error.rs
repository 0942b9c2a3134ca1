//! The API layer's one error type and its one mapping to HTTP: every error
//! answers [`ErrorBody`], `{"error":{"code","message"}}`, with the fitting
//! status. actix's own extractor failures are routed here too (see
//! [`super::routes`]), so no client mistake is answered in plain text.

use crate::access::AccessError;
use crate::auth::AuthError;
use crate::db::DbError;
use crate::domain::DomainError;
use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    MalformedJson(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Duplicate(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    TooManySessions(String),
    /// Too many requests from one client: try again after the wait.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

/// The `code` of an error answer: what kind of failure it is, for programs
/// (the `message` is for people).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    MalformedJson,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Duplicate,
    PayloadTooLarge,
    InvalidValue,
    LimitExceeded,
    TooManySessions,
    TooManyRequests,
    Unavailable,
    InternalError,
}

/// Every error answer of the HTTP API: `{"error":{"code","message"}}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "not_found", "message": "no such watchlist"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// Human-readable; not meant to be parsed.
    pub message: String,
}

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::MalformedJson(_) => ErrorCode::MalformedJson,
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ApiError::Duplicate(_) => ErrorCode::Duplicate,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::Invalid(_) => ErrorCode::InvalidValue,
            ApiError::LimitExceeded(_) => ErrorCode::LimitExceeded,
            ApiError::TooManySessions(_) => ErrorCode::TooManySessions,
            ApiError::RateLimited { .. } => ErrorCode::TooManyRequests,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        let message = match self {
            // Internal details go to the log, not to the client.
            ApiError::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message,
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Duplicate(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Invalid(_) | ApiError::LimitExceeded(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManySessions(_) | ApiError::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(detail) = self {
            log::error!("internal error: {detail}");
        }
        let mut res = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized(_) => {
                res.insert_header(("WWW-Authenticate", "Bearer"));
            }
            ApiError::RateLimited { retry_after, .. } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                res.insert_header(("Retry-After", secs.max(1).to_string()));
            }
            _ => {}
        }
        res.json(self.body())
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError::Invalid(e.to_string())
    }
}

/// The generic reading of a database failure. Handlers that know better
/// (which row was missing, which name was taken) map those cases first.
impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound => ApiError::NotFound("not found".into()),
            DbError::Duplicate => ApiError::Duplicate("already exists".into()),
            DbError::CapReached { table, max } => ApiError::LimitExceeded(match table {
                "watchlists" => format!("a user has at most {max} watchlists"),
                "watchlist_items" => format!("a watchlist holds at most {max} items"),
                other => format!("at most {max} {other}"),
            }),
            DbError::Pool(m) => ApiError::Unavailable(format!("database unavailable: {m}")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Db(e) => e.into(),
            other => ApiError::Unauthorized(other.to_string()),
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::NotFound => ApiError::NotFound(e.to_string()),
            AccessError::Denied(why) => ApiError::Forbidden(why.into()),
            AccessError::Db(e) => e.into(),
        }
    }
}
