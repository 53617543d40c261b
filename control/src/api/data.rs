//! Image data: the streamed upload, and the download's 307 to a signed link.

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use md5::Digest as _;
use tokio::io::AsyncWriteExt as _;
use uuid::Uuid;

use super::extract::ImageId;
use super::images::{blocking, load_visible, now};
use super::policy::{Action, Target};
use super::{Shared, policy};
use crate::auth::Context;
use crate::error::ApiError;
use crate::links;
use crate::model::{Location, Status};

/// `PUT /v2/images/{id}/file`: streams the body into the store while hashing
/// it; the image is `saving` meanwhile and `active` once the data is durable.
/// On any failure the partial object is removed and the image is `queued` again.
pub async fn upload(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
    body: Body,
) -> Result<Response, ApiError> {
    let image = load_visible(&state, &ctx, id).await?;
    policy::check(Action::UploadImage, &ctx, Target::image(&image))?;
    let stamp = now();
    blocking(&state, move |m| {
        m.update(&id, &mut |img| {
            if img.status != Status::Queued {
                return Err(format!(
                    "Image status transition from {} to saving is not allowed",
                    img.status.as_str()
                ));
            }
            img.status = Status::Saving;
            img.updated_at = stamp.clone();
            Ok(())
        })
    })
    .await?;
    let partial = state.config.store_path.join(format!("{id}.partial"));
    match receive(&state, &partial, body).await {
        Ok(data) => {
            let final_path = state.config.store_path.join(id.to_string());
            if let Err(e) = tokio::fs::rename(&partial, &final_path).await {
                tracing::error!(image = %id, error = %e, "cannot move the upload into place");
                requeue(&state, id).await;
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot store the image data",
                ));
            }
            let store = state.config.store_id.to_string();
            let stamp = now();
            blocking(&state, move |m| {
                m.update(&id, &mut |img| {
                    img.status = Status::Active;
                    img.size = Some(data.size);
                    img.virtual_size = match img.disk_format.as_deref() {
                        Some("raw") | Some("iso") => Some(data.size),
                        _ => None,
                    };
                    img.checksum = Some(data.md5.clone());
                    img.os_hash_algo = Some("sha512".into());
                    img.os_hash_value = Some(data.sha512.clone());
                    img.location = Some(Location {
                        store: store.clone(),
                        key: id.to_string(),
                    });
                    img.updated_at = stamp.clone();
                    Ok(())
                })
            })
            .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            requeue(&state, id).await;
            Err(e)
        }
    }
}

/// What an upload wrote.
struct Received {
    size: u64,
    md5: String,
    sha512: String,
}

/// Writes the body to `path`, hashing it, refusing more than the size cap.
async fn receive(state: &Shared, path: &std::path::Path, body: Body) -> Result<Received, ApiError> {
    let io_err = |e: std::io::Error| {
        tracing::error!(error = %e, "writing an upload failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot store the image data",
        )
    };
    let mut file = tokio::fs::File::create(path).await.map_err(io_err)?;
    let mut md5 = md5::Md5::new();
    let mut sha = sha2::Sha512::new();
    let mut size = 0u64;
    let cap = state.config.image_size_cap;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("The upload was interrupted: {e}")))?;
        size += chunk.len() as u64;
        if size > cap {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Image exceeds the storage quota: the limit is {cap} bytes"),
            ));
        }
        md5.update(&chunk);
        sha.update(&chunk);
        file.write_all(&chunk).await.map_err(io_err)?;
    }
    file.sync_all().await.map_err(io_err)?;
    Ok(Received {
        size,
        md5: hex::encode(md5.finalize()),
        sha512: hex::encode(sha.finalize()),
    })
}

/// Puts an image whose upload failed back to `queued`.
async fn requeue(state: &Shared, id: Uuid) {
    let stamp = now();
    let result = blocking(state, move |m| {
        m.update(&id, &mut |img| {
            if img.status == Status::Saving {
                img.status = Status::Queued;
                img.updated_at = stamp.clone();
            }
            Ok(())
        })
    })
    .await;
    if let Err(e) = result {
        tracing::error!(image = %id, error = %e.message, "cannot return the image to queued");
    }
}

/// `GET /v2/images/{id}/file`: `307` to a signed link on the stream node that
/// rendezvous hashing picks for this image; `204` when there is no data.
pub async fn download(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
) -> Result<Response, ApiError> {
    let image = load_visible(&state, &ctx, id).await?;
    policy::check(Action::DownloadImage, &ctx, Target::image(&image))?;
    if image.status == Status::Deactivated {
        policy::check(Action::DownloadDeactivated, &ctx, Target::image(&image))?;
    }
    let link = match links::sign(&state, &image) {
        links::Download::NoData => return Ok(StatusCode::NO_CONTENT.into_response()),
        links::Download::Link(url) => url,
    };
    let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
    let value = HeaderValue::from_str(&link).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot build the download link",
        )
    })?;
    resp.headers_mut().insert(header::LOCATION, value);
    Ok(resp)
}
