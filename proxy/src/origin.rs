//! Byte ranges of an object from a remote store (the `http`, `s3` and
//! `swift` kinds): ranged GETs over keep-alive connections, pooled per worker thread (monoio
//! sockets never leave their thread), with connect, first-byte and idle
//! timeouts, over plain HTTP or HTTPS (rustls, verified against the system's
//! roots or the store's CA file). Responses are checked strictly: the status,
//! `Content-Range` and `Content-Length` must describe exactly the bytes
//! asked for. A Swift GET carries the store's token, renewed and sent again
//! once when Swift answers `401`.

use std::cell::RefCell;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut as _;
use monoio::io::{AsyncReadRent as _, AsyncWriteRentExt as _};
use monoio::net::TcpStream;

/// Largest response head read from an origin.
const MAX_HEAD: usize = 16 << 10;

/// How patient to be with a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest wait for a connection.
    pub connect: Duration,
    /// Longest wait for the response head.
    pub first_byte: Duration,
    /// Longest wait for the next body bytes.
    pub idle: Duration,
}

impl Default for Timeouts {
    /// 5 s to connect, 30 s for the first byte, 30 s between body bytes.
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(30),
            idle: Duration::from_secs(30),
        }
    }
}

/// Where an origin is and how patient to be with it.
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// How an object name becomes a request.
    pub target: Target,
    /// Connect, first-byte and idle timeouts.
    pub timeouts: Timeouts,
    /// Idle connections kept per worker thread.
    pub max_idle: usize,
    /// HTTPS: the client settings (`None` for plain HTTP).
    pub tls: Option<OriginTls>,
}

/// How an HTTPS origin is spoken to.
#[derive(Clone)]
pub struct OriginTls {
    /// Trusted roots and protocol settings.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the certificate must carry (the URL's host).
    pub name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for OriginTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl OriginConfig {
    /// Speaks HTTPS to this origin, trusting the CAs of `ca_file` (PEM), or
    /// the system's roots without one.
    pub fn use_tls(&mut self, ca_file: Option<&std::path::Path>) -> Result<(), String> {
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| format!("host {:?}: {e}", self.host))?;
        self.tls = Some(OriginTls {
            config: crate::tls::client_config(ca_file)?,
            name,
        });
        Ok(())
    }
}

/// A connection to an origin: TCP, or TLS over it.
struct Conn {
    stream: TcpStream,
    tls: Option<Box<crate::tls::ClientSession>>,
}

impl Conn {
    /// Writes `data` whole.
    async fn write_all(&mut self, data: Vec<u8>) -> io::Result<()> {
        match &mut self.tls {
            Some(session) => session.write_all(&mut self.stream, &data).await,
            None => self.stream.write_all(data).await.0.map(|_| ()),
        }
    }

    /// Appends at most `max` bytes of the answer to `buf`, waiting for
    /// them. `Ok(0)` when the origin closed the connection.
    async fn read(&mut self, buf: Vec<u8>, max: usize) -> (io::Result<usize>, Vec<u8>) {
        let mut buf = buf;
        match &mut self.tls {
            Some(session) => {
                let n = session.read_waiting(&mut self.stream, &mut buf, max).await;
                (n, buf)
            }
            None => {
                let len = buf.len();
                buf.reserve(max);
                let (res, slice) = self.stream.read(buf.slice_mut(len..len + max)).await;
                (res, slice.into_inner())
            }
        }
    }
}

/// How an object name becomes a request target.
#[derive(Debug, Clone)]
pub enum Target {
    /// A plain HTTP origin: a path prefix, starting and ending with `/`; the
    /// object name follows it.
    Prefix(String),
    /// An S3 bucket: every GET is presigned with AWS Signature Version 4.
    S3(Box<S3Target>),
    /// A Swift container: GETs at the storage URL authentication names,
    /// with its token.
    Swift(Arc<crate::swift_auth::SwiftAuth>),
}

/// An S3 bucket and the credentials that read it.
#[derive(Clone, Debug)]
pub struct S3Target {
    bucket: glance_link::s3::S3Bucket,
}

/// How long a presigned backend request stays valid: it is used at once.
const PRESIGN_VALIDITY: Duration = Duration::from_secs(300);

