//! The HTTP API: the router and the state its handlers share.

mod cache;
mod data;
mod digests;
mod extract;
mod fleet_admin;
mod head;
mod images;
mod import;
mod info;
mod links;
pub(crate) mod list;
mod members;
pub mod metadefs;
pub(crate) mod patch;
mod policy;
mod schemas;
mod tasks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::error::ApiError;
use crate::metadata::MetadataStore;

/// What every handler reads.
pub struct AppState {
    /// The checked configuration.
    pub config: Config,
    /// Image records.
    pub metadata: Arc<dyn MetadataStore>,
    /// The stream nodes and the keys links are signed with.
    pub fleet: Arc<crate::fleet::Fleet>,
    /// Token validation.
    pub auth: Authenticator,
    /// Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
}

/// Shared handle to the state.
pub type Shared = Arc<AppState>;

/// The whole API as a router (tests call it without a socket).
pub fn router(state: Shared) -> Router {
    let v2 = Router::new()
        .route("/v2/images", get(list::list).post(images::create))
        .route(
            "/v2/images/{id}",
            get(images::show).patch(patch::patch).delete(images::delete),
        )
        .route(
            "/v2/images/{id}/file",
            put(data::upload)
                .get(data::download)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/v2/images/{id}/tags/{tag}",
            put(images::add_tag).delete(images::remove_tag),
        )
        .route(
            "/v2/images/{id}/actions/deactivate",
            post(images::deactivate),
        )
        .route(
            "/v2/images/{id}/actions/reactivate",
            post(images::reactivate),
        )
        .route(
            "/v2/images/{id}/members",
            get(members::list).post(members::create),
        )
        .route(
            "/v2/images/{id}/members/{member}",
            get(members::show)
                .put(members::update)
                .delete(members::delete),
        )
        .route("/v2/schemas/image", get(schemas::image))
        .route("/v2/schemas/images", get(schemas::images))
        .route("/v2/schemas/member", get(schemas::member))
        .route("/v2/schemas/members", get(schemas::members))
        .route("/v2/info/stores", get(info_stores))
        .route("/v2/info/stores/detail", get(info::stores_detail))
        .route("/v2/info/import", get(import::info))
        .route("/v2/info/usage", get(info::usage))
        .route("/v2/images/{id}/stage", put(import::stage))
        .route("/v2/images/{id}/import", post(import::import))
        .route("/v2/images/{id}/tasks", get(tasks::of_image))
        .route("/v2/images/{id}/locations", get(info::locations))
        .route(
            "/v2/stores/{store}/{id}",
            axum::routing::delete(info::delete_from_store),
        )
        .route("/v2/tasks", get(tasks::list).post(tasks::create_legacy))
        .route("/v2/tasks/{id}", get(tasks::show))
        .route("/v2/schemas/task", get(schemas::task))
        .route("/v2/schemas/tasks", get(schemas::tasks))
        .route("/v2/images/{id}/links", post(links::create))
        .route("/v2/cache", get(cache::list).delete(cache::clear))
        .route("/v2/cache/clean", post(cache::clean))
        .route("/v2/cache/prune", post(cache::prune))
        .route("/v2/cache/nodes/{id}", get(cache::nodes))
        .route("/v2/cache/{id}", put(cache::queue).delete(cache::delete))
        .route("/admin/nodes", get(fleet_admin::list_nodes))
        .route(
            "/admin/nodes/{name}",
            get(fleet_admin::show_node)
                .put(fleet_admin::put_node)
                .delete(fleet_admin::delete_node),
        )
        .route("/admin/nodes/{name}/drain", post(fleet_admin::drain_node))
        .route(
            "/admin/nodes/{name}/undrain",
            post(fleet_admin::undrain_node),
        )
        .route("/admin/keys", get(fleet_admin::list_keys))
        .route("/admin/keys/rotate", post(fleet_admin::rotate_keys))
        .merge(metadefs::routes())
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authenticate,
        ));
    Router::new()
        .route("/", get(versions_multiple))
        .route("/versions", get(versions))
        .route("/v2", get(versions_multiple))
        .route("/v2/", get(versions_multiple))
        .route("/metrics", get(crate::metrics::serve))
        .merge(v2)
        .layer(middleware::from_fn(head::check))
        .layer(middleware::from_fn(request_id))
        .layer(middleware::from_fn(crate::error::negotiate))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            crate::metrics::track,
        ))
        .with_state(state)
}

/// The id of one request (`req-<uuid>`), as Glance's request-id
/// middleware makes it: in the request's extensions for the handlers (an
/// import's task records it) and in the `x-openstack-request-id` header of
/// the response.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = format!("req-{}", uuid::Uuid::new_v4());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-openstack-request-id", v);
    }
    resp
}

/// Checks `X-Auth-Token` and puts the caller's context in the request.
async fn authenticate(State(state): State<Shared>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let service_token = req
        .headers()
        .get("x-service-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // A service token (Nova sends its own beside the user's) must be valid;
    // with the `service` role it lets a recently expired user token through,
    // as keystonemiddleware does for long operations.
    let service = match service_token {
        None => Ok(None),
        Some(s) => state.auth.validate(&s, false).await.map(Some),
    };
    let validated = match (service, token) {
        (Err(e), _) => Err(e),
        (Ok(Some(None)), _) | (_, None) => Ok(None),
        (Ok(service), Some(t)) => {
            let allow_expired = service.flatten().is_some_and(|s| s.has_role("service"));
            state.auth.validate(&t, allow_expired).await
        }
    };
    match validated {
        Ok(Some(ctx)) => {
            req.extensions_mut().insert(ctx);
            next.run(req).await
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot validate a token");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The identity service cannot be reached to check the token; try again",
            )
            .into_response()
        }
        Ok(None) => {
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "This server could not verify that you are authorized: send a valid X-Auth-Token",
            )
            .into_response();
            let challenge = format!("Keystone uri=\"{}\"", state.config.public_url);
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            resp
        }
    }
}

/// The API versions this server speaks: up to v2.18 (the cache API with
/// clean and prune) when it has stream nodes to cache on, else up to v2.16.
fn versions_body(state: &Shared) -> serde_json::Value {
    let href = format!("{}/v2/", state.config.public_url);
    let current = if cache::supported(state) { 18 } else { 16 };
    let versions: Vec<serde_json::Value> = (0..=current)
        .rev()
        .map(|minor| {
            json!({
                "id": format!("v2.{minor}"),
                "status": if minor == current { "CURRENT" } else { "SUPPORTED" },
                "links": [{"rel": "self", "href": href}],
            })
        })
        .collect();
    json!({ "versions": versions })
}

async fn versions(State(state): State<Shared>) -> Response {
    axum::Json(versions_body(&state)).into_response()
}

async fn versions_multiple(State(state): State<Shared>) -> Response {
    (
        StatusCode::MULTIPLE_CHOICES,
        axum::Json(versions_body(&state)),
    )
        .into_response()
}

async fn info_stores(State(state): State<Shared>) -> Response {
    let stores: Vec<serde_json::Value> = state
        .config
        .store_ids()
        .into_iter()
        .enumerate()
        .map(|(i, id)| match i {
            0 => json!({"id": id, "default": "true"}),
            _ => json!({"id": id}),
        })
        .collect();
    axum::Json(json!({ "stores": stores })).into_response()
}
