//! glance-stream from outside its process: real sockets, port 0, both drivers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{DRIVERS, Node, pseudo_random, request, sha512};

const MIB: usize = 1 << 20;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn full_download_has_glance_headers_and_exact_bytes() {
    for driver in DRIVERS {
        let node = Node::start(driver, "", "");
        let img = node.add_image(pseudo_random(3 * MIB + 17, 1), 1);
        let r = node.get(&node.link(&img.params), &[]);
        assert_eq!(r.status, 200, "{driver}");
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(
            r.header("content-length"),
            Some(&*img.bytes.len().to_string())
        );
        assert_eq!(r.header("content-md5"), Some(&*hex(&img.params.md5)));
        assert_eq!(r.header("content-range"), None);
        assert_eq!(sha512(&r.body), img.params.sha512, "{driver}");
        assert!(
            node.metric("glance_stream_sent_bytes_total{path=\"zero_copy\"}")
                >= img.bytes.len() as u64
        );
        assert_eq!(
            node.metric("glance_stream_sent_bytes_total{path=\"copy\"}"),
            0
        );
        assert_eq!(
            node.metric(&format!("glance_stream_io_driver{{driver=\"{driver}\"}}")),
            1
        );
    }
}

#[test]
fn head_answers_the_same_headers_without_a_body() {
    for driver in DRIVERS {
        let node = Node::start(driver, "", "");
        let img = node.add_image(pseudo_random(1000, 2), 2);
        let link = node.link(&img.params);
        let get = node.get(&link, &[]);
        let head = request(node.addr, "HEAD", &link, &[]);
        assert_eq!(head.status, 200);
        assert_eq!(head.headers, get.headers, "{driver}");
        assert!(head.body.is_empty());
        let ranged = request(node.addr, "HEAD", &link, &[("Range", "bytes=10-19")]);
        assert_eq!(ranged.status, 206);
        assert_eq!(ranged.header("content-range"), Some("bytes 10-19/1000"));
    }
}

#[test]
fn ranges_match_glance_including_edges() {
    for driver in DRIVERS {
        let node = Node::start(driver, "", "");
        let img = node.add_image(pseudo_random(1040, 3), 3);
        let link = node.link(&img.params);
        let cases: [(&str, usize, usize); 7] = [
            ("bytes=0-99", 0, 99),
            ("bytes=0-0", 0, 0),             // first byte
            ("bytes=1039-1039", 1039, 1039), // last byte
            ("bytes=1039-", 1039, 1039),     // a- at the end
            ("bytes=1000-", 1000, 1039),
            ("bytes=-10", 1030, 1039),
            ("bytes=-5000", 0, 1039), // suffix longer than the file
        ];
        for (range, a, b) in cases {
            let r = node.get(&link, &[("Range", range)]);
            assert_eq!(r.status, 206, "{driver} {range}");
            assert_eq!(
                r.header("content-range"),
                Some(&*format!("bytes {a}-{b}/1040")),
                "{range}"
            );
            assert_eq!(r.header("content-length"), Some(&*(b - a + 1).to_string()));
            assert_eq!(r.header("content-md5"), Some(&*hex(&img.params.md5)));
            assert_eq!(r.header("content-type"), Some("application/octet-stream"));
            assert_eq!(r.body, &img.bytes[a..=b], "{driver} {range}");
        }
        let r = node.get(&link, &[("Range", "bytes=1040-")]);
        assert_eq!(r.status, 416);
        assert_eq!(r.header("content-range"), Some("bytes */1040"));
        let r = node.get(&link, &[("Range", "bytes=0-1,5-6")]);
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body).contains("multiple ranges"));
    }
}

#[test]
fn zero_size_image_answers_204() {
    for driver in DRIVERS {
        let node = Node::start(driver, "", "");
        let img = node.add_image(Vec::new(), 4);
        let r = node.get(&node.link(&img.params), &[]);
        assert_eq!(r.status, 204, "{driver}");
        assert_eq!(r.header("content-length"), None);
        assert!(r.body.is_empty());
    }
}

