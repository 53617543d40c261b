//! Setting properties (image create and PATCH) and Glance's JSON-patch dialect.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::extract::ImageId;
use super::policy::{Action, Target};
use super::{Shared, policy};
use crate::auth::Context;
use crate::error::ApiError;
use crate::model::{BASE, CONTAINER_FORMATS, DISK_FORMATS, Image, READ_ONLY, Visibility};

/// The media types PATCH accepts.
const PATCH_TYPES: [&str; 2] = [
    "application/openstack-images-v2.1-json-patch",
    "application/openstack-images-v2.0-json-patch",
];

/// Longest value of a string property, as Glance.
const MAX_STRING: usize = 255;

fn string(key: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) if s.len() <= MAX_STRING => Ok(s.clone()),
        Value::String(_) => Err(ApiError::bad_request(format!(
            "Value of '{key}' is longer than {MAX_STRING} characters"
        ))),
        _ => Err(ApiError::bad_request(format!(
            "Value of '{key}' must be a string"
        ))),
    }
}

fn opt_string(key: &str, v: &Value, allowed: Option<&[&str]>) -> Result<Option<String>, ApiError> {
    if v.is_null() {
        return Ok(None);
    }
    let s = string(key, v)?;
    if let Some(allowed) = allowed
        && !allowed.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "Invalid value '{s}' for '{key}': expected one of {}",
            allowed.join(", ")
        )));
    }
    Ok(Some(s))
}

fn boolean(key: &str, v: &Value) -> Result<bool, ApiError> {
    v.as_bool()
        .ok_or_else(|| ApiError::bad_request(format!("Value of '{key}' must be a boolean")))
}

fn count(key: &str, v: &Value) -> Result<u64, ApiError> {
    v.as_u64().ok_or_else(|| {
        ApiError::bad_request(format!("Value of '{key}' must be a non-negative integer"))
    })
}

/// Properties under this prefix are Glance's own (import progress and
/// results): users can neither set nor remove them.
pub const RESERVED_PREFIX: &str = "os_glance";

/// Refuses a property users may not change: read-only or reserved.
fn check_writable(key: &str) -> Result<(), ApiError> {
    if READ_ONLY.contains(&key) {
        return Err(ApiError::forbidden(format!(
            "Attribute '{key}' is read-only."
        )));
    }
    if key.starts_with(RESERVED_PREFIX) {
        return Err(ApiError::forbidden(format!(
            "Attribute '{key}' is reserved."
        )));
    }
    Ok(())
}

/// Sets one property from its JSON value (create, PATCH add/replace).
pub fn set_property(ctx: &Context, img: &mut Image, key: &str, v: &Value) -> Result<(), ApiError> {
    check_writable(key)?;
    match key {
        "name" => img.name = opt_string(key, v, None)?,
        "visibility" => {
            let s = string(key, v)?;
            let vis = Visibility::parse(&s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Invalid visibility '{s}': expected public, private, shared or community"
                ))
            })?;
            policy::check_visibility(ctx, img, vis)?;
            img.visibility = vis;
        }
        "protected" => img.protected = boolean(key, v)?,
        "os_hidden" => img.os_hidden = boolean(key, v)?,
        "disk_format" => img.disk_format = opt_string(key, v, Some(&DISK_FORMATS))?,
        "container_format" => img.container_format = opt_string(key, v, Some(&CONTAINER_FORMATS))?,
        "min_disk" => img.min_disk = count(key, v)?,
        "min_ram" => img.min_ram = count(key, v)?,
        "owner" => {
            policy::check(Action::SetOwner, ctx, Target::default())?;
            img.owner = opt_string(key, v, None)?;
        }
        "tags" => {
            let list = v.as_array().ok_or_else(|| {
                ApiError::bad_request("Value of 'tags' must be a list of strings")
            })?;
            img.tags = list
                .iter()
                .map(|t| string("tags", t))
                .collect::<Result<_, _>>()?;
        }
        "locations" => {
            return Err(ApiError::forbidden(
                "Image locations are managed by this service.",
            ));
        }
        _ if key.is_empty() || key.len() > MAX_STRING => {
            return Err(ApiError::bad_request(
                "Property names must be 1 to 255 characters",
            ));
        }
        _ => {
            img.properties.insert(key.to_owned(), string(key, v)?);
        }
    }
    Ok(())
}

/// Removes a property (PATCH remove).
fn remove_property(img: &mut Image, key: &str) -> Result<(), ApiError> {
    check_writable(key)?;
    if BASE.contains(&key) {
        return Err(ApiError::forbidden(format!(
            "Base property '{key}' cannot be removed."
        )));
    }
    if img.properties.remove(key).is_none() {
        return Err(ApiError::conflict(format!(
            "Property '{key}' does not exist."
        )));
    }
    Ok(())
}

