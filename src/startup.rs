//! Building and running the application: [`Application::build`] wires the
//! database, the actors, the fetcher and the HTTP server together and binds
//! the listener (port 0 works, [`Application::addr`] tells the port), so tests
//! start exactly what production runs.
//!
//! Long-lived things and their owners:
//! * the HTTP server: ended by [`AppHandle::shutdown`];
//! * the realtime arbiter (supervisor, workers, fetcher, sweeps): stopped
//!   when the server has stopped, in [`Application::run_until_stopped`];
//! * the fetcher and the periodic sweeps: end when the shutdown signal fires;
//!   the arbiter is stopped only once the fetcher has written its last
//!   quotes (or after [`FETCHER_STOP_WAIT`]).

use crate::auth::TicketStore;
use crate::config::{ConfigError, ProviderKind, Settings};
use crate::db::{repo, Db, DbError};
use crate::fanout::{QuoteCache, Watchers};
use crate::metrics::Metrics;
use crate::protocol::close;
use crate::session::relay::RelayHandle;
use crate::session::table::{ConnSocket, SessionTable};
use crate::supervisor::{ShutdownAll, Supervisor};
use crate::upstream::bucket::TokenBucket;
use crate::upstream::fetcher::{from_stored, Fetcher, FetcherConfig, UpstreamStats};
use crate::upstream::{sim::SimProvider, yahoo::YahooProvider, QuoteProvider};
use crate::worker::WorkerDeps;
use actix::prelude::*;
use actix_web::dev::{Extensions, Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use std::any::Any;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database.url: {0}")]
    Database(#[from] DbError),
    #[error("server.bind: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("upstream: {0}")]
    Upstream(String),
}

/// Shared state of the HTTP handlers.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: Db,
    pub tickets: TicketStore,
    pub sessions: SessionTable,
    pub supervisor: Addr<Supervisor>,
    pub metrics: Arc<Metrics>,
    pub watchers: Watchers,
    /// The latest state of every symbol seen (loaded from the database at
    /// start, kept current by the fetcher).
    pub quotes: QuoteCache,
    pub upstream: Arc<UpstreamStats>,
    pub provider: &'static str,
    pub started: Instant,
    shutting_down: AtomicBool,
}

