//! The `quotecast` binary as a user runs it: CLI commands, zero set-up
//! start, configuration errors, restart safety and signal shutdown.

mod support;

use quotecast::db::{repo, Db};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Instant;
use support::{eventually, DEADLINE};

const BIN: &str = env!("CARGO_BIN_EXE_quotecast");

/// A scratch directory with its own database URL.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn db_url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("q.db").display())
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("QUOTECAST_CONFIG")
            .env("QUOTECAST__DATABASE__URL", self.db_url())
            .env("QUOTECAST__SERVER__BIND", "127.0.0.1:0")
            .env("QUOTECAST__UPSTREAM__POLL_INTERVAL_MS", "100")
            .env("QUOTECAST__REALTIME__AUTH_RECHECK_INTERVAL_MS", "100")
            .env("RUST_LOG", "info");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("binary runs")
    }

    /// A user added through the CLI; its token.
    fn user(&self, name: &str) -> String {
        last_line(&self.run(&["user", "add", name]))
    }

    fn db(&self) -> Db {
        Db::connect(&self.db_url().parse().unwrap(), 1).unwrap()
    }
}

/// The last line of stdout: where the CLI prints new tokens.
fn last_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned()
}

/// The lines of a child's output, read on a thread of their own.
fn lines_of(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Lines from `rx` up to the first that `last` accepts, which ends the list;
/// panics naming `what` if it does not come within the deadline.
fn lines_until(
    rx: &mpsc::Receiver<String>,
    what: &str,
    last: impl Fn(&str) -> bool,
) -> Vec<String> {
    let end = Instant::now() + DEADLINE;
    let mut lines = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no {what}: {e}"));
        let done = last(&line);
        lines.push(line);
        if done {
            return lines;
        }
    }
}

/// A running server process.
struct Server {
    child: Child,
    base: String,
    stdout: mpsc::Receiver<String>,
    /// Kept, so the server never blocks on a full pipe; read by tests of
    /// what it logs.
    stderr: mpsc::Receiver<String>,
}

impl Server {
    fn start(mut cmd: Command) -> Server {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("server starts");
        let stderr = lines_of(child.stderr.take().unwrap());
        let stdout = lines_of(child.stdout.take().unwrap());
        let listening = lines_until(&stderr, "'listening on' line", |l| {
            l.contains("listening on ")
        });
        let line = listening.last().unwrap();
        let base = line
            .split("listening on ")
            .nth(1)
            .unwrap()
            .trim()
            .to_owned();
        Server {
            child,
            base,
            stdout,
            stderr,
        }
    }

    fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let res = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let res = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Creates a watchlist from `body`; its id.
    async fn watchlist(&self, token: &str, body: Value) -> i64 {
        let (status, w) = self.post("/api/v1/watchlists", token, body).await;
        assert_eq!(status, 201, "{w}");
        w["id"].as_i64().unwrap()
    }

    /// Everything the server logs from now until it exits (call after
    /// [`Server::terminate`]).
    fn rest_of_stderr(&self) -> Vec<String> {
        let end = Instant::now() + DEADLINE;
        let mut lines = Vec::new();
        loop {
            match self
                .stderr
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return lines,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("stderr still open: {lines:?}"),
            }
        }
    }

    async fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        eventually("the server to exit after SIGTERM", async || {
            self.child.try_wait().unwrap()
        })
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn ws(addr: &str, id: i64, token: &str) -> support::Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/ws/v1/watchlists/{id}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (stream, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket");
    support::Ws { stream }
}

