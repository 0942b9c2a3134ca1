//! The outbound half of a WebSocket: one [`Outbox`] per session, the queue of
//! framed bytes that the connection writes, in the order they were queued.
//!
//! A worker frames each message once ([`Wire`]; server frames are not
//! masked, so the same bytes are valid on every socket) and each session's
//! outbox takes a reference to those bytes. The relay of the session's
//! thread hands them over directly, without a message to the session actor;
//! the actor puts its own answers, pings and the close frame through the
//! same outbox, so everything a client sees keeps one order. A frame that
//! finds nothing waiting before it is sent to the socket at once, by the
//! outbox; the rest are queued, and the connection reads them through
//! [`Writer`] and writes them (see [`super::transport`]).
//!
//! Bounds: a worker's offers are refused once `capacity` of them wait (the
//! subscription is then marked lagging and catches up with a snapshot); an
//! offer is one slot however many frames it holds (a join's opening is one,
//! however long its replay). The session's own frames are never refused,
//! but once more than `capacity` frames of any kind wait the session stops
//! reading its client ([`Throttled`]), so a client that sends and never reads
//! cannot grow the queue: its writes stall and the stall watchdog cuts it.
//!
//! Lifecycle: made by the upgrade (see [`super::endpoint`]), its queue
//! living in the session's [`SessionStats`]; shared by the session actor, the
//! relays' targets and the [`Writer`]. Given the socket's write half by the
//! upgrade, and lets go of it when the session stops (the write loop holds
//! the other handle). Closed by a close frame or when the actor stops; the
//! [`Writer`] ends once a closed outbox is empty, which ends the connection.
//! A [`Writer`] dropped by the connection (the peer went) tells the actor to
//! stop.

use super::messages::{Body, CloseSession, Closer, SessionStats};
use super::table::SessionGuard;
use crate::protocol::{close, Frame};
use actix::Recipient;
use actix_http::ws::{OpCode, Parser};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use socket2::SockRef;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::net::tcp::OwnedWriteHalf;

/// One unfragmented, unmasked server frame (RFC 6455 §5.2), framed by
/// actix-http's codec.
fn frame(op: OpCode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    Parser::write_message(&mut out, payload, op, true, false);
    out.freeze()
}

/// A text message, framed once: what every session on a broadcast shares
/// (and what a worker keeps in its history).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wire(Bytes);

impl Wire {
    pub fn new(text: &Frame) -> Self {
        Self(frame(OpCode::Text, text.as_bytes()))
    }

    /// The whole frame, as written.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// The JSON inside the frame.
    pub fn payload(&self) -> &[u8] {
        let start = match self.0[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        &self.0[start..]
    }
}

/// Why a worker's frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `capacity` frames are waiting: the client does not keep up.
    Full,
    /// The session is closing or gone.
    Closed,
}

/// The queue's state. In this order, and laid out as written, so that what
/// every frame reads (all but the last three fields) shares a 128-byte block
/// with the lock and the counters before it (see [`SessionStats`]).
#[repr(C)]
pub(super) struct Inner {
    /// Each frame, and whether it is the first of a worker's offer.
    frames: VecDeque<(Bytes, bool)>,
    /// The connection's task, waiting for a frame.
    writer: Option<Waker>,
    /// The socket's descriptor, for writing a frame straight away when
    /// nothing waits before it (see [`send_or_queue`]); valid while `socket`
    /// holds the socket. Taken away when the session ends.
    direct: Option<RawFd>,
    /// Worker offers waiting (their first frames not yet written).
    offers: usize,
    capacity: usize,
    /// A close frame is queued, or the session stopped: nothing more goes in.
    closed: bool,
    /// The connection's write loop holds frames it took and has not wholly
    /// written: nothing may be written past them.
    in_flight: bool,
    /// A worker's frame was refused: when the queue has drained, the session
    /// asks for the latest state rather than wait for the next broadcast,
    /// which may be long in coming (an upstream outage broadcasts nothing).
    catch_up: bool,
    /// Keeps `direct` open; dropped with it, so that the socket closes with
    /// its write loop.
    socket: Option<Arc<OwnedWriteHalf>>,
    /// The session's input, paused while the queue is over `capacity`.
    reader: Option<Waker>,
    /// The last `status` queued: a session on several watchlists gets the
    /// same one from each worker and writes it once.
    last_status: Option<Wire>,
}

impl Inner {
    pub(super) fn new() -> Self {
        Self {
            frames: VecDeque::new(),
            offers: 0,
            capacity: 0,
            closed: false,
            in_flight: false,
            direct: None,
            socket: None,
            writer: None,
            reader: None,
            last_status: None,
            catch_up: false,
        }
    }
}

