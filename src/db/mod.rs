//! The data layer: one binary for SQLite and PostgreSQL.
//!
//! * [`DbUrl`] parses `database.url` and picks the backend.
//! * [`DbConn`] is a connection to either backend; [`with_conn!`](crate::with_conn) runs the same
//!   diesel query on whichever it is, so every query in [`repo`] is written once.
//! * [`Db`] is the pool. Its [`Db::run`] moves the work to the blocking thread
//!   pool, so no diesel call ever blocks an actix worker or actor thread.
//! * Migrations for both backends are embedded and run by [`Db::migrate`].
//!
//! Errors of this layer are [`DbError`]; the API layer maps them to HTTP once.

pub mod models;
pub mod repo;
pub mod schema;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::path::PathBuf;
use std::time::Duration;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Errors of the data layer. It speaks only of the database: what a failed
/// lookup or write means to a client is for the caller to say.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the write (duplicate name or symbol).
    #[error("already exists")]
    Duplicate,
    /// A write would take a row count past its cap (checked inside the
    /// write's transaction, so concurrent writers cannot both pass).
    #[error("{table}: at most {max} rows allowed")]
    CapReached { table: &'static str, max: i64 },
    #[error("database error: {0}")]
    Query(diesel::result::Error),
    #[error("database unavailable: {0}")]
    Pool(String),
    #[error("migration failed: {0}")]
    Migration(String),
}

impl From<diesel::result::Error> for DbError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::NotFound => DbError::NotFound,
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => DbError::Duplicate,
            other => DbError::Query(other),
        }
    }
}

impl From<r2d2::Error> for DbError {
    fn from(e: r2d2::Error) -> Self {
        DbError::Pool(e.to_string())
    }
}

/// A parsed `database.url`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum DbUrl {
    /// A file path, or `:memory:`.
    Sqlite(String),
    Postgres(String),
}

impl DbUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        if url == "sqlite::memory:" {
            return Ok(DbUrl::Sqlite(":memory:".into()));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// needs a file path".into());
            }
            return Ok(DbUrl::Sqlite(path.to_owned()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url::Url::parse(url).map_err(|e| format!("unparsable URL: {e}"))?;
            return Ok(DbUrl::Postgres(url.to_owned()));
        }
        Err(format!(
            "{url:?} is not sqlite://PATH, sqlite::memory: or postgres://..."
        ))
    }

    pub fn backend(&self) -> &'static str {
        match self {
            DbUrl::Sqlite(_) => "sqlite",
            DbUrl::Postgres(_) => "postgres",
        }
    }
}

impl std::str::FromStr for DbUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl TryFrom<String> for DbUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl std::fmt::Display for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbUrl::Sqlite(p) if p == ":memory:" => f.write_str("sqlite::memory:"),
            DbUrl::Sqlite(p) => write!(f, "sqlite://{p}"),
            DbUrl::Postgres(u) => f.write_str(u),
        }
    }
}

/// Opens a PostgreSQL connection; every one this process opens goes
/// through here, so that a thread still inside libpq when the process exits
/// cannot crash it. At exit, C libraries tear down their state while other
/// threads run on (a pool thread may be connecting, a query may be mid-TLS):
///
/// * OpenSSL, which libpq uses for TLS, frees its tables in an `atexit`
///   handler. `openssl_sys::init` initialises it with
///   `OPENSSL_INIT_NO_ATEXIT` first (the first initialisation decides), so
///   it leaves them to the kernel.
/// * Kerberos destroys its mutexes in a library destructor, and libpq's
///   default `gssencmode=prefer` calls into it on every connect to probe for
///   GSSAPI encryption. Unless the URL sets `gssencmode`, connections here
///   say `disable`: no probe, no Kerberos on the connect path. GSSAPI
///   authentication, if the server asks for it, is not affected.
///
/// Both crashed test binaries at exit (SIGSEGV; SIGABRT from
/// `k5_mutex_lock`); tests/exit.rs exits a process under connecting threads.
pub fn pg_connect(url: &str) -> diesel::ConnectionResult<PgConnection> {
    openssl_sys::init();
    PgConnection::establish(&without_gss_probe(url))
}

/// `url` with `gssencmode=disable` unless it names a `gssencmode` itself.
fn without_gss_probe(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.query_pairs().any(|(k, _)| k == "gssencmode") => {
            u.query_pairs_mut().append_pair("gssencmode", "disable");
            u.to_string()
        }
        // Unparsable URLs were refused by `DbUrl::parse`; pass anything
        // else through for libpq to judge.
        _ => url.to_owned(),
    }
}

/// A connection to whichever backend the URL named.
pub enum DbConn {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

/// Runs `$body` with `$c` bound to the concrete connection, once per backend,
/// so one query text serves both.
#[macro_export]
macro_rules! with_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConn::Sqlite($c) => $body,
            $crate::db::DbConn::Pg($c) => $body,
        }
    };
}

