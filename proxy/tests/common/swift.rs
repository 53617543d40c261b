//! OpenStack Swift (Debian's packages) on loopback, run by `scripts/swift.sh
//! serve` once per test binary: its S3 API (s3api checks every SigV4
//! signature) and its own API (tempauth, tempurl, SLO). The script stops
//! Swift when this process exits (its stdin, held here, closes).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action as _, UrlStyle};

/// A running Swift and how to reach its S3 API and its own.
pub struct Swift {
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret: String,
    /// tempauth's URL, user (`account:user`) and key.
    pub auth_url: String,
    pub user: String,
    pub key: String,
    /// `host:port` of the memcached holding the tokens.
    pub memcached: String,
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
            auth_url: field("auth_url"),
            user: field("user"),
            key: field("key"),
            memcached: field("memcached"),
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

impl Swift {
    /// A token and the storage URL, from tempauth.
    pub fn login(&self) -> (String, String) {
        let resp = agent()
            .get(&self.auth_url)
            .header("X-Auth-User", &self.user)
            .header("X-Auth-Key", &self.key)
            .call()
            .unwrap();
        assert_eq!(resp.status(), 200, "tempauth login");
        let h = |n: &str| resp.headers()[n].to_str().unwrap().to_owned();
        (h("x-auth-token"), h("x-storage-url"))
    }

    /// Sends `method` to `path` under the storage URL (`/container/...`)
    /// with a fresh token; returns the status, headers and body.
    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> SwiftAnswer {
        let (token, storage) = self.login();
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{storage}{path}"))
            .header("X-Auth-Token", token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        answer(agent().run(req.body(()).unwrap()).unwrap())
    }

    /// Revokes every token: tempauth keeps them in memcached only.
    pub fn revoke_tokens(&self) {
        let mut s = TcpStream::connect(&self.memcached).unwrap();
        s.write_all(b"flush_all\r\n").unwrap();
        let mut ok = [0u8; 4];
        s.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"OK\r\n");
    }
}

/// What Swift answered.
pub struct SwiftAnswer {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

/// A client that reports every status rather than failing on errors.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

fn answer(mut resp: ureq::http::Response<ureq::Body>) -> SwiftAnswer {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap();
    SwiftAnswer {
        status,
        headers,
        body,
    }
}

/// GETs `url` (a TempURL) with no credentials.
pub fn get_url(url: &str) -> SwiftAnswer {
    answer(agent().get(url).call().unwrap())
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
