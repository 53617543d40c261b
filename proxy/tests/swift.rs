//! The Swift store on both planes against a real OpenStack Swift (tempauth,
//! tempurl and SLO in its proxy): glance-api's store uploads (a large
//! image as a Static Large Object), glance-stream fills it with ranged GETs
//! carrying a token, TempURLs open the object directly and stop at their
//! expiry, and both planes authenticate again when Swift revokes tokens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::swift::{Swift, get_url};
use common::{Image, Node, pseudo_random};
use glance_api::store::{Store, SwiftStore};

const MIB: usize = 1 << 20;
const BACKEND: &str = "glance_stream_backend_bytes_total{store=\"swift\"}";
const TEMP_URL_KEY: &str = "temp-url-key-0123456789abcdef";

/// Held for reading by every test, and for writing by the one that revokes
/// every token: Swift refuses a token revoked in the middle of a streamed
/// segment, which would fail another test's upload.
static TOKENS: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn tokens_kept() -> std::sync::RwLockReadGuard<'static, ()> {
    TOKENS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A new container name for each test.
fn container() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "glance-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A private file holding `text` in `dir`.
fn private(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// glance-api's Swift store on `container`, authenticating with `key`.
fn store(swift: &Swift, container: &str, key: &str, segment_bytes: u64) -> Store {
    store_with(swift, container, key, segment_bytes, Some(TEMP_URL_KEY))
}

fn store_with(
    swift: &Swift,
    container: &str,
    key: &str,
    segment_bytes: u64,
    temp_url_key: Option<&str>,
) -> Store {
    let settings = glance_link::swift::SwiftSettings {
        auth_url: Some(&swift.auth_url),
        container: Some(container),
        ..Default::default()
    };
    let roots = glance_api::tls::Roots::default();
    store_at(swift, settings, key, segment_bytes, temp_url_key, &roots)
}

/// glance-api's Swift store with `settings` (user and key filled in).
fn store_at(
    swift: &Swift,
    settings: glance_link::swift::SwiftSettings<'_>,
    key: &str,
    segment_bytes: u64,
    temp_url_key: Option<&str>,
    roots: &glance_api::tls::Roots,
) -> Store {
    let dir = tempfile::tempdir().unwrap();
    private(dir.path(), "key", key);
    let account = glance_link::swift::SwiftAccount::from_settings(
        &glance_link::swift::SwiftSettings {
            user: Some(&swift.user),
            key_file: Some(std::path::Path::new("key")),
            ..settings
        },
        dir.path(),
    )
    .unwrap();
    Store::Swift(Arc::new(
        SwiftStore::new(
            account,
            temp_url_key.map(str::to_owned),
            segment_bytes,
            roots,
        )
        .unwrap(),
    ))
}

/// Uploads `bytes` as image object `object` in chunks of 1 MiB.
async fn upload(store: &Store, object: &str, bytes: &[u8]) -> Result<(), String> {
    let mut writer = store.writer(object).await.map_err(|e| e.0)?;
    for chunk in bytes.chunks(MIB) {
        writer
            .write(bytes::Bytes::copy_from_slice(chunk))
            .await
            .map_err(|e| e.0)?;
    }
    writer.commit().await.map_err(|e| e.0)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// A node with a `swift` store on `container`, authenticating with `key`.
fn node(swift: &Swift, container: &str, key: &str) -> Node {
    node_with(swift, &swift.auth_url, container, key, "")
}

/// Like [`node`], authenticating at `auth_url`, with more store keys.
fn node_with(swift: &Swift, auth_url: &str, container: &str, key: &str, extra: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let key_file = private(dir.path(), "swift-key", key);
    let node = Node::start(
        "io_uring",
        "threads = 2",
        &format!(
            "[stores.swift]\nkind = \"swift\"\nauth_url = \"{auth_url}\"\nuser = \"{}\"\n\
             key_file = \"{}\"\ncontainer = \"{container}\"\n{extra}",
            swift.user,
            key_file.display()
        ),
    );
    // The key was read at start.
    drop(dir);
    node
}

/// The link parameters of `bytes` as an image of the `swift` store.
fn image(bytes: Vec<u8>, seed: u64) -> Image {
    common::image_in("swift", bytes, seed)
}

/// The names in `container` starting with `prefix`.
fn names(swift: &Swift, container: &str, prefix: &str) -> Vec<String> {
    let a = swift.call(
        "GET",
        &format!("/{container}?format=json&prefix={prefix}"),
        &[],
    );
    if a.status == 204 || a.status == 404 {
        return Vec::new();
    }
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&a.body).unwrap();
    list.iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_300_mib_image_is_a_large_object_streamed_by_glance_stream_and_opened_by_a_temp_url() {
    let _tokens = tokens_kept();
    let swift = Swift::shared();
    let c = container();
    let store = store(
        swift,
        &c,
        &swift.key,
        glance_api::store::DEFAULT_SEGMENT_BYTES,
    );
    let img = image(pseudo_random(300 * MIB + 12_345, 801), 801);
    let id = img.params.image_id.to_string();
    let rt = runtime();
    rt.block_on(upload(&store, &id, &img.bytes)).unwrap();

    // A Static Large Object: two segments (200 MiB, then the rest) beside it
    // in the same container.
    let manifest = swift.call("GET", &format!("/{c}/{id}?multipart-manifest=get"), &[]);
    assert_eq!(manifest.status, 200);
    assert!(manifest.headers.contains_key("x-static-large-object"));
    let segments: Vec<serde_json::Value> = serde_json::from_slice(&manifest.body).unwrap();
    let sizes: Vec<u64> = segments
        .iter()
        .map(|s| s["bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [200 << 20, (100 << 20) + 12_345]);
    for s in &segments {
        let name = s["name"].as_str().unwrap();
        assert!(name.starts_with(&format!("/{c}/{id}.segments/")), "{name}");
    }

    // Through glance-stream: ranged GETs with a token, bytes checked.
    let node = node(swift, &c, &swift.key);
    let (status, len, digest) = common::download_sha512(node.addr, &node.link(&img.params));
    assert_eq!((status, len), (200, img.bytes.len() as u64));
    assert!(
        digest == img.params.sha512,
        "glance-stream served other bytes"
    );
    node.settle("swift");
    assert_eq!(node.metric(BACKEND), img.bytes.len() as u64);

    // A TempURL opens the object with no token, then stops at its expiry.
    let Store::Swift(swift_store) = &store else {
        unreachable!()
    };
    let expires = common::now() + 3;
    let url = rt
        .block_on(swift_store.temp_url(&id, expires))
        .unwrap()
        .unwrap();
    assert!(url.contains(&format!("/{c}/{id}?temp_url_sig=")), "{url}");
    let direct = get_url(&url);
    assert_eq!(direct.status, 200);
    assert!(common::sha512(&direct.body) == img.params.sha512);
    // One hex digit changed: Swift refuses it.
    let at = url.find("temp_url_sig=").unwrap() + "temp_url_sig=".len();
    let flipped = if &url[at..=at] == "0" { "1" } else { "0" };
    let tampered = format!("{}{flipped}{}", &url[..at], &url[at + 1..]);
    assert_eq!(get_url(&tampered).status, 401);
    while common::now() <= expires {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(get_url(&url).status, 401, "a TempURL outlived its expiry");

    // Deleting the image removes the manifest and every segment.
    rt.block_on(store.delete(&id)).unwrap();
    assert_eq!(swift.call("HEAD", &format!("/{c}/{id}"), &[]).status, 404);
    assert_eq!(names(swift, &c, &id), Vec::<String>::new());
}

#[test]
fn both_planes_authenticate_again_when_swift_revokes_their_tokens() {
    let _tokens = TOKENS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let swift = Swift::shared();
    let c = container();
    let store = store(
        swift,
        &c,
        &swift.key,
        glance_api::store::DEFAULT_SEGMENT_BYTES,
    );
    let node = node(swift, &c, &swift.key);
    let rt = runtime();
    let first = image(pseudo_random(3 * MIB, 802), 802);
    rt.block_on(upload(
        &store,
        &first.params.image_id.to_string(),
        &first.bytes,
    ))
    .unwrap();
    let (status, _, digest) = common::download_sha512(node.addr, &node.link(&first.params));
    assert_eq!(status, 200);
    assert!(digest == first.params.sha512);

    // Every token either plane holds is now unknown to Swift.
    swift.revoke_tokens();
    let second = image(pseudo_random(5 * MIB + 3, 803), 803);
    rt.block_on(upload(
        &store,
        &second.params.image_id.to_string(),
        &second.bytes,
    ))
    .unwrap();
    let (status, len, digest) = common::download_sha512(node.addr, &node.link(&second.params));
    assert_eq!((status, len), (200, second.bytes.len() as u64));
    assert!(digest == second.params.sha512);
    assert!(
        node.logs()
            .contains("Swift refused the token: authenticating again"),
        "{}",
        node.logs()
    );
    // An image stored in one PUT is deleted as such.
    for img in [&first, &second] {
        let id = img.params.image_id.to_string();
        assert_eq!(swift.call("HEAD", &format!("/{c}/{id}"), &[]).status, 200);
        rt.block_on(store.delete(&id)).unwrap();
        assert_eq!(swift.call("HEAD", &format!("/{c}/{id}"), &[]).status, 404);
    }
}

#[test]
fn wrong_credentials_are_named_and_nothing_is_served() {
    let _tokens = tokens_kept();
    let swift = Swift::shared();
    let c = container();
    let rt = runtime();
    let bad = store(
        swift,
        &c,
        "not-the-key",
        glance_api::store::DEFAULT_SEGMENT_BYTES,
    );
    let err = rt.block_on(upload(&bad, "x", b"bytes")).unwrap_err();
    assert!(err.contains("refused the credentials (401)"), "{err}");

    let node = node(swift, &c, "not-the-key");
    let img = image(pseudo_random(MIB, 804), 804);
    let r = node.get(&node.link(&img.params), &[]);
    assert_eq!(r.status, 502);
    assert_eq!(node.metric(BACKEND), 0);
    // The fill logs its failure as it ends, maybe after the answer went out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.logs().contains("refused the credentials (401)") {
        assert!(Instant::now() < deadline, "{}", node.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_failed_or_abandoned_upload_leaves_no_segment_behind() {
    let _tokens = tokens_kept();
    let swift = Swift::shared();
    let c = container();
    let store = store(swift, &c, &swift.key, 1 << 20);
    let rt = runtime();
    let bytes = pseudo_random(20 * MIB, 805);

    // Aborted after 3.5 segments.
    rt.block_on(async {
        let mut w = store.writer("aborted").await.unwrap();
        for chunk in bytes[..(16 << 20) + (7 << 19)].chunks(MIB / 2) {
            w.write(bytes::Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        w.abort().await;
    });
    assert_eq!(names(swift, &c, "aborted"), Vec::<String>::new());

    // Dropped mid-way (the client went away): cleaned up in the background.
    rt.block_on(async {
        let mut w = store.writer("dropped").await.unwrap();
        for chunk in bytes.chunks(MIB).take(19) {
            w.write(bytes::Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        drop(w);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !names(swift, &c, "dropped").is_empty() {
            assert!(
                Instant::now() < deadline,
                "segments of a dropped upload stayed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    // Completed with 1 MiB segments: 20 of them, the image whole.
    rt.block_on(upload(&store, "done", &bytes)).unwrap();
    let got = swift.call("GET", &format!("/{c}/done"), &[]);
    assert_eq!(got.status, 200);
    assert!(got.body == bytes);
    assert_eq!(names(swift, &c, "done.segments/").len(), 20);
}

#[test]
fn the_container_takes_the_temp_url_key_and_keeps_the_one_it_replaces() {
    let _tokens = tokens_kept();
    let swift = Swift::shared();
    let c = container();
    let rt = runtime();
    let mib = glance_api::store::DEFAULT_SEGMENT_BYTES;
    let first = store_with(swift, &c, &swift.key, mib, Some("first-key-0123456789"));
    rt.block_on(upload(&first, "a", b"small image")).unwrap();
    // An image of no bytes is an object of no bytes.
    rt.block_on(upload(&first, "empty", b"")).unwrap();
    let empty = swift.call("GET", &format!("/{c}/empty"), &[]);
    assert_eq!((empty.status, empty.body.len()), (200, 0));
    let head = swift.call("HEAD", &format!("/{c}"), &[]);
    assert_eq!(
        head.headers["x-container-meta-temp-url-key"],
        "first-key-0123456789"
    );
    let second = store_with(swift, &c, &swift.key, mib, Some("second-key-0123456789"));
    let Store::Swift(s) = &second else {
        unreachable!()
    };
    // The first direct link sets the container's key (no upload needed).
    assert!(!s.temp_url_key_in_place());
    let url = rt
        .block_on(s.temp_url("a", common::now() + 60))
        .unwrap()
        .unwrap();
    assert!(s.temp_url_key_in_place());
    assert_eq!(get_url(&url).status, 200);
    let head = swift.call("HEAD", &format!("/{c}"), &[]);
    assert_eq!(
        head.headers["x-container-meta-temp-url-key"],
        "second-key-0123456789"
    );
    assert_eq!(
        head.headers["x-container-meta-temp-url-key-2"],
        "first-key-0123456789"
    );
    // Links signed with either key open the object until they expire.
    let Store::Swift(f) = &first else {
        unreachable!()
    };
    let expires = common::now() + 60;
    for store in [f, s] {
        let url = rt.block_on(store.temp_url("a", expires)).unwrap().unwrap();
        let got = get_url(&url);
        assert_eq!(
            (got.status, got.body.as_slice()),
            (200, &b"small image"[..])
        );
    }
    // Without a TempURL key there is no direct link.
    let none = store_with(swift, &c, &swift.key, mib, None);
    let Store::Swift(none) = &none else {
        unreachable!()
    };
    assert_eq!(rt.block_on(none.temp_url("a", expires)).unwrap(), None);
}

#[test]
fn swift_over_https_is_verified_against_the_ca_file_on_both_planes() {
    let _tokens = tokens_kept();
    let swift = Swift::shared();
    let c = container();
    // Swift behind a real TLS front (nginx), as a cloud's Swift is.
    let tls_front = common::nginx::Nginx::tls_front(swift.endpoint.trim_start_matches("http://"));
    let (front, pki) = (&tls_front.nginx, &tls_front.pki);
    let base = format!("https://127.0.0.1:{}", front.port);
    let auth_url = format!("{base}/auth/v1.0");
    // tempauth names an http:// storage URL (it sees plain HTTP behind the
    // front): `storage_url` gives the https one.
    let storage_url = format!("{base}/v1/AUTH_test");
    let settings = glance_link::swift::SwiftSettings {
        auth_url: Some(&auth_url),
        storage_url: Some(&storage_url),
        container: Some(&c),
        ..Default::default()
    };
    let rt = runtime();
    let img = image(pseudo_random(20 * MIB + 5, 806), 806);
    let id = img.params.image_id.to_string();
    let mib = glance_api::store::DEFAULT_SEGMENT_BYTES;
    let untrusted = store_at(swift, settings, &swift.key, mib, None, &Default::default());
    let err = rt
        .block_on(upload(&untrusted, &id, &img.bytes))
        .unwrap_err();
    assert!(err.contains("Swift authentication"), "{err}");
    assert_eq!(
        front.requests(),
        0,
        "a request went to an untrusted endpoint"
    );
    let roots = glance_api::tls::Roots::load(&pki.ca_file).unwrap();
    let trusted = store_at(swift, settings, &swift.key, mib, None, &roots);
    rt.block_on(upload(&trusted, &id, &img.bytes)).unwrap();

    let extra = format!(
        "storage_url = \"{storage_url}\"\nca_file = \"{}\"\n",
        pki.ca_file.display()
    );
    let node = node_with(swift, &auth_url, &c, &swift.key, &extra);
    let before = front.requests();
    let (status, len, digest) = common::download_sha512(node.addr, &node.link(&img.params));
    assert_eq!((status, len), (200, img.bytes.len() as u64));
    assert!(digest == img.params.sha512);
    assert!(
        front.requests() >= before + 3,
        "auth and the chunks came through the front"
    );

    // Without the CA: the node refuses the front's certificate, sends nothing.
    let strict = node_with(
        swift,
        &auth_url,
        &c,
        &swift.key,
        &format!("storage_url = \"{storage_url}\"\n"),
    );
    let before = front.requests();
    let r = strict.get(&strict.link(&img.params), &[]);
    assert_eq!(r.status, 502);
    assert_eq!(
        front.requests(),
        before,
        "a request went to an untrusted endpoint"
    );
    assert!(
        strict.logs().contains("Swift authentication failed"),
        "{}",
        strict.logs()
    );
}
