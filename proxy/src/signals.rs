//! Signals: SIGHUP reloads the keyring and the TLS certificate; SIGTERM and SIGINT start the drain.

use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::server::Shared;

/// Handles the signals on a thread of their own until the first SIGTERM or
/// SIGINT, which sets the shutdown flag the workers drain on.
pub fn install(shared: Arc<Shared>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("glance-stream-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    if let Err(e) = shared.reload_keyring() {
                        tracing::error!(error = %e, "keyring reload failed; the previous keyring stays in use");
                    }
                    if let Err(e) = shared.reload_tls() {
                        tracing::error!(error = %e, "TLS reload failed; the previous certificate stays in use");
                    }
                } else {
                    tracing::info!(signal, "draining: no new connections, finishing requests in flight");
                    shared.begin_shutdown();
                    break;
                }
            }
        })?;
    Ok(())
}
