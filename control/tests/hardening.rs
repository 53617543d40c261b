//! glance-api as a process on a real socket, fed the requests a hostile or
//! broken client sends: oversized heads, request-smuggling shapes, header
//! injection through image names, uploads cut mid-way; and what it logs and
//! refuses at start. Every server here binds 127.0.0.1 port 0 and is killed
//! by its pid when its test ends, passing or not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ADMIN: &str = "hardening-admin-token-0123456789";
const MEMBER: &str = "hardening-member-token-0123456789";
const SERVICE: &str = "hardening-service-token-0123456789";
/// The stream node downloads are redirected to (never contacted: its
/// health checks go to `admin_url`, a closed port).
const STREAM_URL: &str = "http://stream-1.test:9393";
const KEYRING: &str =
    "primary = \"k1\"\n[keys]\nk1 = \"AUpHxry2pHEpkVJGCYLJ-TpiLWITLVzhgiWlW1sGUv8\"\n";
/// The longest any one exchange may take.
const EXCHANGE_DEADLINE: Duration = Duration::from_secs(15);
/// Most bytes read from one exchange.
const MAX_READ: usize = 4 << 20;

/// What to put in a test's working directory.
struct Setup {
    keyring_mode: u32,
    /// `[fleet] admin_token_file`, with this mode.
    admin_token_mode: Option<u32>,
    rust_log: &'static str,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            keyring_mode: 0o600,
            admin_token_mode: None,
            rust_log: "info",
        }
    }
}

