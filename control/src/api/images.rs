//! Image records: create, show, delete, tags, deactivate and reactivate.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use uuid::Uuid;

use super::extract::{ImageId, Tag};
use super::patch::set_property;
use super::policy::{Action, Target};
use super::{Shared, policy};
use crate::auth::Context;
use crate::error::ApiError;
use crate::metadata::{MetadataError, MetadataStore};
use crate::model::{Image, Status, timestamp};

/// The current time, as records store it.
pub fn now() -> String {
    timestamp(time::OffsetDateTime::now_utc())
}

/// Runs a metadata call off the async threads (redb commits wait for the disk).
pub async fn blocking<T: Send + 'static>(
    state: &Shared,
    f: impl FnOnce(&dyn MetadataStore) -> Result<T, MetadataError> + Send + 'static,
) -> Result<T, ApiError> {
    let metadata = std::sync::Arc::clone(&state.metadata);
    match tokio::task::spawn_blocking(move || f(metadata.as_ref())).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "metadata task failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the server log",
            ))
        }
    }
}

/// The image, if the caller may see it (else 404, as Glance answers).
pub async fn load_visible(state: &Shared, ctx: &Context, id: Uuid) -> Result<Image, ApiError> {
    let project = ctx.project_id.clone();
    let found = blocking(state, move |m| {
        let Some(img) = m.get(&id)? else {
            return Ok(None);
        };
        // The caller's membership matters only for a shared image it does not own.
        let membership = if img.visibility == crate::model::Visibility::Shared
            && img.owner.as_deref() != Some(project.as_str())
        {
            m.members(&id)?
                .into_iter()
                .find(|mb| mb.member_id == project)
                .map(|mb| mb.status)
        } else {
            None
        };
        Ok(Some((img, membership)))
    })
    .await?;
    match found {
        Some((img, membership)) if policy::visible(ctx, &img, membership) => Ok(img),
        _ => Err(ApiError::no_image(id)),
    }
}

/// `POST /v2/images`.
pub async fn create(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    policy::check(Action::AddImage, &ctx, Target::default())?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("The request body is not JSON: {e}")))?;
    let fields = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("The request body must be a JSON object"))?;
    let id = match fields.get("id") {
        Some(Value::String(s)) => Uuid::try_parse(s)
            .map_err(|_| ApiError::bad_request(format!("Invalid image id '{s}'")))?,
        Some(_) => return Err(ApiError::bad_request("Value of 'id' must be a UUID string")),
        None => Uuid::new_v4(),
    };
    let mut image = Image::new(id, Some(ctx.project_id.clone()), &now());
    for (key, value) in fields {
        if key == "id" {
            continue;
        }
        set_property(&ctx, &mut image, key, value)?;
    }
    let stored = image.clone();
    blocking(&state, move |m| m.create(&stored)).await?;
    let location = format!("{}/v2/images/{id}", state.config.public_url);
    let mut resp = (StatusCode::CREATED, axum::Json(image.to_json())).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&state.config.import.methods.join(",")) {
        h.insert("openstack-image-import-methods", v);
    }
    if let Ok(v) = HeaderValue::from_str(&state.config.store_ids().join(",")) {
        h.insert("openstack-image-store-ids", v);
    }
    Ok(resp)
}

/// `GET /v2/images/{id}`.
pub async fn show(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
) -> Result<Response, ApiError> {
    let image = load_visible(&state, &ctx, id).await?;
    Ok(axum::Json(image.to_json()).into_response())
}

/// `DELETE /v2/images/{id}`: the record, then the data.
pub async fn delete(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
) -> Result<Response, ApiError> {
    let image = load_visible(&state, &ctx, id).await?;
    policy::check(Action::DeleteImage, &ctx, Target::image(&image))?;
    if image.protected {
        return Err(ApiError::forbidden(format!(
            "Image {id} is protected and cannot be deleted."
        )));
    }
    blocking(&state, move |m| m.delete(&id)).await?;
    if image.staged.is_some() || matches!(image.status, Status::Uploading | Status::Importing) {
        super::import::unstage(&state, id).await;
    }
    // The data in every store that holds it. An image without data may
    // still have segments in Swift, from an upload cut short by a crash:
    // the store's delete removes those too.
    let mut objects: Vec<(&crate::store::Store, String)> = image
        .locations()
        .filter_map(|l| {
            state
                .config
                .store_by_id(&l.store)
                .map(|s| (s, l.key.clone()))
        })
        .collect();
    if image.location.is_none() && matches!(state.config.store, crate::store::Store::Swift(_)) {
        objects.push((&state.config.store, id.to_string()));
    }
    for (store, object) in objects {
        store
            .delete_logged(&object, "the data of a deleted image")
            .await;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Applies `change` to a visible image the caller may modify, stamping `updated_at`.
async fn modify(
    state: &Shared,
    ctx: &Context,
    id: Uuid,
    change: impl FnMut(&mut Image) -> Result<(), String> + Send + 'static,
) -> Result<Image, ApiError> {
    let image = load_visible(state, ctx, id).await?;
    policy::check(Action::ModifyImage, ctx, Target::image(&image))?;
    let now = now();
    let mut change = change;
    blocking(state, move |m| {
        m.update(&id, &mut |img| {
            change(img)?;
            img.updated_at = now.clone();
            Ok(())
        })
    })
    .await
}

/// `PUT /v2/images/{id}/tags/{tag}`.
pub async fn add_tag(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
    Tag(tag): Tag,
) -> Result<Response, ApiError> {
    if tag.is_empty() || tag.len() > 255 {
        return Err(ApiError::bad_request("Tags must be 1 to 255 characters"));
    }
    modify(&state, &ctx, id, move |img| {
        img.tags.insert(tag.clone());
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /v2/images/{id}/tags/{tag}`.
pub async fn remove_tag(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
    Tag(tag): Tag,
) -> Result<Response, ApiError> {
    let image = load_visible(&state, &ctx, id).await?;
    if !image.tags.contains(&tag) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Tag {tag} not found on image {id}"),
        ));
    }
    modify(&state, &ctx, id, move |img| {
        img.tags.remove(&tag);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Moves between active and deactivated (admins only, as Glance's default).
async fn set_active(
    state: Shared,
    ctx: Context,
    id: Uuid,
    active: bool,
) -> Result<Response, ApiError> {
    let image = load_visible(&state, &ctx, id).await?;
    policy::check(Action::Deactivate, &ctx, Target::image(&image))?;
    let (from, to) = if active {
        (Status::Deactivated, Status::Active)
    } else {
        (Status::Active, Status::Deactivated)
    };
    if image.status != from && image.status != to {
        return Err(ApiError::forbidden(format!(
            "Not allowed to {} an image in status '{}'",
            if active { "reactivate" } else { "deactivate" },
            image.status.as_str()
        )));
    }
    modify(&state, &ctx, id, move |img| {
        if img.status != from && img.status != to {
            return Err(format!(
                "Image status changed to '{}' meanwhile",
                img.status.as_str()
            ));
        }
        img.status = to;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v2/images/{id}/actions/deactivate`.
pub async fn deactivate(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
) -> Result<Response, ApiError> {
    set_active(state, ctx, id, false).await
}

/// `POST /v2/images/{id}/actions/reactivate`.
pub async fn reactivate(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
) -> Result<Response, ApiError> {
    set_active(state, ctx, id, true).await
}
