//! Configuration: `config/default.toml` (embedded in the binary), an optional
//! file layered on top, then `QUOTECAST__SECTION__KEY` environment variables.
//! [`Settings::load`] parses and validates everything once, so the rest of the
//! service works with typed values only.

use serde::Deserialize;
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: String,
    pub workers: usize,
    pub shutdown_timeout_s: u64,
    pub demo_data: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub pool_size: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Sim,
    Yahoo,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    pub provider: String,
    pub base_url: String,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub max_sessions: usize,
    pub max_sessions_per_user: usize,
    pub max_watchlists_per_user: i64,
    pub max_items_per_watchlist: i64,
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
                .source(Some(vars)),
        );
        let raw = builder
            .build()
            .map_err(|e| ConfigError::new("config", e.to_string()))?;
        let settings: Settings = raw
            .try_deserialize()
            .map_err(|e| ConfigError::new(&error_key(&e), e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value that serde alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.bind_addr()?;
        self.provider()?;
        crate::db::DbUrl::parse(&self.database.url)?;
        if self.database.pool_size == 0 {
            return Err(ConfigError::new("database.pool_size", "must be at least 1"));
        }
        let up = &self.upstream;
        url::Url::parse(&up.base_url)
            .ok()
            .filter(|u| u.scheme() == "http" || u.scheme() == "https")
            .ok_or_else(|| {
                ConfigError::new(
                    "upstream.base_url",
                    format!("{:?} is not an http(s) URL", up.base_url),
                )
            })?;
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
        if rt.max_message_bytes < 64 {
            return Err(ConfigError::new(
                "realtime.max_message_bytes",
                "must be at least 64",
            ));
        }
        if rt.session_queue < 2 {
            return Err(ConfigError::new(
                "realtime.session_queue",
                "must be at least 2",
            ));
        }
        let l = &self.limits;
        if l.max_watchlists_per_user < 1 {
            return Err(ConfigError::new(
                "limits.max_watchlists_per_user",
                "must be at least 1",
            ));
        }
        if l.max_items_per_watchlist < 1 {
            return Err(ConfigError::new(
                "limits.max_items_per_watchlist",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.bind.parse().map_err(|_| {
            ConfigError::new(
                "server.bind",
                format!(
                    "{:?} is not an address like 127.0.0.1:8080",
                    self.server.bind
                ),
            )
        })
    }

    pub fn provider(&self) -> Result<ProviderKind, ConfigError> {
        match self.upstream.provider.as_str() {
            "sim" => Ok(ProviderKind::Sim),
            "yahoo" => Ok(ProviderKind::Yahoo),
            other => Err(ConfigError::new(
                "upstream.provider",
                format!("unknown provider {other:?} (expected \"sim\" or \"yahoo\")"),
            )),
        }
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

/// Best effort at naming the key of a deserialization error; the config crate
/// puts it in the message as `for key `x.y``, or names an unknown field.
fn error_key(e: &config::ConfigError) -> String {
    let text = e.to_string();
    if let Some(rest) = text.split("for key `").nth(1) {
        if let Some(key) = rest.split('`').next() {
            return key.to_owned();
        }
    }
    if let Some(rest) = text.split("unknown field `").nth(1) {
        if let Some(key) = rest.split('`').next() {
            return key.to_owned();
        }
    }
    "config".to_owned()
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
        assert_eq!(s.server.bind, "127.0.0.1:8080");
        assert_eq!(s.database.url, "sqlite://data/quotecast.db");
        assert_eq!(s.provider().unwrap(), ProviderKind::Sim);
        assert_eq!(s.upstream.base_url, "https://query1.finance.yahoo.com");
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
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let s = load(&[
            ("QUOTECAST__SERVER__BIND", "0.0.0.0:9000"),
            ("QUOTECAST__UPSTREAM__RATE_LIMIT__CAPACITY", "7"),
            ("QUOTECAST__UPSTREAM__PROVIDER", "yahoo"),
        ])
        .unwrap();
        assert_eq!(s.server.bind, "0.0.0.0:9000");
        assert_eq!(s.upstream.rate_limit.capacity, 7.0);
        assert_eq!(s.provider().unwrap(), ProviderKind::Yahoo);
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
        ];
        for (var, value, key) in cases {
            let err = load(&[(var, value)]).unwrap_err();
            assert!(err.key.contains(key), "{var}={value}: {err}");
        }
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
