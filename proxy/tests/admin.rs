//! The stream node's admin API against a real origin (Debian's nginx): a
//! bearer token guards it; pre-warm fills the cache from the origin so the
//! download after it reads nothing more; the inventory lists what is cached;
//! eviction and prune free it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use common::nginx::{Nginx, on_origin};
use common::{Node, pseudo_random, request, request_with_body, sha512};

const MIB: usize = 1 << 20;
const TOKEN: &str = "admin-token-0123456789abcdef";

/// A node with the admin API on and an HTTP store `web` on `nginx`.
fn node(dir: &std::path::Path, nginx: &Nginx) -> Node {
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    Node::start(
        "io_uring",
        "threads = 2",
        &format!(
            "[stores.web]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}/\"\n[admin]\ntoken_file = \"{}\"\n",
            nginx.port,
            token_file.display()
        ),
    )
}

fn inventory(node: &Node) -> serde_json::Value {
    let r = request(
        node.addr,
        "GET",
        "/admin/cache",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    serde_json::from_slice(&r.body).unwrap()
}

fn admin(node: &Node, method: &str, target: &str, body: &[u8]) -> common::Response {
    let auth = format!("Bearer {TOKEN}");
    request_with_body(node.addr, method, target, &[("Authorization", &auth)], body)
}

#[test]
fn only_the_token_opens_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path());
    let node = node(dir.path(), &nginx);
    for auth in [None, Some("Bearer wrong-token-0123456789"), Some(TOKEN)] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let r = request(node.addr, "GET", "/admin/cache", &headers);
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    assert_eq!(inventory(&node)["images"], serde_json::json!([]));
    // A body sent without the token is refused before it is read.
    let r = request_with_body(node.addr, "PUT", "/admin/cache/x", &[], b"v=1&sig=x");
    assert_eq!(r.status, 401);
    // A HEAD gets a head only.
    let auth = format!("Bearer {TOKEN}");
    let r = request(
        node.addr,
        "HEAD",
        "/admin/cache",
        &[("Authorization", &auth)],
    );
    assert_eq!(r.status, 405);
    assert!(r.body.is_empty());
    // A node without [admin] has no admin API at all.
    let plain = Node::start("legacy", "", "");
    let r = request(
        plain.addr,
        "GET",
        "/admin/cache",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(r.status, 404);
}

