//! glance-api over HTTPS as a process: its certificate from a CA the test
//! makes, the 307 to an https stream node, SIGHUP swapping an expired
//! certificate, and the configurations it refuses to start on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::start;
use glance_api::tls::{ThrowawayCa, Validity};

const ADMIN: &str = "tls-admin-token-0123456789abcdef";
const KEYRING: &str =
    "primary = \"k1\"\n[keys]\nk1 = \"AUpHxry2pHEpkVJGCYLJ-TpiLWITLVzhgiWlW1sGUv8\"\n";

/// Writes a config serving TLS from `server.pem` in `dir` (extra `[tls]`
/// lines and the public URL's scheme as given).
fn write_config(dir: &Path, scheme: &str, tls: &str) -> std::path::PathBuf {
    glance_link::write_private_file(&dir.join("keyring.toml"), KEYRING, "tmp").unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\npublic_url = \"{scheme}://127.0.0.1:9292\"\n\
         keyring = \"keyring.toml\"\nmetadata = \"glance.redb\"\n\
         stream_nodes = [{{ name = \"stream-1\", public_url = \"https://stream-1.test:9393\", \
         admin_url = \"https://127.0.0.1:1\" }}]\n\
         [store]\nid = \"local\"\nkind = \"file\"\npath = \"images\"\n\
         [auth]\nmode = \"static\"\n[[auth.tokens]]\ntoken = \"{ADMIN}\"\nuser_id = \"root\"\n\
         project_id = \"ops\"\nroles = [\"admin\", \"member\", \"reader\"]\n\
         [fleet]\nhealth_interval_secs = 600\nnode_timeout_secs = 1\n\
         [tls]\n{tls}"
    );
    let path = dir.join("glance-api.toml");
    std::fs::write(&path, config).unwrap();
    path
}

const SERVED: &str = "cert = \"server.pem\"\nkey = \"server-key.pem\"\nca_file = \"ca.pem\"\n";

/// A client trusting only the test's CA, opening a new connection per call
/// (so each call runs a handshake against the current certificate).
fn client(ca: &ThrowawayCa) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .resolve("localhost", "127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap()
}

fn issue(ca: &ThrowawayCa, dir: &Path, validity: Validity) {
    ca.issue(&["localhost", "127.0.0.1"], validity)
        .unwrap()
        .write(dir, "server")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn https_api_redirects_to_https_nodes_and_swaps_an_expired_certificate_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ThrowawayCa::new("glance-api test CA").unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    issue(&ca, dir.path(), Validity::Days(30));
    let api = start(&write_config(dir.path(), "https", SERVED)).unwrap();
    let http = client(&ca);
    let url = format!("https://localhost:{}", api.addr.port());

    // An image uploaded over TLS; its download is a 307 to the node's https URL.
    let created: serde_json::Value = http
        .post(format!("{url}/v2/images"))
        .header("X-Auth-Token", ADMIN)
        .json(&serde_json::json!({"name": "tls", "disk_format": "raw", "container_format": "bare"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let put = http
        .put(format!("{url}/v2/images/{id}/file"))
        .header("X-Auth-Token", ADMIN)
        .header("Content-Type", "application/octet-stream")
        .body(vec![7u8; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let download = http
        .get(format!("{url}/v2/images/{id}/file"))
        .header("X-Auth-Token", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 307);
    let location = download.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("https://stream-1.test:9393/v1/images/{id}?")),
        "{location}"
    );

    // A renewal gone wrong: an expired certificate, reloaded on SIGHUP.
    issue(&ca, dir.path(), Validity::Expired);
    api.hup();
    api.wait_for("TLS certificate reloaded", 1);
    let err = http
        .get(format!("{url}/versions"))
        .send()
        .await
        .unwrap_err();
    let chain = format!("{:?}", err);
    assert!(chain.contains("Expired"), "{chain}");
    // Fixed: a valid one, another SIGHUP, and clients get through again.
    issue(&ca, dir.path(), Validity::Days(30));
    api.hup();
    api.wait_for("TLS certificate reloaded", 2);
    let ok = http.get(format!("{url}/versions")).send().await.unwrap();
    assert!(
        ok.status().is_success() || ok.status() == 300,
        "{}",
        ok.status()
    );

    // A key that does not match the certificate: refused, the old pair stays.
    let stray = ca.issue(&["localhost"], Validity::Days(30)).unwrap();
    glance_link::write_private_file(&dir.path().join("server-key.pem"), &stray.key_pem, "tmp")
        .unwrap();
    api.hup();
    api.wait_for("TLS reload failed", 1);
    let still = http.get(format!("{url}/versions")).send().await.unwrap();
    assert!(still.status().is_success() || still.status() == 300);
}

#[test]
fn glance_api_refuses_to_start_on_a_broken_tls_table() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ThrowawayCa::new("glance-api test CA").unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    issue(&ca, dir.path(), Validity::Days(30));
    let refused = |scheme: &str, tls: &str| match start(&write_config(dir.path(), scheme, tls)) {
        Ok(_) => panic!("started with [tls] {tls:?} at {scheme}://"),
        Err(log) => log,
    };
    let cases = [
        (
            "https",
            "cert = \"server.pem\"\n",
            "cert and key go together",
        ),
        ("http", SERVED, "https://"),
        (
            "https",
            "cert = \"server.pem\"\nkey = \"server-key.pem\"\nca_file = \"none.pem\"\n",
            "none.pem",
        ),
        (
            "https",
            "cert = \"ca.pem\"\nkey = \"server-key.pem\"\n",
            "ca.pem",
        ),
    ];
    for (scheme, tls, expect) in cases {
        let log = refused(scheme, tls);
        assert!(log.contains(expect), "{tls}: {log}");
    }
    // A key others can read.
    let key = dir.path().join("server-key.pem");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let log = refused("https", SERVED);
    assert!(log.contains("chmod 600"), "{log}");
}
