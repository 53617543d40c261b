//! Glance's cache API (`/v2/cache`, Image API v2.14 to v2.18), answered by
//! fanning out to the stream nodes' admin APIs and merging their answers.
//! Every call reaches the nodes at once; a node that fails is named in the
//! answer (or a header, or the log) and does not hide what the others said;
//! when no node answers, the call fails (`502`).

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Shared;
use super::extract::ImageId;
use super::images::blocking;
use super::policy::{self, Action, Target};
use crate::auth::Context;
use crate::error::ApiError;
use crate::fleet::node_client::{CachedImage, Evicted, Inventory, NodeClient};
use crate::model::{Status, StreamNode};

/// The header naming the nodes a listing could not reach (their caches are
/// missing from it).
pub const UNREACHABLE: &str = "x-glance-stream-unreachable-nodes";

/// Whether this server answers the cache API: it needs stream nodes and the
/// token of their admin API.
pub fn supported(state: &Shared) -> bool {
    state.fleet.has_nodes() && state.fleet.client.can_administer()
}

/// The caller is an admin (`403`, first, as Glance) and the cache API is
/// available (`404`).
fn allowed(state: &Shared, ctx: &Context) -> Result<(), ApiError> {
    policy::check(Action::ManageCache, ctx, Target::default())?;
    if !supported(state) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "Caching via API is not supported at this site.",
        ));
    }
    Ok(())
}

/// Runs `call` on every node at once; returns each node with its outcome.
async fn each<'a, T, F, Fut>(
    nodes: &'a [StreamNode],
    call: F,
) -> Vec<(&'a StreamNode, Result<T, String>)>
where
    F: Fn(&'a StreamNode) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let calls = nodes.iter().map(|n| {
        let fut = call(n);
        async move { (n, fut.await) }
    });
    futures_util::future::join_all(calls).await
}

/// Every node's inventory (failures logged and named).
async fn inventories(state: &Shared) -> Vec<(StreamNode, Result<Inventory, String>)> {
    let nodes = state.fleet.nodes();
    let client = &state.fleet.client;
    each(&nodes, |n| client.inventory(n))
        .await
        .into_iter()
        .map(|(n, r)| {
            if let Err(e) = &r {
                tracing::warn!(node = %n.name, error = %e, "cannot read a node's cache inventory");
            }
            (n.clone(), r)
        })
        .collect()
}

/// One image of the merged inventory.
#[derive(Default)]
struct Merged {
    hits: u64,
    last_access: u64,
    created: u64,
    size: u64,
    nodes: Vec<String>,
}

/// `GET /v2/cache`: `cached_images` (complete on at least one node, with the
/// hits summed and the nodes named) and `queued_images` (being filled).
pub async fn list(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
) -> Result<Response, ApiError> {
    allowed(&state, &ctx)?;
    let mut cached: BTreeMap<String, Merged> = BTreeMap::new();
    let mut queued: Vec<String> = Vec::new();
    let mut failed = Vec::new();
    for (node, inv) in inventories(&state).await {
        match inv {
            Ok(inv) => {
                for img in &inv.images {
                    match img.state.as_str() {
                        "complete" => {
                            let m = cached.entry(img.id.clone()).or_default();
                            m.hits += img.hits;
                            m.last_access = m.last_access.max(img.last_access);
                            m.created = m.created.max(img.created);
                            m.size = img.size;
                            m.nodes.push(node.name.clone());
                        }
                        "filling" if !queued.contains(&img.id) => queued.push(img.id.clone()),
                        _ => {}
                    }
                }
            }
            Err(_) => failed.push(node.name),
        }
    }
    queued.retain(|id| !cached.contains_key(id));
    let cached: Vec<Value> = cached
        .into_iter()
        .map(|(id, m)| {
            json!({
                "image_id": id,
                "hits": m.hits,
                "last_accessed": m.last_access,
                // When the newest copy was made, as Glance's is when it was cached.
                "last_modified": m.created,
                "size": m.size,
                "nodes": m.nodes,
            })
        })
        .collect();
    // Glance's shape exactly: clients read every other key as a queue.
    let mut resp = axum::Json(json!({
        "cached_images": cached,
        "queued_images": queued,
    }))
    .into_response();
    if !failed.is_empty()
        && let Ok(v) = axum::http::HeaderValue::from_str(&failed.join(", "))
    {
        resp.headers_mut().insert(UNREACHABLE, v);
    }
    Ok(resp)
}

/// `?scope=` of `PUT /v2/cache/{id}`.
#[derive(Debug, Deserialize)]
pub struct QueueQuery {
    /// `placed` (default): the nodes placement puts the image on; `all`:
    /// every node not drained.
    #[serde(default)]
    pub scope: Option<String>,
}

