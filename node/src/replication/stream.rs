//! The append stream between two nodes: one long-lived connection per (primary node, member
//! node) that carries batches of appends as frames, many in flight at once.
//!
//! The primary's peer client opens it with an HTTP/1.1 upgrade (`GET /peer/v1/stream`,
//! `upgrade: shardedstore-appends/1`, the peer token checked once, there); after the `101`
//! both sides speak frames:
//!
//! - request (primary → member): `len: u32`, `id: u32`, then `len` bytes of an
//!   [`super::frame::AppendBatch`];
//! - reply (member → primary): `len: u32`, `id: u32`, `status: u16`, then `len` bytes: the
//!   [`super::frame::BatchReply`] when `status` is 200, otherwise a message (400: the batch is
//!   malformed; 413: it is larger than the member's `--max-peer-body-bytes`).
//!
//! A request frame with no payload is a *ping*: the member answers it at once with an empty
//! reply of the same id, ahead of any batch it is still handling. The primary pings while it
//! waits for replies and has heard nothing for [`PING_AFTER`]; a stream on which it then hears
//! nothing for [`SILENCE_LIMIT`] ends. A member busy with a slow disk still answers pings, so
//! this ends only streams whose connection or member is gone; without it, a connection that
//! lost packets would stall for as long as TCP's retransmission back-off after the network
//! came back.
//!
//! The member handles the batches of one stream concurrently and answers each as soon as it
//! is done, so replies may come in any order; `id` pairs them with their requests. Either side
//! closes the connection to end the stream; the primary then fails whatever was in flight (its
//! replication sessions probe again, as after any lost request) and opens a new stream for the
//! next batch.

use bytes::{Bytes, BytesMut};
use prometheus::IntGauge;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Path of the upgrade request that opens a stream.
pub const STREAM_PATH: &str = "/peer/v1/stream";
/// Value of the `upgrade` header naming this protocol.
pub const STREAM_PROTOCOL: &str = "shardedstore-appends/1";
/// Reply status: the body is a `BatchReply`.
pub const STATUS_OK: u16 = 200;
/// Reply status: the batch was malformed.
pub const STATUS_BAD_FRAME: u16 = 400;
/// Reply status: the batch was larger than the member takes.
pub const STATUS_TOO_LARGE: u16 = 413;

const READ_BUFFER: usize = 256 * 1024;
/// The primary pings a stream on which it waits for replies after this long without one.
pub const PING_AFTER: Duration = Duration::from_millis(500);
/// A stream on which the primary waited this long without hearing anything ends.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(3);
/// The id of pings; batches never use it.
const PING_ID: u32 = u32::MAX;

/// A member's answer to one request frame.
#[derive(Debug)]
pub struct StreamReply {
    pub status: u16,
    pub body: Bytes,
}

/// One request frame as the member read it.
enum Request {
    Ping { id: u32 },
    Batch { id: u32, payload: Bytes },
    TooLarge { id: u32, len: usize },
}

async fn read_request<R: AsyncRead + Unpin>(
    rd: &mut R,
    max_frame: usize,
) -> io::Result<Option<Request>> {
    let mut header = [0u8; 8];
    if !read_header(rd, &mut header).await? {
        return Ok(None);
    }
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let id = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 {
        return Ok(Some(Request::Ping { id }));
    }
    if len > max_frame {
        // Read past it so the stream stays in step; the primary sends its appends alone.
        let skipped = tokio::io::copy(&mut rd.take(len as u64), &mut tokio::io::sink()).await?;
        if skipped < len as u64 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        return Ok(Some(Request::TooLarge { id, len }));
    }
    let mut payload = BytesMut::zeroed(len);
    rd.read_exact(&mut payload).await?;
    Ok(Some(Request::Batch {
        id,
        payload: payload.freeze(),
    }))
}

