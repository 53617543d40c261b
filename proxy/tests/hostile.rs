//! Hostile clients against a real glance-stream: a thousand idle
//! connections beside real downloads, a flood of bad links, oversized
//! heads, request-smuggling shapes; and secrets that must go nowhere: no
//! client token or link reaches a backend or a log, and a keyring others
//! can read is refused at start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use common::fault_origin::{Fault, FaultOrigin};
use common::nginx::{Nginx, on_origin};
use common::{Node, pseudo_random};

const MIB: usize = 1 << 20;
/// The one answer to a bad link on a kept-alive connection.
const FORBIDDEN: &[u8] = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 39\r\n\r\n403 Forbidden: this link is not valid.\n";

/// Sends `request` on a new connection and reads until the server closes
/// it (at most 10 s): every byte it answered.
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    raw
}

/// How many responses `raw` holds (status lines at line starts).
fn responses(raw: &[u8]) -> usize {
    let text = String::from_utf8_lossy(raw);
    text.match_indices("HTTP/1.1 ")
        .filter(|(i, _)| *i == 0 || text[..*i].ends_with('\n'))
        .count()
}

/// Bytes read and written on storage by process `pid` (`/proc/PID/io`).
fn storage_io(pid: u32) -> (u64, u64) {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap()
    };
    (field("read_bytes:"), field("write_bytes:"))
}

