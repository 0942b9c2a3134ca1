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
//!   actix-web-actors), the bounded decoder of its inbound frames
//!   ([`session::frames`]), its upgrade endpoint, the table of live sessions
//!   that enforces limits and cuts off stalled sockets, and the per-thread
//!   relays that hand a worker's frames to the sessions of their thread.
//! * [`supervisor`]: the registry actor that starts a PriceWorker on a
//!   watchlist's first session and stops it with the last.
//! * [`worker`]: the `PriceWorker` actor, one per watched watchlist: owns its
//!   subscribers, positions and `seq`; serializes each broadcast once.
//! * [`fanout`]: the seam between the fetcher and the workers (the registry of
//!   watched symbols, the latest-quote cache); the place a Redis bus would go.
//! * [`upstream`]: the quote providers (`sim`, `yahoo`) behind one trait, the
//!   one shared fetcher that batches the union of watched symbols, the token
//!   bucket and backoff.
//! * [`protocol`]: the WebSocket messages and close codes.
//!
//! Around it:
//! * [`alerts`]: price alerts: the rules, the evaluator fed by the poller's
//!   rounds, stored events, webhook delivery from the outbox.
//! * [`api`]: REST, admin and metrics handlers, and the one mapping of errors
//!   to JSON responses.
//! * [`auth`]: API tokens, the `Caller` extractor, WebSocket tickets.
//! * [`db`]: diesel over SQLite or PostgreSQL (one binary), migrations, pool,
//!   and every query ([`db::repo`]).
//! * [`domain`]: validated types (`Symbol`, `WatchlistName`, `Quantity`, ...).
//! * [`quote`]: quote data and the wire `Quote` object with P/L.
//! * [`clock`]: the one grid that ticks and heartbeats are placed on.
//! * [`config`], [`startup`], [`cli`], [`demo`], [`dashboard`], [`metrics`].
//! * `testkit` (tests only): fakes for the unit tests of the fetcher, the
//!   supervisor and the worker (a scriptable provider, a recording bus,
//!   fake sessions).
//!
//! ## Errors
//! One error type per layer: [`config::ConfigError`], [`db::DbError`],
//! [`upstream::UpstreamError`], [`api::ApiError`] (the only one mapped to HTTP),
//! [`startup::StartupError`] and [`cli::CliError`].

pub mod access;
pub mod alerts;
pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod dashboard;
pub mod db;
pub mod demo;
pub mod domain;
pub mod feed;
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