#[test]
fn every_bad_link_gets_the_same_403_and_its_reason_is_counted() {
    let node = Node::start("io_uring", "", "");
    let img = node.add_image(pseudo_random(4096, 5), 5);
    let good = node.link(&img.params);
    let ok = node.get(&good, &[]);
    assert_eq!(ok.status, 200);
    let mut bad: Vec<(String, &str)> = Vec::new();
    let tweak = |from: &str, to: &str| good.replacen(from, to, 1);
    // Tampered signature.
    let sig_at = good.find("&sig=").unwrap() + 5;
    let mut tampered = good.clone().into_bytes();
    tampered[sig_at] = if tampered[sig_at] == b'A' { b'B' } else { b'A' };
    bad.push((String::from_utf8(tampered).unwrap(), "signature"));
    bad.push((
        tweak(&format!("size={}", img.params.size), "size=4095"),
        "signature",
    ));
    bad.push((
        tweak(
            &format!("md5={}", hex(&img.params.md5)),
            &format!("md5={}", "0".repeat(32)),
        ),
        "signature",
    ));
    let sha = hex(&img.params.sha512);
    bad.push((
        tweak(
            &format!("sha512={sha}"),
            &format!("sha512={}", "f".repeat(128)),
        ),
        "signature",
    ));
    bad.push((
        tweak(
            &format!("exp={}", img.params.expires),
            &format!("exp={}", img.params.expires + 1),
        ),
        "signature",
    ));
    bad.push((tweak("store=local", "store=other"), "signature"));
    let other_id =
        img.params
            .image_id
            .to_string()
            .replacen(|c: char| c.is_ascii_hexdigit(), "0", 1);
    bad.push((
        tweak(&img.params.image_id.to_string(), &other_id),
        "signature",
    ));
    // Expired, unknown key, CIDR mismatch, malformed.
    let mut p = img.params.clone();
    p.expires = common::now() - 1;
    bad.push((node.link(&p), "expired"));
    let stranger = glance_link::Keyring::from_toml(&format!(
        "primary = \"k9\"\n[keys]\nk9 = \"{}\"\n",
        common::secret_b64(9)
    ))
    .unwrap()
    .sign(img.params.clone());
    bad.push((
        format!("{}?{}", stranger.path(), stranger.query()),
        "unknown_key",
    ));
    let mut p = img.params.clone();
    p.client_cidr = Some("10.9.0.0/16".parse().unwrap());
    bad.push((node.link(&p), "client_address"));
    bad.push((good.split('?').next().unwrap().to_owned(), "malformed"));
    for (target, reason) in &bad {
        let before = node.metric(&format!(
            "glance_stream_link_rejections_total{{reason=\"{reason}\"}}"
        ));
        let r = node.get(target, &[]);
        assert_eq!(r.status, 403, "{target}");
        assert_eq!(
            r.body, b"403 Forbidden: this link is not valid.\n",
            "{target}"
        );
        assert_eq!(
            r.headers,
            [
                (
                    "Content-Type".to_owned(),
                    "text/plain; charset=utf-8".to_owned()
                ),
                ("Content-Length".to_owned(), "39".to_owned()),
                ("Connection".to_owned(), "close".to_owned()),
            ],
            "the same headers for every refusal"
        );
        let after = node.metric(&format!(
            "glance_stream_link_rejections_total{{reason=\"{reason}\"}}"
        ));
        assert_eq!(after, before + 1, "{reason}: {target}");
    }
    // The same link with the CIDR of the client (loopback) is served.
    let mut p = img.params.clone();
    p.client_cidr = Some("127.0.0.0/8".parse().unwrap());
    assert_eq!(node.get(&node.link(&p), &[]).status, 200);
}

