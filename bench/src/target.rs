//! The server under test: a quotecast the bench starts (temporary SQLite
//! database, admin user from the CLI, port 0), the ceiling broadcaster, or a
//! quotecast already running elsewhere (`--url`).

use crate::procinfo;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Quotecast,
    Ceiling,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Quotecast => "quotecast",
            Kind::Ceiling => "ceiling",
        }
    }
}

/// Makes a child die with the bench, so an interrupted run leaves no server
/// or worker behind.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

/// Shape-dependent settings of a quotecast the bench starts.
pub struct ServerSetup<'a> {
    pub bin: &'a Path,
    pub tick_ms: u64,
    pub sessions: usize,
    pub watchlists: usize,
    pub symbols: usize,
    pub extra_env: Vec<(String, String)>,
    pub forward_log: bool,
    /// The admin's token when the database already has the bench user (the
    /// instances of a cluster share one); `None` creates the user.
    pub token: Option<String>,
}

pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub token: Option<String>,
    pub pid: Option<u32>,
    child: Option<Child>,
    dir: Option<PathBuf>,
    http: reqwest::Client,
    base: String,
    log_tail: Arc<Mutex<VecDeque<String>>>,
    /// Watchlists made on a server we did not start, removed afterwards.
    created: Vec<i64>,
    external: bool,
    /// A quotecast we started, to run its CLI against the same database.
    cli: Option<ServerCli>,
}

/// How the bench started a quotecast: the same binary, environment and
/// directory reach its database from the CLI.
#[derive(Clone)]
struct ServerCli {
    bin: PathBuf,
    env: Vec<(String, String)>,
    dir: PathBuf,
}

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(32)
        .build()
        .map_err(|e| format!("http client: {e}"))
}

/// Reads a child's stderr until it ends: hands over the address of the
/// `listening on http://ADDR` line, keeps the last lines for error messages
/// and keeps the pipe drained so the child never blocks on logging.
fn watch_stderr(
    child: &mut Child,
    forward: bool,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> std::sync::mpsc::Receiver<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    if let Ok(a) = rest.split_whitespace().next().unwrap_or("").parse() {
                        let _ = tx.send(a);
                    }
                }
                if forward {
                    eprintln!("  server| {line}");
                }
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() >= 30 {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
    }
    rx
}

