//! The load client: WebSocket sessions that record what arrives.
//!
//! A [`LocalGroup`] runs a range of sessions as tasks in this process. With
//! `--procs K` the bench starts K copies of itself (`worker` subcommand),
//! each running one LocalGroup and answering line commands on stdin with
//! JSON lines on stdout; [`Clients`] hides which of the two is in use, so
//! a scenario reads the same either way.
//!
//! A session is a v1 socket on one watchlist, or (with
//! [`Plan::subscriptions`]) a `GET /ws/v1` socket that subscribes to several;
//! `seq` is checked per watchlist on each socket either way. With
//! [`Plan::reconnect`], a session the server drops reconnects at once, and
//! [`Clients::await_storm`] reports how long the whole group took to be back.

use crate::hist::{AtomicHist, Hist};
use crate::procinfo;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

/// What every session needs to know; also the config sent to a worker
/// process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub addr: SocketAddr,
    pub token: Option<String>,
    /// Session `i` opens `watchlist_ids[i % len]`.
    pub watchlist_ids: Vec<i64>,
    /// Session `i` binds to 127.0.0.(1 + i % source_ips) when above 1.
    pub source_ips: usize,
    /// Sessions connecting at once (per process).
    pub concurrency: usize,
    /// Sleep after each received `quotes` message, to make a session lag.
    pub lag_ms: u64,
    pub connect_timeout_ms: u64,
    /// 0: each session opens the v1 socket of one watchlist. K: each opens
    /// `GET /ws/v1` and subscribes to K watchlists, session `i` to
    /// `watchlist_ids[(i*K + j) % len]` for j < K, so sessions `i*K + j` of a
    /// v1 plan open the same watchlists one by one.
    #[serde(default)]
    pub subscriptions: usize,
    /// Reconnect a session the server drops (else it ends, counted as an
    /// unexpected close).
    #[serde(default)]
    pub reconnect: Option<Reconnect>,
    /// Several servers (a cluster): session `i` connects to
    /// `addrs[i % len]`, and a dropped session reconnects to the others in
    /// turn, as a client behind a balancer lands on a live instance. Empty:
    /// every session uses `addr`.
    #[serde(default)]
    pub addrs: Vec<SocketAddr>,
}

/// How dropped sessions come back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reconnect {
    /// Credentials of the new connection (the old token may be the reason
    /// for the drop).
    pub token: Option<String>,
    /// Reconnects in flight at once, per process (0: no limit, every dropped
    /// session at once).
    pub concurrency: usize,
    /// A session still not back this long after its drop gives up.
    pub limit_ms: u64,
}

impl Plan {
    /// The watchlists session `i` opens: one on v1, `subscriptions` on /ws/v1.
    /// Where session `i` connects first.
    pub fn addr_of(&self, i: usize) -> SocketAddr {
        match self.addrs.len() {
            0 => self.addr,
            n => self.addrs[i % n],
        }
    }

    /// Where session `i`, dropped by `from`, tries on its `attempt`th
    /// reconnect: the other servers in turn, starting after `from` (with one
    /// server, `from` again).
    pub fn reconnect_addr(&self, i: usize, from: SocketAddr, attempt: usize) -> SocketAddr {
        let others: Vec<SocketAddr> = self.addrs.iter().copied().filter(|a| *a != from).collect();
        match others.len() {
            0 => from,
            n => others[(i + attempt) % n],
        }
    }

    pub fn watchlists_of(&self, i: usize) -> Vec<i64> {
        let ids = &self.watchlist_ids;
        match self.subscriptions {
            0 => vec![ids[i % ids.len()]],
            k => (0..k).map(|j| ids[(i * k + j) % ids.len()]).collect(),
        }
    }
}

/// Microseconds since the Unix epoch, the clock `ts` is written in.
pub(crate) fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

// --- reading server messages -------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Quotes,
    Snapshot,
    /// A refusal (`{"type":"error",...}`).
    Error,
    Other,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub watchlist_id: Option<i64>,
    pub seq: Option<u64>,
    pub ts_us: Option<i64>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The unsigned number right after `key`.
