//! Building and running the application: [`Application::build`] wires the
//! database, the actors, the fetcher and the HTTP server together and binds
//! the listener (port 0 works, [`Application::addr`] tells the port), so tests
//! start exactly what production runs.
//!
//! Long-lived things and their owners:
//! * the HTTP server: ended by [`AppHandle::shutdown`];
//! * the realtime arbiter (supervisor, workers, fetcher, sweeps): stopped
//!   when the server has stopped, in [`Application::run_until_stopped`];
//! * the fetcher and the periodic sweeps ([`crate::sweeps`]): end when the
//!   shutdown signal fires; the arbiter is stopped only once the fetcher has
//!   returned and its [`QuoteSaver`] has written the last quotes (or after
//!   [`FETCHER_STOP_WAIT`]);
//! * the alert evaluator and webhook deliverer ([`crate::alerts`]): end when
//!   the shutdown signal fires; the arbiter is stopped once they have (or
//!   after [`FETCHER_STOP_WAIT`]).

use crate::auth::TicketStore;
use crate::config::{ConfigError, ProviderKind, Settings};
use crate::control::{Applier, LocalControl};
use crate::db::{Db, DbError};
use crate::feed::local::{AlwaysPoller, LocalBus, LocalDemand, Unlimited};
use crate::feed::{
    Demand, Distributor, IntradayStore, PinnedSymbols, QuoteCache, RateLimiter, Seams,
    WorkerRegistry,
};
use crate::metrics::Metrics;
use crate::net::ConnSocket;
use crate::protocol::close;
use crate::quote_store::{self, QuoteSaver};
use crate::session::relay::RelayHandle;
use crate::session::table::SessionTable;
use crate::session::SessionRules;
use crate::state::AppState;
use crate::supervisor::{ShutdownAll, Supervisor};
use crate::upstream::bucket::TokenBucket;
use crate::upstream::fetcher::{Fetcher, FetcherConfig, FetcherDeps, UpstreamStats};
use crate::upstream::{sim::SimProvider, yahoo::YahooProvider, QuoteProvider};
use crate::worker::WorkerDeps;
use actix::prelude::*;
use actix_web::dev::{Extensions, Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use std::any::Any;
use std::net::SocketAddr;
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
    #[error("alerts: {0}")]
    Alerts(String),
}

pub struct Application {
    addr: SocketAddr,
    server: Server,
    state: web::Data<AppState>,
    shutdown: watch::Sender<bool>,
    arbiter: Arbiter,
    fetcher_done: oneshot::Receiver<()>,
    alerts: crate::alerts::Alerts,
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
        crate::net::cap_send_buffer(tcp, send_buffer);
        if let (Ok(local), Ok(peer)) = (tcp.local_addr(), tcp.peer_addr()) {
            ext.insert(ConnSocket::of(tcp, local, peer));
        }
    }
}

/// The configured upstream provider.
fn provider(settings: &Settings) -> Result<Arc<dyn QuoteProvider>, StartupError> {
    let up = &settings.upstream;
    Ok(match up.provider {
        ProviderKind::Sim => Arc::new(SimProvider::new()),
        ProviderKind::Yahoo => Arc::new(
            YahooProvider::new(
                up.base_url.as_str(),
                Duration::from_millis(up.request_timeout_ms),
                Duration::from_millis(up.connect_timeout_ms),
            )
            .map_err(|e| StartupError::Upstream(e.to_string()))?,
        ),
    })
}

