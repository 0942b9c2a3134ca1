//! The upgraded connection itself: after the 101, a session's socket is
//! read and written here, not by actix-http's h1 dispatcher.
//!
//! Why: a broadcast frame is the same bytes for every session (see
//! [`super::outbox`]). Through the dispatcher each frame was copied into
//! the connection's write buffer, the body was polled twice per frame and
//! every connection kept the dispatcher's two 8 KiB buffers for its whole
//! life. Here the shared bytes go to the socket as they are (sent by the
//! outbox itself when nothing waits, else by the write loop here, `writev`
//! for several), and a connection keeps no buffer between reads: each read
//! is copied into an allocation of its own size.
//!
//! How: the server is assembled from actix-http's `HttpService` with an
//! upgrade service (see [`crate::startup`]); actix-web's `HttpServer`
//! offers no way to take the socket. actix-http hands every request that
//! carries `Upgrade: websocket` to that service with the socket. The service
//! runs the request through the same [`actix_web::App`] as every other
//! request, marked [`ViaUpgrade`], so routing, checks and error bodies are
//! the ones the rest of the API has. If the endpoint accepted the upgrade,
//! its 101 carries a [`PendingSession`]; the service writes the 101 head,
//! starts the session on the socket's read half and writes its outbox to the
//! write half. Any other answer is written whole and the connection is
//! closed after it (`connection: close`): a client that asked to upgrade
//! has no use for the connection afterwards.
//!
//! Lifecycle: after the 101 the dispatcher's task ends, and the connection
//! is two halves. The write half is owned by the write loop (`Pump`), a
//! task spawned on the same HTTP worker thread; it ends when the outbox is
//! closed and written, or on a write error, and dropping its [`Writer`]
//! stops the session actor. The read half is owned by the actor's input and
//! ends with the actor (client close, violation, revocation, or the writer
//! gone). The socket closes when both halves are dropped. Neither is counted
//! by actix-server's connection limit or waited for by its graceful
//! shutdown: sessions have their own limits, and `AppHandle::shutdown`
//! closes every session and waits for the session table to empty before it
//! stops the server; a worker thread that stops drops its tasks, and with
//! them the sessions.

use super::frames::{Limits, Messages};
use super::messages::Closer;
use super::outbox::{Outbox, Throttled, Writer};
use super::table::SessionGuard;
use super::WsSession;
use actix::AsyncContext;
use actix_codec::Framed;
use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::h1::{Codec, Message};
use actix_http::header::{HeaderMap, HeaderValue};
use actix_http::HttpMessage;
use actix_http::{ConnectionType, Request, Response, StatusCode};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::error::PayloadError;
use bytes::{Buf, Bytes};
use futures_util::{SinkExt, Stream};
use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Marks a request that came through the upgrade service: only those can
/// be upgraded (the endpoint refuses the others, which a plain dispatcher
/// would answer with a 101 and no socket to hand over).
#[derive(Debug, Clone, Copy)]
pub struct ViaUpgrade;

/// A session the endpoint accepted, waiting for its socket: carried from
/// the endpoint to [`serve`] in the 101's extensions.
pub struct PendingSession {
    session: WsSession,
    outbox: Outbox,
    guard: Arc<SessionGuard>,
    limits: Limits,
}

impl PendingSession {
    pub fn new(
        session: WsSession,
        outbox: Outbox,
        guard: Arc<SessionGuard>,
        limits: Limits,
    ) -> Self {
        Self {
            session,
            outbox,
            guard,
            limits,
        }
    }

    /// Starts the actor on this thread's arbiter, reading `input`; returns
    /// what the connection writes.
    fn start(self, input: SocketInput) -> Writer {
        let Self {
            session,
            outbox,
            guard,
            limits,
        } = self;
        let input = Throttled::new(Messages::new(input, limits), outbox.clone());
        let mut ctx = actix::Context::new();
        ctx.add_stream(input);
        // One address for closes, the writer's and the session's own.
        let closer: Closer = Arc::new(ctx.address().recipient());
        let mut session = session;
        session.closer = Some(closer.clone());
        let addr = ctx.run(session);
        Writer::new(outbox, closer, addr.recipient(), Some(guard))
    }
}

