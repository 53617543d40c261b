//! What a namespace holds: objects, property definitions and tags. Names
//! are unique within their namespace (`409`); deletes in a protected
//! namespace are refused (`403`).

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::model::{
    self, LINKED_READ_ONLY, Namespace, OBJECT_FIELDS, TIMESTAMPS, Tag, check_fields,
};
use super::{change, readable, unprotected, writable};
use crate::api::Shared;
use crate::auth::Context;
use crate::error::ApiError;

fn not_found(what: &str, name: &str, ns: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Metadata definition {what}={name} was not found in namespace={ns}."),
    )
}

fn duplicate(what: &str, name: &str, ns: &str) -> ApiError {
    ApiError::conflict(format!(
        "A metadata definition {what} with name={name} already exists in namespace={ns}."
    ))
}

/// Checks the paging parameters Glance checks on object and tag lists.
fn check_paging(raw: Option<&str>) -> Result<(), ApiError> {
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let ok = match &*k {
            "limit" => v.parse::<usize>().is_ok(),
            "sort_dir" => v == "asc" || v == "desc",
            "visibility" => ["public", "private", "shared"].contains(&&*v),
            _ => true,
        };
        if !ok {
            return Err(ApiError::bad_request(format!(
                "Invalid value '{v}' for {k}"
            )));
        }
    }
    Ok(())
}

// --- objects ----------------------------------------------------------------

/// `GET .../objects`: every object of the namespace.
pub async fn list_objects(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(ns): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    check_paging(raw.as_deref())?;
    let ns = readable(&state, &ctx, &ns).await?;
    let objects: Vec<Value> = ns
        .objects
        .iter()
        .map(|o| o.to_json(&ns.namespace))
        .collect();
    Ok(
        axum::Json(json!({"objects": objects, "schema": "/v2/schemas/metadefs/objects"}))
            .into_response(),
    )
}

/// `POST .../objects`: `201` with the new object.
pub async fn create_object(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(ns): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    writable(&state, &ctx, &ns).await?;
    let fields = model::body_object(&body)?;
    check_fields(&fields, &LINKED_READ_ONLY, &OBJECT_FIELDS)?;
    let object = model::object_from(&fields, &crate::api::images::now())?;
    let (ns, object) = change(&state, &ns, None, move |ns, _| {
        if ns.object(&object.name).is_some() {
            return Err(duplicate("object", &object.name, &ns.namespace));
        }
        ns.objects.push(object.clone());
        Ok(object.clone())
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(object.to_json(&ns.namespace)),
    )
        .into_response())
}

/// `GET .../objects/{name}`.
pub async fn show_object(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let ns = readable(&state, &ctx, &ns).await?;
    let object = ns
        .object(&name)
        .ok_or_else(|| not_found("object", &name, &ns.namespace))?;
    Ok(axum::Json(object.to_json(&ns.namespace)).into_response())
}

