//! Credentials: API tokens (random, shown once, stored as a SHA-256 hash), the
//! [`Caller`] extractor that turns an `Authorization: Bearer` header into a
//! user, and the [`TicketStore`] of single-use WebSocket tickets.

use crate::api::ApiError;
use crate::db::{models::User, repo, Db, DbConn, DbError};
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Prefix of every API token, so a leaked one is easy to recognise.
const TOKEN_PREFIX: &str = "qc_";
/// Longest Authorization header value considered; anything longer is not a
/// token of ours and is refused without hashing it.
const MAX_TOKEN_LEN: usize = 128;

/// A new random token (256 bits) and the hash to store for it.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let hash = hash_token(&token);
    (token, hash)
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The authenticated user of a request, and the token that proved it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub token_id: i64,
}

impl Caller {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.user.is_admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden("admin only".into()))
        }
    }
}

/// The bearer token of a request, if the header is present and well formed.
pub fn bearer_token(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(actix_web::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("expected Authorization: Bearer TOKEN".into()))?;
    if token.len() > MAX_TOKEN_LEN {
        return Err(ApiError::Unauthorized("invalid token".into()));
    }
    Ok(Some(token.to_owned()))
}

/// Looks a token up on a connection the caller holds (inside `Db::run`).
pub fn lookup(conn: &mut DbConn, token: &str) -> Result<Caller, ApiError> {
    match repo::authenticate(conn, &hash_token(token)) {
        Ok((user, token_id)) => Ok(Caller { user, token_id }),
        Err(DbError::NotFound) => Err(ApiError::Unauthorized("invalid or revoked token".into())),
        Err(e) => Err(e.into()),
    }
}

/// Looks a token up (off the async threads).
pub async fn authenticate(db: &Db, token: String) -> Result<Caller, ApiError> {
    db.run(move |c| Ok(lookup(c, &token))).await?
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer_token(req);
        let db = req
            .app_data::<web::Data<crate::startup::AppState>>()
            .map(|s| s.db.clone());
        Box::pin(async move {
            let token =
                token?.ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
            let db = db.ok_or_else(|| ApiError::Internal("no application state".into()))?;
            authenticate(&db, token).await
        })
    }
}

/// What a WebSocket ticket stands for.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub user: User,
    pub token_id: i64,
    pub watchlist_id: i64,
    expires_at: Instant,
}

/// Single-use, short-lived WebSocket credentials for browsers, which cannot
/// set headers on a WebSocket. Kept in memory: a restart invalidates them,
/// which is harmless since they live for a minute.
pub struct TicketStore {
    ttl: Duration,
    /// Bound on outstanding tickets, so a client minting tickets in a loop
    /// cannot grow memory without end.
    max_outstanding: usize,
    tickets: Mutex<HashMap<String, Ticket>>,
}

/// Why a ticket could not be used.
#[derive(Debug, PartialEq, Eq)]
pub enum TicketError {
    /// Unknown, already used, or expired: all look the same to the client.
    Invalid,
    /// Issued for another watchlist.
    WrongWatchlist,
}

impl TicketStore {
    pub fn new(ttl: Duration, max_outstanding: usize) -> Self {
        Self {
            ttl,
            max_outstanding,
            tickets: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a ticket, or `None` when too many are outstanding.
    pub fn issue(&self, user: User, token_id: i64, watchlist_id: i64) -> Option<String> {
        let now = Instant::now();
        let mut map = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max_outstanding {
            map.retain(|_, t| t.expires_at > now);
            if map.len() >= self.max_outstanding {
                return None;
            }
        }
        let mut bytes = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut bytes);
        let id = hex::encode(bytes);
        map.insert(
            id.clone(),
            Ticket {
                user,
                token_id,
                watchlist_id,
                expires_at: now + self.ttl,
            },
        );
        Some(id)
    }

    /// Takes a ticket out of the store: whatever the outcome, it cannot be
    /// used again.
    pub fn consume(&self, ticket: &str, watchlist_id: i64) -> Result<Ticket, TicketError> {
        let mut map = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        let t = map.remove(ticket).ok_or(TicketError::Invalid)?;
        if t.expires_at <= Instant::now() {
            return Err(TicketError::Invalid);
        }
        if t.watchlist_id != watchlist_id {
            return Err(TicketError::WrongWatchlist);
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            id: 1,
            name: "u".into(),
            is_admin: false,
            created_at: 0,
        }
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, ha) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with("qc_"));
        assert_eq!(ha, hash_token(&a));
        assert_ne!(ha, a);
    }

    #[test]
    fn tickets_are_single_use_and_bound_to_a_watchlist() {
        let store = TicketStore::new(Duration::from_secs(60), 10);
        let t = store.issue(user(), 5, 7).unwrap();
        assert_eq!(
            store.consume(&t, 8).unwrap_err(),
            TicketError::WrongWatchlist
        );
        // The failed attempt used it up as well.
        assert_eq!(store.consume(&t, 7).unwrap_err(), TicketError::Invalid);
        let t = store.issue(user(), 5, 7).unwrap();
        assert_eq!(store.consume(&t, 7).unwrap().token_id, 5);
        assert_eq!(store.consume(&t, 7).unwrap_err(), TicketError::Invalid);
    }

    #[test]
    fn tickets_expire() {
        let store = TicketStore::new(Duration::from_millis(0), 10);
        let t = store.issue(user(), 5, 7).unwrap();
        assert_eq!(store.consume(&t, 7).unwrap_err(), TicketError::Invalid);
    }

    #[test]
    fn outstanding_tickets_are_bounded() {
        let store = TicketStore::new(Duration::from_secs(60), 2);
        assert!(store.issue(user(), 1, 1).is_some());
        assert!(store.issue(user(), 1, 1).is_some());
        assert!(store.issue(user(), 1, 1).is_none());
    }
}
