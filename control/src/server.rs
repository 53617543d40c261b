//! Building the state from the configuration and serving until a signal.

use std::sync::Arc;

use crate::api::{AppState, router};
use crate::auth::Authenticator;
use crate::config::Config;
use crate::metadata::RedbStore;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The keyring could not be loaded.
    #[error(transparent)]
    Keyring(#[from] glance_link::KeyringError),
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

/// Builds the shared state: keyring, metadata, auth.
pub fn state(config: Config) -> Result<Arc<AppState>, StartError> {
    let keyring = glance_link::Keyring::load(&config.keyring)?;
    std::fs::create_dir_all(&config.store_path).map_err(|source| StartError::Store {
        path: config.store_path.display().to_string(),
        source,
    })?;
    let metadata = Arc::new(RedbStore::open(&config.metadata)?);
    let auth = Authenticator::new(&config.auth)?;
    Ok(Arc::new(AppState {
        config,
        metadata,
        keyring,
        auth,
    }))
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
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
