//! Metadata definitions (`/v2/metadefs/...`): namespaces of property
//! definitions, objects, tags and resource type associations that tell
//! clients (Horizon, Nova's scheduler hints) which image properties mean
//! what. As Glance's defaults: anyone with a role reads what is public or
//! their project's own, only admins write, and a protected namespace and
//! what it holds cannot be deleted. Each namespace is one document in the
//! metadata store.

mod children;
pub mod model;
mod namespaces;
mod resource_types;
pub mod schemas;

use axum::Router;
use axum::routing::get;

use super::Shared;
use super::images::{blocking, now};
use super::policy::{self, Action, Target};
use crate::auth::Context;
use crate::error::ApiError;
use crate::metadata::{DocKind, MetadataError};
use model::Namespace;

/// The routes under `/v2/metadefs` and `/v2/schemas/metadefs`.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/v2/metadefs/namespaces",
            get(namespaces::list).post(namespaces::create),
        )
        .route(
            "/v2/metadefs/namespaces/{ns}",
            get(namespaces::show)
                .put(namespaces::update)
                .delete(namespaces::delete),
        )
        .route(
            "/v2/metadefs/namespaces/{ns}/objects",
            get(children::list_objects)
                .post(children::create_object)
                .delete(children::delete_objects),
        )
        .route(
            "/v2/metadefs/namespaces/{ns}/objects/{name}",
            get(children::show_object)
                .put(children::update_object)
                .delete(children::delete_object),
        )
        .route(
            "/v2/metadefs/namespaces/{ns}/properties",
            get(children::list_properties)
                .post(children::create_property)
                .delete(children::delete_properties),
        )
        .route(
            "/v2/metadefs/namespaces/{ns}/properties/{name}",
            get(children::show_property)
                .put(children::update_property)
                .delete(children::delete_property),
        )
        .route(
            "/v2/metadefs/namespaces/{ns}/tags",
            get(children::list_tags)
                .post(children::create_tags)
                .delete(children::delete_tags),
        )
        .route(
            "/v2/metadefs/namespaces/{ns}/tags/{name}",
            get(children::show_tag)
                .post(children::create_tag)
                .put(children::update_tag)
                .delete(children::delete_tag),
        )
        .route(
            "/v2/metadefs/namespaces/{ns}/resource_types",
            get(resource_types::list_associations).post(resource_types::associate),
        )
        .route(
            "/v2/metadefs/namespaces/{ns}/resource_types/{name}",
            axum::routing::delete(resource_types::dissociate),
        )
        .route("/v2/metadefs/resource_types", get(resource_types::list))
        .route("/v2/schemas/metadefs/{name}", get(schemas::serve))
}

/// `404` for a namespace that does not exist or the caller may not see.
fn no_namespace(name: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        format!("Metadata definition namespace={name} was not found."),
    )
}

/// Whether `ctx` sees `ns`: admins, its project, and everyone with a role
/// when it is public.
fn visible(ctx: &Context, ns: &Namespace) -> bool {
    policy::allowed(Action::ReadMetadefs, ctx, Target::default())
        && (ctx.is_admin() || ns.visibility == "public" || ns.owner == ctx.project_id)
}

/// The namespace named `name`, if the caller sees it (else `404`).
async fn readable(state: &Shared, ctx: &Context, name: &str) -> Result<Namespace, ApiError> {
    let key = name.to_owned();
    let doc = blocking(state, move |m| m.doc_get(DocKind::MetadefNamespace, &key)).await?;
    let ns = doc
        .map(serde_json::from_value::<Namespace>)
        .transpose()
        .map_err(|e| ApiError::from_internal(&e))?;
    match ns {
        Some(ns) if visible(ctx, &ns) => Ok(ns),
        _ => Err(no_namespace(name)),
    }
}

/// As [`readable`], for a change: non-admins get `403`.
async fn writable(state: &Shared, ctx: &Context, name: &str) -> Result<Namespace, ApiError> {
    let ns = readable(state, ctx, name).await?;
    policy::check(Action::ManageMetadefs, ctx, Target::default())?;
    Ok(ns)
}

/// `403` for a delete in a protected namespace.
fn unprotected(ns: &Namespace) -> Result<(), ApiError> {
    if ns.protected {
        return Err(ApiError::forbidden(format!(
            "Namespace {} is protected and its definitions cannot be deleted.",
            ns.namespace
        )));
    }
    Ok(())
}

/// Applies `change` to the stored namespace `name` atomically (stamping
/// `updated_at` on it), under the name `rename` when given. `change` gets
/// the time of the change and refuses with an [`ApiError`], which is
/// answered as it is; the store's refusals become `404` and `409`.
async fn change<T: Send + 'static>(
    state: &Shared,
    name: &str,
    rename: Option<String>,
    mut change: impl FnMut(&mut Namespace, &str) -> Result<T, ApiError> + Send + 'static,
) -> Result<(Namespace, T), ApiError> {
    let key = name.to_owned();
    let stamp = now();
    let (stored, failure, out) = blocking(state, move |m| {
        let mut failure = None;
        let mut out = None;
        let mut changed = None;
        let stored = m.doc_update(
            DocKind::MetadefNamespace,
            &key,
            rename.as_deref(),
            &mut |doc| {
                let mut ns: Namespace =
                    serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
                match change(&mut ns, &stamp).and_then(|t| ns.check_size().map(|()| t)) {
                    Ok(t) => out = Some(t),
                    Err(e) => {
                        let message = e.message.clone();
                        failure = Some(e);
                        return Err(message);
                    }
                }
                ns.updated_at = stamp.clone();
                *doc = serde_json::to_value(&ns).map_err(|e| e.to_string())?;
                changed = Some(ns);
                Ok(())
            },
        );
        Ok((stored.map(|_| changed), failure, out))
    })
    .await?;
    if let Some(e) = failure {
        return Err(e);
    }
    match (stored, out) {
        (Ok(Some(ns)), Some(out)) => Ok((ns, out)),
        (Err(MetadataError::DocNotFound(..)), _) => Err(no_namespace(name)),
        (Err(e), _) => Err(e.into()),
        _ => Err(ApiError::from_internal(
            &"a namespace change returned nothing",
        )),
    }
}

/// The query's value of `key`, if given.
fn query_value(raw: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}
