//! A minimal W3C WebDriver client over reqwest, enough to drive headless
//! Chromium through chromedriver from `cargo test` without another crate.
//!
//! [`Browser::launch`] starts its own chromedriver on a free port and one
//! session with a fresh profile; dropping the [`Browser`] ends the session
//! (which closes Chromium) and then kills chromedriver's process group, so a
//! failing test leaves no browser behind.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a `wait_*` call polls before it fails the test.
pub const WAIT: Duration = Duration::from_secs(10);
/// Poll cadence of the `wait_*` calls.
const POLL: Duration = Duration::from_millis(50);
/// The W3C name of an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Why no browser could be started.
#[derive(Debug)]
pub enum LaunchError {
    /// chromedriver or Chromium is not installed: the caller decides whether
    /// that skips or fails the test.
    NotInstalled(String),
    /// Installed but broken: always a failure.
    Failed(String),
}

/// Where screenshots and failure captures go: `target/test-output/`.
pub fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-output");
    std::fs::create_dir_all(&dir).expect("create target/test-output");
    dir
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    // The port is free again when the listener drops; chromedriver takes it
    // an instant later. A clash would show as a failed start, not a hang.
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// chromedriver in a process group of its own, killed with its Chromium
/// children when dropped.
struct DriverProcess {
    child: Child,
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the group this guard created (process_group(0)
        // makes the group id equal to the child's pid).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One chromedriver and one browser session.
pub struct Browser {
    http: reqwest::Client,
    /// `127.0.0.1:PORT` of chromedriver.
    addr: String,
    session: String,
    /// Names failure screenshots after the test.
    name: String,
    // Drop order matters: the session ends (Drop of Browser), then
    // chromedriver dies, then the profile is removed.
    _driver: DriverProcess,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. `name` labels
    /// failure screenshots. `QUOTECAST_CHROMEDRIVER` and `QUOTECAST_CHROMIUM`
    /// override where the two binaries are looked for.
    pub async fn launch(name: &str) -> Result<Browser, LaunchError> {
        let driver_bin = match std::env::var_os("QUOTECAST_CHROMEDRIVER") {
            Some(p) => {
                let p = PathBuf::from(p);
                if !p.is_file() {
                    return Err(LaunchError::NotInstalled(format!(
                        "no chromedriver at {} (QUOTECAST_CHROMEDRIVER)",
                        p.display()
                    )));
                }
                p
            }
            None => find_in_path("chromedriver").ok_or_else(|| {
                LaunchError::NotInstalled("chromedriver not found in PATH".into())
            })?,
        };
        let chromium = std::env::var_os("QUOTECAST_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        if !chromium.is_file() {
            return Err(LaunchError::NotInstalled(format!(
                "no Chromium at {}",
                chromium.display()
            )));
        }

        let port = free_port();
        let mut cmd = Command::new(&driver_bin);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().map_err(|e| {
            LaunchError::Failed(format!("cannot start {}: {e}", driver_bin.display()))
        })?;
        let mut driver = DriverProcess { child };
        let addr = format!("127.0.0.1:{port}");
        // Loopback only: a proxy from the environment must not see this traffic.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");

        // Ready, or exited (with how).
        let started = super::poll(WAIT, POLL, async || {
            if let Ok(Some(status)) = driver.child.try_wait() {
                return Some(Err(status));
            }
            match http.get(format!("http://{addr}/status")).send().await {
                Ok(res) => res
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true)
                    .then_some(Ok(())),
                Err(_) => None,
            }
        })
        .await;
        match started {
            Ok(Ok(())) => {}
            Ok(Err(status)) => {
                return Err(LaunchError::Failed(format!(
                    "chromedriver exited at start: {status}"
                )))
            }
            Err(_) => {
                return Err(LaunchError::Failed(format!(
                    "chromedriver on {addr} not ready after {WAIT:?}"
                )))
            }
        }

        let profile = tempfile::tempdir().expect("profile dir");
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-proxy-server",
            &format!("--user-data-dir={}", profile.path().display()),
            "--window-size=1280,900",
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let res = http
            .post(format!("http://{addr}/session"))
            .json(&caps)
            .send()
            .await
            .map_err(|e| LaunchError::Failed(format!("new session: {e}")))?;
        let body: Value = res
            .json()
            .await
            .map_err(|e| LaunchError::Failed(format!("new session answer: {e}")))?;
        let session = body["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| LaunchError::Failed(format!("new session refused: {body}")))?
            .to_owned();
        Ok(Browser {
            http,
            addr,
            session,
            name: name.to_owned(),
            _driver: driver,
            _profile: profile,
        })
    }

    /// One WebDriver command; a WebDriver error comes back as `Err(value)`
    /// (`{"error","message",...}`).
    pub async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let url = format!("http://{}/session/{}{path}", self.addr, self.session);
        let mut req = self.http.request(method.clone(), url);
        // W3C wants a JSON body on every POST, even an empty one.
        if method == reqwest::Method::POST {
            req = req.json(&body.unwrap_or_else(|| json!({})));
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let ok = res.status().is_success();
        let v: Value = res
            .json()
            .await
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: bad answer: {e}"));
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if ok {
            Ok(value)
        } else {
            Err(value)
        }
    }

    async fn must(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let what = format!("{method} {path}");
        self.command(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("webdriver {what} failed: {e}"))
    }

    pub async fn goto(&self, url: &str) {
        self.must(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Sets the outer window size.
    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.must(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Runs `script` (a function body: use `return`) in the page.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.must(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Runs `script` (a function body: use `return`) without arguments.
    pub async fn eval(&self, script: &str) -> Value {
        self.execute(script, json!([])).await
    }

    /// The element with `data-testid="testid"`, if there is one now.
    pub async fn try_find(&self, testid: &str) -> Option<Element<'_>> {
        let css = format!("[data-testid=\"{testid}\"]");
        match self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
        {
            Ok(v) => Some(Element {
                browser: self,
                id: v[ELEMENT_KEY]
                    .as_str()
                    .expect("element reference")
                    .to_owned(),
            }),
            Err(e) if e["error"] == "no such element" => None,
            Err(e) => panic!("find {testid}: {e}"),
        }
    }

    /// The element with `data-testid="testid"`, waiting for it to appear.
    pub async fn find(&self, testid: &str) -> Element<'_> {
        match super::poll(WAIT, POLL, async || self.try_find(testid).await).await {
            Ok(e) => e,
            Err(_) => {
                self.fail(&format!("no element [data-testid=\"{testid}\"]"))
                    .await
            }
        }
    }

    /// Clicks the element with this test id.
    pub async fn click(&self, testid: &str) {
        self.find(testid).await.click().await
    }

    /// Types `text` into the element with this test id.
    pub async fn type_into(&self, testid: &str, text: &str) {
        self.find(testid).await.send_keys(text).await
    }

    /// The rendered text of the element with this test id.
    pub async fn text_of(&self, testid: &str) -> String {
        self.find(testid).await.text().await
    }

    /// An attribute of the element with this test id.
    pub async fn attr_of(&self, testid: &str, name: &str) -> Option<String> {
        self.find(testid).await.attr(name).await
    }

    /// Polls `script` every 50 ms until it returns something other than
    /// `null`, `false` or `""`, and returns that; fails the test (with a
    /// screenshot and the page's debug state) after [`WAIT`].
    pub async fn wait_js(&self, what: &str, script: &str) -> Value {
        self.wait_js_for(what, script, WAIT).await
    }

    pub async fn wait_js_for(&self, what: &str, script: &str, limit: Duration) -> Value {
        let done = super::poll(limit, POLL, async || {
            let v = self.execute(script, json!([])).await;
            let done = !matches!(&v, Value::Null | Value::Bool(false))
                && v.as_str().is_none_or(|s| !s.is_empty());
            done.then_some(v)
        })
        .await;
        match done {
            Ok(v) => v,
            Err(_) => self.fail(&format!("timed out waiting for {what}")).await,
        }
    }

    /// Fails the test with what the page looked like.
    pub async fn fail(&self, why: &str) -> ! {
        let shot = format!("{}-failure", self.name);
        self.screenshot(&shot).await;
        let state = self
            .command(
                reqwest::Method::POST,
                "/execute/sync",
                Some(json!({
                    "script": "return {href: location.href, quotecast: window.quotecast && {signedIn: window.quotecast.signedIn, panels: window.quotecast.panels}, signinError: document.querySelector('[data-testid=\"signin-error\"]')?.textContent}",
                    "args": [],
                })),
            )
            .await;
        panic!(
            "{why}\npage state: {}\nscreenshot: target/test-output/{shot}.png",
            state.unwrap_or_else(|e| e)
        );
    }

    /// Saves a PNG screenshot of the viewport as
    /// `target/test-output/{name}.png` and returns its size in bytes.
    pub async fn screenshot(&self, name: &str) -> usize {
        let v = self.must(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64_decode(v.as_str().expect("base64 screenshot"));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "screenshot is not a PNG"
        );
        let path = output_dir().join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        png.len()
    }

    /// Console entries since the last call (`{"level","message","source"}`),
    /// through chromedriver's log endpoint: unlike hooks injected after
    /// load, it also sees errors thrown while the page starts.
    pub async fn console_log(&self) -> Vec<Value> {
        let v = self
            .must(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await;
        v.as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Drop cannot await: a plain blocking HTTP/1.1 request ends the
        // session so Chromium shuts down cleanly before its driver is killed.
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(&self.addr) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(
            s,
            "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session, self.addr
        );
        // chromedriver keeps the connection open despite `Connection: close`:
        // read exactly one answer instead of waiting for the end of stream.
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut buf) {
            answer.extend_from_slice(&buf[..n]);
            if http_answer_complete(&answer) {
                break;
            }
        }
    }
}

/// Whether `raw` holds a whole HTTP/1.1 answer with a Content-Length body.
fn http_answer_complete(raw: &[u8]) -> bool {
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    raw.len() >= head_end + 4 + length
}

/// A reference to an element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Element<'_> {
    fn path(&self, what: &str) -> String {
        format!("/element/{}/{what}", self.id)
    }

    pub async fn click(&self) {
        self.browser
            .must(reqwest::Method::POST, &self.path("click"), None)
            .await;
    }

    pub async fn send_keys(&self, text: &str) {
        self.browser
            .must(
                reqwest::Method::POST,
                &self.path("value"),
                Some(json!({ "text": text })),
            )
            .await;
    }

    pub async fn clear(&self) {
        self.browser
            .must(reqwest::Method::POST, &self.path("clear"), None)
            .await;
    }

    /// The rendered text (empty for hidden elements, as WebDriver defines it).
    pub async fn text(&self) -> String {
        let v = self
            .browser
            .must(reqwest::Method::GET, &self.path("text"), None)
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    pub async fn attr(&self, name: &str) -> Option<String> {
        let v = self
            .browser
            .must(
                reqwest::Method::GET,
                &self.path(&format!("attribute/{name}")),
                None,
            )
            .await;
        v.as_str().map(str::to_owned)
    }

    pub async fn displayed(&self) -> bool {
        self.browser
            .must(reqwest::Method::GET, &self.path("displayed"), None)
            .await
            == Value::Bool(true)
    }
}

/// Standard base64 (with padding) to bytes; screenshots are the only input.
pub fn base64_decode(text: &str) -> Vec<u8> {
    fn sextet(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c:#x}"),
        }
    }
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | sextet(c) << (18 - 6 * i));
        let full = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&full[..chunk.len() - 1]);
    }
    out
}
