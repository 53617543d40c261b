//! Misses served from a real S3 server: OpenStack Swift with its s3api
//! middleware, which checks every SigV4 signature. Object keys carry a space
//! and non-ASCII characters (the store's key prefix).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::sync::atomic::{AtomicU32, Ordering};

use common::swift::Swift;
use common::{Image, Node, pseudo_random};

const MIB: usize = 1 << 20;
const PREFIX: &str = "glance images/\u{e9}t\u{e9}/";
const BACKEND: &str = "glance_stream_backend_bytes_total{store=\"s3\"}";

/// A new bucket for each test.
fn bucket(swift: &Swift) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "images-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    swift.create_bucket(&name);
    name
}

/// A node with an `s3` store on `bucket`, whose secret file holds `secret`.
fn node(swift: &Swift, bucket: &str, secret: &str, cache: &str) -> (Node, tempfile::TempDir) {
    node_at(&swift.endpoint, "", swift, bucket, secret, cache)
}

/// Like [`node`], reaching S3 at `endpoint` (with extra store keys).
fn node_at(
    endpoint: &str,
    store_extra: &str,
    swift: &Swift,
    bucket: &str,
    secret: &str,
    cache: &str,
) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("s3-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let node = Node::start_with_cache(
        "io_uring",
        "threads = 2",
        cache,
        &format!(
            "[stores.s3]\nkind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{bucket}\"\nregion = \"{}\"\n\
             access_key_id = \"{}\"\nsecret_access_key_file = \"{}\"\nprefix = \"{PREFIX}\"\n{store_extra}",
            endpoint,
            swift.region,
            swift.access_key_id,
            secret_file.display()
        ),
    );
    (node, dir)
}

/// glance-api's S3 store on `bucket` at `endpoint`, trusting `roots`.
fn api_store(
    swift: &Swift,
    endpoint: &str,
    bucket: &str,
    roots: &glance_api::tls::Roots,
) -> glance_api::store::Store {
    let bucket = glance_link::s3::S3Bucket::new(
        endpoint,
        bucket,
        &swift.region,
        &swift.access_key_id,
        &swift.secret,
        PREFIX,
    )
    .unwrap();
    glance_api::store::Store::S3(std::sync::Arc::new(
        glance_api::store::S3Store::new(bucket, roots).unwrap(),
    ))
}

/// Puts a new image's bytes in the bucket (under the prefix) and returns it.
fn in_bucket(swift: &Swift, bucket: &str, node: &Node, bytes: Vec<u8>, seed: u64) -> Image {
    let mut img = node.add_image(bytes, seed);
    swift.put(
        bucket,
        &format!("{PREFIX}{}", img.params.image_id),
        &img.bytes,
    );
    img.params.store = glance_link::StoreId::new("s3").unwrap();
    img
}

#[test]
fn cold_downloads_by_32_clients_read_the_image_once_and_warm_ones_read_nothing() {
    let swift = Swift::shared();
    let b = bucket(swift);
    let (node, _dir) = node(swift, &b, &swift.secret, "");
    let img = in_bucket(swift, &b, &node, pseudo_random(256 * MIB + 4321, 401), 401);
    let link = node.link(&img.params);
    let results: Vec<(u16, u64, [u8; 64])> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..32)
            .map(|_| s.spawn(|| common::download_sha512(node.addr, &link)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, len, hash) in &results {
        assert_eq!((*status, *len), (200, img.bytes.len() as u64));
        assert!(*hash == img.params.sha512, "a client got other bytes");
    }
    node.settle("s3");
    let read = node.metric(BACKEND);
    assert_eq!(read, img.bytes.len() as u64, "read from S3: {read} bytes");
    let (_, _, hash) = common::download_sha512(node.addr, &link);
    assert!(hash == img.params.sha512);
    assert_eq!(node.metric(BACKEND), read, "a warm download read S3");
}

#[test]
fn a_cold_range_reads_only_its_chunk_from_s3() {
    let swift = Swift::shared();
    let b = bucket(swift);
    let (node, _dir) = node(swift, &b, &swift.secret, "readahead_mib = 0");
    let img = in_bucket(swift, &b, &node, pseudo_random(40 * MIB, 402), 402);
    let link = node.link(&img.params);
    let (a, z) = (17 * MIB + 3, 17 * MIB + 5000);
    let r = node.get(&link, &[("Range", &format!("bytes={a}-{z}"))]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &img.bytes[a..=z]);
    node.settle("s3");
    assert_eq!(node.metric(BACKEND), 8 * MIB as u64, "one 8 MiB chunk");
}

#[test]
fn bytes_that_do_not_match_the_link_are_never_served_from_the_cache() {
    let swift = Swift::shared();
    let b = bucket(swift);
    let (node, _dir) = node(swift, &b, &swift.secret, "");
    let img = in_bucket(swift, &b, &node, pseudo_random(12 * MIB, 403), 403);
    let mut tampered = img.bytes.clone();
    tampered[9 * MIB] ^= 0x0f;
    swift.put(&b, &format!("{PREFIX}{}", img.params.image_id), &tampered);
    let link = node.link(&img.params);
    let (status, declared, body) = common::download_partial(node.addr, &link);
    assert_eq!((status, declared), (200, img.bytes.len() as u64));
    assert!(
        body.len() < img.bytes.len(),
        "a complete-looking wrong image"
    );
    assert!(body[..] == tampered[..body.len()]);
    node.settle("s3");
    assert_eq!(node.metric("glance_stream_cache_invalidations_total"), 1);
    let before = node.metric(BACKEND);
    let _ = common::download_partial(node.addr, &link);
    node.settle("s3");
    assert!(
        node.metric(BACKEND) > before,
        "the second request must read S3 again"
    );
}

