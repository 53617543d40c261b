//! A glance-stream process on a port of its own, and a raw HTTP/1.1 client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod fault_origin;
pub mod https;
pub mod nginx;
pub mod pki;
pub mod swift;

use glance_link::{Keyring, LinkParams, SignedLink, StoreId};
use md5::Digest as _;

/// The drivers every I/O test runs on.
pub const DRIVERS: [&str; 2] = ["io_uring", "legacy"];

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha512(bytes: &[u8]) -> [u8; 64] {
    sha2::Sha512::digest(bytes).into()
}

/// Downloads `target` and hashes the body as it arrives (nothing buffered):
/// returns the status, the body length and its sha512.
pub fn download_sha512(addr: SocketAddr, target: &str) -> (u16, u64, [u8; 64]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    let body_start = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the head");
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let status = String::from_utf8_lossy(&head[9..12]).parse().unwrap();
    let mut hasher = sha2::Sha512::new();
    hasher.update(&head[body_start..]);
    let mut len = (head.len() - body_start) as u64;
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    (status, len, hasher.finalize().into())
}

/// Downloads `target` on a new connection and reads until the server
/// closes it, whether or not the body is whole: returns the status, the
/// declared `Content-Length` and the body bytes received.
pub fn download_partial(addr: SocketAddr, target: &str) -> (u16, u64, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {:?}", String::from_utf8_lossy(&raw)))
        + 4;
    let (resp, _) = parse_response(&raw[..head_end], true);
    let declared = resp
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    (resp.status, declared, raw[head_end..].to_vec())
}

/// Starts a download of `target`, calls `cut` (the backend goes away) 1.5 s
/// in, and checks the client then gets a body cut short of `image`, right
/// as far as it goes.
pub fn download_cut_by(addr: SocketAddr, target: &str, image: &[u8], cut: impl FnOnce()) {
    let mut client = TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        client,
        "GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    cut();
    let mut raw = Vec::new();
    let _ = client.read_to_end(&mut raw);
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let got = raw.len() - head_end;
    assert!(
        got < image.len(),
        "the body must be cut short, got all {got} bytes"
    );
    assert_eq!(
        &raw[head_end..],
        &image[..got],
        "the bytes sent before the cut are right"
    );
}

pub fn md5(bytes: &[u8]) -> [u8; 16] {
    md5::Md5::digest(bytes).into()
}

pub fn secret_b64(seed: u64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pseudo_random(32, seed))
}

/// One running glance-stream process with its own directory.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub child: Child,
    pub stderr: Arc<Mutex<String>>,
    pub driver: String,
}

pub struct Image {
    pub params: LinkParams,
    pub bytes: Vec<u8>,
}

impl Node {
    /// Starts a node on `driver` with extra config lines: top-level keys
    /// first, then tables.
    pub fn start(driver: &str, top: &str, tables: &str) -> Node {
        Node::start_with_cache(driver, top, "", tables)
    }

