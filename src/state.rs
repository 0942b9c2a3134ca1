//! [`AppState`]: what the HTTP handlers share, built once by
//! [`crate::startup`].

use crate::alerts::Alerts;
use crate::auth::Tickets;
use crate::cluster::control::RedisControl;
use crate::cluster::lease::Lease;
use crate::cluster::nodes::Nodes;
use crate::cluster::Cluster;
use crate::config::Settings;
use crate::control::ControlPlane;
use crate::db::Db;
use crate::feed::{Demand, IntradayStore, PinnedSymbols, QuoteCache, WorkerRegistry};
use crate::memory::CrowdGone;
use crate::metrics::Metrics;
use crate::session::admission::ConnectLimiter;
use crate::session::lookups::ConnectLookups;
use crate::session::table::SessionTable;
use crate::session::SessionRules;
use crate::supervisor::Supervisor;
use crate::upstream::fetcher::UpstreamStats;
use actix::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: Db,
    /// This instance's name (`cluster.node_id`, or generated).
    pub node_id: String,
    pub tickets: Arc<dyn Tickets>,
    pub sessions: SessionTable,
    /// Built once from the settings; every session starts with a copy.
    pub session_rules: SessionRules,
    /// The upgrades' reads of tokens and watchlists, several to a trip.
    pub lookups: Arc<ConnectLookups>,
    /// Per-address connect budgets of the WebSocket endpoints.
    pub connects: ConnectLimiter,
    pub supervisor: Addr<Supervisor>,
    /// Where REST and admin effects on live sessions go.
    pub control: Arc<dyn ControlPlane>,
    /// Cluster mode's parts the handlers ask directly (admin views,
    /// cluster-wide limits); `None` in a single process.
    pub cluster: Option<ClusterParts>,
    pub metrics: Arc<Metrics>,
    /// The live workers of this instance.
    pub registry: WorkerRegistry,
    /// Where REST asks for symbols nobody watches.
    pub demand: Arc<dyn Demand>,
    /// Symbols fetched whether or not anyone watches them (alerts).
    pub pinned: PinnedSymbols,
    /// The latest state of every symbol seen (loaded from the database at
    /// start, kept current by the feed).
    pub quotes: QuoteCache,
    pub intraday: IntradayStore,
    pub upstream: Arc<UpstreamStats>,
    pub provider: &'static str,
    pub started: Instant,
    /// Price alerts: where the API reports alert changes.
    pub alerts: Alerts,
    /// Told by the sweeps when a crowd of sessions has gone.
    pub crowd_gone: CrowdGone,
    pub(crate) shutting_down: AtomicBool,
}

/// What the HTTP handlers use of cluster mode.
pub struct ClusterParts {
    pub cluster: Arc<Cluster>,
    pub lease: Arc<Lease>,
    pub nodes: Arc<Nodes>,
    pub control: Arc<RedisControl>,
}

impl AppState {
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}