/// `PUT /v2/cache/{id}`: pre-warms the image on its placed nodes (or every
/// node not drained with `?scope=all`); `202` once the nodes took it.
pub async fn queue(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
    Query(q): Query<QueueQuery>,
) -> Result<Response, ApiError> {
    allowed(&state, &ctx)?;
    let targets: Vec<StreamNode> = match q.scope.as_deref() {
        None | Some("placed") => state.fleet.placed(&id),
        Some("all") => state
            .fleet
            .nodes()
            .into_iter()
            .filter(|n| !n.drained)
            .collect(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "scope={other:?}: use \"placed\" or \"all\""
            )));
        }
    };
    let image = blocking(&state, move |m| m.get(&id))
        .await?
        .ok_or_else(|| ApiError::no_image(id))?;
    if image.status != Status::Active {
        return Err(ApiError::bad_request(format!(
            "Only images with status active can be targeted for queueing; image {id} is {}",
            image.status.as_str()
        )));
    }
    let Some(params) = crate::links::params(&image, crate::links::expiry(&state)) else {
        return Err(ApiError::bad_request(format!(
            "Image {id} has no data to cache"
        )));
    };
    if targets.is_empty() {
        return Err(super::data::no_node());
    }
    let query = state.fleet.keys.current().keyring.sign(params).query();
    let client = &state.fleet.client;
    let idt = id.to_string();
    let outcomes = each(&targets, |n| client.prewarm(n, &idt, &query)).await;
    let mut refusals = Vec::new();
    let tried = outcomes.len();
    for (n, r) in outcomes {
        match r {
            Ok(()) => tracing::info!(node = %n.name, image = %id, "pre-warm queued"),
            Err(e) => {
                tracing::warn!(node = %n.name, image = %id, error = %e, "pre-warm refused");
                refusals.push(format!("{}: {e}", n.name));
            }
        }
    }
    if refusals.len() == tried {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("No stream node took image {id}: {}", refusals.join("; ")),
        ));
    }
    // Glance answers with no body (clients read it as such); where the
    // image is placed is `GET /v2/cache/nodes/{id}`.
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Evicts `id` from every node; counts the nodes that held it, names the
/// ones where a download is reading it, and fails on any other error.
async fn evict_everywhere(state: &Shared, id: &str) -> Result<(usize, Vec<String>), ApiError> {
    let nodes = state.fleet.nodes();
    let client = &state.fleet.client;
    let mut removed = 0;
    let mut busy = Vec::new();
    let mut failed = Vec::new();
    for (n, r) in each(&nodes, |n| client.evict(n, id)).await {
        match r {
            Ok(Evicted::Removed) => removed += 1,
            Ok(Evicted::NotCached) => {}
            Ok(Evicted::InUse) => busy.push(n.name.clone()),
            Err(e) => {
                tracing::warn!(node = %n.name, image = %id, error = %e, "eviction failed");
                failed.push(format!("{}: {e}", n.name));
            }
        }
    }
    if !failed.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "Some stream nodes could not evict image {id}: {}",
                failed.join("; ")
            ),
        ));
    }
    Ok((removed, busy))
}