#[test]
fn traversal_and_non_uuid_ids_are_refused_before_any_file_is_touched() {
    let node = Node::start("legacy", "", "");
    let img = node.add_image(pseudo_random(100, 6), 6);
    // A file that a traversal would reach, next to the store.
    std::fs::write(node.dir.path().join("secret"), b"do not serve").unwrap();
    let query = node.link(&img.params).split_once('?').unwrap().1.to_owned();
    for path in [
        "/v1/images/../secret".to_owned(),
        "/v1/images/..%2Fsecret".to_owned(),
        "/v1/images/%2e%2e/secret".to_owned(),
        format!("/v1/images/{}/../../secret", img.params.image_id),
        format!(
            "/v1/images/{}",
            img.params.image_id.to_string().to_uppercase()
        ),
        "/v1/images/secret".to_owned(),
    ] {
        let r = node.get(&format!("{path}?{query}"), &[]);
        assert_eq!(r.status, 403, "{path}");
        assert!(!String::from_utf8_lossy(&r.body).contains("do not serve"));
    }
    assert!(node.metric("glance_stream_link_rejections_total{reason=\"malformed\"}") >= 6);
}

#[test]
fn other_statuses_are_clean() {
    for driver in DRIVERS {
        let node = Node::start(driver, "", "");
        let img = node.add_image(pseudo_random(100, 7), 7);
        let link = node.link(&img.params);
        // Object missing from the store.
        let mut gone = img.params.clone();
        gone.image_id = uuid::Uuid::from_u128(7);
        assert_eq!(node.get(&node.link(&gone), &[]).status, 404);
        // Object whose size differs from the link's.
        let mut wrong = img.params.clone();
        wrong.size = 99;
        assert_eq!(node.get(&node.link(&wrong), &[]).status, 502);
        // Methods, bodies, unknown paths, health.
        let r = request(node.addr, "POST", &link, &[]);
        assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
        assert_eq!(request(node.addr, "BREW", &link, &[]).status, 405);
        assert_eq!(
            request(node.addr, "GET", &link, &[("Content-Length", "5")]).status,
            413
        );
        assert_eq!(
            request(node.addr, "GET", &link, &[("Transfer-Encoding", "chunked")]).status,
            400
        );
        assert_eq!(node.get("/nowhere", &[]).status, 404);
        let h = node.get("/healthz", &[]);
        assert_eq!((h.status, h.body.as_slice()), (200, &b"ok\n"[..]));
        // Header limits: 431.
        let big = "a".repeat(9000);
        assert_eq!(node.get(&link, &[("X-Big", &big)]).status, 431);
        let many: Vec<(String, String)> =
            (0..100).map(|i| (format!("X-{i}"), "v".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(node.get(&link, &many).status, 431);
        let metrics = node.get("/metrics", &[]);
        let text = String::from_utf8(metrics.body).unwrap();
        assert!(
            text.contains("glance_stream_requests_total{status=\"431\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("glance_stream_requests_total{status=\"502\"} 1"),
            "{text}"
        );
    }
}

#[test]
fn keystone_tokens_are_ignored_and_never_logged() {
    let node = Node::start("io_uring", "", "");
    let img = node.add_image(pseudo_random(100, 8), 8);
    let token = "gAAAAA-secret-keystone-token-7f3a";
    let r = node.get(
        &node.link(&img.params),
        &[("X-Auth-Token", token), ("X-Service-Token", token)],
    );
    assert_eq!(r.status, 200);
    let bad = node.get("/v1/images/x?v=1", &[("X-Auth-Token", token)]);
    assert_eq!(bad.status, 403);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!node.logs().contains(token), "token logged");
}

#[test]
fn parallel_downloads_are_byte_identical() {
    for driver in DRIVERS {
        let node = Node::start(driver, "", "");
        let img = node.add_image(pseudo_random(16 * MIB, 10), 10);
        let link = node.link(&img.params);
        let hashes: Vec<[u8; 64]> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| sha512(&node.get(&link, &[]).body)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for h in hashes {
            assert_eq!(h, img.params.sha512, "{driver}");
        }
    }
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    for driver in DRIVERS {
        let node = Node::start(driver, "", "");
        let img = node.add_image(pseudo_random(200_000, 11), 11);
        let link = node.link(&img.params);
        let mut s = TcpStream::connect(node.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // Three requests, the last two pipelined in one write.
        let req = |range: &str| format!("GET {link} HTTP/1.1\r\nHost: t\r\nRange: {range}\r\n\r\n");
        s.write_all(req("bytes=0-9").as_bytes()).unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 65536];
        while !raw.ends_with(&img.bytes[..10]) || raw.len() < 10 {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed early");
            raw.extend_from_slice(&buf[..n]);
        }
        s.write_all(format!("{}{}", req("bytes=10-19"), req("bytes=-100000")).as_bytes())
            .unwrap();
        s.write_all(
            format!("GET {link} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        s.read_to_end(&mut raw).unwrap();
        let (r1, rest) = common::parse_response(&raw, false);
        let (r2, rest) = common::parse_response(rest, false);
        let (r3, rest) = common::parse_response(rest, false);
        let (r4, rest) = common::parse_response(rest, false);
        assert!(rest.is_empty());
        assert_eq!(r1.body, &img.bytes[..10], "{driver}");
        assert_eq!(r2.body, &img.bytes[10..20]);
        assert_eq!(r3.body, &img.bytes[100_000..]);
        assert_eq!(sha512(&r4.body), img.params.sha512);
        assert_eq!(r4.header("connection"), Some("close"));
    }
}

#[test]
fn a_client_that_stops_reading_does_not_block_others_on_its_thread() {
    for driver in DRIVERS {
        // One worker thread: the stalled and the fast client share it.
        let node = Node::start(driver, "threads = 1", "");
        let img = node.add_image(pseudo_random(32 * MIB, 12), 12);
        let link = node.link(&img.params);
        let mut stalled = TcpStream::connect(node.addr).unwrap();
        stalled
            .write_all(format!("GET {link} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        // It reads a little, then nothing: its socket buffers fill up.
        let mut first = [0u8; 1024];
        stalled.read_exact(&mut first).unwrap();
        for _ in 0..3 {
            let r = node.get(&link, &[]);
            assert_eq!(sha512(&r.body), img.params.sha512, "{driver}");
        }
        drop(stalled);
    }
}

#[test]
fn a_slow_request_head_is_dropped_while_others_flow() {
    for driver in DRIVERS {
        let node = Node::start(driver, "threads = 1", "[http]\nheader_timeout_secs = 1\n");
        let img = node.add_image(pseudo_random(1000, 13), 13);
        let link = node.link(&img.params);
        let mut slow = TcpStream::connect(node.addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
            .unwrap();
        assert_eq!(node.get(&link, &[]).status, 200);
        let started = Instant::now();
        let mut raw = Vec::new();
        slow.read_to_end(&mut raw).unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            raw.starts_with(b"HTTP/1.1 408 "),
            "{driver}: {}",
            String::from_utf8_lossy(&raw)
        );
    }
}

#[test]
fn connections_over_the_per_thread_cap_get_503() {
    let node = Node::start(
        "io_uring",
        "threads = 1",
        "[http]\nmax_connections_per_thread = 2\n",
    );
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(node.addr).unwrap())
        .collect();
    // Let the worker count them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut r = node.get("/healthz", &[]);
    while r.status != 503 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        r = node.get("/healthz", &[]);
    }
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    drop(idle);
}

#[test]
fn sighup_reloads_the_keyring_without_dropping_connections() {
    let node = Node::start("io_uring", "", "");
    let img = node.add_image(pseudo_random(8 * MIB, 14), 14);
    let old_link = node.link(&img.params);
    // A download in flight across the reload.
    let mut inflight = TcpStream::connect(node.addr).unwrap();
    inflight
        .write_all(
            format!("GET {old_link} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut head = [0u8; 64];
    inflight.read_exact(&mut head).unwrap();
    // Rotation: k2 joins and becomes primary.
    let new_ring = common::write_keyring(node.dir.path(), "k2", &[("k1", 1), ("k2", 2)]);
    let new_link = {
        let ring = glance_link::Keyring::load(&new_ring).unwrap();
        let l = ring.sign(img.params.clone());
        format!("{}?{}", l.path(), l.query())
    };
    assert_eq!(node.get(&new_link, &[]).status, 403, "not reloaded yet");
    node.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.get(&new_link, &[]).status != 200 {
        assert!(Instant::now() < deadline, "reload not seen");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(node.get(&old_link, &[]).status, 200, "old key still held");
    let mut rest = Vec::new();
    inflight.read_to_end(&mut rest).unwrap();
    let mut raw = head.to_vec();
    raw.extend_from_slice(&rest);
    let (r, _) = common::parse_response(&raw, false);
    assert_eq!(sha512(&r.body), img.params.sha512);
    // A broken keyring is refused and the current one stays.
    std::fs::write(
        node.dir.path().join("keyring.toml"),
        "primary = \"zz\"\n[keys]\n",
    )
    .unwrap();
    node.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.logs().contains("keyring reload failed") {
        assert!(
            Instant::now() < deadline,
            "the failed reload was not logged"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(node.get(&new_link, &[]).status, 200);
}

#[test]
fn sigterm_finishes_the_download_in_flight_then_exits() {
    for driver in DRIVERS {
        let mut node = Node::start(driver, "", "");
        let img = node.add_image(pseudo_random(24 * MIB, 15), 15);
        let link = node.link(&img.params);
        let mut inflight = TcpStream::connect(node.addr).unwrap();
        inflight
            .write_all(format!("GET {link} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let mut head = [0u8; 64];
        inflight.read_exact(&mut head).unwrap();
        node.signal("TERM");
        let mut rest = Vec::new();
        inflight.read_to_end(&mut rest).unwrap();
        let mut raw = head.to_vec();
        raw.extend_from_slice(&rest);
        let (r, _) = common::parse_response(&raw, false);
        assert_eq!(sha512(&r.body), img.params.sha512, "{driver}");
        let status = node.child.wait().unwrap();
        assert!(status.success(), "{driver}: {status:?}");
        assert!(TcpStream::connect(node.addr).is_err());
    }
}

#[test]
fn head_error_answers_have_no_body_and_the_connection_carries_on() {
    for driver in DRIVERS {
        let node = Node::start(driver, "", "");
        let mut s = TcpStream::connect(node.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"HEAD /nope HTTP/1.1\r\nHost: t\r\n\r\nHEAD /v1/images/x?v=1 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let (r1, rest) = common::parse_response(&raw, true);
        let (r2, rest) = common::parse_response(rest, true);
        let (r3, rest) = common::parse_response(rest, false);
        assert_eq!(
            (r1.status, r2.status, r3.status),
            (404, 403, 200),
            "{driver}"
        );
        assert_eq!(r3.body, b"ok\n");
        assert!(
            rest.is_empty(),
            "{driver}: stray bytes {:?}",
            String::from_utf8_lossy(rest)
        );
    }
}

#[test]
fn a_connection_that_sends_nothing_is_dropped_after_the_header_timeout() {
    for driver in DRIVERS {
        let node = Node::start(driver, "", "[http]\nheader_timeout_secs = 1\n");
        let mut silent = TcpStream::connect(node.addr).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut raw = Vec::new();
        silent.read_to_end(&mut raw).unwrap();
        assert!(
            raw.starts_with(b"HTTP/1.1 408 "),
            "{driver}: {}",
            String::from_utf8_lossy(&raw)
        );
    }
}
