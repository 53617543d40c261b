//! One client connection: read request heads (with limits and timeouts),
//! route them, write responses, keep the connection alive while allowed.

use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut as _;
use monoio::io::AsyncReadRent as _;
use monoio::net::TcpStream;

use crate::admin::AdminRequest;
use crate::http::{self, Body, HeadError, Parsed, ResponseHead};
use crate::ktls::{HandOff, KernelSession};
use crate::metrics::CoreMetrics;
use crate::metrics::Handshake;
use crate::metrics::KernelHandOff;
use crate::server::Shared;
use crate::tls::{self, ServerSession};
use crate::{image, sys};

/// How often a connection waiting for a request checks for shutdown.
const IDLE_SLICE: Duration = Duration::from_secs(1);

/// The uniform body of every refused link.
pub const FORBIDDEN_BODY: &str = "403 Forbidden: this link is not valid.\n";

/// A connection's state, owned by its task.
struct Conn {
    /// Bytes read and not yet consumed (at most one head plus pipelined bytes).
    buf: Vec<u8>,
    /// Requests answered on this connection so far.
    served: u64,
    /// Bytes after the current head that its body took from `buf`.
    body_in_buf: usize,
    /// Everything else: the socket and the response side.
    io: Io,
}

/// The socket and what responses need; split from the read buffer so a
/// parsed head (borrowing the buffer) can be answered through it.
pub struct Io {
    /// The client socket (non-blocking).
    pub stream: TcpStream,
    /// The TLS session, on an HTTPS listener while rustls runs it.
    pub tls: Option<Box<ServerSession>>,
    /// The TLS session once the kernel holds its keys (the socket then
    /// reads and writes plaintext).
    pub kernel: Option<KernelSession>,
    /// The peer address.
    pub peer: SocketAddr,
    /// The response head being built, reused between requests.
    pub out: Vec<u8>,
    /// State shared by every worker.
    pub shared: Arc<Shared>,
    /// This worker's index.
    pub core: usize,
    /// The request being answered is a HEAD: answers carry no body.
    pub head_only: bool,
    /// This worker thread's backend connections.
    pub worker: std::rc::Rc<crate::fill::Worker>,
}

/// Counts a connection as active for as long as it lives, however its task ends.
struct Active {
    shared: Arc<Shared>,
    core: usize,
}