#[actix_web::test]
async fn users_and_tokens_from_the_cli_work_over_http() {
    let s = Scratch::new();
    let out = s.run(&["migrate"]);
    assert!(out.status.success(), "{out:?}");
    let out = s.run(&["user", "add", "alice"]);
    assert!(out.status.success(), "{out:?}");
    let first = last_line(&out);
    assert!(first.starts_with("qc_"), "token is the last line: {out:?}");
    let out = s.run(&["token", "issue", "alice", "--label", "laptop"]);
    assert!(out.status.success());
    let second = last_line(&out);
    assert_ne!(first, second);
    let out = s.run(&["user", "add", "root", "--admin"]);
    let admin = last_line(&out);

    let mut server = Server::start(s.cmd(&["serve"]));
    let (status, me) = server.get("/api/v1/me", &first).await;
    assert_eq!((status, me["name"].as_str()), (200, Some("alice")));
    let (status, me2) = server.get("/api/v1/me", &second).await;
    assert_eq!(status, 200);
    let (status, root) = server.get("/admin/v1/stats", &admin).await;
    assert_eq!(status, 200, "{root}");

    // Revoke the second token through the CLI while the server runs.
    let id = me2["token_id"].as_i64().unwrap().to_string();
    let out = s.run(&["token", "revoke", &id]);
    assert!(out.status.success(), "{out:?}");
    let (status, _) = server.get("/api/v1/me", &second).await;
    assert_eq!(status, 401);
    let (status, _) = server.get("/api/v1/me", &first).await;
    assert_eq!(status, 200);

    // Mistakes give one clear line and a non-zero exit.
    for args in [
        vec!["user", "add", "alice"],
        vec!["user", "add", "bad name!"],
        vec!["token", "issue", "nobody"],
        vec!["token", "revoke", "424242"],
    ] {
        let out = s.run(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("quotecast: "), "{err}");
    }
    assert_eq!(server.terminate().await.code(), Some(0));
}

#[actix_web::test]
async fn zero_setup_start_seeds_demo_data() {
    let s = Scratch::new();
    let mut cmd = s.cmd(&[]);
    // The documented default location, relative to the working directory.
    cmd.env_remove("QUOTECAST__DATABASE__URL");
    let mut server = Server::start(cmd);
    let lines = lines_until(&server.stdout, "demo token", |l| l.starts_with("qc_"));
    let token = lines.last().unwrap().clone();
    let link = lines
        .iter()
        .find(|l| l.starts_with("dashboard: "))
        .expect("dashboard link");
    assert!(
        link.contains(&format!("/#token={token}")),
        "token goes in the fragment: {link}"
    );
    assert!(!link.contains('?'));
    assert!(s.dir.path().join("data/quotecast.db").exists());

    let (status, lists) = server.get("/api/v1/watchlists", &token).await;
    assert_eq!(status, 200);
    let lists = lists.as_array().unwrap();
    assert_eq!(lists.len(), 2);
    let symbols: Vec<&str> = lists
        .iter()
        .flat_map(|w| w["items"].as_array().unwrap())
        .map(|i| i["symbol"].as_str().unwrap())
        .collect();
    for s in ["7203.T", "6758.T", "9984.T", "AAPL", "MSFT"] {
        assert!(symbols.contains(&s), "{s} missing");
    }
    // Prices move on the demo watchlist.
    let id = lists[0]["id"].as_i64().unwrap();
    let mut ws = ws(server.addr(), id, &token).await;
    ws.wait_type("snapshot").await;
    ws.wait_type("quotes").await;
    let page = reqwest::get(format!("{}/", server.base)).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));
    ws.close().await;
    assert_eq!(server.terminate().await.code(), Some(0));
}

/// The scheduling policy of each thread of process `pid`, by thread name.
#[cfg(target_os = "linux")]
fn thread_policies(pid: u32) -> Vec<(String, libc::c_int)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let Ok(tid) = task
            .file_name()
            .unwrap()
            .to_string_lossy()
            .parse::<libc::pid_t>()
        else {
            continue;
        };
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        // SAFETY: reads the policy of a thread by id; a thread that has
        // ended since the listing gives -1 and is skipped.
        let policy = unsafe { libc::sched_getscheduler(tid) };
        if policy >= 0 {
            out.push((name.trim().to_owned(), policy));
        }
    }
    out
}

