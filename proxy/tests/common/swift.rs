//! OpenStack Swift (Debian's packages) as a real S3 server on loopback, run
//! by `scripts/swift.sh serve` once per test binary: its s3api middleware
//! checks every SigV4 signature. The script stops Swift when this process
//! exits (its stdin, held here, closes).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action as _, UrlStyle};

/// A running Swift and how to reach its S3 API.
pub struct Swift {
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret: String,
    _child: Mutex<Child>,
    _dir: tempfile::TempDir,
}

impl Swift {
    /// The Swift of this test binary, started on first use (a few seconds).
    pub fn shared() -> &'static Swift {
        static SWIFT: OnceLock<Swift> = OnceLock::new();
        SWIFT.get_or_init(Swift::start)
    }

    fn start() -> Swift {
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/swift.sh");
        let mut child = Command::new("bash")
            .arg(script)
            .arg("serve")
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("bash runs scripts/swift.sh");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("ready "),
            "Swift did not start (install it with `scripts/swift.sh install`): {line:?}"
        );
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .to_owned()
        };
        Swift {
            endpoint: field("endpoint"),
            region: field("region"),
            access_key_id: field("access_key_id"),
            secret: field("secret"),
            _child: Mutex::new(child),
            _dir: dir,
        }
    }

    fn bucket(&self, name: &str) -> Bucket {
        Bucket::new(
            self.endpoint.parse().unwrap(),
            UrlStyle::Path,
            name.to_owned(),
            self.region.clone(),
        )
        .unwrap()
    }

    fn credentials(&self) -> Credentials {
        Credentials::new(&self.access_key_id, &self.secret)
    }

    /// Creates bucket `name`.
    pub fn create_bucket(&self, name: &str) {
        let bucket = self.bucket(name);
        let url = bucket
            .create_bucket(&self.credentials())
            .sign(Duration::from_secs(60));
        let status = send("PUT", &url, b"");
        assert_eq!(status, 200, "create bucket {name}");
    }

    /// Stores `bytes` under `key` in bucket `name`.
    pub fn put(&self, name: &str, key: &str, bytes: &[u8]) {
        let bucket = self.bucket(name);
        let url = bucket
            .put_object(Some(&self.credentials()), key)
            .sign(Duration::from_secs(600));
        let status = send("PUT", &url, bytes);
        assert_eq!(status, 200, "put {key}");
    }
}

/// Sends one request to a presigned URL; returns the status.
fn send(method: &str, url: &url::Url, body: &[u8]) -> u16 {
    let host = url.host_str().unwrap();
    let port = url.port().unwrap_or(80);
    let mut s = TcpStream::connect((host, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let target = format!("{}?{}", url.path(), url.query().unwrap_or(""));
    let host_header = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {host_header}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {text}"));
    if status >= 300 {
        eprintln!("{method} {} answered: {text}", url.path());
    }
    status
}
