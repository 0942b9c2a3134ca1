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

use crate::auth::{TicketStore, Tickets};
use crate::cluster::bus::{self, RedisBus};
use crate::cluster::control::RedisControl;
use crate::cluster::demand::ClusterDemand;
use crate::cluster::lease::Lease;
use crate::cluster::limiter::RedisLimiter;
use crate::cluster::nodes::Nodes;
use crate::cluster::tickets::RedisTickets;
use crate::cluster::Cluster;
use crate::config::{ConfigError, ProviderKind, Settings};
use crate::control::{Applier, ControlPlane, LocalControl};
use crate::db::{Db, DbError};
use crate::feed::local::{AlwaysPoller, LocalBus, LocalDemand, Unlimited};
use crate::feed::{
    Distributor, IntradayStore, PinnedSymbols, QuoteCache, RateLimiter, Seams, WorkerRegistry,
};
use crate::memory::CrowdGone;
use crate::metrics::{GaugeGuard, Metrics};
use crate::net::ConnSocket;
use crate::protocol::close;
use crate::quote_store::{self, QuoteSaver};
use crate::session::admission::ConnectLimiter;
use crate::session::lookups::ConnectLookups;
use crate::session::relay::RelayHandle;
use crate::session::table::SessionTable;
use crate::session::SessionDeps;
use crate::session::SessionRules;
use crate::state::AppState;
use crate::state::ClusterParts;
use crate::supervisor::{ShutdownAll, Supervisor};
use crate::upstream::bucket::TokenBucket;
use crate::upstream::fetcher::{Fetcher, FetcherConfig, FetcherDeps, UpstreamStats};
use crate::upstream::{sim::SimProvider, yahoo::YahooProvider, QuoteProvider};
use crate::worker::WorkerDeps;
use actix::prelude::*;
use actix_http::HttpService;
use actix_service::{fn_factory, fn_service, map_config, IntoServiceFactory, ServiceFactory};
use actix_web::dev::{AppConfig, Extensions, Server, ServerHandle};
use actix_web::rt::net::TcpStream;
use actix_web::{web, App};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
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
    #[error("{0}")]
    Cluster(String),
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
    /// Cluster mode: the lease task has handed the lease back.
    lease_done: Option<oneshot::Receiver<()>>,
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
    arbiter: ArbiterHandle,
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
fn record_socket(tcp: &TcpStream, ext: &mut Extensions, send_buffer: usize) {
    crate::net::cap_send_buffer(tcp, send_buffer);
    if let (Ok(local), Ok(peer)) = (tcp.local_addr(), tcp.peer_addr()) {
        ext.insert(ConnSocket::of(tcp, local, peer));
    }
}

/// The HTTP server, assembled as actix-web's `HttpServer` assembles it (its
/// h1 settings: 5 s keep-alive and request timeout, 1 s to disconnect,
/// graceful shutdown of idle keep-alive connections), plus the upgrade
/// service through which WebSocket sessions get their sockets (see
/// [`crate::session::transport`]). One difference: the apps get
/// `AppConfig::default()` (host `localhost:8080`), as `HttpServer`'s own
/// constructor for it is private; that host is only a fallback for URL
/// generation and `ConnectionInfo`, which quotecast does not use.
fn http_server(
    listener: std::net::TcpListener,
    addr: SocketAddr,
    settings: &Settings,
    state: web::Data<AppState>,
) -> std::io::Result<Server> {
    let send_buffer = settings.realtime.socket_send_buffer_bytes;
    let mut builder = actix_server::Server::build()
        // Signals are ours: shutdown first closes every socket with 1001.
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout_s);
    if settings.server.workers > 0 {
        builder = builder.workers(settings.server.workers);
    }
    let graceful = builder.graceful_shutdown_signal();
    let server = builder
        .listen("quotecast-http", listener, move || {
            // Called once on each HTTP worker thread: that thread's relay,
            // and what its sessions share, for both instances of the app on
            // it.
            let relay = RelayHandle::start(state.metrics.clone());
            let session_deps = web::Data::new(SessionDeps {
                table: state.sessions.clone(),
                supervisor: state.supervisor.clone(),
                db: state.db.clone(),
                relay,
                metrics: state.metrics.clone(),
                rules: state.session_rules,
            });
            let app = |session_deps: web::Data<SessionDeps>| {
                App::new()
                    .app_data(state.clone())
                    .app_data(session_deps)
                    .configure(crate::api::routes)
                    .into_factory()
            };
            let upgrade_app = app(session_deps.clone());
            let crowd_gone = state.crowd_gone.listen();
            let refreshers = state.metrics.pool_refreshers.clone();
            let trims = state.metrics.memory_trims.clone();
            let upgrade = fn_factory(move || {
                let app = upgrade_app.new_service(AppConfig::default());
                let mut crowd_gone = crowd_gone.clone();
                let refreshers = refreshers.clone();
                let trims = trims.clone();
                async move {
                    let app = Rc::new(app.await?);
                    // Only the upgrade app sees the crowd's requests: after
                    // one, this thread's pools are renewed, then the freed
                    // memory is handed back (a trim covers every arena; each
                    // thread's follows its own renewal). Ends with the
                    // worker's thread, or with the state.
                    let pooled = app.clone();
                    let live = GaugeGuard::new(refreshers);
                    actix_web::rt::spawn(async move {
                        let _live = live;
                        while crowd_gone.changed().await.is_ok() {
                            crate::session::transport::refresh_pools(&*pooled).await;
                            let _ = tokio::task::spawn_blocking(crate::memory::trim).await;
                            trims.inc();
                        }
                    });
                    Ok::<_, ()>(fn_service(move |(req, framed)| {
                        let app = app.clone();
                        async move {
                            crate::session::transport::serve(app, req, framed).await;
                            Ok::<_, Infallible>(())
                        }
                    }))
                }
            });
            let signal = graceful.clone();
            HttpService::build()
                .graceful_shutdown_signal(move || {
                    let signal = signal.clone();
                    async move { signal.notified().await }
                })
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(addr)
                .on_connect_ext(move |tcp: &TcpStream, ext| record_socket(tcp, ext, send_buffer))
                .upgrade(upgrade)
                .finish(map_config(app(session_deps), |_| AppConfig::default()))
                .tcp()
        })?
        .run();
    Ok(server)
}