#[test]
fn a_thousand_idle_connections_hold_no_download_back_and_go_at_the_header_timeout() {
    let node = Node::start(
        "io_uring",
        "threads = 2",
        "[http]\nheader_timeout_secs = 3\n",
    );
    let img = node.add_image(pseudo_random(32 * MIB + 3, 21), 21);
    let link = node.link(&img.params);
    let opened = Instant::now();
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let mut s = TcpStream::connect(node.addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    let active = || {
        (0..2)
            .map(|core| {
                node.metric(&format!(
                    "glance_stream_active_connections{{core=\"{core}\"}}"
                ))
            })
            .sum::<u64>()
    };
    // Every connection accepted (connect returns once the kernel queues it),
    // counted well before any can time out (the head timeout is 3 s).
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut held = active();
    while held < 1000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        held = active();
    }
    let results: Vec<(u16, u64, [u8; 64])> = std::thread::scope(|s| {
        let downloads: Vec<_> = (0..16)
            .map(|_| s.spawn(|| common::download_sha512(node.addr, &link)))
            .collect();
        downloads.into_iter().map(|d| d.join().unwrap()).collect()
    });
    for (status, len, hash) in results {
        assert_eq!((status, len), (200, img.bytes.len() as u64));
        assert!(hash == img.params.sha512, "a download got other bytes");
    }
    assert!(
        held >= 1000,
        "the idle connections were not all held: {held}"
    );
    // Each idle connection hears 408 and is closed once its head is late.
    let mut timed_out = 0;
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        if raw.starts_with(b"HTTP/1.1 408 ") {
            timed_out += 1;
        }
    }
    assert_eq!(timed_out, 1000, "idle connections not dropped with a 408");
    eprintln!(
        "1,000 idle connections dropped with a 408 after {:.1} s",
        opened.elapsed().as_secs_f64()
    );
    assert!(opened.elapsed() < Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(10);
    while active() > 1 {
        assert!(
            Instant::now() < deadline,
            "closed connections still counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Link targets that must all be refused, `n` of them, of every kind.
fn bad_links(node: &Node, img: &common::Image, n: usize) -> Vec<String> {
    let good = node.link(&img.params);
    let sig_at = good.find("&sig=").unwrap() + 5;
    let stranger = glance_link::Keyring::from_toml(&format!(
        "primary = \"k9\"\n[keys]\nk9 = \"{}\"\n",
        common::secret_b64(9)
    ))
    .unwrap();
    let mut seed = 0x5eed_u64;
    (0..n)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut p = img.params.clone();
            match i % 6 {
                // A random signature character flipped.
                0 => {
                    let mut t = good.clone().into_bytes();
                    let at = sig_at + (seed as usize) % 43;
                    t[at] = if t[at] == b'A' { b'B' } else { b'A' };
                    String::from_utf8(t).unwrap()
                }
                1 => {
                    p.expires = common::now() - 1 - seed % 1000;
                    node.link(&p)
                }
                2 => {
                    let l = stranger.sign(p);
                    format!("{}?{}", l.path(), l.query())
                }
                3 => {
                    p.client_cidr = Some(format!("10.{}.0.0/16", seed % 256).parse().unwrap());
                    node.link(&p)
                }
                4 => format!("{}?v=1&x={seed}", good.split('?').next().unwrap()),
                _ => good.replacen("size=", &format!("size={}", seed % 9 + 1), 1),
            }
        })
        .collect()
}

#[test]
fn ten_thousand_bad_links_cost_no_disk_io_and_all_get_the_same_403() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path());
    let node = Node::start("io_uring", "threads = 2", &nginx.web_store());
    let img = on_origin(&nginx, pseudo_random(9 * MIB, 22), 22);
    let links = bad_links(&node, &img, 10_000);
    let cache = node.dir.path().join("cache");
    let listing = |d: &std::path::Path| -> Vec<(String, u64, std::time::SystemTime)> {
        let mut all: Vec<_> = walk(d);
        all.sort();
        all
    };
    let before_files = listing(&cache);
    let before_io = storage_io(node.child.id());
    let started = Instant::now();
    let refused: usize = std::thread::scope(|s| {
        let workers: Vec<_> = links
            .chunks(2500)
            .map(|part| {
                s.spawn(|| {
                    // One kept-alive connection per flooder, one answer per link.
                    let mut conn = TcpStream::connect(node.addr).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let mut answer = vec![0u8; FORBIDDEN.len()];
                    part.iter()
                        .filter(|target| {
                            let req = format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n");
                            conn.write_all(req.as_bytes()).unwrap();
                            conn.read_exact(&mut answer).unwrap();
                            answer == FORBIDDEN
                        })
                        .count()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(
        refused, 10_000,
        "every bad link gets the same 403, byte for byte"
    );
    eprintln!(
        "10,000 bad links refused in {:.2} s over 4 connections",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        storage_io(node.child.id()),
        before_io,
        "bad links read or wrote storage"
    );
    assert_eq!(listing(&cache), before_files, "bad links touched the cache");
    assert_eq!(nginx.requests(), 0, "bad links reached the backend");
    assert_eq!(
        node.metric("glance_stream_cache_lookups_total{outcome=\"miss\"}"),
        0
    );
    // The good link still works.
    let (status, _, hash) = common::download_sha512(node.addr, &node.link(&img.params));
    assert_eq!(status, 200);
    assert!(hash == img.params.sha512);
}

/// Every file under `dir` with its length and modification time.
fn walk(dir: &std::path::Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push((
                entry.path().display().to_string(),
                meta.len(),
                meta.modified().unwrap(),
            ));
        }
    }
    out
}

#[test]
fn oversized_request_heads_get_431_and_the_connection_closes() {
    let node = Node::start("io_uring", "", "");
    let long = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Long: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{many}\r\n");
    let endless = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: {}",
        "b".repeat(9000)
    );
    for (what, req) in [
        ("a long line", long),
        ("100 fields", many),
        ("no end", endless),
    ] {
        let raw = exchange(node.addr, req.as_bytes());
        assert!(
            raw.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{what}: {}",
            String::from_utf8_lossy(&raw)
        );
        assert_eq!(responses(&raw), 1, "{what}");
    }
}

#[test]
fn request_smuggling_shapes_are_refused_and_nothing_hidden_is_answered() {
    // The admin API is on: it is the one place this server reads a body.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "admin-token-0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let node = Node::start(
        "io_uring",
        "",
        &format!("[admin]\ntoken_file = \"{}\"\n", token_file.display()),
    );
    let hidden = "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
    let shapes = [
        (
            "Content-Length and Transfer-Encoding",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\
                 Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}",
                5 + hidden.len()
            ),
        ),
        (
            "Transfer-Encoding and Content-Length",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
                 Content-Length: 0\r\n\r\n0\r\n\r\n{hidden}"
            ),
        ),
        (
            "obs-fold",
            format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n{hidden}"),
        ),
        (
            "obs-fold hiding Transfer-Encoding",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\r\n\tTransfer-Encoding: chunked\r\n\r\n{hidden}"
            ),
        ),
        (
            "a bad chunk size",
            format!(
                "PUT /admin/keyring HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{hidden}"
            ),
        ),
        (
            "a chunk size past 64 bits",
            format!(
                "PUT /admin/keyring HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
                 10000000000000000000\r\n{hidden}"
            ),
        ),
        (
            "two lengths",
            format!(
                "PUT /admin/keyring HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\
                 Content-Length: {}\r\n\r\n{hidden}",
                hidden.len()
            ),
        ),
        (
            "a signed length",
            format!(
                "PUT /admin/keyring HTTP/1.1\r\nHost: t\r\nContent-Length: +{}\r\n\r\n{hidden}",
                hidden.len()
            ),
        ),
        (
            "a space before the colon",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n{hidden}"
            ),
        ),
        (
            "a bare CR in a value",
            format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n{hidden}"),
        ),
    ];
    for (what, req) in shapes {
        let raw = exchange(node.addr, req.as_bytes());
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.starts_with("HTTP/1.1 400 ") || text.starts_with("HTTP/1.1 413 "),
            "{what}: {text}"
        );
        assert_eq!(
            responses(&raw),
            1,
            "{what}: the hidden request was answered: {text}"
        );
        assert!(!text.contains("glance_stream_"), "{what}: {text}");
    }
}