/// The upgrade service's call: the request through `app`, then the socket
/// to the session, or the answer written and the connection closed.
/// Never fails: what goes wrong on a connection is the client's, or its
/// network's, and is logged at debug.
pub async fn serve<S, B>(app: Rc<S>, mut req: Request, framed: Framed<TcpStream, Codec>)
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    detach_headers(&mut req);
    req.extensions_mut().insert(ViaUpgrade);
    let res: Response<BoxBody> = match app.call(req).await {
        Ok(res) => Response::from(res).map_into_boxed_body(),
        Err(e) => e.error_response().into(),
    };
    let (mut head, body) = res.into_parts();
    let pending = head.extensions_mut().remove::<PendingSession>();
    let done = match pending {
        Some(pending) if head.status() == StatusCode::SWITCHING_PROTOCOLS => {
            upgrade(head, framed, pending).await
        }
        _ => answer(head, body, framed).await,
    };
    if let Err(e) = done {
        log::debug!("upgraded connection ended: {e}");
    }
}

/// Gives the request headers of their own, sized to what it has.
///
/// Why: the parser's header values are slices of the connection's read
/// buffer (8 KiB), and its map has room for 32 headers (about 11 KiB).
/// actix pools finished requests per thread and per app (up to 128 each)
/// without clearing them, so an upgrade's request would keep that buffer
/// and that map alive after its socket went to the session, and after the
/// session closed. After a crowd of 10,000 upgrades that was 7 MiB held by
/// the pools (heaptrack, docs/BENCHMARKS.md), scattered over the heap where
/// it also kept the pages around it from going back to the system. Copied
/// out, the buffer goes with the dispatcher's parts at the upgrade; the copy
/// is a few hundred bytes.
fn detach_headers(req: &mut Request) {
    let shared = std::mem::take(req.headers_mut());
    let mut own = HeaderMap::with_capacity(shared.len_keys());
    for (name, value) in shared.iter() {
        // Parsed values are valid, so this copy cannot fail; if it ever
        // did, the shared value is still correct, only kept longer.
        let value = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        own.append(name.clone(), value);
    }
    *req.headers_mut() = own;
}

/// How many entries each of actix's pools keeps: actix-web's requests
/// (per app), actix-http's request heads and response heads (per thread).
const ACTIX_POOL: usize = 128;

/// Where the requests of [`refresh_pools`] go: no route has it (404).
const REFRESH_PATH: &str = "/.pool-refresh";

/// Renews what actix's pools hold on this thread, through `app`.
///
/// Why: the pools keep their entries, and what each entry last held (a
/// request's headers, path and extensions, a response's headers), for
/// reuse. After a crowd of upgrades those are allocations made during the
/// crowd, among the sessions' own, and each keeps its page of the heap
/// from going back: 15 MiB after 10,000 sessions had closed
/// (docs/BENCHMARKS.md, storm). Called once a crowd has gone (the sweeps'
/// trim decision): requests held open take every entry out, as many new
/// ones are put in, and the old ones, finding the pools full, are freed.
/// The requests go to a path no route has: a 404, no side effects. If
/// actix's pools ever keep more than 128 entries, some old entries stay;
/// nothing else changes.
pub async fn refresh_pools<S, B>(app: &S)
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let batch =
        || futures_util::future::join_all((0..ACTIX_POOL).map(|_| app.call(blank_request())));
    // Every entry out (these requests are answered from them)...
    let old = batch().await;
    // ... as many new ones, which go back into the app's requests and the
    // response heads (these without their header maps: a new one has room
    // for a dozen headers)...
    for mut res in batch().await.into_iter().flatten() {
        *res.headers_mut() = HeaderMap::new();
    }
    // ... and new request heads (the requests above keep theirs).
    drop((0..ACTIX_POOL).map(|_| blank_request()).collect::<Vec<_>>());
    // The pools are full: the old entries are freed.
    drop(old);
}

