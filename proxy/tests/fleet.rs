//! A fleet: three glance-stream processes behind one glance-api (run in this
//! process, on a port of its own), with images in a real S3 server (Swift's
//! s3api). Placement, drain and failure, pre-warm through Glance's cache
//! API, key rotation during a download, and direct S3 links.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::os::unix::fs::PermissionsExt as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::swift::Swift;
use common::{Node, Response, pseudo_random, request_with_body, sha512};
use glance_api::config::{
    Config, RawAuth, RawConfig, RawFleet, RawNode, RawNodeTable, RawStore, StaticToken,
};
use serde_json::{Value, json};

const MIB: usize = 1 << 20;
const ADMIN: &str = "fleet-admin-token-0123456789";
const MEMBER: &str = "fleet-member-token-0123456789";
const SERVICE: &str = "fleet-service-token-0123456789";
const NODE_TOKEN: &str = "stream-admin-token-0123456789";
const PREFIX: &str = "fleet/";
const BACKEND: &str = "glance_stream_backend_bytes_total{store=\"s3\"}";

/// Three nodes, glance-api, and the bucket they share, reached through a
/// tap that keeps every byte sent to S3.
struct Fleet {
    nodes: Vec<Node>,
    s3_tap: common::Forwarder,
    s3_endpoint: String,
    api: SocketAddr,
    dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn private(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn token(token: &str, user: &str, project: &str, roles: &[&str]) -> StaticToken {
    StaticToken {
        token: token.into(),
        user_id: user.into(),
        project_id: project.into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    }
}

impl Fleet {
    /// Starts the nodes and glance-api: links live `link_ttl_secs`, a
    /// replaced key `key_grace_secs` longer.
    fn start(link_ttl_secs: u64, key_grace_secs: u64) -> Fleet {
        let swift = Swift::shared();
        static N: AtomicU32 = AtomicU32::new(0);
        let bucket = format!(
            "fleet-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        swift.create_bucket(&bucket);
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s3-secret");
        private(&secret, &format!("{}\n", swift.secret));
        let node_token = dir.path().join("node-token");
        private(&node_token, NODE_TOKEN);
        let s3 = url::Url::parse(&swift.endpoint).unwrap();
        let s3_tap = common::Forwarder::start(
            (s3.host_str().unwrap(), s3.port().unwrap_or(80))
                .to_socket_addrs()
                .unwrap()
                .next()
                .unwrap(),
            u64::MAX,
        );
        let s3_endpoint = format!("http://127.0.0.1:{}", s3_tap.port);
        let s3_keys = format!(
            "endpoint = \"{}\"\nbucket = \"{bucket}\"\nregion = \"{}\"\naccess_key_id = \"{}\"\n\
             secret_access_key_file = \"{}\"\nprefix = \"{PREFIX}\"\n",
            s3_endpoint,
            swift.region,
            swift.access_key_id,
            secret.display()
        );
        let nodes: Vec<Node> = (0..3)
            .map(|_| {
                Node::start(
                    "io_uring",
                    "threads = 1",
                    &format!(
                        "[stores.s3]\nkind = \"s3\"\n{s3_keys}[admin]\ntoken_file = \"{}\"\n",
                        node_token.display()
                    ),
                )
            })
            .collect();
        // glance-api starts from the same keyring the nodes were given.
        std::fs::copy(
            nodes[0].dir.path().join("keyring.toml"),
            dir.path().join("keyring.toml"),
        )
        .unwrap();
        let raw = RawConfig {
            listen: "127.0.0.1:0".into(),
            public_url: "http://127.0.0.1:9292".into(),
            keyring: "keyring.toml".into(),
            link_ttl_secs,
            stream_nodes: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    RawNode::Table(RawNodeTable {
                        name: format!("node-{i}"),
                        public_url: format!("http://{}", n.addr),
                        admin_url: None,
                        weight: 100,
                    })
                })
                .collect(),
            image_size_cap: 1 << 30,
            metadata: "glance.redb".into(),
            store: RawStore {
                id: "s3".into(),
                kind: "s3".into(),
                endpoint: Some(s3_endpoint.clone()),
                bucket: Some(bucket),
                region: Some(swift.region.clone()),
                access_key_id: Some(swift.access_key_id.clone()),
                secret_access_key_file: Some(secret),
                prefix: Some(PREFIX.into()),
                ..RawStore::default()
            },
            stores: Vec::new(),
            auth: RawAuth {
                mode: "static".into(),
                tokens: vec![
                    token(ADMIN, "root", "ops", &["admin", "member", "reader"]),
                    token(MEMBER, "alice", "proj-a", &["member", "reader"]),
                    token(SERVICE, "nova", "service", &["service"]),
                ],
                keystone: None,
            },
            fleet: Some(RawFleet {
                admin_token_file: Some(node_token),
                health_interval_secs: 1,
                node_timeout_secs: 2,
                unhealthy_after: 2,
                replicas: 1,
                key_grace_secs,
            }),
            tls: None,
            import: None,
        };
        let config = Config::check(raw, dir.path(), "fleet test").unwrap();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = glance_api::server::bind(&config).await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let state = glance_api::server::state(config).unwrap();
                glance_api::server::serve(listener, state, async {
                    let _ = stop.await;
                })
                .await
                .unwrap();
            });
        });
        let api = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let fleet = Fleet {
            nodes,
            s3_tap,
            s3_endpoint,
            api,
            dir,
            shutdown: Some(shutdown),
            thread: Some(thread),
        };
        // The first health round pushes the keyring to every node.
        fleet.wait_for("every node healthy with the keyring", |f| {
            f.node_views()
                .values()
                .all(|n| n["health"] == "up" && n["keyring"] == "current")
        });
        fleet
    }

    fn call(&self, method: &str, target: &str, tok: &str, body: &[u8]) -> Response {
        request_with_body(
            self.api,
            method,
            target,
            &[
                ("X-Auth-Token", tok),
                ("Accept", "application/json"),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    }

    fn json(&self, method: &str, target: &str, tok: &str, body: &[u8]) -> Value {
        let r = self.call(method, target, tok, body);
        assert!(
            (200..300).contains(&r.status),
            "{method} {target}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        serde_json::from_slice(&r.body).unwrap()
    }

    /// The nodes as `GET /admin/nodes` shows them, by name.
    fn node_views(&self) -> BTreeMap<String, Value> {
        self.json("GET", "/admin/nodes", ADMIN, b"")["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["name"].as_str().unwrap().to_owned(), n.clone()))
            .collect()
    }

    fn wait_for(&self, what: &str, done: impl Fn(&Fleet) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(self) {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates an image and uploads `bytes` through glance-api (to S3).
    fn upload(&self, bytes: &[u8]) -> String {
        let img = self.json(
            "POST",
            "/v2/images",
            MEMBER,
            br#"{"name":"f","disk_format":"raw","container_format":"bare","visibility":"community"}"#,
        );
        let id = img["id"].as_str().unwrap().to_owned();
        let r = request_with_body(
            self.api,
            "PUT",
            &format!("/v2/images/{id}/file"),
            &[
                ("X-Auth-Token", MEMBER),
                ("Content-Type", "application/octet-stream"),
            ],
            bytes,
        );
        assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
        id
    }

    /// The redirect of a download: the node's index and the link's target.
    fn redirect(&self, id: &str) -> (usize, String) {
        let r = self.call("GET", &format!("/v2/images/{id}/file"), MEMBER, b"");
        assert_eq!(r.status, 307, "{}", String::from_utf8_lossy(&r.body));
        self.split(r.header("location").unwrap())
    }

    /// A stream link URL as the index of its node and its target.
    fn split(&self, url: &str) -> (usize, String) {
        let rest = url.strip_prefix("http://").unwrap();
        let (host, target) = rest.split_at(rest.find('/').unwrap());
        let addr: SocketAddr = host.parse().unwrap();
        let i = self.nodes.iter().position(|n| n.addr == addr).unwrap();
        (i, target.to_owned())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// GET of an absolute URL (a presigned S3 link) with its own `Host`.
fn fetch(url: &str) -> (u16, Vec<u8>) {
    let u = url::Url::parse(url).unwrap();
    let host = u.host_str().unwrap();
    let port = u.port().unwrap_or(80);
    let mut s = TcpStream::connect((host, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let target = format!("{}?{}", u.path(), u.query().unwrap_or(""));
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let (r, _) = common::parse_response(&raw, false);
    (r.status, r.body)
}

#[test]
fn placement_is_stable_and_a_drained_or_dead_node_moves_only_its_images() {
    let mut fleet = Fleet::start(300, 60);
    let ids: Vec<String> = (0..24)
        .map(|i| fleet.upload(&pseudo_random(4096, i)))
        .collect();
    let placed: Vec<usize> = ids.iter().map(|id| fleet.redirect(id).0).collect();
    for (id, node) in ids.iter().zip(&placed) {
        assert_eq!(fleet.redirect(id).0, *node, "an image changed node");
    }
    for i in 0..3 {
        assert!(placed.contains(&i), "node {i} got none of 24 images");
    }
    // Drain node 0: its images move, no other image does.
    fleet.json("POST", "/admin/nodes/node-0/drain", ADMIN, b"");
    for (id, was) in ids.iter().zip(&placed) {
        let now = fleet.redirect(id).0;
        if *was == 0 {
            assert_ne!(now, 0, "a drained node got a download");
        } else {
            assert_eq!(now, *was, "an image moved off a node that stayed");
        }
    }
    fleet.json("POST", "/admin/nodes/node-0/undrain", ADMIN, b"");
    for (id, was) in ids.iter().zip(&placed) {
        assert_eq!(fleet.redirect(id).0, *was);
    }
    // Node 1 dies: health checks take it out, and only its images move.
    let dead = fleet.nodes.remove(1);
    let dead_addr = dead.addr;
    drop(dead);
    fleet.wait_for("node-1 unhealthy", |f| {
        f.node_views()["node-1"]["health"] == "down"
    });
    assert_eq!(fleet.node_views()["node-1"]["eligible"], false);
    for (id, was) in ids.iter().zip(&placed) {
        let r = fleet.call("GET", &format!("/v2/images/{id}/file"), MEMBER, b"");
        let location = r.header("location").unwrap().to_owned();
        if *was == 1 {
            assert!(!location.contains(&dead_addr.to_string()));
        } else {
            let node = if *was == 0 { 0 } else { 1 };
            assert!(
                location.contains(&fleet.nodes[node].addr.to_string()),
                "an image moved off a healthy node"
            );
        }
    }
    // The cache listing names the node it could not reach.
    let cache = fleet.call("GET", "/v2/cache", ADMIN, b"");
    assert_eq!(cache.status, 200);
    assert_eq!(
        cache.header("x-glance-stream-unreachable-nodes"),
        Some("node-1")
    );
    // Prometheus sees it too.
    let metrics = String::from_utf8(fleet.call("GET", "/metrics", "", b"").body).unwrap();
    assert!(
        metrics.contains("glance_api_stream_node_up{node=\"node-1\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("glance_api_stream_node_up{node=\"node-0\"} 1"));
}

#[test]
fn prewarm_through_the_cache_api_then_the_download_reads_nothing_more() {
    let fleet = Fleet::start(300, 60);
    // 40 MiB: uploaded to S3 in three parts.
    let bytes = pseudo_random(40 * MIB, 7);
    let id = fleet.upload(&bytes);
    let member = fleet.call("PUT", &format!("/v2/cache/{id}"), MEMBER, b"");
    assert_eq!(member.status, 403);
    let queued = fleet.call("PUT", &format!("/v2/cache/{id}"), ADMIN, b"");
    assert_eq!(
        queued.status,
        202,
        "{}",
        String::from_utf8_lossy(&queued.body)
    );
    // As Glance: no body (python-glanceclient and tempest read none).
    assert!(queued.body.is_empty());
    let where_ = fleet.json("GET", &format!("/v2/cache/nodes/{id}"), ADMIN, b"");
    let placed = where_["placed"][0].as_str().unwrap().to_owned();
    let i: usize = placed.trim_start_matches("node-").parse().unwrap();
    fleet.wait_for("the image cached on its node", |f| {
        f.json("GET", "/v2/cache", ADMIN, b"")["cached_images"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["image_id"] == id.as_str())
    });
    let list = fleet.json("GET", "/v2/cache", ADMIN, b"");
    let entry = &list["cached_images"][0];
    assert_eq!(entry["size"], bytes.len());
    assert_eq!(entry["nodes"], json!([placed]));
    assert_eq!(list["queued_images"], json!([]));
    assert!(entry["last_modified"].as_u64().unwrap() >= common::now() - 120);
    let hits = entry["hits"].as_u64().unwrap();
    let node = &fleet.nodes[i];
    node.settle("s3");
    let read = node.metric(BACKEND);
    assert!(read >= bytes.len() as u64, "pre-warm read {read}");
    // The download goes to that node and reads nothing more from S3.
    let (to, target) = fleet.redirect(&id);
    assert_eq!(to, i);
    let (status, len, hash) = common::download_sha512(node.addr, &target);
    assert_eq!((status, len), (200, bytes.len() as u64));
    assert_eq!(hash, sha512(&bytes));
    assert_eq!(node.metric(BACKEND), read, "a warm download read S3");
    let list = fleet.json("GET", "/v2/cache", ADMIN, b"");
    assert_eq!(list["cached_images"][0]["hits"], hits + 1);
    // Every node at once, then cleared from all of them.
    let all = fleet.call("PUT", &format!("/v2/cache/{id}?scope=all"), ADMIN, b"");
    assert_eq!(all.status, 202);
    fleet.wait_for("cached on all three nodes", |f| {
        f.json("GET", "/v2/cache", ADMIN, b"")["cached_images"][0]["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 3)
    });
    for n in &fleet.nodes {
        n.settle("s3");
    }
    let bad = request_with_body(
        fleet.api,
        "DELETE",
        "/v2/cache",
        &[
            ("X-Auth-Token", ADMIN),
            ("x-image-cache-clear-target", "nope"),
        ],
        b"",
    );
    assert_eq!(bad.status, 400);
    let cleared = fleet.call("DELETE", "/v2/cache", ADMIN, b"");
    assert_eq!(cleared.status, 204);
    let list = fleet.json("GET", "/v2/cache", ADMIN, b"");
    assert_eq!(list["cached_images"], json!([]), "{list}");
    let pruned = fleet.json("POST", "/v2/cache/prune?target_bytes=0", ADMIN, b"");
    assert_eq!(pruned["total_files_pruned"], 0);
    let gone = fleet.call("DELETE", &format!("/v2/cache/{id}"), ADMIN, b"");
    assert_eq!(gone.status, 204);
    let versions = fleet.json("GET", "/versions", "", b"");
    assert_eq!(versions["versions"][0]["id"], "v2.18");
    assert_eq!(versions["versions"][0]["status"], "CURRENT");
}

#[test]
fn a_rotation_keeps_a_download_in_flight_and_an_earlier_link_working() {
    let fleet = Fleet::start(15, 1);
    let bytes = pseudo_random(24 * MIB, 11);
    let id = fleet.upload(&bytes);
    let before = fleet.json("POST", &format!("/v2/images/{id}/links"), MEMBER, b"{}");
    let (i, target) = fleet.split(before["url"].as_str().unwrap());
    let node = &fleet.nodes[i];
    // A download starts and stalls after its first bytes.
    let mut slow = TcpStream::connect(node.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        slow,
        "GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut first = vec![0u8; 64 << 10];
    let n = slow.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let rotated = fleet.json("POST", "/admin/keys/rotate", ADMIN, b"");
    let primary = rotated["primary"].as_str().unwrap().to_owned();
    assert_eq!(rotated["replaced"], "k1");
    assert!(
        rotated["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["pushed"] == true),
        "{rotated}"
    );
    // Every node holds both keys now.
    for n in &fleet.nodes {
        let r = common::request(
            n.addr,
            "GET",
            "/admin/keyring",
            &[("Authorization", &format!("Bearer {NODE_TOKEN}"))],
        );
        let k: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(k["primary"], primary.as_str());
        assert_eq!(k["keys"].as_array().unwrap().len(), 2);
    }
    // The link issued before the rotation still works; new links use the new key.
    let again = common::download_sha512(node.addr, &target);
    assert_eq!((again.0, again.2), (200, sha512(&bytes)));
    let after = fleet.json("POST", &format!("/v2/images/{id}/links"), MEMBER, b"{}");
    assert!(
        after["url"]
            .as_str()
            .unwrap()
            .contains(&format!("kid={primary}"))
    );
    // The stalled download finishes whole.
    let mut raw = first[..n].to_vec();
    slow.read_to_end(&mut raw).unwrap();
    let head = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(sha512(&raw[head..]), sha512(&bytes));
    // Once every link k1 signed expired (15 s + 1 s grace), k1 is dropped
    // everywhere, and its links are refused.
    let keys = fleet.json("GET", "/admin/keys", ADMIN, b"");
    assert!(keys["keys"][0]["retire_at"].as_u64().is_some(), "{keys}");
    fleet.wait_for("k1 dropped from the nodes", |f| {
        f.nodes.iter().all(|n| {
            let r = common::request(
                n.addr,
                "GET",
                "/admin/keyring",
                &[("Authorization", &format!("Bearer {NODE_TOKEN}"))],
            );
            serde_json::from_slice::<Value>(&r.body).unwrap()["keys"]
                .as_array()
                .unwrap()
                .len()
                == 1
        })
    });
    let keys = fleet.json("GET", "/admin/keys", ADMIN, b"");
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(node.get(&target, &[]).status, 403);
    let file = glance_link::Keyring::load(&fleet.dir.path().join("keyring.toml")).unwrap();
    assert_eq!(file.primary().as_str(), primary);
}

#[test]
fn direct_links_download_from_s3_for_services_only() {
    let fleet = Fleet::start(300, 60);
    let bytes = pseudo_random(3 * MIB, 21);
    let id = fleet.upload(&bytes);
    let refused = fleet.call(
        "POST",
        &format!("/v2/images/{id}/links"),
        MEMBER,
        br#"{"kind":"direct"}"#,
    );
    assert_eq!(refused.status, 403);
    let direct = fleet.json(
        "POST",
        &format!("/v2/images/{id}/links"),
        SERVICE,
        br#"{"kind":"direct"}"#,
    );
    assert_eq!(direct["kind"], "direct");
    let url = direct["url"].as_str().unwrap();
    let swift = Swift::shared();
    assert!(url.starts_with(&fleet.s3_endpoint), "{url}");
    assert!(url.contains("X-Amz-Expires=300"), "{url}");
    assert!(!url.contains(&swift.secret), "the secret in the link");
    let (status, body) = fetch(url);
    assert_eq!(status, 200);
    assert_eq!(sha512(&body), sha512(&bytes));
    // A tampered link is refused by S3 itself.
    let (status, _) = fetch(&url.replace("X-Amz-Expires=300", "X-Amz-Expires=301"));
    assert_eq!(status, 403);
    // A stream link follows the download rule, which wants `member`.
    let stream = fleet.call("POST", &format!("/v2/images/{id}/links"), SERVICE, b"");
    assert_eq!(stream.status, 403);
    let stream = fleet.json("POST", &format!("/v2/images/{id}/links"), MEMBER, b"");
    assert_eq!(stream["kind"], "stream");
    let metrics = String::from_utf8(fleet.call("GET", "/metrics", "", b"").body).unwrap();
    assert!(
        metrics.contains("glance_api_links_issued_total{kind=\"direct\"} 1"),
        "{metrics}"
    );
    // Deleting the image deletes the object: the direct link stops working.
    let del = fleet.call("DELETE", &format!("/v2/images/{id}"), MEMBER, b"");
    assert_eq!(del.status, 204);
    assert_eq!(fetch(url).0, 404);
}

#[test]
fn no_token_link_or_key_ever_reaches_s3() {
    let fleet = Fleet::start(300, 60);
    let bytes = pseudo_random(3 * MIB, 31);
    let id = fleet.upload(&bytes);
    let (i, target) = fleet.redirect(&id);
    let sig = target
        .split("sig=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    // A client that sends its tokens along on the redirect, as some do.
    let r = common::request(
        fleet.nodes[i].addr,
        "GET",
        &target,
        &[("X-Auth-Token", MEMBER), ("X-Service-Token", SERVICE)],
    );
    assert_eq!(r.status, 200);
    assert_eq!(sha512(&r.body), sha512(&bytes));
    let sent = String::from_utf8_lossy(&fleet.s3_tap.sent()).into_owned();
    assert!(
        sent.contains("PUT /") && sent.contains("GET /"),
        "the tap saw no upload and no fill"
    );
    let swift = Swift::shared();
    let keyring = std::fs::read_to_string(fleet.dir.path().join("keyring.toml")).unwrap();
    let key_secrets: Vec<&str> = keyring
        .lines()
        .filter_map(|l| Some(l.split_once(" = \"")?.1.trim_end_matches('"')))
        .filter(|v| v.len() >= 43)
        .collect();
    assert!(!key_secrets.is_empty());
    let leaks = [
        ADMIN,
        MEMBER,
        SERVICE,
        NODE_TOKEN,
        sig,
        swift.secret.as_str(),
    ];
    for leak in leaks.iter().chain(&key_secrets) {
        assert!(!sent.contains(leak), "S3 was sent {leak:?}");
    }
    for name in ["x-auth-token", "x-service-token", "cookie"] {
        assert!(
            !sent.to_ascii_lowercase().contains(name),
            "S3 was sent a {name} header"
        );
    }
}
