//! Credentials: API tokens (random, shown once, stored as a SHA-256 hash),
//! the [`Caller`] a valid token stands for, and the [`TicketStore`] of
//! single-use WebSocket tickets. HTTP knows nothing of this module's
//! internals: the API layer turns [`AuthError`] into answers.

use crate::db::{models::User, repo, Db, DbConn, DbError};
use actix_web::HttpRequest;
use futures_util::future::{self, BoxFuture, FutureExt};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Prefix of every API token, so a leaked one is easy to recognise.
const TOKEN_PREFIX: &str = "qc_";
/// Longest Authorization header value considered; anything longer is not a
/// token of ours and is refused without hashing it.
const MAX_TOKEN_LEN: usize = 128;

/// Why a request's credentials were refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No Authorization header (and no ticket where one is allowed).
    #[error("missing credentials")]
    Missing,
    /// A header that is not `Bearer TOKEN`, or a value that cannot be ours.
    #[error("{0}")]
    Malformed(&'static str),
    /// Well formed, but no live token has this value.
    #[error("invalid or revoked token")]
    Invalid,
    #[error(transparent)]
    Db(DbError),
}

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

/// The bearer token of a request, if the header is present and well formed.
pub fn bearer_token(req: &HttpRequest) -> Result<Option<String>, AuthError> {
    let Some(value) = req.headers().get(actix_web::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::Malformed("malformed Authorization header"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Malformed("expected Authorization: Bearer TOKEN"))?;
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed("invalid token"));
    }
    Ok(Some(token.to_owned()))
}

/// Looks a token up on a connection the caller holds (inside `Db::run`).
pub fn lookup(conn: &mut DbConn, token: &str) -> Result<Caller, AuthError> {
    match repo::authenticate(conn, &hash_token(token)) {
        Ok((user, token_id)) => Ok(Caller { user, token_id }),
        Err(DbError::NotFound) => Err(AuthError::Invalid),
        Err(e) => Err(AuthError::Db(e)),
    }
}

/// Looks a token up (off the async threads).
pub async fn authenticate(db: &Db, token: String) -> Result<Caller, AuthError> {
    db.run(move |c| Ok(lookup(c, &token)))
        .await
        .map_err(AuthError::Db)?
}

/// Where WebSocket tickets live: this process ([`TicketStore`]), or Redis
/// in cluster mode, where a ticket issued by one instance works once at
/// any instance.
pub trait Tickets: Send + Sync + 'static {
    fn ttl(&self) -> Duration;

    /// Issues a ticket; `None` when too many are outstanding.
    fn issue(&self, claim: Claim) -> BoxFuture<'_, Result<Option<String>, TicketError>>;

    /// Takes a ticket out (single use, whatever the outcome), for a socket
    /// on `watchlist_id` (`None`: the multi-watchlist endpoint).
    fn consume(
        &self,
        ticket: String,
        watchlist_id: Option<i64>,
    ) -> BoxFuture<'_, Result<Ticket, TicketError>>;

    /// Removes expired tickets (where they do not expire by themselves).
    fn purge_expired(&self) -> usize;
}

/// A new ticket's random name.
pub fn new_ticket_id() -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What a WebSocket ticket is asked for: who, with which token, for which
/// socket. The cluster's store keeps it as JSON.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Claim {
    pub user: User,
    pub token_id: i64,
    /// The watchlist whose v1 socket it opens; `None`: any socket.
    pub watchlist_id: Option<i64>,
}

/// What a WebSocket ticket stands for.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub user: User,
    pub token_id: i64,
    /// The watchlist whose v1 socket it opens; `None`: any socket.
    pub watchlist_id: Option<i64>,
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

/// Why a ticket could not be issued or used.
#[derive(Debug, PartialEq, Eq)]
pub enum TicketError {
    /// Unknown, already used, or expired: all look the same to the client.
    Invalid,
    /// Issued for another watchlist (or for one watchlist, and used on
    /// the multi-watchlist endpoint).
    WrongWatchlist,
    /// The store cannot be reached (cluster mode without Redis).
    Unavailable(String),
}

impl Ticket {
    /// A ticket that expires `ttl` from now.
    pub fn new(claim: Claim, ttl: Duration) -> Self {
        Self {
            user: claim.user,
            token_id: claim.token_id,
            watchlist_id: claim.watchlist_id,
            expires_at: Instant::now() + ttl,
        }
    }

