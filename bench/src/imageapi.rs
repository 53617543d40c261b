//! The few Image API v2 calls the scenarios make, against glance-api or the
//! real Glance alike: create an image, upload its data, show it, delete it.

use std::time::Instant;

use serde_json::Value;

use crate::client::{Conn, Sample, micros};
use crate::peer::{API_TOKEN, Server};

/// An Image API server and the headers its requests carry.
pub struct ImageApi<'a> {
    /// The server.
    pub server: &'a Server,
    /// Header lines (CRLF-terminated) every request carries: a token for
    /// glance-api; none for the real Glance, which runs without auth.
    pub headers: String,
}

impl<'a> ImageApi<'a> {
    /// glance-api, with the bench's static token.
    pub fn ours(server: &'a Server) -> ImageApi<'a> {
        ImageApi::with_token(server, API_TOKEN)
    }

    /// glance-api, with `token`.
    pub fn with_token(server: &'a Server, token: &str) -> ImageApi<'a> {
        ImageApi {
            server,
            headers: format!("X-Auth-Token: {token}\r\n"),
        }
    }

    /// The real Glance, started without authentication.
    pub fn glance(server: &'a Server) -> ImageApi<'a> {
        ImageApi {
            server,
            headers: String::new(),
        }
    }

    /// A new connection to the server.
    pub fn connect(&self) -> Conn {
        Conn::connect(self.server.addr)
    }

    /// Creates a raw/bare image named `name`; returns its id.
    pub fn create(&self, conn: &mut Conn, name: &str) -> String {
        let body = format!(r#"{{"name":"{name}","disk_format":"raw","container_format":"bare"}}"#);
        let headers = format!("{}Content-Type: application/json\r\n", self.headers);
        let (head, _) = conn.request("POST", "/v2/images", &headers, body.as_bytes());
        let text = conn.read_text(head.content_length);
        assert_eq!(head.status, 201, "{} create: {text}", self.server.name);
        let json: Value = serde_json::from_str(&text).unwrap();
        json["id"].as_str().unwrap().to_owned()
    }

    /// Uploads `data` as image `id`'s data; returns the request's sample.
    pub fn upload(&self, conn: &mut Conn, id: &str, data: &[u8]) -> Sample {
        let headers = format!("{}Content-Type: application/octet-stream\r\n", self.headers);
        let t0 = Instant::now();
        let (head, ttfb) = conn.request("PUT", &format!("/v2/images/{id}/file"), &headers, data);
        let text = conn.read_text(head.content_length);
        assert_eq!(head.status, 204, "{} upload: {text}", self.server.name);
        Sample {
            latency_us: micros(t0.elapsed()),
            ttfb_us: micros(ttfb),
            bytes: data.len() as u64,
        }
    }

    /// Image `id`'s record.
    pub fn show(&self, conn: &mut Conn, id: &str) -> Value {
        let (head, _) = conn.request("GET", &format!("/v2/images/{id}"), &self.headers, b"");
        let text = conn.read_text(head.content_length);
        assert_eq!(head.status, 200, "{} show: {text}", self.server.name);
        serde_json::from_str(&text).unwrap()
    }

    /// Deletes image `id`.
    pub fn delete(&self, conn: &mut Conn, id: &str) {
        let (head, _) = conn.request("DELETE", &format!("/v2/images/{id}"), &self.headers, b"");
        let text = conn.read_text(head.content_length);
        assert_eq!(head.status, 204, "{} delete: {text}", self.server.name);
    }

    /// Creates an image holding `data` and checks the server computed its
    /// md5 and sha512 as `hashes`; returns its id.
    pub fn image_with(&self, data: &[u8], hashes: &([u8; 16], [u8; 64])) -> String {
        let mut conn = self.connect();
        let id = self.create(&mut conn, "bench");
        self.upload(&mut conn, &id, data);
        self.check_hashes(&mut conn, &id, hashes);
        id
    }

    /// Checks image `id` is active with `checksum` and `os_hash_value` as
    /// `hashes` (md5, sha512) say.
    pub fn check_hashes(&self, conn: &mut Conn, id: &str, hashes: &([u8; 16], [u8; 64])) {
        let image = self.show(conn, id);
        assert_eq!(image["status"], "active", "{}: {image}", self.server.name);
        assert_eq!(
            image["checksum"],
            hex::encode(hashes.0),
            "{} md5",
            self.server.name
        );
        assert_eq!(
            image["os_hash_value"],
            hex::encode(hashes.1),
            "{} sha512",
            self.server.name
        );
    }

    /// The target of image `id`'s data.
    pub fn file_target(id: &str) -> String {
        format!("/v2/images/{id}/file")
    }
}
