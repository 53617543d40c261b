//! Building the state from the configuration and serving until a signal.

use std::sync::Arc;

use crate::api::{AppState, router};
use crate::auth::Authenticator;
use crate::config::Config;
use crate::fleet::Fleet;
use crate::fleet::keys::SigningKeys;
use crate::metadata::MetadataStore;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The signing keys could not be loaded.
    #[error("signing keys: {0}")]
    Keys(String),
    /// The TLS certificate or key could not be loaded.
    #[error("[tls]: {0}")]
    Tls(String),
    /// The stream-node registry could not be set up.
    #[error("stream nodes: {0}")]
    Fleet(String),
    /// The metadata file could not be opened.
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
    /// The Keystone client could not be built.
    #[error(transparent)]
    Keystone(#[from] crate::keystone::KeystoneError),
    /// The store directory could not be created.
    #[error("store directory {path}: {source}")]
    Store {
        /// The directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Builds the shared state: metadata, keys, fleet, auth. The fleet's health
/// loop is not started: [`start_fleet`] does that, inside the runtime.
pub fn state(config: Config) -> Result<Arc<AppState>, StartError> {
    if let Some(files) = &config.tls {
        // Checked before the start is announced; `serve` loads it for use.
        glance_link::tls::server_config(files).map_err(StartError::Tls)?;
    }
    // The file stores' directories, and the staging directory.
    let dirs = std::iter::once(&config.store)
        .chain(config.extra_stores.iter().map(|(_, s)| s))
        .filter_map(|s| match s {
            crate::store::Store::File(dir) => Some(dir),
            _ => None,
        })
        .chain(std::iter::once(&config.import.staging_dir));
    for dir in dirs {
        std::fs::create_dir_all(dir).map_err(|source| StartError::Store {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let metadata: Arc<dyn MetadataStore> = crate::metadata::open(&config.metadata)?;
    let lifetime = config.link_ttl.saturating_add(config.fleet.key_grace);
    let keys = SigningKeys::load(
        config.keyring.clone(),
        metadata.as_ref(),
        lifetime,
        crate::fleet::unix_now(),
    )
    .map_err(StartError::Keys)?;
    let fleet =
        Arc::new(Fleet::new(&config, Arc::clone(&metadata), keys).map_err(StartError::Fleet)?);
    let metrics = crate::metrics::Metrics::new();
    let auth = Authenticator::new(
        &config.auth,
        crate::keystone::TokenCounts(metrics.token_cache.clone()),
    )?;
    Ok(Arc::new(AppState {
        config,
        metadata,
        fleet,
        auth,
        metrics,
    }))
}

/// Starts the fleet's health checks and keyring pushes in the background,
/// and readies a Swift store's container.
pub fn start_fleet(state: &AppState) -> tokio::task::JoinHandle<()> {
    if let crate::store::Store::Swift(swift) = &state.config.store {
        // Ready before the first upload, or a clear log line now; an upload
        // tries again.
        let swift = Arc::clone(swift);
        tokio::spawn(async move {
            if let Err(e) = swift.prepare().await {
                tracing::warn!(error = %e, "the Swift store is not ready yet");
            }
        });
    }
    tokio::spawn(crate::fleet::run(Arc::clone(&state.fleet)))
}

/// Binds the listener; returns it and its address.
pub async fn bind(config: &Config) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })
}

/// Serves until `shutdown` resolves, then finishes requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The first round before the first request: the nodes get the keyring
    // and a health verdict (each call bounded by the node timeout).
    crate::fleet::round(&state.fleet).await;
    let fleet = start_fleet(&state);
    let served = match &state.config.tls {
        Some(files) => {
            let acceptor = crate::tls::Acceptor::new(files.clone())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            crate::tls::serve(listener, Arc::new(acceptor), router(state), shutdown).await
        }
        None => {
            axum::serve(listener, router(state))
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    fleet.abort();
    served
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called (inside the runtime), not when the future is first polled: a
/// signal that comes in between is kept, not fatal.
pub fn signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(term) => {}
            _ = wait(int) => {}
        }
    }
}