impl S3Target {
    /// The request target (path and query) and the `Host` header of a
    /// presigned GET of `object`.
    fn presigned(&self, object: &str) -> Option<(String, String)> {
        let url = self.bucket.presigned_get(object, PRESIGN_VALIDITY);
        let host = url.host_str()?;
        // The signed `host` header: the port only when it is not the default.
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let target = format!("{}?{}", url.path(), url.query()?);
        Some((target, host))
    }
}

impl OriginConfig {
    /// Parses `http[s]://host[:port]/prefix/` (default timeouts; 16 idle
    /// connections; an https origin verified against the system's roots
    /// until [`OriginConfig::use_tls`] names a CA file).
    pub fn from_url(url: &str) -> Result<OriginConfig, String> {
        let (https, host, port, path) = split_http_url(url)?;
        let mut prefix = format!("/{path}");
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let mut config = OriginConfig {
            host,
            port,
            target: Target::Prefix(prefix),
            timeouts: Timeouts::default(),
            max_idle: 16,
            tls: None,
        };
        if https {
            config.use_tls(None)?;
        }
        Ok(config)
    }

    /// An S3 bucket, read path-style at its endpoint.
    pub fn s3(bucket: glance_link::s3::S3Bucket) -> Result<OriginConfig, String> {
        let base = bucket.bucket().base_url().clone();
        let host = base
            .host_str()
            .ok_or("the S3 endpoint has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = base.port_or_known_default().unwrap_or(80);
        let mut config = OriginConfig {
            host,
            port,
            target: Target::S3(Box::new(S3Target { bucket })),
            timeouts: Timeouts::default(),
            max_idle: 16,
            tls: None,
        };
        if base.scheme() == "https" {
            config.use_tls(None)?;
        }
        Ok(config)
    }

    /// A Swift container. Host, port and TLS come from the storage URL of
    /// each session; the fields hold the auth URL's until then.
    pub fn swift(
        auth: crate::swift_auth::SwiftAuth,
        auth_url: &str,
    ) -> Result<OriginConfig, String> {
        let (_, host, port, _) = split_http_url(auth_url)?;
        Ok(OriginConfig {
            host,
            port,
            target: Target::Swift(Arc::new(auth)),
            timeouts: Timeouts::default(),
            max_idle: 16,
            tls: None,
        })
    }

    /// Whether this is a Swift store.
    pub fn is_swift(&self) -> bool {
        matches!(self.target, Target::Swift(_))
    }

    /// Where a GET of `object` goes, for the stores whose endpoint is fixed.
    fn fixed_route(&self, object: &str) -> Option<Route<'_>> {
        let (target, host_header) = self.request_target(object)?;
        Some(Route {
            host: &self.host,
            port: self.port,
            tls: self.tls.as_ref(),
            target,
            host_header,
            token: None,
        })
    }

    /// The request target and `Host` header of a GET of `object`.
    fn request_target(&self, object: &str) -> Option<(String, String)> {
        match &self.target {
            Target::Prefix(prefix) => {
                // An IPv6 literal goes in brackets in the Host header.
                let host = if self.host.contains(':') {
                    format!("[{}]:{}", self.host, self.port)
                } else {
                    format!("{}:{}", self.host, self.port)
                };
                Some((format!("{prefix}{object}"), host))
            }
            Target::S3(s3) => s3.presigned(object),
            Target::Swift(_) => None,
        }
    }
}

/// Where one GET goes and what it carries.
struct Route<'a> {
    host: &'a str,
    port: u16,
    tls: Option<&'a OriginTls>,
    /// Path and query.
    target: String,
    host_header: String,
    /// A Swift token (printable ASCII: checked when the session was read).
    token: Option<&'a str>,
}

impl Route<'_> {
    /// Which pooled connections can carry this route.
    fn pool_key(&self) -> String {
        format!("{}:{}:{}", self.host, self.port, self.tls.is_some())
    }
}

