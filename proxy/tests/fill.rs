//! Misses served through the cache from a real HTTP origin (Debian's nginx,
//! whose access log counts the bytes it sent): one fetch per chunk however
//! many clients ask, warm hits read nothing, ranges read only their chunks,
//! bytes that do not match the link are never kept.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::nginx::{Nginx, on_origin};
use common::{Node, pseudo_random, sha512};

const MIB: usize = 1 << 20;

fn node_with_origin(driver: &str, nginx: &Nginx) -> Node {
    node_with_origin_cache(driver, nginx, "")
}

fn node_with_origin_cache(driver: &str, nginx: &Nginx, cache: &str) -> Node {
    Node::start_with_cache(driver, "threads = 2", cache, &nginx.web_store())
}

/// `clients` cold downloads at once, then a warm one: every client gets the
/// image, the origin sends each chunk once, the warm download reads nothing.
fn cold_storm(driver: &str, size: usize, clients: usize) {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path());
    let node = node_with_origin(driver, &nginx);
    let img = on_origin(&nginx, pseudo_random(size, 101), 101);
    let link = node.link(&img.params);
    let results: Vec<(u16, u64, [u8; 64])> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| s.spawn(|| common::download_sha512(node.addr, &link)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, len, hash) in &results {
        assert_eq!((*status, *len), (200, size as u64), "{driver}");
        assert!(
            *hash == img.params.sha512,
            "{driver}: a client got other bytes"
        );
    }
    node.settle("web");
    let origin_bytes = nginx.bytes_sent();
    assert_eq!(
        origin_bytes,
        img.bytes.len() as u64,
        "{driver}: the origin sent {origin_bytes} bytes"
    );
    let chunks = size.div_ceil(8 * MIB) as u64;
    assert_eq!(node.metric(COMPLETED), chunks, "{driver}: each chunk once");
    assert!(
        node.metric("glance_stream_coalesced_waits_total") >= clients as u64 - 1,
        "{driver}: every client but one waited for chunk 0"
    );
    // Warm: nothing more from the origin.
    let (_, _, hash) = common::download_sha512(node.addr, &link);
    assert!(hash == img.params.sha512);
    assert_eq!(
        nginx.bytes_sent(),
        origin_bytes,
        "{driver}: a warm download read the origin"
    );
    assert!(node.metric("glance_stream_cache_lookups_total{outcome=\"hit\"}") >= 1);
}

#[test]
fn cold_downloads_by_32_clients_fetch_each_chunk_once_and_warm_ones_fetch_nothing() {
    cold_storm("io_uring", 256 * MIB + 12345, 32);
}

#[test]
fn cold_downloads_on_the_epoll_driver_fetch_each_chunk_once() {
    cold_storm("legacy", 64 * MIB + 12345, 8);
}

const COMPLETED: &str = "glance_stream_chunk_fills_total{store=\"web\",event=\"completed\"}";

#[test]
fn a_cold_range_reads_only_the_chunks_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path());
    let node = node_with_origin_cache("io_uring", &nginx, "readahead_mib = 0");
    let img = on_origin(&nginx, pseudo_random(64 * MIB, 102), 102);
    let link = node.link(&img.params);
    let (a, b) = (20 * MIB + 7, 20 * MIB + 106);
    let r = node.get(&link, &[("Range", &format!("bytes={a}-{b}"))]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &img.bytes[a..=b]);
    assert_eq!(nginx.bytes_sent(), 8 * MIB as u64, "one 8 MiB chunk");
    // A range across a chunk boundary adds only the next chunk.
    let (a, b) = (24 * MIB - 10, 24 * MIB + 10);
    let r = node.get(&link, &[("Range", &format!("bytes={a}-{b}"))]);
    assert_eq!(r.body, &img.bytes[a..=b]);
    assert_eq!(nginx.bytes_sent(), 16 * MIB as u64);
}

