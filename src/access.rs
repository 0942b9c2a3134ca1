//! Who may use a watchlist, decided here for every way in: REST, WebSocket
//! tickets, WebSocket upgrades and subscriptions; and who may use a price
//! alert.
//!
//! The rule: its owner may do anything with it; anyone signed in may read
//! (and watch live) a public one; nobody else may touch it. Alerts are
//! their owner's only, answered as a private watchlist is (403 for someone
//! else's, 404 for none).

use crate::db::models::Watchlist;
use crate::db::{repo, DbConn, DbError};

/// What the caller wants to do with a watchlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read it or watch it live.
    Read,
    /// Change or delete it.
    Write,
}

/// Why a watchlist may not be used.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("no such watchlist")]
    NotFound,
    /// The watchlist exists; the message says why it is not the caller's to use.
    #[error("{0}")]
    Denied(&'static str),
    #[error(transparent)]
    Db(DbError),
}

impl From<DbError> for AccessError {
    fn from(e: DbError) -> Self {
        AccessError::Db(e)
    }
}

/// The rule itself, for a watchlist already loaded.
pub fn check(w: &Watchlist, user_id: i64, access: Access) -> Result<(), AccessError> {
    if w.owner_id == user_id {
        return Ok(());
    }
    match access {
        Access::Read if w.is_public => Ok(()),
        Access::Read => Err(AccessError::Denied("this watchlist is private")),
        Access::Write => Err(AccessError::Denied("this watchlist is not yours")),
    }
}

/// Loads a watchlist the caller may use in this way (inside `Db::run`).
pub fn load(
    conn: &mut DbConn,
    watchlist_id: i64,
    user_id: i64,
    access: Access,
) -> Result<Watchlist, AccessError> {
    let w = repo::get_watchlist(conn, watchlist_id).map_err(|e| match e {
        DbError::NotFound => AccessError::NotFound,
        other => other.into(),
    })?;
    check(&w, user_id, access)?;
    Ok(w)
}

/// The rule for a price alert: its owner's only.
pub fn check_alert_owner(owner_id: i64, user_id: i64) -> Result<(), AccessError> {
    if owner_id == user_id {
        Ok(())
    } else {
        Err(AccessError::Denied("this alert is not yours"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watchlist(owner_id: i64, is_public: bool) -> Watchlist {
        Watchlist {
            id: 1,
            owner_id,
            name: "w".into(),
            description: String::new(),
            is_public,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn owner_does_anything_others_read_public_only() {
        for public in [false, true] {
            let w = watchlist(1, public);
            assert!(check(&w, 1, Access::Read).is_ok());
            assert!(check(&w, 1, Access::Write).is_ok());
            assert!(matches!(
                check(&w, 2, Access::Write),
                Err(AccessError::Denied(_))
            ));
            assert_eq!(check(&w, 2, Access::Read).is_ok(), public);
        }
    }
}
