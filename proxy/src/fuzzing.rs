//! Properties for the fuzz targets in `fuzz/`: each target is one call here.
#![allow(clippy::panic)]

use crate::http::{self, Parsed};
use crate::range::{self, RangeRequest};

/// A `Range` value never panics the parser, and a partial range always lies
/// inside the image. The first 8 bytes choose the image size.
pub fn range_header(data: &[u8]) {
    let (size, value) = match data.split_first_chunk::<8>() {
        Some((size, rest)) => (u64::from_le_bytes(*size), rest),
        None => (1040, data),
    };
    if let RangeRequest::Partial { start, end } = range::parse(value, size) {
        assert!(
            start <= end && end < size,
            "range {start}-{end} outside {size} bytes"
        );
    }
}

/// Arbitrary bytes never panic the request-head parser, which never claims
/// more bytes than it was given or than its limit.
pub fn request_head(data: &[u8]) {
    const MAX: usize = 4096;
    if let Parsed::Complete(head) = http::parse(data, 32, MAX) {
        assert!(
            head.len <= data.len() && head.len <= MAX,
            "head of {} bytes",
            head.len
        );
        assert!(!head.path.contains('?'), "query left in the path");
    }
}

/// Arbitrary text never panics glance-stream's config checker; a refusal
/// names the file, and a config it accepts has its limits, chunk size and
/// every timeout within their documented bounds.
///
/// Relative paths resolve under a directory that does not exist, so only a
/// file named by an absolute path can be read (and must be private).
pub fn config(data: &[u8]) {
    use crate::config::{Config, MAX_TIMEOUT_SECS, StoreConfig};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let shown = "fuzz.toml";
    let base = std::path::Path::new("/nonexistent-fuzz-base");
    let config = match Config::from_toml(text, base, shown) {
        Ok(config) => config,
        Err(e) => {
            assert!(e.to_string().contains(shown), "unnamed error: {e}");
            return;
        }
    };
    let longest = std::time::Duration::from_secs(MAX_TIMEOUT_SECS);
    let h = &config.http;
    let mut timeouts = vec![
        h.header_timeout,
        h.idle_timeout,
        h.send_timeout,
        h.drain_timeout,
    ];
    for store in config.stores.values() {
        if let StoreConfig::Http { origin }
        | StoreConfig::S3 { origin }
        | StoreConfig::Swift { origin } = store
        {
            let t = &origin.timeouts;
            timeouts.extend([t.connect, t.first_byte, t.idle]);
        }
    }
    for t in timeouts {
        assert!(!t.is_zero() && t <= longest, "timeout {t:?}");
    }
    assert!((1024..=1 << 20).contains(&h.max_header_bytes));
    assert!((8..=http::MAX_HEADERS_CAP).contains(&h.max_headers));
    assert!(h.max_connections_per_thread > 0);
    assert!(
        glance_cache::CHUNK_SIZE_RANGE.contains(&config.cache_chunk_size),
        "chunk size {}",
        config.cache_chunk_size
    );
    assert!(!config.public_url.ends_with('/'), "{}", config.public_url);
    assert!(config.threads.get() <= crate::config::MAX_THREADS);
}

/// A server config that parses every hello but has no certificate to
/// offer: the handshake fails after the client's hello is read, as on a
/// node whose client sent a name it does not serve.
fn certless_server() -> Option<std::sync::Arc<rustls::ServerConfig>> {
    #[derive(Debug)]
    struct NoCertificate;
    impl rustls::server::ResolvesServerCert for NoCertificate {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
            None
        }
    }
    static CONFIG: std::sync::OnceLock<Option<std::sync::Arc<rustls::ServerConfig>>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()?
                .with_no_client_auth()
                .with_cert_resolver(std::sync::Arc::new(NoCertificate));
            Some(std::sync::Arc::new(config))
        })
        .clone()
}

/// Arbitrary bytes from a client, in reads of any size (the first byte
/// chooses it), never panic glance-stream's TLS session, and what it holds
/// stays bounded: at most 64 KiB of ciphertext waiting for a record to
/// complete, no plaintext before a handshake, a few KiB to send (an alert).
pub fn tls_records(data: &[u8]) {
    let Some((&piece, data)) = data.split_first() else {
        return;
    };
    let Some(config) = certless_server() else {
        panic!("the fuzz target's server config cannot be built");
    };
    let Ok(conn) = rustls::server::UnbufferedServerConnection::new(config) else {
        panic!("a server session cannot be started");
    };
    let mut session = crate::tls::ServerSession::new(conn);
    for read in data.chunks(usize::from(piece).max(1)) {
        let outcome = session.absorb(read);
        let (incoming, outgoing, plain) = session.held();
        assert!(incoming <= 64 << 10, "{incoming} bytes of ciphertext held");
        assert!(outgoing <= 8 << 10, "{outgoing} bytes to send");
        assert_eq!(plain, 0, "plaintext before a handshake");
        if outcome.is_err() {
            break;
        }
    }
}