/// A request that holds nothing of its own: an empty header map (a new one
/// has room for 32 headers) and a static path.
fn blank_request() -> Request {
    let mut req = Request::new();
    req.head_mut().uri = actix_http::Uri::from_static(REFRESH_PATH);
    *req.headers_mut() = HeaderMap::new();
    req
}

/// Writes the 101, starts the session on the socket's read half and spawns
/// the write loop on its write half.
async fn upgrade(
    head: Response<()>,
    mut framed: Framed<TcpStream, Codec>,
    pending: PendingSession,
) -> std::io::Result<()> {
    framed.send(Message::Item((head, BodySize::None))).await?;
    // What the client sent after its request (its first frames, if it did
    // not wait for the 101) is in the dispatcher's read buffer. Copied out,
    // and the parts dropped here, so the dispatcher's two 8 KiB buffers are
    // freed now rather than kept, unused, for the session's life.
    let (io, early) = {
        let parts = framed.into_parts();
        (parts.io, Bytes::copy_from_slice(&parts.read_buf))
    };
    let (read, write) = io.into_split();
    let write = Arc::new(write);
    pending.outbox.attach(write.clone());
    let writer = pending.start(SocketInput::new(read, early));
    // The write loop gets a task of its own, and the dispatcher's task (its
    // state and this future's, several KiB) ends here instead of living as
    // long as the session.
    let pump = Pump::new(writer, write);
    actix_web::rt::spawn(async move {
        if let Err(e) = pump.await {
            log::debug!("session socket write failed: {e}");
        }
    });
    Ok(())
}

/// Writes a refusal (or any answer but an upgrade) whole, then closes.
async fn answer(
    mut head: Response<()>,
    body: BoxBody,
    mut framed: Framed<TcpStream, Codec>,
) -> std::io::Result<()> {
    head.head_mut().set_connection_type(ConnectionType::Close);
    let size = body.size();
    framed.feed(Message::Item((head, size))).await?;
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
        let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()))?;
        framed.feed(Message::Chunk(Some(chunk))).await?;
    }
    // actix-codec's `close` shuts the socket down without writing what
    // `feed` buffered: flush first.
    framed.send(Message::Chunk(None)).await?;
    framed.close().await
}

/// The largest single read. Each read is copied into an allocation of its
/// own length, so this is stack, not memory kept per connection.
const READ_CHUNK: usize = 8 * 1024;

/// The client's bytes, as the stream [`Messages`] decodes: first what came
/// with the request, then each read of the socket.
pub struct SocketInput {
    early: Bytes,
    read: OwnedReadHalf,
}

impl SocketInput {
    fn new(read: OwnedReadHalf, early: Bytes) -> Self {
        Self { early, read }
    }
}

impl Stream for SocketInput {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if !this.early.is_empty() {
            return Poll::Ready(Some(Ok(std::mem::take(&mut this.early))));
        }
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut chunk);
        match ready!(Pin::new(&mut this.read).poll_read(cx, &mut buf)) {
            Ok(()) if buf.filled().is_empty() => Poll::Ready(None),
            Ok(()) => Poll::Ready(Some(Ok(Bytes::copy_from_slice(buf.filled())))),
            Err(e) => Poll::Ready(Some(Err(PayloadError::Io(e)))),
        }
    }
}

/// Frames taken from the outbox per `writev`.
const BATCH: usize = 16;

