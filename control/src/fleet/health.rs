//! The fleet's background loop: every `health_interval`, drop the signing
//! keys whose time has come, check every node's `/healthz`, and push the
//! keyring to every node that lacks the current one.

use std::sync::Arc;

use super::{Fleet, unix_now};

/// Runs the loop until the runtime stops; the first round comes one
/// interval after the call (the server runs one before it listens).
pub async fn run(fleet: Arc<Fleet>) {
    let period = fleet.settings.health_interval;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        round(&fleet).await;
    }
}

/// One round: expire keys, check health, push keyrings.
pub async fn round(fleet: &Arc<Fleet>) {
    let f = Arc::clone(fleet);
    let expired =
        tokio::task::spawn_blocking(move || f.keys.expire(f.metadata.as_ref(), unix_now())).await;
    match expired {
        Ok(Ok(dropped)) if !dropped.is_empty() => {
            tracing::info!(keys = ?dropped, "replaced signing keys dropped");
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot drop replaced signing keys"),
        Err(e) => tracing::error!(error = %e, "the key expiry task failed"),
    }
    let nodes = fleet.nodes();
    let checks = nodes.iter().map(|node| async move {
        let outcome = fleet.client.health(node).await;
        fleet.record_health(node, outcome, unix_now());
    });
    futures_util::future::join_all(checks).await;
    if fleet.client.can_administer() {
        let behind = fleet.behind();
        if !behind.is_empty() {
            fleet.push_keyring(&behind).await;
        }
    }
}
