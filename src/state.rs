//! [`AppState`]: what the HTTP handlers share, built once by
//! [`crate::startup`].

use crate::alerts::Alerts;
use crate::auth::TicketStore;
use crate::config::Settings;
use crate::control::ControlPlane;
use crate::db::Db;
use crate::feed::{Demand, IntradayStore, QuoteCache, WorkerRegistry};
use crate::metrics::Metrics;
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
    pub tickets: TicketStore,
    pub sessions: SessionTable,
    /// Built once from the settings; every session starts with a copy.
    pub session_rules: SessionRules,
    pub supervisor: Addr<Supervisor>,
    /// Where REST and admin effects on live sessions go.
    pub control: Arc<dyn ControlPlane>,
    pub metrics: Arc<Metrics>,
    /// The live workers of this instance.
    pub registry: WorkerRegistry,
    /// Where REST asks for symbols nobody watches.
    pub demand: Arc<dyn Demand>,
    /// The latest state of every symbol seen (loaded from the database at
    /// start, kept current by the feed).
    pub quotes: QuoteCache,
    pub intraday: IntradayStore,
    pub upstream: Arc<UpstreamStats>,
    pub provider: &'static str,
    pub started: Instant,
    /// Price alerts: where the API reports alert changes.
    pub alerts: Alerts,
    pub(crate) shutting_down: AtomicBool,
}

impl AppState {
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}