/// The write loop: the outbox's frames to the socket, several per `writev`
/// when several wait, each written from the bytes the outbox holds. A
/// single frame that finds nothing waiting (a worker's broadcast, the
/// session's own, the close) is written by the outbox itself and never
/// comes here (see [`Outbox::offer`]); this loop writes the rest: a join's
/// opening and `status` frames, what queued behind a full socket or behind
/// frames the loop still holds, and what was queued before the socket was
/// attached.
struct Pump {
    writer: Writer,
    io: Arc<OwnedWriteHalf>,
    /// Taken from the outbox, not yet (wholly) written; the first may be
    /// partly written already.
    pending: VecDeque<Bytes>,
    /// The outbox is closed and empty: write what is pending, then end.
    ended: bool,
}

impl Pump {
    fn new(writer: Writer, io: Arc<OwnedWriteHalf>) -> Self {
        Self {
            writer,
            io,
            pending: VecDeque::with_capacity(BATCH),
            ended: false,
        }
    }
}

impl Future for Pump {
    type Output = std::io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            while !this.ended && this.pending.len() < BATCH {
                let holding = !this.pending.is_empty();
                match this.writer.poll_frame(cx, holding) {
                    Poll::Ready(Some(frame)) => this.pending.push_back(frame),
                    Poll::Ready(None) => this.ended = true,
                    Poll::Pending => break,
                }
            }
            if this.pending.is_empty() {
                if this.ended {
                    // Dropping the last handle of the write half shuts it
                    // down (the outbox let go of its own when it closed).
                    return Poll::Ready(Ok(()));
                }
                // The outbox has the waker.
                return Poll::Pending;
            }
            let socket: &TcpStream = (*this.io).as_ref();
            ready!(socket.poll_write_ready(cx))?;
            // One frame goes by `send`, several by `writev`: a `writev`
            // costs more in the kernel than a `send` of the same bytes
            // (docs/BENCHMARKS.md, cpu).
            let tried = if this.pending.len() == 1 {
                socket.try_write(&this.pending[0])
            } else {
                let mut slices = [IoSlice::new(&[]); BATCH];
                let n = this.pending.len().min(BATCH);
                for (slot, frame) in slices.iter_mut().zip(this.pending.iter()) {
                    *slot = IoSlice::new(frame);
                }
                socket.try_write_vectored(&slices[..n])
            };
            let mut written = match tried {
                Ok(0) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => n,
                // Readiness was stale; it is cleared, and the next
                // `poll_write_ready` waits for the socket.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            };
            while written > 0 {
                let first = this
                    .pending
                    .front_mut()
                    .expect("written bytes were pending");
                if written >= first.len() {
                    written -= first.len();
                    this.pending.pop_front();
                } else {
                    first.advance(written);
                    written = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::messages::{CatchUp, CloseSession, SessionStats};
    use actix::{Actor, Context, Handler};
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// Stands in for the session actor the writer reports to.
    struct Quiet;

    impl Actor for Quiet {
        type Context = Context<Self>;
    }

    impl Handler<CloseSession> for Quiet {
        type Result = ();
        fn handle(&mut self, _: CloseSession, _: &mut Context<Self>) {}
    }

    impl Handler<CatchUp> for Quiet {
        type Result = ();
        fn handle(&mut self, _: CatchUp, _: &mut Context<Self>) {}
    }

    /// A connected pair on loopback: the peer's end, and the server's.
    async fn connected() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server_socket, _) = listener.accept().await.unwrap();
        (peer, server_socket)
    }

    /// The server's end split, its write half attached to a new outbox
    /// taking `capacity` offers (the read half is kept open by the caller).
    fn attached(
        server_socket: TcpStream,
        capacity: usize,
    ) -> (OwnedReadHalf, Arc<OwnedWriteHalf>, Outbox) {
        let (read, write) = server_socket.into_split();
        let write = Arc::new(write);
        let outbox = Outbox::new(capacity, Arc::new(SessionStats::new()));
        outbox.attach(write.clone());
        (read, write, outbox)
    }

    /// The next `n` bytes the peer receives, within 5 s (`what` they are,
    /// for the failure).
    async fn read_n(peer: &mut TcpStream, n: usize, what: &str) -> Vec<u8> {
        let mut got = vec![0u8; n];
        tokio::time::timeout(Duration::from_secs(5), peer.read_exact(&mut got))
            .await
            .expect(what)
            .unwrap();
        got
    }

    /// The write loop's view of `outbox`, reporting to a session that
    /// ignores what it is told.
    fn writer(outbox: Outbox) -> Writer {
        let quiet = Quiet.start();
        Writer::new(
            outbox,
            Arc::new(quiet.clone().recipient()),
            quiet.recipient(),
            None,
        )
    }

    /// The copy has every value, repeated names in their order, and none of
    /// them points into the buffer the parser read them from.
    #[test]
    fn upgrade_requests_keep_no_slice_of_the_read_buffer() {
        let buf = Bytes::from(b"websocket|dGhlIHNhbXBsZSBub25jZQ==|a|b".to_vec());
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let slice = |a: usize, b: usize| HeaderValue::from_maybe_shared(buf.slice(a..b)).unwrap();
        let mut req = Request::new();
        let h = req.headers_mut();
        h.append(actix_http::header::UPGRADE, slice(0, 9));
        h.append(actix_http::header::SEC_WEBSOCKET_KEY, slice(10, 34));
        let x = actix_http::header::HeaderName::from_static("x-repeated");
        h.append(x.clone(), slice(35, 36));
        h.append(x.clone(), slice(37, 38));
        assert!(
            range.contains(&(req.headers().get("upgrade").unwrap().as_bytes().as_ptr() as usize))
        );

        detach_headers(&mut req);

        let h = req.headers();
        assert_eq!(h.len(), 4);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(
            h.get("sec-websocket-key").unwrap(),
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        let repeated: Vec<&[u8]> = h.get_all(&x).map(|v| v.as_bytes()).collect();
        assert_eq!(repeated, [b"a", b"b"]);
        for (_, v) in h.iter() {
            let at = v.as_bytes().as_ptr() as usize;
            assert!(
                !range.contains(&at),
                "{v:?} still points into the read buffer"
            );
        }
    }

    /// What a crowd left in actix's pools (the app's requests, request
    /// heads, response heads) is replaced by new entries, and the app still
    /// answers. Entries are told apart by address: the new ones are made
    /// while the old ones are still held, so no address can repeat.
    #[actix_web::test]
    async fn a_refresh_renews_the_pools_entries() {
        use std::cell::RefCell;
        use std::collections::HashSet;
        type Seen = Rc<RefCell<HashSet<usize>>>;
        let seen: Seen = Rc::default();
        let record = seen.clone();
        let app = actix_web::test::init_service(actix_web::App::new().route(
            "/x",
            actix_web::web::get().to(move |req: actix_web::HttpRequest| {
                // The path lives in the pooled request itself.
                record
                    .borrow_mut()
                    .insert(req.match_info() as *const _ as usize);
                async { "x" }
            }),
        ))
        .await;
        let calls = || {
            futures_util::future::join_all(
                (0..ACTIX_POOL)
                    .map(|_| app.call(actix_web::test::TestRequest::get().uri("/x").to_request())),
            )
        };
        let heads = || {
            (0..ACTIX_POOL)
                .map(|_| {
                    (
                        Request::new(),
                        Response::new(StatusCode::SWITCHING_PROTOCOLS),
                    )
                })
                .collect::<Vec<_>>()
        };
        let addresses = |heads: &[(Request, Response<BoxBody>)]| {
            heads
                .iter()
                .flat_map(|(q, r)| [q.head() as *const _ as usize, r.head() as *const _ as usize])
                .collect::<HashSet<_>>()
        };

        // The crowd: 128 requests at once, then 128 of each head.
        drop(calls().await);
        let old_requests = seen.take();
        assert_eq!(old_requests.len(), ACTIX_POOL);
        let crowd = heads();
        let old_heads = addresses(&crowd);
        drop(crowd);

        refresh_pools(&app).await;

        let pooled = heads();
        assert!(addresses(&pooled).is_disjoint(&old_heads));
        let answers = calls().await;
        assert!(answers
            .iter()
            .all(|r| r.as_ref().unwrap().status() == StatusCode::OK));
        assert!(seen.take().is_disjoint(&old_requests));
        drop((pooled, answers));
        let res = actix_web::test::call_service(&app, blank_request()).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }

    /// A worker's frame with nothing before it is written by the outbox
    /// itself (no write loop runs here); once the socket is full the rest
    /// queue, and the write loop writes them after, in order, with nothing
    /// lost or repeated.
    #[actix_web::test]
    async fn frames_go_straight_to_the_socket_until_it_is_full() {
        use crate::session::messages::Body;
        use crate::session::outbox::Wire;
        let (mut peer, server_socket) = connected().await;
        crate::net::cap_send_buffer(&server_socket, 64 * 1024);
        let (_read, write, outbox) = attached(server_socket, 10_000);

        let first = Wire::new(&"first".into());
        assert_eq!(outbox.offer(&Body::Frame(first.clone())), Ok(1));
        let got = read_n(&mut peer, 7, "written with no write loop").await;
        assert_eq!(got, b"\x81\x05first");

        let mut expected = Vec::new();
        for i in 0..600usize {
            let w = Wire::new(
                &format!("{i:05}{}", "x".repeat(i * 37 % 9000))
                    .as_str()
                    .into(),
            );
            expected.extend_from_slice(&w.bytes());
            assert_eq!(outbox.offer(&Body::Frame(w)), Ok(1));
        }
        assert!(outbox.len() > 0, "a full socket leaves frames queued");
        outbox.close(Some(1000), "done");
        let writer = writer(outbox.clone());
        let pump = actix_web::rt::spawn(Pump::new(writer, write));
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.unwrap();
        pump.await.unwrap().expect("the loop ends cleanly");
        let (body, close) = rest.split_at(expected.len());
        assert!(body == expected.as_slice(), "frames differ");
        assert_eq!(&close[..4], &[0x88, 6, 0x03, 0xe8], "then the close frame");
    }

    /// A close frame with nothing before it goes straight out too, as any
    /// frame does; the write loop then finds the outbox closed and empty
    /// and ends the connection, and nothing queued after the close is sent.
    #[actix_web::test]
    async fn a_close_with_nothing_before_it_goes_straight_out() {
        let (mut peer, server_socket) = connected().await;
        let (_read, write, outbox) = attached(server_socket, 16);
        outbox.close(Some(1008), "bye");
        assert_eq!(outbox.len(), 0, "sent, not queued");
        let got = read_n(&mut peer, 7, "written with no write loop").await;
        assert_eq!(got, &[0x88, 5, 0x03, 0xf0, b'b', b'y', b'e']);

        outbox.text("after the close".into());
        let pump = actix_web::rt::spawn(Pump::new(writer(outbox.clone()), write));
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), peer.read_to_end(&mut rest))
            .await
            .expect("the connection ends")
            .unwrap();
        pump.await.unwrap().expect("the loop ends cleanly");
        assert!(rest.is_empty(), "nothing after the close: {rest:?}");
    }