#[test]
fn a_wrong_secret_is_a_clean_502_that_shows_no_secret() {
    let swift = Swift::shared();
    let b = bucket(swift);
    let wrong = "wrong-secret-value-for-the-test";
    let (node, _dir) = node(swift, &b, wrong, "");
    let img = in_bucket(swift, &b, &node, pseudo_random(MIB, 404), 404);
    let r = node.get(&node.link(&img.params), &[]);
    assert_eq!(r.status, 502);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        !body.contains(wrong) && !body.contains(&swift.secret),
        "{body}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !node
        .logs()
        .contains("backend failed before any byte was sent")
    {
        assert!(std::time::Instant::now() < deadline, "not logged");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let logs = node.logs();
    assert!(logs.contains("403"), "the log names S3's answer: {logs}");
    assert!(!logs.contains(wrong), "the secret reached the log");
    assert_eq!(node.metric(BACKEND), 0);
}

#[test]
fn s3_lost_mid_fill_cuts_the_body_and_a_later_request_resumes() {
    let swift = Swift::shared();
    let b = bucket(swift);
    let addr: std::net::SocketAddr = swift
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    // S3 answers at 8 MiB/s per connection (three at once with the default
    // readahead: about 2.7 s for the image), through a link the test cuts.
    let mut path = common::Forwarder::start(addr, 8 << 20);
    let endpoint = format!("http://127.0.0.1:{}", path.port);
    let (node, _dir) = node_at(&endpoint, "", swift, &b, &swift.secret, "");
    let img = in_bucket(swift, &b, &node, pseudo_random(64 * MIB, 405), 405);
    let link = node.link(&img.params);
    common::download_cut_by(node.addr, &link, &img.bytes, || path.cut());
    node.settle("s3");
    let before = node.metric(BACKEND);
    assert!(before > 0 && before < img.bytes.len() as u64, "{before}");
    // S3 is back: the next download completes from the chunks that landed.
    path.resume();
    let (status, len, hash) = common::download_sha512(node.addr, &link);
    assert_eq!((status, len), (200, img.bytes.len() as u64));
    assert!(hash == img.params.sha512);
    node.settle("s3");
    let read = node.metric(BACKEND);
    assert!(
        read < before + img.bytes.len() as u64,
        "resumed: read {} bytes the second time",
        read - before
    );
}

#[test]
fn s3_over_https_is_verified_against_the_stores_ca_file() {
    let swift = Swift::shared();
    let b = bucket(swift);
    // Swift's S3 API behind a real TLS front (nginx), as a cloud's S3
    // endpoint is: the Host header (which SigV4 signs) passes through.
    let tls_front = common::nginx::Nginx::tls_front(swift.endpoint.trim_start_matches("http://"));
    let (front, pki) = (&tls_front.nginx, &tls_front.pki);
    let endpoint = format!("https://127.0.0.1:{}", front.port);
    let ca = format!("ca_file = \"{}\"\n", pki.ca_file.display());
    let (node, _dir) = node_at(&endpoint, &ca, swift, &b, &swift.secret, "");
    // glance-api uploads through the same TLS front, trusting the CA; the
    // node reads the object back over TLS.
    let mut img = node.add_image(pseudo_random(20 * MIB + 77, 501), 501);
    img.params.store = glance_link::StoreId::new("s3").unwrap();
    let upload = |roots: &glance_api::tls::Roots| {
        let store = api_store(swift, &endpoint, &b, roots);
        let id = img.params.image_id.to_string();
        let bytes = img.bytes.clone();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                let mut writer = store.writer(&id).await?;
                for chunk in bytes.chunks(4 * MIB) {
                    writer.write(bytes::Bytes::copy_from_slice(chunk)).await?;
                }
                writer.commit().await
            })
    };
    let untrusted = upload(&glance_api::tls::Roots::default());
    assert!(
        untrusted.is_err(),
        "an upload went to an untrusted endpoint"
    );
    assert_eq!(front.requests(), 0);
    upload(&glance_api::tls::Roots::load(&pki.ca_file).unwrap()).unwrap();
    let (status, len, digest) = common::download_sha512(node.addr, &node.link(&img.params));
    assert_eq!((status, len), (200, img.bytes.len() as u64));
    assert_eq!(digest, common::sha512(&img.bytes));
    assert_eq!(node.metric(BACKEND), img.bytes.len() as u64);
    assert!(
        front.requests() >= 3,
        "the chunks came through the TLS front"
    );
    // Without the CA the endpoint's certificate is refused: a 502, nothing read.
    let (strict, _dir) = node_at(&endpoint, "", swift, &b, &swift.secret, "");
    let requests = front.requests();
    let r = strict.get(&strict.link(&img.params), &[]);
    assert_eq!(r.status, 502);
    assert_eq!(strict.metric(BACKEND), 0);
    assert_eq!(
        front.requests(),
        requests,
        "a request went to an untrusted endpoint"
    );
}

#[test]
fn an_image_of_no_bytes_is_stored_as_an_empty_object() {
    let swift = Swift::shared();
    let b = bucket(swift);
    let store = api_store(swift, &swift.endpoint, &b, &Default::default());
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async {
            let writer = store.writer("empty").await?;
            writer.commit().await
        })
        .unwrap();
}
