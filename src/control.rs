//! The control plane: effects of a REST or admin call (or of an alert
//! firing) that must reach live sessions and workers, on whichever
//! instance they are.
//!
//! A handler publishes a [`ControlEvent`] on the [`ControlPlane`]; every
//! instance (in single-process mode: this one, at once) hands it to its
//! [`Applier`], which passes it to the local supervisor or session table.
//! The cluster implementation carries events through Redis
//! (`crate::cluster`).

use crate::protocol::{close, Frame};
use crate::session::table::SessionTable;
use crate::supervisor::{
    RefreshWorker, Supervisor, WatchlistAccess, WatchlistChanged, WatchlistDeleted,
};
use crate::worker::ItemView;
use actix::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Something every instance must act on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ControlEvent {
    /// A watchlist's items changed: its sessions get a fresh snapshot.
    ItemsChanged {
        watchlist_id: i64,
        items: Vec<ItemView>,
    },
    /// A watchlist was deleted: its sessions are told (4404 on v1) and its
    /// worker stops.
    Deleted { watchlist_id: i64 },
    /// A watchlist's visibility was set; when private, other users'
    /// subscriptions end (1008 on v1).
    Access {
        watchlist_id: i64,
        owner_id: i64,
        is_public: bool,
    },
    /// An admin kicked a session (1008).
    Kick { session_id: u64 },
    /// An admin asked for a watchlist's symbols to be fetched now.
    Refresh { watchlist_id: i64 },
    /// A frame for every socket of a user (an alert that fired).
    ToUser { user_id: i64, frame: String },
}

/// Where events are published.
pub trait ControlPlane: Send + Sync + 'static {
    fn publish(&self, event: ControlEvent);
}

/// What one instance does with an event.
#[derive(Clone)]
pub struct Applier {
    pub supervisor: Addr<Supervisor>,
    pub sessions: SessionTable,
}

impl Applier {
    pub fn apply(&self, event: ControlEvent) {
        match event {
            ControlEvent::ItemsChanged {
                watchlist_id,
                items,
            } => self.supervisor.do_send(WatchlistChanged {
                watchlist_id,
                items,
            }),
            ControlEvent::Deleted { watchlist_id } => {
                self.supervisor.do_send(WatchlistDeleted { watchlist_id })
            }
            ControlEvent::Access {
                watchlist_id,
                owner_id,
                is_public,
            } => self.supervisor.do_send(WatchlistAccess {
                watchlist_id,
                owner_id,
                is_public,
            }),
            ControlEvent::Kick { session_id } => {
                self.sessions
                    .close(session_id, close::POLICY, "kicked by an admin");
            }
            ControlEvent::Refresh { watchlist_id } => {
                self.supervisor.do_send(RefreshWorker { watchlist_id })
            }
            ControlEvent::ToUser { user_id, frame } => {
                self.sessions.send_to_user(user_id, Frame::from(frame));
            }
        }
    }
}

/// Single process: events apply here, at once.
pub struct LocalControl {
    applier: Applier,
}

impl LocalControl {
    pub fn new(applier: Applier) -> Arc<Self> {
        Arc::new(Self { applier })
    }
}

impl ControlPlane for LocalControl {
    fn publish(&self, event: ControlEvent) {
        self.applier.apply(event);
    }
}