fn number_after(head: &[u8], key: &[u8]) -> Option<u64> {
    let digits = &head[find(head, key)? + key.len()..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// Reads `type`, `watchlist_id`, `seq` and `ts` without parsing the whole
/// message: they come before `totals` and `quotes`, and a full JSON parse of
/// every message would make the client, not the server, the bottleneck.
pub fn scan(msg: &[u8]) -> Header {
    let head = &msg[..msg.len().min(256)];
    let kind = if find(head, br#""type":"quotes""#).is_some() {
        Kind::Quotes
    } else if find(head, br#""type":"snapshot""#).is_some() {
        Kind::Snapshot
    } else if find(head, br#""type":"error""#).is_some() {
        Kind::Error
    } else {
        Kind::Other
    };
    let watchlist_id =
        number_after(head, br#""watchlist_id":"#).and_then(|v| i64::try_from(v).ok());
    let seq = number_after(head, br#""seq":"#);
    let ts_us = find(head, br#""ts":""#).and_then(|at| parse_ts(head.get(at + 6..)?));
    Header {
        kind,
        watchlist_id,
        seq,
        ts_us,
    }
}

/// The last `seq` one socket saw of each watchlist: `seq` counts per
/// watchlist, however many a socket has.
#[derive(Debug, Default)]
pub struct SeqTracker(Vec<(i64, u64)>);

impl SeqTracker {
    /// Records `seq` for `watchlist`; returns the highest seen before.
    fn observe(&mut self, watchlist: i64, seq: u64) -> Option<u64> {
        match self.0.iter_mut().find(|(w, _)| *w == watchlist) {
            Some((_, last)) => {
                let before = *last;
                *last = before.max(seq);
                Some(before)
            }
            None => {
                self.0.push((watchlist, seq));
                None
            }
        }
    }
}

/// `2026-11-26T05:59:59.123456Z` to microseconds since the epoch.
pub fn parse_ts(s: &[u8]) -> Option<i64> {
    let end = s.iter().position(|&b| b == b'"')?;
    let s = std::str::from_utf8(&s[..end]).ok()?;
    let b = s.as_bytes();
    let num = |r: Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    if b.len() >= 20 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && s.ends_with('Z') {
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let frac = &s[20..s.len() - 1];
        let mut us: i64 = frac.get(..frac.len().min(6))?.parse().ok()?;
        for _ in frac.len()..6 {
            us *= 10;
        }
        let days = days_from_civil(y, m, d);
        return Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + us);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// --- shared counters ---------------------------------------------------------

/// Why a session could not connect.
enum ConnectError {
    /// The process is out of file descriptors.
    FdLimit,
    /// No free local port for this source address.
    NoPorts,
    /// The server refused the upgrade with this status.
    Http(u16),
    /// The server refused a subscription (`error` message) with this code.
    Refused(String),
    /// The server closed the socket before the snapshot, with this code.
    Closed(u16),
    /// The socket ended before the snapshot.
    NoSnapshot,
    Timeout,
    Other(String),
}

impl ConnectError {
    fn from_io(e: &std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::EMFILE) | Some(libc::ENFILE) => ConnectError::FdLimit,
            Some(libc::EADDRNOTAVAIL) => ConnectError::NoPorts,
            _ => ConnectError::Other(e.to_string()),
        }
    }

    fn from_ws(e: WsError) -> Self {
        match e {
            WsError::Io(e) => Self::from_io(&e),
            WsError::Http(resp) => ConnectError::Http(resp.status().as_u16()),
            other => ConnectError::Other(other.to_string()),
        }
    }

    /// The key it is counted under, and what it tells a person.
    fn describe(&self) -> (String, String) {
        match self {
            ConnectError::FdLimit => ("fd_limit".into(), "out of file descriptors (EMFILE)".into()),
            ConnectError::NoPorts => (
                "no_local_ports".into(),
                "no free local port (EADDRNOTAVAIL)".into(),
            ),
            ConnectError::Http(s) => (
                format!("http_{s}"),
                format!("upgrade refused with HTTP {s}"),
            ),
            ConnectError::Refused(c) => {
                (format!("refused_{c}"), format!("subscription refused: {c}"))
            }
            ConnectError::Closed(c) => (
                format!("closed_{c}"),
                format!("closed with {c} before the snapshot"),
            ),
            ConnectError::NoSnapshot => ("no_snapshot".into(), "no snapshot".into()),
            ConnectError::Timeout => ("timeout".into(), "no answer in time".into()),
            ConnectError::Other(m) => ("other".into(), m.clone()),
        }
    }
}

/// What the reconnects after server drops add up to (see [`StormStats`]).
#[derive(Default)]
struct StormCounters {
    dropped: AtomicU64,
    reconnected: AtomicU64,
    /// Sessions that gave up coming back.
    failed: AtomicU64,
    /// Reconnect attempts that failed and were tried again.
    retries: AtomicU64,
    /// Wall-clock microseconds: first and last drop, last session back.
    times: Mutex<(Option<i64>, Option<i64>, Option<i64>)>,
    latency: AtomicHist,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Bounds reconnects in flight when [`Reconnect::concurrency`] is set.
    gate: Option<Arc<Semaphore>>,
}

impl StormCounters {
    fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let now = wall_us();
        let mut t = lock(&self.times);
        t.0 = Some(t.0.map_or(now, |v| v.min(now)));
        t.1 = Some(t.1.map_or(now, |v| v.max(now)));
    }

    fn back(&self, since_drop: Duration) {
        self.latency.record(since_drop.as_micros() as u64);
        let now = wall_us();
        let mut t = lock(&self.times);
        t.2 = Some(t.2.map_or(now, |v| v.max(now)));
        drop(t);
        self.reconnected.fetch_add(1, Ordering::Relaxed);
    }

    fn error(&self, e: &ConnectError) {
        *lock(&self.errors).entry(e.describe().0).or_default() += 1;
    }
}

#[derive(Default)]
struct Shared {
    measuring: AtomicBool,
    latency: AtomicHist,
    msgs: AtomicU64,
    bytes: AtomicU64,
    other_msgs: AtomicU64,
    pings: AtomicU64,
    // Sequence checks run for the whole life of a session, not only the window.
    gaps: AtomicU64,
    missed: AtomicU64,
    duplicates: AtomicU64,
    connect_latency: AtomicHist,
    ready: AtomicU64,
    failed: AtomicU64,
    /// Microseconds from the start of the connect phase to the last session
    /// that got its snapshot.
    last_ready_us: AtomicU64,
    /// Sessions ready when the first fd-limit / port error happened.
    fd_limit_at: Mutex<Option<u64>>,
    no_ports_at: Mutex<Option<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    first_error: Mutex<Option<String>>,
    unexpected_closes: AtomicU64,
    server_close_codes: Mutex<BTreeMap<u16, u64>>,
    closed_clean: AtomicU64,
    closed_unclean: AtomicU64,
    ended: AtomicU64,
    storm: StormCounters,
    /// Live sessions per server, to know how many a server takes with it
    /// when it dies.
    live_on: Mutex<BTreeMap<SocketAddr, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn opened(&self, addr: SocketAddr) {
        *lock(&self.live_on).entry(addr).or_default() += 1;
    }

    fn lost(&self, addr: SocketAddr) {
        if let Some(n) = lock(&self.live_on).get_mut(&addr) {
            *n = n.saturating_sub(1);
        }
    }

    fn connect_failed(&self, e: ConnectError) {
        let ready = self.ready.load(Ordering::Relaxed);
        match &e {
            ConnectError::FdLimit => {
                lock(&self.fd_limit_at).get_or_insert(ready);
            }
            ConnectError::NoPorts => {
                lock(&self.no_ports_at).get_or_insert(ready);
            }
            _ => {}
        }
        let (key, detail) = e.describe();
        *lock(&self.errors).entry(key).or_default() += 1;
        lock(&self.first_error).get_or_insert(detail);
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    fn on_text(&self, text: &str, seqs: &mut SeqTracker) -> Kind {
        let now = wall_us();
        let h = scan(text.as_bytes());
        if let (Kind::Quotes | Kind::Snapshot, Some(seq)) = (&h.kind, h.seq) {
            match seqs.observe(h.watchlist_id.unwrap_or(0), seq) {
                // A snapshot answering a request repeats the current seq;
                // anything else must be exactly the next one.
                Some(last) if seq > last + 1 => {
                    self.gaps.fetch_add(1, Ordering::Relaxed);
                    self.missed.fetch_add(seq - last - 1, Ordering::Relaxed);
                }
                Some(last) if seq <= last && h.kind == Kind::Quotes => {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        if self.measuring.load(Ordering::Relaxed) {
            self.bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
            if h.kind == Kind::Quotes {
                self.msgs.fetch_add(1, Ordering::Relaxed);
                if let Some(ts) = h.ts_us {
                    self.latency.record((now - ts).max(0) as u64);
                }
            } else {
                self.other_msgs.fetch_add(1, Ordering::Relaxed);
            }
        }
        h.kind
    }
}

// --- one session -------------------------------------------------------------

fn source_ip(plan: &Plan, i: usize) -> Option<IpAddr> {
    (plan.source_ips > 1)
        .then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % plan.source_ips) as u8)))
}

async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        // Without this, bind() picks the local port before the destination is
        // known, and each source address runs out of ports at ~28k sockets
        // in total instead of per destination.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads `one` for the given length only.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = sock.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens one session; errors read `KIND: detail`.
pub async fn open_ws(
    addr: SocketAddr,
    source: Option<IpAddr>,
    watchlist_id: i64,
    token: Option<&str>,
) -> Result<Ws, String> {
    open(
        addr,
        source,
        &format!("/ws/v1/watchlists/{watchlist_id}"),
        token,
    )
    .await
    .map_err(|e| {
        let (key, detail) = e.describe();
        format!("{key}: {detail}")
    })
}

async fn open(
    addr: SocketAddr,
    source: Option<IpAddr>,
    path: &str,
    token: Option<&str>,
) -> Result<Ws, ConnectError> {
    let stream = tcp_connect(addr, source)
        .await
        .map_err(|e| ConnectError::from_io(&e))?;
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .map_err(ConnectError::from_ws)?;
    if let Some(t) = token {
        let v = HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|e| ConnectError::Other(e.to_string()))?;
        req.headers_mut().insert("authorization", v);
    }
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(req, stream, Some(WebSocketConfig::default()))
            .await
            .map_err(ConnectError::from_ws)?;
    Ok(ws)
}

/// Sends a normal close, waits for the server's close (bounded), then drops
/// the socket so the TCP connection ends at once: the server would otherwise
/// keep each closed connection around for about a second.
pub async fn close_ws(ws: &mut Ws) -> bool {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if ws.close(Some(frame)).await.is_err() {
        return false;
    }
    let drain = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None => return true,
                Some(Ok(_)) => {}
                Some(Err(WsError::ConnectionClosed)) => return true,
                Some(Err(_)) => return false,
            }
        }
    };
    timeout(Duration::from_secs(5), drain)
        .await
        .unwrap_or(false)
}