    /// Whether it may open a socket on `watchlist_id`.
    pub fn fits(&self, watchlist_id: Option<i64>) -> Result<(), TicketError> {
        if self.watchlist_id.is_some() && self.watchlist_id != watchlist_id {
            return Err(TicketError::WrongWatchlist);
        }
        Ok(())
    }
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
    pub fn issue(&self, claim: Claim) -> Option<String> {
        let now = Instant::now();
        let mut map = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max_outstanding {
            map.retain(|_, t| t.expires_at > now);
            if map.len() >= self.max_outstanding {
                return None;
            }
        }
        let id = new_ticket_id();
        map.insert(id.clone(), Ticket::new(claim, self.ttl));
        Some(id)
    }

    /// Removes expired tickets; returns how many (run periodically, so
    /// tickets nobody uses do not stay until the store is full).
    pub fn purge_expired(&self) -> usize {
        let now = Instant::now();
        let mut map = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        let before = map.len();
        map.retain(|_, t| t.expires_at > now);
        before - map.len()
    }

    pub fn len(&self) -> usize {
        self.tickets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a ticket for a socket on `watchlist_id` (`None`: the
    /// multi-watchlist endpoint) out of the store: whatever the outcome, it
    /// cannot be used again.
    pub fn consume(&self, ticket: &str, watchlist_id: Option<i64>) -> Result<Ticket, TicketError> {
        let mut map = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        let t = map.remove(ticket).ok_or(TicketError::Invalid)?;
        if t.expires_at <= Instant::now() {
            return Err(TicketError::Invalid);
        }
        t.fits(watchlist_id)?;
        Ok(t)
    }
}

impl Tickets for TicketStore {
    fn ttl(&self) -> Duration {
        self.ttl
    }

    fn issue(&self, claim: Claim) -> BoxFuture<'_, Result<Option<String>, TicketError>> {
        future::ready(Ok(TicketStore::issue(self, claim))).boxed()
    }

    fn consume(
        &self,
        ticket: String,
        watchlist_id: Option<i64>,
    ) -> BoxFuture<'_, Result<Ticket, TicketError>> {
        future::ready(TicketStore::consume(self, &ticket, watchlist_id)).boxed()
    }

    fn purge_expired(&self) -> usize {
        TicketStore::purge_expired(self)
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

    fn claim(token_id: i64, watchlist_id: Option<i64>) -> Claim {
        Claim {
            user: user(),
            token_id,
            watchlist_id,
        }
    }

    /// Why `store` refuses ticket `t` for `watchlist_id`.
    fn refusal(store: &TicketStore, t: &str, watchlist_id: Option<i64>) -> TicketError {
        store.consume(t, watchlist_id).unwrap_err()
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
        let t = store.issue(claim(5, Some(7))).unwrap();
        assert_eq!(refusal(&store, &t, Some(8)), TicketError::WrongWatchlist);
        // The failed attempt used it up as well.
        assert_eq!(refusal(&store, &t, Some(7)), TicketError::Invalid);
        let t = store.issue(claim(5, Some(7))).unwrap();
        assert_eq!(store.consume(&t, Some(7)).unwrap().token_id, 5);
        assert_eq!(refusal(&store, &t, Some(7)), TicketError::Invalid);
        // Bound to a watchlist: not for the multi-watchlist endpoint.
        let t = store.issue(claim(5, Some(7))).unwrap();
        assert_eq!(refusal(&store, &t, None), TicketError::WrongWatchlist);
        // Unbound: for any socket.
        let t = store.issue(claim(5, None)).unwrap();
        assert!(store.consume(&t, Some(3)).is_ok());
        let t = store.issue(claim(5, None)).unwrap();
        assert!(store.consume(&t, None).is_ok());
    }

    #[test]
    fn tickets_expire() {
        let store = TicketStore::new(Duration::from_millis(0), 10);
        let t = store.issue(claim(5, Some(7))).unwrap();
        assert_eq!(refusal(&store, &t, Some(7)), TicketError::Invalid);
    }

    #[test]
    fn expired_tickets_are_purged() {
        let store = TicketStore::new(Duration::from_millis(0), 10);
        store.issue(claim(5, Some(7))).unwrap();
        store.issue(claim(5, None)).unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.purge_expired(), 2);
        assert!(store.is_empty());
        let live = TicketStore::new(Duration::from_secs(60), 10);
        live.issue(claim(5, None)).unwrap();
        assert_eq!(live.purge_expired(), 0);
        assert_eq!(live.len(), 1);
    }

    #[test]
    fn outstanding_tickets_are_bounded() {
        let store = TicketStore::new(Duration::from_secs(60), 2);
        assert!(store.issue(claim(1, Some(1))).is_some());
        assert!(store.issue(claim(1, Some(1))).is_some());
        assert!(store.issue(claim(1, Some(1))).is_none());
    }
}
