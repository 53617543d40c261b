//! What the site offers and holds: the stores' details, a project's usage,
//! an image's locations (for other services), and removing an image's data
//! from one store.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Shared;
use super::images::{blocking, load_visible};
use super::import::IMPORTING;
use super::policy::{self, Action, Target};
use crate::auth::Context;
use crate::error::ApiError;
use crate::model::Status;
use crate::store::Store;

/// `GET /v2/info/stores/detail` (admins and services): each store with its
/// kind and settings (no credentials).
pub async fn stores_detail(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
) -> Result<Response, ApiError> {
    policy::check(Action::ReadStoreDetail, &ctx, Target::default())?;
    let stores: Vec<Value> = state
        .config
        .store_ids()
        .into_iter()
        .enumerate()
        .filter_map(|(i, id)| {
            let store = state.config.store_by_id(&id)?;
            let properties = match store {
                Store::File(dir) => json!({"data_dir": dir.display().to_string()}),
                Store::S3(s3) => json!({"bucket": s3.bucket_name()}),
                Store::Swift(_) => json!({"location": store.location_url("")}),
            };
            let mut entry = json!({
                "id": id,
                "type": store.kind(),
                "weight": 0,
                "properties": properties,
            });
            if i == 0
                && let Some(o) = entry.as_object_mut()
            {
                o.insert("default".into(), json!("true"));
            }
            Some(entry)
        })
        .collect();
    Ok(axum::Json(json!({ "stores": stores })).into_response())
}

/// One usage figure: no limit is enforced beyond `image_size_cap` per
/// image, so each limit is `-1` (unlimited), as Glance writes it.
fn figure(usage: u64) -> Value {
    json!({"limit": -1, "usage": usage})
}

/// `GET /v2/info/usage`: the caller's project's images, their data in MiB,
/// what is staged, and what is being uploaded.
pub async fn usage(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
) -> Result<Response, ApiError> {
    let project = ctx.project_id.clone();
    let images = blocking(&state, |m| m.list()).await?;
    let mine = images
        .iter()
        .filter(|i| i.owner.as_deref() == Some(project.as_str()))
        .filter(|i| !matches!(i.status, Status::Killed | Status::Deleted));
    let (mut count, mut bytes, mut staged, mut uploading) = (0u64, 0u64, 0u64, 0u64);
    for image in mine {
        count += 1;
        // Each copy counts, as in Glance.
        bytes += image.size.unwrap_or(0) * image.locations().count() as u64;
        let importing = image
            .properties
            .get(IMPORTING)
            .is_some_and(|s| !s.is_empty());
        if matches!(image.status, Status::Uploading | Status::Importing) || importing {
            staged += image.staged.as_ref().map_or(0, |s| s.size);
        }
        if matches!(
            image.status,
            Status::Saving | Status::Uploading | Status::Importing
        ) || importing
        {
            uploading += 1;
        }
    }
    Ok(axum::Json(json!({
        "usage": {
            "image_size_total": figure(bytes >> 20),
            "image_stage_total": figure(staged >> 20),
            "image_count_total": figure(count),
            "image_count_uploading": figure(uploading),
        }
    }))
    .into_response())
}

/// `GET /v2/images/{id}/locations` (the service role, which Nova's own
/// user holds, whatever project owns the image): where the data is, as
/// URLs of the backend.
pub async fn locations(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    super::extract::ImageId(id): super::extract::ImageId,
) -> Result<Response, ApiError> {
    let image = if policy::allowed(Action::ReadLocations, &ctx, Target::default()) {
        blocking(&state, move |m| m.get(&id))
            .await?
            .ok_or_else(|| ApiError::no_image(id))?
    } else {
        let image = load_visible(&state, &ctx, id).await?;
        policy::check(Action::ReadLocations, &ctx, Target::image(&image))?;
        image
    };
    let list: Vec<Value> = image
        .locations()
        .filter_map(|l| {
            let store = state.config.store_by_id(&l.store)?;
            Some(json!({"url": store.location_url(&l.key), "metadata": {"store": l.store}}))
        })
        .collect();
    Ok(axum::Json(Value::Array(list)).into_response())
}

/// `DELETE /v2/stores/{store}/{id}` (admins): removes an image's data from
/// one store, never from the only store that holds it.
pub async fn delete_from_store(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path((store, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let Some(backend) = state.config.store_by_id(&store) else {
        return Err(ApiError::conflict(format!(
            "The selected store {store} is not available on this node."
        )));
    };
    let id = Uuid::try_parse(&id).map_err(|_| ApiError::no_image(&id))?;
    let image = load_visible(&state, &ctx, id).await?;
    policy::check(Action::DeleteFromStore, &ctx, Target::image(&image))?;
    if image.status != Status::Active {
        return Err(ApiError::conflict(
            "It's not allowed to remove image data from store if image status is not 'active'",
        ));
    }
    let Some(location) = image.location_in(&store).cloned() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Image {id} is not stored in store {store}."),
        ));
    };
    if image.locations().count() == 1 {
        return Err(ApiError::forbidden(
            "Cannot delete image data from the only store containing it. Consider deleting the image instead.",
        ));
    }
    // The record first: no download is sent to data about to go.
    let (gone, stamp) = (store.clone(), super::images::now());
    blocking(&state, move |m| {
        m.update(&id, &mut |img| {
            if img.locations().count() < 2 || img.location_in(&gone).is_none() {
                return Err(format!("Image {id} changed meanwhile; try again"));
            }
            if img.location.as_ref().is_some_and(|l| l.store == gone) {
                // A copy becomes the location downloads read first.
                img.location = Some(img.copies.remove(0));
            } else {
                img.copies.retain(|l| l.store != gone);
            }
            img.updated_at = stamp.clone();
            Ok(())
        })
    })
    .await?;
    backend
        .delete_logged(&location.key, "data removed from an image's record")
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