/// Waits for the first text message (the snapshot), answering pings meanwhile.
pub async fn first_text(ws: &mut Ws, limit: Duration) -> Option<String> {
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Some(t),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => {}
            }
        }
    };
    timeout(limit, wait).await.ok().flatten()
}

/// Opens session `i`'s socket with `token` and waits until it is ready:
/// its snapshot on v1; on /ws/v1, after one `subscribe` per watchlist, a
/// snapshot of each.
async fn open_session(
    plan: &Plan,
    i: usize,
    addr: SocketAddr,
    token: Option<&str>,
    sh: &Shared,
    seqs: &mut SeqTracker,
) -> Result<Ws, ConnectError> {
    let limit = Duration::from_millis(plan.connect_timeout_ms);
    let watchlists = plan.watchlists_of(i);
    let path = match plan.subscriptions {
        0 => format!("/ws/v1/watchlists/{}", watchlists[0]),
        _ => "/ws/v1".to_owned(),
    };
    let mut ws = timeout(limit, open(addr, source_ip(plan, i), &path, token))
        .await
        .map_err(|_| ConnectError::Timeout)??;
    if plan.subscriptions > 0 {
        for id in &watchlists {
            let msg = format!(r#"{{"type":"subscribe","watchlist_id":{id}}}"#);
            ws.feed(Message::Text(msg))
                .await
                .map_err(ConnectError::from_ws)?;
        }
        ws.flush().await.map_err(ConnectError::from_ws)?;
    }
    let snapshots = async {
        let mut missing = watchlists.len();
        while missing > 0 {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => match sh.on_text(&t, seqs) {
                    Kind::Snapshot => missing -= 1,
                    Kind::Error => return Err(ConnectError::Refused(error_code(&t))),
                    _ => {}
                },
                Some(Ok(Message::Close(frame))) => {
                    return Err(ConnectError::Closed(
                        frame.map_or(1005, |f| u16::from(f.code)),
                    ))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ConnectError::from_ws(e)),
                None => return Err(ConnectError::NoSnapshot),
            }
        }
        Ok(())
    };
    timeout(limit, snapshots)
        .await
        .map_err(|_| ConnectError::Timeout)??;
    Ok(ws)
}

