//! glance-stream handing TLS sessions to the kernel: every cipher the
//! kernel takes, downloads checked byte for byte with bodies sent by
//! `sendfile`, and what the server must still do itself once the kernel
//! holds the keys: read close_notify, refuse a key update and a forged
//! record, keep in rustls a session it cannot hand over.
//!
//! These need a kernel with TLS offload (`TCP_ULP "tls"`), which CI's
//! machine lacks: `scripts/kernel-tls-vm.sh` boots Debian's kernel under
//! qemu and runs them there (`--include-ignored`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::https::{add, connect, exchange, https, metric};
use common::pki::Pki;
use common::{DRIVERS, Node, pseudo_random, sha512};
use glance_api::tls::Validity;
use rustls::SupportedCipherSuite;
use rustls::crypto::ring::cipher_suite as suites;

const CACHED_STORE: &str = "[stores.cached]\nkind = \"file\"\npath = \"images\"\ncache = true\n";

/// A client trusting the test's CA that offers only `suites`, in TLS 1.3
/// or 1.2.
fn client_with(
    pki: &Pki,
    suites: &[SupportedCipherSuite],
    tls13: bool,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = suites.to_vec();
    let version = if tls13 {
        &rustls::version::TLS13
    } else {
        &rustls::version::TLS12
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A node serving HTTPS with a cached file store, and a client of it.
fn node(driver: &str, extra_tls: &str) -> (Pki, Node, Arc<rustls::ClientConfig>) {
    let pki = Pki::new();
    pki.issue(Validity::Days(30));
    let tables = format!("{CACHED_STORE}{}{extra_tls}", pki.table());
    let node = Node::start(driver, "", &tables);
    let client = pki.client();
    (pki, node, client)
}

fn hand_offs(node: &Node, client: &Arc<rustls::ClientConfig>, outcome: &str) -> u64 {
    metric(
        node.addr,
        client,
        &format!("glance_stream_tls_kernel_hand_offs_total{{outcome=\"{outcome}\"}}"),
    )
}

fn sent(node: &Node, client: &Arc<rustls::ClientConfig>, path: &str) -> u64 {
    metric(
        node.addr,
        client,
        &format!("glance_stream_sent_bytes_total{{path=\"{path}\"}}"),
    )
}

/// Reads until the server closes; `Ok(bytes)` only when it closed with
/// close_notify (rustls reports a bare close as `UnexpectedEof`).
fn read_to_close(client: &mut impl std::io::Read) -> std::io::Result<Vec<u8>> {
    let mut rest = Vec::new();
    client.read_to_end(&mut rest)?;
    Ok(rest)
}

/// Waits (up to 10 s) for the node to log `text`: the client may see the
/// connection end before the server's log line is read.
fn wait_for_log(node: &Node, text: &str) {
    for _ in 0..100 {
        if node.logs().contains(text) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no {text:?} in the log: {}", node.logs());
}

#[test]
#[ignore = "needs kernel TLS: run by scripts/kernel-tls-vm.sh"]
fn downloads_leave_through_the_kernel_with_every_cipher() {
    let ciphers: [(&str, &[SupportedCipherSuite], bool); 6] = [
        (
            "TLS 1.3 AES-128-GCM",
            &[suites::TLS13_AES_128_GCM_SHA256],
            true,
        ),
        (
            "TLS 1.3 AES-256-GCM",
            &[suites::TLS13_AES_256_GCM_SHA384],
            true,
        ),
        (
            "TLS 1.3 ChaCha20",
            &[suites::TLS13_CHACHA20_POLY1305_SHA256],
            true,
        ),
        (
            "TLS 1.2 AES-128-GCM",
            &[
                suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                suites::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ],
            false,
        ),
        (
            "TLS 1.2 AES-256-GCM",
            &[
                suites::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                suites::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ],
            false,
        ),
        (
            "TLS 1.2 ChaCha20",
            &[
                suites::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                suites::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ],
            false,
        ),
    ];
    for driver in DRIVERS {
        let (pki, node, client) = node(driver, "");
        wait_for_log(&node, "hands the session to the kernel");
        assert_eq!(
            metric(
                node.addr,
                &client,
                "glance_stream_tls_mode{mode=\"kernel\"}"
            ),
            1
        );
        assert_eq!(
            metric(node.addr, &client, "glance_stream_kernel_tls_available"),
            1
        );
        // 16 MiB + 1: two 8 MiB chunks and one byte.
        let img = add(&node, "cached", pseudo_random((16 << 20) + 1, 7), 7);
        let link = node.link(&img.params);
        let before = hand_offs(&node, &client, "kernel");
        let mut body_bytes = 0u64;
        for (name, offered, tls13) in ciphers {
            let config = client_with(&pki, offered, tls13);
            let mut conn = connect(node.addr, &config).unwrap();
            let suite = conn.conn.negotiated_cipher_suite().unwrap();
            assert!(offered.contains(&suite), "{driver} {name}: {suite:?}");
            // A whole download (the first one a miss), a HEAD and a range
            // across a chunk boundary on one kept-alive connection.
            let r = exchange(&mut conn, "GET", &link, "");
            assert_eq!(r.status, 200, "{driver} {name}");
            assert_eq!(sha512(&r.body), sha512(&img.bytes), "{driver} {name}");
            let head = exchange(&mut conn, "HEAD", &link, "");
            assert_eq!(head.status, 200, "{driver} {name}");
            assert!(head.body.is_empty());
            let (a, b) = ((8 << 20) - 7, (8 << 20) + 9);
            let range = format!("Range: bytes={a}-{b}\r\n");
            let r = exchange(&mut conn, "GET", &link, &range);
            assert_eq!(r.status, 206, "{driver} {name}");
            assert_eq!(r.body, &img.bytes[a..=b], "{driver} {name}");
            // The last request closes: the kernel sends close_notify.
            let r = exchange(
                &mut conn,
                "GET",
                &link,
                &format!("{range}Connection: close\r\n"),
            );
            assert_eq!(r.body, &img.bytes[a..=b], "{driver} {name}");
            let rest = read_to_close(&mut conn);
            assert!(
                matches!(&rest, Ok(v) if v.is_empty()),
                "{driver} {name}: the close was not a TLS close: {rest:?}"
            );
            body_bytes += img.bytes.len() as u64 + 2 * (b - a + 1) as u64;
        }
        // Every connection (each metrics read is one) went to the kernel;
        // every body byte left with sendfile, none from a map.
        let handed = hand_offs(&node, &client, "kernel") - before;
        assert!(handed >= ciphers.len() as u64, "{driver}: {handed}");
        assert_eq!(hand_offs(&node, &client, "user_space"), 0, "{driver}");
        assert_eq!(hand_offs(&node, &client, "failed"), 0, "{driver}");
        assert!(sent(&node, &client, "zero_copy") >= body_bytes, "{driver}");
        assert_eq!(sent(&node, &client, "mapped"), 0, "{driver}");
    }
}

/// A socket that keeps a copy of every byte it reads.
struct Recording {
    sock: TcpStream,
    seen: Vec<u8>,
}

impl std::io::Read for Recording {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.sock.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl std::io::Write for Recording {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sock.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.sock.flush()
    }
}

/// The explicit nonces of the encrypted records in a TLS 1.2 server's
/// bytes: those after its ChangeCipherSpec, 8 bytes after each header.
fn explicit_nonces(mut wire: &[u8]) -> Vec<[u8; 8]> {
    let mut encrypted = false;
    let mut out = Vec::new();
    while wire.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([wire[3], wire[4]]));
        let Some(record) = wire.get(..5 + len) else {
            break;
        };
        if encrypted {
            out.push(record[5..13].try_into().unwrap());
        }
        encrypted |= record[0] == 20;
        wire = &wire[5 + len..];
    }
    out
}

#[test]
#[ignore = "needs kernel TLS: run by scripts/kernel-tls-vm.sh"]
fn tls12_aes_gcm_records_never_repeat_a_nonce_across_the_hand_off() {
    let pki = Pki::new();
    pki.issue(Validity::Days(30));
    let node = Node::start("io_uring", "", &format!("{CACHED_STORE}{}", pki.table()));
    let img = add(&node, "cached", pseudo_random(100 << 10, 15), 15);
    let link = node.link(&img.params);
    for suites in [
        [
            suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suites::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        [
            suites::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suites::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
    ] {
        let config = client_with(&pki, &suites, false);
        let sock = TcpStream::connect(node.addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(node.addr.ip().into());
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let recording = Recording {
            sock,
            seen: Vec::new(),
        };
        let mut stream = rustls::StreamOwned::new(conn, recording);
        let req = format!("GET {link} HTTP/1.1\r\nHost: test\r\n\r\n");
        stream.write_all(req.as_bytes()).unwrap();
        let close = format!("GET {link} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(close.as_bytes()).unwrap();
        let answers = read_to_close(&mut stream).unwrap();
        assert!(answers.len() > 2 * img.bytes.len(), "{}", answers.len());
        // The Finished (rustls's), then the kernel's records: every
        // explicit nonce different, or the key's secrecy is gone.
        let nonces = explicit_nonces(&stream.sock.seen);
        assert!(nonces.len() > 10, "{}", nonces.len());
        let mut unique = nonces.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), nonces.len(), "a nonce was used twice");
    }
    assert_eq!(
        metric(
            node.addr,
            &pki.client(),
            "glance_stream_tls_kernel_hand_offs_total{outcome=\"user_space\"}"
        ),
        0
    );
}

#[test]
#[ignore = "needs kernel TLS: run by scripts/kernel-tls-vm.sh"]
fn a_client_close_notify_is_read_from_the_kernel_and_answered() {
    let (_pki, node, client) = node("io_uring", "");
    let img = add(&node, "cached", pseudo_random(1 << 20, 8), 8);
    let mut conn = connect(node.addr, &client).unwrap();
    let r = exchange(&mut conn, "GET", &node.link(&img.params), "");
    assert_eq!(sha512(&r.body), sha512(&img.bytes));
    // The client says it is done: an alert record, which a plain read on
    // the kernel's socket refuses (EIO) and the server reads with its type.
    conn.conn.send_close_notify();
    conn.flush().unwrap();
    // The server's own close_notify comes back: a clean TLS close, which
    // it sends only when it read the client's as the end of the stream.
    let rest = read_to_close(&mut conn);
    assert!(matches!(&rest, Ok(v) if v.is_empty()), "{rest:?}");
    assert!(hand_offs(&node, &client, "kernel") >= 1);
}

#[test]
#[ignore = "needs kernel TLS: run by scripts/kernel-tls-vm.sh"]
fn a_key_update_from_the_client_closes_the_connection_and_nothing_else() {
    let pki = Pki::new();
    pki.issue(Validity::Days(30));
    let node = Node::start("io_uring", "", &format!("{CACHED_STORE}{}", pki.table()));
    let client = client_with(&pki, &[suites::TLS13_AES_128_GCM_SHA256], true);
    let img = add(&node, "cached", pseudo_random(1 << 20, 9), 9);
    let link = node.link(&img.params);
    let mut conn = connect(node.addr, &client).unwrap();
    let r = exchange(&mut conn, "GET", &link, "");
    assert_eq!(sha512(&r.body), sha512(&img.bytes));
    // New client keys: this server does not re-key kernel sessions, so it
    // closes (with close_notify under its unchanged send key) and never
    // reads the request sent under the new key.
    conn.conn.refresh_traffic_keys().unwrap();
    let req = format!("GET {link} HTTP/1.1\r\nHost: test\r\n\r\n");
    conn.write_all(req.as_bytes()).unwrap();
    conn.flush().unwrap();
    let rest = read_to_close(&mut conn);
    assert!(matches!(&rest, Ok(v) if v.is_empty()), "{rest:?}");
    wait_for_log(&node, "asked for a key update");
    // The node serves on.
    let r = https(node.addr, &pki.client(), &link);
    assert_eq!(sha512(&r.body), sha512(&img.bytes));
}

#[test]
#[ignore = "needs kernel TLS: run by scripts/kernel-tls-vm.sh"]
fn a_forged_record_ends_the_connection_and_nothing_else() {
    let (_pki, node, client) = node("io_uring", "");
    let img = add(&node, "cached", pseudo_random(1 << 20, 10), 10);
    let link = node.link(&img.params);
    let mut conn = connect(node.addr, &client).unwrap();
    let r = exchange(&mut conn, "GET", &link, "");
    assert_eq!(sha512(&r.body), sha512(&img.bytes));
    // An application-data record whose tag cannot verify.
    let mut forged = vec![23, 3, 3, 0, 48];
    forged.extend(pseudo_random(48, 11));
    conn.sock.write_all(&forged).unwrap();
    // The kernel fails the socket: no answer, no clean close (the server
    // cannot send an alert through a failed socket).
    let mut buf = [0u8; 64];
    let got = conn.read(&mut buf);
    assert!(got.is_err(), "{got:?}");
    wait_for_log(&node, "failed to decrypt");
    // Nothing else was disturbed.
    let r = https(node.addr, &client, &link);
    assert_eq!(sha512(&r.body), sha512(&img.bytes));
}

/// Runs a handshake by hand up to the client's Finished, which waits,
/// unsent, in the returned connection: what the client writes next leaves
/// with it, in the same flight.
fn handshake_but_finished(
    node: &Node,
    client: &Arc<rustls::ClientConfig>,
) -> (TcpStream, rustls::ClientConnection) {
    let mut sock = TcpStream::connect(node.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(node.addr.ip().into());
    let mut conn = rustls::ClientConnection::new(Arc::clone(client), name).unwrap();
    while conn.is_handshaking() {
        if conn.wants_write() {
            conn.write_tls(&mut sock).unwrap();
        } else {
            conn.read_tls(&mut sock).unwrap();
            conn.process_new_packets().unwrap();
        }
    }
    (sock, conn)
}

/// The client's Finished and one request (closing the connection), as
/// the bytes that go on the wire.
fn finished_and_request(conn: &mut rustls::ClientConnection, link: &str) -> Vec<u8> {
    let req = format!("GET {link} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    conn.writer().write_all(req.as_bytes()).unwrap();
    let mut flight = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut flight).unwrap();
    }
    flight
}

#[test]
#[ignore = "needs kernel TLS: run by scripts/kernel-tls-vm.sh"]
fn a_request_sent_with_the_finished_message_is_answered_after_the_hand_off() {
    let (_pki, node, client) = node("io_uring", "");
    let img = add(&node, "cached", pseudo_random(3 << 20, 14), 14);
    // The request arrives with the handshake's last message: rustls
    // decrypts it before the keys go to the kernel, and it must not be lost.
    let (mut sock, mut conn) = handshake_but_finished(&node, &client);
    let flight = finished_and_request(&mut conn, &node.link(&img.params));
    sock.write_all(&flight).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, sock);
    let rest = read_to_close(&mut stream).unwrap();
    let (r, _) = common::parse_response(&rest, false);
    assert_eq!(r.status, 200);
    assert_eq!(sha512(&r.body), sha512(&img.bytes));
    assert!(hand_offs(&node, &client, "kernel") >= 1);
    assert_eq!(hand_offs(&node, &client, "user_space"), 0);
}

#[test]
#[ignore = "needs kernel TLS: run by scripts/kernel-tls-vm.sh"]
fn a_request_record_split_across_the_hand_off_is_completed_first() {
    let (_pki, node, client) = node("io_uring", "");
    let img = add(&node, "cached", pseudo_random(3 << 20, 12), 12);
    // Everything goes out but the request record's last bytes, which
    // follow a moment later: the server finishes its handshake holding
    // half a record, which the kernel could not take over. It completes
    // the record through rustls first, then hands the session over.
    let (mut sock, mut conn) = handshake_but_finished(&node, &client);
    let flight = finished_and_request(&mut conn, &node.link(&img.params));
    let split = flight.len() - 5;
    sock.write_all(&flight[..split]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    sock.write_all(&flight[split..]).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, sock);
    let rest = read_to_close(&mut stream).unwrap();
    let (r, _) = common::parse_response(&rest, false);
    assert_eq!(r.status, 200);
    assert_eq!(sha512(&r.body), sha512(&img.bytes));
    assert_eq!(hand_offs(&node, &client, "user_space"), 0);
    assert_eq!(sent(&node, &client, "mapped"), 0);
}

#[test]
#[ignore = "needs kernel TLS: run by scripts/kernel-tls-vm.sh"]
fn kernel_offload_off_keeps_every_session_in_rustls() {
    let (_pki, node, client) = node("io_uring", "kernel_offload = false\n");
    wait_for_log(&node, "kernel TLS is offered but turned off");
    let img = add(&node, "cached", pseudo_random(1 << 20, 13), 13);
    let r = https(node.addr, &client, &node.link(&img.params));
    assert_eq!(sha512(&r.body), sha512(&img.bytes));
    assert_eq!(
        metric(
            node.addr,
            &client,
            "glance_stream_tls_mode{mode=\"userspace\"}"
        ),
        1
    );
    assert_eq!(hand_offs(&node, &client, "kernel"), 0);
    assert_eq!(sent(&node, &client, "zero_copy"), 0);
}
