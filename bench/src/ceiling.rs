//! The ceiling: the least a WebSocket broadcaster can do on this machine.
//!
//! A bare tokio server, no actors, no database: it answers the upgrade of
//! `GET /ws/v1/watchlists/{id}` (any credentials), sends a snapshot, and
//! every tick encodes ONE `quotes` frame per watched watchlist (same number
//! of symbols and same fields as quotecast's, fresh `ts`, next `seq`),
//! frames it once and writes the same bytes to every socket. Whatever
//! quotecast adds on top of this is the price of its design, which is what
//! the ratio in each report shows.
//!
//! SIGUSR1 closes every connection at once with 1008, the ceiling's
//! equivalent of quotecast dropping all sessions (the `storm` scenario).

use crate::target::symbol_name;
use bytes::Bytes;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

#[derive(Debug, Clone, clap::Args)]
pub struct CeilingArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: SocketAddr,
    #[arg(long, default_value_t = 1000)]
    pub tick_ms: u64,
    #[arg(long, default_value_t = 1)]
    pub watchlists: usize,
    #[arg(long, default_value_t = 20)]
    pub symbols: usize,
    #[arg(long, default_value_t = 20)]
    pub distinct: usize,
    /// Runtime threads (quotecast runs one HTTP worker per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Run every thread under SCHED_BATCH (set before the runtime starts its
    /// threads, which inherit it), as quotecast does by default.
    #[arg(long)]
    pub batch_scheduling: bool,
}

/// One watchlist's channel: frames go out as (seq, framed bytes).
struct Channel {
    tx: broadcast::Sender<(u64, Bytes)>,
    seq: AtomicU64,
    symbols: Vec<String>,
}

/// A server-to-client text frame: unmasked, so identical for every socket.
fn text_frame(payload: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x81);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xFFFF => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f.into()
}

/// A quote object with the fields, field order and value sizes of
/// quotecast's.
#[derive(Serialize)]
struct Quote<'a> {
    symbol: &'a str,
    name: String,
    price: f64,
    previous_close: f64,
    change: f64,
    change_percent: f64,
    volume: u64,
    currency: &'static str,
    market_state: &'static str,
    market_time: String,
    quantity: f64,
    purchase_price: f64,
    unrealized_pl: f64,
}

/// The envelope, in quotecast's field order (`type` first: the client finds
/// `seq` and `ts` by looking at the start of each message).
#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    watchlist_id: usize,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    stale: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<String>,
    quotes: Vec<Quote<'a>>,
}

fn quote(symbol: &str, step: u64) -> Quote<'_> {
    let seed = symbol
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let prev = 100.0 + (seed % 4900) as f64;
    let price = ((prev * (1.0 + ((step % 200) as f64 - 100.0) / 10_000.0)) * 100.0).round() / 100.0;
    let change = ((price - prev) * 100.0).round() / 100.0;
    Quote {
        symbol,
        name: format!("{symbol} (simulated)"),
        price,
        previous_close: prev,
        change,
        change_percent: (change / prev * 1_000_000.0).round() / 10_000.0,
        volume: 1_000_000 + step * 1_234,
        currency: "USD",
        market_state: "REGULAR",
        market_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        quantity: 100.0,
        purchase_price: 100.0,
        unrealized_pl: ((price - 100.0) * 100.0 * 100.0).round() / 100.0,
    }
}

