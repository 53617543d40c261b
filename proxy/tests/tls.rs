//! glance-stream over HTTPS: certificates from a CA the test makes, real
//! TLS clients (rustls, curl), downloads checked byte for byte, and the
//! ways a TLS port must refuse: plaintext, junk, expired certificates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::https::{Client, add, connect, exchange, https, metric};
use common::pki::Pki;
use common::{DRIVERS, Node, pseudo_random, sha512};
use glance_api::tls::Validity;

const CACHED_STORE: &str = "[stores.cached]\nkind = \"file\"\npath = \"images\"\ncache = true\n";

#[test]
fn https_downloads_are_whole_and_right_from_a_store_and_from_the_cache() {
    for driver in DRIVERS {
        let pki = Pki::new();
        pki.issue(Validity::Days(30));
        // The user-space path, whatever the kernel offers (the kernel's
        // is tested in tests/kernel_tls.rs).
        let tables = format!("{CACHED_STORE}{}kernel_offload = false\n", pki.table());
        let node = Node::start(driver, "", &tables);
        let client = pki.client();
        // 20 MiB + 1: three 8 MiB chunks, the last one short.
        let direct = add(&node, "local", pseudo_random((20 << 20) + 1, 1), 1);
        let cached = add(&node, "cached", pseudo_random((20 << 20) + 1, 2), 2);
        let r = https(node.addr, &client, &node.link(&direct.params));
        assert_eq!(r.status, 200, "{driver}");
        assert_eq!(
            sha512(&r.body),
            sha512(&direct.bytes),
            "{driver}: store file"
        );
        // A miss (filled chunk by chunk, each sent as it lands), then a hit.
        for round in ["miss", "hit"] {
            let r = https(node.addr, &client, &node.link(&cached.params));
            assert_eq!(r.status, 200, "{driver} {round}");
            assert_eq!(
                r.header("Content-Length"),
                Some(cached.bytes.len().to_string().as_str())
            );
            assert_eq!(sha512(&r.body), sha512(&cached.bytes), "{driver} {round}");
        }
        // A range across a chunk boundary, from the cache, on a kept-alive
        // connection with a HEAD before it.
        let mut conn = connect(node.addr, &client).unwrap();
        let link = node.link(&cached.params);
        let head = exchange(&mut conn, "HEAD", &link, "");
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        let (a, b) = ((8 << 20) - 5, (8 << 20) + 4);
        let r = exchange(
            &mut conn,
            "GET",
            &link,
            &format!("Range: bytes={a}-{b}\r\n"),
        );
        assert_eq!(r.status, 206, "{driver}");
        assert_eq!(r.body, &cached.bytes[a..=b]);
        // Cached bytes went out encrypted from the mapped cache file, the
        // store's file through a read buffer; nothing by sendfile.
        let sent = |path: &str| {
            metric(
                node.addr,
                &client,
                &format!("glance_stream_sent_bytes_total{{path=\"{path}\"}}"),
            )
        };
        assert_eq!(sent("zero_copy"), 0, "{driver}");
        assert!(
            sent("mapped") >= 2 * cached.bytes.len() as u64 + 10,
            "{driver}"
        );
        assert!(sent("copy") >= direct.bytes.len() as u64, "{driver}");
        let mode = metric(
            node.addr,
            &client,
            "glance_stream_tls_mode{mode=\"userspace\"}",
        );
        assert_eq!(mode, 1);
        // The start probed for kernel TLS and said what it found, in the
        // log and the metrics alike.
        let logs = node.logs();
        match metric(node.addr, &client, "glance_stream_kernel_tls_available") {
            0 => assert!(logs.contains("the kernel offers no TLS offload"), "{logs}"),
            1 => assert!(
                logs.contains("kernel TLS is offered but turned off"),
                "{logs}"
            ),
            n => panic!("kernel_tls_available {n}"),
        }
    }
}

