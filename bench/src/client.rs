//! The client engine every scenario drives its servers with: one keep-alive
//! HTTP/1.1 connection per client, its buffer allocated once and reused for
//! every response, heads parsed by `httparse` out of that buffer, bodies
//! counted (and, when asked, hashed) as they arrive, never collected.
//!
//! Each request yields a [`Sample`]: its latency, its time to first byte and
//! its body bytes, from which the scenarios' figures are made.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::Digest as _;

/// Size of a connection's read buffer: large enough that a hot download
/// costs one `read` per MiB.
const BUF_BYTES: usize = 1 << 20;
/// Longest response head accepted.
const MAX_HEAD: usize = 64 << 10;

/// One request's figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// From writing the request to the last body byte, in µs.
    pub latency_us: u32,
    /// From writing the request to the first response byte, in µs.
    pub ttfb_us: u32,
    /// Body bytes received (or, for uploads, sent).
    pub bytes: u64,
}

/// What a response carried, besides its body.
#[derive(Debug, Default)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// `Content-Length` (0 when absent).
    pub content_length: u64,
    /// `Location`, if any.
    pub location: Option<String>,
    /// Whether the server closes the connection after this response
    /// (`Connection: close`).
    pub close: bool,
    /// Keystone's `X-Subject-Token`, if any.
    pub subject_token: Option<String>,
}

/// What the body of a response must be, checked as it streams.
pub enum Check<'a> {
    /// Only its length: `Content-Length` must be this.
    Length(u64),
    /// Its sha512 must be this.
    Sha512(&'a [u8; 64]),
    /// It must be exactly these bytes.
    Bytes(&'a [u8]),
}

/// How much of a download's body the clients check.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Its length only.
    Length,
    /// Every byte, compared with the image's (a `memcmp`: it proves more
    /// than a hash and costs the clients far less CPU).
    Bytes,
    /// Its sha512, computed as it streams (as Nova does; about 2.5 CPU
    /// seconds per GB here, so on a small machine the clients become the
    /// bottleneck).
    Sha512,
}

impl Verify {
    /// The check of a download of `image`, whose sha512 is `sha512`.
    pub fn check<'a>(self, image: &'a [u8], sha512: &'a [u8; 64]) -> Check<'a> {
        match self {
            Verify::Length => Check::Length(image.len() as u64),
            Verify::Bytes => Check::Bytes(image),
            Verify::Sha512 => Check::Sha512(sha512),
        }
    }
}

/// A socket, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// Connects to `addr`, with a TLS handshake when `tls` is given.
    fn open(addr: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> Stream {
        let tcp = open(addr);
        let Some(config) = tls else {
            return Stream::Plain(tcp);
        };
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let conn = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
        }
        Stream::Tls(Box::new(stream))
    }
}

impl std::io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl std::io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A keep-alive connection to one server.
pub struct Conn {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    stream: Stream,
    /// The server said it closes the connection after the last response:
    /// the next request opens a new one.
    closed: bool,
    buf: Vec<u8>,
    /// Received bytes not yet consumed: `buf[start..end]`.
    start: usize,
    end: usize,
    /// The request head being written, reused.
    req: String,
    /// Body bytes received so far, for a sampler on another thread.
    progress: Option<Arc<AtomicU64>>,
}

impl Conn {
    /// Connects to `addr` (no Nagle delay, a generous read timeout).
    pub fn connect(addr: SocketAddr) -> Conn {
        Conn::connect_with(addr, None)
    }

    /// Connects to `server`, over TLS when it speaks HTTPS.
    pub fn to(server: &crate::peer::Server) -> Conn {
        Conn::connect_with(server.addr, server.tls.clone())
    }

    fn connect_with(addr: SocketAddr, tls: Option<Arc<rustls::ClientConfig>>) -> Conn {
        Conn {
            addr,
            stream: Stream::open(addr, tls.as_ref()),
            tls,
            closed: false,
            buf: vec![0; BUF_BYTES],
            start: 0,
            end: 0,
            req: String::with_capacity(1024),
            progress: None,
        }
    }

    /// Counts every body byte this connection receives into `counter` too.
    pub fn track(&mut self, counter: Arc<AtomicU64>) {
        self.progress = Some(counter);
    }

