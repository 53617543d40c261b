//! The acceptance check, as an operator would run it: a 64 MiB object in a
//! file store, a link minted by `glance-stream mint`, fetched with curl.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{DRIVERS, Node, pseudo_random, sha512};

fn curl(args: &[&str]) -> (String, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-D", "-"])
        .args(args)
        .output()
        .expect("curl must be installed (scripts/test-all.sh installs it)");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4;
    (
        String::from_utf8_lossy(&out.stdout[..split]).into_owned(),
        out.stdout[split..].to_vec(),
    )
}

#[test]
fn curl_downloads_a_minted_link_to_a_64_mib_object() {
    for driver in DRIVERS {
        let node = Node::start(driver, "", "");
        let img = node.add_image(pseudo_random(64 << 20, 64), 64);
        // Point public_url at the running node, then mint as an operator would:
        // without --size/--md5/--sha512, so mint reads and hashes the object.
        let config = node.dir.path().join("stream.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text.replace("http://127.0.0.1:1", &format!("http://{}", node.addr));
        std::fs::write(&config, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_glance-stream"))
            .args(["mint", "--config"])
            .arg(&config)
            .args([
                "--store",
                "local",
                "--image",
                &img.params.image_id.to_string(),
                "--ttl",
                "60",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        assert!(
            url.starts_with(&format!("http://{}/v1/images/", node.addr)),
            "{url}"
        );

        let (head, body) = curl(&[&url]);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("Content-Type: application/octet-stream\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("Content-Length: {}\r\n", 64 << 20)),
            "{head}"
        );
        assert_eq!(sha512(&body), img.params.sha512, "{driver}");

        let (head, body) = curl(&["-r", "1048576-2097151", &url]);
        assert!(
            head.starts_with("HTTP/1.1 206 Partial Content\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!(
            "Content-Range: bytes 1048576-2097151/{}\r\n",
            64 << 20
        )));
        assert_eq!(body, &img.bytes[1 << 20..2 << 20]);

        let out = Command::new("curl")
            .args(["-sS", "-I", &url])
            .output()
            .unwrap();
        let head = String::from_utf8(out.stdout).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains(&format!("Content-Length: {}\r\n", 64 << 20)),
            "{head}"
        );
        assert!(
            head.ends_with("\r\n\r\n") && head.len() < 512,
            "HEAD sent a body: {head}"
        );

        let (head, _) = curl(&[&url.replace("sig=", "sig=A")]);
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{head}");
    }
}