/// Splits `http[s]://host[:port][/path]` into whether it is https, host,
/// port and path (without its leading `/`).
fn split_http_url(url: &str) -> Result<(bool, String, u16, &str), String> {
    let (https, rest, default_port) =
        match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest, 443),
            (None, Some(rest)) => (false, rest, 80),
            _ => return Err(format!("url {url:?} must start with http:// or https://")),
        };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            let port = p
                .parse()
                .map_err(|_| format!("url {url:?} has a bad port"))?;
            (h.trim_start_matches('[').trim_end_matches(']'), port)
        }
        _ => (authority, default_port),
    };
    if host.is_empty() || host.contains('@') || path.contains(['?', '#', ' ']) {
        return Err(format!(
            "url {url:?} is not a plain http[s]://host:port/prefix/"
        ));
    }
    Ok((https, host.to_owned(), port, path))
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No connection could be made.
    #[error("cannot connect to the origin: {0}")]
    Connect(io::Error),
    /// The origin did not answer in time.
    #[error("origin timed out waiting for {0}")]
    Timeout(&'static str),
    /// The origin answered with another status.
    #[error("origin answered {0}")]
    Status(u16),
    /// The answer does not describe the bytes asked for, or is not HTTP.
    #[error("origin answer is not usable: {0}")]
    Protocol(String),
    /// The connection failed mid-answer.
    #[error("origin connection failed: {0}")]
    Io(io::Error),
    /// The store's authentication failed.
    #[error("{0}")]
    Auth(glance_link::swift::AuthError),
}

impl FetchError {
    /// Whether trying again (on a new connection, after a pause) may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            FetchError::Connect(_) | FetchError::Timeout(_) | FetchError::Io(_) => true,
            FetchError::Status(s) => *s >= 500 || *s == 429,
            FetchError::Protocol(_) => false,
            FetchError::Auth(e) => e.retryable(),
        }
    }
}

/// An origin and this thread's idle connections to it.
pub struct Origin {
    config: OriginConfig,
    /// Idle connections, by [`Route::pool_key`], and since when.
    idle: RefCell<Vec<(String, Conn, Instant)>>,
}

/// Pooled connections older than this are closed rather than reused: an
/// origin or a load balancer in between may have dropped them silently.
const MAX_IDLE_AGE: Duration = Duration::from_secs(4);

/// What went wrong on one connection attempt.
enum Attempt {
    /// The connection was closed before any answer: a stale pooled
    /// connection, worth one retry on a fresh one.
    Stale(FetchError),
    /// A real failure.
    Failed(FetchError),
}

impl Origin {
    /// An origin with an empty pool.
    pub fn new(config: OriginConfig) -> Origin {
        Origin {
            config,
            idle: RefCell::new(Vec::new()),
        }
    }

    /// Idle connections pooled now.
    pub fn idle_connections(&self) -> usize {
        self.idle.borrow().len()
    }

    /// Fetches bytes `start..=end` of `object`, whose whole size is `total`,
    /// into `buf` (cleared first). The buffer is handed back whatever the
    /// outcome.
    pub async fn fetch(
        &self,
        object: &str,
        start: u64,
        end: u64,
        total: u64,
        buf: Vec<u8>,
    ) -> (Result<(), FetchError>, Vec<u8>) {
        if end < start || end >= total || object.contains(['/', '?', '#', ' ', '\r', '\n']) {
            return (
                Err(FetchError::Protocol("bad object name or range".into())),
                buf,
            );
        }
        if let Target::Swift(auth) = &self.config.target {
            return self.fetch_swift(auth, object, start, end, total, buf).await;
        }
        let Some(route) = self.config.fixed_route(object) else {
            return (
                Err(FetchError::Protocol("cannot build the request".into())),
                buf,
            );
        };
        self.fetch_on(&route, start, end, total, buf).await
    }

