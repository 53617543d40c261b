//! The fleet's admin API (admin role): stream nodes under `/admin/nodes`,
//! signing keys under `/admin/keys`.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::Shared;
use super::policy::{self, Action, Target};
use crate::auth::Context;
use crate::error::ApiError;
use crate::fleet::{Fleet, FleetError};
use crate::model::StreamNode;

/// The body of `PUT /admin/nodes/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeBody {
    /// Where downloads go.
    pub public_url: String,
    /// Where glance-api checks and administers it (default: `public_url`).
    #[serde(default)]
    pub admin_url: Option<String>,
    /// Its relative share (default 100).
    #[serde(default)]
    pub weight: Option<u32>,
}

fn admin_only(ctx: &Context) -> Result<(), ApiError> {
    policy::check(Action::ManageFleet, ctx, Target::default())
}

/// Runs a registry change off the async threads (it writes the metadata store).
async fn change<T: Send + 'static>(
    state: &Shared,
    f: impl FnOnce(&Fleet) -> Result<T, FleetError> + Send + 'static,
) -> Result<T, ApiError> {
    let fleet = Arc::clone(&state.fleet);
    match tokio::task::spawn_blocking(move || f(&fleet)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(FleetError::NoSuchNode(name))) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("No stream node is named {name}"),
        )),
        Ok(Err(e)) => Err(ApiError::from_internal(&e)),
        Err(e) => Err(ApiError::from_internal(&e)),
    }
}

fn node_json(state: &Shared, name: &str) -> Result<Response, ApiError> {
    state
        .fleet
        .view(name)
        .map(|v| axum::Json(v).into_response())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("No stream node is named {name}"),
            )
        })
}

/// `GET /admin/nodes`.
pub async fn list_nodes(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
) -> Result<Response, ApiError> {
    admin_only(&ctx)?;
    Ok(axum::Json(json!({ "nodes": state.fleet.views() })).into_response())
}

/// `GET /admin/nodes/{name}`.
pub async fn show_node(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(&ctx)?;
    node_json(&state, &name)
}

/// `PUT /admin/nodes/{name}`: registers a node or changes its URLs and
/// weight (`201` when new). A new node is sent the keyring and checked at
/// once, so it takes downloads as soon as it answers.
pub async fn put_node(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    admin_only(&ctx)?;
    let body: NodeBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("The node is not valid JSON: {e}")))?;
    crate::config::check_node_name(&name).map_err(ApiError::bad_request)?;
    let public_url =
        crate::config::check_node_url(&body.public_url).map_err(ApiError::bad_request)?;
    let admin_url = match &body.admin_url {
        Some(u) => crate::config::check_node_url(u).map_err(ApiError::bad_request)?,
        None => public_url.clone(),
    };
    let weight = body.weight.unwrap_or(100);
    if weight == 0 {
        return Err(ApiError::bad_request("weight must be at least 1"));
    }
    let node = StreamNode {
        name: name.clone(),
        public_url,
        admin_url,
        weight,
        drained: false,
    };
    let created = change(&state, move |f| f.put(node)).await?;
    if state.fleet.client.can_administer() {
        state.fleet.push_keyring(std::slice::from_ref(&name)).await;
    }
    state.fleet.check(&name).await;
    tracing::info!(node = %name, created, "stream node registered");
    let mut resp = node_json(&state, &name)?;
    if created {
        *resp.status_mut() = StatusCode::CREATED;
    }
    Ok(resp)
}

/// `DELETE /admin/nodes/{name}`: the node leaves the registry (its cache
/// stays); only its images move.
pub async fn delete_node(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(&ctx)?;
    let shown = name.clone();
    change(&state, move |f| f.remove(&name)).await?;
    tracing::info!(node = %shown, "stream node removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /admin/nodes/{name}/drain`: no new downloads go to the node.
pub async fn drain_node(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_drained(state, ctx, name, true).await
}

/// `POST /admin/nodes/{name}/undrain`: the node takes downloads again.
pub async fn undrain_node(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_drained(state, ctx, name, false).await
}

async fn set_drained(
    state: Shared,
    ctx: Context,
    name: String,
    drained: bool,
) -> Result<Response, ApiError> {
    admin_only(&ctx)?;
    let n = name.clone();
    change(&state, move |f| f.set_drained(&n, drained)).await?;
    tracing::info!(node = %name, drained, "stream node drain changed");
    node_json(&state, &name)
}

/// `GET /admin/keys`: every signing key (ids and times, never secrets).
pub async fn list_keys(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
) -> Result<Response, ApiError> {
    admin_only(&ctx)?;
    let keys = state
        .fleet
        .key_views()
        .await
        .map_err(|e| ApiError::from_internal(&e))?;
    let primary = keys.iter().find(|k| k.primary).map(|k| k.id.clone());
    Ok(axum::Json(json!({ "primary": primary, "keys": keys })).into_response())
}

/// `POST /admin/keys/rotate`: a new primary key, pushed to every node; the
/// replaced key stays until the links it signed expired (plus the grace).
pub async fn rotate_keys(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
) -> Result<Response, ApiError> {
    admin_only(&ctx)?;
    let (rotation, pushed) = match state.fleet.rotate(state.config.link_ttl).await {
        Ok(done) => done,
        Err(e @ FleetError::NoAdminToken) => return Err(ApiError::conflict(e.to_string())),
        Err(e) => return Err(ApiError::from_internal(&e)),
    };
    let nodes: Vec<serde_json::Value> = pushed
        .into_iter()
        .map(|(name, outcome)| match outcome {
            Ok(()) => json!({"name": name, "pushed": true}),
            Err(e) => json!({"name": name, "pushed": false, "error": e}),
        })
        .collect();
    Ok(axum::Json(json!({
        "primary": rotation.primary,
        "replaced": rotation.replaced.id,
        "replaced_retire_at": rotation.replaced.retire_at,
        "nodes": nodes,
    }))
    .into_response())
}