    /// While the write loop holds frames it has not wholly written, a
    /// worker's frame waits behind them even with the queue empty; once the
    /// loop has written all and said so, the next one goes straight out.
    #[actix_web::test]
    async fn nothing_is_written_past_what_the_loop_holds() {
        use crate::session::messages::Body;
        use crate::session::outbox::Wire;
        let (mut peer, server_socket) = connected().await;
        let (_read, write) = server_socket.into_split();
        let outbox = Outbox::new(16, Arc::new(SessionStats::new()));
        outbox.text("held".into());
        outbox.attach(Arc::new(write));
        let mut writer = writer(outbox.clone());
        let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
        let held = writer.poll_frame(&mut cx, false);
        assert!(matches!(held, Poll::Ready(Some(_))), "the loop took it");
        assert_eq!(outbox.offer(&Body::Frame(Wire::new(&"next".into()))), Ok(1));
        assert_eq!(outbox.len(), 1, "queued behind the held frame");
        let next = writer.poll_frame(&mut cx, true);
        assert!(matches!(next, Poll::Ready(Some(_))));
        // The loop wrote both (here: dropped them) and finds nothing more.
        assert!(writer.poll_frame(&mut cx, false).is_pending());
        assert_eq!(
            outbox.offer(&Body::Frame(Wire::new(&"direct".into()))),
            Ok(1)
        );
        assert_eq!(outbox.len(), 0, "written, not queued");
        let got = read_n(&mut peer, 8, "it arrives").await;
        assert_eq!(got, b"\x81\x06direct");
    }

