//! Cluster tests' harness: real `quotecast` processes (the binary cargo
//! built) sharing one scratch PostgreSQL database and one Redis, each test
//! with its own key prefix; a private `redis-server` for tests that must
//! stop Redis; signals (SIGKILL, SIGTERM, SIGSTOP, SIGCONT) to processes.
//!
//! Redis at 127.0.0.1:6379 (`QUOTECAST_TEST_REDIS_URL` overrides) and
//! PostgreSQL are required with `QUOTECAST_REQUIRE_REDIS=1` /
//! `QUOTECAST_REQUIRE_PG=1` (as in CI); otherwise a missing one skips the
//! test, loudly.

use super::{connect_ws, Api, Backend, Http, TestDb, Ws, DEADLINE, POLL};
use quotecast::db::{Db, DbUrl};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REDIS_DEFAULT: &str = "redis://127.0.0.1:6379/0";

/// The shared Redis, if one answers; skips (or fails, when required).
pub fn redis_url(test: &str) -> Option<String> {
    let url = std::env::var("QUOTECAST_TEST_REDIS_URL").unwrap_or_else(|_| REDIS_DEFAULT.into());
    let addr = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_owned();
    match std::net::TcpStream::connect_timeout(
        &addr.parse().expect("redis address"),
        Duration::from_secs(1),
    ) {
        Ok(_) => Some(url),
        Err(e) => {
            super::skip_unless_required(
                "QUOTECAST_REQUIRE_REDIS",
                &format!("{test}: no Redis at {url} ({e})"),
                "set QUOTECAST_TEST_REDIS_URL",
            );
            None
        }
    }
}

/// A cluster under test: its database, Redis, key prefix and an admin.
pub struct Cluster {
    pub db_url: String,
    pub redis_url: String,
    pub prefix: String,
    pub admin_token: String,
    pub db: Db,
    /// Settings every node of this test gets (`QUOTECAST__...` pairs).
    pub env: Vec<(String, String)>,
    _db: TestDb,
}

impl Cluster {
    /// A fresh PostgreSQL database (migrated, with an admin) and a key
    /// prefix of its own; `None` when PostgreSQL or Redis is missing.
    pub fn new(test: &str) -> Option<Cluster> {
        Self::with_redis(test, redis_url(test)?)
    }