/// `PUT .../objects/{name}`: replaces the object (a new `name` renames it).
pub async fn update_object(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path((ns, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    writable(&state, &ctx, &ns).await?;
    let fields = model::body_object(&body)?;
    check_fields(&fields, &LINKED_READ_ONLY, &OBJECT_FIELDS)?;
    let new = model::object_from(&fields, &crate::api::images::now())?;
    let (ns, object) = change(&state, &ns, None, move |ns, now| {
        if new.name != name && ns.object(&new.name).is_some() {
            return Err(duplicate("object", &new.name, &ns.namespace));
        }
        let namespace = ns.namespace.clone();
        let slot = ns
            .objects
            .iter_mut()
            .find(|o| o.name == name)
            .ok_or_else(|| not_found("object", &name, &namespace))?;
        let created_at = slot.created_at.clone();
        *slot = new.clone();
        slot.created_at = created_at;
        slot.updated_at = now.to_owned();
        Ok(slot.clone())
    })
    .await?;
    Ok(axum::Json(object.to_json(&ns.namespace)).into_response())
}

/// `DELETE .../objects/{name}`.
pub async fn delete_object(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    remove(&state, &ctx, &ns, "object", name, |ns, name| {
        let found = ns.object(name).is_some();
        ns.objects.retain(|o| o.name != name);
        found
    })
    .await
}

/// `DELETE .../objects`: every object of the namespace.
pub async fn delete_objects(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(ns): Path<String>,
) -> Result<Response, ApiError> {
    clear(&state, &ctx, &ns, |ns| ns.objects.clear()).await
}

/// Removes the `what` named `name` from a namespace (not a protected one):
/// `take` removes it and says whether it was there.
async fn remove(
    state: &Shared,
    ctx: &Context,
    ns: &str,
    what: &'static str,
    name: String,
    take: impl Fn(&mut Namespace, &str) -> bool + Send + 'static,
) -> Result<Response, ApiError> {
    writable(state, ctx, ns).await?;
    change(state, ns, None, move |ns, _| {
        // Check on a copy: nothing changes unless every check passes.
        let mut copy = ns.clone();
        if !take(&mut copy, &name) {
            return Err(not_found(what, &name, &ns.namespace));
        }
        unprotected(ns)?;
        *ns = copy;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Empties one part of a namespace (not a protected one).
async fn clear(
    state: &Shared,
    ctx: &Context,
    ns: &str,
    empty: impl Fn(&mut Namespace) + Send + 'static,
) -> Result<Response, ApiError> {
    writable(state, ctx, ns).await?;
    change(state, ns, None, move |ns, _| {
        unprotected(ns)?;
        empty(ns);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// --- properties -------------------------------------------------------------

/// `GET .../properties`: the definitions by name.
pub async fn list_properties(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(ns): Path<String>,
) -> Result<Response, ApiError> {
    let ns = readable(&state, &ctx, &ns).await?;
    let props: Map<String, Value> = ns
        .properties
        .into_iter()
        .map(|(k, v)| (k, Value::Object(v)))
        .collect();
    Ok(axum::Json(json!({"properties": props})).into_response())
}

/// `POST .../properties`: `201` with the definition.
pub async fn create_property(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(ns): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    writable(&state, &ctx, &ns).await?;
    let def = model::property_definition(&Value::Object(model::body_object(&body)?), true)?;
    let name = def_name(&def);
    let (_, def) = change(&state, &ns, None, move |ns, _| {
        if ns.properties.contains_key(&name) {
            return Err(duplicate("property", &name, &ns.namespace));
        }
        ns.properties.insert(name.clone(), def.clone());
        Ok(def.clone())
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(Value::Object(def))).into_response())
}

/// A checked top-level definition's name.
fn def_name(def: &Map<String, Value>) -> String {
    def.get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// `GET .../properties/{name}` (`?resource_type=` takes the name with that
/// type's prefix).
pub async fn show_property(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let ns = readable(&state, &ctx, &ns).await?;
    let key = match super::query_value(raw.as_deref(), "resource_type") {
        None => Some(name.as_str()),
        Some(rt) => ns
            .association(&rt)
            .and_then(|a| a.prefix.as_deref())
            .filter(|p| !p.is_empty())
            .and_then(|p| name.strip_prefix(p)),
    };
    let def = key
        .and_then(|k| ns.properties.get(k))
        .ok_or_else(|| not_found("property", &name, &ns.namespace))?;
    Ok(axum::Json(Value::Object(def.clone())).into_response())
}

/// `PUT .../properties/{name}`: replaces the definition (a new `name`
/// renames it).
pub async fn update_property(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path((ns, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    writable(&state, &ctx, &ns).await?;
    let def = model::property_definition(&Value::Object(model::body_object(&body)?), true)?;
    let new_name = def_name(&def);
    let (_, def) = change(&state, &ns, None, move |ns, _| {
        if !ns.properties.contains_key(&name) {
            return Err(not_found("property", &name, &ns.namespace));
        }
        if new_name != name && ns.properties.contains_key(&new_name) {
            return Err(duplicate("property", &new_name, &ns.namespace));
        }
        ns.properties.remove(&name);
        ns.properties.insert(new_name.clone(), def.clone());
        Ok(def.clone())
    })
    .await?;
    Ok(axum::Json(Value::Object(def)).into_response())
}

/// `DELETE .../properties/{name}`.
pub async fn delete_property(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    remove(&state, &ctx, &ns, "property", name, |ns, name| {
        let found = ns.properties.contains_key(name);
        ns.properties.remove(name);
        found
    })
    .await
}

/// `DELETE .../properties`: every definition of the namespace.
pub async fn delete_properties(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(ns): Path<String>,
) -> Result<Response, ApiError> {
    clear(&state, &ctx, &ns, |ns| ns.properties.clear()).await
}

// --- tags -------------------------------------------------------------------

/// `GET .../tags`: the namespace's tags, oldest first unless sorted otherwise.
pub async fn list_tags(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(ns): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    check_paging(raw.as_deref())?;
    let ns = readable(&state, &ctx, &ns).await?;
    let mut tags = ns.tags.clone();
    let (mut limit, mut marker, mut descending) = (usize::MAX, None, false);
    for (k, v) in form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        match &*k {
            "limit" => limit = v.parse().unwrap_or(usize::MAX),
            "marker" => marker = Some(v.into_owned()),
            "sort_dir" => descending = v == "desc",
            _ => {}
        }
    }
    if descending {
        tags.reverse();
    }
    let start = match marker {
        None => 0,
        Some(m) => tags
            .iter()
            .position(|t| t.name == m)
            .map(|i| i + 1)
            .ok_or_else(|| not_found("tag", &m, &ns.namespace))?,
    };
    let tags: Vec<Value> = tags
        .iter()
        .skip(start)
        .take(limit)
        .map(|t| json!({"name": t.name}))
        .collect();
    Ok(axum::Json(json!({"tags": tags})).into_response())
}

/// Whether the `X-Openstack-Append` header asks to keep existing tags.
fn append(headers: &HeaderMap) -> bool {
    headers
        .get("x-openstack-append")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            ["1", "t", "true", "on", "y", "yes"].contains(&v.trim().to_ascii_lowercase().as_str())
        })
}

/// `POST .../tags` (`{"tags": [{"name": ...}, ...]}`): replaces the tags,
/// or adds to them with `X-Openstack-Append: true`; a name taken twice
/// changes nothing (`409`).
pub async fn create_tags(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    writable(&state, &ctx, &ns).await?;
    let fields = model::body_object(&body)?;
    check_fields(&fields, &TIMESTAMPS, &["tags"])?;
    let mut names = Vec::new();
    for item in fields
        .get("tags")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_request("'tags' must be a list of {\"name\": ...}"))?
    {
        let item = item
            .as_object()
            .ok_or_else(|| ApiError::bad_request("Each tag must be a JSON object"))?;
        check_fields(item, &TIMESTAMPS, &["name"])?;
        names.push(model::name_field(item, "name")?);
    }
    if names.is_empty() {
        return Ok((StatusCode::CREATED, axum::Json(json!({"tags": []}))).into_response());
    }
    let keep = append(&headers);
    let listed: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
    change(&state, &ns, None, move |ns, now| {
        let mut tags = if keep { ns.tags.clone() } else { Vec::new() };
        for name in &names {
            if tags.iter().any(|t| &t.name == name) {
                return Err(duplicate("tag", name, &ns.namespace));
            }
            tags.push(Tag {
                name: name.clone(),
                created_at: now.to_owned(),
                updated_at: now.to_owned(),
            });
        }
        ns.tags = tags;
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"tags": listed}))).into_response())
}

/// `POST .../tags/{name}`: `201` with the new tag.
pub async fn create_tag(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    model::check_name(&name)?;
    writable(&state, &ctx, &ns).await?;
    let (_, tag) = change(&state, &ns, None, move |ns, now| {
        if ns.tags.iter().any(|t| t.name == name) {
            return Err(duplicate("tag", &name, &ns.namespace));
        }
        let tag = Tag {
            name: name.clone(),
            created_at: now.to_owned(),
            updated_at: now.to_owned(),
        };
        ns.tags.push(tag.clone());
        Ok(tag)
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(tag.to_json())).into_response())
}

/// `GET .../tags/{name}`.
pub async fn show_tag(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let ns = readable(&state, &ctx, &ns).await?;
    let tag = ns
        .tags
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| not_found("tag", &name, &ns.namespace))?;
    Ok(axum::Json(tag.to_json()).into_response())
}

/// `PUT .../tags/{name}` (`{"name": new}`): renames the tag.
pub async fn update_tag(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path((ns, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    writable(&state, &ctx, &ns).await?;
    let fields = model::body_object(&body)?;
    check_fields(&fields, &TIMESTAMPS, &["name"])?;
    let new = model::name_field(&fields, "name")?;
    let (_, tag) = change(&state, &ns, None, move |ns, now| {
        if new != name && ns.tags.iter().any(|t| t.name == new) {
            return Err(duplicate("tag", &new, &ns.namespace));
        }
        let namespace = ns.namespace.clone();
        let tag = ns
            .tags
            .iter_mut()
            .find(|t| t.name == name)
            .ok_or_else(|| not_found("tag", &name, &namespace))?;
        tag.name = new.clone();
        tag.updated_at = now.to_owned();
        Ok(tag.clone())
    })
    .await?;
    Ok(axum::Json(tag.to_json()).into_response())
}

/// `DELETE .../tags/{name}`.
pub async fn delete_tag(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    remove(&state, &ctx, &ns, "tag", name, |ns, name| {
        let found = ns.tags.iter().any(|t| t.name == name);
        ns.tags.retain(|t| t.name != name);
        found
    })
    .await
}

/// `DELETE .../tags`: every tag of the namespace.
pub async fn delete_tags(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(ns): Path<String>,
) -> Result<Response, ApiError> {
    clear(&state, &ctx, &ns, |ns| ns.tags.clear()).await
}