    /// The loop goes idle once the outbox is empty and written (having
    /// told the outbox it holds nothing): a frame queued later must still
    /// wake it, one frame alone (`send`) or several at once (`writev`).
    #[actix_web::test]
    async fn frames_queued_after_the_loop_went_idle_are_written() {
        let (mut peer, server_socket) = connected().await;
        let outbox = Outbox::new(16, Arc::new(SessionStats::new()));
        let (_read, write) = server_socket.into_split();
        let writer = writer(outbox.clone());
        let pump = actix_web::rt::spawn(Pump::new(writer, Arc::new(write)));
        for round in 0..3u8 {
            // Let the loop find the outbox empty and go idle first.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            assert!(!pump.is_finished());
            let texts: Vec<String> = (0..=round).map(|i| format!("r{round}f{i}")).collect();
            for t in &texts {
                outbox.text(t.as_str().into());
            }
            let want: Vec<u8> = texts
                .iter()
                .flat_map(|t| [&[0x81, t.len() as u8][..], t.as_bytes()].concat())
                .collect();
            let got = read_n(&mut peer, want.len(), "the queued frames arrive").await;
            assert_eq!(&got[..], &want[..], "round {round}");
        }
        outbox.close(Some(1000), "done");
        pump.await.unwrap().expect("the loop ends cleanly");
    }