/// `server.batch_scheduling` (default on): every thread of `serve` runs
/// under SCHED_BATCH, the HTTP workers, the acceptor, the arbiters and the
/// pools' threads included; switched off, none does.
#[cfg(target_os = "linux")]
#[actix_web::test]
async fn serve_runs_its_threads_under_batch_scheduling_unless_switched_off() {
    for (setting, expected) in [("true", libc::SCHED_BATCH), ("false", libc::SCHED_OTHER)] {
        let s = Scratch::new();
        let token = s.user("alice");
        let mut cmd = s.cmd(&["serve"]);
        cmd.env("QUOTECAST__SERVER__BATCH_SCHEDULING", setting);
        let mut server = Server::start(cmd);
        // A session, so that the threads a connect uses have all started.
        let id = server
            .watchlist(&token, json!({"name": "w", "items": [{"symbol": "AAPL"}]}))
            .await;
        let mut ws = ws(server.addr(), id, &token).await;
        ws.wait_type("snapshot").await;
        let threads = thread_policies(server.child.id());
        assert!(
            threads.iter().any(|(n, _)| n.starts_with("actix-server"))
                && threads
                    .iter()
                    .filter(|(n, _)| n.starts_with("actix-rt"))
                    .count()
                    >= 2,
            "the acceptor and the arbiters are listed: {threads:?}"
        );
        let other: Vec<_> = threads.iter().filter(|(_, p)| *p != expected).collect();
        assert!(
            other.is_empty(),
            "batch_scheduling={setting}: threads under another policy: {other:?}"
        );
        ws.close().await;
        assert_eq!(server.terminate().await.code(), Some(0));
    }
}

/// `quotecast [args] serve` with this environment stops at start with one
/// line, which names `key`.
fn stops_naming(s: &Scratch, env: &[(&str, &str)], args: &[&str], key: &str) {
    let mut cmd = s.cmd(args);
    cmd.arg("serve").envs(env.iter().copied());
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{env:?} {args:?} started");
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("quotecast: "))
        .collect();
    assert_eq!(lines.len(), 1, "{env:?} {args:?}: {err}");
    assert!(lines[0].contains(key), "{env:?} {args:?}: {err}");
}

#[test]
fn bad_configuration_stops_startup_with_one_line() {
    let s = Scratch::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let bad_file = s.dir.path().join("bad.toml");
    std::fs::write(&bad_file, "[upstream]\nbatch_size = 99\n").unwrap();
    let typo_file = s.dir.path().join("typo.toml");
    std::fs::write(&typo_file, "[upstream]\npoll_intervall_ms = 5\n").unwrap();
    // A bad QUOTECAST__SECTION__KEY: the error names section.key.
    for (var, value) in [
        ("UPSTREAM__PROVIDER", "bloomberg"),
        ("UPSTREAM__BASE_URL", "::nope"),
        ("DATABASE__URL", "mysql://x"),
        ("SERVER__BIND", port.as_str()),
        ("SERVER__BIND", "nowhere"),
        ("UPSTREAM__POLL_INTERVAL_MS", "fast"),
    ] {
        let key = var.to_lowercase().replace("__", ".");
        stops_naming(&s, &[(&format!("QUOTECAST__{var}"), value)], &[], &key);
    }
    // A bad configuration file, or none where one is named.
    let (bad, typo) = (bad_file.to_str().unwrap(), typo_file.to_str().unwrap());
    for (args, key) in [
        (["--config", bad], "upstream.batch_size"),
        (["--config", typo], "poll_intervall_ms"),
        (["--config", "/nonexistent.toml"], "--config"),
    ] {
        stops_naming(&s, &[], &args, key);
    }
    let env = [("QUOTECAST_CONFIG", "/nonexistent.toml")];
    stops_naming(&s, &env, &[], "--config");
    drop(taken);
}