    /// A Swift GET with the session held (or a new one); after a `401`,
    /// once more with a renewed session.
    async fn fetch_swift(
        &self,
        auth: &Arc<crate::swift_auth::SwiftAuth>,
        object: &str,
        start: u64,
        end: u64,
        total: u64,
        buf: Vec<u8>,
    ) -> (Result<(), FetchError>, Vec<u8>) {
        let mut session = match auth.current() {
            Some(s) => s,
            None => match renew(auth, None).await {
                Ok(s) => s,
                Err(e) => return (Err(e), buf),
            },
        };
        let name = auth.account().object_name(object);
        let mut buf = buf;
        for attempt in 0..2 {
            let storage = &session.session.storage_url;
            let tls = match auth.tls_for(&session.session) {
                Ok(tls) => tls,
                Err(e) => return (Err(FetchError::Connect(io::Error::other(e))), buf),
            };
            let route = Route {
                host: storage.host(),
                port: storage.port(),
                tls: tls.as_ref(),
                target: auth.account().object_path(storage, &name),
                host_header: storage.host_header(),
                token: Some(&session.session.token),
            };
            let (result, b) = self.fetch_on(&route, start, end, total, buf).await;
            buf = b;
            match result {
                Err(FetchError::Status(401)) if attempt == 0 => {
                    tracing::info!("Swift refused the token: authenticating again");
                    match renew(auth, Some(Arc::clone(&session))).await {
                        Ok(s) => session = s,
                        Err(e) => return (Err(e), buf),
                    }
                }
                other => return (other, buf),
            }
        }
        (Err(FetchError::Status(401)), buf)
    }

    /// One GET on `route`: on a pooled connection (and, if that one turns
    /// out stale, a fresh one) or a new connection.
    async fn fetch_on(
        &self,
        route: &Route<'_>,
        start: u64,
        end: u64,
        total: u64,
        buf: Vec<u8>,
    ) -> (Result<(), FetchError>, Vec<u8>) {
        let key = route.pool_key();
        let pooled = {
            let mut idle = self.idle.borrow_mut();
            idle.retain(|(_, _, since)| since.elapsed() < MAX_IDLE_AGE);
            idle.iter()
                .rposition(|(k, _, _)| *k == key)
                .map(|i| idle.remove(i).1)
        };
        let (result, buf) = match pooled {
            Some(conn) => {
                let (r, buf) = self.attempt(conn, route, start, end, total, buf).await;
                match r {
                    Err(Attempt::Stale(_)) => match self.connect(route).await {
                        Ok(conn) => self.attempt(conn, route, start, end, total, buf).await,
                        Err(e) => (Err(Attempt::Failed(e)), buf),
                    },
                    other => (other, buf),
                }
            }
            None => match self.connect(route).await {
                Ok(conn) => self.attempt(conn, route, start, end, total, buf).await,
                Err(e) => (Err(Attempt::Failed(e)), buf),
            },
        };
        let result = result.map_err(|a| match a {
            Attempt::Stale(e) | Attempt::Failed(e) => e,
        });
        (result, buf)
    }