fn private(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Writes the keyring, the config and any token file into `dir`; returns
/// the config's path.
fn prepare(dir: &Path, setup: &Setup) -> PathBuf {
    private(&dir.join("keyring.toml"), KEYRING, setup.keyring_mode);
    let mut fleet = "[fleet]\nnode_timeout_secs = 1\nhealth_interval_secs = 600\n".to_owned();
    if let Some(mode) = setup.admin_token_mode {
        private(
            &dir.join("node-admin-token"),
            "node-admin-token-0123456789\n",
            mode,
        );
        fleet.push_str("admin_token_file = \"node-admin-token\"\n");
    }
    let mut tokens = String::new();
    for (token, user, project, roles) in [
        (ADMIN, "root", "ops", "\"admin\", \"member\", \"reader\""),
        (MEMBER, "alice", "proj-a", "\"member\", \"reader\""),
        (SERVICE, "nova", "service", "\"service\""),
    ] {
        tokens.push_str(&format!(
            "[[auth.tokens]]\ntoken = \"{token}\"\nuser_id = \"{user}\"\n\
             project_id = \"{project}\"\nroles = [{roles}]\n"
        ));
    }
    let config = format!(
        "listen = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:9292\"\n\
         keyring = \"keyring.toml\"\nlink_ttl_secs = 300\nmetadata = \"glance.redb\"\n\
         image_size_cap = 1073741824\n\
         stream_nodes = [{{ name = \"stream-1\", public_url = \"{STREAM_URL}\", \
         admin_url = \"http://127.0.0.1:1\" }}]\n\
         [store]\nid = \"local\"\nkind = \"file\"\npath = \"images\"\n\
         [auth]\nmode = \"static\"\n{tokens}{fleet}"
    );
    let path = dir.join("glance-api.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Collects a pipe until it closes, in a thread of its own.
fn drain(mut pipe: impl std::io::Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        out
    })
}

/// A child process, killed (SIGKILL to its pid) when dropped if it has
/// not exited: a failing test leaves no server behind.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A glance-api process; dropping it kills it.
struct Api {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Reaper,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

/// How a process ended, and everything it wrote.
struct Exit {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Starts glance-api on `config` with `RUST_LOG=rust_log`.
fn spawn(config: &Path, rust_log: &str) -> Reaper {
    Reaper(
        Command::new(env!("CARGO_BIN_EXE_glance-api"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Waits up to `limit` for `child` to exit.
fn wait_for(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Api {
    fn start() -> Api {
        Api::with(&Setup::default())
    }

    /// Starts glance-api and waits (at most 20 s) for its ready line:
    /// `glance-api listening on ADDR`.
    fn with(setup: &Setup) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let config = prepare(dir.path(), setup);
        let mut child = spawn(&config, setup.rust_log);
        let stderr = drain(child.0.stderr.take().unwrap());
        let mut out = BufReader::new(child.0.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let stdout = std::thread::spawn(move || {
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            let _ = tx.send(line.clone());
            let mut rest = Vec::new();
            let _ = out.read_to_end(&mut rest);
            let mut all = line.into_bytes();
            all.extend(rest);
            all
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let mut api = Api {
            addr: "127.0.0.1:0".parse().unwrap(),
            dir,
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
        };
        match line
            .strip_prefix("glance-api listening on ")
            .and_then(|a| a.trim().parse().ok())
        {
            Some(addr) => api.addr = addr,
            None => {
                let exit = api.stop();
                panic!("no ready line: {line:?}\n{}", exit.stderr);
            }
        }
        api
    }

    /// SIGTERM by pid, then the exit status and everything it wrote (SIGKILL
    /// after 10 s).
    fn stop(&mut self) -> Exit {
        let child = &mut self.child.0;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = match wait_for(child, Duration::from_secs(10)) {
            Some(s) => s,
            None => {
                let _ = child.kill();
                child.wait().unwrap()
            }
        };
        let text = |h: Option<JoinHandle<Vec<u8>>>| {
            String::from_utf8_lossy(&h.map(|h| h.join().unwrap()).unwrap_or_default()).into_owned()
        };
        Exit {
            status,
            stdout: text(self.stdout.take()),
            stderr: text(self.stderr.take()),
        }
    }

    fn images_dir(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// One request on a fresh connection (`Connection: close`).
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\
             Connection: close\r\n"
        );
        if let Some(t) = token {
            req.push_str(&format!("X-Auth-Token: {t}\r\n"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let got = exchange(self.addr, req.as_bytes());
        let replies = got.replies();
        assert_eq!(replies.len(), 1, "{method} {path}: {}", got.text());
        replies.into_iter().next().unwrap()
    }

    /// A new image's id.
    fn create(&self, body: Value) -> String {
        let r = self.call("POST", "/v2/images", Some(ADMIN), Some(body));
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_owned()
    }

    fn image(&self, id: &str) -> Value {
        let r = self.call("GET", &format!("/v2/images/{id}"), Some(ADMIN), None);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// The image once it has left `saving` (at most 10 s).
    fn settled(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let img = self.image(id);
            if img["status"] != "saving" {
                return img;
            }
            assert!(Instant::now() < deadline, "left in saving: {img}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts the image holds no data: `queued`, no size or checksum, and
    /// nothing of it in the store directory.
    fn assert_no_data(&self, id: &str, shape: &str) {
        let img = self.settled(id);
        assert_eq!(img["status"], "queued", "{shape}: {img}");
        assert_eq!(img["size"], Value::Null, "{shape}: {img}");
        assert_eq!(img["checksum"], Value::Null, "{shape}: {img}");
        assert_eq!(self.images_dir(), Vec::<String>::new(), "{shape}");
    }
}

/// One response as read off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// The head as sent, status line and header lines, without the blank line.
    head: Vec<u8>,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        format!(
            "{}\r\n\r\n{}",
            String::from_utf8_lossy(&self.head),
            String::from_utf8_lossy(&self.body)
        )
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Header lines as (lower-case name, value).
    fn headers(&self) -> Vec<(String, Vec<u8>)> {
        split_lines(&self.head)
            .skip(1)
            .map(|line| {
                let colon = line.iter().position(|&b| b == b':').unwrap_or_else(|| {
                    panic!(
                        "header line without a colon: {:?}",
                        String::from_utf8_lossy(line)
                    )
                });
                (
                    String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase(),
                    line[colon + 1..].trim_ascii().to_vec(),
                )
            })
            .collect()
    }
}

/// The lines of a head, split at CRLF only.
fn split_lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = head;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match find(rest, b"\r\n") {
            Some(i) => {
                let line = &rest[..i];
                rest = &rest[i + 2..];
                Some(line)
            }
            None => Some(std::mem::take(&mut rest)),
        }
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How the server ended an exchange.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// It closed the connection (FIN).
    Closed,
    /// It reset the connection.
    Reset,
    /// It kept the connection open past the deadline.
    Open,
}

/// Everything the server sent on one connection.
struct Exchange {
    bytes: Vec<u8>,
    end: End,
}

impl Exchange {
    fn text(&self) -> String {
        format!("{:?}: {}", self.end, String::from_utf8_lossy(&self.bytes))
    }

    /// How many responses it holds: status lines, wherever they are.
    fn status_lines(&self) -> usize {
        self.bytes
            .windows(b"HTTP/1.1 ".len())
            .filter(|w| *w == b"HTTP/1.1 ")
            .count()
    }

    /// The responses, parsed one after another (each with a
    /// `Content-Length`, or chunked, or none and so empty).
    fn replies(&self) -> Vec<Reply> {
        let mut out = Vec::new();
        let mut rest = self.bytes.as_slice();
        while !rest.is_empty() && out.len() < 8 {
            let end = find(rest, b"\r\n\r\n")
                .unwrap_or_else(|| panic!("an incomplete head: {}", self.text()));
            let head = rest[..end].to_vec();
            rest = &rest[end + 4..];
            let status_line = split_lines(&head).next().unwrap_or_default();
            let status: u16 = std::str::from_utf8(status_line)
                .ok()
                .and_then(|l| l.strip_prefix("HTTP/1.1 "))
                .and_then(|l| l.get(..3))
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("not a status line: {}", self.text()));
            let mut reply = Reply {
                status,
                head,
                body: Vec::new(),
            };
            let headers = reply.headers();
            let field = |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            };
            if let Some(len) = field("content-length") {
                let len: usize = len.parse().unwrap();
                assert!(rest.len() >= len, "a short body: {}", self.text());
                reply.body = rest[..len].to_vec();
                rest = &rest[len..];
            } else if field("transfer-encoding").is_some_and(|t| t == "chunked") {
                loop {
                    let line_end = find(rest, b"\r\n").unwrap();
                    let size =
                        usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16)
                            .unwrap();
                    rest = &rest[line_end + 2..];
                    if size == 0 {
                        rest = &rest[find(rest, b"\r\n").unwrap() + 2..];
                        break;
                    }
                    reply.body.extend_from_slice(&rest[..size]);
                    rest = &rest[size + 2..];
                }
            }
            out.push(reply);
        }
        out
    }

    /// Asserts the server refused the request: it closed the connection
    /// after at most one response, and that one (if any) is a 4xx.
    fn assert_refused(&self, shape: &str) {
        assert_ne!(self.end, End::Open, "{shape}: {}", self.text());
        let count = self.status_lines();
        assert!(count <= 1, "{shape}: {count} responses: {}", self.text());
        if count == 1 {
            let replies = self.replies();
            assert_eq!(replies.len(), 1, "{shape}: {}", self.text());
            let status = replies[0].status;
            assert!(
                (400..500).contains(&status),
                "{shape}: answered {status}: {}",
                self.text()
            );
        }
    }
}

/// Reads until the server closes or resets the connection, or until the
/// deadline.
fn read_all(stream: &mut TcpStream, deadline: Instant) -> Exchange {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let end = loop {
        if Instant::now() > deadline || bytes.len() > MAX_READ {
            break End::Open;
        }
        match stream.read(&mut buf) {
            Ok(0) => break End::Closed,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break End::Reset,
        }
    };
    Exchange { bytes, end }
}

/// Sends `request` on a fresh connection and reads everything the server
/// sends back, until it closes the connection (or `EXCHANGE_DEADLINE`).
/// The server may close before it has read everything: write errors are
/// not ours to report.
fn exchange(addr: SocketAddr, request: &[u8]) -> Exchange {
    let deadline = Instant::now() + EXCHANGE_DEADLINE;
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        let request = request.to_vec();
        std::thread::spawn(move || {
            let _ = stream.write_all(&request);
        })
    };
    let got = read_all(&mut stream, deadline);
    writer.join().unwrap();
    got
}

/// A request head with a token, ending with the blank line.
fn head(method: &str, path: &str, extra: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\
         X-Auth-Token: {ADMIN}\r\n{extra}\r\n"
    )
}

// --- 1. Oversized heads ---------------------------------------------------

/// The longest header line glance-api takes, name and value (Glance's own
/// `max_header_line`).
const MAX_HEADER_LINE: usize = 16 * 1024;

#[test]
fn oversized_request_heads_are_answered_431() {
    let api = Api::start();
    let cases: [(&str, String); 4] = [
        (
            "one 100 KiB header",
            format!("X-Big: {}\r\n", "a".repeat(100 * 1024)),
        ),
        (
            "one header a byte over the line limit",
            format!("X-Big: {}\r\n", "a".repeat(MAX_HEADER_LINE - 4)),
        ),
        (
            "300 headers",
            (0..300).map(|i| format!("X-H{i}: v\r\n")).collect(),
        ),
        (
            "a 600 KiB head",
            (0..60)
                .map(|i| format!("X-H{i}: {}\r\n", "b".repeat(10 * 1024)))
                .collect(),
        ),
    ];
    for (shape, extra) in cases {
        let req = head("GET", "/v2/images", &extra);
        let got = exchange(api.addr, req.as_bytes());
        assert!(
            got.bytes
                .starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{shape}: {}",
            got.text()
        );
        assert_eq!(got.status_lines(), 1, "{shape}: {}", got.text());
        assert_ne!(got.end, End::Open, "{shape}: kept open");
    }
    // A line at the limit, among 90 others, is served.
    let mut extra = format!("X-Fine: {}\r\n", "c".repeat(MAX_HEADER_LINE - 6));
    extra.extend((0..90).map(|i| format!("X-H{i}: v\r\n")));
    extra.push_str("Connection: close\r\n");
    let ok = exchange(api.addr, head("GET", "/v2/images", &extra).as_bytes());
    assert!(
        ok.bytes.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        ok.text()
    );
}

// --- 2. Request smuggling shapes ------------------------------------------

/// A POST creating an image named `name`, framed by `Content-Length`.
fn create_request(name: &str) -> String {
    let body = json!({ "name": name }).to_string();
    format!(
        "{}{body}",
        head(
            "POST",
            "/v2/images",
            &format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )
        )
    )
}

/// The names of every image.
fn names(api: &Api) -> Vec<String> {
    let r = api.call("GET", "/v2/images?limit=1000", Some(ADMIN), None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// hyper takes `Transfer-Encoding` over `Content-Length` and closes the
/// connection after answering (RFC 9112 section 6.3), dropping the header
/// before the router sees it: the one request is the chunked one, and
/// whatever `Content-Length` counted past its end is never read as a
/// request.
#[test]
fn content_length_beside_chunked_is_one_request_and_the_hidden_one_never_runs() {
    let api = Api::start();
    let front = json!({ "name": "front" }).to_string();
    let hidden = create_request("smuggled");
    // The chunked body ends before the hidden request; Content-Length
    // counts it in. Both header orders.
    let body = format!("{:x}\r\n{front}\r\n0\r\n\r\n{hidden}", front.len());
    for (shape, framing) in [
        (
            "CL then TE",
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                body.len()
            ),
        ),
        (
            "TE then CL",
            format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                body.len()
            ),
        ),
    ] {
        let req = format!(
            "{}{body}",
            head(
                "POST",
                "/v2/images",
                &format!("Content-Type: application/json\r\n{framing}")
            )
        );
        let got = exchange(api.addr, req.as_bytes());
        // One answer, then the connection closes: never a second response.
        assert_eq!(got.end, End::Closed, "{shape}: {}", got.text());
        assert_eq!(got.status_lines(), 1, "{shape}: {}", got.text());
        let reply = &got.replies()[0];
        let closes = reply
            .headers()
            .contains(&("connection".to_owned(), b"close".to_vec()));
        assert!(closes, "{shape}: {}", reply.text());
        // Refused, or read as chunked: never as the Content-Length body.
        match reply.status {
            400..=499 => {}
            201 => assert_eq!(reply.json()["name"], "front", "{shape}"),
            other => panic!("{shape}: answered {other}: {}", reply.text()),
        }
    }
    let names = names(&api);
    assert!(!names.contains(&"smuggled".to_owned()), "{names:?}");
}

#[test]
fn obs_folded_header_lines_are_refused() {
    let api = Api::start();
    for (shape, extra) in [
        ("space fold", "X-Note: a\r\n b\r\n"),
        ("tab fold", "X-Note: a\r\n\tb\r\n"),
        (
            "fold hiding Transfer-Encoding",
            "Content-Length: 0\r\nX-Note: a\r\n Transfer-Encoding: chunked\r\n",
        ),
        ("fold of the token", "X-Auth-Token: \r\n hardening\r\n"),
    ] {
        let req = format!(
            "{}{}",
            head("POST", "/v2/images", extra),
            create_request("after-fold")
        );
        let got = exchange(api.addr, req.as_bytes());
        got.assert_refused(shape);
    }
    let names = names(&api);
    assert!(!names.contains(&"after-fold".to_owned()), "{names:?}");
}

/// An upload of `body`, framed by `framing` (header lines).
fn upload_request(id: &str, framing: &str, body: &str) -> String {
    format!(
        "{}{body}",
        head(
            "PUT",
            &format!("/v2/images/{id}/file"),
            &format!("Content-Type: application/octet-stream\r\n{framing}")
        )
    )
}

#[test]
fn bad_chunk_sizes_are_refused_and_leave_the_image_queued() {
    let api = Api::start();
    let id =
        api.create(json!({ "name": "chunks", "disk_format": "raw", "container_format": "bare" }));
    for size in [
        "zz",
        "-1",
        "ffffffffffffffffffff",
        "10000000000000000",
        "0x4",
        " 4",
        "4 4",
    ] {
        let body = format!("4\r\nabcd\r\n{size}\r\nwxyz\r\n0\r\n\r\n");
        let req = upload_request(&id, "Transfer-Encoding: chunked\r\n", &body);
        let got = exchange(api.addr, req.as_bytes());
        let shape = format!("chunk size {size:?}");
        got.assert_refused(&shape);
        api.assert_no_data(&id, &shape);
    }
    // The same upload with good chunks lands.
    let req = upload_request(
        &id,
        "Transfer-Encoding: chunked\r\nConnection: close\r\n",
        "4\r\nabcd\r\n4\r\nwxyz\r\n0\r\n\r\n",
    );
    let got = exchange(api.addr, req.as_bytes());
    assert!(got.bytes.starts_with(b"HTTP/1.1 204 "), "{}", got.text());
    assert_eq!(api.image(&id)["size"], 8);
}

#[test]
fn transfer_codings_other_than_a_lone_chunked_are_refused() {
    let api = Api::start();
    let id =
        api.create(json!({ "name": "codings", "disk_format": "raw", "container_format": "bare" }));
    let body = "4\r\nabcd\r\n0\r\n\r\n";
    for framing in [
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: identity, chunked\r\n",
        "Transfer-Encoding: chunked, identity\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: xchunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
    ] {
        let req = upload_request(&id, framing, body);
        let got = exchange(api.addr, req.as_bytes());
        got.assert_refused(framing);
        api.assert_no_data(&id, framing);
    }
}

// --- 3. Tokens stay out of the logs ---------------------------------------

#[test]
fn tokens_never_reach_the_logs_even_at_debug() {
    let mut api = Api::with(&Setup {
        rust_log: "debug",
        ..Setup::default()
    });
    let wrong = "wrong-token-Zq8rT3vKpLm2Xw9c";
    let wrong_service = "wrong-service-token-Hy7uJk3Nb5Vc";
    let id = api.create(json!({ "name": "logged" }));
    let cases: [(&str, String, u16); 6] = [
        ("valid", format!("X-Auth-Token: {MEMBER}\r\n"), 200),
        ("invalid", format!("X-Auth-Token: {wrong}\r\n"), 401),
        (
            "valid with a service token",
            format!("X-Auth-Token: {MEMBER}\r\nX-Service-Token: {SERVICE}\r\n"),
            200,
        ),
        (
            "valid with an invalid service token",
            format!("X-Auth-Token: {MEMBER}\r\nX-Service-Token: {wrong_service}\r\n"),
            401,
        ),
        (
            "invalid with a valid service token",
            format!("X-Auth-Token: {wrong}\r\nX-Service-Token: {SERVICE}\r\n"),
            401,
        ),
        (
            "a token that is not text",
            format!("X-Auth-Token: {wrong}\u{e9}\r\n"),
            401,
        ),
    ];
    for (what, tokens, want) in &cases {
        let req = format!(
            "GET /v2/images HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\
             Connection: close\r\n{tokens}\r\n"
        );
        let got = exchange(api.addr, req.as_bytes());
        let replies = got.replies();
        assert_eq!(replies.len(), 1, "{what}: {}", got.text());
        assert_eq!(replies[0].status, *want, "{what}: {}", got.text());
    }
    // Tokens beside an upload cut short, a download, and a malformed head.
    let cut = upload_request(
        &id,
        &format!("X-Service-Token: {SERVICE}\r\nTransfer-Encoding: chunked\r\n"),
        "4\r\nabcd\r\nzz\r\n",
    );
    let got = exchange(api.addr, cut.as_bytes());
    assert!(got.bytes.starts_with(b"HTTP/1.1 400 "), "{}", got.text());
    let download = api.call("GET", &format!("/v2/images/{id}/file"), Some(ADMIN), None);
    assert_eq!(download.status, 204, "{}", download.text());
    let folded =
        format!("GET /v2/images HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {wrong}\r\n x\r\n\r\n");
    let got = exchange(api.addr, folded.as_bytes());
    assert!(got.bytes.starts_with(b"HTTP/1.1 400 "), "{}", got.text());
    let exit = api.stop();
    assert!(exit.status.success(), "{:?}: {}", exit.status, exit.stderr);
    // The logs are there, at debug level: an absent token proves something.
    assert!(exit.stdout.contains("listening on"), "{}", exit.stdout);
    assert!(
        exit.stderr.contains("DEBUG"),
        "no debug lines: {}",
        exit.stderr
    );
    for token in [ADMIN, MEMBER, SERVICE, wrong, wrong_service] {
        for (stream, text) in [("stdout", &exit.stdout), ("stderr", &exit.stderr)] {
            assert!(!text.contains(token), "{token} in {stream}:\n{text}");
        }
    }
}

// --- 4. Private files with loose modes ------------------------------------

/// Starts glance-api on a prepared directory and waits (at most 10 s) for
/// it to exit.
fn refused_start(setup: &Setup) -> (Exit, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = prepare(dir.path(), setup);
    let mut child = spawn(&config, "info");
    let stdout = drain(child.0.stdout.take().unwrap());
    let stderr = drain(child.0.stderr.take().unwrap());
    let status = wait_for(&mut child.0, Duration::from_secs(10));
    // Still running: killed now, so that its pipes close.
    drop(child);
    let text = |h: JoinHandle<Vec<u8>>| String::from_utf8_lossy(&h.join().unwrap()).into_owned();
    let exit = Exit {
        status: status.unwrap_or_else(|| panic!("still running after 10 s")),
        stdout: text(stdout),
        stderr: text(stderr),
    };
    (exit, dir)
}

#[test]
fn a_keyring_or_token_file_readable_by_others_stops_the_start() {
    for (what, setup, file) in [
        (
            "keyring 0644",
            Setup {
                keyring_mode: 0o644,
                ..Setup::default()
            },
            "keyring.toml",
        ),
        (
            "keyring 0640",
            Setup {
                keyring_mode: 0o640,
                ..Setup::default()
            },
            "keyring.toml",
        ),
        (
            "keyring 0604",
            Setup {
                keyring_mode: 0o604,
                ..Setup::default()
            },
            "keyring.toml",
        ),
        (
            "admin token 0644",
            Setup {
                admin_token_mode: Some(0o644),
                ..Setup::default()
            },
            "node-admin-token",
        ),
        (
            "admin token 0640",
            Setup {
                admin_token_mode: Some(0o640),
                ..Setup::default()
            },
            "node-admin-token",
        ),
    ] {
        let started = Instant::now();
        let (exit, dir) = refused_start(&setup);
        let path = dir.path().join(file);
        assert!(!exit.status.success(), "{what}: {:?}", exit.status);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: took {:?}",
            started.elapsed()
        );
        assert!(
            exit.stderr.contains(&path.display().to_string()),
            "{what}: {} not named: {}",
            path.display(),
            exit.stderr
        );
        assert!(exit.stderr.contains("chmod 600"), "{what}: {}", exit.stderr);
        assert!(
            !exit.stdout.contains("listening"),
            "{what}: {}",
            exit.stdout
        );
    }
}

// --- 5. Names cannot inject headers into the download's 307 ---------------

#[test]
fn odd_names_and_properties_cannot_inject_headers_into_the_redirect() {
    let api = Api::start();
    let keyring = glance_link::Keyring::load(&api.dir.path().join("keyring.toml")).unwrap();
    for odd in [
        "x\r\nSet-Cookie: evil=1",
        "x\nSet-Cookie: evil=1",
        "x\rLocation: http://evil.test/",
        "\u{2028}Set-Cookie: evil=1\u{2029}",
        "quote \" and 'single' and `back`",
        "%0d%0aSet-Cookie:%20evil=1",
        "\u{85}next line\u{0b}\u{0c}",
    ] {
        let id = api.create(json!({
            "name": odd,
            "x_note": odd,
            "disk_format": "raw",
            "container_format": "bare",
        }));
        let up = upload_request(&id, "Content-Length: 5\r\nConnection: close\r\n", "hello");
        let got = exchange(api.addr, up.as_bytes());
        assert!(
            got.bytes.starts_with(b"HTTP/1.1 204 "),
            "{odd:?}: {}",
            got.text()
        );
        let img = api.image(&id);
        assert_eq!(img["name"], odd, "{img}");
        assert_eq!(img["x_note"], odd, "{img}");
        assert_eq!(img["size"], 5, "{img}");

        let dl = api.call("GET", &format!("/v2/images/{id}/file"), Some(ADMIN), None);
        assert_eq!(dl.status, 307, "{odd:?}: {}", dl.text());
        assert!(
            dl.head.starts_with(b"HTTP/1.1 307 Temporary Redirect\r\n"),
            "{}",
            dl.text()
        );
        // Every CR and LF of the head is a CRLF line end.
        for (i, b) in dl.head.iter().enumerate() {
            match b {
                b'\r' => assert_eq!(dl.head.get(i + 1), Some(&b'\n'), "{}", dl.text()),
                b'\n' => assert_eq!(dl.head[i - 1], b'\r', "{}", dl.text()),
                _ => {}
            }
        }
        let headers = dl.headers();
        let mut names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "connection",
                "content-length",
                "date",
                "location",
                "x-openstack-request-id"
            ],
            "{odd:?}: {}",
            dl.text()
        );
        let field = |name: &str| &headers.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(field("content-length"), b"0");
        assert_eq!(field("connection"), b"close");
        let location = std::str::from_utf8(field("location")).unwrap();
        assert!(
            location.bytes().all(|b| b.is_ascii_graphic()),
            "{location:?}"
        );
        let prefix = format!("{STREAM_URL}/v1/images/");
        let rest = location
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{location:?} is not under {prefix}"));
        let (path, query) = location[STREAM_URL.len()..].split_once('?').unwrap();
        assert!(rest.starts_with(&id), "{location}");
        let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
        let link = keyring
            .verify(
                &glance_link::LinkRequest {
                    method: "GET",
                    path,
                    query,
                    client: "10.0.0.1".parse().unwrap(),
                },
                now,
            )
            .unwrap_or_else(|e| panic!("{location}: {e:?}"));
        assert_eq!(link.params().image_id.to_string(), id);
        assert_eq!(link.params().size, 5);
    }
}

// --- 6. An upload cut mid-way on a real socket ----------------------------

/// Starts an upload announcing 10 MiB, sends 1 MiB, waits until the image
/// is `saving` with a partial file in the store, then ends the connection
/// as `cut` says; returns what the server sent back after a half-close.
fn cut_upload(api: &Api, id: &str, cut: Shutdown) -> Option<Exchange> {
    let head = head(
        "PUT",
        &format!("/v2/images/{id}/file"),
        "Content-Type: application/octet-stream\r\nContent-Length: 10485760\r\n",
    );
    let mut stream = TcpStream::connect(api.addr).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let piece: Vec<u8> = (0..64 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    for _ in 0..16 {
        stream.write_all(&piece).unwrap();
    }
    stream.flush().unwrap();
    // The upload is under way: what follows must undo something.
    let partial = format!("{id}.partial");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = api.image(id)["status"].clone();
        if status == "saving" && api.images_dir().contains(&partial) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the upload never started: {status}, {:?}",
            api.images_dir()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stream.shutdown(cut).unwrap();
    (cut == Shutdown::Write).then(|| read_all(&mut stream, Instant::now() + EXCHANGE_DEADLINE))
}

#[test]
fn an_upload_cut_mid_way_on_a_socket_leaves_the_image_queued_and_no_file() {
    let api = Api::start();
    // The client half-closes: it hears one 400, and the image is queued.
    let id = api.create(json!({ "name": "half-closed" }));
    let got = cut_upload(&api, &id, Shutdown::Write).unwrap();
    assert_eq!(got.status_lines(), 1, "{}", got.text());
    assert_eq!(got.replies()[0].status, 400, "{}", got.text());
    api.assert_no_data(&id, "half-closed");
    // The client vanishes: nobody to answer, and the image is queued too.
    let id = api.create(json!({ "name": "closed" }));
    cut_upload(&api, &id, Shutdown::Both);
    api.assert_no_data(&id, "closed");
    // A whole upload on the same image then lands.
    let up = upload_request(&id, "Content-Length: 3\r\nConnection: close\r\n", "abc");
    let got = exchange(api.addr, up.as_bytes());
    assert!(got.bytes.starts_with(b"HTTP/1.1 204 "), "{}", got.text());
    assert_eq!(api.image(&id)["size"], 3);
    assert_eq!(api.images_dir(), vec![id.clone()]);
}
