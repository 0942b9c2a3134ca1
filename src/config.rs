//! Configuration: `config/default.toml` (embedded in the binary), an optional
//! file layered on top, then `QUOTECAST__SECTION__KEY` environment variables.
//! [`Settings::load`] parses and validates everything once, so the rest of the
//! service works with typed values only.

use crate::db::DbUrl;
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The defaults, compiled in so the binary runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// A configuration problem, naming the key that is wrong.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub upstream: UpstreamSettings,
    pub realtime: RealtimeSettings,
    pub limits: LimitSettings,
    pub cluster: ClusterSettings,
    pub alerts: AlertSettings,
}

/// `[cluster]`: several instances sharing one Redis and one PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Empty: single process. `redis://HOST:PORT/DB`: cluster mode.
    pub redis_url: String,
    /// Every Redis key and channel starts with `PREFIX:`.
    pub key_prefix: String,
    /// Empty: generated (host-pid-random).
    pub node_id: String,
    /// How long the poller's lease lives without renewal.
    pub lease_ms: u64,
}

impl ClusterSettings {
    pub fn enabled(&self) -> bool {
        !self.redis_url.is_empty()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    /// Origins (besides the service's own) whose pages may open WebSockets.
    pub allowed_origins: Vec<String>,
    pub workers: usize,
    /// Run every thread of `serve` under `SCHED_BATCH` (see
    /// [`crate::net::batch_scheduling`]).
    pub batch_scheduling: bool,
    pub shutdown_timeout_s: u64,
    pub demo_data: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: DbUrl,
    pub pool_size: u32,
}

/// `upstream.provider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Sim,
    Yahoo,
}

