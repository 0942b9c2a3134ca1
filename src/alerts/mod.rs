//! Price alerts: rules a user sets on a symbol's price, evaluated on every
//! round the poller publishes, each firing stored as an event before it is
//! delivered to the owner's sockets and webhook.
//!
//! * [`rule`]: the validated parts of an alert and the decision, from one
//!   tick's sample, to fire or re-arm (the semantics are documented there).
//! * [`engine`]: the evaluator task, which owns the enabled alerts in memory
//!   and stores every decision (event and new state in one transaction,
//!   conditional on the version it read) before sending anything.
//! * [`webhook`]: the delivery task, which works the outbox (pending events
//!   in the database) with signed, bounded, retried POSTs.
//! * [`address`]: where webhook URLs may point.
//! * [`event`]: an event on the wire (socket frame, webhook body, REST).
//!
//! Who owns what: [`start`] spawns both tasks on the realtime arbiter and
//! returns the [`Alerts`] handle (kept in `AppState`, used by the REST
//! handlers in `crate::api::alerts`) and the fetcher's round observer. Both
//! tasks end when the shutdown signal fires; [`Alerts::stopped`] resolves
//! once they have, which `crate::startup` waits for before stopping the
//! arbiter.

pub mod address;
pub mod engine;
pub mod event;
pub mod rule;
pub mod webhook;

use crate::config::Settings;
use crate::control::ControlPlane;
use crate::db::models::Alert;
use crate::db::Db;
use crate::feed::{PinnedSymbols, RoundObserver};
use crate::metrics::Metrics;
use engine::{Command, Engine, EngineDeps, Progress, RoundFeed};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use webhook::{Deliverer, DeliveryConfig};

/// Held by each alert task while it runs; the count of live ones is what
/// [`Alerts::tasks_running`] reports.
pub struct TaskGuard {
    alive: Arc<watch::Sender<usize>>,
}

impl TaskGuard {
    fn new(alive: &Arc<watch::Sender<usize>>) -> Self {
        alive.send_modify(|n| *n += 1);
        Self {
            alive: alive.clone(),
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.alive.send_modify(|n| *n -= 1);
    }
}

/// The handle the API holds: tells the evaluator of changes, and reports
/// on the tasks. Cheap to clone.
#[derive(Clone)]
pub struct Alerts {
    commands: mpsc::Sender<Command>,
    progress: Arc<Progress>,
    alive: Arc<watch::Sender<usize>>,
}

impl Alerts {
    /// An alert was created or changed (as now stored).
    pub fn saved(&self, alert: Alert) {
        self.tell(Command::Saved(Box::new(alert)));
    }

    pub fn deleted(&self, id: i64) {
        self.tell(Command::Deleted(id));
    }

    /// Best effort: what does not fit (or comes after shutdown) is in the
    /// database, and the evaluator's next reload reads it.
    fn tell(&self, cmd: Command) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.commands.try_send(cmd) {
            log::debug!("alert change queue full; the next reload picks it up");
        }
    }

    /// The tick of the last round handed to the evaluator.
    pub fn fed_tick(&self) -> u64 {
        self.progress.fed.load(Ordering::Relaxed)
    }

    /// The tick of the last round the evaluator has fully handled
    /// (evaluated, decisions stored, events sent); rounds are handled in
    /// the order they are fed.
    pub fn handled_tick(&self) -> u64 {
        self.progress.handled.load(Ordering::Relaxed)
    }

    /// Alert tasks (evaluator, deliverer) still running.
    pub fn tasks_running(&self) -> usize {
        *self.alive.borrow()
    }

    /// Resolves once every alert task has ended.
    pub async fn stopped(&self) {
        let mut rx = self.alive.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// What the alert tasks need from the rest of the service.
pub struct AlertDeps {
    pub db: Db,
    pub settings: Arc<Settings>,
    /// Where alert symbols join the poller's demand.
    pub pinned: PinnedSymbols,
    /// Where events go to the owner's sockets.
    pub control: Arc<dyn ControlPlane>,
    pub metrics: Arc<Metrics>,
}

/// The started alert tasks: the handle, and the observer to give the
/// fetcher.
pub struct Started {
    pub alerts: Alerts,
    pub observer: Arc<dyn RoundObserver>,
}

/// Spawns the evaluator and the webhook deliverer on `arbiter`, both
/// running until `shutdown` fires.
pub fn start(
    deps: AlertDeps,
    arbiter: &actix::ArbiterHandle,
    shutdown: watch::Receiver<bool>,
) -> Result<Started, reqwest::Error> {
    let alive = Arc::new(watch::channel(0usize).0);
    let progress = Arc::new(Progress::default());
    let outbox = Arc::new(Notify::new());
    let cfg = &deps.settings.alerts;
    let deliverer = Deliverer::new(
        deps.db.clone(),
        DeliveryConfig::from_settings(cfg),
        outbox.clone(),
        deps.metrics.clone(),
    )?;
    let (round_tx, round_rx) = mpsc::channel(engine::ROUND_QUEUE);
    let (cmd_tx, cmd_rx) = mpsc::channel(engine::COMMAND_QUEUE);
    let engine = Engine::new(EngineDeps {
        db: deps.db,
        control: deps.control,
        pinned: deps.pinned,
        metrics: deps.metrics.clone(),
        outbox,
        progress: progress.clone(),
        reload_interval: Duration::from_millis(cfg.reload_interval_ms),
    });
    let guard = TaskGuard::new(&alive);
    arbiter.spawn(engine.run(round_rx, cmd_rx, shutdown.clone(), guard));
    let guard = TaskGuard::new(&alive);
    arbiter.spawn(deliverer.run(shutdown, guard));
    Ok(Started {
        alerts: Alerts {
            commands: cmd_tx,
            progress: progress.clone(),
            alive,
        },
        observer: Arc::new(RoundFeed::new(round_tx, deps.metrics, progress)),
    })
}