impl AppState {
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

pub struct Application {
    addr: SocketAddr,
    server: Server,
    state: web::Data<AppState>,
    shutdown: watch::Sender<bool>,
    arbiter: Arbiter,
    fetcher_done: oneshot::Receiver<()>,
}

/// Longest wait for the fetcher's last database write at shutdown.
pub const FETCHER_STOP_WAIT: Duration = Duration::from_secs(5);

/// Stops a running application from anywhere (signal handler, tests).
#[derive(Clone)]
pub struct AppHandle {
    server: ServerHandle,
    state: web::Data<AppState>,
    shutdown: watch::Sender<bool>,
}

/// Opens the database and runs migrations (on a blocking thread).
pub async fn open_db(settings: &Settings) -> Result<Db, DbError> {
    let url = settings.database.url.clone();
    let size = settings.database.pool_size;
    tokio::task::spawn_blocking(move || {
        let db = Db::connect(&url, size)?;
        db.migrate()?;
        Ok(db)
    })
    .await
    .map_err(|e| DbError::Pool(e.to_string()))?
}

/// Records the socket of each accepted connection so a stalled session can
/// be cut off (see [`ConnSocket`]), and caps its kernel send buffer.
fn record_socket(conn: &dyn Any, ext: &mut Extensions, send_buffer: usize) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if send_buffer > 0 {
            let size = send_buffer.min(i32::MAX as usize) as libc::c_int;
            // SAFETY: setsockopt on the connection's own fd with a c_int value.
            unsafe {
                libc::setsockopt(
                    tcp.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    &size as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        if let (Ok(local), Ok(peer)) = (tcp.local_addr(), tcp.peer_addr()) {
            ext.insert(ConnSocket {
                fd: tcp.as_raw_fd(),
                local,
                peer,
            });
        }
    }
}

impl Application {
    /// Builds everything and binds the listener. Must run inside an actix
    /// system (`#[actix_web::main]`, `#[actix_web::test]`).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        settings.validate()?;
        let bind = settings.bind_addr()?;
        let db = open_db(&settings).await?;
        Self::build_with_db(settings, db, bind).await
    }

    async fn build_with_db(
        settings: Settings,
        db: Db,
        bind: SocketAddr,
    ) -> Result<Self, StartupError> {
        let settings = Arc::new(settings);
        let stored = db.run(repo::load_latest_quotes).await?;
        let cache = QuoteCache::new(stored.into_iter().filter_map(from_stored).collect());

        let up = &settings.upstream;
        let provider: Arc<dyn QuoteProvider> = match settings.provider()? {
            ProviderKind::Sim => Arc::new(SimProvider::new()),
            ProviderKind::Yahoo => Arc::new(
                YahooProvider::new(
                    &up.base_url,
                    Duration::from_millis(up.request_timeout_ms),
                    Duration::from_millis(up.connect_timeout_ms),
                )
                .map_err(|e| StartupError::Upstream(e.to_string()))?,
            ),
        };
        let bucket = provider.rate_limited().then(|| {
            Arc::new(TokenBucket::new(
                up.rate_limit.capacity,
                up.rate_limit.refill_per_sec,
            ))
        });

        let metrics = Arc::new(Metrics::new());
        let watchers = Watchers::default();
        let upstream = Arc::new(UpstreamStats::default());
        let sessions = SessionTable::new(
            settings.limits.max_sessions,
            settings.limits.max_sessions_per_user,
        );

        let arbiter = Arbiter::new();
        let deps = WorkerDeps {
            db: db.clone(),
            cache: cache.clone(),
            watchers: watchers.clone(),
            metrics: metrics.clone(),
        };
        let supervisor =
            Supervisor::start_in_arbiter(&arbiter.handle(), move |_| Supervisor::new(deps));

        let (shutdown, shutdown_rx) = watch::channel(false);
        let fetcher = Fetcher::new(
            provider.clone(),
            bucket,
            watchers.clone(),
            cache.clone(),
            db.clone(),
            metrics.clone(),
            upstream.clone(),
            FetcherConfig {
                poll_interval: settings.poll_interval(),
                closed_poll_interval: Duration::from_millis(up.closed_poll_interval_ms),
                unknown_recheck: Duration::from_millis(up.unknown_recheck_ms),
                batch_size: up.batch_size,
                backoff_base: Duration::from_millis(up.backoff_base_ms),
                backoff_max: Duration::from_millis(up.backoff_max_ms),
                max_token_wait: settings.poll_interval().min(Duration::from_secs(1)),
            },
        );
        let (done, fetcher_done) = oneshot::channel();
        let fetcher_shutdown = shutdown_rx.clone();
        arbiter.spawn(async move {
            fetcher.run(fetcher_shutdown).await;
            let _ = done.send(());
        });

        let state = web::Data::new(AppState {
            settings: settings.clone(),
            db,
            tickets: TicketStore::new(
                Duration::from_millis(settings.realtime.ticket_ttl_ms),
                100_000,
            ),
            sessions,
            supervisor,
            metrics,
            watchers,
            quotes: cache,
            upstream,
            provider: provider.name(),
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
        });
        arbiter.spawn(sweeps(state.clone(), shutdown_rx));

        let listener =
            TcpListener::bind(bind).map_err(|source| StartupError::Bind { addr: bind, source })?;
        // std binds with a backlog of 128; a burst of dashboards reconnecting
        // at once would overflow it. Listening again only raises the backlog.
        // SAFETY: listen(2) on a socket we own and have just bound.
        unsafe { libc::listen(listener.as_raw_fd(), 2048) };
        let addr = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr: bind, source })?;
        let app_state = state.clone();
        let send_buffer = settings.realtime.socket_send_buffer_bytes;
        let relay_metrics = state.metrics.clone();
        let mut server = HttpServer::new(move || {
            // Called once on each HTTP worker thread: that thread's relay.
            let relay = RelayHandle::start(relay_metrics.clone());
            App::new()
                .app_data(app_state.clone())
                .app_data(web::Data::new(relay))
                .configure(crate::api::routes)
        })
        .on_connect(move |conn, ext| record_socket(conn, ext, send_buffer))
        // Signals are ours: shutdown first closes every socket with 1001.
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout_s);
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server
            .listen(listener)
            .map_err(|source| StartupError::Bind { addr: bind, source })?
            .run();
        log::info!("listening on http://{addr}");
        Ok(Self {
            addr,
            server,
            state,
            shutdown,
            arbiter,
            fetcher_done,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    pub fn handle(&self) -> AppHandle {
        AppHandle {
            server: self.server.handle(),
            state: self.state.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Serves until [`AppHandle::shutdown`] (or the server stops otherwise),
    /// then stops the realtime arbiter.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let res = self.server.await;
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(FETCHER_STOP_WAIT, self.fetcher_done).await;
        self.arbiter.stop();
        res
    }
}

impl AppHandle {
    /// Graceful shutdown: refuse new sessions, close every socket with 1001,
    /// stop the workers and the fetcher, then stop the HTTP server.
    pub async fn shutdown(&self) {
        let state = &self.state;
        state.shutting_down.store(true, Ordering::Relaxed);
        let _ = state.supervisor.send(ShutdownAll).await;
        // Sessions that had not joined a worker yet are closed directly.
        state
            .sessions
            .close_where(|_| true, close::GOING_AWAY, "server shutting down");
        let deadline =
            Instant::now() + Duration::from_secs(state.settings.server.shutdown_timeout_s.max(1));
        while !state.sessions.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.shutdown.send(true);
        self.server.stop(true).await;
    }
}

/// Periodic housekeeping on the realtime arbiter, until shutdown:
/// * sessions whose socket stopped draining are cut off (their actor is not
///   polled, so they cannot notice by themselves);
/// * sessions whose token was revoked (by the CLI, possibly in another
///   process) are closed with 1008.
async fn sweeps(state: web::Data<AppState>, mut shutdown: watch::Receiver<bool>) {
    let rt = &state.settings.realtime;
    let mut stall = tokio::time::interval(state.settings.heartbeat_interval());
    let mut revoke = tokio::time::interval(Duration::from_millis(rt.auth_recheck_interval_ms));
    stall.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    revoke.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout_ms = rt.client_timeout_ms;
    loop {
        tokio::select! {
            _ = stall.tick() => {
                let cut = state.sessions.cut_stalled(timeout_ms);
                state.metrics.sessions_cut.inc_by(cut as u64);
            }
            _ = revoke.tick() => {
                let tokens = state.sessions.token_ids();
                if tokens.is_empty() {
                    continue;
                }
                match state.db.run(move |c| repo::revoked_among(c, &tokens)).await {
                    Ok(revoked) if !revoked.is_empty() => {
                        let n = state.sessions.close_where(|e| revoked.contains(&e.token_id), close::POLICY, "token revoked");
                        log::info!("closed {n} sessions of revoked tokens");
                    }
                    Ok(_) => {}
                    Err(e) => log::warn!("revocation check failed: {e}"),
                }
            }
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
}
