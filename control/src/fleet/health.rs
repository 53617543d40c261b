//! The fleet's background loop: every `health_interval`, drop the signing
//! keys whose time has come, check every node's `/healthz`, and push the
//! keyring to every node that lacks the current one.

use std::sync::Arc;

use super::{Fleet, unix_now};

/// Runs the loop until the runtime stops; the first round runs at once.
pub async fn run(fleet: Arc<Fleet>) {
    let mut ticks = tokio::time::interval(fleet.settings.health_interval);
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
        (node.name.clone(), outcome)
    });
    let now = unix_now();
    for (name, outcome) in futures_util::future::join_all(checks).await {
        fleet.record_health(&name, outcome, now);
    }
    if fleet.client.can_administer() {
        let behind = fleet.behind();
        if !behind.is_empty() {
            fleet.push_keyring(&behind).await;
        }
    }
}
