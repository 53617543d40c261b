//! Debian's nginx as a real HTTP origin on a free port, serving a directory,
//! with an access log that records the bytes it sent.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// A running nginx.
pub struct Nginx {
    pub port: u16,
    pub root: PathBuf,
    log: PathBuf,
    child: Child,
}

/// An nginx TLS front, its CA and its directory.
pub struct TlsFront {
    pub nginx: Nginx,
    pub pki: super::pki::Pki,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Serves `dir/root` on a free loopback port.
    pub fn start(dir: &Path) -> Nginx {
        Nginx::start_with(dir, super::free_port(), "")
    }

    /// Serves `dir/root` on `port`, with extra `http` directives.
    pub fn start_with(dir: &Path, port: u16, extra: &str) -> Nginx {
        Nginx::start_server(dir, port, extra, "")
    }

    /// Serves HTTPS on a free loopback port with certificate chain `cert`
    /// and key `key`: `dir/root`, or what `location` says (a `location`
    /// block, such as a reverse proxy).
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path, location: &str) -> Nginx {
        let server = format!(
            "ssl_certificate {}; ssl_certificate_key {}; {location}",
            cert.display(),
            key.display()
        );
        Nginx::start_server(dir, super::free_port(), "", &server)
    }

    /// A TLS front for `upstream` (`host:port`, plain HTTP) with a
    /// certificate from a CA of its own, as a cloud's endpoint is: requests
    /// and bodies pass through unbuffered, the Host header unchanged (SigV4
    /// signs it). The CA's file is `front.pki.ca_file`.
    pub fn tls_front(upstream: &str) -> TlsFront {
        let pki = super::pki::Pki::new();
        pki.issue(glance_api::tls::Validity::Days(30));
        let (cert, key) = pki.files();
        let dir = tempfile::tempdir().unwrap();
        let nginx = Nginx::start_tls(
            dir.path(),
            &cert,
            &key,
            &format!(
                "location / {{ proxy_pass http://{upstream}; proxy_set_header Host $http_host; \
                 proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; \
                 client_max_body_size 0; proxy_request_buffering off; }}"
            ),
        );
        TlsFront {
            nginx,
            pki,
            _dir: dir,
        }
    }

    /// Serves on `port` with extra `http` directives; a non-empty `server`
    /// (its extra directives) makes it an HTTPS server.
    fn start_server(dir: &Path, port: u16, extra: &str, server: &str) -> Nginx {
        let ssl = if server.is_empty() { "" } else { " ssl" };
        let root = dir.join("root");
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(prefix.join("logs")).unwrap();
        // A restart on the same directory starts a new log.
        let _ = std::fs::remove_file(prefix.join("access.log"));
        let log = prefix.join("access.log");
        let conf = prefix.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log stderr warn;\npid {p}/nginx.pid;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n  log_format bytes '$status $body_bytes_sent $http_range';\n  access_log {l} bytes;\n\
                   sendfile on;\n  keepalive_requests 100000;\n  keepalive_timeout 1s;\n\
                   client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fcgi;\n\
                   uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
                   {extra}\n  server {{ listen 127.0.0.1:{port}{ssl}; root {r}; {server} }}\n}}\n",
                p = prefix.display(),
                l = log.display(),
                r = root.display()
            ),
        )
        .unwrap();
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx must be installed (scripts/test-all.sh installs nginx-light)");
        let child = Command::new(binary)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Nginx {
            port,
            root,
            log,
            child,
        }
    }

    /// A node's config table for store `web`, an HTTP store on this nginx.
    pub fn web_store(&self) -> String {
        format!(
            "[stores.web]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}/\"\n",
            self.port
        )
    }

    /// Body bytes nginx has sent so far, from its access log.
    pub fn bytes_sent(&self) -> u64 {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    }

    /// Requests logged so far.
    pub fn requests(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .count()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new image on the origin (in the node's `web` store).
pub fn on_origin(nginx: &Nginx, bytes: Vec<u8>, seed: u64) -> super::Image {
    let img = super::image_in("web", bytes, seed);
    std::fs::write(nginx.root.join(img.params.image_id.to_string()), &img.bytes).unwrap();
    img
}
