//! Faults of real processes: glance-stream killed with SIGKILL in the middle
//! of fills, a cache disk that is full, and an origin that cuts, corrupts or
//! stalls its answers. Nothing wrong is ever served, a body that cannot be
//! right is cut short of its `Content-Length`, and nothing is lost: fills
//! resume where they stopped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::fault_origin::{Fault, FaultOrigin};
use common::nginx::{Nginx, on_origin};
use common::{Node, pseudo_random};

const MIB: usize = 1 << 20;
const HIT: &str = "glance_stream_cache_lookups_total{outcome=\"hit\"}";

/// One download on a new connection, read until the server closes it:
/// `None` when the server went away before a response head.
fn try_download(addr: SocketAddr, target: &str) -> Option<(u16, u64, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let (resp, _) = common::parse_response(&raw[..head_end], true);
    let declared = resp.header("content-length")?.parse().unwrap();
    Some((resp.status, declared, raw[head_end..].to_vec()))
}

/// Checks a download that may have been cut: a 200 for the whole image,
/// and every byte that came is the image's. Returns whether it was whole.
fn right_as_far_as_it_goes(got: Option<(u16, u64, Vec<u8>)>, image: &[u8], what: &str) -> bool {
    let Some((status, declared, body)) = got else {
        return false;
    };
    assert_eq!(status, 200, "{what}");
    assert_eq!(declared, image.len() as u64, "{what}");
    assert!(body.len() <= image.len(), "{what}: a body past its length");
    assert!(
        body[..] == image[..body.len()],
        "{what}: wrong bytes served"
    );
    body.len() == image.len()
}

/// xorshift, for reproducible kill times.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn sigkill_during_fills_20_times_loses_nothing_and_the_fills_resume() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    // 4 MiB/s per origin connection: the small image fills over a few
    // lifetimes of the node, so kills land in its fills, commits and final
    // check and later in hits; the large one cannot fill in 20 lifetimes
    // (at most some 20 MiB/s for 13 s), so the last start must resume it.
    let nginx = Nginx::start_with(dir.path(), port, "limit_rate 4m;");
    let node = Node::start_with_cache(
        "io_uring",
        "threads = 2",
        "chunk_size_mib = 4",
        &format!("[stores.web]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/\"\n"),
    );
    let images = [
        on_origin(&nginx, pseudo_random(384 * MIB + 12_345, 901), 901),
        on_origin(&nginx, pseudo_random(24 * MIB + 777, 902), 902),
    ];
    let links: Vec<String> = images.iter().map(|i| node.link(&i.params)).collect();
    let config = node.dir.path().join("stream.toml");
    // Its directory stays; every node below runs on the config and cache in it.
    let mut node = node;
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    let (mut seed, mut whole, mut cut) = (0x9e37_79b9_u64, 0, 0);
    for round in 0..20 {
        let running = common::restart(&config);
        let delay = Duration::from_millis(150 + next(&mut seed) % 1000);
        let outcomes: Vec<bool> = std::thread::scope(|s| {
            let clients: Vec<_> = [0, 0, 1]
                .into_iter()
                .map(|k| {
                    let (addr, link, img) = (running.addr, &links[k], &images[k]);
                    s.spawn(move || {
                        let got = try_download(addr, link);
                        right_as_far_as_it_goes(got, &img.bytes, &format!("round {round}"))
                    })
                })
                .collect();
            std::thread::sleep(delay);
            drop(running); // SIGKILL
            clients.into_iter().map(|c| c.join().unwrap()).collect()
        });
        whole += outcomes.iter().filter(|w| **w).count();
        cut += outcomes.iter().filter(|w| !**w).count();
    }
    let before = nginx.bytes_sent();
    let last = common::restart(&config);
    for (img, link) in images.iter().zip(&links) {
        let (status, len, hash) = common::download_sha512(last.addr, link);
        assert_eq!((status, len), (200, img.bytes.len() as u64));
        assert!(
            hash == img.params.sha512,
            "the image after 20 kills differs"
        );
    }
    let total: u64 = images.iter().map(|i| i.bytes.len() as u64).sum();
    let final_fetch = nginx.bytes_sent() - before;
    // Less than the large image alone: it resumed from what the kills kept.
    let large = images[0].bytes.len() as u64;
    assert!(
        final_fetch < large,
        "the fill started over: {final_fetch} bytes fetched after the kills for a {large}-byte image"
    );
    eprintln!(
        "20 SIGKILLs: {whole} downloads whole, {cut} cut, every byte right; \
         origin sent {} MiB for {} MiB of images ({final_fetch} bytes after the last kill)",
        nginx.bytes_sent() >> 20,
        total >> 20
    );
}