    /// Far more than the two sockets' buffers hold, in frames of unequal
    /// sizes, with a peer that reads only once the loop has had to stop:
    /// `writev` then returns short, mid-frame, and the peer must still get
    /// every byte once, in order.
    #[actix_web::test]
    async fn partial_writes_lose_and_repeat_nothing() {
        let (mut peer, server_socket) = connected().await;

        let outbox = Outbox::new(10_000, Arc::new(SessionStats::new()));
        let mut expected = Vec::new();
        for i in 0..600usize {
            let text = format!("{i:05}{}", "x".repeat(i * 37 % 9000));
            outbox.text(text.as_str().into());
            let mut frame = bytes::BytesMut::new();
            actix_http::ws::Parser::write_message(
                &mut frame,
                text.as_bytes(),
                actix_http::ws::OpCode::Text,
                true,
                false,
            );
            expected.extend_from_slice(&frame);
        }
        outbox.close(Some(1000), "done");
        // The service's cap (64 KiB): 2 MB cannot fit in the two buffers.
        crate::net::cap_send_buffer(&server_socket, 64 * 1024);
        assert!(expected.len() > 2_000_000, "more than the socket buffers");

        let (_read, write) = server_socket.into_split();
        let writer = writer(outbox);
        let pump = actix_web::rt::spawn(Pump::new(writer, Arc::new(write)));
        // Nothing has been read: the loop must be stuck on a full socket.
        tokio::task::yield_now().await;
        assert!(!pump.is_finished());

        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        pump.await.unwrap().expect("the loop ends cleanly");
        let (body, close) = got.split_at(expected.len());
        assert!(body == expected.as_slice(), "frames differ");
        assert_eq!(&close[..4], &[0x88, 6, 0x03, 0xe8], "then the close frame");
    }
}