impl Target {
    fn tail(&self) -> String {
        let t = self.log_tail.lock().unwrap_or_else(|p| p.into_inner());
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    async fn wait_listening(
        mut child: Child,
        kind: Kind,
        rx: std::sync::mpsc::Receiver<SocketAddr>,
        tail: &Arc<Mutex<VecDeque<String>>>,
    ) -> Result<(Child, SocketAddr), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(a) = rx.try_recv() {
                return Ok((child, a));
            }
            if let Ok(Some(status)) = child.try_wait() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let t = tail.lock().unwrap_or_else(|p| p.into_inner());
                return Err(format!(
                    "{} exited ({status}) before listening:\n{}",
                    kind.name(),
                    t.iter().cloned().collect::<Vec<_>>().join("\n")
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!(
                    "{} did not log `listening on` in 60 s",
                    kind.name()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts quotecast: creates the admin user with the CLI, then `serve`.
    pub async fn start_quotecast(s: ServerSetup<'_>) -> Result<Target, String> {
        // Absolute: the server runs in its temporary directory.
        let bin = std::fs::canonicalize(s.bin).map_err(|e| {
            format!(
                "server binary {}: {e}: build it (cargo build --release) or pass --server-bin",
                s.bin.display()
            )
        })?;
        let dir = std::env::temp_dir().join(format!(
            "quotecast-bench-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let max_sessions = (s.sessions + 1000).max(100_000).to_string();
        let mut env: Vec<(String, String)> = vec![
            ("QUOTECAST__SERVER__BIND".into(), "127.0.0.1:0".into()),
            ("QUOTECAST__SERVER__DEMO_DATA".into(), "false".into()),
            (
                "QUOTECAST__DATABASE__URL".into(),
                format!("sqlite://{}/bench.db", dir.display()),
            ),
            (
                "QUOTECAST__UPSTREAM__POLL_INTERVAL_MS".into(),
                s.tick_ms.to_string(),
            ),
            (
                "QUOTECAST__LIMITS__MAX_SESSIONS".into(),
                max_sessions.clone(),
            ),
            (
                "QUOTECAST__LIMITS__MAX_SESSIONS_PER_USER".into(),
                max_sessions,
            ),
            (
                "QUOTECAST__LIMITS__MAX_WATCHLISTS_PER_USER".into(),
                (s.watchlists + 10).to_string(),
            ),
            (
                "QUOTECAST__LIMITS__MAX_ITEMS_PER_WATCHLIST".into(),
                s.symbols.max(100).to_string(),
            ),
            // Every load client connects from one address.
            (
                "QUOTECAST__LIMITS__CONNECTS_PER_IP_PER_S".into(),
                "0".into(),
            ),
            (
                "QUOTECAST__LIMITS__MAX_SUBSCRIPTIONS_PER_SESSION".into(),
                s.watchlists.max(20).to_string(),
            ),
            (
                "RUST_LOG".into(),
                std::env::var("QUOTECAST_BENCH_SERVER_LOG")
                    .unwrap_or_else(|_| "warn,quotecast::startup=info".into()),
            ),
        ];
        env.extend(s.extra_env);

        let token = match s.token {
            Some(t) => t,
            None => add_admin(&bin, &env, &dir)?,
        };

        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .envs(env.iter().cloned())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
        let tail = Arc::default();
        let rx = watch_stderr(&mut child, s.forward_log, Arc::clone(&tail));
        let (child, addr) = Self::wait_listening(child, Kind::Quotecast, rx, &tail).await?;
        let t = Target {
            kind: Kind::Quotecast,
            addr,
            token: Some(token),
            pid: Some(child.id()),
            child: Some(child),
            dir: Some(dir.clone()),
            http: http_client()?,
            base: format!("http://{addr}"),
            log_tail: tail,
            created: Vec::new(),
            external: false,
            cli: Some(ServerCli { bin, env, dir }),
        };
        t.wait_ready().await?;
        Ok(t)
    }

    /// Starts the ceiling broadcaster (this binary, `ceiling-server`).
    pub async fn start_ceiling(args: &[String], forward_log: bool) -> Result<Target, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.arg("ceiling-server")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| format!("ceiling: {e}"))?;
        let tail = Arc::default();
        let rx = watch_stderr(&mut child, forward_log, Arc::clone(&tail));
        let (child, addr) = Self::wait_listening(child, Kind::Ceiling, rx, &tail).await?;
        Ok(Target {
            kind: Kind::Ceiling,
            addr,
            token: None,
            pid: Some(child.id()),
            child: Some(child),
            dir: None,
            http: http_client()?,
            base: format!("http://{addr}"),
            log_tail: tail,
            created: Vec::new(),
            external: false,
            cli: None,
        })
    }

    /// A quotecast someone else runs.
    pub async fn external(url: &str, token: &str, pid: Option<u32>) -> Result<Target, String> {
        let u = url::Url::parse(url).map_err(|e| format!("--url {url}: {e}"))?;
        let addrs = u
            .socket_addrs(|| Some(80))
            .map_err(|e| format!("--url {url}: {e}"))?;
        let addr = *addrs.first().ok_or("--url: no address")?;
        let t = Target {
            kind: Kind::Quotecast,
            addr,
            token: Some(token.to_owned()),
            pid,
            child: None,
            dir: None,
            http: http_client()?,
            base: format!("http://{addr}"),
            log_tail: Arc::default(),
            created: Vec::new(),
            external: true,
            cli: None,
        };
        t.wait_ready().await?;
        Ok(t)
    }

    async fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.http.get(format!("{}/readyz", self.base)).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                _ if Instant::now() > deadline => {
                    return Err(format!(
                        "{}/readyz not ready after 30 s\n{}",
                        self.base,
                        self.tail()
                    ))
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Creates `count` watchlists through the REST API; watchlist `w` holds
    /// `symbols` of the `distinct` names `QB000`, `QB001`, ...:
    /// (w * symbols + j) % distinct for j < symbols.
    pub async fn create_watchlists(
        &mut self,
        count: usize,
        symbols: usize,
        distinct: usize,
    ) -> Result<Vec<i64>, String> {
        if self.kind == Kind::Ceiling {
            return Ok((1..=count as i64).collect());
        }
        let tag: u32 = rand::random();
        let bodies: Vec<Value> = (0..count)
            .map(|w| {
                let items: Vec<Value> = (0..symbols)
                    .map(|j| {
                        json!({
                            "symbol": symbol_name((w * symbols + j) % distinct),
                            "quantity": 100,
                            "purchase_price": 100.0,
                        })
                    })
                    .collect();
                json!({"name": format!("bench-{tag:08x}-{w}"), "items": items})
            })
            .collect();
        let url = format!("{}/api/v1/watchlists", self.base);
        let results: Vec<Result<i64, String>> = futures_util::stream::iter(bodies)
            .map(|body| {
                let req = self.auth(self.http.post(&url)).json(&body);
                async move {
                    let r = req.send().await.map_err(|e| e.to_string())?;
                    let status = r.status();
                    let v: Value = r.json().await.map_err(|e| e.to_string())?;
                    if !status.is_success() {
                        return Err(format!("POST /api/v1/watchlists: {status} {v}"));
                    }
                    v["id"].as_i64().ok_or_else(|| format!("no id in {v}"))
                }
            })
            // One at a time: concurrent creates on SQLite fail with 500
            // "database is locked" (deferred transactions that read, then
            // write; see docs/BENCHMARKS.md).
            .buffered(1)
            .collect()
            .await;
        let ids = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        if self.external {
            self.created.extend(&ids);
        }
        Ok(ids)
    }

    /// Runs `quotecast ARGS` against the database of a quotecast we
    /// started, as an operator would next to the running server; returns
    /// its stdout.
    pub async fn run_cli(&self, args: &[&str]) -> Result<String, String> {
        let ServerCli { bin, env, dir } = self.cli.clone().ok_or_else(|| {
            format!(
                "the {} target has no CLI here: the bench must start it (drop --url)",
                self.kind.name()
            )
        })?;
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let shown = args.join(" ");
        tokio::task::spawn_blocking(move || {
            // The server holds the same SQLite file; a write of the CLI can
            // meet its lock, so a few tries.
            let mut last = String::new();
            for attempt in 0..5 {
                let out = Command::new(&bin)
                    .args(&args)
                    .envs(env.iter().cloned())
                    .current_dir(&dir)
                    .output()
                    .map_err(|e| format!("{}: {e}", bin.display()))?;
                if out.status.success() {
                    return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
                }
                last = String::from_utf8_lossy(&out.stderr).trim().to_owned();
                std::thread::sleep(Duration::from_millis(50 << attempt));
            }
            Err(format!("`quotecast {shown}` failed: {last}"))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// A new API token of the bench user: (token id, token).
    pub async fn issue_token(&self, label: &str) -> Result<(i64, String), String> {
        let out = self
            .run_cli(&["token", "issue", "bench", "--label", label])
            .await?;
        let id = out
            .split("token id ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| format!("`quotecast token issue` printed no token id: {out}"))?;
        let token = out
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_owned())
            .ok_or("`quotecast token issue` printed no token")?;
        Ok((id, token))
    }

    /// Sends `signal` to the target's process (one we started).
    pub fn signal(&self, signal: libc::c_int) -> Result<(), String> {
        let child = self
            .child
            .as_ref()
            .ok_or("the target is not a process the bench started")?;
        // SAFETY: kill(2) on our own child's pid.
        match unsafe { libc::kill(child.id() as libc::pid_t, signal) } {
            0 => Ok(()),
            _ => Err(format!("kill: {}", std::io::Error::last_os_error())),
        }
    }

    /// A JSON request to quotecast's API with the bench's token; the
    /// answer's status and body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let mut req = self.auth(self.http.request(method, format!("{}{path}", self.base)));
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = r.status().as_u16();
        let text = r.text().await.map_err(|e| format!("{path}: {e}"))?;
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| format!("{path}: {e}: {text}"))?
        };
        Ok((status, v))
    }

    /// The `/metrics` text (quotecast only).
    pub async fn metrics_text(&self) -> Option<String> {
        if self.kind != Kind::Quotecast {
            return None;
        }
        let r = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok()?;
        r.text().await.ok()
    }

    /// `GET /admin/v1/stats` (quotecast only).
    pub async fn stats(&self) -> Option<Value> {
        if self.kind != Kind::Quotecast {
            return None;
        }
        let r = self
            .auth(self.http.get(format!("{}/admin/v1/stats", self.base)))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }

    /// Waits until admin stats show no session and no worker; returns the
    /// last (sessions, workers) seen and how long it took.
    pub async fn wait_drained(&self, limit: Duration) -> Option<(u64, u64, f64)> {
        let started = Instant::now();
        loop {
            let s = self.stats().await?;
            let sessions = s["sessions"].as_u64().unwrap_or(u64::MAX);
            let workers = s["workers"].as_u64().unwrap_or(u64::MAX);
            if (sessions == 0 && workers == 0) || started.elapsed() > limit {
                return Some((sessions, workers, started.elapsed().as_secs_f64()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Counters from `/metrics` (quotecast only), by metric name; labelled
    /// series are added up.
    pub async fn metrics(&self) -> Option<std::collections::BTreeMap<String, f64>> {
        let text = self.metrics_text().await?;
        let mut m = std::collections::BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let name = name.split('{').next().unwrap_or(name);
            if let Ok(v) = value.parse::<f64>() {
                *m.entry(name.to_owned()).or_insert(0.0) += v;
            }
        }
        Some(m)
    }

    pub fn sample(&self) -> Option<procinfo::Sample> {
        procinfo::sample(self.pid?)
    }

    /// The server's CPU seconds so far, if its process is known.
    pub fn cpu_seconds(&self) -> Option<f64> {
        procinfo::cpu_seconds(self.pid?)
    }

    /// When sessions failed to connect, whether the server ran out of file
    /// descriptors (it then cannot accept, and clients only see timeouts).
    pub fn fd_exhausted(&self) -> Option<(usize, u64)> {
        let pid = self.pid?;
        let limit = procinfo::fd_limit(pid)?;
        let fds = procinfo::sample(pid)?.fds;
        (fds as u64 + 16 >= limit).then_some((fds, limit))
    }

    pub async fn stop(mut self) -> Result<(), String> {
        if self.external {
            for id in std::mem::take(&mut self.created) {
                let _ = self
                    .auth(
                        self.http
                            .delete(format!("{}/api/v1/watchlists/{id}", self.base)),
                    )
                    .send()
                    .await;
            }
        }
        let mut res = Ok(());
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match child.try_wait() {
                    Ok(Some(st)) => {
                        if !st.success() && self.kind == Kind::Quotecast {
                            res = Err(format!(
                                "quotecast exited with {st} on SIGTERM\n{}",
                                self.tail()
                            ));
                        }
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        res = Err(format!(
                            "{} did not stop within 15 s of SIGTERM",
                            self.kind.name()
                        ));
                        break;
                    }
                }
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        res
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `quotecast user add bench --admin` against the database `env` names;
/// the token it prints.
fn add_admin(bin: &Path, env: &[(String, String)], dir: &Path) -> Result<String, String> {
    let out = Command::new(bin)
        .args(["user", "add", "bench", "--admin"])
        .envs(env.iter().cloned())
        .current_dir(dir)
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`quotecast user add bench --admin` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .ok_or_else(|| "`quotecast user add` printed no token".to_owned())
}

/// The `k`th benchmark symbol. Valid for quotecast, unknown to the sim
/// catalog (so it gets a synthetic series) and known to the fake Yahoo.
pub fn symbol_name(k: usize) -> String {
    format!("QB{k:03}")
}