    pub fn with_redis(test: &str, redis_url: String) -> Option<Cluster> {
        let backend = Backend::postgres(test)?;
        let (db_holder, db_url) = TestDb::create(&backend);
        let db = Db::connect(&db_url.parse::<DbUrl>().expect("db url"), 2).expect("database");
        db.migrate().expect("migrations");
        let admin_token = quotecast::cli::add_user(&db, "admin", true)
            .expect("admin user")
            .2;
        let prefix = format!("qct{}", rand::random::<u32>());
        let env = vec![
            ("QUOTECAST__SERVER__BIND", "127.0.0.1:0"),
            ("QUOTECAST__SERVER__DEMO_DATA", "false"),
            ("QUOTECAST__SERVER__WORKERS", "2"),
            ("QUOTECAST__SERVER__SHUTDOWN_TIMEOUT_S", "2"),
            ("QUOTECAST__DATABASE__POOL_SIZE", "4"),
            ("QUOTECAST__UPSTREAM__POLL_INTERVAL_MS", "200"),
            ("QUOTECAST__CLUSTER__LEASE_MS", "1000"),
            ("QUOTECAST__REALTIME__HEARTBEAT_INTERVAL_MS", "1000"),
            ("QUOTECAST__REALTIME__CLIENT_TIMEOUT_MS", "30000"),
            ("QUOTECAST__REALTIME__AUTH_RECHECK_INTERVAL_MS", "200"),
            ("QUOTECAST__LIMITS__CONNECTS_PER_IP_PER_S", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain([
            ("QUOTECAST__DATABASE__URL".to_owned(), db_url.clone()),
            (
                "QUOTECAST__CLUSTER__REDIS_URL".to_owned(),
                redis_url.clone(),
            ),
            ("QUOTECAST__CLUSTER__KEY_PREFIX".to_owned(), prefix.clone()),
        ])
        .collect();
        Some(Cluster {
            db_url,
            redis_url,
            prefix,
            admin_token,
            db,
            env,
            _db: db_holder,
        })
    }

    /// Points every node at a fake Yahoo (the upstream whose requests the
    /// tests count).
    pub fn with_fake(mut self, base_url: &str) -> Self {
        self.set("QUOTECAST__UPSTREAM__PROVIDER", "yahoo");
        self.set("QUOTECAST__UPSTREAM__BASE_URL", base_url);
        self.set("QUOTECAST__UPSTREAM__REQUEST_TIMEOUT_MS", "1000");
        self.set("QUOTECAST__UPSTREAM__BACKOFF_BASE_MS", "100");
        self.set("QUOTECAST__UPSTREAM__BACKOFF_MAX_MS", "500");
        self
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// A user (created as `quotecast user add` does) and its token.
    pub fn user(&self, name: &str) -> String {
        quotecast::cli::add_user(&self.db, name, false)
            .expect("user")
            .2
    }

    /// Starts a node named `name`; waits until it listens.
    pub fn node(&self, name: &str) -> Node {
        Node::start(name, &self.env, &self.admin_token)
    }

    /// Redis at this cluster's URL (for reading its keys in tests).
    pub fn redis(&self) -> redis::Client {
        redis::Client::open(self.redis_url.as_str()).expect("redis client")
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }
}

/// One `quotecast` process.
pub struct Node {
    pub name: String,
    child: Option<Child>,
    pub addr: SocketAddr,
    pub http: Http,
    /// Everything it wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
}

impl Node {
    pub fn start(name: &str, env: &[(String, String)], admin_token: &str) -> Node {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quotecast"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,actix_server=warn")
            .env("QUOTECAST__CLUSTER__NODE_ID", name)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start quotecast");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.trim().to_owned());
                    }
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr: SocketAddr = match rx.recv_timeout(DEADLINE) {
            Ok(a) => a.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                panic!("node {name} did not start:\n{}", log.lock().unwrap());
            }
        };
        Node {
            name: name.to_owned(),
            child: Some(child),
            addr,
            http: Http {
                base: format!("http://{addr}"),
                // A node that stops answering (paused, killed) fails the
                // request rather than hang the test.
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .expect("http client"),
                admin_token: admin_token.to_owned(),
            },
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill {sig}");
    }

    /// Waits for the process to end; its exit code (None: by a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let end = Instant::now() + limit;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status.code();
            }
            assert!(Instant::now() < end, "{} did not exit", self.name);
            std::thread::sleep(POLL);
        }
    }

    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait_exit(DEADLINE);
    }

    pub async fn ws(&self, watchlist_id: i64, token: &str) -> Ws {
        let url = format!("ws://{}/ws/v1/watchlists/{watchlist_id}", self.addr);
        connect_ws(&url, Some(token))
            .await
            .unwrap_or_else(|(s, b)| panic!("{}: upgrade refused: {s} {b}", self.name))
    }

    /// Opens a WebSocket and reads its first message, the snapshot.
    pub async fn open(&self, watchlist_id: i64, token: &str) -> (Ws, Value) {
        let mut ws = self.ws(watchlist_id, token).await;
        let snapshot = ws.wait_type("snapshot").await;
        (ws, snapshot)
    }

    pub async fn try_ws(
        &self,
        path_and_query: &str,
        token: Option<&str>,
    ) -> Result<Ws, (u16, Value)> {
        connect_ws(&format!("ws://{}{path_and_query}", self.addr), token).await
    }

    /// One unlabelled series of its `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap();
        super::metric_in(&text, name)
    }

    pub async fn is_poller(&self) -> bool {
        self.metric("quotecast_cluster_poller").await == 1.0
    }
}

/// Which node polls, once exactly one does.
pub async fn the_poller(nodes: &[Node]) -> usize {
    super::eventually("exactly one poller", async || {
        let mut pollers = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            if n.is_poller().await {
                pollers.push(i);
            }
        }
        (pollers.len() == 1).then(|| pollers[0])
    })
    .await
}

impl Api for Node {
    fn http(&self) -> &Http {
        &self.http
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `redis-server` of the test's own, on a free port, that the test may
/// stop and start again (it keeps nothing on disk).
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut r = PrivateRedis { port, child: None };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.child = Some(child);
        let end = Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < end, "redis-server did not start");
            std::thread::sleep(POLL);
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