impl std::str::FromStr for ProviderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sim" => Ok(ProviderKind::Sim),
            "yahoo" => Ok(ProviderKind::Yahoo),
            other => Err(format!(
                "unknown provider {other:?} (expected \"sim\" or \"yahoo\")"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for ProviderKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    pub provider: ProviderKind,
    pub base_url: url::Url,
    pub poll_interval_ms: u64,
    pub closed_poll_interval_ms: u64,
    pub batch_size: usize,
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub unknown_recheck_ms: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub rate_limit: RateLimitSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub capacity: f64,
    pub refill_per_sec: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeSettings {
    pub heartbeat_interval_ms: u64,
    pub client_timeout_ms: u64,
    pub max_message_bytes: usize,
    pub session_queue: usize,
    pub socket_send_buffer_bytes: usize,
    pub auth_recheck_interval_ms: u64,
    pub ticket_ttl_ms: u64,
    pub history_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub max_sessions: usize,
    pub max_sessions_per_user: usize,
    pub max_watchlists_per_user: i64,
    pub max_items_per_watchlist: i64,
    pub max_subscriptions_per_session: usize,
    /// WebSocket upgrades a client address may start per second (burst:
    /// twice that); 0: no limit.
    pub connects_per_ip_per_s: u32,
    pub max_alerts_per_user: i64,
}

/// `[alerts]`: price alerts and their webhooks (see `crate::alerts`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    pub webhook_timeout_ms: u64,
    pub webhook_max_attempts: u32,
    pub webhook_backoff_ms: u64,
    pub webhook_max_in_flight: usize,
    pub allow_private_webhooks: bool,
    pub reload_interval_ms: u64,
}

impl Settings {
    /// Defaults, then `file` (if given), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        use config::{Config, Environment, File, FileFormat, Map};
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::new(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        let vars: Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("QUOTECAST__"))
            .collect();
        builder = builder.add_source(
            Environment::with_prefix("QUOTECAST")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("server.allowed_origins")
                .source(Some(vars)),
        );
        let raw = builder
            .build()
            .map_err(|e| ConfigError::new("config", e.to_string()))?;
        // Deserializing through serde_path_to_error names the key of any
        // error, whether it comes from a type mismatch, an unknown field or
        // one of our own parsers (provider, URLs, addresses).
        let settings: Settings = serde_path_to_error::deserialize(raw).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // For an unknown field the path already ends at the field.
            let key = match unknown_field(&inner) {
                Some(field) if path == "." => field,
                _ => path,
            };
            // The config crate appends the key itself to some messages; the
            // line names it first already.
            let text = inner.to_string();
            let message = text.split(" for key `").next().unwrap_or(&text).to_owned();
            ConfigError::new(&key, message)
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value that serde alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("database.pool_size", self.database.pool_size, 1)?;
        let up = &self.upstream;
        if !matches!(up.base_url.scheme(), "http" | "https") {
            return Err(ConfigError::new(
                "upstream.base_url",
                format!("{:?} is not an http(s) URL", up.base_url.as_str()),
            ));
        }
        positive("upstream.poll_interval_ms", up.poll_interval_ms)?;
        positive(
            "upstream.closed_poll_interval_ms",
            up.closed_poll_interval_ms,
        )?;
        positive("upstream.request_timeout_ms", up.request_timeout_ms)?;
        positive("upstream.connect_timeout_ms", up.connect_timeout_ms)?;
        positive("upstream.backoff_base_ms", up.backoff_base_ms)?;
        if up.backoff_max_ms < up.backoff_base_ms {
            return Err(ConfigError::new(
                "upstream.backoff_max_ms",
                "must not be below upstream.backoff_base_ms",
            ));
        }
        if !(1..=20).contains(&up.batch_size) {
            return Err(ConfigError::new(
                "upstream.batch_size",
                format!("{} is outside 1..=20", up.batch_size),
            ));
        }
        let rl = &up.rate_limit;
        if !(rl.capacity.is_finite() && rl.capacity >= 1.0) {
            return Err(ConfigError::new(
                "upstream.rate_limit.capacity",
                "must be a number of at least 1",
            ));
        }
        if !(rl.refill_per_sec.is_finite() && rl.refill_per_sec >= 0.0) {
            return Err(ConfigError::new(
                "upstream.rate_limit.refill_per_sec",
                "must be a non-negative number",
            ));
        }
        let rt = &self.realtime;
        positive("realtime.heartbeat_interval_ms", rt.heartbeat_interval_ms)?;
        positive(
            "realtime.auth_recheck_interval_ms",
            rt.auth_recheck_interval_ms,
        )?;
        if rt.client_timeout_ms <= rt.heartbeat_interval_ms {
            return Err(ConfigError::new(
                "realtime.client_timeout_ms",
                "must be larger than realtime.heartbeat_interval_ms",
            ));
        }
        at_least("realtime.max_message_bytes", rt.max_message_bytes, 64)?;
        at_least("realtime.session_queue", rt.session_queue, 2)?;
        at_least("realtime.history_size", rt.history_size, 1)?;
        let c = &self.cluster;
        if c.enabled() {
            let url = url::Url::parse(&c.redis_url)
                .ok()
                .filter(|u| matches!(u.scheme(), "redis" | "rediss"));
            if url.is_none() {
                return Err(ConfigError::new(
                    "cluster.redis_url",
                    format!("{:?} is not a redis:// URL", c.redis_url),
                ));
            }
            if matches!(self.database.url, DbUrl::Sqlite(_)) {
                return Err(ConfigError::new(
                    "cluster.redis_url",
                    "cluster mode needs a database.url that every instance shares: \
                     postgres://..., not SQLite",
                ));
            }
        }
        if c.key_prefix.is_empty() || c.key_prefix.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                "cluster.key_prefix",
                "must be non-empty, without spaces",
            ));
        }
        if c.node_id.len() > 64
            || c.node_id
                .contains(|ch: char| ch.is_whitespace() || ch == ':')
        {
            return Err(ConfigError::new(
                "cluster.node_id",
                "at most 64 characters, no spaces or ':'",
            ));
        }
        at_least("cluster.lease_ms", c.lease_ms, 200)?;
        let l = &self.limits;
        at_least(
            "limits.max_subscriptions_per_session",
            l.max_subscriptions_per_session,
            1,
        )?;
        at_least(
            "limits.max_watchlists_per_user",
            l.max_watchlists_per_user,
            1,
        )?;
        at_least(
            "limits.max_items_per_watchlist",
            l.max_items_per_watchlist,
            1,
        )?;
        at_least("limits.max_alerts_per_user", l.max_alerts_per_user, 1)?;
        let al = &self.alerts;
        positive("alerts.webhook_timeout_ms", al.webhook_timeout_ms)?;
        positive("alerts.webhook_backoff_ms", al.webhook_backoff_ms)?;
        positive("alerts.reload_interval_ms", al.reload_interval_ms)?;
        at_least("alerts.webhook_max_attempts", al.webhook_max_attempts, 1)?;
        at_least("alerts.webhook_max_in_flight", al.webhook_max_in_flight, 1)?;
        Ok(())
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.upstream.poll_interval_ms)
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.realtime.heartbeat_interval_ms)
    }

    pub fn client_timeout(&self) -> Duration {
        Duration::from_millis(self.realtime.client_timeout_ms)
    }
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(key, "must be greater than 0"));
    }
    Ok(())
}

fn at_least<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    min: T,
) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError::new(key, format!("must be at least {min}")));
    }
    Ok(())
}

