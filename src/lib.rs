//! # quotecast
//!
//! A real-time stock quote service: dashboards keep watchlists, and while
//! anyone has a watchlist open the service polls an upstream quote source and
//! pushes changed prices to every open WebSocket on it. The external contract
//! is `SPEC.md` (shared with other teams); `README.md` documents how to run it.
//!
//! ## Layout
//!
//! The realtime path, from the socket inwards:
//! * [`session`]: the `WsSession` actor, one per WebSocket (the only user of
//!   actix-web-actors, for the handshake), for both endpoints (one watchlist
//!   per socket, or many by subscription); the bounded decoder of its inbound
//!   frames ([`session::frames`]) and the queue of framed bytes its
//!   connection writes ([`session::outbox`]); the upgraded socket itself,
//!   read and written without actix-http's h1 dispatcher after the 101
//!   ([`session::transport`]); the upgrade endpoints
//!   ([`session::endpoint`]) and what is checked before them
//!   ([`session::admission`]: origins, connect rates) and their database
//!   reads, several upgrades to a trip ([`session::lookups`]); the table of
//!   live sessions that enforces limits and cuts off stalled sockets; and the
//!   per-thread relays that hand a worker's frames to the sessions of their
//!   thread.
//! * [`supervisor`]: the registry actor that starts a PriceWorker on a
//!   watchlist's first subscription and stops it with the last.
//! * [`worker`]: the `PriceWorker` actor, one per watched watchlist: owns its
//!   subscribers, positions, totals, `seq` and the history a reconnecting
//!   client recovers from; serializes each message once.
//! * [`feed`]: how quotes get from the poller to the workers, through four
//!   seams — [`feed::Demand`] (what to fetch), [`feed::QuoteBus`] (how a
//!   round travels), [`feed::RateLimiter`] (the request budget),
//!   [`feed::PollerRole`] (whether this instance polls) — with their
//!   single-process implementations ([`feed::local`]), the latest-quote cache
//!   and the intraday series.
//! * [`upstream`]: the quote providers (`sim`, `yahoo`) behind one trait, and
//!   the poll loop ([`upstream::fetcher`]) that batches the wanted symbols
//!   through the seams, with backoff.
//! * [`cluster`]: the Redis implementations of the seams and of the control
//!   plane, tickets and session limits, for several instances acting as one.
//! * [`control`]: the control plane: REST and admin effects on live
//!   sessions, applied on every instance.
//! * [`protocol`]: the WebSocket messages and close codes.
//!
//! Around it:
//! * [`alerts`]: price alerts: the rules, the evaluator fed by the poller's
//!   rounds, stored events, webhook delivery from the outbox.
//! * [`api`]: REST, admin and metrics handlers, and the one mapping of errors
//!   to JSON responses.
//! * [`auth`]: API tokens and WebSocket tickets; [`access`]: who may use a
//!   watchlist (one rule for REST, tickets and sockets).
//! * [`db`]: diesel over SQLite or PostgreSQL (one binary), migrations, pool,
//!   and every query ([`db::repo`]); [`quote_store`]: the latest quotes kept
//!   in it across restarts.
//! * [`domain`]: validated types (`Symbol`, `WatchlistName`, `Quantity`, ...).
//! * [`quote`]: quote data, the wire `Quote` object with P/L, and totals.
//! * [`clock`]: the one wall-clock grid that ticks and heartbeats are placed on.
//! * [`startup`] wires it all; [`state`] is what the handlers share;
//!   [`sweeps`] is periodic housekeeping ([`memory`]: giving a spike's
//!   memory back); [`net`] the few socket calls actix
//!   does not make.
//! * [`config`], [`cli`], [`demo`], [`dashboard`], [`metrics`].
//! * [`logging`]: env_logger, with actix-http's per-connection errors (a
//!   client's malformed request) rate-limited, so no client sets the log's pace.
//! * `testkit` (tests only): fakes for the unit tests of the fetcher, the
//!   supervisor and the worker (a scriptable provider, a recording bus,
//!   fake sessions).
//!
//! ## Errors
//! One error type per layer: [`config::ConfigError`], [`db::DbError`] (speaks
//! only of the database), [`auth::AuthError`], [`access::AccessError`],
//! [`upstream::UpstreamError`], [`feed::BusError`],
//! [`cluster::ClusterError`], [`api::ApiError`] (the only one mapped to
//! HTTP), [`startup::StartupError`] and [`cli::CliError`].

pub mod access;
pub mod alerts;
pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod control;
pub mod dashboard;
pub mod db;
pub mod demo;
pub mod domain;
pub mod feed;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod quote;
pub mod quote_store;
pub mod session;
pub mod startup;
pub mod state;
pub mod supervisor;
pub mod sweeps;
#[cfg(test)]
pub(crate) mod testkit;
pub mod upstream;
pub mod worker;