    /// Resolves the host off the event loop (getaddrinfo blocks) and
    /// connects to the first address that answers.
    async fn connect(&self, route: &Route<'_>) -> Result<Conn, FetchError> {
        let (host, port) = (route.host.to_owned(), route.port);
        let resolved = monoio::spawn_blocking(move || {
            (host.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<SocketAddr>>())
        });
        let addrs = match monoio::time::timeout(self.config.timeouts.connect, resolved).await {
            Ok(Ok(Ok(addrs))) => addrs,
            Ok(Ok(Err(e))) => return Err(FetchError::Connect(e)),
            Ok(Err(_)) => {
                return Err(FetchError::Connect(io::Error::other(
                    "name resolution failed",
                )));
            }
            Err(_) => return Err(FetchError::Timeout("name resolution")),
        };
        let mut last = FetchError::Connect(io::Error::new(
            io::ErrorKind::NotFound,
            "the host has no address",
        ));
        for addr in addrs {
            match monoio::time::timeout(self.config.timeouts.connect, TcpStream::connect_addr(addr))
                .await
            {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return self.secure(s, route.tls).await;
                }
                Ok(Err(e)) => last = FetchError::Connect(e),
                Err(_) => last = FetchError::Timeout("a connection"),
            }
        }
        Err(last)
    }

    /// Runs the TLS handshake on a new connection to an https origin
    /// (within the connect timeout).
    async fn secure(&self, stream: TcpStream, tls: Option<&OriginTls>) -> Result<Conn, FetchError> {
        let mut conn = Conn { stream, tls: None };
        let Some(tls) = tls else {
            return Ok(conn);
        };
        let client = rustls::client::UnbufferedClientConnection::new(
            Arc::clone(&tls.config),
            tls.name.clone(),
        )
        .map_err(|e| FetchError::Connect(io::Error::other(e)))?;
        let mut session = Box::new(crate::tls::ClientSession::new(client));
        let handshake = session.handshake(&mut conn.stream);
        match monoio::time::timeout(self.config.timeouts.connect, handshake).await {
            Ok(Ok(())) => {
                conn.tls = Some(session);
                Ok(conn)
            }
            Ok(Err(e)) => Err(FetchError::Connect(e)),
            Err(_) => Err(FetchError::Timeout("the TLS handshake")),
        }
    }

    /// One request on one connection; the connection goes back to the pool
    /// when the answer was read whole and may be reused.
    async fn attempt(
        &self,
        mut conn: Conn,
        route: &Route<'_>,
        start: u64,
        end: u64,
        total: u64,
        mut buf: Vec<u8>,
    ) -> (Result<(), Attempt>, Vec<u8>) {
        let c = &self.config;
        let (target, host) = (&route.target, &route.host_header);
        let token = match route.token {
            Some(t) => format!("X-Auth-Token: {t}\r\n"),
            None => String::new(),
        };
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nRange: bytes={start}-{end}\r\n{token}User-Agent: glance-stream\r\n\r\n"
        );
        if let Err(e) = conn.write_all(request.into_bytes()).await {
            return (Err(Attempt::Stale(FetchError::Io(e))), buf);
        }
        let head = match monoio::time::timeout(c.timeouts.first_byte, read_head(&mut conn)).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return (Err(e), buf),
            Err(_) => {
                return (
                    Err(Attempt::Failed(FetchError::Timeout("the response head"))),
                    buf,
                );
            }
        };
        let len = end - start + 1;
        if let Err(e) = check_head(&head, start, end, total) {
            return (Err(Attempt::Failed(e)), buf);
        }
        buf.clear();
        let Ok(want) = usize::try_from(len) else {
            return (
                Err(Attempt::Failed(FetchError::Protocol(
                    "range too large".into(),
                ))),
                buf,
            );
        };
        buf.reserve(want);
        let early = head.body_start.len().min(want);
        buf.extend_from_slice(&head.body_start[..early]);
        if head.body_start.len() > want {
            return (
                Err(Attempt::Failed(FetchError::Protocol(
                    "more bytes than announced".into(),
                ))),
                buf,
            );
        }
        while buf.len() < want {
            let filled = buf.len();
            let read = conn.read(buf, want - filled);
            let (res, b) = match monoio::time::timeout(c.timeouts.idle, read).await {
                Ok(r) => r,
                Err(_) => {
                    return (
                        Err(Attempt::Failed(FetchError::Timeout("body bytes"))),
                        Vec::new(),
                    );
                }
            };
            buf = b;
            match res {
                Ok(0) => {
                    return (
                        Err(Attempt::Failed(FetchError::Protocol(
                            "body cut short".into(),
                        ))),
                        buf,
                    );
                }
                Ok(_) => {}
                Err(e) => return (Err(Attempt::Failed(FetchError::Io(e))), buf),
            }
        }
        if head.keep_alive {
            let mut idle = self.idle.borrow_mut();
            if idle.len() < c.max_idle {
                idle.push((route.pool_key(), conn, Instant::now()));
            }
        }
        (Ok(()), buf)
    }
}

/// Renews `auth`'s session on the blocking pool.
async fn renew(
    auth: &Arc<crate::swift_auth::SwiftAuth>,
    stale: Option<Arc<glance_link::swift::Held>>,
) -> Result<Arc<glance_link::swift::Held>, FetchError> {
    let auth = Arc::clone(auth);
    match monoio::spawn_blocking(move || auth.renew(stale.as_ref())).await {
        Ok(r) => r.map_err(FetchError::Auth),
        Err(_) => Err(FetchError::Auth(glance_link::swift::AuthError::Transport(
            "the authentication task failed".into(),
        ))),
    }
}

/// A parsed response head and the body bytes read with it.
struct Head {
    status: u16,
    content_length: Option<u64>,
    content_range: Option<String>,
    chunked: bool,
    keep_alive: bool,
    body_start: Vec<u8>,
}

