//! Swift tokens for glance-stream: one session per Swift store, shared by
//! every worker thread, obtained with a blocking HTTP call (ureq) on the
//! blocking pool, never on a worker's event loop. It is renewed before it
//! runs out and when Swift answers `401`; concurrent renewals wait for one.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use glance_link::swift::{AuthError, MAX_AUTH_BODY, Session, SwiftAccount};

use crate::origin::OriginTls;

/// Longest an authentication request may take, connection included.
const AUTH_TIMEOUT: Duration = Duration::from_secs(30);

/// A session and how to reach its storage URL.
pub struct SwiftSession {
    /// The token and storage URL.
    pub session: Session,
    /// The TLS settings of an https storage URL.
    pub tls: Option<OriginTls>,
    obtained: Instant,
}

/// The Swift account of one store and its current session.
pub struct SwiftAuth {
    account: SwiftAccount,
    agent: ureq::Agent,
    /// The client settings for https storage URLs (the store's CA file or
    /// the system's roots).
    storage_tls: Arc<rustls::ClientConfig>,
    held: Mutex<Option<Arc<SwiftSession>>>,
    /// Held while authenticating: one renewal at a time.
    renewing: Mutex<()>,
}

impl std::fmt::Debug for SwiftAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwiftAuth")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl SwiftAuth {
    /// The account, trusting the CAs of `ca_file` (or the system's roots)
    /// for its auth and storage URLs.
    pub fn new(account: SwiftAccount, ca_file: Option<&Path>) -> Result<SwiftAuth, String> {
        let roots = glance_link::tls::root_certs(ca_file)?
            .iter()
            .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned())
            .collect();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(AUTH_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .tls_config(tls)
            .build()
            .into();
        Ok(SwiftAuth {
            account,
            agent,
            storage_tls: crate::tls::client_config(ca_file)?,
            held: Mutex::new(None),
            renewing: Mutex::new(()),
        })
    }

    /// The account.
    pub fn account(&self) -> &SwiftAccount {
        &self.account
    }

    /// The session held, unless it is about to expire. Never blocks for
    /// long: callable on a worker thread.
    pub fn current(&self) -> Option<Arc<SwiftSession>> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.as_ref()
            .filter(|s| !s.session.stale(s.obtained.elapsed()))
            .map(Arc::clone)
    }

    /// A new session, replacing `stale` (one Swift refused, or none).
    /// Blocks on the network: call it on the blocking pool. Callers that
    /// wait while another renews get that renewal's session.
    pub fn renew(&self, stale: Option<&Arc<SwiftSession>>) -> Result<Arc<SwiftSession>, AuthError> {
        let _one = self.renewing.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = self.current()
            && stale.is_none_or(|s| !Arc::ptr_eq(s, &current))
        {
            return Ok(current);
        }
        let session = self.authenticate()?;
        let tls = if session.storage_url.is_https() {
            let name =
                rustls::pki_types::ServerName::try_from(session.storage_url.host().to_owned())
                    .map_err(|e| AuthError::Malformed(format!("storage URL host: {e}")))?;
            Some(OriginTls {
                config: Arc::clone(&self.storage_tls),
                name,
            })
        } else {
            None
        };
        let fresh = Arc::new(SwiftSession {
            session,
            tls,
            obtained: Instant::now(),
        });
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&fresh));
        tracing::info!(
            storage_url = fresh.session.storage_url.url().as_str(),
            "authenticated to Swift"
        );
        Ok(fresh)
    }

    /// Sends the authentication request and reads its answer.
    fn authenticate(&self) -> Result<Session, AuthError> {
        let req = self.account.auth_request();
        let transport = |e: ureq::Error| AuthError::Transport(e.to_string());
        let sent = match req.body {
            Some(body) => {
                let mut r = self.agent.post(&req.url);
                for (name, value) in &req.headers {
                    r = r.header(*name, value);
                }
                r.send(&body[..])
            }
            None => {
                let mut r = self.agent.get(&req.url);
                for (name, value) in &req.headers {
                    r = r.header(*name, value);
                }
                r.call()
            }
        };
        let mut resp = sent.map_err(transport)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_AUTH_BODY as u64)
            .read_to_vec()
            .map_err(transport)?;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        self.account.parse_auth(status, &header, &body)
    }
}