/// Runs `$body` in a write transaction. On SQLite it is `BEGIN IMMEDIATE`:
/// a deferred transaction that reads first and writes later fails at once
/// with "database is locked" when another writer got in between, whatever
/// the busy timeout; taking the write lock up front makes it wait instead.
#[macro_export]
macro_rules! write_tx {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConn::Sqlite(conn) => conn.immediate_transaction(|$c| $body),
            $crate::db::DbConn::Pg(conn) => conn.transaction(|$c| $body),
        }
    };
}

impl DbConn {
    pub fn establish(url: &DbUrl) -> Result<Self, DbError> {
        match url {
            DbUrl::Sqlite(path) => {
                if path != ":memory:" {
                    if let Some(parent) = PathBuf::from(path).parent() {
                        if !parent.as_os_str().is_empty() {
                            std::fs::create_dir_all(parent).map_err(|e| {
                                DbError::Pool(format!("cannot create {}: {e}", parent.display()))
                            })?;
                        }
                    }
                }
                let mut c =
                    SqliteConnection::establish(path).map_err(|e| DbError::Pool(e.to_string()))?;
                // WAL lets readers run beside the writer; the busy timeout makes
                // concurrent writers wait instead of failing with SQLITE_BUSY.
                c.batch_execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                )
                .map_err(DbError::Query)?;
                Ok(DbConn::Sqlite(c))
            }
            DbUrl::Postgres(u) => Ok(DbConn::Pg(
                pg_connect(u).map_err(|e| DbError::Pool(e.to_string()))?,
            )),
        }
    }

    fn ping(&mut self) -> Result<(), diesel::result::Error> {
        with_conn!(self, |c| c.batch_execute("SELECT 1"))
    }
}

struct Manager {
    url: DbUrl,
}

impl r2d2::ManageConnection for Manager {
    type Connection = DbConn;
    type Error = DbError;

    fn connect(&self) -> Result<DbConn, DbError> {
        DbConn::establish(&self.url)
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), DbError> {
        conn.ping().map_err(DbError::Query)
    }

    fn has_broken(&self, _conn: &mut DbConn) -> bool {
        false
    }
}

/// The connection pool. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: r2d2::Pool<Manager>,
    backend: &'static str,
}

impl Db {
    /// Opens the pool. An in-memory SQLite database exists once per
    /// connection, so it gets a pool of exactly one.
    pub fn connect(url: &DbUrl, pool_size: u32) -> Result<Self, DbError> {
        let url = url.clone();
        let size = match &url {
            DbUrl::Sqlite(p) if p == ":memory:" => 1,
            _ => pool_size.max(1),
        };
        let backend = url.backend();
        // A network connection can break while idle, so PostgreSQL ones are
        // checked before use; an SQLite one is a file handle in this process,
        // and the check would cost a query on every request.
        let check = matches!(url, DbUrl::Postgres(_));
        let pool = r2d2::Pool::builder()
            .max_size(size)
            .test_on_check_out(check)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build(Manager { url })?;
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Runs embedded migrations; returns how many were applied.
    pub fn migrate(&self) -> Result<usize, DbError> {
        let mut conn = self.pool.get()?;
        let applied = match &mut *conn {
            DbConn::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
            DbConn::Pg(c) => c.run_pending_migrations(PG_MIGRATIONS).map(|v| v.len()),
        };
        applied.map_err(|e| DbError::Migration(e.to_string()))
    }

    /// Runs `f` with a pooled connection on the current thread. Only for code
    /// that is already off the async threads (the CLI, `spawn_blocking`).
    pub fn run_sync<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut DbConn) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.pool.get().map_err(DbError::from)?;
        f(&mut conn)
    }

    /// Runs `f` with a pooled connection on the blocking thread pool. `f` may
    /// fail with any error a [`DbError`] converts into, so a caller can mix
    /// queries with its own checks in one trip.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.run_sync(f))
            .await
            .map_err(|e| DbError::Pool(format!("database task failed: {e}")))?
    }
}

/// Microseconds since the Unix epoch: the stored form of every timestamp.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The stored form back to a time.
pub fn from_micros(us: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(us).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::without_gss_probe;

    #[test]
    fn connections_skip_the_gssapi_probe_unless_the_url_says_otherwise() {
        assert_eq!(
            without_gss_probe("postgres://u@127.0.0.1:5432/db"),
            "postgres://u@127.0.0.1:5432/db?gssencmode=disable"
        );
        assert_eq!(
            without_gss_probe("postgresql://u:p%40ss@h/db?sslmode=require"),
            "postgresql://u:p%40ss@h/db?sslmode=require&gssencmode=disable"
        );
        assert_eq!(
            without_gss_probe("postgres://h/db?gssencmode=require"),
            "postgres://h/db?gssencmode=require"
        );
        assert_eq!(
            without_gss_probe("postgres:///db?host=/run/postgresql"),
            "postgres:///db?host=/run/postgresql&gssencmode=disable"
        );
    }
}