impl Active {
    fn new(shared: &Arc<Shared>, core: usize) -> Active {
        shared.metrics.core(core).connection(true);
        Active {
            shared: Arc::clone(shared),
            core,
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.shared.metrics.core(self.core).connection(false);
    }
}

/// Serves one connection until the client leaves, an error, a timeout or shutdown.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    core: usize,
    worker: std::rc::Rc<crate::fill::Worker>,
) {
    let _active = Active::new(&shared, core);
    // Body bytes go out with sendfile, which needs a non-blocking socket to
    // give way when the client is slow.
    if let Err(e) = sys::set_nonblocking(stream.as_raw_fd()) {
        tracing::warn!(%peer, error = %e, "cannot make the socket non-blocking");
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut stream = stream;
    let cap = shared.config.http.max_header_bytes;
    let mut buf = Vec::with_capacity(cap);
    let secured = match &shared.tls {
        None => Secured::Plain,
        Some(config) => {
            let config = config.load_full();
            let Some(session) = accept_tls(&mut stream, config, &shared, core).await else {
                return;
            };
            match &shared.offload {
                None => Secured::Rustls(session),
                Some(offload) => {
                    match to_kernel(&mut stream, session, offload, &shared, core).await {
                        Some(secured) => secured,
                        None => return,
                    }
                }
            }
        }
    };
    let (tls, kernel) = match secured {
        Secured::Plain => (None, None),
        Secured::Rustls(session) => (Some(session), None),
        Secured::Kernel(kernel, early) => {
            // What the client sent with its last handshake flight (the
            // first request, usually), decrypted by rustls: at most the
            // session's bounded receive buffer. A head larger than the
            // limit is refused by the parser as any other.
            buf.extend_from_slice(&early);
            (None, Some(kernel))
        }
    };
    let mut conn = Conn {
        buf,
        served: 0,
        body_in_buf: 0,
        io: Io {
            stream,
            tls,
            kernel,
            peer,
            out: Vec::with_capacity(512),
            shared,
            core,
            head_only: false,
            worker,
        },
    };
    loop {
        match conn.next_request().await {
            Ok(Next::KeepAlive) => {}
            Ok(Next::Close) => break,
            Ok(Next::CloseUnread) => {
                conn.io.close_notify().await;
                linger(&mut conn.io.stream).await;
                return;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection closed");
                if conn
                    .io
                    .kernel
                    .as_ref()
                    .is_some_and(KernelSession::refused_key_update)
                {
                    // The client may have sent more under its new key:
                    // close_notify, then linger, so the close is no reset.
                    conn.io.close_notify().await;
                    linger(&mut conn.io.stream).await;
                }
                return;
            }
        }
    }
    conn.io.close_notify().await;
}

/// Runs the TLS handshake of a new connection, within the header timeout.
/// A plaintext HTTP request gets a plain 400 saying the port speaks HTTPS;
/// anything else that is not a TLS client gets rustls's alert. `None` when
/// the connection is done.
async fn accept_tls(
    stream: &mut TcpStream,
    config: Arc<rustls::ServerConfig>,
    shared: &Shared,
    core: usize,
) -> Option<Box<ServerSession>> {
    let metrics = shared.metrics.core(core);
    let conn = match rustls::server::UnbufferedServerConnection::new(config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a TLS session");
            return None;
        }
    };
    let mut session = Box::new(ServerSession::new(conn));
    let timeout = shared.config.http.header_timeout;
    let handshake = async {
        if !session.read_first(stream).await? {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if tls::looks_like_http(session.received()) {
            return Ok(false);
        }
        session.handshake(stream).await.map(|()| true)
    };
    match monoio::time::timeout(timeout, handshake).await {
        Ok(Ok(true)) => {
            metrics.handshake(Handshake::Done);
            Some(session)
        }
        Ok(Ok(false)) => {
            metrics.handshake(Handshake::Plaintext);
            let refusal = tls::PLAINTEXT_REFUSAL.to_vec();
            let len = refusal.len();
            let write = tls::write_all(stream, refusal, len);
            let _ = monoio::time::timeout(Duration::from_secs(1), write).await;
            linger(stream).await;
            None
        }
        Ok(Err(e)) => {
            metrics.handshake(Handshake::Failed);
            tracing::debug!(error = %e, "TLS handshake failed");
            // The alert rustls queued, if any: the client learns why.
            let _ = monoio::time::timeout(Duration::from_secs(1), session.flush(stream)).await;
            None
        }
        Err(_) => {
            metrics.handshake(Handshake::TimedOut);
            None
        }
    }
}

/// How a connection's bytes are protected once it is accepted.
enum Secured {
    /// Plain HTTP.
    Plain,
    /// TLS run by rustls.
    Rustls(Box<ServerSession>),
    /// TLS run by the kernel, with the plaintext rustls had already
    /// decrypted before the hand-off.
    Kernel(KernelSession, Vec<u8>),
}

/// Offers a finished session to the kernel ([`crate::ktls::hand_off`]),
/// counting the outcome. The kernel cannot take over a record half read:
/// one that arrived with the handshake's end is completed first, within
/// the header timeout, as a head would be. `None` when the connection
/// cannot go on (that record never came whole, or the kernel refused the
/// keys after rustls let them go).
async fn to_kernel(
    stream: &mut TcpStream,
    mut session: Box<ServerSession>,
    offload: &crate::ktls::Offload,
    shared: &Shared,
    core: usize,
) -> Option<Secured> {
    let timeout = shared.config.http.header_timeout;
    match monoio::time::timeout(timeout, session.finish_record(stream)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "connection closed");
            return None;
        }
        Err(_) => {
            tracing::debug!("a TLS record was not completed in time");
            return None;
        }
    }
    let metrics = shared.metrics.core(core);
    match crate::ktls::hand_off(session, stream.as_raw_fd(), offload) {
        HandOff::Kernel(kernel, early) => {
            metrics.hand_off(KernelHandOff::Kernel);
            Some(Secured::Kernel(kernel, early))
        }
        HandOff::Kept(session, why) => {
            metrics.hand_off(KernelHandOff::UserSpace);
            tracing::debug!(reason = why, "TLS session kept in user space");
            Some(Secured::Rustls(session))
        }
        HandOff::Failed(why) => {
            metrics.hand_off(KernelHandOff::Failed);
            tracing::warn!(error = %why, "the kernel refused a TLS session's keys; connection closed");
            None
        }
    }
}

/// What to do with the connection after a request.
enum Next {
    /// Read the next request.
    KeepAlive,
    /// Close it.
    Close,
    /// Close it, but the client may still be sending what we did not read.
    CloseUnread,
}

/// How long a connection closed with unread input waits for the client to stop sending.
const LINGER: Duration = Duration::from_secs(1);