#[test]
fn a_cold_range_reads_its_chunks_and_at_most_the_readahead_past_them() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path());
    // The default readahead: 16 MiB, two 8 MiB chunks.
    let node = node_with_origin("legacy", &nginx);
    let img = on_origin(&nginx, pseudo_random(64 * MIB, 109), 109);
    let link = node.link(&img.params);
    let (a, b) = (20 * MIB + 7, 20 * MIB + 106);
    let r = node.get(&link, &[("Range", &format!("bytes={a}-{b}"))]);
    assert_eq!(r.body, &img.bytes[a..=b]);
    node.settle("web");
    assert_eq!(
        nginx.bytes_sent(),
        24 * MIB as u64,
        "chunk 2 and the two after it"
    );
    // The chunks read ahead are served without the origin.
    let (a, b) = (24 * MIB, 40 * MIB - 1);
    let r = node.get(&link, &[("Range", &format!("bytes={a}-{b}"))]);
    assert_eq!(r.body, &img.bytes[a..=b]);
    node.settle("web");
    assert_eq!(
        nginx.bytes_sent(),
        40 * MIB as u64,
        "chunks 5 and 6 read ahead of chunk 4, nothing else"
    );
}

#[test]
fn bytes_that_do_not_match_the_link_are_never_served_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path());
    let node = node_with_origin("legacy", &nginx);
    let img = on_origin(&nginx, pseudo_random(10 * MIB, 103), 103);
    // The origin's object is tampered with after the link was made.
    let mut tampered = img.bytes.clone();
    tampered[5 * MIB] ^= 0x55;
    std::fs::write(nginx.root.join(img.params.image_id.to_string()), &tampered).unwrap();
    let link = node.link(&img.params);
    // The last byte waits for the hashes: the client gets a cut body, never
    // a complete-looking wrong image.
    let (status, declared, body) = common::download_partial(node.addr, &link);
    assert_eq!((status, declared), (200, img.bytes.len() as u64));
    // Cut at the last byte, or earlier if the walk saw the entry thrown away.
    assert!(
        body.len() < img.bytes.len(),
        "a complete-looking wrong image"
    );
    assert!(
        body[..] == tampered[..body.len()],
        "the backend's bytes, as far as they go"
    );
    node.settle("web");
    assert_eq!(node.metric("glance_stream_cache_invalidations_total"), 1);
    let before = nginx.bytes_sent();
    let (_, _, again) = common::download_partial(node.addr, &link);
    assert!(
        again.len() < img.bytes.len(),
        "the second download is cut too"
    );
    assert!(
        nginx.bytes_sent() > before,
        "the second request must read the origin again"
    );
}

#[test]
fn the_cache_survives_a_restart_and_serves_without_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path());
    let node = node_with_origin("io_uring", &nginx);
    let img = on_origin(&nginx, pseudo_random(9 * MIB, 104), 104);
    let link = node.link(&img.params);
    assert_eq!(sha512(&node.get(&link, &[]).body), img.params.sha512);
    let read = nginx.bytes_sent();
    // Restart the node on the same directory: the cache survives.
    let dir_path = node.dir.path().to_path_buf();
    let mut node = node;
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    let config = dir_path.join("stream.toml");
    let restarted = common::restart(&config);
    let r = common::request(restarted.addr, "GET", &link, &[]);
    assert_eq!(sha512(&r.body), img.params.sha512);
    assert_eq!(
        nginx.bytes_sent(),
        read,
        "served from the cache after a restart"
    );
    drop(restarted);
}