/// `DELETE /v2/cache/{id}`: removes the image from every node's cache
/// (`409` while a download is reading it somewhere).
pub async fn delete(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
) -> Result<Response, ApiError> {
    allowed(&state, &ctx)?;
    let (removed, busy) = evict_everywhere(&state, &id.to_string()).await?;
    if !busy.is_empty() {
        return Err(ApiError::conflict(format!(
            "Image {id} is being downloaded from {}; try again later",
            busy.join(", ")
        )));
    }
    if removed == 0 && blocking(&state, move |m| m.get(&id)).await?.is_none() {
        return Err(ApiError::no_image(id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Removes every entry whose state `pick` selects, on every node at once
/// (one entry at a time per node); entries a download is reading stay.
/// Returns (entries removed, bytes freed), or `502` naming the nodes when
/// none could be reached.
/// Evicts `image` from `node`, asking again for a moment while the node
/// says it is in use: a fill or pre-warm that has just finished lets go of
/// its entry a little after the node lists it as cached. An entry a
/// download is reading stays (Glance's cache would unlink it under the
/// reader; a stream node never does).
async fn evict_when_free(
    client: &NodeClient,
    node: &StreamNode,
    image: &str,
) -> Result<Evicted, String> {
    const TRIES: usize = 10;
    const PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
    let mut outcome = client.evict(node, image).await?;
    for _ in 1..TRIES {
        if !matches!(outcome, Evicted::InUse) {
            break;
        }
        tokio::time::sleep(PAUSE).await;
        outcome = client.evict(node, image).await?;
    }
    Ok(outcome)
}

async fn evict_matching(
    state: &Shared,
    pick: impl Fn(&CachedImage) -> bool,
) -> Result<(u64, u64), ApiError> {
    let nodes = state.fleet.nodes();
    let client = &state.fleet.client;
    let pick = &pick;
    let outcomes = each(&nodes, |node| async move {
        let inv = client.inventory(node).await?;
        let (mut files, mut bytes) = (0, 0);
        for img in inv.images.iter().filter(|i| pick(i)) {
            match evict_when_free(client, node, &img.id).await {
                Ok(Evicted::Removed) => {
                    files += 1;
                    bytes += img.bytes_present;
                }
                Ok(Evicted::InUse) => {
                    tracing::info!(node = %node.name, image = %img.id, "kept: a download is reading it");
                }
                Ok(Evicted::NotCached) => {}
                Err(e) => {
                    tracing::warn!(node = %node.name, image = %img.id, error = %e, "eviction failed");
                }
            }
        }
        Ok((files, bytes))
    })
    .await;
    let (mut files, mut bytes) = (0, 0);
    let mut failed = Vec::new();
    for (node, r) in &outcomes {
        match r {
            Ok((f, b)) => {
                files += f;
                bytes += b;
            }
            Err(e) => {
                tracing::warn!(node = %node.name, error = %e, "cannot reach a node's cache");
                failed.push(format!("{}: {e}", node.name));
            }
        }
    }
    if !outcomes.is_empty() && failed.len() == outcomes.len() {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("No stream node could be reached: {}", failed.join("; ")),
        ));
    }
    Ok((files, bytes))
}

/// `DELETE /v2/cache`: clears the caches (`x-image-cache-clear-target:
/// cache` for complete entries, `queue` for entries being filled, absent or
/// empty for both).
pub async fn clear(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    allowed(&state, &ctx)?;
    let target = headers
        .get("x-image-cache-clear-target")
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .unwrap_or_default();
    let (cache, queue) = match target.as_str() {
        "" => (true, true),
        "cache" => (true, false),
        "queue" => (false, true),
        _ => {
            return Err(ApiError::bad_request(
                "If provided 'x-image-cache-clear-target' must be 'cache', 'queue' or empty string.",
            ));
        }
    };
    let (files, bytes) = evict_matching(&state, |i| match i.state.as_str() {
        "complete" | "invalid" => cache,
        _ => queue,
    })
    .await?;
    tracing::info!(files, bytes, target = %target, "caches cleared");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v2/cache/clean`: removes the entries that failed verification on
/// every node.
pub async fn clean(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
) -> Result<Response, ApiError> {
    allowed(&state, &ctx)?;
    let (files, bytes) = evict_matching(&state, |i| i.state == "invalid").await?;
    Ok(
        axum::Json(json!({"total_files_cleaned": files, "total_bytes_cleaned": bytes}))
            .into_response(),
    )
}

/// `?target_bytes=` of `POST /v2/cache/prune`.
#[derive(Debug, Deserialize)]
pub struct PruneQuery {
    /// Bytes each node keeps at most (default: its own limit).
    #[serde(default)]
    pub target_bytes: Option<u64>,
}

/// `POST /v2/cache/prune`: evicts the least recently used entries on every
/// node until it holds at most `target_bytes`.
pub async fn prune(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Query(q): Query<PruneQuery>,
) -> Result<Response, ApiError> {
    allowed(&state, &ctx)?;
    let client = &state.fleet.client;
    let nodes = state.fleet.nodes();
    let outcomes = each(&nodes, |node| async move {
        let inv = client.inventory(node).await?;
        let target = q.target_bytes.unwrap_or(inv.bytes_limit);
        let p = client.prune(node, target).await?;
        Ok((p.evicted, inv.bytes_used.saturating_sub(p.bytes_used)))
    })
    .await;
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut errors = Vec::new();
    for (node, r) in outcomes {
        match r {
            Ok((f, b)) => {
                files += f;
                bytes += b;
            }
            Err(e) => errors.push(json!({"name": node.name, "error": e})),
        }
    }
    Ok(axum::Json(json!({
        "total_files_pruned": files,
        "total_bytes_pruned": bytes,
        "errors": errors,
    }))
    .into_response())
}

/// `GET /v2/cache/nodes/{id}`: where placement puts the image and which
/// nodes hold it, with each entry's state.
pub async fn nodes(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
) -> Result<Response, ApiError> {
    allowed(&state, &ctx)?;
    let placed: Vec<String> = state
        .fleet
        .placed(&id)
        .into_iter()
        .map(|n| n.name)
        .collect();
    let idt = id.to_string();
    let mut held = Vec::new();
    let mut errors = Vec::new();
    for (node, inv) in inventories(&state).await {
        match inv {
            Ok(inv) => {
                if let Some(img) = inv.images.iter().find(|i| i.id == idt) {
                    held.push(json!({
                        "name": node.name,
                        "state": img.state,
                        "size": img.size,
                        "bytes_present": img.bytes_present,
                        "hits": img.hits,
                        "last_accessed": img.last_access,
                        "last_modified": img.created,
                    }));
                }
            }
            Err(e) => errors.push(json!({"name": node.name, "error": e})),
        }
    }
    Ok(axum::Json(json!({
        "image_id": id,
        "placed": placed,
        "nodes": held,
        "errors": errors,
    }))
    .into_response())
}