#[test]
fn alpn_offers_http_1_1_and_a_client_wanting_only_h2_is_refused() {
    let pki = Pki::new();
    pki.issue(Validity::Days(30));
    let node = Node::start("io_uring", "", &pki.table());
    let mut config = (*pki.client()).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let client = connect(node.addr, &Arc::new(config.clone())).unwrap();
    assert_eq!(client.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let Err(err) = connect(node.addr, &Arc::new(config)) else {
        panic!("a client wanting only h2 was served")
    };
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
}

#[test]
fn plaintext_on_the_tls_port_gets_a_plain_400_and_junk_gets_closed() {
    let pki = Pki::new();
    pki.issue(Validity::Days(30));
    let node = Node::start(
        "io_uring",
        "[http]\nheader_timeout_secs = 1\n",
        &pki.table(),
    );
    let img = node.add_image(pseudo_random(1 << 20, 3), 3);
    // Plain HTTP: a readable answer, not TLS bytes, and never the image.
    let r = common::request(node.addr, "GET", &node.link(&img.params), &[]);
    assert_eq!(r.status, 400);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        "this port speaks HTTPS: send the request over TLS\n"
    );
    // Bytes that are neither (a handshake record holding a message of an
    // unknown type): a TLS alert (content type 21), then the close.
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x04, 0xfe, 0, 0, 0])
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert_eq!(answer.first(), Some(&21), "{answer:?}");
    // A client that connects and says nothing is closed at the header timeout.
    let mut idle = TcpStream::connect(node.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(idle.read(&mut [0u8; 16]).unwrap_or(0), 0);
    assert!(started.elapsed() < Duration::from_secs(5));
    let client = pki.client();
    let count = |outcome: &str| {
        metric(
            node.addr,
            &client,
            &format!("glance_stream_tls_handshakes_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(count("plaintext"), 1);
    assert_eq!(count("failed"), 1);
    assert_eq!(count("timed_out"), 1);
    // And TLS still works beside them.
    let r = https(node.addr, &client, &node.link(&img.params));
    assert_eq!(sha512(&r.body), sha512(&img.bytes));
}

/// The certificate the node presented on `client`'s connection, as PEM.
fn presented(client: &Client) -> Vec<u8> {
    client.conn.peer_certificates().unwrap()[0].to_vec()
}

fn der_of(chain_pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[test]
fn sighup_swaps_an_expired_certificate_without_dropping_open_connections() {
    let pki = Pki::new();
    let first = pki.issue(Validity::Days(30));
    let node = Node::start("io_uring", "", &pki.table());
    let img = node.add_image(pseudo_random(3 << 20, 4), 4);
    let link = node.link(&img.params);
    let client = pki.client();
    let mut open = connect(node.addr, &client).unwrap();
    assert_eq!(exchange(&mut open, "GET", &link, "").status, 200);
    assert_eq!(presented(&open), der_of(&first));

    // A renewal gone wrong: the files now hold an expired certificate.
    pki.issue(Validity::Expired);
    node.signal("HUP");
    wait_for(&node, "TLS certificate reloaded", 1);
    let Err(err) = connect(node.addr, &client) else {
        panic!("an expired certificate was accepted")
    };
    assert!(err.to_string().contains("certificate expired"), "{err}");
    // The connection opened before goes on with its certificate.
    let r = exchange(&mut open, "GET", &link, "");
    assert_eq!(sha512(&r.body), sha512(&img.bytes));

    // Fixed: a good certificate, another SIGHUP, new clients get it.
    let renewed = pki.issue(Validity::Days(30));
    node.signal("HUP");
    wait_for(&node, "TLS certificate reloaded", 2);
    let fresh = connect(node.addr, &client).unwrap();
    assert_eq!(presented(&fresh), der_of(&renewed));
    let r = exchange(&mut open, "GET", &link, "");
    assert_eq!(sha512(&r.body), sha512(&img.bytes));

    // A key that does not match its certificate is refused on reload; the
    // node keeps serving the one it has.
    let other = pki.ca.issue(&["127.0.0.1"], Validity::Days(30)).unwrap();
    glance_link::write_private_file(
        &pki.dir.path().join("server-key.pem"),
        &other.key_pem,
        "tmp",
    )
    .unwrap();
    node.signal("HUP");
    wait_for(&node, "TLS reload failed", 1);
    let still = connect(node.addr, &client).unwrap();
    assert_eq!(presented(&still), der_of(&renewed));
}

/// Waits until the node's log has said `text` `times` times.
fn wait_for(node: &Node, text: &str, times: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while node.logs().matches(text).count() < times {
        assert!(
            std::time::Instant::now() < deadline,
            "never logged {text:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_node_refuses_to_start_on_a_world_readable_key_or_a_missing_certificate() {
    let pki = Pki::new();
    pki.issue(Validity::Days(30));
    let dir = tempfile::tempdir().unwrap();
    common::write_keyring(dir.path(), "k1", &[("k1", 1)]);
    std::fs::create_dir(dir.path().join("images")).unwrap();
    let config = dir.path().join("stream.toml");
    let run = |scheme: &str, tls: &str| {
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\npublic_url = \"{scheme}://127.0.0.1:1\"\n\
                 keyring = \"keyring.toml\"\n[cache]\ndir = \"cache\"\nmax_bytes = 1000000\n\
                 [stores.local]\nkind = \"file\"\npath = \"images\"\n{tls}"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_glance-stream"))
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let key = pki.dir.path().join("server-key.pem");
    set_mode(&key, 0o644);
    let err = run("https", &pki.table());
    assert!(err.contains("chmod 600"), "{err}");
    set_mode(&key, 0o600);
    let missing = pki.table().replace("server.pem", "nothing.pem");
    let err = run("https", &missing);
    assert!(err.contains("nothing.pem"), "{err}");
    // A TLS node announced at an http:// URL is a mistake in the config.
    let err = run("http", &pki.table());
    assert!(err.contains("https://"), "{err}");
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn curl_downloads_over_https_with_the_ca_and_refuses_without_it() {
    let pki = Pki::new();
    pki.issue(Validity::Days(30));
    let node = Node::start("io_uring", "", &format!("{CACHED_STORE}{}", pki.table()));
    let img = add(&node, "cached", pseudo_random(9 << 20, 5), 5);
    let url = format!(
        "https://127.0.0.1:{}{}",
        node.addr.port(),
        node.link(&img.params)
    );
    let out_file = pki.dir.path().join("image.out");
    let curl = |extra: &[&str]| {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "60", "-o"])
            .arg(&out_file)
            .args(extra)
            .arg(&url)
            .output()
            .expect("curl must be installed (scripts/test-all.sh installs it)")
    };
    let refused = curl(&[]);
    assert!(!refused.status.success(), "curl trusted an unknown CA");
    let ok = curl(&["--cacert", pki.ca_file.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        sha512(&std::fs::read(&out_file).unwrap()),
        sha512(&img.bytes)
    );
}

#[test]
fn an_https_origin_is_read_when_its_ca_is_trusted_and_refused_when_not() {
    let pki = Pki::new();
    pki.issue(Validity::Days(30));
    let (cert, key) = pki.files();
    let web = tempfile::tempdir().unwrap();
    let nginx = common::nginx::Nginx::start_tls(web.path(), &cert, &key, "");
    let img = common::nginx::on_origin(&nginx, pseudo_random((17 << 20) + 9, 6), 6);
    let store = |ca: &str| {
        format!(
            "[stores.web]\nkind = \"http\"\nurl = \"https://127.0.0.1:{}/\"\n{ca}",
            nginx.port
        )
    };
    // Trusting the store's CA file: the image comes over TLS, whole.
    let ca = format!("ca_file = \"{}\"\n", pki.ca_file.display());
    let node = Node::start("io_uring", "", &store(&ca));
    let (status, len, digest) = common::download_sha512(node.addr, &node.link(&img.params));
    assert_eq!((status, len), (200, img.bytes.len() as u64));
    assert_eq!(digest, sha512(&img.bytes));
    assert!(nginx.bytes_sent() >= img.bytes.len() as u64);
    // With the system's roots only, the origin's certificate is refused:
    // the client gets a 502 and no byte of the image.
    let sent = nginx.bytes_sent();
    let strict = Node::start("io_uring", "", &store(""));
    let r = strict.get(&strict.link(&img.params), &[]);
    assert_eq!(r.status, 502);
    assert_eq!(
        nginx.bytes_sent(),
        sent,
        "bytes left nginx for an untrusted peer"
    );
    assert!(strict.logs().contains("UnknownIssuer"), "{}", strict.logs());
}
