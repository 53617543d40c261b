//! Swift tokens for glance-stream: one session per Swift store, shared by
//! every worker thread, obtained with a blocking HTTP call (ureq) on the
//! blocking pool, never on a worker's event loop. It is renewed before it
//! runs out and when Swift answers `401`; concurrent renewals wait for one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use glance_link::swift::{
    AuthError, Held, MAX_AUTH_BODY, Session, SessionCache, Step, SwiftAccount,
};

use crate::origin::OriginTls;

/// Longest an authentication request may take, connection included (a
/// thread of the blocking pool waits that long at most).
const AUTH_TIMEOUT: Duration = Duration::from_secs(15);

/// The Swift account of one store and its current session.
pub struct SwiftAuth {
    account: SwiftAccount,
    agent: ureq::Agent,
    /// The store's CA file (else the system's roots).
    ca_file: Option<PathBuf>,
    /// The client settings for https storage URLs, made on first use.
    storage_tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
    cache: Mutex<SessionCache>,
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
    /// for its https auth and storage URLs. Roots are loaded only for
    /// https: a store reached over plain HTTP needs none.
    pub fn new(account: SwiftAccount, ca_file: Option<&Path>) -> Result<SwiftAuth, String> {
        let https = account.auth_is_https()
            || account.fixed_storage_url().is_some_and(|u| u.is_https())
            || ca_file.is_some();
        let roots = match https {
            true => glance_link::tls::root_certs(ca_file)?
                .iter()
                .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned())
                .collect(),
            false => Vec::new(),
        };
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        // No proxy from the environment: the key goes to auth_url only, as
        // the storage GETs go straight to the storage URL.
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(AUTH_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .tls_config(tls)
            .build()
            .into();
        Ok(SwiftAuth {
            account,
            agent,
            ca_file: ca_file.map(Path::to_path_buf),
            storage_tls: OnceLock::new(),
            cache: Mutex::new(SessionCache::default()),
            renewing: Mutex::new(()),
        })
    }

    /// The account.
    pub fn account(&self) -> &SwiftAccount {
        &self.account
    }

    /// The TLS settings for `session`'s storage URL (`None` for http).
    pub fn tls_for(&self, session: &Session) -> Result<Option<OriginTls>, String> {
        if !session.storage_url.is_https() {
            return Ok(None);
        }
        let config = self
            .storage_tls
            .get_or_init(|| crate::tls::client_config(self.ca_file.as_deref()))
            .clone()?;
        let name = rustls::pki_types::ServerName::try_from(session.storage_url.host().to_owned())
            .map_err(|e| format!("storage URL host: {e}"))?;
        Ok(Some(OriginTls { config, name }))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, SessionCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session held, unless it is due for renewal. Never blocks for
    /// long: callable on a worker thread.
    pub fn current(&self) -> Option<Arc<Held>> {
        self.cache().usable(Instant::now())
    }

    /// A session for a caller that had `refused` refused by Swift (or none):
    /// the one held if still good, else a new one. Blocks on the network:
    /// call it on the blocking pool. Callers that wait while another
    /// renews get that renewal's outcome; a failure is remembered for a
    /// few seconds (see [`SessionCache`]).
    pub fn renew(&self, refused: Option<&Arc<Held>>) -> Result<Arc<Held>, AuthError> {
        let _one = self.renewing.lock().unwrap_or_else(PoisonError::into_inner);
        let step = self.cache().begin(refused, Instant::now());
        match step {
            Step::Ready(held) => Ok(held),
            Step::Failed(e) => Err(e),
            Step::Authenticate => {
                let outcome = self.authenticate();
                if let Ok(s) = &outcome {
                    tracing::info!(
                        storage_url = s.storage_url.url().as_str(),
                        "authenticated to Swift"
                    );
                }
                self.cache().finish(outcome, Instant::now())
            }
        }
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