#[test]
fn a_file_store_with_cache_true_fills_once_then_hits() {
    let node = Node::start(
        "legacy",
        "",
        "[stores.nfs]\nkind = \"file\"\npath = \"images\"\ncache = true\n",
    );
    let mut img = node.add_image(pseudo_random(20 * MIB + 3, 105), 105);
    img.params.store = glance_link::StoreId::new("nfs").unwrap();
    let link = node.link(&img.params);
    assert_eq!(sha512(&node.get(&link, &[]).body), img.params.sha512);
    node.settle("nfs");
    assert_eq!(
        node.metric("glance_stream_backend_bytes_total{store=\"nfs\"}"),
        img.bytes.len() as u64
    );
    let r = node.get(&link, &[("Range", "bytes=-100")]);
    assert_eq!(r.body, &img.bytes[img.bytes.len() - 100..]);
    assert_eq!(
        node.metric("glance_stream_backend_bytes_total{store=\"nfs\"}"),
        img.bytes.len() as u64
    );
    assert_eq!(
        node.metric("glance_stream_cache_lookups_total{outcome=\"hit\"}"),
        1
    );
}

#[test]
fn an_origin_that_dies_mid_fill_cuts_the_body_and_a_later_request_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    // A slow origin: 8 MiB/s per connection (three at once with the
    // default readahead: about 2.7 s for the image).
    let nginx = Nginx::start_with(dir.path(), port, "limit_rate 8m;");
    let node = node_with_origin("io_uring", &nginx);
    let img = on_origin(&nginx, pseudo_random(64 * MIB, 106), 106);
    let link = node.link(&img.params);
    common::download_cut_by(node.addr, &link, &img.bytes, || drop(nginx));
    // The origin comes back on the same port: the next download completes,
    // fetching only the chunks that had not landed.
    let nginx = Nginx::start_with(dir.path(), port, "");
    let r = node.get(&link, &[]);
    assert_eq!(sha512(&r.body), img.params.sha512);
    let second = nginx.bytes_sent();
    assert!(
        second < img.bytes.len() as u64,
        "resumed: the origin sent {second} bytes the second time"
    );
}

#[test]
fn a_head_admits_nothing_and_a_missing_object_is_a_502_not_an_empty_200() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path());
    let node = node_with_origin("legacy", &nginx);
    let img = on_origin(&nginx, pseudo_random(9 * MIB, 107), 107);
    let link = node.link(&img.params);
    let head = common::request(node.addr, "HEAD", &link, &[]);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(&*img.bytes.len().to_string())
    );
    let data_dir = node.dir.path().join("cache").join("data");
    assert!(
        std::fs::read_dir(&data_dir).unwrap().next().is_none(),
        "a HEAD reserved cache space"
    );
    assert_eq!(nginx.requests(), 0);
    // The object is gone from the origin: the client hears it before any byte.
    std::fs::remove_file(nginx.root.join(img.params.image_id.to_string())).unwrap();
    let r = node.get(&link, &[]);
    assert_eq!(r.status, 502);
    // The log line reaches the test through a pipe: give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !node
        .logs()
        .contains("backend failed before any byte was sent")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the failure was not logged"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        node.logs()
            .contains("backend failed before any byte was sent")
    );
}

#[test]
fn the_scrubber_finds_a_damaged_cached_chunk_and_the_image_is_fetched_again() {
    let node = Node::start(
        "io_uring",
        "",
        "[stores.nfs]\nkind = \"file\"\npath = \"images\"\ncache = true\n",
    );
    let mut img = node.add_image(pseudo_random(9 * MIB, 108), 108);
    img.params.store = glance_link::StoreId::new("nfs").unwrap();
    let link = node.link(&img.params);
    assert_eq!(sha512(&node.get(&link, &[]).body), img.params.sha512);
    let read = node.metric("glance_stream_backend_bytes_total{store=\"nfs\"}");
    // Damage the cached copy behind the cache's back.
    node.damage_cached(&img.params.image_id, 100);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while node.metric("glance_stream_cache_scrub_failures_total") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the scrubber never found the damage"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let r = node.get(&link, &[]);
    assert_eq!(
        sha512(&r.body),
        img.params.sha512,
        "damaged bytes were served"
    );
    assert!(
        node.metric("glance_stream_backend_bytes_total{store=\"nfs\"}") > read,
        "the image was not fetched again"
    );
}