#[test]
fn no_client_token_link_or_key_reaches_the_backend_or_the_log() {
    let bytes = pseudo_random(12 * MIB, 23);
    let img = common::image_in("web", bytes.clone(), 23);
    let origin = FaultOrigin::start(bytes, Fault::None);
    let node = Node::start(
        "io_uring",
        "",
        &format!(
            "[stores.web]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}/images/\"\n",
            origin.port
        ),
    );
    let link = node.link(&img.params);
    let sig = link
        .split("sig=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let user_token = "gAAAAABuser-token-never-forwarded-0123456789";
    let service_token = "gAAAAABservice-token-never-forwarded-98765";
    let r = node.get(
        &link,
        &[
            ("X-Auth-Token", user_token),
            ("X-Service-Token", service_token),
            ("Authorization", &format!("Bearer {user_token}")),
            ("Cookie", &format!("session={user_token}")),
        ],
    );
    assert_eq!(r.status, 200);
    assert!(r.body == img.bytes);
    node.settle("web");
    let heads = origin.heads();
    assert!(!heads.is_empty(), "the origin saw no request");
    let secret = common::secret_b64(1);
    for head in &heads {
        assert!(
            head.starts_with(&format!("GET /images/{} HTTP/1.1\r\n", img.params.image_id)),
            "{head}"
        );
        for leak in [user_token, service_token, sig, secret.as_str()] {
            assert!(!head.contains(leak), "the backend saw {leak:?}: {head}");
        }
        let names: Vec<String> = head
            .lines()
            .skip(1)
            .filter_map(|l| Some(l.split_once(':')?.0.to_ascii_lowercase()))
            .collect();
        for name in &names {
            assert!(
                ["host", "range", "connection", "user-agent", "accept"].contains(&name.as_str()),
                "header {name:?} sent to the backend: {head}"
            );
        }
    }
    let logs = node.logs();
    assert!(logs.contains("DEBUG"), "debug logging is on");
    for leak in [user_token, service_token, sig, secret.as_str()] {
        assert!(!logs.contains(leak), "the log holds {leak:?}");
    }
}

#[test]
fn a_keyring_others_can_read_stops_the_start() {
    for mode in [0o644, 0o640, 0o604] {
        let dir = tempfile::tempdir().unwrap();
        let keyring = common::write_keyring(dir.path(), "k1", &[("k1", 1)]);
        std::fs::set_permissions(&keyring, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::create_dir(dir.path().join("images")).unwrap();
        std::fs::write(
            dir.path().join("stream.toml"),
            "listen = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:1\"\nkeyring = \"keyring.toml\"\n\
             [cache]\ndir = \"cache\"\nmax_bytes = 1000000\n[stores.local]\nkind = \"file\"\npath = \"images\"\n",
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_glance-stream"))
            .arg("--config")
            .arg(dir.path().join("stream.toml"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{mode:o}: started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&keyring.display().to_string()),
            "{mode:o}: {err}"
        );
        assert!(err.contains("chmod 600"), "{mode:o}: {err}");
        assert!(out.stdout.is_empty(), "{mode:o}: a ready line");
    }
}
