//! HTTPS for glance-api, and the throw-away certificate authority that
//! `quickstart --tls` (and the test suites) issue certificates from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate authority made on the spot: its key lives in memory only,
/// so nothing it issued can be re-signed after the process ends.
pub struct ThrowawayCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM-encoded.
pub struct Issued {
    /// The certificate, then the CA's (a chain a server can present).
    pub chain_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// How long an issued certificate is valid, around now.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// From a day ago for `days` days.
    Days(u32),
    /// Expired: valid from 30 days ago until yesterday.
    Expired,
}

fn tls_error(e: rcgen::Error) -> String {
    format!("cannot make a certificate: {e}")
}

impl ThrowawayCa {
    /// A new CA named `name`, valid for ten years.
    pub fn new(name: &str) -> Result<ThrowawayCa, String> {
        let key = KeyPair::generate().map_err(tls_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(tls_error)?;
        Ok(ThrowawayCa { issuer })
    }

    /// The CA certificate (what clients trust: `OS_CACERT`, `--cacert`).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, names: &[&str], validity: Validity) -> Result<Issued, String> {
        let key = KeyPair::generate().map_err(tls_error)?;
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).map_err(tls_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().map_or("server", |n| n));
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        let (from, until) = match validity {
            Validity::Days(days) => (
                now - time::Duration::days(1),
                now + time::Duration::days(i64::from(days)),
            ),
            Validity::Expired => (
                now - time::Duration::days(30),
                now - time::Duration::days(1),
            ),
        };
        params.not_before = from;
        params.not_after = until;
        let cert = params.signed_by(&key, &self.issuer).map_err(tls_error)?;
        Ok(Issued {
            chain_pem: format!("{}{}", cert.pem(), self.pem()),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Issued {
    /// Writes the chain to `DIR/NAME.pem` and the key to `DIR/NAME-key.pem`
    /// (mode 0600); returns both paths.
    pub fn write(&self, dir: &Path, name: &str) -> std::io::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, &self.chain_pem)?;
        glance_link::write_private_file(&key, &self.key_pem, "tmp")?;
        Ok((cert, key))
    }
}

/// Extra certificate authorities glance-api trusts when it calls out
/// (stream nodes, Keystone, S3), beside the system's roots.
#[derive(Clone, Debug, Default)]
pub struct Roots(Vec<reqwest::Certificate>);

impl Roots {
    /// The CA certificates of a PEM file (a bundle may hold several).
    pub fn load(path: &Path) -> Result<Roots, String> {
        let certs = glance_link::tls::read_certs(path)?;
        let mut roots = Vec::with_capacity(certs.len());
        for cert in certs {
            let cert = reqwest::Certificate::from_der(&cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            roots.push(cert);
        }
        Ok(Roots(roots))
    }

    /// An HTTP client builder trusting these CAs too.
    pub fn client(&self) -> reqwest::ClientBuilder {
        self.0.iter().fold(reqwest::Client::builder(), |b, cert| {
            b.add_root_certificate(cert.clone())
        })
    }
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The server side of glance-api's HTTPS: the current certificate (swapped
/// whole on SIGHUP; connections keep the one they started with).
pub struct Acceptor {
    files: glance_link::tls::TlsFiles,
    config: arc_swap::ArcSwap<rustls::ServerConfig>,
}

impl Acceptor {
    /// Loads the certificate and key.
    pub fn new(files: glance_link::tls::TlsFiles) -> Result<Acceptor, String> {
        let config = glance_link::tls::server_config(&files)?;
        Ok(Acceptor {
            files,
            config: arc_swap::ArcSwap::new(config),
        })
    }

    /// Re-reads the certificate and key; on failure the old ones stay.
    pub fn reload(&self) -> Result<(), String> {
        self.config
            .store(glance_link::tls::server_config(&self.files)?);
        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
        Ok(())
    }

    /// Runs the handshake of a new connection, all of it within one
    /// deadline. A plaintext HTTP request gets a plain 400 saying the port
    /// speaks HTTPS; `None` when the connection is done.
    pub async fn accept(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
        let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
        let mut first = [0u8; 8];
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return None,
        };
        if glance_link::tls::looks_like_http(&first[..n]) {
            refuse_plaintext(tcp).await;
            return None;
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.load_full());
        match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => None,
        }
    }
}

/// Answers a plaintext request with the plain 400, then reads and drops
/// what the client still sends (a second at most, 1 MiB at most) before
/// closing, so the close does not reset the connection before the client
/// has read the answer.
async fn refuse_plaintext(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let second = std::time::Duration::from_secs(1);
    let refusal = tcp.write_all(glance_link::tls::PLAINTEXT_REFUSAL);
    if !matches!(tokio::time::timeout(second, refusal).await, Ok(Ok(()))) {
        return;
    }
    let _ = tcp.shutdown().await;
    let deadline = tokio::time::Instant::now() + second;
    let mut scratch = vec![0u8; 16 << 10];
    let mut drained = 0usize;
    while drained < (1 << 20) {
        match tokio::time::timeout_at(deadline, tcp.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => return,
        }
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves, then
/// lets the connections in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: Arc<Acceptor>,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let reload = tokio::spawn(reload_on_sighup(Arc::clone(&acceptor)));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = Arc::clone(&acceptor);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Some(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let io = hyper_util::rt::TokioIo::new(tls);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(30))
                .serve_connection(io, service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection closed");
            }
        });
    }
    reload.abort();
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Reloads the certificate on every SIGHUP.
async fn reload_on_sighup(acceptor: Arc<Acceptor>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP: the TLS certificate is not reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        if let Err(e) = acceptor.reload() {
            tracing::error!(error = %e, "TLS reload failed; the previous certificate stays in use");
        }
    }
}