impl Application {
    /// Builds everything and binds the listener. Must run inside an actix
    /// system (`#[actix_web::main]`, `#[actix_web::test]`).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        settings.validate()?;
        let db = open_db(&settings).await?;
        Self::build_with_db(settings, db).await
    }

    async fn build_with_db(settings: Settings, db: Db) -> Result<Self, StartupError> {
        let settings = Arc::new(settings);
        let bind = settings.server.bind;
        let cache = QuoteCache::new(quote_store::load(&db).await?);
        let provider = provider(&settings)?;
        let up = &settings.upstream;
        let limiter: Arc<dyn RateLimiter> = if provider.rate_limited() {
            Arc::new(TokenBucket::new(
                up.rate_limit.capacity,
                up.rate_limit.refill_per_sec,
            ))
        } else {
            Arc::new(Unlimited)
        };

        let metrics = Arc::new(Metrics::new());
        let registry = WorkerRegistry::default();
        let intraday = IntradayStore::default();
        let distributor = Distributor {
            cache: cache.clone(),
            intraday: intraday.clone(),
            registry: registry.clone(),
        };
        let pinned = PinnedSymbols::default();
        let demand: Arc<dyn Demand> = Arc::new(LocalDemand::new(registry.clone(), pinned.clone()));
        let seams = Seams {
            demand: demand.clone(),
            bus: Arc::new(LocalBus::new(distributor)),
            limiter,
            role: Arc::new(AlwaysPoller),
        };
        let upstream = Arc::new(UpstreamStats::default());
        let sessions = SessionTable::new(
            settings.limits.max_sessions,
            settings.limits.max_sessions_per_user,
        );

        let arbiter = Arbiter::new();
        let deps = WorkerDeps {
            db: db.clone(),
            cache: cache.clone(),
            intraday: intraday.clone(),
            registry: registry.clone(),
            demand: demand.clone(),
            metrics: metrics.clone(),
            history_size: settings.realtime.history_size,
        };
        let supervisor =
            Supervisor::start_in_arbiter(&arbiter.handle(), move |_| Supervisor::new(deps));

        let (shutdown, shutdown_rx) = watch::channel(false);
        let control = LocalControl::new(Applier {
            supervisor: supervisor.clone(),
            sessions: sessions.clone(),
        });
        // Price alerts: evaluated on the rounds this instance publishes as
        // the poller; their symbols are pinned into the demand.
        let alerts = crate::alerts::start(
            crate::alerts::AlertDeps {
                db: db.clone(),
                settings: settings.clone(),
                pinned: pinned.clone(),
                control: control.clone(),
                metrics: metrics.clone(),
            },
            &arbiter.handle(),
            shutdown_rx.clone(),
        )
        .map_err(|e| StartupError::Alerts(e.to_string()))?;
        let alert_observer = alerts.observer;
        let alerts = alerts.alerts;
        let (fetch_provider, fetch_metrics, fetch_stats) =
            (provider.clone(), metrics.clone(), upstream.clone());
        let fetcher_cfg = FetcherConfig {
            poll_interval: settings.poll_interval(),
            closed_poll_interval: Duration::from_millis(up.closed_poll_interval_ms),
            unknown_recheck: Duration::from_millis(up.unknown_recheck_ms),
            batch_size: up.batch_size,
            backoff_base: Duration::from_millis(up.backoff_base_ms),
            backoff_max: Duration::from_millis(up.backoff_max_ms),
            max_token_wait: settings.poll_interval().min(Duration::from_secs(1)),
        };
        let (done, fetcher_done) = oneshot::channel();
        let fetcher_shutdown = shutdown_rx.clone();
        let saver_db = db.clone();
        arbiter.spawn(async move {
            // The saver's task runs on this arbiter too; the fetcher holds its
            // only handle, so the saver writes what is left and ends once the
            // fetcher has returned.
            let (saver, saver_task) = QuoteSaver::spawn(saver_db);
            let deps = FetcherDeps {
                provider: fetch_provider,
                seams,
                saver,
                observers: vec![alert_observer],
                metrics: fetch_metrics,
                stats: fetch_stats,
            };
            Fetcher::new(deps, fetcher_cfg).run(fetcher_shutdown).await;
            let _ = saver_task.await;
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
            session_rules: SessionRules::from_settings(&settings),
            supervisor,
            control,
            metrics,
            registry,
            demand,
            quotes: cache,
            intraday,
            upstream,
            provider: provider.name(),
            started: Instant::now(),
            alerts: alerts.clone(),
            shutting_down: AtomicBool::new(false),
        });
        arbiter.spawn(crate::sweeps::run(state.clone(), shutdown_rx));

        let bind_err = |source| StartupError::Bind { addr: bind, source };
        let listener = crate::net::listen(bind).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
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
        let server = server.listen(listener).map_err(bind_err)?.run();
        log::info!("listening on http://{addr}");
        Ok(Self {
            addr,
            server,
            state,
            shutdown,
            arbiter,
            fetcher_done,
            alerts,
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
        let _ = tokio::time::timeout(FETCHER_STOP_WAIT, async {
            let _ = self.fetcher_done.await;
            self.alerts.stopped().await;
        })
        .await;
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
        // Workers stop and no new one starts; every socket (started or
        // about to start) is closed with 1001; then wait for the last to go.
        let _ = state.supervisor.send(ShutdownAll).await;
        state
            .sessions
            .close_where(|_| true, close::GOING_AWAY, "server shutting down");
        let wait = Duration::from_secs(state.settings.server.shutdown_timeout_s.max(1));
        let _ = tokio::time::timeout(wait, state.sessions.until_empty()).await;
        let _ = self.shutdown.send(true);
        self.server.stop(true).await;
    }
}
