//! Starting the servers under test and reading their CPU time.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A server process (and its children) under test.
pub struct Server {
    /// What it is, for the report.
    pub name: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The request target of the object.
    pub target: String,
    child: Child,
}

impl Server {
    /// A server started by a scenario of its own.
    pub fn new(name: &'static str, addr: SocketAddr, target: String, child: Child) -> Server {
        Server {
            name,
            addr,
            target,
            child,
        }
    }

    /// User + system CPU seconds of the process and its children (nginx workers).
    pub fn cpu_seconds(&self) -> f64 {
        let tick = clock_ticks();
        let mut total = 0u64;
        for pid in process_tree(self.child.id()) {
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                // Fields after the command name, which is in parentheses.
                let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
                let f: Vec<&str> = after.split_whitespace().collect();
                // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
                let ut: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
                let st: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
                total += ut + st;
            }
        }
        total as f64 / tick
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM, so nginx's master takes its workers down with it.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn clock_ticks() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on.
    100.0
}

fn process_tree(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    let mut i = 0;
    while i < pids.len() {
        let parent = pids[i];
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
        i += 1;
    }
    pids
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The image id every benchmark serves.
pub const IMAGE_ID: &str = "6f1c3b2a-9e8d-4f7a-b6c5-d4e3f2a1b0c9";

/// Starts glance-stream (the binary next to this one) serving `object` from a
/// file store in `dir`, and returns it with a signed link to the object.
pub fn glance_stream(dir: &Path, object: &Path, threads: usize) -> Server {
    let images = dir.join("gs-images");
    std::fs::create_dir_all(&images).unwrap();
    let _ = std::fs::remove_file(images.join(IMAGE_ID));
    std::fs::hard_link(object, images.join(IMAGE_ID)).unwrap();
    glance_stream_with(
        dir,
        object,
        threads,
        "local",
        "[stores.local]\nkind = \"file\"\npath = \"gs-images\"\n",
    )
}

/// Starts glance-stream with the given store tables and a fresh cache, and
/// returns it with a signed link to `object` in store `store`.
pub fn glance_stream_with(
    dir: &Path,
    object: &Path,
    threads: usize,
    store: &str,
    stores: &str,
) -> Server {
    let exe = sibling("glance-stream");
    let keyring = dir.join("keyring.toml");
    std::fs::write(
        &keyring,
        "primary = \"b\"\n[keys]\nb = \"AUpHxry2pHEpkVJGCYLJ-TpiLWITLVzhgiWlW1sGUv8\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&keyring, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cache = dir.join("gs-cache");
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache).unwrap();
    let config = dir.join("stream.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:1\"\nkeyring = \"keyring.toml\"\n\
             threads = {threads}\n[cache]\ndir = \"gs-cache\"\nmax_bytes = 1000000000000\n{stores}"
        ),
    )
    .unwrap();
    let mut child = Command::new(exe)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    let size = std::fs::metadata(object).unwrap().len();
    let (md5, sha512) = crate::hot::hashes(object);
    let ring = glance_link::Keyring::load(&keyring).unwrap();
    let link = ring.sign(glance_link::LinkParams {
        image_id: glance_link::parse_image_id(IMAGE_ID).unwrap(),
        store: glance_link::StoreId::new(store).unwrap(),
        size,
        md5,
        sha512,
        expires: u64::MAX / 2,
        client_cidr: None,
    });
    Server {
        name: "glance-stream",
        addr,
        target: format!("{}?{}", link.path(), link.query()),
        child,
    }
}

