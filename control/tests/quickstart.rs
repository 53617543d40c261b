//! The quickstart as a new user runs it: both processes on free ports, driven
//! with curl through the 307 redirect, then stopped with Ctrl-C (SIGINT).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use md5::Digest as _;
use serde_json::{Value, json};

struct Quickstart {
    child: Child,
    dir: tempfile::TempDir,
    api: String,
    stream_port: u16,
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start() -> Quickstart {
    let dir = tempfile::tempdir().unwrap();
    let (port, stream_port) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_glance-api"))
        .args(["quickstart", "--dir"])
        .arg(dir.path().join("var"))
        .args([
            "--port",
            &port.to_string(),
            "--stream-port",
            &stream_port.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "quickstart exited: {banner}"
        );
        banner.push_str(&line);
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    assert!(banner.contains("openstack"), "{banner}");
    assert!(banner.contains("curl"), "{banner}");
    // Keep draining stdout so the process never blocks on it.
    std::thread::spawn(move || for _ in out.lines() {});
    Quickstart {
        child,
        dir,
        api: format!("http://127.0.0.1:{port}"),
        stream_port,
    }
}

fn openrc_token(dir: &Path, file: &str) -> String {
    let text = std::fs::read_to_string(dir.join("var").join(file)).unwrap();
    let mode = std::fs::metadata(dir.join("var").join(file)).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o077,
        0
    );
    assert!(text.contains("export OS_AUTH_TYPE=admin_token"), "{text}");
    assert!(
        text.contains("export OS_ENDPOINT=http://127.0.0.1:"),
        "{text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix("export OS_TOKEN="))
        .unwrap()
        .to_owned()
}

/// Runs curl; returns the status code and the body.
fn curl(args: &[&str]) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl must be installed");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let split = out.stdout.iter().rposition(|&b| b == b'\n').unwrap();
    let status = String::from_utf8_lossy(&out.stdout[split + 1..])
        .parse()
        .unwrap();
    (status, out.stdout[..split].to_vec())
}

fn api(
    q: &Quickstart,
    token: &str,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> (u16, Value) {
    let url = format!("{}{path}", q.api);
    let auth = format!("X-Auth-Token: {token}");
    let mut args = vec!["-X", method, "-H", &auth, &url];
    let ctype;
    if let Some((content_type, data)) = body {
        ctype = format!("Content-Type: {content_type}");
        args.extend(["-H", &ctype, "--data-binary", data]);
    }
    let (status, body) = curl(&args);
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    (status, json)
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn quickstart_serves_the_whole_image_lifecycle_through_the_redirect() {
    let q = start();
    let admin = openrc_token(q.dir.path(), "openrc");
    let member = openrc_token(q.dir.path(), "openrc-member");
    let (status, versions) = api(&q, &admin, "GET", "/versions", None);
    assert_eq!(status, 200);
    assert!(
        versions["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["status"] == "CURRENT")
    );

    // Create and upload 32 MiB.
    let (status, img) = api(
        &q,
        &admin,
        "POST",
        "/v2/images",
        Some((
            "application/json",
            r#"{"name": "qs", "disk_format": "raw", "container_format": "bare", "visibility": "public"}"#,
        )),
    );
    assert_eq!(status, 201, "{img}");
    let id = img["id"].as_str().unwrap().to_owned();
    let bytes = pseudo_random(32 << 20);
    let file = q.dir.path().join("disk.img");
    std::fs::write(&file, &bytes).unwrap();
    let upload_url = format!("{}/v2/images/{id}/file", q.api);
    let auth = format!("X-Auth-Token: {admin}");
    let (status, body) = curl(&[
        "-X",
        "PUT",
        "-H",
        &auth,
        "-H",
        "Content-Type: application/octet-stream",
        "-T",
        file.to_str().unwrap(),
        &upload_url,
    ]);
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
    let (_, shown) = api(&q, &admin, "GET", &format!("/v2/images/{id}"), None);
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["checksum"], hex::encode(md5::Md5::digest(&bytes)));
    assert_eq!(
        shown["os_hash_value"],
        hex::encode(sha2::Sha512::digest(&bytes))
    );

    // Download through the 307, whole and one range, as both users.
    for token in [&admin, &member] {
        let auth = format!("X-Auth-Token: {token}");
        let (status, got) = curl(&["-L", "-H", &auth, &upload_url]);
        assert_eq!(status, 200);
        assert_eq!(
            sha2::Sha512::digest(&got).as_slice(),
            sha2::Sha512::digest(&bytes).as_slice()
        );
        let (status, part) = curl(&["-L", "-r", "1000-1999", "-H", &auth, &upload_url]);
        assert_eq!(status, 206);
        assert_eq!(part, &bytes[1000..2000]);
    }
    // The redirect points at the stream node.
    let (status, _) = curl(&["-H", &auth, &upload_url]);
    assert_eq!(status, 307);

    // Pagination across three pages.
    for i in 0..5 {
        let (s, _) = api(
            &q,
            &admin,
            "POST",
            "/v2/images",
            Some((
                "application/json",
                &json!({"name": format!("page-{i}")}).to_string(),
            )),
        );
        assert_eq!(s, 201);
    }
    let mut path = "/v2/images?limit=2".to_owned();
    let mut count = 0;
    let mut pages = 0;
    loop {
        let (s, page) = api(&q, &admin, "GET", &path, None);
        assert_eq!(s, 200);
        pages += 1;
        count += page["images"].as_array().unwrap().len();
        match page["next"].as_str() {
            Some(next) => path = next.to_owned(),
            None => break,
        }
    }
    assert_eq!((count, pages), (6, 4));

    // PATCH, tags.
    let patch = r#"[{"op": "add", "path": "/os_distro", "value": "cirros"}, {"op": "replace", "path": "/name", "value": "qs2"}]"#;
    let (s, patched) = api(
        &q,
        &admin,
        "PATCH",
        &format!("/v2/images/{id}"),
        Some(("application/openstack-images-v2.1-json-patch", patch)),
    );
    assert_eq!(s, 200);
    assert_eq!(
        (patched["name"].as_str(), patched["os_distro"].as_str()),
        (Some("qs2"), Some("cirros"))
    );
    let (s, _) = api(
        &q,
        &admin,
        "PUT",
        &format!("/v2/images/{id}/tags/fast"),
        None,
    );
    assert_eq!(s, 204);
    assert_eq!(
        api(&q, &admin, "GET", &format!("/v2/images/{id}"), None).1["tags"],
        json!(["fast"])
    );

    // Deactivate: the member's download is refused, the admin's is not.
    assert_eq!(
        api(
            &q,
            &admin,
            "POST",
            &format!("/v2/images/{id}/actions/deactivate"),
            None
        )
        .0,
        204
    );
    let member_auth = format!("X-Auth-Token: {member}");
    assert_eq!(curl(&["-L", "-H", &member_auth, &upload_url]).0, 403);
    assert_eq!(curl(&["-H", &auth, &upload_url]).0, 307);
    assert_eq!(
        api(
            &q,
            &admin,
            "POST",
            &format!("/v2/images/{id}/actions/reactivate"),
            None
        )
        .0,
        204
    );

    // Delete: gone, and its data too.
    assert_eq!(
        api(&q, &admin, "DELETE", &format!("/v2/images/{id}"), None).0,
        204
    );
    assert_eq!(
        api(&q, &admin, "GET", &format!("/v2/images/{id}"), None).0,
        404
    );
    assert!(!q.dir.path().join("var/images").join(&id).exists());

    // Ctrl-C stops both processes.
    let mut q = q;
    let ok = Command::new("kill")
        .args(["-INT", &q.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = q.child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "quickstart did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", q.stream_port)).is_err(),
        "stream node still up"
    );
}