/// The two ways Glance writes a patch operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `application/openstack-images-v2.1-json-patch` (RFC 6902):
    /// `{"op": "replace", "path": "/name", "value": ...}`.
    V21,
    /// `application/openstack-images-v2.0-json-patch` (the older draft):
    /// `{"replace": "/name", "value": ...}`.
    V20,
}

/// The operation's name and path, as its dialect writes them.
fn op_and_path(dialect: Dialect, op: &Value) -> Result<(&str, &str), ApiError> {
    let fields = op
        .as_object()
        .ok_or_else(|| ApiError::bad_request("Each patch operation must be a JSON object"))?;
    match dialect {
        Dialect::V21 => {
            let kind = fields.get("op").and_then(Value::as_str).unwrap_or("");
            let path = fields
                .get("path")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request("Each patch operation needs a 'path'"))?;
            Ok((kind, path))
        }
        Dialect::V20 => {
            let mut named = ["add", "replace", "remove"]
                .into_iter()
                .filter_map(|k| fields.get(k).map(|p| (k, p)));
            match (named.next(), named.next()) {
                (Some((kind, Value::String(path))), None) => Ok((kind, path.as_str())),
                (Some((kind, _)), None) => Err(ApiError::bad_request(format!(
                    "The path of operation '{kind}' must be a string"
                ))),
                _ => Err(ApiError::bad_request(
                    "Each patch operation needs exactly one of 'add', 'replace' or 'remove'",
                )),
            }
        }
    }
}

/// One JSON-patch operation on a property path.
fn apply_op(ctx: &Context, img: &mut Image, dialect: Dialect, op: &Value) -> Result<(), ApiError> {
    let (kind, path) = op_and_path(dialect, op)?;
    let key = path
        .strip_prefix('/')
        .filter(|k| !k.contains('/'))
        .ok_or_else(|| ApiError::bad_request(format!("Invalid path '{path}'")))?;
    // JSON pointer escapes.
    let key = key.replace("~1", "/").replace("~0", "~");
    match kind {
        "add" | "replace" => {
            let value = op.get("value").ok_or_else(|| {
                ApiError::bad_request(format!("Operation '{kind}' needs a 'value'"))
            })?;
            let exists = BASE.contains(&key.as_str()) || img.properties.contains_key(&key);
            if kind == "replace" && !exists {
                return Err(ApiError::conflict(format!(
                    "Property '{key}' does not exist."
                )));
            }
            set_property(ctx, img, &key, value)
        }
        "remove" => remove_property(img, &key),
        other => Err(ApiError::bad_request(format!(
            "Operation '{other}' is not supported; use add, replace or remove"
        ))),
    }
}

/// Parses a PATCH body: a JSON list of operations (each checked when applied).
pub fn parse_patch(body: &[u8]) -> Result<Vec<Value>, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("The patch is not a JSON list of operations: {e}"))
    })
}

/// Applies operations in order, stopping at the first that fails (the
/// caller applies to a copy, so a failed patch changes nothing).
pub fn apply_patch(
    ctx: &Context,
    img: &mut Image,
    dialect: Dialect,
    ops: &[Value],
) -> Result<(), ApiError> {
    ops.iter()
        .try_for_each(|op| apply_op(ctx, img, dialect, op))
}

/// `PATCH /v2/images/{id}`.
pub async fn patch(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let dialect = match PATCH_TYPES.iter().position(|t| *t == media) {
        Some(0) => Dialect::V21,
        Some(_) => Dialect::V20,
        None => {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "The request media type {media} is not supported; image PATCH expects one of: {}",
                PATCH_TYPES.join(", ")
            ),
        )
        .with_header(
            header::HeaderName::from_static("accept-patch"),
            "application/openstack-images-v2.0-json-patch, application/openstack-images-v2.1-json-patch",
        ))
        }
    };
    let ops = parse_patch(&body)?;
    let current = super::images::load_visible(&state, &ctx, id).await?;
    policy::check(Action::ModifyImage, &ctx, Target::image(&current))?;
    // Apply to a copy first so an invalid patch changes nothing and gets its own status.
    let mut preview = current.clone();
    apply_patch(&ctx, &mut preview, dialect, &ops)?;
    let now = super::images::now();
    let updated = super::images::blocking(&state, move |m| {
        m.update(&id, &mut |img| {
            apply_patch(&ctx, img, dialect, &ops).map_err(|e| e.message)?;
            img.updated_at = now.clone();
            Ok(())
        })
    })
    .await?;
    Ok(axum::Json(updated.to_json()).into_response())
}