/// An nginx origin: serves `object` as `/IMAGE_ID` at `rate` bytes per
/// second per connection (`limit_rate`), logging the body bytes of every
/// answer to `access.log` in its prefix.
pub fn origin(dir: &Path, object: &Path, rate: &str) -> (Server, PathBuf) {
    let root = dir.join("origin-root");
    std::fs::create_dir_all(&root).unwrap();
    let _ = std::fs::remove_file(root.join(IMAGE_ID));
    std::fs::hard_link(object, root.join(IMAGE_ID)).unwrap();
    let prefix = dir.join("origin");
    let log = prefix.join("access.log");
    let http = format!(
        "log_format bytes '$body_bytes_sent';\n  access_log {} bytes;\n  limit_rate {rate};\n",
        log.display()
    );
    let http = format!("tcp_nopush on;\n{http}");
    let mut server = nginx_with(&prefix, 2, &http, &format!("root {};", root.display()));
    server.name = "origin";
    (server, log)
}

/// nginx with `proxy_cache` in front of `origin`, one fetch per object at a
/// time (`proxy_cache_lock on`, waiting at most `lock_secs`).
pub fn nginx_proxy_cache(dir: &Path, origin: SocketAddr, lock_secs: u64, workers: usize) -> Server {
    let prefix = dir.join(format!("nginx-cache-{lock_secs}"));
    let _ = std::fs::remove_dir_all(&prefix);
    let http = format!(
        "access_log off;\n  proxy_cache_path {}/cache levels=1:2 keys_zone=img:10m max_size=100g inactive=1d use_temp_path=off;\n",
        prefix.display()
    );
    let location = format!(
        "location / {{ proxy_pass http://{origin}; proxy_cache img; proxy_cache_valid 200 1d;\n\
         proxy_cache_lock on; proxy_cache_lock_timeout {lock_secs}s; proxy_cache_lock_age {lock_secs}s;\n\
         proxy_read_timeout 600s; }}"
    );
    let http = format!("tcp_nopush on;\n{http}");
    let mut server = nginx_with(&prefix, workers, &http, &location);
    server.name = if lock_secs >= 60 {
        "nginx proxy_cache_lock 600 s"
    } else {
        "nginx proxy_cache_lock 5 s"
    };
    server
}

/// nginx in `prefix` with `workers` processes, extra `http` directives and
/// the body of its one `server` block.
fn nginx_with(prefix: &Path, workers: usize, http: &str, server: &str) -> Server {
    let port = free_port();
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process on;\nworker_processes {workers};\nerror_log stderr warn;\n\
             pid {p}/nginx.pid;\nevents {{ worker_connections 4096; }}\n\
             http {{\n  {http}  sendfile on;\n  keepalive_requests 100000;\n\
               client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fcgi;\n\
               uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
               server {{ listen 127.0.0.1:{port}; {server} }}\n}}\n",
            p = prefix.display(),
        ),
    )
    .unwrap();
    let child = Command::new(nginx_binary())
        .args(["-p"])
        .arg(prefix)
        .arg("-c")
        .arg(&conf)
        .spawn()
        .expect("nginx (Debian's nginx-light) must be installed");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Server {
        name: "nginx",
        addr,
        target: format!("/{IMAGE_ID}"),
        child,
    }
}

/// Starts nginx (Debian's) with `sendfile on` serving `object` from a static
/// root; `tcp_nopush on` (full packets, the usual setting for large files)
/// or off (its default, which small responses need: with it on, a range's
/// last packet waits for the client's delayed ACK, about 40 ms).
pub fn nginx(dir: &Path, object: &Path, workers: usize, nopush: bool) -> Server {
    let root = dir.join("nginx-root");
    std::fs::create_dir_all(&root).unwrap();
    let _ = std::fs::remove_file(root.join(IMAGE_ID));
    std::fs::hard_link(object, root.join(IMAGE_ID)).unwrap();
    nginx_with(
        &dir.join("nginx"),
        workers,
        if nopush {
            "access_log off;\ntcp_nopush on;\n"
        } else {
            "access_log off;\n"
        },
        &format!("root {};", root.display()),
    )
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nginx"))
}

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.with_file_name(name);
    assert!(
        path.exists(),
        "{} not built: cargo build --release -p glance-stream",
        path.display()
    );
    path
}