/// Fills `header`; `false` when the stream ended cleanly before its first byte.
async fn read_header<R: AsyncRead + Unpin>(rd: &mut R, header: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < header.len() {
        let n = rd.read(&mut header[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(false)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        filled += n;
    }
    Ok(true)
}

/// The member's side of one stream: reads request frames until the primary closes the stream
/// or `shutdown` is cancelled, has `handle` answer each (concurrently, each in its own task),
/// and writes the answers back as they come. Frames over `max_frame` bytes are answered 413
/// unread.
pub async fn serve<IO, H, F>(io: IO, max_frame: usize, shutdown: CancellationToken, handle: H)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    H: Fn(Bytes) -> F,
    F: Future<Output = (u16, Vec<u8>)> + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_replies(wr, rx));
    loop {
        let next = tokio::select! {
            r = read_request(&mut rd, max_frame) => r,
            () = shutdown.cancelled() => break,
        };
        match next {
            Ok(Some(Request::Ping { id })) => {
                let _ = tx.send((id, STATUS_OK, Vec::new()));
            }
            Ok(Some(Request::Batch { id, payload })) => {
                let work = handle(payload);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let (status, body) = work.await;
                    let _ = tx.send((id, status, body));
                });
            }
            Ok(Some(Request::TooLarge { id, len })) => {
                tracing::warn!(
                    bytes = len,
                    limit = max_frame,
                    "refused a batch of appends over the body limit"
                );
                let message = format!("the batch of {len} bytes exceeds {max_frame} bytes");
                let _ = tx.send((id, STATUS_TOO_LARGE, message.into_bytes()));
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "append stream ended");
                break;
            }
        }
    }
    // Batches still being handled are answered before the stream closes.
    drop(tx);
    let _ = writer.await;
}