async fn read_head(conn: &mut Conn) -> Result<Head, Attempt> {
    let mut raw: Vec<u8> = Vec::with_capacity(4096);
    loop {
        if raw.len() >= MAX_HEAD {
            return Err(Attempt::Failed(FetchError::Protocol(
                "response head too large".into(),
            )));
        }
        if raw.capacity() == raw.len() {
            raw.reserve(4096);
        }
        let filled = raw.len();
        let cap = raw.capacity().min(MAX_HEAD);
        let (res, r) = conn.read(raw, cap - filled).await;
        raw = r;
        match res {
            Ok(0) if filled == 0 => {
                // Retryable: the origin closed the connection (a restart, an
                // idle timeout) before answering anything.
                let closed =
                    io::Error::new(io::ErrorKind::UnexpectedEof, "closed before answering");
                return Err(Attempt::Stale(FetchError::Io(closed)));
            }
            Ok(0) => {
                return Err(Attempt::Failed(FetchError::Protocol(
                    "closed mid-head".into(),
                )));
            }
            Ok(_) => {}
            Err(e) if filled == 0 => return Err(Attempt::Stale(FetchError::Io(e))),
            Err(e) => return Err(Attempt::Failed(FetchError::Io(e))),
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&raw) {
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(Attempt::Failed(FetchError::Protocol(e.to_string()))),
            Ok(httparse::Status::Complete(n)) => {
                let mut head = Head {
                    status: resp.code.unwrap_or(0),
                    content_length: None,
                    content_range: None,
                    chunked: false,
                    keep_alive: resp.version == Some(1),
                    body_start: raw[n..].to_vec(),
                };
                for h in resp.headers.iter() {
                    let value = String::from_utf8_lossy(h.value);
                    if h.name.eq_ignore_ascii_case("content-length") {
                        if head.content_length.is_some() {
                            // Two lengths: the framing cannot be trusted.
                            return Err(Attempt::Failed(FetchError::Protocol(
                                "several Content-Length headers".into(),
                            )));
                        }
                        head.content_length = value.trim().parse().ok();
                    } else if h.name.eq_ignore_ascii_case("content-range") {
                        head.content_range = Some(value.trim().to_owned());
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        head.chunked = true;
                    } else if h.name.eq_ignore_ascii_case("connection")
                        && value.to_ascii_lowercase().contains("close")
                    {
                        head.keep_alive = false;
                    }
                }
                return Ok(head);
            }
        }
    }
}