/// Closes gracefully after an error answer to a request not read in full:
/// send FIN, then read and drop what the client still sends (briefly), so
/// closing does not reset the connection before the client reads the answer.
pub async fn linger(stream: &mut TcpStream) {
    use monoio::io::AsyncWriteRent as _;
    let _ = stream.shutdown().await;
    let deadline = Instant::now() + LINGER;
    let mut scratch = vec![0u8; 16 << 10];
    let mut drained = 0usize;
    while drained < (1 << 20) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match monoio::time::timeout(deadline - now, stream.readable(false)).await {
            Ok(Ok(())) => {}
            _ => break,
        }
        let (res, buf) = stream.read(scratch).await;
        scratch = buf;
        match res {
            Ok(0) => break,
            Ok(n) => drained += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
}

/// What waiting for a request head ended with.
enum Wait {
    /// Bytes are there to read.
    Readable,
    /// The client sent nothing in time, or the server is shutting down.
    Close,
}

impl Conn {
    /// Reads, routes and answers one request.
    async fn next_request(&mut self) -> std::io::Result<Next> {
        self.io.head_only = false;
        if let Some(session) = &mut self.io.tls {
            session.trim();
        }
        let limits = self.io.shared.config.http.clone();
        let idle_deadline = Instant::now() + limits.idle_timeout;
        // The first request must start within the header timeout too: a
        // connection that sends nothing holds a slot no longer than one that
        // sends slowly. Between keep-alive requests the idle timeout applies.
        let first = self.served == 0;
        let mut head_deadline =
            (first || !self.buf.is_empty()).then(|| Instant::now() + limits.header_timeout);
        let head_len = loop {
            if !self.buf.is_empty() {
                match http::parse(&self.buf, limits.max_headers, limits.max_header_bytes) {
                    Parsed::Complete(head) => break head.len,
                    Parsed::Partial => {}
                    Parsed::Error(e) => {
                        let status = match e {
                            HeadError::TooLarge => 431,
                            HeadError::Malformed => 400,
                        };
                        self.io
                            .simple(status, "the request head is not acceptable\n", false)
                            .await?;
                        return Ok(Next::CloseUnread);
                    }
                }
            }
            let deadline = head_deadline.unwrap_or(idle_deadline);
            match self.wait_readable(deadline).await {
                Wait::Readable => {}
                Wait::Close if head_deadline.is_some() && !self.io.shutting_down() => {
                    // A head that trickles in too slowly (slowloris): 408 and close.
                    let _ = self
                        .io
                        .simple(408, "request head not received in time\n", false)
                        .await;
                    return Ok(Next::CloseUnread);
                }
                Wait::Close => return Ok(Next::Close),
            }
            if !self.fill().await? {
                return Ok(Next::Close);
            }
            head_deadline.get_or_insert_with(|| Instant::now() + limits.header_timeout);
        };
        self.body_in_buf = 0;
        let keep_alive = self.respond().await?;
        self.served += 1;
        let consumed = head_len + self.body_in_buf;
        let pipelined = self.buf.len() > consumed;
        self.buf.drain(..consumed);
        Ok(match keep_alive {
            Some(true) => Next::KeepAlive,
            // Bytes the client already sent after this request would make the
            // close a reset that can cut the answer short: linger instead.
            Some(false) if !pipelined => Next::Close,
            _ => Next::CloseUnread,
        })
    }

    /// Waits until the socket is readable, the deadline passes or shutdown starts.
    async fn wait_readable(&self, deadline: Instant) -> Wait {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Wait::Close;
            }
            // While no request has started, shutdown closes the connection.
            if self.buf.is_empty() && self.io.shutting_down() {
                return Wait::Close;
            }
            if self.io.tls.as_ref().is_some_and(|t| t.has_plaintext()) {
                return Wait::Readable;
            }
            let slice = (deadline - now).min(IDLE_SLICE);
            // Waiting for readiness (not reading) can be cancelled without losing bytes.
            match monoio::time::timeout(slice, self.io.stream.readable(false)).await {
                Ok(Ok(())) => return Wait::Readable,
                Ok(Err(_)) => return Wait::Close,
                Err(_elapsed) => {}
            }
        }
    }

    /// Reads what the socket has into the free part of the buffer.
    /// `Ok(false)` when the client closed the connection.
    async fn fill(&mut self) -> std::io::Result<bool> {
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let cap = buf.capacity();
        if len == cap {
            // `parse` refuses a head as long as the buffer before it gets here.
            self.buf = buf;
            return Ok(false);
        }
        let mut buf = buf;
        let res = self.io.read_some(&mut buf, cap - len).await;
        self.buf = buf;
        match res {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Routes the complete head at the start of the buffer and answers it.
    /// Returns whether the connection may stay open, or `None` when it must
    /// close with a request body left unread.
    async fn respond(&mut self) -> std::io::Result<Option<bool>> {
        let limits = &self.io.shared.config.http;
        let Parsed::Complete(head) =
            http::parse(&self.buf, limits.max_headers, limits.max_header_bytes)
        else {
            return Ok(Some(false));
        };
        // While draining, every answer says it closes the connection.
        let keep_alive = head.keep_alive && !self.io.shutting_down();
        if route(head.path) == Route::Admin {
            let (body, len) = (head.body, head.len);
            let request = AdminRequest {
                method: head.method.to_owned(),
                path: head.path.to_owned(),
                query: head.query.to_owned(),
                authorization: head.authorization.map(<[u8]>::to_vec),
                body: Vec::new(),
            };
            return self.admin(request, body, len, keep_alive).await;
        }
        let io = &mut self.io;
        io.head_only = head.method == "HEAD";
        match head.body {
            Body::None => {}
            Body::Length(_) => {
                io.simple(413, "this server accepts no request bodies\n", false)
                    .await?;
                return Ok(None);
            }
            Body::Chunked | Body::Invalid => {
                io.simple(400, "this server accepts no request bodies\n", false)
                    .await?;
                return Ok(None);
            }
        }
        let is_head = head.method == "HEAD";
        let route = route(head.path);
        if !(is_head || head.method == "GET") {
            ResponseHead::new(&mut io.out, 405)
                .header("Allow", "GET, HEAD")
                .header("Content-Type", "text/plain; charset=utf-8")
                .header("Content-Length", 0)
                .finish(keep_alive);
            io.metrics().response(405);
            io.write_out().await?;
            return Ok(Some(keep_alive));
        }
        match route {
            Route::Image => image::serve(io, &head, keep_alive).await.map(Some),
            Route::Health => {
                io.text(200, "ok\n", is_head, keep_alive).await?;
                Ok(Some(keep_alive))
            }
            Route::Metrics => {
                let text = io
                    .shared
                    .metrics
                    .render_with_cache(&io.shared.cache.stats());
                ResponseHead::new(&mut io.out, 200)
                    .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                    .header("Content-Length", text.len())
                    .finish(keep_alive);
                if !is_head {
                    io.out.extend_from_slice(text.as_bytes());
                }
                io.metrics().response(200);
                io.write_out().await?;
                Ok(Some(keep_alive))
            }
            Route::NotFound | Route::Admin => {
                io.simple(404, "no such resource\n", keep_alive).await?;
                Ok(Some(keep_alive))
            }
        }
    }
}

impl Conn {
    /// Reads an admin request's body (bounded) and answers it.
    async fn admin(
        &mut self,
        mut request: AdminRequest,
        body: Body,
        head_len: usize,
        keep_alive: bool,
    ) -> std::io::Result<Option<bool>> {
        let want = match body {
            Body::None => 0,
            Body::Length(n) if n <= crate::admin::MAX_BODY => n as usize,
            Body::Length(_) => {
                self.io
                    .simple(413, "the request body is too large\n", false)
                    .await?;
                return Ok(None);
            }
            Body::Chunked | Body::Invalid => {
                self.io
                    .simple(400, "send the body with a Content-Length\n", false)
                    .await?;
                return Ok(None);
            }
        };
        self.io.head_only = request.method == "HEAD";
        if !crate::admin::allowed(&self.io, request.authorization.as_deref()) {
            // Refused before a byte of the body is read.
            let keep_alive = keep_alive && want == 0;
            crate::admin::refuse(&mut self.io, keep_alive).await?;
            return Ok(if want == 0 { Some(keep_alive) } else { None });
        }
        let buffered = self.buf.len().saturating_sub(head_len).min(want);
        request
            .body
            .extend_from_slice(&self.buf[head_len..head_len + buffered]);
        self.body_in_buf = buffered;
        let limits = self.io.shared.config.http.clone();
        let deadline = Instant::now() + limits.header_timeout;
        while request.body.len() < want {
            let missing = want - request.body.len();
            let now = Instant::now();
            if now >= deadline {
                self.io
                    .simple(408, "request body not received in time\n", false)
                    .await?;
                return Ok(None);
            }
            let read = self.io.read_some(&mut request.body, missing);
            let res = match monoio::time::timeout(deadline - now, read).await {
                Ok(r) => r,
                Err(_) => continue,
            };
            match res {
                Ok(0) => return Ok(Some(false)),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Ok(Err(e)) =
                        monoio::time::timeout(deadline - now, self.io.stream.readable(false)).await
                    {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        crate::admin::serve(&mut self.io, request, keep_alive)
            .await
            .map(Some)
    }
}

impl Io {
    /// This worker's counters.
    pub fn metrics(&self) -> &CoreMetrics {
        self.shared.metrics.core(self.core)
    }

    /// Whether the server is draining.
    pub fn shutting_down(&self) -> bool {
        self.shared.shutdown.load(Ordering::Relaxed)
    }

    /// Sends a short plain-text answer (its body left out for a HEAD request).
    pub async fn simple(
        &mut self,
        status: u16,
        body: &str,
        keep_alive: bool,
    ) -> std::io::Result<()> {
        self.text(status, body, self.head_only, keep_alive).await
    }

    /// Sends a plain-text answer (headers only when `head_only`).
    pub async fn text(
        &mut self,
        status: u16,
        body: &str,
        head_only: bool,
        keep_alive: bool,
    ) -> std::io::Result<()> {
        ResponseHead::new(&mut self.out, status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Content-Length", body.len())
            .finish(keep_alive);
        if !head_only {
            self.out.extend_from_slice(body.as_bytes());
        }
        self.metrics().response(status);
        self.write_out().await
    }

    /// Writes the whole output buffer, giving up after the send timeout.
    pub async fn write_out(&mut self) -> std::io::Result<()> {
        let out = std::mem::take(&mut self.out);
        let (res, out) = self.write_all(out).await;
        self.out = out;
        res
    }

    /// Writes `data` whole (encrypted on a TLS connection), giving up
    /// after the send timeout.
    pub async fn write_all(&mut self, data: Vec<u8>) -> (std::io::Result<()>, Vec<u8>) {
        let timeout = self.shared.config.http.send_timeout;
        let len = data.len();
        match &mut self.tls {
            Some(session) => {
                let write = session.write_all(&mut self.stream, &data);
                match monoio::time::timeout(timeout, write).await {
                    Ok(res) => (res, data),
                    Err(_) => (Err(std::io::ErrorKind::TimedOut.into()), data),
                }
            }
            None => {
                // Under kernel TLS each socket write ends its records:
                // they are counted per write.
                let kernel = &mut self.kernel;
                let write = tls::write_all_counted(&mut self.stream, data, len, |n| match kernel {
                    Some(k) => k.charge(n),
                    None => Ok(()),
                });
                match monoio::time::timeout(timeout, write).await {
                    Ok(r) => r,
                    Err(_) => (Err(std::io::ErrorKind::TimedOut.into()), Vec::new()),
                }
            }
        }
    }

    /// Appends what the client sent to `dst`, at most `max` bytes (decrypted
    /// on a TLS connection). `Ok(0)` when the client closed its side;
    /// `WouldBlock` when nothing (no whole TLS record) is there yet.
    pub async fn read_some(&mut self, dst: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
        if let Some(session) = &mut self.tls {
            return session.read(&mut self.stream, dst, max).await;
        }
        let mut buf = std::mem::take(dst);
        let len = buf.len();
        buf.reserve(max);
        let (res, slice) = self.stream.read(buf.slice_mut(len..len + max)).await;
        *dst = slice.into_inner();
        match (res, &mut self.kernel) {
            (Err(e), Some(kernel)) => kernel.after_read_error(self.stream.as_raw_fd(), e, dst, max),
            (res, _) => res,
        }
    }

    /// Sends TLS close_notify before the connection closes (nothing on
    /// plain HTTP), within a second.
    pub async fn close_notify(&mut self) {
        if let Some(kernel) = &mut self.kernel {
            let stream = &self.stream;
            let send = async {
                loop {
                    match kernel.close_notify(stream.as_raw_fd()) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            stream.writable(false).await?;
                        }
                        res => return res,
                    }
                }
            };
            let _ = monoio::time::timeout(Duration::from_secs(1), send).await;
        }
        if let Some(session) = &mut self.tls {
            let close = session.close(&mut self.stream);
            let _ = monoio::time::timeout(Duration::from_secs(1), close).await;
        }
    }
}

/// Where a path leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Image,
    Admin,
    Health,
    Metrics,
    NotFound,
}

fn route(path: &str) -> Route {
    if path.starts_with(glance_link::PATH_PREFIX) {
        Route::Image
    } else if path.starts_with(crate::admin::PREFIX) {
        Route::Admin
    } else if path == "/healthz" {
        Route::Health
    } else if path == "/metrics" {
        Route::Metrics
    } else {
        Route::NotFound
    }
}