/// Stops `node` and starts it again on the same config with its cache on a
/// 32 MiB disk of its own with 6 MiB free.
fn on_a_full_disk(node: &mut Node) -> common::Running {
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    let config = node.dir.path().join("stream.toml");
    common::restart_on_small_disk(&config, &node.dir.path().join("cache"), 32, 6)
}

#[test]
fn a_full_cache_disk_streams_through_and_serves_nothing_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path());
    let mut node = Node::start_with_cache("io_uring", "", "chunk_size_mib = 4", &nginx.web_store());
    let img = on_origin(&nginx, pseudo_random(40 * MIB + 99, 903), 903);
    let link = node.link(&img.params);
    let next = on_origin(&nginx, pseudo_random(9 * MIB, 908), 908);
    let next_link = node.link(&next.params);
    // 6 MiB free for a 40 MiB image: the cache believes it has room (its
    // limit is 1 GB) until the disk says otherwise.
    let full = on_a_full_disk(&mut node);
    for attempt in ["first", "second"] {
        let (status, len, hash) = common::download_sha512(full.addr, &link);
        assert_eq!((status, len), (200, img.bytes.len() as u64), "{attempt}");
        assert!(hash == img.params.sha512, "{attempt} download differs");
    }
    let failures = full.metric("glance_stream_cache_write_failures_total");
    assert!(failures >= 1);
    eprintln!("full disk: {failures} chunk writes failed, both downloads whole and right");
    // Another image, while writes are failing: not admitted, streamed through.
    let (status, len, hash) = common::download_sha512(full.addr, &next_link);
    assert_eq!((status, len), (200, next.bytes.len() as u64));
    assert!(hash == next.params.sha512);
    assert_eq!(
        full.metric("glance_stream_cache_lookups_total{outcome=\"bypass\"}"),
        1,
        "a new image was admitted to a failing disk"
    );
    assert_eq!(full.metric(HIT), 0);
    assert!(
        full.logs().contains("streaming the rest through"),
        "{}",
        full.logs()
    );
    let health = common::request(full.addr, "GET", "/healthz", &[]);
    assert_eq!(health.status, 200, "the node is alive");
}

/// A node whose store `web` is the fault origin, with short timeouts.
fn node_on(origin: &FaultOrigin) -> Node {
    Node::start(
        "io_uring",
        "",
        &format!(
            "[stores.web]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}/\"\n\
             first_byte_timeout_secs = 1\nidle_timeout_secs = 1\n",
            origin.port
        ),
    )
}

/// Sets up an image of 20 MiB on a fault origin doing `fault`, and its link.
fn faulty(fault: Fault, seed: u64) -> (FaultOrigin, Node, common::Image, String) {
    let img = common::image_in("web", pseudo_random(20 * MIB + 5, seed), seed);
    let origin = FaultOrigin::start(img.bytes.clone(), fault);
    let node = node_on(&origin);
    let link = node.link(&img.params);
    (origin, node, img, link)
}

/// After the fault is cleared, the image downloads whole and right, and
/// the next download is a hit.
fn heals(origin: &FaultOrigin, node: &Node, img: &common::Image, link: &str) {
    origin.set(Fault::None);
    let (status, len, hash) = common::download_sha512(node.addr, link);
    assert_eq!((status, len), (200, img.bytes.len() as u64));
    assert!(hash == img.params.sha512);
    node.settle("web");
    let hits = node.metric(HIT);
    let (_, _, hash) = common::download_sha512(node.addr, link);
    assert!(hash == img.params.sha512);
    assert_eq!(node.metric(HIT), hits + 1, "complete only once right");
}

#[test]
fn an_origin_that_truncates_its_answers_gets_clients_cut_bodies_and_the_fill_resumes() {
    let (origin, node, img, link) = faulty(
        Fault::Truncate {
            at: 10 * MIB as u64,
        },
        904,
    );
    for attempt in 0..2 {
        let got = try_download(node.addr, &link);
        assert!(
            !right_as_far_as_it_goes(got, &img.bytes, "truncating origin"),
            "attempt {attempt}: a whole body from an origin that cuts"
        );
        node.settle("web");
        assert_eq!(node.metric(HIT), 0, "the entry was completed");
    }
    assert!(node.metric("glance_stream_chunk_fills_total{store=\"web\",event=\"failed\"}") >= 1);
    let sent = origin.body_bytes();
    heals(&origin, &node, &img, &link);
    assert!(
        origin.body_bytes() - sent < img.bytes.len() as u64,
        "the fill started over"
    );
}

