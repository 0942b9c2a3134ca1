//! The process's logger: env_logger (`RUST_LOG`, default `info`), with the
//! per-connection noise of actix-http kept in proportion.
//!
//! actix-http's HTTP/1 dispatcher logs one ERROR line, `stream error: ...`,
//! for every connection that ends in an error: a request that does not parse
//! (`printf 'GARBAGE\r\n\r\n' | nc`), a head over the size limit, a peer
//! that resets the connection. Every one of those is the client's doing, so
//! at ERROR a client would decide how fast the log grows. [`ClientNoise`]
//! lets the first such line of each [`NOISE_WINDOW`] through as a WARN (an
//! operator still learns that it happens) and logs the rest at DEBUG (so
//! `RUST_LOG=actix_http::h1::dispatcher=debug` still shows each one). The
//! server's own errors in that module (an upgrade handler failing, a
//! response body erroring) are logged on lines of their own, which pass
//! unchanged.

use log::{Level, Log, Metadata, Record};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where actix-http's HTTP/1 connection errors are logged from.
pub const DISPATCHER_TARGET: &str = "actix_http::h1::dispatcher";

/// How the dispatcher's per-connection error line starts.
const STREAM_ERROR: &str = "stream error: ";

/// At most one connection error a window is logged at WARN.
pub const NOISE_WINDOW: Duration = Duration::from_secs(60);

/// Installs the logger for the process. Call once, first thing in `main`.
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(ClientNoise::new(inner))).is_ok() {
        log::set_max_level(max);
    }
}

/// A logger that passes everything to `inner` except the dispatcher's
/// per-connection errors, which it rate-limits to one WARN a window and
/// demotes to DEBUG otherwise.
pub struct ClientNoise<L> {
    inner: L,
    /// When the last connection error was let through at WARN.
    last_warn: Mutex<Option<Instant>>,
}

impl<L: Log> ClientNoise<L> {
    pub fn new(inner: L) -> Self {
        Self {
            inner,
            last_warn: Mutex::new(None),
        }
    }

    /// True when this connection error is the first of its window.
    fn first_in_window(&self) -> bool {
        let now = Instant::now();
        let mut last = self
            .last_warn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *last {
            Some(at) if now.duration_since(at) < NOISE_WINDOW => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }

    fn is_connection_error(record: &Record) -> bool {
        record.target() == DISPATCHER_TARGET
            && record.level() == Level::Error
            && record.args().to_string().starts_with(STREAM_ERROR)
    }

    /// `record` again at `level`, with `args` as its message.
    fn relog(&self, record: &Record, level: Level, args: std::fmt::Arguments) {
        let metadata = Metadata::builder()
            .level(level)
            .target(record.target())
            .build();
        if !self.inner.enabled(&metadata) {
            return;
        }
        self.inner.log(
            &Record::builder()
                .metadata(metadata)
                .args(args)
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }
}

impl<L: Log> Log for ClientNoise<L> {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !Self::is_connection_error(record) {
            return self.inner.log(record);
        }
        if self.first_in_window() {
            self.relog(
                record,
                Level::Warn,
                format_args!(
                    "{} (a client's malformed request or broken connection; more in the next {} s are logged at DEBUG)",
                    record.args(),
                    NOISE_WINDOW.as_secs()
                ),
            );
        } else {
            self.relog(record, Level::Debug, *record.args());
        }
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Level, target and message of each record seen.
    type Seen = Arc<Mutex<Vec<(Level, String, String)>>>;

    /// Keeps every record it is given that its level lets through.
    struct Recorder {
        max: Level,
        seen: Seen,
    }

    impl Log for Recorder {
        fn enabled(&self, m: &Metadata) -> bool {
            m.level() <= self.max
        }
        fn log(&self, r: &Record) {
            if self.enabled(r.metadata()) {
                self.seen.lock().unwrap().push((
                    r.level(),
                    r.target().to_owned(),
                    r.args().to_string(),
                ));
            }
        }
        fn flush(&self) {}
    }

    fn logger(max: Level) -> (ClientNoise<Recorder>, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = Recorder {
            max,
            seen: seen.clone(),
        };
        (ClientNoise::new(rec), seen)
    }

    fn emit(l: &impl Log, level: Level, target: &str, msg: &str) {
        l.log(
            &Record::builder()
                .level(level)
                .target(target)
                .args(format_args!("{msg}"))
                .build(),
        );
    }

    /// What a logger at `max` lets through of five connection errors in a
    /// row.
    fn five_connection_errors(max: Level, msg: &str) -> Seen {
        let (l, seen) = logger(max);
        for _ in 0..5 {
            emit(&l, Level::Error, DISPATCHER_TARGET, msg);
        }
        seen
    }

    #[test]
    fn connection_errors_warn_once_a_window_and_debug_after() {
        let seen = five_connection_errors(
            Level::Debug,
            "stream error: request parse error: invalid Header provided",
        );
        let seen = seen.lock().unwrap();
        let levels: Vec<Level> = seen.iter().map(|s| s.0).collect();
        assert_eq!(
            levels,
            [
                Level::Warn,
                Level::Debug,
                Level::Debug,
                Level::Debug,
                Level::Debug
            ]
        );
        assert!(
            seen[0].2.starts_with("stream error: request parse error"),
            "{seen:?}"
        );
        assert!(seen.iter().all(|s| s.1 == DISPATCHER_TARGET));
    }

    #[test]
    fn at_info_only_the_first_connection_error_shows() {
        let seen = five_connection_errors(Level::Info, "stream error: I/O error: reset");
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn other_errors_pass_unchanged() {
        let (l, seen) = logger(Level::Info);
        emit(
            &l,
            Level::Error,
            DISPATCHER_TARGET,
            "Upgrade handler error: boom",
        );
        emit(
            &l,
            Level::Error,
            "quotecast::api",
            "stream error: not actix's",
        );
        emit(
            &l,
            Level::Error,
            "quotecast::api",
            "stream error: not actix's",
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|s| s.0 == Level::Error), "{seen:?}");
    }
}