/// Data written, the server stopped and started again on the same SQLite
/// file: all there, and the first snapshot has the stored prices before any
/// new fetch.
#[actix_web::test]
async fn restart_keeps_data_and_latest_quotes() {
    let s = Scratch::new();
    let token = s.user("alice");
    // A slow tick after restart, so the first snapshot cannot come from a
    // new fetch.
    let mut server = Server::start(s.cmd(&["serve"]));
    let items = json!([{"symbol": "AAPL", "quantity": 2, "purchase_price": 100, "memo": "m"}, {"symbol": "ZZZZ"}]);
    let id = server
        .watchlist(
            &token,
            json!({"name": "keep", "is_public": true, "items": items}),
        )
        .await;
    let mut live = ws(server.addr(), id, &token).await;
    live.wait_type("quotes").await;
    live.close().await;
    assert_eq!(server.terminate().await.code(), Some(0));

    let stored = s
        .db()
        .run_sync(|c| repo::get_latest_quotes(c, &["AAPL".into(), "ZZZZ".into()]))
        .unwrap();
    let aapl = stored
        .iter()
        .find(|q| q.symbol == "AAPL")
        .expect("AAPL stored");
    assert!(stored.iter().any(|q| q.symbol == "ZZZZ" && q.is_unknown));

    let mut cmd = s.cmd(&["serve"]);
    cmd.env("QUOTECAST__UPSTREAM__POLL_INTERVAL_MS", "600000");
    let mut server = Server::start(cmd);
    let (status, got) = server
        .get(&format!("/api/v1/watchlists/{id}"), &token)
        .await;
    assert_eq!(status, 200);
    assert_eq!(got["name"], "keep");
    assert_eq!(got["items"][0]["memo"], "m");
    assert_eq!(got["items"][0]["quantity"], 2.0);
    let mut live = ws(server.addr(), id, &token).await;
    let snap = live.wait_type("snapshot").await;
    assert_eq!(snap["stale"], false, "{snap}");
    let q = &snap["quotes"][0];
    assert_eq!(q["price"].as_f64(), aapl.price, "{snap}");
    assert_eq!(snap["quotes"][1]["error"], "unknown_symbol");
    live.close().await;
    assert_eq!(server.terminate().await.code(), Some(0));
}

#[actix_web::test]
async fn sigterm_closes_every_socket_with_1001_and_exits_0() {
    let s = Scratch::new();
    let token = s.user("alice");
    let mut server = Server::start(s.cmd(&["serve"]));
    let a = server
        .watchlist(&token, json!({"name": "a", "items": [{"symbol": "AAPL"}]}))
        .await;
    let b = server.watchlist(&token, json!({"name": "b"})).await;
    let mut sockets = Vec::new();
    for id in [a, a, b] {
        let mut w = ws(server.addr(), id, &token).await;
        w.wait_type("snapshot").await;
        sockets.push(w);
    }
    let status = server.terminate().await;
    for w in sockets.iter_mut() {
        assert_eq!(w.wait_close().await, Some(1001));
    }
    assert_eq!(status.code(), Some(0));
}

#[test]
fn migrate_is_idempotent() {
    let s = Scratch::new();
    assert!(s.run(&["migrate"]).status.success());
    let out = s.run(&["migrate"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 migrations applied"));
}

/// A client's malformed requests do not set the pace of the log: actix-http's
/// one ERROR line per broken connection becomes one WARN a minute, the rest
/// DEBUG (still there when asked for).
#[actix_web::test]
async fn malformed_requests_log_one_warning_not_an_error_each() {
    use std::io::{Read, Write};
    const N: usize = 20;
    let connection_errors = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.contains("actix_http::h1::dispatcher"))
            .cloned()
            .collect()
    };
    for (rust_log, want) in [("info", 1), ("info,actix_http::h1::dispatcher=debug", N)] {
        let s = Scratch::new();
        let mut cmd = s.cmd(&["serve"]);
        cmd.env("RUST_LOG", rust_log);
        let mut server = Server::start(cmd);
        for request in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n",
        ]
        .into_iter()
        .cycle()
        .take(N)
        {
            let mut conn = std::net::TcpStream::connect(server.addr()).unwrap();
            conn.write_all(request).unwrap();
            let mut answer = String::new();
            conn.read_to_string(&mut answer).unwrap();
            assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
        }
        assert_eq!(server.terminate().await.code(), Some(0));
        let lines = server.rest_of_stderr();
        let noise = connection_errors(&lines);
        assert_eq!(noise.len(), want, "RUST_LOG={rust_log}: {lines:#?}");
        assert!(noise[0].contains(" WARN "), "{noise:#?}");
        assert!(
            noise[1..].iter().all(|l| l.contains(" DEBUG ")),
            "{noise:#?}"
        );
        assert!(
            noise.iter().all(|l| l.contains("request parse error")),
            "{noise:#?}"
        );
        assert!(!lines.iter().any(|l| l.contains(" ERROR ")), "{lines:#?}");
    }
}
