//! The control plane through Redis: an event is applied on this instance at
//! once and appended to the stream `PREFIX:control`; every other instance
//! reads the stream from its last id and applies it too. A reader that loses
//! Redis for a while cannot know what it missed, so when it is back it has
//! every worker reload its watchlist from the database (items, visibility,
//! existence): no session stays wrong for long. Revocations need no event:
//! every instance checks the shared database.
//!
//! Besides [`ControlEvent`]s the stream carries requests for the session
//! lists of every node (the admin's cluster-wide `GET /admin/v1/sessions`),
//! answered into a short-lived list named in the request.

use super::{unless_shutdown, Cluster};
use crate::control::{Applier, ControlEvent, ControlPlane};
use crate::session::table::{SessionInfo, SessionTable};
use crate::supervisor::ReloadAll;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Entries kept in the control stream (approximately).
const STREAM_LEN: usize = 10_000;
/// Bound of the queue of events waiting to be appended; a burst beyond it
/// is dropped with a warning (this instance applied them already; the
/// others correct themselves at their next reload).
const QUEUE: usize = 10_000;

/// What travels on the control stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Message {
    Event {
        event: ControlEvent,
    },
    /// Every node answers with its session rows into the list `reply`.
    ListSessions {
        reply: String,
    },
}

/// A row of a node's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeSessions {
    pub node_id: String,
    pub sessions: Vec<SessionInfo>,
}

pub struct RedisControl {
    cluster: Arc<Cluster>,
    applier: Applier,
    outbox: mpsc::Sender<Message>,
    outbox_rx: std::sync::Mutex<Option<mpsc::Receiver<Message>>>,
}

impl RedisControl {
    pub fn new(cluster: Arc<Cluster>, applier: Applier) -> Arc<Self> {
        let (outbox, rx) = mpsc::channel(QUEUE);
        Arc::new(Self {
            cluster,
            applier,
            outbox,
            outbox_rx: std::sync::Mutex::new(Some(rx)),
        })
    }

    /// The session lists of every live node: asks on the stream, waits (at
    /// most `wait`) for as many answers as there are nodes.
    pub async fn list_sessions(
        &self,
        nodes: usize,
        wait: Duration,
    ) -> Result<Vec<NodeSessions>, super::ClusterError> {
        let reply = self
            .cluster
            .keys
            .key(&format!("reply:{:016x}", rand::random::<u64>()));
        self.send(Message::ListSessions {
            reply: reply.clone(),
        });
        let mine = NodeSessions {
            node_id: self.cluster.node_id.clone(),
            sessions: self.applier.sessions.list(),
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut answers = vec![mine];
        let others = nodes.saturating_sub(1);
        loop {
            let key = reply.clone();
            let got: Vec<String> = self
                .cluster
                .redis
                .run(move |mut c| async move { c.lrange(key, 0, -1).await })
                .await?;
            if got.len() >= others || tokio::time::Instant::now() >= deadline {
                answers.extend(got.iter().filter_map(|g| serde_json::from_str(g).ok()));
                return Ok(answers);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn send(&self, msg: Message) {
        if self.outbox.try_send(msg).is_err() {
            log::warn!("control plane: outbox full, an event was not sent to other nodes");
        }
    }

    /// Appends queued messages to the stream until `shutdown`.
    pub async fn run_writer(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let Some(mut rx) = self.outbox_rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let key = self.cluster.keys.key("control");
        loop {
            let Some(Some(msg)) = unless_shutdown(&mut shutdown, rx.recv()).await else {
                break;
            };
            let Ok(json) = serde_json::to_string(&msg) else {
                continue;
            };
            let mut conn = self.cluster.redis.conn();
            let res: redis::RedisResult<String> = redis::cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_LEN)
                .arg("*")
                .arg("node")
                .arg(&self.cluster.node_id)
                .arg("msg")
                .arg(json)
                .query_async(&mut conn)
                .await;
            match res {
                Ok(_) => self.cluster.metrics.bus_out.inc(),
                Err(e) => {
                    self.cluster.metrics.bus_errors.inc();
                    log::warn!("control plane: could not send an event: {e}");
                }
            }
        }
    }

    /// Reads other nodes' messages until `shutdown`.
    pub async fn run_reader(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let key = self.cluster.keys.key("control");
        let block = Duration::from_millis(1000);
        // Only what is published from now on concerns this node: the id of
        // the newest entry when the reader first connects (never `$` in the
        // read itself, which would skip entries added between two reads).
        let mut last: Option<String> = None;
        let mut conn = None;
        let mut lost = false;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let step = async {
                if conn.is_none() {
                    conn = Some(self.cluster.dedicated(block).await?);
                }
                let c = conn.as_mut().expect("connected above");
                if last.is_none() {
                    let newest: redis::streams::StreamRangeReply =
                        c.xrevrange_count(&key, "+", "-", 1).await?;
                    last = Some(newest.ids.first().map_or("0-0".into(), |e| e.id.clone()));
                }
                let from = last.clone().expect("set above");
                let opts = StreamReadOptions::default()
                    .block(block.as_millis() as usize)
                    .count(100);
                let reply: Option<StreamReadReply> =
                    c.xread_options(&[&key], &[&from], &opts).await?;
                Ok::<_, redis::RedisError>(reply)
            };
            let Some(res) = unless_shutdown(&mut shutdown, step).await else {
                break;
            };
            match res {
                Ok(reply) => {
                    if lost {
                        lost = false;
                        log::info!("control plane: back; reloading every worker");
                        self.applier.supervisor.do_send(ReloadAll);
                    }
                    for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                        last = Some(entry.id.clone());
                        let node: Option<String> = entry.get("node");
                        if node.as_deref() == Some(self.cluster.node_id.as_str()) {
                            continue;
                        }
                        let Some(msg) = entry
                            .get::<String>("msg")
                            .and_then(|m| serde_json::from_str::<Message>(&m).ok())
                        else {
                            continue;
                        };
                        self.cluster.metrics.bus_in.inc();
                        self.handle(msg).await;
                    }
                }
                Err(e) => {
                    conn = None;
                    lost = true;
                    self.cluster.metrics.bus_errors.inc();
                    log::debug!("control plane: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    async fn handle(&self, msg: Message) {
        match msg {
            Message::Event { event } => self.applier.apply(event),
            Message::ListSessions { reply } => {
                let rows = NodeSessions {
                    node_id: self.cluster.node_id.clone(),
                    sessions: self.applier.sessions.list(),
                };
                let Ok(json) = serde_json::to_string(&rows) else {
                    return;
                };
                let mut conn = self.cluster.redis.conn();
                let res: redis::RedisResult<()> = redis::pipe()
                    .rpush(&reply, json)
                    .pexpire(&reply, 10_000)
                    .query_async(&mut conn)
                    .await;
                if let Err(e) = res {
                    log::debug!("control plane: could not answer a session list: {e}");
                }
            }
        }
    }

    pub fn sessions(&self) -> &SessionTable {
        &self.applier.sessions
    }
}

impl ControlPlane for RedisControl {
    fn publish(&self, event: ControlEvent) {
        // Here at once; elsewhere as soon as they read it.
        self.applier.apply(event.clone());
        self.send(Message::Event { event });
    }
}