fn encode(ch: &Channel, watchlist_id: usize, seq: u64, step: u64, snapshot: bool) -> Bytes {
    let env = Envelope {
        kind: if snapshot { "snapshot" } else { "quotes" },
        watchlist_id,
        seq,
        stale: snapshot.then_some(false),
        ts: (!snapshot)
            .then(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        quotes: ch.symbols.iter().map(|s| quote(s, step)).collect(),
    };
    text_frame(&serde_json::to_vec(&env).unwrap_or_default())
}

pub fn main(args: CeilingArgs) -> Result<(), String> {
    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        args.threads
    };
    crate::procinfo::raise_fd_limit();
    if args.batch_scheduling {
        // As quotecast's `net::batch_scheduling`: the bench does not link
        // quotecast (it is a client of the public contract only).
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler reads `param` for the duration of the
        // call; pid 0 is the calling thread.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
            return Err(format!(
                "ceiling: SCHED_BATCH: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let rt = crate::runtime(threads)?;
    rt.block_on(serve(args))
}

async fn serve(args: CeilingArgs) -> Result<(), String> {
    // The backlog of actix-server (quotecast's); TcpListener::bind would use
    // 128, and bursts of connects would then wait for SYN retransmits.
    let listener = {
        let sock = if args.bind.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        };
        sock.and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(args.bind)?;
            s.listen(2048)
        })
        .map_err(|e| format!("ceiling: bind {}: {e}", args.bind))?
    };
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let channels: Arc<Vec<Channel>> = Arc::new(
        (0..args.watchlists)
            .map(|w| Channel {
                tx: broadcast::channel(16).0,
                seq: AtomicU64::new(0),
                symbols: (0..args.symbols)
                    .map(|j| symbol_name((w * args.symbols + j) % args.distinct.max(1)))
                    .collect(),
            })
            .collect(),
    );
    tokio::spawn(ticker(channels.clone(), args.tick_ms));
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sigusr1 = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
    // Each drop-all bumps the generation; every connection alive watches it.
    let (drop_all, _) = watch::channel(0u64);
    eprintln!("ceiling: listening on http://{addr}");
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, channels.clone(), drop_all.subscribe()));
                }
                Err(e) => {
                    // Out of descriptors: wait for some to be released.
                    eprintln!("ceiling: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = sigusr1.recv() => drop_all.send_modify(|g| *g += 1),
            _ = sigterm.recv() => return Ok(()),
        }
    }
}

async fn ticker(channels: Arc<Vec<Channel>>, tick_ms: u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(tick_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut step = 0u64;
    loop {
        tick.tick().await;
        step += 1;
        for (w, ch) in channels.iter().enumerate() {
            if ch.tx.receiver_count() == 0 {
                continue;
            }
            let seq = ch.seq.load(Ordering::Relaxed) + 1;
            let frame = encode(ch, w + 1, seq, step, false);
            ch.seq.store(seq, Ordering::Relaxed);
            let _ = ch.tx.send((seq, frame));
        }
    }
}

/// Reads the upgrade request: the watchlist id and the key.
async fn handshake(stream: &mut TcpStream) -> Option<(usize, String)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 16 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = std::str::from_utf8(&buf).ok()?;
    let mut lines = text.split("\r\n");
    let path = lines.next()?.split_whitespace().nth(1)?;
    let id: usize = path
        .strip_prefix("/ws/v1/watchlists/")?
        .split('?')
        .next()?
        .parse()
        .ok()?;
    let key = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    })?;
    Some((id, key))
}

async fn connection(
    mut stream: TcpStream,
    channels: Arc<Vec<Channel>>,
    mut drop_all: watch::Receiver<u64>,
) {
    let Some((id, key)) = handshake(&mut stream).await else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    let Some(ch) = id.checked_sub(1).and_then(|i| channels.get(i)) else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    // Subscribe before reading seq: a frame sent in between is then
    // skipped below rather than missed.
    let mut rx = ch.tx.subscribe();
    let seq = ch.seq.load(Ordering::Relaxed);
    let snapshot = encode(ch, id, seq, seq, true);
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    if stream.write_all(response.as_bytes()).await.is_err()
        || stream.write_all(&snapshot).await.is_err()
    {
        return;
    }
    let (mut rd, mut wr) = stream.split();
    let mut buf = [0u8; 256];
    loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Ok((s, bytes)) if s > seq => {
                    if wr.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // Too slow for the channel: it skips ahead, and the client
                // sees the jump in seq, as with quotecast's coalescing.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            n = rd.read(&mut buf) => match n {
                // The client sends nothing but a close frame (opcode 8): echo
                // a normal close and end the connection.
                Ok(n) if n > 0 && buf[0] & 0x0F == 0x8 => {
                    let _ = wr.write_all(&[0x88, 0x02, 0x03, 0xE8]).await;
                    return;
                }
                Ok(n) if n > 0 => {}
                _ => return,
            },
            _ = drop_all.changed() => {
                // Close 1008, as quotecast closes a session it drops.
                let _ = wr.write_all(&[0x88, 0x02, 0x03, 0xF0]).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_length() {
        assert_eq!(&text_frame(b"hi")[..], b"\x81\x02hi");
        let f = text_frame(&[b'a'; 300]);
        assert_eq!(&f[..4], &[0x81, 126, 0x01, 0x2C]);
        let f = text_frame(&vec![b'a'; 70_000]);
        assert_eq!(f[1], 127);
        assert_eq!(f.len(), 70_000 + 10);
    }
}