/// What differs between a single process and a cluster beside the feed.
struct Plane {
    control: Arc<dyn ControlPlane>,
    tickets: Arc<dyn Tickets>,
    parts: Option<ClusterParts>,
    /// Cluster mode: resolves once the lease has been handed back.
    lease_done: Option<oneshot::Receiver<()>>,
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
        let bind_err = |source| StartupError::Bind { addr: bind, source };
        let listener = crate::net::listen(bind).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let cache = QuoteCache::new(quote_store::load(&db).await?);
        let provider = provider(&settings)?;
        let metrics = Arc::new(Metrics::new());
        let arbiter = Arbiter::new();
        let cluster = match settings.cluster.enabled() {
            false => None,
            true => {
                match Cluster::connect(&settings, addr, arbiter.handle(), metrics.clone()).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        arbiter.stop();
                        return Err(StartupError::Cluster(format!(
                            "cluster.redis_url: cannot use {}: {e}",
                            settings.cluster.redis_url
                        )));
                    }
                }
            }
        };
        let node_id = match &cluster {
            Some(c) => c.node_id.clone(),
            None if settings.cluster.node_id.is_empty() => crate::cluster::generated_node_id(),
            None => settings.cluster.node_id.clone(),
        };
        log::info!("node {node_id} starting");

        let registry = WorkerRegistry::default();
        let intraday = IntradayStore::default();
        let distributor = Distributor {
            cache: cache.clone(),
            intraday: intraday.clone(),
            registry: registry.clone(),
        };
        let pinned = PinnedSymbols::default();
        let up = &settings.upstream;
        let (shutdown, shutdown_rx) = watch::channel(false);
        // The feed's seams, and the cluster's parts that are not seams.
        let (seams, parts) = match &cluster {
            None => {
                let limiter: Arc<dyn RateLimiter> = if provider.rate_limited() {
                    Arc::new(TokenBucket::new(
                        up.rate_limit.capacity,
                        up.rate_limit.refill_per_sec,
                    ))
                } else {
                    Arc::new(Unlimited)
                };
                let seams = Seams {
                    demand: Arc::new(LocalDemand::new(registry.clone(), pinned.clone())),
                    bus: Arc::new(LocalBus::new(distributor, settings.poll_interval())),
                    limiter,
                    role: Arc::new(AlwaysPoller),
                };
                (seams, None)
            }
            Some(c) => {
                let lease = Lease::new(c.clone());
                let demand = ClusterDemand::new(c.clone(), registry.clone(), pinned.clone());
                let limiter: Arc<dyn RateLimiter> = if provider.rate_limited() {
                    Arc::new(RedisLimiter::new(
                        c.clone(),
                        up.rate_limit.capacity,
                        up.rate_limit.refill_per_sec,
                    ))
                } else {
                    Arc::new(Unlimited)
                };
                let reader = bus::Reader::new(c.clone(), distributor);
                arbiter.spawn(reader.run(shutdown_rx.clone()));
                arbiter.spawn(demand.clone().run(shutdown_rx.clone()));
                let seams = Seams {
                    demand,
                    bus: Arc::new(RedisBus::new(c.clone(), lease.clone())),
                    limiter,
                    role: lease.clone(),
                };
                (seams, Some((lease, Nodes::new(c.clone()))))
            }
        };
        let demand = seams.demand.clone();
        let upstream = Arc::new(UpstreamStats::default());
        let mut sessions = SessionTable::new(
            settings.limits.max_sessions,
            settings.limits.max_sessions_per_user,
        )
        .named(&node_id);
        if let (Some(c), Some((_, nodes))) = (&cluster, &parts) {
            let nodes = nodes.clone();
            sessions = sessions.clustered(
                c.session_id_base(),
                Arc::new(move |user, id| nodes.release(user, id)),
            );
        }

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

        let applier = Applier {
            supervisor: supervisor.clone(),
            sessions: sessions.clone(),
        };
        let ticket_ttl = Duration::from_millis(settings.realtime.ticket_ttl_ms);
        let plane: Plane = match (cluster, parts) {
            (Some(c), Some((lease, nodes))) => {
                let control = RedisControl::new(c.clone(), applier);
                arbiter.spawn(control.clone().run_writer(shutdown_rx.clone()));
                arbiter.spawn(control.clone().run_reader(shutdown_rx.clone()));
                arbiter.spawn(nodes.clone().run_releases(shutdown_rx.clone()));
                arbiter.spawn(nodes.clone().run_heartbeat(
                    sessions.clone(),
                    supervisor.clone(),
                    lease.clone(),
                    shutdown_rx.clone(),
                ));
                // The lease is handed back before the arbiter stops.
                let (done, lease_done) = oneshot::channel();
                let lease_task = lease.clone().run(shutdown_rx.clone());
                arbiter.spawn(async move {
                    lease_task.await;
                    let _ = done.send(());
                });
                let tickets = Arc::new(RedisTickets::new(c.clone(), ticket_ttl));
                let parts = ClusterParts {
                    cluster: c,
                    lease,
                    nodes,
                    control: control.clone(),
                };
                Plane {
                    control,
                    tickets,
                    parts: Some(parts),
                    lease_done: Some(lease_done),
                }
            }
            _ => {
                metrics.cluster_poller.set(1);
                Plane {
                    control: LocalControl::new(applier),
                    tickets: Arc::new(TicketStore::new(ticket_ttl, 100_000)),
                    parts: None,
                    lease_done: None,
                }
            }
        };
        let Plane {
            control,
            tickets,
            parts: cluster_parts,
            lease_done,
        } = plane;
        // Price alerts: evaluated on the rounds this instance publishes as
        // the poller (in cluster mode, only the lease holder publishes, and
        // a firing is stored conditionally on the alert's version, so one
        // firing is one event for the cluster); their symbols are pinned
        // into the demand, which every instance shares in cluster mode.
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
            lookups: ConnectLookups::new(db.clone()),
            db,
            node_id,
            tickets,
            sessions,
            session_rules: SessionRules::from_settings(&settings),
            connects: ConnectLimiter::new(settings.limits.connects_per_ip_per_s),
            supervisor,
            control,
            cluster: cluster_parts,
            metrics,
            registry,
            demand,
            pinned,
            quotes: cache,
            intraday,
            upstream,
            provider: provider.name(),
            started: Instant::now(),
            alerts: alerts.clone(),
            crowd_gone: CrowdGone::default(),
            shutting_down: AtomicBool::new(false),
        });
        arbiter.spawn(crate::sweeps::run(state.clone(), shutdown_rx));

        let server = http_server(listener, addr, &settings, state.clone()).map_err(bind_err)?;
        log::info!("listening on http://{addr}");
        Ok(Self {
            addr,
            server,
            state,
            shutdown,
            arbiter,
            fetcher_done,
            lease_done,
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
            arbiter: self.arbiter.handle(),
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
        if let Some(lease) = self.lease_done {
            let _ = tokio::time::timeout(FETCHER_STOP_WAIT, lease).await;
        }
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

    /// Stops what runs on its own without waiting for anything, for an owner
    /// that cannot wait (a test harness's `Drop`): the tasks on the shutdown
    /// signal (poll loop, sweeps, alerts, cluster tasks) end, the realtime
    /// arbiter stops with the supervisor and the workers, and the server is
    /// told to stop. Sockets are not closed with 1001 and nothing is
    /// written; [`AppHandle::shutdown`] is the graceful way.
    pub fn abandon(&self) {
        self.state.shutting_down.store(true, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        // The command is sent when `stop` is called; its completion is not
        // waited for.
        drop(self.server.stop(false));
        self.arbiter.stop();
    }
}