/// The `code` of an `error` message.
fn error_code(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// How a session's socket stopped being read.
enum Stop {
    /// The bench is closing the sessions.
    Closing,
    /// The server closed the socket, or the connection ended.
    Dropped,
}

/// Reads one socket until the bench closes the sessions or the server
/// drops it.
async fn pump(
    ws: &mut Ws,
    plan: &Plan,
    sh: &Shared,
    seqs: &mut SeqTracker,
    close_rx: &mut watch::Receiver<bool>,
) -> Stop {
    let lag = Duration::from_millis(plan.lag_ms);
    loop {
        if *close_rx.borrow() {
            return Stop::Closing;
        }
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if sh.on_text(&t, seqs) == Kind::Quotes && !lag.is_zero() {
                        tokio::time::sleep(lag).await;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    *lock(&sh.server_close_codes).entry(code).or_default() += 1;
                    if plan.reconnect.is_some() {
                        // Send the close reply tungstenite has queued, as a
                        // browser does before its close event; the
                        // connection then ends when the socket is dropped.
                        let _ = timeout(Duration::from_millis(100), ws.flush()).await;
                        return Stop::Dropped;
                    }
                }
                Some(Ok(Message::Ping(_))) => {
                    if sh.measuring.load(Ordering::Relaxed) {
                        sh.pings.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Stop::Dropped,
            },
            changed = close_rx.changed() => {
                if changed.is_err() {
                    return Stop::Closing;
                }
            }
        }
    }
}

/// Brings a dropped session back, with the plan's reconnect credentials,
/// retrying with a short backoff until it is back or its time is up;
/// returns the new socket and the server it is on.
async fn reconnect(
    i: usize,
    plan: &Plan,
    r: &Reconnect,
    sh: &Shared,
    from: SocketAddr,
    close_rx: &watch::Receiver<bool>,
) -> Option<(Ws, SeqTracker, SocketAddr)> {
    let dropped = Instant::now();
    sh.storm.dropped();
    let deadline = dropped + Duration::from_millis(r.limit_ms);
    let mut pause = Duration::from_millis(10);
    for attempt in 0.. {
        let mut seqs = SeqTracker::default();
        let addr = plan.reconnect_addr(i, from, attempt);
        let opened = {
            let _permit = match &sh.storm.gate {
                Some(g) => g.clone().acquire_owned().await.ok(),
                None => None,
            };
            open_session(plan, i, addr, r.token.as_deref(), sh, &mut seqs).await
        };
        match opened {
            Ok(ws) => {
                sh.storm.back(dropped.elapsed());
                return Some((ws, seqs, addr));
            }
            Err(e) => {
                sh.storm.error(&e);
                if *close_rx.borrow() || Instant::now() + pause > deadline {
                    sh.storm.failed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                sh.storm.retries.fetch_add(1, Ordering::Relaxed);
                // Jittered, so retries do not come back as one wave.
                let jitter = rand::random::<f64>() * 0.5 + 0.75;
                tokio::time::sleep(pause.mul_f64(jitter)).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
    None
}

async fn session(
    i: usize,
    plan: Arc<Plan>,
    sh: Arc<Shared>,
    sem: Arc<Semaphore>,
    started: Instant,
    mut close_rx: watch::Receiver<bool>,
) {
    let permit = sem.acquire_owned().await.ok();
    let t0 = Instant::now();
    let mut seqs = SeqTracker::default();
    let mut addr = plan.addr_of(i);
    let mut ws = match open_session(&plan, i, addr, plan.token.as_deref(), &sh, &mut seqs).await {
        Ok(ws) => ws,
        Err(e) => return sh.connect_failed(e),
    };
    sh.opened(addr);
    sh.connect_latency.record(t0.elapsed().as_micros() as u64);
    sh.ready.fetch_add(1, Ordering::Relaxed);
    sh.last_ready_us
        .fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    drop(permit);

    loop {
        match pump(&mut ws, &plan, &sh, &mut seqs, &mut close_rx).await {
            Stop::Closing => break,
            Stop::Dropped => {
                drop(ws);
                sh.lost(addr);
                let back = match &plan.reconnect {
                    Some(r) if !*close_rx.borrow() => {
                        reconnect(i, &plan, r, &sh, addr, &close_rx).await
                    }
                    _ => {
                        sh.unexpected_closes.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                };
                match back {
                    Some((new_ws, new_seqs, new_addr)) => {
                        (ws, seqs, addr) = (new_ws, new_seqs, new_addr);
                        sh.opened(addr);
                    }
                    None => {
                        sh.ended.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }
    }
    sh.lost(addr);
    if close_ws(&mut ws).await {
        sh.closed_clean.fetch_add(1, Ordering::Relaxed);
    } else {
        sh.closed_unclean.fetch_add(1, Ordering::Relaxed);
    }
    drop(ws);
    sh.ended.fetch_add(1, Ordering::Relaxed);
}

// --- results -----------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectStats {
    pub requested: u64,
    pub ok: u64,
    pub failed: u64,
    pub seconds: f64,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub fd_limit_at: Option<u64>,
    pub no_ports_at: Option<u64>,
    pub latency: Hist,
    /// CPU seconds the client process(es) spent connecting.
    pub client_cpu_s: f64,
}

impl ConnectStats {
    fn merge(&mut self, o: ConnectStats) {
        self.requested += o.requested;
        self.ok += o.ok;
        self.failed += o.failed;
        self.seconds = self.seconds.max(o.seconds);
        add_counts(&mut self.errors, o.errors);
        self.first_error = self.first_error.take().or(o.first_error);
        self.fd_limit_at = merge_opt(self.fd_limit_at, o.fd_limit_at, |a, b| a + b);
        self.no_ports_at = self.no_ports_at.or(o.no_ports_at);
        self.latency.merge(&o.latency);
        self.client_cpu_s += o.client_cpu_s;
    }
}

/// Two processes' figures for one field, either of which may be missing.
fn merge_opt<T>(a: Option<T>, b: Option<T>, f: impl FnOnce(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

/// Adds another process's counts (by error key or close code) into `into`.
fn add_counts<K: Ord>(into: &mut BTreeMap<K, u64>, from: BTreeMap<K, u64>) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

/// A map of close codes as a list of pairs. In JSON a map key is a string,
/// and the worker events, an internally tagged enum, cannot read one back
/// as a number.
mod close_codes {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(m: &BTreeMap<u16, u64>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u16, u64>, D::Error> {
        Ok(Vec::<(u16, u64)>::deserialize(d)?.into_iter().collect())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WindowStats {
    pub seconds: f64,
    pub msgs: u64,
    pub bytes: u64,
    pub other_msgs: u64,
    /// WebSocket pings from the server (each answered with a pong).
    pub pings: u64,
    pub latency: Hist,
    pub gaps: u64,
    pub missed: u64,
    pub duplicates: u64,
    pub unexpected_closes: u64,
    #[serde(with = "close_codes")]
    pub server_close_codes: BTreeMap<u16, u64>,
    /// CPU seconds this client process spent in the window.
    pub client_cpu_s: f64,
    pub live: u64,
}

impl WindowStats {
    /// The bench's own CPU over the window, as a share of one core.
    pub fn client_cpu_percent(&self) -> f64 {
        self.client_cpu_s / self.seconds.max(1e-9) * 100.0
    }

    pub fn merge(&mut self, o: WindowStats) {
        self.seconds = self.seconds.max(o.seconds);
        self.msgs += o.msgs;
        self.bytes += o.bytes;
        self.other_msgs += o.other_msgs;
        self.pings += o.pings;
        self.latency.merge(&o.latency);
        self.gaps += o.gaps;
        self.missed += o.missed;
        self.duplicates += o.duplicates;
        self.unexpected_closes += o.unexpected_closes;
        add_counts(&mut self.server_close_codes, o.server_close_codes);
        self.client_cpu_s += o.client_cpu_s;
        self.live += o.live;
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CloseStats {
    pub clean: u64,
    pub unclean: u64,
    pub seconds: f64,
    /// Sequence counters over the whole life of the sessions.
    pub gaps: u64,
    pub missed: u64,
    pub unexpected_closes: u64,
}

impl CloseStats {
    fn merge(&mut self, o: CloseStats) {
        self.clean += o.clean;
        self.unclean += o.unclean;
        self.seconds = self.seconds.max(o.seconds);
        self.gaps += o.gaps;
        self.missed += o.missed;
        self.unexpected_closes += o.unexpected_closes;
    }
}

/// A storm: every session dropped by the server and reconnecting at once.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StormStats {
    /// Sessions live when the storm began.
    pub sessions: u64,
    pub dropped: u64,
    pub reconnected: u64,
    pub failed: u64,
    pub retries: u64,
    /// Wall-clock microseconds (one clock for every process on the machine).
    pub first_drop_us: Option<i64>,
    pub last_drop_us: Option<i64>,
    pub last_back_us: Option<i64>,
    /// Per session, from its drop to its snapshot(s) on the new socket.
    pub latency: Hist,
    pub errors: BTreeMap<String, u64>,
    #[serde(with = "close_codes")]
    pub close_codes: BTreeMap<u16, u64>,
    /// Sessions not yet dropped, or dropped and neither back nor given up,
    /// when the wait ended: 0 once the storm is over.
    pub pending: u64,
}

impl StormStats {
    fn merge(&mut self, o: StormStats) {
        self.sessions += o.sessions;
        self.dropped += o.dropped;
        self.reconnected += o.reconnected;
        self.failed += o.failed;
        self.retries += o.retries;
        self.first_drop_us = merge_opt(self.first_drop_us, o.first_drop_us, i64::min);
        self.last_drop_us = merge_opt(self.last_drop_us, o.last_drop_us, i64::max);
        self.last_back_us = merge_opt(self.last_back_us, o.last_back_us, i64::max);
        self.latency.merge(&o.latency);
        add_counts(&mut self.errors, o.errors);
        add_counts(&mut self.close_codes, o.close_codes);
        self.pending += o.pending;
    }
}

// --- a group of sessions in this process -------------------------------------

pub struct LocalGroup {
    plan: Arc<Plan>,
    range: Range<usize>,
    shared: Arc<Shared>,
    close_tx: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    window_started: Option<(Instant, f64)>,
    /// Set by [`LocalGroup::mark`]: the storm to wait for drops only these
    /// sessions, not every live one.
    expect_drops: Option<u64>,
}

impl LocalGroup {
    pub fn new(plan: Plan, range: Range<usize>) -> Self {
        let gate = plan
            .reconnect
            .as_ref()
            .filter(|r| r.concurrency > 0)
            .map(|r| Arc::new(Semaphore::new(r.concurrency)));
        let shared = Shared {
            storm: StormCounters {
                gate,
                ..Default::default()
            },
            ..Default::default()
        };
        Self {
            plan: Arc::new(plan),
            range,
            shared: Arc::new(shared),
            close_tx: watch::channel(false).0,
            tasks: Vec::new(),
            window_started: None,
            expect_drops: None,
        }
    }

    /// Opens every session of the range (at most `concurrency` at once) and
    /// returns once each has its snapshot or has failed.
    pub async fn connect(&mut self) -> ConnectStats {
        let sem = Arc::new(Semaphore::new(self.plan.concurrency.max(1)));
        let started = Instant::now();
        let cpu = procinfo::self_cpu_seconds();
        for i in self.range.clone() {
            self.tasks.push(tokio::spawn(session(
                i,
                self.plan.clone(),
                self.shared.clone(),
                sem.clone(),
                started,
                self.close_tx.subscribe(),
            )));
        }
        let n = self.range.len() as u64;
        let sh = &self.shared;
        while sh.ready.load(Ordering::Relaxed) + sh.failed.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ok = sh.ready.load(Ordering::Relaxed);
        ConnectStats {
            requested: n,
            ok,
            failed: sh.failed.load(Ordering::Relaxed),
            seconds: if ok > 0 {
                sh.last_ready_us.load(Ordering::Relaxed) as f64 / 1e6
            } else {
                started.elapsed().as_secs_f64()
            },
            errors: lock(&sh.errors).clone(),
            first_error: lock(&sh.first_error).clone(),
            fd_limit_at: *lock(&sh.fd_limit_at),
            no_ports_at: *lock(&sh.no_ports_at),
            latency: sh.connect_latency.snapshot(),
            client_cpu_s: procinfo::self_cpu_seconds() - cpu,
        }
    }

    pub fn start_window(&mut self) {
        let sh = &self.shared;
        sh.latency.reset();
        sh.msgs.store(0, Ordering::Relaxed);
        sh.bytes.store(0, Ordering::Relaxed);
        sh.other_msgs.store(0, Ordering::Relaxed);
        sh.pings.store(0, Ordering::Relaxed);
        self.window_started = Some((Instant::now(), procinfo::self_cpu_seconds()));
        sh.measuring.store(true, Ordering::Relaxed);
    }

    pub fn end_window(&mut self) -> WindowStats {
        let sh = &self.shared;
        sh.measuring.store(false, Ordering::Relaxed);
        let (at, cpu) = self
            .window_started
            .take()
            .unwrap_or((Instant::now(), procinfo::self_cpu_seconds()));
        WindowStats {
            seconds: at.elapsed().as_secs_f64(),
            msgs: sh.msgs.load(Ordering::Relaxed),
            bytes: sh.bytes.load(Ordering::Relaxed),
            other_msgs: sh.other_msgs.load(Ordering::Relaxed),
            pings: sh.pings.load(Ordering::Relaxed),
            latency: sh.latency.snapshot(),
            gaps: sh.gaps.load(Ordering::Relaxed),
            missed: sh.missed.load(Ordering::Relaxed),
            duplicates: sh.duplicates.load(Ordering::Relaxed),
            unexpected_closes: sh.unexpected_closes.load(Ordering::Relaxed),
            server_close_codes: lock(&sh.server_close_codes).clone(),
            client_cpu_s: procinfo::self_cpu_seconds() - cpu,
            live: sh.ready.load(Ordering::Relaxed) - sh.ended.load(Ordering::Relaxed),
        }
    }

    /// Before one server of several goes away: the sessions live on it
    /// now, which the next storm then waits for (instead of every session).
    pub fn mark(&mut self, addr: SocketAddr) -> u64 {
        let n = lock(&self.shared.live_on).get(&addr).copied().unwrap_or(0);
        self.expect_drops = Some(n);
        n
    }

    /// After the server was told to drop every session (or the sessions of
    /// the server [`mark`](Self::mark)ed): waits until each of them has been
    /// dropped and is back (or gave up), at most `limit`.
    pub async fn await_storm(&mut self, limit: Duration) -> StormStats {
        let sh = &self.shared;
        let st = &sh.storm;
        let live = self
            .expect_drops
            .take()
            .unwrap_or_else(|| sh.ready.load(Ordering::Relaxed) - sh.ended.load(Ordering::Relaxed));
        let deadline = Instant::now() + limit;
        let pending = || {
            let dropped = st.dropped.load(Ordering::Relaxed);
            let settled =
                st.reconnected.load(Ordering::Relaxed) + st.failed.load(Ordering::Relaxed);
            live.saturating_sub(dropped) + dropped.saturating_sub(settled)
        };
        while pending() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (first_drop_us, last_drop_us, last_back_us) = *lock(&st.times);
        StormStats {
            sessions: live,
            dropped: st.dropped.load(Ordering::Relaxed),
            reconnected: st.reconnected.load(Ordering::Relaxed),
            failed: st.failed.load(Ordering::Relaxed),
            retries: st.retries.load(Ordering::Relaxed),
            first_drop_us,
            last_drop_us,
            last_back_us,
            latency: st.latency.snapshot(),
            errors: lock(&st.errors).clone(),
            close_codes: lock(&sh.server_close_codes).clone(),
            pending: pending(),
        }
    }

    /// Closes every session (close handshake, then the TCP connection).
    pub async fn close(&mut self) -> CloseStats {
        let started = Instant::now();
        let _ = self.close_tx.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        let sh = &self.shared;
        CloseStats {
            clean: sh.closed_clean.load(Ordering::Relaxed),
            unclean: sh.closed_unclean.load(Ordering::Relaxed),
            seconds: started.elapsed().as_secs_f64(),
            gaps: sh.gaps.load(Ordering::Relaxed),
            missed: sh.missed.load(Ordering::Relaxed),
            unexpected_closes: sh.unexpected_closes.load(Ordering::Relaxed),
        }
    }
}

// --- worker processes --------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct WorkerConfig {
    plan: Plan,
    start: usize,
    end: usize,
    threads: usize,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum WorkerEvent {
    Ready,
    Connected(ConnectStats),
    Window(WindowStats),
    Storm(StormStats),
    Marked(u64),
    Closed(CloseStats),
}

/// `quotecast-bench worker`: reads its config as the first stdin line, then
/// the commands `connect`, `start`, `end`, `mark ADDR`, `storm MS`, `close`,
/// one a line;
/// answers each but `start` with one JSON line on stdout.
pub fn worker_main() -> Result<(), String> {
    let stdin = std::io::stdin();
    let mut first = String::new();
    stdin
        .lock()
        .read_line(&mut first)
        .map_err(|e| format!("worker: reading config: {e}"))?;
    let cfg: WorkerConfig =
        serde_json::from_str(&first).map_err(|e| format!("worker: bad config: {e}"))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line.trim().to_owned()).is_err() {
                break;
            }
        }
    });
    let emit = |ev: &WorkerEvent| {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, ev);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    };
    let rt = crate::runtime(cfg.threads)?;
    rt.block_on(async move {
        let mut group = LocalGroup::new(cfg.plan, cfg.start..cfg.end);
        emit(&WorkerEvent::Ready);
        while let Some(cmd) = rx.recv().await {
            match cmd.as_str() {
                "connect" => emit(&WorkerEvent::Connected(group.connect().await)),
                "start" => group.start_window(),
                "end" => emit(&WorkerEvent::Window(group.end_window())),
                c if c.starts_with("mark ") => match c["mark ".len()..].parse() {
                    Ok(addr) => emit(&WorkerEvent::Marked(group.mark(addr))),
                    Err(_) => emit(&WorkerEvent::Marked(0)),
                },
                c if c.starts_with("storm ") => {
                    let ms = c["storm ".len()..].parse().unwrap_or(60_000);
                    let limit = Duration::from_millis(ms);
                    emit(&WorkerEvent::Storm(group.await_storm(limit).await));
                }
                "close" => {
                    emit(&WorkerEvent::Closed(group.close().await));
                    break;
                }
                _ => {}
            }
        }
    });
    Ok(())
}

pub struct Remote {
    child: Child,
    stdin: ChildStdin,
    events: mpsc::UnboundedReceiver<Result<WorkerEvent, String>>,
}

impl Remote {
    fn send(&mut self, cmd: &str) -> Result<(), String> {
        writeln!(self.stdin, "{cmd}")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| format!("worker {}: {e}", self.child.id()))
    }

    async fn next(&mut self) -> Result<WorkerEvent, String> {
        match self.events.recv().await {
            Some(ev) => ev,
            None => Err(format!(
                "worker {} exited without answering",
                self.child.id()
            )),
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The sessions of one run, in this process or spread over worker processes.
/// Sends `cmd` to every worker process, then merges their answers (each
/// must be the one `pick` accepts).
async fn ask_all<T: Default>(
    rs: &mut [Remote],
    cmd: &str,
    merge: fn(&mut T, T),
    pick: impl Fn(WorkerEvent) -> Option<T>,
) -> Result<T, String> {
    for r in rs.iter_mut() {
        r.send(cmd)?;
    }
    let mut all = T::default();
    for r in rs.iter_mut() {
        let answer =
            pick(r.next().await?).ok_or_else(|| format!("worker: unexpected answer to {cmd}"))?;
        merge(&mut all, answer);
    }
    Ok(all)
}

pub enum Clients {
    Local(LocalGroup),
    Remote(Vec<Remote>),
}

impl Clients {
    pub async fn new(
        plan: Plan,
        sessions: usize,
        procs: usize,
        threads: usize,
    ) -> Result<Self, String> {
        if procs <= 1 {
            return Ok(Clients::Local(LocalGroup::new(plan, 0..sessions)));
        }
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut remotes = Vec::new();
        for k in 0..procs {
            let mut plan = plan.clone();
            plan.concurrency = plan.concurrency.div_ceil(procs);
            let cfg = WorkerConfig {
                plan,
                start: sessions * k / procs,
                end: sessions * (k + 1) / procs,
                threads,
            };
            let mut cmd = Command::new(&exe);
            cmd.arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            crate::target::die_with_parent(&mut cmd);
            let mut child = cmd.spawn().map_err(|e| format!("starting a worker: {e}"))?;
            let mut stdin = child.stdin.take().ok_or("worker stdin")?;
            let stdout = child.stdout.take().ok_or("worker stdout")?;
            let (tx, events) = mpsc::unbounded_channel();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let ev = serde_json::from_str::<WorkerEvent>(&line)
                        .map_err(|e| format!("worker said {line:?}: {e}"));
                    if tx.send(ev).is_err() {
                        break;
                    }
                }
            });
            let line = serde_json::to_string(&cfg).map_err(|e| e.to_string())?;
            writeln!(stdin, "{line}").map_err(|e| format!("worker config: {e}"))?;
            remotes.push(Remote {
                child,
                stdin,
                events,
            });
        }
        for r in &mut remotes {
            match r.next().await? {
                WorkerEvent::Ready => {}
                _ => return Err("worker: expected ready".into()),
            }
        }
        Ok(Clients::Remote(remotes))
    }

    pub async fn connect(&mut self) -> Result<ConnectStats, String> {
        match self {
            Clients::Local(g) => Ok(g.connect().await),
            Clients::Remote(rs) => {
                ask_all(rs, "connect", ConnectStats::merge, |e| match e {
                    WorkerEvent::Connected(s) => Some(s),
                    _ => None,
                })
                .await
            }
        }
    }

    pub fn start_window(&mut self) -> Result<(), String> {
        match self {
            Clients::Local(g) => {
                g.start_window();
                Ok(())
            }
            Clients::Remote(rs) => rs.iter_mut().try_for_each(|r| r.send("start")),
        }
    }

    pub async fn end_window(&mut self) -> Result<WindowStats, String> {
        match self {
            Clients::Local(g) => Ok(g.end_window()),
            Clients::Remote(rs) => {
                ask_all(rs, "end", WindowStats::merge, |e| match e {
                    WorkerEvent::Window(s) => Some(s),
                    _ => None,
                })
                .await
            }
        }
    }

    /// See [`LocalGroup::mark`]; the sum over the processes.
    pub async fn mark(&mut self, addr: SocketAddr) -> Result<u64, String> {
        match self {
            Clients::Local(g) => Ok(g.mark(addr)),
            Clients::Remote(rs) => {
                fn add(a: &mut u64, b: u64) {
                    *a += b;
                }
                ask_all(rs, &format!("mark {addr}"), add, |e| match e {
                    WorkerEvent::Marked(n) => Some(n),
                    _ => None,
                })
                .await
            }
        }
    }

    /// See [`LocalGroup::await_storm`].
    pub async fn await_storm(&mut self, limit: Duration) -> Result<StormStats, String> {
        match self {
            Clients::Local(g) => Ok(g.await_storm(limit).await),
            Clients::Remote(rs) => {
                let cmd = format!("storm {}", limit.as_millis());
                ask_all(rs, &cmd, StormStats::merge, |e| match e {
                    WorkerEvent::Storm(s) => Some(s),
                    _ => None,
                })
                .await
            }
        }
    }

    pub async fn close(&mut self) -> Result<CloseStats, String> {
        match self {
            Clients::Local(g) => Ok(g.close().await),
            Clients::Remote(rs) => {
                ask_all(rs, "close", CloseStats::merge, |e| match e {
                    WorkerEvent::Closed(s) => Some(s),
                    _ => None,
                })
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_a_quotes_message() {
        let m = br#"{"type":"quotes","watchlist_id":7,"seq":42,"ts":"2026-11-26T05:59:59.123456Z","quotes":[{"symbol":"A","market_time":"2026-11-26T05:59:59Z"}]}"#;
        let h = scan(m);
        assert_eq!(h.kind, Kind::Quotes);
        assert_eq!(h.watchlist_id, Some(7));
        assert_eq!(h.seq, Some(42));
        let want = chrono::DateTime::parse_from_rfc3339("2026-11-26T05:59:59.123456Z")
            .unwrap()
            .timestamp_micros();
        assert_eq!(h.ts_us, Some(want));
        let s = scan(br#"{"type":"snapshot","watchlist_id":7,"seq":3,"stale":true,"quotes":[]}"#);
        assert_eq!((s.kind, s.seq, s.ts_us), (Kind::Snapshot, Some(3), None));
        assert_eq!(scan(br#"{"type":"pong"}"#).kind, Kind::Other);
        let v2 = scan(
            br#"{"type":"quotes","watchlist_id":12,"epoch":"00ff00ff00ff00ff","seq":9,"tick":31,"ts":"2026-11-26T05:59:59.5Z","totals":[]}"#,
        );
        assert_eq!((v2.watchlist_id, v2.seq), (Some(12), Some(9)));
        assert!(v2.ts_us.is_some());
        let e = br#"{"type":"error","code":"limit_exceeded","message":"m","watchlist_id":3}"#;
        assert_eq!(scan(e).kind, Kind::Error);
    }

    #[test]
    fn seq_is_tracked_per_watchlist() {
        let sh = Shared::default();
        let mut seqs = SeqTracker::default();
        let msg = |w: i64, seq: u64| {
            format!(r#"{{"type":"quotes","watchlist_id":{w},"epoch":"e","seq":{seq},"quotes":[]}}"#)
        };
        for (w, seq) in [(1, 5), (2, 40), (1, 6), (2, 41), (1, 7), (2, 42)] {
            sh.on_text(&msg(w, seq), &mut seqs);
        }
        assert_eq!(sh.gaps.load(Ordering::Relaxed), 0);
        sh.on_text(&msg(2, 45), &mut seqs);
        sh.on_text(&msg(1, 7), &mut seqs);
        assert_eq!(sh.gaps.load(Ordering::Relaxed), 1);
        assert_eq!(sh.missed.load(Ordering::Relaxed), 2);
        assert_eq!(sh.duplicates.load(Ordering::Relaxed), 1);
    }

    /// A plan of v1 sessions on `addr`, one at a time, that nothing runs.
    fn plan(addr: SocketAddr, watchlist_ids: Vec<i64>) -> Plan {
        Plan {
            addr,
            token: None,
            watchlist_ids,
            source_ips: 1,
            concurrency: 1,
            lag_ms: 0,
            connect_timeout_ms: 1,
            subscriptions: 0,
            reconnect: None,
            addrs: Vec::new(),
        }
    }

    #[test]
    fn multiplexed_sessions_open_what_v1_sessions_open_one_by_one() {
        let mut plan = plan("127.0.0.1:1".parse().unwrap(), (1..=10).collect());
        let v1: Vec<i64> = (0..30).flat_map(|i| plan.watchlists_of(i)).collect();
        plan.subscriptions = 10;
        let multi: Vec<i64> = (0..3).flat_map(|i| plan.watchlists_of(i)).collect();
        assert_eq!(v1, multi);
        assert_eq!(plan.watchlists_of(1), (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn cluster_sessions_spread_and_reconnect_to_the_others() {
        let a: Vec<SocketAddr> = (1..=3)
            .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
            .collect();
        let mut plan = plan(a[0], vec![1]);
        assert_eq!(plan.addr_of(4), a[0]);
        assert_eq!(plan.reconnect_addr(4, a[0], 3), a[0]);
        plan.addrs = a.clone();
        let first: Vec<SocketAddr> = (0..6).map(|i| plan.addr_of(i)).collect();
        assert_eq!(first, [a[0], a[1], a[2], a[0], a[1], a[2]]);
        // Sessions dropped by the second server try the two others, and
        // spread over them rather than all landing on one.
        for attempt in 0..4 {
            for i in [1, 4, 7] {
                assert_ne!(plan.reconnect_addr(i, a[1], attempt), a[1]);
            }
        }
        let back: Vec<SocketAddr> = [1, 4]
            .iter()
            .map(|&i| plan.reconnect_addr(i, a[1], 0))
            .collect();
        assert_ne!(back[0], back[1]);
    }

    #[test]
    fn worker_events_carry_close_codes() {
        let codes: BTreeMap<u16, u64> = [(1008, 500), (1001, 2)].into();
        let events = [
            WorkerEvent::Window(WindowStats {
                server_close_codes: codes.clone(),
                ..Default::default()
            }),
            WorkerEvent::Storm(StormStats {
                close_codes: codes.clone(),
                ..Default::default()
            }),
        ];
        for ev in events {
            let line = serde_json::to_string(&ev).unwrap();
            match serde_json::from_str::<WorkerEvent>(&line).unwrap() {
                WorkerEvent::Window(w) => assert_eq!(w.server_close_codes, codes),
                WorkerEvent::Storm(s) => assert_eq!(s.close_codes, codes),
                _ => panic!("{line}"),
            }
        }
    }

    #[test]
    fn storm_stats_merge_keeps_the_outer_times() {
        let part = |first, last, back, pending| StormStats {
            sessions: 2,
            dropped: 2,
            reconnected: 2,
            first_drop_us: Some(first),
            last_drop_us: Some(last),
            last_back_us: Some(back),
            pending,
            ..Default::default()
        };
        let mut all = StormStats::default();
        all.merge(part(10, 20, 90, 0));
        all.merge(part(5, 15, 120, 0));
        assert_eq!(
            (all.first_drop_us, all.last_drop_us, all.last_back_us),
            (Some(5), Some(20), Some(120))
        );
        assert_eq!((all.sessions, all.reconnected, all.pending), (4, 4, 0));
        all.merge(part(1, 2, 3, 1));
        assert_eq!(all.pending, 1);
    }

    #[test]
    fn parses_timestamps_like_chrono() {
        for t in [
            "1970-01-01T00:00:00.000000Z",
            "2000-02-29T23:59:59.999999Z",
            "2026-11-26T05:59:59.5Z",
            "2026-03-01T00:00:00+09:00",
        ] {
            let want = chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_micros();
            assert_eq!(parse_ts(format!("{t}\"").as_bytes()), Some(want), "{t}");
        }
    }
}