/// The answer must carry exactly bytes `start..=end` of an object of `total` bytes.
fn check_head(head: &Head, start: u64, end: u64, total: u64) -> Result<(), FetchError> {
    let len = end - start + 1;
    // An error answer is named by its status, however it is framed.
    if !matches!(head.status, 200 | 206) {
        return Err(FetchError::Status(head.status));
    }
    if head.chunked {
        return Err(FetchError::Protocol(
            "chunked answer to a range request".into(),
        ));
    }
    if head.content_length != Some(len) {
        return Err(FetchError::Protocol(format!(
            "Content-Length {:?} for a range of {len} bytes",
            head.content_length
        )));
    }
    match head.status {
        206 => {
            let want = format!("bytes {start}-{end}/{total}");
            match &head.content_range {
                Some(r) if *r == want => Ok(()),
                other => Err(FetchError::Protocol(format!(
                    "Content-Range {other:?}, asked for {start}-{end}"
                ))),
            }
        }
        // An origin that ignores Range sends the whole object: usable only
        // when that is exactly what was asked for.
        200 if start == 0 && end + 1 == total => Ok(()),
        s => Err(FetchError::Status(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_urls_parse_into_host_port_and_prefix() {
        let target = |url: &str| {
            let c = OriginConfig::from_url(url).unwrap();
            let (path, host) = c.request_target("obj").unwrap();
            (c.host, c.port, path, host)
        };
        assert_eq!(
            target("http://10.0.0.5:8080/images"),
            (
                "10.0.0.5".into(),
                8080,
                "/images/obj".into(),
                "10.0.0.5:8080".into()
            )
        );
        assert_eq!(
            target("http://origin/"),
            ("origin".into(), 80, "/obj".into(), "origin:80".into())
        );
        assert_eq!(
            target("http://[::1]:81/a/b/"),
            ("::1".into(), 81, "/a/b/obj".into(), "[::1]:81".into())
        );
        // https: port 443 by default, the certificate checked against the host.
        let c = OriginConfig::from_url("https://images.example/g/").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("images.example", 443));
        let tls = c.tls.unwrap();
        assert_eq!(format!("{:?}", tls.name), "DnsName(\"images.example\")");
        assert!(OriginConfig::from_url("http://x/").unwrap().tls.is_none());
        for bad in [
            "ftp://x",
            "http://:80/",
            "http://x:port/",
            "http://x/a?b",
            "http://user:pw@x/",
        ] {
            assert!(OriginConfig::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn s3_gets_are_presigned_path_style_with_the_key_encoded_and_no_secret() {
        let bucket = |endpoint: &str, prefix: &str| {
            glance_link::s3::S3Bucket::new(
                endpoint,
                "images",
                "us-east-1",
                "test:tester",
                "s3cr3t-value",
                prefix,
            )
            .unwrap()
        };
        let c = OriginConfig::s3(bucket("http://127.0.0.1:8080", "glance images/\u{e9}/")).unwrap();
        let (target, host) = c
            .request_target("3b8f0c1e-0000-4abc-8def-0123456789ab")
            .unwrap();
        assert_eq!(host, "127.0.0.1:8080");
        let (path, query) = target.split_once('?').unwrap();
        assert_eq!(
            path,
            "/images/glance%20images/%C3%A9/3b8f0c1e-0000-4abc-8def-0123456789ab"
        );
        for field in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=test%3Atester%2F",
            "%2Fus-east-1%2Fs3%2Faws4_request",
            "X-Amz-Expires=300",
            "X-Amz-SignedHeaders=host",
            "X-Amz-Signature=",
        ] {
            assert!(query.contains(field), "{field} in {query}");
        }
        assert!(!target.contains("s3cr3t"));
        assert!(!format!("{c:?}").contains("s3cr3t"));
        // The default port is not part of the signed host.
        let c = OriginConfig::s3(bucket("http://s3.example", "")).unwrap();
        assert_eq!(c.request_target("o").unwrap().1, "s3.example");
    }

    fn head(status: u16, len: Option<u64>, range: Option<&str>) -> Head {
        Head {
            status,
            content_length: len,
            content_range: range.map(str::to_owned),
            chunked: false,
            keep_alive: true,
            body_start: Vec::new(),
        }
    }

    #[test]
    fn only_an_answer_for_exactly_the_asked_range_is_accepted() {
        assert!(check_head(&head(206, Some(10), Some("bytes 5-14/100")), 5, 14, 100).is_ok());
        assert!(check_head(&head(200, Some(100), None), 0, 99, 100).is_ok());
        assert!(check_head(&head(206, Some(10), Some("bytes 6-15/100")), 5, 14, 100).is_err());
        assert!(
            check_head(&head(206, Some(10), Some("bytes 5-14/101")), 5, 14, 100).is_err(),
            "another object"
        );
        assert!(check_head(&head(206, Some(9), Some("bytes 5-14/100")), 5, 14, 100).is_err());
        assert!(check_head(&head(200, Some(100), None), 5, 14, 100).is_err());
        assert!(matches!(
            check_head(&head(404, Some(0), None), 0, 9, 10),
            Err(FetchError::Status(404))
        ));
        assert!(matches!(
            check_head(&head(503, None, None), 0, 9, 10),
            Err(FetchError::Status(503))
        ));
        let mut chunked_error = head(403, None, None);
        chunked_error.chunked = true;
        assert!(matches!(
            check_head(&chunked_error, 0, 9, 10),
            Err(FetchError::Status(403))
        ));
        let mut chunked = head(206, Some(10), Some("bytes 5-14/100"));
        chunked.chunked = true;
        assert!(check_head(&chunked, 5, 14, 100).is_err());
        assert!(FetchError::Status(503).retryable() && !FetchError::Status(404).retryable());
    }
}