/// A session's queue of framed bytes (cheap to clone: one shared queue).
///
/// The queue lives in the session's [`SessionStats`], beside the counters
/// every frame bumps: a relay's pass over 10,000 sessions missed the cache
/// on each session's lock and again on its counters, half of the time each,
/// when they were two allocations (docs/BENCHMARKS.md, cpu).
#[derive(Clone)]
pub struct Outbox {
    stats: Arc<SessionStats>,
}

impl Outbox {
    /// The queue of the session `stats` belong to, taking `capacity` of a
    /// worker's offers.
    pub fn new(capacity: usize, stats: Arc<SessionStats>) -> Self {
        let out = Self { stats };
        out.lock().capacity = capacity;
        out
    }

    // A panic while the lock is held leaves plain data, and every path
    // below keeps it consistent between statements: carry on with it.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.stats.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many of a worker's offers may wait before more are refused.
    pub fn set_capacity(&self, capacity: usize) {
        let mut inner = self.lock();
        inner.capacity = capacity;
        wake_reader_if_room(&mut inner);
    }

    /// Lets a worker's frames be written to `socket` by [`Outbox::offer`]
    /// itself while nothing waits before them.
    pub fn attach(&self, socket: Arc<OwnedWriteHalf>) {
        let mut inner = self.lock();
        if !inner.closed {
            inner.direct = Some(AsRef::<tokio::net::TcpStream>::as_ref(&*socket).as_raw_fd());
            inner.socket = Some(socket);
        }
    }

