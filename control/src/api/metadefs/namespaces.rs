//! Namespaces: list, create, show, replace and delete.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::model::{
    self, ASSOCIATION_FIELDS, Association, LINKED_READ_ONLY, MAX_DESCRIPTION, MAX_NAME, MAX_OWNER,
    Namespace, OBJECT_FIELDS, Tag, check_fields, opt_bool, opt_string,
};
use super::resource_types::ensure_resource_types;
use super::{readable, unprotected, visible, writable};
use crate::api::Shared;
use crate::api::images::{blocking, now};
use crate::api::list::page_link;
use crate::api::policy::{self, Action, Target};
use crate::auth::Context;
use crate::error::ApiError;
use crate::metadata::DocKind;

/// Fields of a namespace in a request body.
const FIELDS: [&str; 10] = [
    "namespace",
    "display_name",
    "description",
    "visibility",
    "protected",
    "owner",
    "resource_type_associations",
    "properties",
    "objects",
    "tags",
];
/// Page size when none is asked for.
const DEFAULT_LIMIT: usize = 25;
/// Largest page.
const MAX_LIMIT: usize = 1000;
/// Keys a list may be sorted on.
const SORT_KEYS: [&str; 8] = [
    "created_at",
    "updated_at",
    "namespace",
    "display_name",
    "description",
    "visibility",
    "protected",
    "owner",
];

/// A namespace's own fields from a request body (create, or the full
/// replacement of an update): owner defaults to the caller's project.
fn namespace_from(
    ctx: &Context,
    fields: &Map<String, Value>,
    now: &str,
) -> Result<Namespace, ApiError> {
    check_fields(fields, &LINKED_READ_ONLY, &FIELDS)?;
    let visibility = opt_string(fields, "visibility", None)?.unwrap_or_else(|| "private".into());
    if visibility != "public" && visibility != "private" {
        return Err(ApiError::bad_request(format!(
            "Invalid visibility '{visibility}': expected public or private"
        )));
    }
    Ok(Namespace {
        namespace: model::name_field(fields, "namespace")?,
        display_name: opt_string(fields, "display_name", Some(MAX_NAME))?,
        description: opt_string(fields, "description", Some(MAX_DESCRIPTION))?,
        visibility,
        protected: opt_bool(fields, "protected")?.unwrap_or(false),
        owner: opt_string(fields, "owner", Some(MAX_OWNER))?
            .unwrap_or_else(|| ctx.project_id.clone()),
        created_at: now.to_owned(),
        updated_at: now.to_owned(),
        created_ns: time::OffsetDateTime::now_utc().unix_timestamp_nanos(),
        objects: Vec::new(),
        properties: BTreeMap::new(),
        tags: Vec::new(),
        associations: Vec::new(),
    })
}

/// The parts a new namespace may be created with.
fn children_from(
    ns: &mut Namespace,
    fields: &Map<String, Value>,
    now: &str,
) -> Result<(), ApiError> {
    let list = |key: &str| -> Result<Vec<Map<String, Value>>, ApiError> {
        match fields.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_object().cloned().ok_or_else(|| {
                        ApiError::bad_request(format!("Items of '{key}' must be JSON objects"))
                    })
                })
                .collect(),
            Some(_) => Err(ApiError::bad_request(format!("'{key}' must be a list"))),
        }
    };
    for obj in list("objects")? {
        check_fields(&obj, &LINKED_READ_ONLY, &OBJECT_FIELDS)?;
        let obj = model::object_from(&obj, now)?;
        if ns.object(&obj.name).is_some() {
            return Err(ApiError::conflict(format!(
                "Object {} is given twice",
                obj.name
            )));
        }
        ns.objects.push(obj);
    }
    for tag in list("tags")? {
        check_fields(&tag, &[], &["name"])?;
        let name = model::name_field(&tag, "name")?;
        if ns.tags.iter().any(|t| t.name == name) {
            return Err(ApiError::conflict(format!("Tag {name} is given twice")));
        }
        ns.tags.push(Tag {
            name,
            created_at: now.to_owned(),
            updated_at: now.to_owned(),
        });
    }
    for a in list("resource_type_associations")? {
        check_fields(&a, &[], &ASSOCIATION_FIELDS)?;
        let a: Association = model::association_from(&a, now)?;
        if ns.association(&a.name).is_some() {
            return Err(ApiError::conflict(format!(
                "Resource type {} is given twice",
                a.name
            )));
        }
        ns.associations.push(a);
    }
    if let Some(props) = fields.get("properties") {
        for (name, def) in model::property_map(props)? {
            if let Value::Object(def) = def {
                ns.properties.insert(name, def);
            }
        }
    }
    Ok(())
}