#[test]
fn an_origin_that_sends_a_wrong_byte_gets_clients_cut_bodies_and_nothing_cached() {
    let at = 13 * MIB as u64;
    let (origin, node, img, link) = faulty(Fault::WrongByte { at }, 905);
    let mut wrong = img.bytes.clone();
    wrong[at as usize] ^= 0x5a;
    for attempt in 0..2 {
        let (status, declared, body) = try_download(node.addr, &link).unwrap();
        assert_eq!((status, declared), (200, img.bytes.len() as u64));
        assert!(
            body.len() < img.bytes.len(),
            "attempt {attempt}: a complete-looking wrong image"
        );
        assert!(body[..] == wrong[..body.len()]);
        node.settle("web");
    }
    assert_eq!(node.metric("glance_stream_cache_invalidations_total"), 2);
    assert_eq!(node.metric(HIT), 0);
    heals(&origin, &node, &img, &link);
}

#[test]
fn an_origin_that_stalls_mid_answer_or_never_answers_times_out_cleanly() {
    let (origin, node, img, link) = faulty(Fault::Hang { at: 9 * MIB as u64 }, 906);
    let got = try_download(node.addr, &link);
    assert!(
        !right_as_far_as_it_goes(got, &img.bytes, "stalling origin"),
        "a whole body from an origin that stalls"
    );
    // Silent from the start: the client hears a 502 before any byte.
    origin.set(Fault::Silent);
    let other = common::image_in("web", pseudo_random(3 * MIB, 907), 907);
    let r = node.get(&node.link(&other.params), &[]);
    assert_eq!(r.status, 502);
    node.settle("web");
    assert!(
        node.logs().contains("origin timed out waiting for"),
        "{}",
        node.logs()
    );
    heals(&origin, &node, &img, &link);
}

#[test]
fn a_chunk_damaged_while_the_node_was_down_is_never_served_and_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path());
    // No scrubber: the first read after the start must catch the damage.
    let node = Node::start_with_cache(
        "io_uring",
        "",
        "chunk_size_mib = 4\nscrub_chunks_per_sec = 0",
        &nginx.web_store(),
    );
    let img = on_origin(&nginx, pseudo_random(20 * MIB + 1, 909), 909);
    let link = node.link(&img.params);
    let (_, _, hash) = common::download_sha512(node.addr, &link);
    assert!(hash == img.params.sha512);
    node.settle("web");
    let config = node.dir.path().join("stream.toml");
    let mut node = node;
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    // One byte of chunk 3 rots while the node is down.
    let at = 13 * MIB + 77;
    node.damage_cached(&img.params.image_id, at as u64);
    let restarted = common::restart(&config);
    let fetched = nginx.bytes_sent();
    for attempt in ["first", "second"] {
        let (status, len, hash) = common::download_sha512(restarted.addr, &link);
        assert_eq!((status, len), (200, img.bytes.len() as u64), "{attempt}");
        assert!(hash == img.params.sha512, "{attempt}: damaged bytes served");
    }
    assert_eq!(
        restarted.metric("glance_stream_cache_scrub_failures_total"),
        1
    );
    assert!(
        nginx.bytes_sent() > fetched,
        "the damaged part was not fetched again"
    );
    // A range inside the damaged chunk, once refilled, is right too.
    let r = common::request(
        restarted.addr,
        "GET",
        &link,
        &[("Range", &format!("bytes={}-{}", at - 5, at + 5))],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, img.bytes[at - 5..=at + 5]);
}

#[test]
fn a_full_disk_and_a_lying_origin_together_still_serve_no_whole_wrong_image() {
    let bytes = pseudo_random(40 * MIB + 11, 910);
    let img = common::image_in("web", bytes.clone(), 910);
    let at = 30 * MIB as u64;
    let origin = FaultOrigin::start(bytes, Fault::WrongByte { at });
    let mut node = node_on(&origin);
    let link = node.link(&img.params);
    let full = on_a_full_disk(&mut node);
    let mut wrong = img.bytes.clone();
    wrong[at as usize] ^= 0x5a;
    // The same bytes under another id: an image the failing disk does not admit.
    let other = common::image_in("web", img.bytes.clone(), 911);
    let other_link = node.link(&other.params);
    // The first streams through once the disk refuses a chunk, the second
    // is not admitted at all: both are checked on the way.
    for (attempt, link) in [("unwritable", &link), ("bypassed", &other_link)] {
        let (status, declared, body) = try_download(full.addr, link).unwrap();
        assert_eq!((status, declared), (200, img.bytes.len() as u64));
        assert!(
            body.len() < img.bytes.len(),
            "{attempt}: a complete-looking wrong image"
        );
        assert!(body[..] == wrong[..body.len()], "{attempt}");
    }
    assert!(full.metric("glance_stream_cache_write_failures_total") >= 1);
    assert_eq!(
        full.metric("glance_stream_cache_lookups_total{outcome=\"bypass\"}"),
        1
    );
    // The log line reaches the test through a pipe: give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while full.logs().matches("response cut").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", full.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}
