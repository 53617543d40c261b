//! TLS settings both planes share: certificate chains and keys read from
//! PEM files (bounded; the key a private file), server configs speaking
//! HTTP/1.1, and client configs trusting a given CA or the system's roots.
//! rustls with the ring provider throughout.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where a TLS certificate and its key are (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1), a private file (mode 0600).
    pub key: PathBuf,
}

/// Largest certificate chain file read.
const MAX_CERT_FILE: u64 = 1 << 20;

/// Reads a PEM certificate chain (bounded).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() || meta.len() > MAX_CERT_FILE {
        return Err(format!("{shown}: not a regular file of at most 1 MiB"));
    }
    let pem = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: not a PEM certificate chain: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{shown}: no certificate in it"));
    }
    Ok(certs)
}

/// Loads a certificate and key into a server config speaking HTTP/1.1
/// (ALPN `http/1.1`). The key file must be private (mode 0600).
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = read_certs(&files.cert)?;
    let key_pem = crate::read_private_file(&files.key)
        .map_err(|e| format!("{}: {e}", files.key.display()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("{}: not a PEM private key: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} and {}: {e}", files.cert.display(), files.key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The CA certificates of `ca` (a PEM file), or the system's roots when
/// `ca` is `None`.
pub fn root_certs(ca: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, String> {
    match ca {
        Some(path) => read_certs(path),
        None => {
            let certs = rustls_native_certs::load_native_certs().certs;
            if certs.is_empty() {
                return Err("no system CA certificates found; set `ca_file`".into());
            }
            Ok(certs)
        }
    }
}

/// A client config that verifies servers against `ca` (a PEM file), or the
/// system's roots when `ca` is `None`.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in root_certs(ca)? {
        // A system root rustls cannot use is skipped; a CA file's must load.
        if let Err(e) = roots.add(cert)
            && let Some(path) = ca
        {
            return Err(format!("{}: {e}", path.display()));
        }
    }
    if roots.is_empty() {
        return Err("no usable CA certificate; set `ca_file`".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Whether the first bytes of a connection start a plaintext HTTP request
/// (an upper-case method and a space, or as much of that as has arrived)
/// rather than a TLS record, which starts with content type 22.
pub fn looks_like_http(first: &[u8]) -> bool {
    let method = first.iter().take_while(|b| b.is_ascii_uppercase()).count();
    method > 0 && (method == first.len() || first[method] == b' ')
}

/// The plain-text answer to an HTTP request sent to a TLS port.
pub const PLAINTEXT_REFUSAL: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 50\r\nConnection: close\r\n\r\n\
this port speaks HTTPS: send the request over TLS\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_requests_are_told_from_tls_hellos() {
        assert!(looks_like_http(b"GET /v1/images HTTP/1.1\r\n"));
        assert!(looks_like_http(b"HEAD / HTTP/1.1"));
        assert!(looks_like_http(b"PUT"));
        assert!(!looks_like_http(&[22, 3, 1, 0, 200]));
        assert!(!looks_like_http(b"get / HTTP/1.1"));
        assert!(!looks_like_http(b"GET\r\n"));
        assert!(!looks_like_http(b""));
        let text = std::str::from_utf8(PLAINTEXT_REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