/// `POST /v2/metadefs/namespaces`: `201` with the namespace.
pub async fn create(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    policy::check(Action::ManageMetadefs, &ctx, Target::default())?;
    let fields = model::body_object(&body)?;
    let stamp = now();
    let mut ns = namespace_from(&ctx, &fields, &stamp)?;
    children_from(&mut ns, &fields, &stamp)?;
    ns.check_size()?;
    let doc = serde_json::to_value(&ns).map_err(|e| ApiError::from_internal(&e))?;
    let (key, types) = (
        ns.namespace.clone(),
        ns.associations
            .iter()
            .map(|a| a.name.clone())
            .collect::<Vec<_>>(),
    );
    blocking(&state, move |m| {
        ensure_resource_types(m, &types)?;
        m.doc_create(DocKind::MetadefNamespace, &key, &doc)
    })
    .await?;
    let mut resp = (StatusCode::CREATED, axum::Json(ns.to_json_full(None))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v2/metadefs/namespaces/{}", ns.namespace)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// `GET /v2/metadefs/namespaces/{ns}`: the namespace and what it holds
/// (`?resource_type=` prefixes the property names as that type uses them).
pub async fn show(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let ns = readable(&state, &ctx, &name).await?;
    let rt = super::query_value(query.as_deref(), "resource_type");
    Ok(axum::Json(ns.to_json_full(rt.as_deref())).into_response())
}

/// `PUT /v2/metadefs/namespaces/{ns}`: replaces the namespace's own fields
/// (a new `namespace` renames it); what it holds stays.
pub async fn update(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    writable(&state, &ctx, &name).await?;
    let fields = model::body_object(&body)?;
    let new = namespace_from(&ctx, &fields, &now())?;
    let rename = (new.namespace != name).then(|| new.namespace.clone());
    let (ns, ()) = super::change(&state, &name, rename, move |ns, _| {
        ns.namespace = new.namespace.clone();
        ns.display_name = new.display_name.clone();
        ns.description = new.description.clone();
        ns.visibility = new.visibility.clone();
        ns.protected = new.protected;
        ns.owner = new.owner.clone();
        Ok(())
    })
    .await?;
    Ok(axum::Json(ns.to_json()).into_response())
}

/// `DELETE /v2/metadefs/namespaces/{ns}`: the namespace and all it holds.
pub async fn delete(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let ns = writable(&state, &ctx, &name).await?;
    unprotected(&ns)?;
    let key = name.clone();
    let removed = blocking(&state, move |m| {
        m.doc_delete(DocKind::MetadefNamespace, &key)
    })
    .await?;
    if !removed {
        return Err(super::no_namespace(&name));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A parsed list request.
struct ListQuery {
    limit: usize,
    marker: Option<String>,
    sort_key: String,
    descending: bool,
    visibility: Option<String>,
    resource_types: Option<Vec<String>>,
    /// The query without `marker`, for the links.
    base: Vec<(String, String)>,
}

fn parse_list_query(raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery {
        limit: DEFAULT_LIMIT,
        marker: None,
        sort_key: "created_at".into(),
        descending: true,
        visibility: None,
        resource_types: None,
        base: Vec::new(),
    };
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let (k, v) = (k.into_owned(), v.into_owned());
        match k.as_str() {
            "limit" => {
                let n: usize = v.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "limit must be a non-negative integer, not '{v}'"
                    ))
                })?;
                q.limit = n.min(MAX_LIMIT);
            }
            "marker" => {
                q.marker = Some(v);
                continue;
            }
            "sort_key" => {
                if !SORT_KEYS.contains(&v.as_str()) {
                    return Err(ApiError::bad_request(format!(
                        "Invalid sort_key '{v}': expected one of {}",
                        SORT_KEYS.join(", ")
                    )));
                }
                q.sort_key = v.clone();
            }
            "sort_dir" => {
                q.descending = match v.as_str() {
                    "desc" => true,
                    "asc" => false,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "Invalid sort_dir '{v}': expected asc or desc"
                        )));
                    }
                }
            }
            "visibility" => {
                if v != "public" && v != "private" {
                    return Err(ApiError::bad_request(format!(
                        "Invalid visibility '{v}': expected public or private"
                    )));
                }
                q.visibility = Some(v.clone());
            }
            "resource_types" => {
                q.resource_types = Some(v.split(',').map(|s| s.trim().to_owned()).collect());
            }
            _ => {}
        }
        q.base.push((k, v));
    }
    Ok(q)
}

