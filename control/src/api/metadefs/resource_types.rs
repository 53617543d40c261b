//! Resource types and namespaces' associations with them. The types every
//! deployment knows are there from the first call; associating a namespace
//! with an unknown type creates it.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::model::{self, ASSOCIATION_FIELDS, ResourceType, SEEDED_RESOURCE_TYPES, TIMESTAMPS};
use super::{change, readable, unprotected, writable};
use crate::api::Shared;
use crate::api::images::{blocking, now};
use crate::api::policy::{self, Action, Target};
use crate::auth::Context;
use crate::error::ApiError;
use crate::metadata::{DocKind, MetadataError, MetadataStore};

/// Creates the resource types named that do not exist yet (seeded ones
/// protected); two replicas doing it at once is fine.
pub fn ensure_resource_types(m: &dyn MetadataStore, names: &[String]) -> Result<(), MetadataError> {
    let stamp = now();
    for name in names {
        if m.doc_get(DocKind::MetadefResourceType, name)?.is_some() {
            continue;
        }
        let rt = ResourceType {
            name: name.clone(),
            protected: SEEDED_RESOURCE_TYPES.contains(&name.as_str()),
            created_at: stamp.clone(),
            updated_at: stamp.clone(),
            created_ns: time::OffsetDateTime::now_utc().unix_timestamp_nanos(),
        };
        let doc = serde_json::to_value(&rt).map_err(|e| MetadataError::Db(e.to_string()))?;
        match m.doc_create(DocKind::MetadefResourceType, name, &doc) {
            Ok(()) | Err(MetadataError::DocExists(..)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `GET /v2/metadefs/resource_types`: every resource type, oldest first.
pub async fn list(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
) -> Result<Response, ApiError> {
    policy::check(Action::ReadMetadefs, &ctx, Target::default())?;
    let docs = blocking(&state, |m| {
        let seeded: Vec<String> = SEEDED_RESOURCE_TYPES
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        ensure_resource_types(m, &seeded)?;
        m.doc_list(DocKind::MetadefResourceType)
    })
    .await?;
    let mut types: Vec<ResourceType> = Vec::with_capacity(docs.len());
    for (_, doc) in docs {
        types.push(serde_json::from_value(doc).map_err(|e| ApiError::from_internal(&e))?);
    }
    types.sort_by(|a, b| a.created_ns.cmp(&b.created_ns).then(a.name.cmp(&b.name)));
    let listed: Vec<Value> = types
        .iter()
        .map(|t| json!({"name": t.name, "created_at": t.created_at, "updated_at": t.updated_at}))
        .collect();
    Ok(axum::Json(json!({"resource_types": listed})).into_response())
}

/// `GET /v2/metadefs/namespaces/{ns}/resource_types`.
pub async fn list_associations(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(ns): Path<String>,
) -> Result<Response, ApiError> {
    let ns = readable(&state, &ctx, &ns).await?;
    Ok(axum::Json(json!({"resource_type_associations": ns.associations_json()})).into_response())
}

/// `POST /v2/metadefs/namespaces/{ns}/resource_types`: `201` with the
/// association.
pub async fn associate(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(ns): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    writable(&state, &ctx, &ns).await?;
    let fields = model::body_object(&body)?;
    model::check_fields(&fields, &TIMESTAMPS, &ASSOCIATION_FIELDS)?;
    let association = model::association_from(&fields, &now())?;
    let names = vec![association.name.clone()];
    blocking(&state, move |m| ensure_resource_types(m, &names)).await?;
    let (_, association) = change(&state, &ns, None, move |ns, _| {
        if ns.association(&association.name).is_some() {
            return Err(ApiError::conflict(format!(
                "Namespace {} is already associated with resource type {}.",
                ns.namespace, association.name
            )));
        }
        ns.associations.push(association.clone());
        Ok(association.clone())
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(association.to_json())).into_response())
}

/// `DELETE /v2/metadefs/namespaces/{ns}/resource_types/{name}`: the
/// association goes; the resource type stays.
pub async fn dissociate(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    writable(&state, &ctx, &ns).await?;
    change(&state, &ns, None, move |ns, _| {
        if ns.association(&name).is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "Namespace {} is not associated with resource type {name}.",
                    ns.namespace
                ),
            ));
        }
        unprotected(ns)?;
        ns.associations.retain(|a| a.name != name);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
