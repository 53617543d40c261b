//! An HTTPS client for glance-stream's tests: rustls over a blocking
//! socket, one request and its exact response at a time.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::{Image, Node, Response, image_in, parse_response};

/// A TLS connection to a node, over a blocking socket.
pub type Client = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

pub fn connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> std::io::Result<Client> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    let mut client = rustls::StreamOwned::new(conn, tcp);
    while client.conn.is_handshaking() {
        client.conn.complete_io(&mut client.sock)?;
    }
    Ok(client)
}

/// Sends one request on `client` and reads exactly its response.
pub fn exchange(client: &mut Client, method: &str, target: &str, headers: &str) -> Response {
    let req = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n{headers}\r\n");
    client.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            let len = if method == "HEAD" { 0 } else { len };
            if raw.len() >= end + 4 + len {
                return parse_response(&raw, method == "HEAD").0;
            }
        }
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed mid-response");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// One request on a new TLS connection.
pub fn https(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, target: &str) -> Response {
    let mut client = connect(addr, config).unwrap();
    exchange(&mut client, "GET", target, "")
}

/// A counter of the node's `/metrics`, read over TLS.
pub fn metric(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, prefix: &str) -> u64 {
    let text = String::from_utf8(https(addr, config, "/metrics").body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no metric {prefix}"))
        .trim()
        .parse()
        .unwrap()
}

/// Writes `bytes` as image `seed` of the node's `images` directory, in
/// store `store`.
pub fn add(node: &Node, store: &str, bytes: Vec<u8>, seed: u64) -> Image {
    let img = image_in(store, bytes, seed);
    let path = node
        .dir
        .path()
        .join("images")
        .join(img.params.image_id.to_string());
    std::fs::write(path, &img.bytes).unwrap();
    img
}