/// The value a namespace is sorted by.
fn sort_value(ns: &Namespace, key: &str) -> String {
    match key {
        "updated_at" => ns.updated_at.clone(),
        "namespace" => ns.namespace.clone(),
        "display_name" => ns.display_name.clone().unwrap_or_default(),
        "description" => ns.description.clone().unwrap_or_default(),
        "visibility" => ns.visibility.clone(),
        "protected" => ns.protected.to_string(),
        "owner" => ns.owner.clone(),
        _ => ns.created_at.clone(),
    }
}

/// `GET /v2/metadefs/namespaces`: the namespaces the caller sees, newest
/// first unless sorted otherwise, a page at a time.
pub async fn list(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    policy::check(Action::ReadMetadefs, &ctx, Target::default())?;
    let q = parse_list_query(raw.as_deref())?;
    let docs = blocking(&state, |m| m.doc_list(DocKind::MetadefNamespace)).await?;
    let mut all: Vec<Namespace> = Vec::with_capacity(docs.len());
    for (_, doc) in docs {
        all.push(serde_json::from_value(doc).map_err(|e| ApiError::from_internal(&e))?);
    }
    all.retain(|ns| {
        visible(&ctx, ns)
            && q.visibility.as_ref().is_none_or(|v| *v == ns.visibility)
            && q.resource_types
                .as_ref()
                .is_none_or(|rts| rts.iter().any(|rt| ns.association(rt).is_some()))
    });
    all.sort_by(|a, b| {
        let order = sort_value(a, &q.sort_key)
            .cmp(&sort_value(b, &q.sort_key))
            .then(a.created_ns.cmp(&b.created_ns))
            .then(a.namespace.cmp(&b.namespace));
        if q.descending { order.reverse() } else { order }
    });
    let start = match &q.marker {
        None => 0,
        Some(m) => match all.iter().position(|ns| &ns.namespace == m) {
            Some(i) => i + 1,
            None => return Err(super::no_namespace(m)),
        },
    };
    let page: Vec<&Namespace> = all.iter().skip(start).take(q.limit).collect();
    let items: Vec<Value> = page
        .iter()
        .map(|ns| {
            let mut v = ns.to_json();
            if !ns.associations.is_empty()
                && let Some(o) = v.as_object_mut()
            {
                o.insert("resource_type_associations".into(), ns.associations_json());
            }
            v
        })
        .collect();
    let mut body = json!({
        "namespaces": items,
        "first": page_link("/v2/metadefs/namespaces", &q.base, None),
        "schema": "/v2/schemas/metadefs/namespaces",
    });
    if q.limit > 0
        && page.len() == q.limit
        && let (Some(last), Some(o)) = (page.last(), body.as_object_mut())
    {
        o.insert(
            "next".into(),
            json!(page_link(
                "/v2/metadefs/namespaces",
                &q.base,
                Some(&last.namespace)
            )),
        );
    }
    Ok(axum::Json(body).into_response())
}