    /// Like [`Node::start`], with extra `[cache]` keys.
    pub fn start_with_cache(driver: &str, top: &str, cache: &str, tables: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("images")).unwrap();
        std::fs::create_dir(dir.path().join("cache")).unwrap();
        write_keyring(dir.path(), "k1", &[("k1", 1)]);
        // A node serving TLS is reached at an https URL.
        let scheme = if tables.contains("[tls]") {
            "https"
        } else {
            "http"
        };
        let config = format!(
            "listen = \"127.0.0.1:0\"\npublic_url = \"{scheme}://127.0.0.1:1\"\nkeyring = \"keyring.toml\"\n\
             io_driver = \"{driver}\"\n{top}\n[cache]\ndir = \"cache\"\nmax_bytes = 1000000000\n{cache}\n\
             [stores.local]\nkind = \"file\"\npath = \"images\"\n{tables}\n"
        );
        std::fs::write(dir.path().join("stream.toml"), config).unwrap();
        let (child, addr, stderr, line) = spawn(&dir.path().join("stream.toml"));
        assert!(line.contains(&format!("driver {driver}")), "{line}");
        Node {
            dir,
            addr,
            child,
            stderr,
            driver: driver.into(),
        }
    }

    pub fn keyring(&self) -> Keyring {
        Keyring::load(&self.dir.path().join("keyring.toml")).unwrap()
    }

    /// Stores `bytes` as a new image and returns its link parameters.
    pub fn add_image(&self, bytes: Vec<u8>, seed: u64) -> Image {
        let img = image_in("local", bytes, seed);
        let path = self.dir.path().join("images");
        std::fs::write(path.join(img.params.image_id.to_string()), &img.bytes).unwrap();
        img
    }
    /// A signed path and query for `params`.
    pub fn link(&self, params: &LinkParams) -> String {
        let link: SignedLink = self.keyring().sign(params.clone());
        format!("{}?{}", link.path(), link.query())
    }

    /// Flips the byte at `at` of image `id`'s cached copy, behind the node's back.
    pub fn damage_cached(&self, id: &uuid::Uuid, at: u64) {
        use std::os::unix::fs::FileExt as _;
        let path = self
            .dir
            .path()
            .join("cache")
            .join("data")
            .join(hex::encode(id.as_bytes()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut byte = [0u8; 1];
        f.read_exact_at(&mut byte, at).unwrap();
        f.write_all_at(&[!byte[0]], at).unwrap();
    }

    pub fn get(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        request(self.addr, "GET", target, headers)
    }

    pub fn metric(&self, line_prefix: &str) -> u64 {
        metric_of(self.addr, line_prefix)
    }

    /// Waits until no chunk fill of `store` is under way (readahead fills
    /// may outlive the responses that started them).
    pub fn settle(&self, store: &str) {
        let m = |event: &str| {
            self.metric(&format!(
                "glance_stream_chunk_fills_total{{store=\"{store}\",event=\"{event}\"}}"
            ))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while m("started") != m("completed") + m("failed") {
            assert!(
                std::time::Instant::now() < deadline,
                "fills of {store} never settled"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// The link parameters of `bytes` as an image (its id made from `seed`) in
/// store `store`; nothing is written anywhere.
pub fn image_in(store: &str, bytes: Vec<u8>, seed: u64) -> Image {
    let id = uuid::Uuid::from_u128(
        0xabcd_ef00_0000_4000_8000_0000_0000_0000 | u128::from(seed) << 80 | u128::from(seed),
    );
    Image {
        params: LinkParams {
            image_id: id,
            store: StoreId::new(store).unwrap(),
            size: bytes.len() as u64,
            md5: md5(&bytes),
            sha512: sha512(&bytes),
            expires: now() + 300,
            client_cidr: None,
        },
        bytes,
    }
}

/// A free loopback port (for a server that must come back on the same one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of the metric line of the node at `addr` starting with `line_prefix`.
pub fn metric_of(addr: SocketAddr, line_prefix: &str) -> u64 {
    let body = String::from_utf8(request(addr, "GET", "/metrics", &[]).body).unwrap();
    body.lines()
        .find_map(|l| {
            l.strip_prefix(line_prefix)
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no metric {line_prefix} in\n{body}"))
}

/// Starts glance-stream on `config` and waits for its ready line.
fn spawn(config: &Path) -> (Child, SocketAddr, Arc<Mutex<String>>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_glance-stream"));
    cmd.arg("--config").arg(config);
    spawn_command(cmd)
}

/// Starts glance-stream on `config` with a cache directory `cache_dir` on a
/// filesystem of its own: a `size_mib` tmpfs, all but `free_mib` of it taken
/// by another file (a full disk). The mount lives in a mount namespace of
/// the process (`unshare`), so no privilege is needed and nothing outlives it.
pub fn restart_on_small_disk(
    config: &Path,
    cache_dir: &Path,
    size_mib: u64,
    free_mib: u64,
) -> Running {
    let script = format!(
        "mount -t tmpfs -o size={size_mib}m tmpfs \"$1\" && \
         fallocate -l {}m \"$1/other-data\" && exec \"$2\" --config \"$3\"",
        size_mib - free_mib
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--map-root-user", "--mount", "sh", "-c", &script, "sh"])
        .arg(cache_dir)
        .arg(env!("CARGO_BIN_EXE_glance-stream"))
        .arg(config);
    let (child, addr, stderr, _) = spawn_command(cmd);
    Running {
        addr,
        child,
        stderr,
    }
}

/// Starts a glance-stream command and waits for its ready line.
fn spawn_command(mut cmd: Command) -> (Child, SocketAddr, Arc<Mutex<String>>, String) {
    let mut child = cmd
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut err_pipe = child.stderr.take().unwrap();
    let sink = Arc::clone(&stderr);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err_pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split_whitespace()
        .nth(3)
        .unwrap_or_else(|| panic!("no ready line: {line:?} {}", stderr.lock().unwrap()))
        .parse()
        .unwrap();
    (child, addr, stderr, line)
}

/// A glance-stream started again on an existing config (a restart); its
/// drop kills it with SIGKILL.
pub struct Running {
    pub addr: SocketAddr,
    child: Child,
    stderr: Arc<Mutex<String>>,
}

/// Starts glance-stream again on `config`.
pub fn restart(config: &Path) -> Running {
    let (child, addr, stderr, _) = spawn(config);
    Running {
        addr,
        child,
        stderr,
    }
}

impl Running {
    /// What it logged so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The value of the metric line starting with `line_prefix`.
    pub fn metric(&self, line_prefix: &str) -> u64 {
        metric_of(self.addr, line_prefix)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn write_keyring(dir: &Path, primary: &str, keys: &[(&str, u64)]) -> PathBuf {
    let mut text = format!("primary = \"{primary}\"\n[keys]\n");
    for (id, seed) in keys {
        text.push_str(&format!("{id} = \"{}\"\n", secret_b64(*seed)));
    }
    let path = dir.join("keyring.toml");
    let tmp = dir.join("keyring.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Header names in order, lowercased, for exact-set checks.
    pub fn header_names(&self) -> Vec<String> {
        self.headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect()
    }
}

/// Sends one request with `Connection: close` and reads the whole answer.
pub fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Response {
    request_with_body(addr, method, target, headers, b"")
}

/// One request with a body (sent with its `Content-Length`), on a new connection.
pub fn request_with_body(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw, method == "HEAD").0
}

/// Parses one response from `raw`; returns it and the bytes left after it.
pub fn parse_response(raw: &[u8], head_only: bool) -> (Response, &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(raw).unwrap() {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("partial response: {:?}", String::from_utf8_lossy(raw)),
    };
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let status = resp.code.unwrap();
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
    let body_len = if head_only || status == 204 { 0 } else { len };
    let rest = &raw[n..];
    assert!(
        rest.len() >= body_len,
        "short body: {} of {body_len}",
        rest.len()
    );
    (
        Response {
            status,
            headers,
            body: rest[..body_len].to_vec(),
        },
        &rest[body_len..],
    )
}

/// A TCP forwarder on a loopback port of its own, between a client and a
/// real server, that a test can cut (every connection closed, new ones
/// refused) and bring back on the same port: a backend that dies mid-answer.
/// It keeps the first 64 MiB its clients sent (a packet capture of the
/// requests).
pub struct Forwarder {
    pub port: u16,
    to: SocketAddr,
    rate: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    /// What clients sent, one buffer per connection (so nothing sent on one
    /// is interleaved with another's).
    sent: Arc<Mutex<Vec<Capture>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The bytes one connection's client sent.
type Capture = Arc<Mutex<Vec<u8>>>;

/// Most client bytes a forwarder keeps.
const KEPT: usize = 64 << 20;

impl Forwarder {
    /// Forwards a new free port to `to`, answers at `rate` bytes per second
    /// per connection.
    pub fn start(to: SocketAddr, rate: u64) -> Forwarder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        Forwarder::serve(listener, port, to, rate)
    }

    fn serve(listener: std::net::TcpListener, port: u16, to: SocketAddr, rate: u64) -> Forwarder {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let sent: Arc<Mutex<Vec<Capture>>> = Arc::default();
        listener.set_nonblocking(true).unwrap();
        let (stop2, conns2, sent2) = (stop.clone(), conns.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                let keep = Capture::default();
                sent2.lock().unwrap().push(keep.clone());
                let mut held = conns2.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(server.try_clone().unwrap());
                for (from, into, limit, keep) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        u64::MAX,
                        Some(keep.clone()),
                    ),
                    (server, client, rate, None),
                ] {
                    std::thread::spawn(move || pump(from, into, limit, keep));
                }
            }
        });
        Forwarder {
            port,
            to,
            rate,
            stop,
            conns,
            sent,
            thread: Some(thread),
        }
    }

    /// The bytes clients sent through so far, each connection's whole
    /// (the first 64 MiB of each), one after the other.
    pub fn sent(&self) -> Vec<u8> {
        let conns = self.sent.lock().unwrap();
        conns
            .iter()
            .flat_map(|c| c.lock().unwrap().clone())
            .collect()
    }

    /// Closes every connection and the listening port.
    pub fn cut(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Listens again on the same port.
    pub fn resume(&mut self) {
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        let kept = std::mem::take(&mut *self.sent.lock().unwrap());
        *self = Forwarder::serve(listener, self.port, self.to, self.rate);
        *self.sent.lock().unwrap() = kept;
    }
}

/// Copies `from` into `into` at most `rate` bytes per second, keeping a
/// copy in `keep` (up to [`KEPT`] bytes).
fn pump(mut from: TcpStream, mut into: TcpStream, rate: u64, keep: Option<Capture>) {
    let start = std::time::Instant::now();
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(keep) = &keep {
            let mut kept = keep.lock().unwrap();
            let room = KEPT.saturating_sub(kept.len()).min(n);
            kept.extend_from_slice(&buf[..room]);
        }
        if into.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if rate != u64::MAX {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = into.shutdown(std::net::Shutdown::Write);
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.cut();
    }
}