/// The field an "unknown field" error names, so the key points at it
/// rather than at its section.
fn unknown_field(e: &config::ConfigError) -> Option<String> {
    let text = e.to_string();
    let rest = text.split("unknown field `").nth(1)?;
    Some(rest.split('`').next()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_with_env(
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = load(&[]).unwrap();
        assert_eq!(s.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(s.database.url.to_string(), "sqlite://data/quotecast.db");
        assert_eq!(s.upstream.provider, ProviderKind::Sim);
        assert_eq!(
            s.upstream.base_url.as_str(),
            "https://query1.finance.yahoo.com/"
        );
        assert_eq!(s.upstream.poll_interval_ms, 5000);
        assert_eq!(s.upstream.closed_poll_interval_ms, 60000);
        assert_eq!(s.upstream.batch_size, 20);
        assert_eq!(s.upstream.rate_limit.capacity, 100.0);
        assert_eq!(s.upstream.rate_limit.refill_per_sec, 0.5);
        assert_eq!(s.realtime.heartbeat_interval_ms, 5000);
        assert_eq!(s.realtime.client_timeout_ms, 15000);
        assert_eq!(s.realtime.max_message_bytes, 4096);
        assert_eq!(s.limits.max_sessions, 100000);
        assert_eq!(s.limits.max_sessions_per_user, 50);
        assert_eq!(s.limits.max_watchlists_per_user, 20);
        assert_eq!(s.limits.max_items_per_watchlist, 100);
        assert_eq!(s.realtime.history_size, 64);
        assert_eq!(s.limits.max_subscriptions_per_session, 20);
        assert_eq!(s.limits.connects_per_ip_per_s, 50);
        assert!(s.server.allowed_origins.is_empty());
        assert_eq!(s.limits.max_alerts_per_user, 100);
        assert_eq!(s.alerts.webhook_timeout_ms, 5000);
        assert_eq!(s.alerts.webhook_max_attempts, 6);
        assert!(!s.alerts.allow_private_webhooks);
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let s = load(&[
            ("QUOTECAST__SERVER__BIND", "0.0.0.0:9000"),
            ("QUOTECAST__UPSTREAM__RATE_LIMIT__CAPACITY", "7"),
            ("QUOTECAST__UPSTREAM__PROVIDER", "yahoo"),
        ])
        .unwrap();
        assert_eq!(s.server.bind.to_string(), "0.0.0.0:9000");
        assert_eq!(s.upstream.rate_limit.capacity, 7.0);
        assert_eq!(s.upstream.provider, ProviderKind::Yahoo);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                "QUOTECAST__UPSTREAM__PROVIDER",
                "bloomberg",
                "upstream.provider",
            ),
            (
                "QUOTECAST__UPSTREAM__BASE_URL",
                "not a url",
                "upstream.base_url",
            ),
            ("QUOTECAST__SERVER__BIND", "localhost", "server.bind"),
            ("QUOTECAST__DATABASE__URL", "mysql://x", "database.url"),
            (
                "QUOTECAST__UPSTREAM__BATCH_SIZE",
                "50",
                "upstream.batch_size",
            ),
            (
                "QUOTECAST__UPSTREAM__POLL_INTERVAL_MS",
                "soon",
                "upstream.poll_interval_ms",
            ),
            (
                "QUOTECAST__ALERTS__WEBHOOK_MAX_ATTEMPTS",
                "0",
                "alerts.webhook_max_attempts",
            ),
            (
                "QUOTECAST__ALERTS__WEBHOOK_TIMEOUT_MS",
                "0",
                "alerts.webhook_timeout_ms",
            ),
            (
                "QUOTECAST__ALERTS__ALLOW_PRIVATE_WEBHOOKS",
                "perhaps",
                "alerts.allow_private_webhooks",
            ),
            (
                "QUOTECAST__LIMITS__MAX_ALERTS_PER_USER",
                "0",
                "limits.max_alerts_per_user",
            ),
        ];
        for (var, value, key) in cases {
            let err = load(&[(var, value)]).unwrap_err();
            assert!(err.key.contains(key), "{var}={value}: {err}");
        }
    }

    #[test]
    fn errors_read_as_one_line_naming_the_key() {
        let err = load(&[("QUOTECAST__UPSTREAM__PROVIDER", "bloomberg")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid configuration: upstream.provider: unknown provider "bloomberg" (expected "sim" or "yahoo")"#
        );
        let err = load(&[("QUOTECAST__SERVER__BINDD", "x")]).unwrap_err();
        assert_eq!(err.key, "server.bindd", "{err}");
        let err = load(&[("QUOTECAST__DATABASE__URL", "sqlite://")]).unwrap_err();
        assert_eq!(err.key, "database.url", "{err}");
        assert!(err.message.contains("needs a file path"), "{err}");
    }

    #[test]
    fn a_file_layers_between_defaults_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.toml");
        std::fs::write(
            &path,
            "[upstream]\npoll_interval_ms = 250\nbatch_size = 5\n",
        )
        .unwrap();
        let s = Settings::load_with_env(
            Some(&path),
            [(
                "QUOTECAST__UPSTREAM__BATCH_SIZE".to_string(),
                "7".to_string(),
            )],
        )
        .unwrap();
        assert_eq!(s.upstream.poll_interval_ms, 250);
        assert_eq!(s.upstream.batch_size, 7);
        let err = Settings::load_with_env(Some(&dir.path().join("missing.toml")), []).unwrap_err();
        assert_eq!(err.key, "--config");
    }
}