    /// Queues a worker's frames, unless `capacity` offers are waiting.
    ///
    /// A single frame with nothing before it (nothing queued, nothing held
    /// by the write loop) is written to the socket here, by the relay, when
    /// the socket takes it: one `send` and no wake-up of the session's write
    /// loop, which below saturation is every frame (docs/BENCHMARKS.md, cpu).
    /// What the socket does not take is queued as usual. All
    /// the frames of one body go in together, as one offer. Returns the
    /// number of frames queued.
    pub fn offer(&self, body: &Body) -> Result<usize, Refused> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(Refused::Closed);
        }
        if inner.offers >= inner.capacity {
            inner.catch_up = true;
            return Err(Refused::Full);
        }
        let was_empty = inner.frames.is_empty();
        let before = inner.frames.len();
        match body {
            Body::Frame(w) => {
                if send_or_queue(&mut inner, &w.0) {
                    drop(inner);
                    self.sent_now(1);
                    return Ok(1);
                }
            }
            Body::Status(w) => queue_status(&mut inner, w),
            Body::Opening { frames, status } => {
                inner
                    .frames
                    .extend(frames.iter().map(|w| (w.0.clone(), false)));
                if let Some(w) = status {
                    queue_status(&mut inner, w);
                }
            }
        }
        let queued = inner.frames.len() - before;
        if let Some(first) = inner.frames.get_mut(before) {
            first.1 = true;
            inner.offers += 1;
        }
        self.queued(inner, was_empty, queued);
        Ok(queued)
    }

    /// Queues a text message of the session's own (an answer, an alert).
    pub fn text(&self, text: Frame) {
        self.push(frame(OpCode::Text, text.as_bytes()), 1);
    }

    pub fn ping(&self) {
        // Every session pings on the same beat: one shared, static frame
        // (FIN and the ping opcode, then a zero length).
        const EMPTY_PING: [u8; 2] = [0x89, 0];
        self.push(Bytes::from_static(&EMPTY_PING), 0);
    }

    pub fn pong(&self, payload: &[u8]) {
        self.push(frame(OpCode::Pong, payload), 0);
    }

    /// Sends the close frame, or queues it behind what waits (with no code
    /// when `code` is `None`, as when echoing a client's close that had
    /// none); nothing is queued after it.
    pub fn close(&self, code: Option<u16>, reason: &str) {
        let mut payload = Vec::with_capacity(2 + reason.len());
        if let Some(code) = code {
            payload.extend_from_slice(&code.to_be_bytes());
            // A close frame's payload is at most 125 bytes (§5.5).
            payload.extend_from_slice(truncate_utf8(reason, 123).as_bytes());
        }
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        let was_empty = inner.frames.is_empty();
        // Sent at once when nothing waits, like any other frame, rather than
        // queued for the write loop's next turn on its thread.
        send_or_queue(&mut inner, &frame(OpCode::Close, &payload));
        inner.closed = true;
        // The write loop ends once a closed outbox is empty: wake it.
        self.queued(inner, was_empty, 0);
    }

    /// The session stopped: the writer ends once what is queued is written.
    pub fn finish(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.direct = None;
        inner.socket = None;
        if let Some(w) = inner.writer.take() {
            w.wake();
        }
    }

    /// The counters of the session this outbox belongs to.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// Frames waiting to be written.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().frames.len()
    }

    fn push(&self, bytes: Bytes, texts: usize) {
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        let was_empty = inner.frames.is_empty();
        if send_or_queue(&mut inner, &bytes) {
            drop(inner);
            self.sent_now(texts);
            return;
        }
        self.queued(inner, was_empty, texts);
    }

    /// A frame went to the socket whole, past the queue: progress for the
    /// watchdog, and `texts` text messages sent.
    fn sent_now(&self, texts: usize) {
        self.stats.mark_progress();
        self.count_sent(texts);
    }

    fn count_sent(&self, texts: usize) {
        if texts > 0 {
            self.stats
                .sent
                .fetch_add(texts as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn queued(&self, mut inner: MutexGuard<'_, Inner>, was_empty: bool, texts: usize) {
        // A writer that had caught up is not stalled until it fails to take
        // what is queued now: this counts as progress for the watchdog.
        if was_empty {
            self.stats.mark_progress();
        }
        let writer = inner.writer.take();
        drop(inner);
        self.count_sent(texts);
        if let Some(w) = writer {
            w.wake();
        }
    }

    /// True (and the caller is woken later) while more than `capacity`
    /// frames wait: the session's input is paused until they drain.
    fn backlogged(&self, cx: &Context<'_>) -> bool {
        let mut inner = self.lock();
        if inner.frames.len() > inner.capacity && !inner.closed {
            inner.reader = Some(cx.waker().clone());
            true
        } else {
            false
        }
    }
}

/// Sends `frame` to the socket at once if nothing waits before it, and
/// returns true if all of it went; otherwise queues what did not go.
///
/// The descriptor is used as is: through the write half, the write went
/// through four pointers (the half, the stream, its registration, the
/// readiness) before the `send`, a cache miss each per session and frame,
/// which cost more than the write loop's task it saved. The socket is
/// non-blocking; a full one answers `WouldBlock` and the frame is queued; a
/// failed one is queued too, and the write loop meets the failure on its
/// next write.
fn send_or_queue(inner: &mut Inner, frame: &Bytes) -> bool {
    let sent = match inner.direct {
        Some(fd) if !inner.closed && !inner.in_flight && inner.frames.is_empty() => {
            // SAFETY: `inner.socket` holds the socket's write half whenever
            // `direct` is set (both are set and cleared together, under the
            // lock held here), so the descriptor is open; the borrow ends
            // with this call and never closes it.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            SockRef::from(&fd).send(frame).unwrap_or(0)
        }
        _ => 0,
    };
    if sent == frame.len() {
        return true;
    }
    inner.frames.push_back((frame.slice(sent..), false));
    false
}

fn queue_status(inner: &mut Inner, w: &Wire) {
    if inner.last_status.as_ref() != Some(w) {
        inner.last_status = Some(w.clone());
        inner.frames.push_back((w.0.clone(), false));
    }
}

fn wake_reader_if_room(inner: &mut Inner) {
    if inner.frames.len() <= inner.capacity {
        if let Some(r) = inner.reader.take() {
            r.wake();
        }
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The outbox's frames, as the connection's write loop asks for them (see
/// [`super::transport`]).
pub struct Writer {
    outbox: Outbox,
    /// Told to stop when the connection drops this writer, and to catch up
    /// when frames were refused and the queue has drained.
    session: Closer,
    catch_up: Recipient<super::messages::CatchUp>,
    /// The session's place in the table, kept while the connection lives
    /// even if the actor has stopped: a connection that cannot flush its
    /// close frame is still found, and cut, by the stall watchdog.
    _guard: Option<Arc<SessionGuard>>,
}

impl Writer {
    pub fn new(
        outbox: Outbox,
        session: Closer,
        catch_up: Recipient<super::messages::CatchUp>,
        guard: Option<Arc<SessionGuard>>,
    ) -> Self {
        Self {
            outbox,
            session,
            catch_up,
            _guard: guard,
        }
    }
}

impl Writer {
    /// The next frame to write. `holding`: the caller still has frames it
    /// took and has not wholly written, so the outbox must not write past
    /// them (see [`Outbox::offer`]).
    pub fn poll_frame(&mut self, cx: &mut Context<'_>, holding: bool) -> Poll<Option<Bytes>> {
        let mut inner = self.outbox.lock();
        self.outbox.stats.mark_progress();
        if let Some((bytes, first_of_offer)) = inner.frames.pop_front() {
            if first_of_offer {
                inner.offers -= 1;
            }
            inner.in_flight = true;
            wake_reader_if_room(&mut inner);
            let catch_up = inner.frames.is_empty() && std::mem::take(&mut inner.catch_up);
            drop(inner);
            if catch_up {
                self.catch_up.do_send(super::messages::CatchUp);
            }
            return Poll::Ready(Some(bytes));
        }
        inner.in_flight = holding;
        if inner.closed {
            return Poll::Ready(None);
        }
        inner.writer = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Stream for Writer {
    type Item = Bytes;

    /// Frame by frame, each one written before the next is asked for.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_frame(cx, false)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.outbox.finish();
        // The connection is gone (or done): the session goes with it.
        self.session.do_send(CloseSession {
            code: close::GOING_AWAY,
            reason: "connection closed",
        });
    }
}

/// The session's input, paused while its outbox is backlogged: a client
/// that keeps sending and never reads stops being read.
pub struct Throttled<S> {
    input: S,
    outbox: Outbox,
}

impl<S> Throttled<S> {
    pub fn new(input: S, outbox: Outbox) -> Self {
        Self { input, outbox }
    }
}

impl<S: Stream + Unpin> Stream for Throttled<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        if this.outbox.backlogged(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut this.input).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_length_in_the_smallest_form() {
        assert_eq!(&frame(OpCode::Text, b"hi")[..], b"\x81\x02hi");
        let mid = frame(OpCode::Text, &[b'a'; 300]);
        assert_eq!(&mid[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(mid.len(), 304);
        let big = frame(OpCode::Text, &[b'a'; 70_000]);
        assert_eq!(&big[..2], &[0x81, 127]);
        assert_eq!(u64::from_be_bytes(big[2..10].try_into().unwrap()), 70_000);
        assert_eq!(big.len(), 70_010);
    }

    #[test]
    fn a_wire_frame_gives_its_payload_back_at_every_length() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let text: Frame = "x".repeat(len).into();
            assert_eq!(Wire::new(&text).payload(), text.as_bytes(), "{len}");
        }
    }

    #[test]
    fn what_every_frame_reads_is_in_one_128_byte_block() {
        let stats = SessionStats::new();
        let base = &stats as *const SessionStats as usize;
        assert_eq!(base % 128, 0);
        let guard = stats.queue.lock().unwrap();
        let inner = &*guard as *const Inner as usize - base;
        let hot_end = inner + std::mem::offset_of!(Inner, socket);
        assert!(hot_end <= 128, "hot fields end at byte {hot_end}");
    }

    #[test]
    fn the_static_ping_is_an_empty_ping_frame() {
        let out = Outbox::new(1, Arc::new(SessionStats::new()));
        out.ping();
        assert_eq!(out.lock().frames[0].0, frame(OpCode::Ping, b""));
    }

    #[test]
    fn a_long_close_reason_is_cut_at_a_character() {
        let reason = "é".repeat(100);
        let cut = truncate_utf8(&reason, 123);
        assert_eq!(cut.len(), 122);
        assert!(reason.starts_with(cut));
    }

    #[test]
    fn offers_stop_at_capacity_and_own_frames_do_not() {
        let out = Outbox::new(2, Arc::new(SessionStats::new()));
        let body = Body::Frame(Wire::new(&"{}".into()));
        let opening = Body::Opening {
            frames: vec![Wire::new(&"{}".into()); 5],
            status: None,
        };
        assert_eq!(out.offer(&opening), Ok(5), "an opening is one offer");
        assert_eq!(out.offer(&body), Ok(1));
        assert_eq!(out.offer(&body), Err(Refused::Full));
        out.text("{}".into());
        assert_eq!(out.len(), 7);
        out.close(Some(1000), "bye");
        assert_eq!(out.offer(&body), Err(Refused::Closed));
        out.text("{}".into());
        assert_eq!(out.len(), 8, "nothing after the close frame");
    }

    #[test]
    fn a_repeated_status_is_queued_once() {
        let out = Outbox::new(8, Arc::new(SessionStats::new()));
        let status = Body::Status(Wire::new(&r#"{"type":"status"}"#.into()));
        assert_eq!(out.offer(&status), Ok(1));
        assert_eq!(out.offer(&status), Ok(0));
        let other = Body::Status(Wire::new(&r#"{"type":"status","x":1}"#.into()));
        assert_eq!(out.offer(&other), Ok(1));
    }
}