async fn write_replies<W: AsyncWrite + Unpin>(
    wr: W,
    mut rx: mpsc::UnboundedReceiver<(u32, u16, Vec<u8>)>,
) {
    let mut wr = BufWriter::new(wr);
    while let Some((id, status, body)) = rx.recv().await {
        let mut header = [0u8; 10];
        header[..4].copy_from_slice(&(body.len() as u32).to_be_bytes());
        header[4..8].copy_from_slice(&id.to_be_bytes());
        header[8..].copy_from_slice(&status.to_be_bytes());
        if wr.write_all(&header).await.is_err() || wr.write_all(&body).await.is_err() {
            return;
        }
        // Replies that are ready together leave in one write.
        if rx.is_empty() && wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// Counts one open stream in a gauge while it lives.
pub struct Counted(IntGauge);

impl Counted {
    pub fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Requests sent and not answered yet, by id. Closed (no more requests) once the stream ended.
struct Pending {
    waiting: HashMap<u32, oneshot::Sender<StreamReply>>,
    closed: bool,
    /// When the member was last heard from (any reply), or the first unanswered request was
    /// sent, whichever is later.
    heard: tokio::time::Instant,
}

impl Default for Pending {
    fn default() -> Self {
        Self {
            waiting: HashMap::new(),
            closed: false,
            heard: tokio::time::Instant::now(),
        }
    }
}

/// The primary's side of one stream. Dropping it closes the stream; requests in flight then
/// get no reply (their receivers see the sender dropped).
pub struct StreamConn {
    wr: Arc<tokio::sync::Mutex<Writer>>,
    next_id: u32,
    pending: Arc<Mutex<Pending>>,
    ended: CancellationToken,
}

type Writer = BufWriter<tokio::io::WriteHalf<Box<dyn Io>>>;

/// A connection a stream runs on.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

impl StreamConn {
    /// Runs a stream on `io` (an upgraded connection) and starts reading its replies;
    /// `open` counts it for as long as it lasts.
    pub fn new(io: impl Io, open: IntGauge) -> Self {
        let io: Box<dyn Io> = Box::new(io);
        let (rd, wr) = tokio::io::split(io);
        let wr = Arc::new(tokio::sync::Mutex::new(BufWriter::new(wr)));
        let pending = Arc::new(Mutex::new(Pending::default()));
        let ended = CancellationToken::new();
        let counted = Counted::new(open);
        let reader = read_replies(
            BufReader::with_capacity(READ_BUFFER, rd),
            pending.clone(),
            ended.clone(),
        );
        tokio::spawn(async move {
            reader.await;
            drop(counted);
        });
        tokio::spawn(keep_alive(wr.clone(), pending.clone(), ended.clone()));
        Self {
            wr,
            next_id: 0,
            pending,
            ended,
        }
    }

    /// `true` once the stream ended (the member closed it, a read or write failed, the
    /// member went silent, or [`Self::ender`]'s token was cancelled); every later
    /// [`Self::send`] fails.
    pub fn is_ended(&self) -> bool {
        self.ended.is_cancelled()
    }

    /// A token that ends the stream when cancelled (e.g. when a reply is overdue).
    pub fn ender(&self) -> CancellationToken {
        self.ended.clone()
    }

    /// Writes one request frame holding `payload` (not empty); the receiver gets its reply,
    /// or an error when the stream ends first.
    pub async fn send(&mut self, payload: &[u8]) -> io::Result<oneshot::Receiver<StreamReply>> {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty frame"));
        }
        let id = self.next_id;
        self.next_id = (self.next_id + 1) % PING_ID;
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.closed {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            if p.waiting.is_empty() {
                // Silence counts from the first request nobody has answered yet.
                p.heard = tokio::time::Instant::now();
            }
            p.waiting.insert(id, tx);
        }
        let written = write_frame(&mut *self.wr.lock().await, id, payload).await;
        if let Err(e) = written {
            self.ended.cancel();
            return Err(e);
        }
        Ok(rx)
    }
}

async fn write_frame(wr: &mut Writer, id: u32, payload: &[u8]) -> io::Result<()> {
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    header[4..].copy_from_slice(&id.to_be_bytes());
    wr.write_all(&header).await?;
    wr.write_all(payload).await?;
    wr.flush().await
}

impl Drop for StreamConn {
    fn drop(&mut self) {
        self.ended.cancel();
    }
}

/// Pings the member while requests wait and nothing was heard for [`PING_AFTER`]; ends the
/// stream after [`SILENCE_LIMIT`] without a word.
async fn keep_alive(
    wr: Arc<tokio::sync::Mutex<Writer>>,
    pending: Arc<Mutex<Pending>>,
    ended: CancellationToken,
) {
    let mut tick = tokio::time::interval(PING_AFTER / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = ended.cancelled() => return,
        }
        let silent = {
            let p = pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.waiting.is_empty() {
                continue;
            }
            p.heard.elapsed()
        };
        if silent >= SILENCE_LIMIT {
            tracing::warn!(
                silent_ms = silent.as_millis() as u64,
                "append stream: the member answers nothing, not even pings; ending the stream"
            );
            ended.cancel();
            return;
        }
        if silent >= PING_AFTER {
            // A ping that cannot be written now (a batch is being written, or the
            // connection's buffers are full) is not needed: the silence decides.
            if let Ok(mut w) = wr.try_lock() {
                let write = write_frame(&mut w, PING_ID, &[]);
                if let Ok(Err(_)) = tokio::time::timeout(PING_AFTER, write).await {
                    ended.cancel();
                    return;
                }
            }
        }
    }
}

/// Reads reply frames and hands each to its request until the stream ends; then fails every
/// request still waiting.
async fn read_replies<R: AsyncRead + Unpin>(
    mut rd: R,
    pending: Arc<Mutex<Pending>>,
    ended: CancellationToken,
) {
    loop {
        let reply = tokio::select! {
            r = read_reply(&mut rd) => r,
            () = ended.cancelled() => break,
        };
        match reply {
            Ok(Some((id, reply))) => {
                let waiter = {
                    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                    p.heard = tokio::time::Instant::now();
                    p.waiting.remove(&id)
                };
                // A ping's reply, or one to a request given up on (which ended the
                // stream); any other id is a member's mistake, and its reply is dropped.
                if let Some(w) = waiter {
                    let _ = w.send(reply);
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "append stream ended");
                break;
            }
        }
    }
    ended.cancel();
    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
    p.closed = true;
    p.waiting.clear();
}

async fn read_reply<R: AsyncRead + Unpin>(rd: &mut R) -> io::Result<Option<(u32, StreamReply)>> {
    let mut header = [0u8; 10];
    if !read_header(rd, &mut header).await? {
        return Ok(None);
    }
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let id = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let status = u16::from_be_bytes([header[8], header[9]]);
    let mut body = BytesMut::zeroed(len);
    rd.read_exact(&mut body).await?;
    Ok(Some((
        id,
        StreamReply {
            status,
            body: body.freeze(),
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member that answers each payload with itself reversed, after a delay the payload's
    /// first byte names (in milliseconds), so later requests can be answered first.
    fn member(io: tokio::io::DuplexStream, max_frame: usize) -> tokio::task::JoinHandle<()> {
        tokio::spawn(serve(
            io,
            max_frame,
            CancellationToken::new(),
            |payload: Bytes| async move {
                let delay = payload.first().copied().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(u64::from(delay))).await;
                let mut body = payload.to_vec();
                body.reverse();
                (STATUS_OK, body)
            },
        ))
    }

    fn gauge() -> IntGauge {
        IntGauge::new("streams", "open streams").unwrap_or_else(|e| panic!("{e}"))
    }

    async fn answer(rx: oneshot::Receiver<StreamReply>) -> StreamReply {
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .unwrap_or_else(|_| panic!("no reply within 5 s"))
            .unwrap_or_else(|_| panic!("the stream ended"))
    }

    #[tokio::test]
    async fn replies_pair_with_their_requests_whatever_order_they_come_in() {
        let (a, b) = tokio::io::duplex(1024);
        let _member = member(b, 1 << 20);
        let mut conn = StreamConn::new(a, gauge());
        let slow = conn
            .send(&[200, 1, 2])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let fast = conn
            .send(&[0, 3, 4, 5])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let big: Vec<u8> = (0..10_000u32).map(|i| (i % 7) as u8).collect();
        let large = conn.send(&big).await.unwrap_or_else(|e| panic!("{e}"));
        let fast = answer(fast).await;
        assert_eq!(fast.status, STATUS_OK);
        assert_eq!(&fast.body[..], &[5, 4, 3, 0]);
        let large = answer(large).await;
        let mut want = big.clone();
        want.reverse();
        assert_eq!(&large.body[..], &want[..]);
        assert_eq!(&answer(slow).await.body[..], &[2, 1, 200]);
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_and_the_stream_goes_on() {
        let (a, b) = tokio::io::duplex(1024);
        let _member = member(b, 100);
        let mut conn = StreamConn::new(a, gauge());
        let over = conn.send(&[0; 101]).await.unwrap_or_else(|e| panic!("{e}"));
        let next = conn.send(&[0, 9]).await.unwrap_or_else(|e| panic!("{e}"));
        let over = answer(over).await;
        assert_eq!(over.status, STATUS_TOO_LARGE);
        assert!(String::from_utf8_lossy(&over.body).contains("101 bytes"));
        assert_eq!(&answer(next).await.body[..], &[9, 0]);
    }

    #[tokio::test]
    async fn requests_in_flight_fail_when_the_member_goes_away() {
        let (a, b) = tokio::io::duplex(1024);
        let mut conn = StreamConn::new(a, gauge());
        let waiting = conn.send(&[1, 2]).await.unwrap_or_else(|e| panic!("{e}"));
        drop(b);
        let outcome = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap_or_else(|_| panic!("the request still waits"));
        assert!(outcome.is_err(), "a reply came from a member that is gone");
        assert!(conn.is_ended());
        assert!(conn.send(&[1]).await.is_err());
    }

    /// A member that reads requests but never answers anything, pings included.
    #[tokio::test(start_paused = true)]
    async fn a_member_that_answers_nothing_ends_the_stream() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let _swallow = tokio::spawn(async move {
            let mut sink = vec![0u8; 4096];
            while b.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        });
        let mut conn = StreamConn::new(a, gauge());
        let waiting = conn.send(&[1]).await.unwrap_or_else(|e| panic!("{e}"));
        let outcome = tokio::time::timeout(SILENCE_LIMIT * 2, waiting)
            .await
            .unwrap_or_else(|_| panic!("the request still waits after {:?}", SILENCE_LIMIT * 2));
        assert!(outcome.is_err());
        assert!(conn.is_ended());
    }

    /// A member whose batch takes longer than the silence limit, while it answers pings: the
    /// stream stays and the batch gets its reply.
    #[tokio::test(start_paused = true)]
    async fn a_slow_batch_on_a_member_that_answers_pings_keeps_its_stream() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let _member = tokio::spawn(serve(
            b,
            1 << 20,
            CancellationToken::new(),
            |payload: Bytes| async move {
                tokio::time::sleep(SILENCE_LIMIT * 3).await;
                (STATUS_OK, payload.to_vec())
            },
        ));
        let mut conn = StreamConn::new(a, gauge());
        let slow = conn.send(&[4, 2]).await.unwrap_or_else(|e| panic!("{e}"));
        let reply = tokio::time::timeout(SILENCE_LIMIT * 5, slow)
            .await
            .unwrap_or_else(|_| panic!("no reply"))
            .unwrap_or_else(|_| panic!("the stream ended"));
        assert_eq!(&reply.body[..], &[4, 2]);
        assert!(!conn.is_ended());
    }
}