    /// Sends `method target` with the extra header lines `headers` (each
    /// ending in CRLF) and `body`, then reads the head. Returns the head and
    /// the time from the start (a new connection included, where the last
    /// answer closed the old one) to the response's first byte.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &str,
        body: &[u8],
    ) -> (Head, Duration) {
        use std::fmt::Write as _;
        let t0 = Instant::now();
        if self.closed {
            // Servers without keep-alive (the real Glance under uWSGI's
            // http-socket) cost a new connection per request, counted in
            // the request's time as for any client of theirs.
            self.stream = Stream::open(self.addr, self.tls.as_ref());
            (self.start, self.end, self.closed) = (0, 0, false);
        }
        self.req.clear();
        write!(
            self.req,
            "{method} {target} HTTP/1.1\r\nHost: bench\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        self.stream.write_all(self.req.as_bytes()).unwrap();
        if !body.is_empty() {
            self.stream.write_all(body).unwrap();
        }
        // Responses are read whole and requests are not pipelined, so
        // nothing of this one is buffered yet: its first byte is the first
        // one the next read brings.
        if self.start == self.end {
            self.fill();
        }
        let first_byte = t0.elapsed();
        (self.read_head(), first_byte)
    }

    /// `request`, then the whole body, checked as `check` says. Panics on a
    /// status other than `want` or a body that fails the check.
    pub fn fetch(
        &mut self,
        target: &str,
        headers: &str,
        want: u16,
        check: &Check,
    ) -> (Head, Sample) {
        let t0 = Instant::now();
        let (head, ttfb) = self.request("GET", target, headers, b"");
        assert_eq!(head.status, want, "GET {target}");
        let bytes = self.read_body(head.content_length, check);
        let sample = Sample {
            latency_us: micros(t0.elapsed()),
            ttfb_us: micros(ttfb),
            bytes,
        };
        (head, sample)
    }

    /// Reads the response head into the buffer and parses it.
    fn read_head(&mut self) -> Head {
        loop {
            let data = &self.buf[self.start..self.end];
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(data) {
                Ok(httparse::Status::Complete(n)) => {
                    let mut head = Head {
                        status: resp.code.unwrap_or(0),
                        ..Head::default()
                    };
                    for h in resp.headers.iter() {
                        let value = String::from_utf8_lossy(h.value);
                        if h.name.eq_ignore_ascii_case("content-length") {
                            head.content_length = value.trim().parse().unwrap();
                        } else if h.name.eq_ignore_ascii_case("location") {
                            head.location = Some(value.into_owned());
                        } else if h.name.eq_ignore_ascii_case("x-subject-token") {
                            head.subject_token = Some(value.into_owned());
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            head.close = value.eq_ignore_ascii_case("close");
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            panic!("chunked responses are not read: {value}");
                        }
                    }
                    self.start += n;
                    self.closed = head.close;
                    return head;
                }
                Ok(httparse::Status::Partial) => {
                    assert!(data.len() < MAX_HEAD, "response head too large");
                    self.fill();
                }
                Err(e) => panic!("bad response head: {e}"),
            }
        }
    }

    /// Makes room at the end of the buffer and reads into it.
    fn fill(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.stream.read(&mut self.buf[self.end..]).unwrap();
        assert!(n > 0, "connection closed early");
        self.end += n;
    }

    /// Reads `len` body bytes, checking them as `check` says; returns `len`.
    pub fn read_body(&mut self, len: u64, check: &Check) -> u64 {
        let mut sha = matches!(check, Check::Sha512(_)).then(sha2::Sha512::new);
        let mut at = 0usize;
        let mut left = len;
        while left > 0 {
            if self.start == self.end {
                // Nothing buffered: read straight into the whole buffer.
                self.start = 0;
                self.end = 0;
                self.fill();
            }
            let n = (self.end - self.start).min(usize::try_from(left).unwrap_or(usize::MAX));
            let chunk = &self.buf[self.start..self.start + n];
            if let Some(sha) = sha.as_mut() {
                sha.update(chunk);
            } else if let Check::Bytes(want) = check {
                assert!(
                    want.get(at..at + n) == Some(chunk),
                    "wrong bytes at body offset {at}"
                );
            }
            at += n;
            self.start += n;
            left -= n as u64;
            if let Some(p) = &self.progress {
                p.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        match check {
            Check::Sha512(want) => {
                let got: [u8; 64] = sha.map(|s| s.finalize().into()).unwrap_or([0; 64]);
                assert!(got == **want, "body sha512 differs from the image's");
            }
            Check::Bytes(want) => assert_eq!(at, want.len(), "body length"),
            Check::Length(want) => assert_eq!(len, *want, "body length"),
        }
        len
    }

    /// The body of the last response as text (for small JSON answers).
    pub fn read_text(&mut self, len: u64) -> String {
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        let mut left = len;
        while left > 0 {
            if self.start == self.end {
                self.fill();
            }
            let n = (self.end - self.start).min(usize::try_from(left).unwrap_or(usize::MAX));
            out.extend_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            left -= n as u64;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A new connection to `addr`: no Nagle delay, a generous read timeout.
fn open(addr: SocketAddr) -> TcpStream {
    let stream =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(900)))
        .unwrap();
    stream
}

/// A duration in µs, saturated to fit a sample.
pub fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}