#[test]
fn prewarm_fills_from_the_origin_and_the_download_after_reads_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path());
    let node = node(dir.path(), &nginx);
    let img = on_origin(&nginx, pseudo_random(40 * MIB + 77, 301), 301);
    let link = node.link(&img.params);
    let (path, query) = link.split_once('?').unwrap();
    let id = img.params.image_id.to_string();
    assert_eq!(path, format!("/v1/images/{id}"));

    // A link for another image, or a tampered one, warms nothing.
    let other = uuid::Uuid::from_u128(7).to_string();
    let r = admin(
        &node,
        "PUT",
        &format!("/admin/cache/{other}"),
        query.as_bytes(),
    );
    assert_eq!(r.status, 403);
    let tampered = query.replace("size=", "size=1");
    let r = admin(
        &node,
        "PUT",
        &format!("/admin/cache/{id}"),
        tampered.as_bytes(),
    );
    assert_eq!(r.status, 403);
    assert_eq!(nginx.requests(), 0);

    let r = admin(
        &node,
        "PUT",
        &format!("/admin/cache/{id}"),
        query.as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let deadline = Instant::now() + Duration::from_secs(60);
    let entry = loop {
        let inv = inventory(&node);
        let entry = inv["images"][0].clone();
        if entry["state"] == "complete" {
            break entry;
        }
        assert!(Instant::now() < deadline, "pre-warm never completed: {inv}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(entry["id"], id.as_str());
    assert_eq!(entry["size"], img.bytes.len());
    assert_eq!(entry["bytes_present"], img.bytes.len());
    let origin = nginx.bytes_sent();
    assert_eq!(
        origin,
        img.bytes.len() as u64,
        "pre-warm read the image once"
    );

    let r = node.get(&link, &[]);
    assert_eq!(sha512(&r.body), img.params.sha512);
    assert_eq!(nginx.bytes_sent(), origin, "the download read the origin");
    assert_eq!(
        inventory(&node)["images"][0]["hits"],
        2,
        "looked up by the pre-warm and the download"
    );

    // Evict: gone from the inventory, and the next download reads the origin.
    let r = admin(&node, "DELETE", &format!("/admin/cache/{id}"), b"");
    assert_eq!(r.status, 204);
    assert_eq!(inventory(&node)["images"], serde_json::json!([]));
    let r = admin(&node, "DELETE", &format!("/admin/cache/{id}"), b"");
    assert_eq!(r.status, 404);
    let r = node.get(&link, &[]);
    assert_eq!(sha512(&r.body), img.params.sha512);
    node.settle("web");
    assert_eq!(nginx.bytes_sent(), 2 * origin);

    // Prune to zero: everything nobody reads goes.
    let r = admin(&node, "POST", "/admin/cache/prune", b"");
    assert_eq!(r.status, 200);
    let pruned: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(pruned["evicted"], 1);
    assert_eq!(pruned["bytes_used"], 0);
    assert_eq!(inventory(&node)["bytes_used"], 0);
    let r = admin(&node, "POST", "/admin/cache/prune?target_bytes=x", b"");
    assert_eq!(r.status, 400);
    let r = admin(&node, "GET", "/admin/cache/prune", b"");
    assert_eq!(r.status, 405);
}

fn keyring_toml(primary: &str, keys: &[(&str, u64)]) -> String {
    let mut text = format!("primary = \"{primary}\"\n[keys]\n");
    for (id, seed) in keys {
        text.push_str(&format!("{id} = \"{}\"\n", common::secret_b64(*seed)));
    }
    text
}

#[test]
fn a_pushed_keyring_takes_effect_at_once_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path());
    let node = node(dir.path(), &nginx);
    let img = node.add_image(pseudo_random(100_000, 310), 310);
    let old_link = node.link(&img.params);
    assert_eq!(node.get(&old_link, &[]).status, 200);
    let r = admin(&node, "GET", "/admin/keyring", b"");
    let shown: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(shown, serde_json::json!({"primary": "k1", "keys": ["k1"]}));
    assert!(!String::from_utf8_lossy(&r.body).contains(&common::secret_b64(1)));

    // Rotation: k2 signs, k1 still verifies.
    let rotated = keyring_toml("k2", &[("k1", 1), ("k2", 2)]);
    let r = admin(&node, "PUT", "/admin/keyring", rotated.as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let shown: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        shown,
        serde_json::json!({"primary": "k2", "keys": ["k1", "k2"]})
    );
    let keyring_file = node.dir.path().join("keyring.toml");
    assert_eq!(std::fs::read_to_string(&keyring_file).unwrap(), rotated);
    let mode = std::fs::metadata(&keyring_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the kept keyring is private");
    let new_link = node.link(&img.params);
    assert!(new_link.contains("kid=k2"), "{new_link}");
    assert_eq!(node.get(&new_link, &[]).status, 200);
    assert_eq!(
        node.get(&old_link, &[]).status,
        200,
        "k1 links still verify"
    );

    // A broken keyring changes nothing.
    for bad in [
        "primary = \"k9\"\n[keys]\n",
        "not toml",
        "primary = \"k2\"\n[keys]\nk2 = \"short\"\n",
    ] {
        let r = admin(&node, "PUT", "/admin/keyring", bad.as_bytes());
        assert_eq!(r.status, 400, "{bad}");
    }
    assert_eq!(std::fs::read_to_string(&keyring_file).unwrap(), rotated);
    assert_eq!(node.get(&new_link, &[]).status, 200);

    // k1 dropped: its links are refused.
    let r = admin(
        &node,
        "PUT",
        "/admin/keyring",
        keyring_toml("k2", &[("k2", 2)]).as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(node.get(&old_link, &[]).status, 403);
    assert_eq!(node.get(&new_link, &[]).status, 200);
    // Without the token, no keyring is shown or taken.
    let r = request_with_body(node.addr, "PUT", "/admin/keyring", &[], rotated.as_bytes());
    assert_eq!(r.status, 401);
}
