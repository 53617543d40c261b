//! Image data: the streamed upload, and the download's 307 to a signed link.

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use uuid::Uuid;

use super::digests::{DigestError, PIECE_BYTES, UploadDigests};
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
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let image = load_visible(&state, &ctx, id).await?;
    policy::check(Action::UploadImage, &ctx, Target::image(&image))?;
    // `X-Image-Meta-Store` picks the store; the default one otherwise.
    let store_id = match store_header(&headers)? {
        None => state.config.store_id.to_string(),
        Some(s) if state.config.store_by_id(&s).is_some() => s,
        Some(s) => {
            return Err(ApiError::bad_request(format!(
                "Store for identifier {s} not found; this site has {}",
                state.config.store_ids().join(", ")
            )));
        }
    };
    // Until the image is active, any way out (an error, or the request
    // dropped with its client) puts it back to `queued`.
    let mut guard = claim(&state, id, Status::Saving).await?;
    let target = state
        .config
        .store_by_id(&store_id)
        .unwrap_or(&state.config.store);
    let data = match receive(&state, target, &id.to_string(), body).await {
        Ok(data) => data,
        Err(e) => {
            guard.state = None;
            requeue(&state, id, Status::Saving).await;
            return Err(e);
        }
    };
    let store = store_id.clone();
    let stamp = now();
    let ours = (data.md5.clone(), data.sha512.clone());
    let recorded = blocking(&state, move |m| {
        m.update(&id, &mut |img| {
            if img.status != Status::Saving {
                return Err(format!(
                    "Image {id} changed to {} during the upload",
                    img.status.as_str()
                ));
            }
            let at = Location {
                store: store.clone(),
                key: id.to_string(),
            };
            img.set_data(data.size, &data.md5, &data.sha512, at);
            img.updated_at = stamp.clone();
            Ok(())
        })
    })
    .await;
    guard.state = None;
    if let Err(e) = recorded {
        // A database error can hide a write that landed (a SQL connection
        // lost before the commit's answer): read the record again before
        // throwing the data away.
        let again = blocking(&state, move |m| m.get(&id)).await;
        if let Ok(Some(img)) = again
            && img.status == Status::Active
            && img.checksum.as_deref() == Some(ours.0.as_str())
            && img.os_hash_value.as_deref() == Some(ours.1.as_str())
        {
            tracing::warn!(image = %id, error = %e.message, "the upload's record landed despite the error");
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        // The image was deleted (or changed) meanwhile: its data goes too.
        if let Err(d) = target.delete(&id.to_string()).await {
            tracing::error!(image = %id, error = %d, "cannot remove the data of an upload that did not land");
        }
        requeue(&state, id, Status::Saving).await;
        return Err(e);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The store `X-Image-Meta-Store` names, if any (`400` when it is not text).
pub(super) fn store_header(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get("x-image-meta-store")
        .map(|v| {
            v.to_str()
                .map(|s| s.trim().to_owned())
                .map_err(|_| ApiError::bad_request("X-Image-Meta-Store must be a store id"))
        })
        .transpose()
}

/// Moves a `queued` image to `to` (`saving` for an upload, `uploading` for
/// staging; `409` from any other status) and returns the guard that puts
/// it back unless disarmed.
pub(super) async fn claim(state: &Shared, id: Uuid, to: Status) -> Result<Requeue, ApiError> {
    let stamp = now();
    blocking(state, move |m| {
        m.update(&id, &mut |img| {
            if img.status != Status::Queued {
                return Err(format!(
                    "Image status transition from {} to {} is not allowed",
                    img.status.as_str(),
                    to.as_str()
                ));
            }
            img.status = to;
            img.updated_at = stamp.clone();
            Ok(())
        })
    })
    .await?;
    Ok(Requeue {
        state: Some(state.clone()),
        id,
        from: to,
    })
}

/// Puts the image back to `queued` when dropped armed (see [`upload`]).
pub(super) struct Requeue {
    /// Set while armed.
    pub state: Option<Shared>,
    /// The image.
    pub id: Uuid,
    /// The status it is put back from.
    pub from: Status,
}

impl Drop for Requeue {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            let (id, from) = (self.id, self.from);
            tokio::spawn(async move { requeue(&state, id, from).await });
        }
    }
}

/// What an upload wrote.
#[derive(Debug, Clone)]
pub(super) struct Received {
    /// Bytes written.
    pub size: u64,
    /// Their hex md5.
    pub md5: String,
    /// Their hex sha512.
    pub sha512: String,
}

/// Streams the body into `store` as object `object`, hashing it (see
/// [`UploadDigests`]), refusing more than the size cap; on any failure the
/// partial object is removed.
pub(super) async fn receive(
    state: &Shared,
    store: &crate::store::Store,
    object: &str,
    body: Body,
) -> Result<Received, ApiError> {
    let store_err = |e: crate::store::StoreError| {
        tracing::error!(object, error = %e, "storing an upload failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot store the image data",
        )
    };
    let digest_err = |e: DigestError| {
        tracing::error!(object, error = %e, "hashing an upload failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot hash the image data",
        )
    };
    let mut writer = store.writer(object).await.map_err(store_err)?;
    let mut digests = UploadDigests::default();
    let mut pieces = Pieces::default();
    let mut size = 0u64;
    let cap = state.config.image_size_cap;
    let mut stream = body.into_data_stream();
    let failure = loop {
        let chunk = match stream.next().await {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                break Some(ApiError::bad_request(format!(
                    "The upload was interrupted: {e}"
                )));
            }
        };
        if let Some(chunk) = &chunk {
            size += chunk.len() as u64;
            if size > cap {
                break Some(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("Image exceeds the storage quota: the limit is {cap} bytes"),
                ));
            }
        }
        let last = chunk.is_none();
        if let Some(piece) = pieces.push(chunk) {
            if let Err(e) = digests.update(piece.clone()).await {
                break Some(digest_err(e));
            }
            if let Err(e) = writer.write(piece).await {
                break Some(store_err(e));
            }
        }
        if last {
            break None;
        }
    };
    // The hashes before the commit: an upload whose hashing failed leaves no
    // object behind.
    let hashes = match failure {
        Some(e) => Err(e),
        None => digests.finish().await.map_err(digest_err),
    };
    let (md5, sha512) = match hashes {
        Ok(h) => h,
        Err(e) => {
            writer.abort().await;
            return Err(e);
        }
    };
    writer.commit().await.map_err(store_err)?;
    Ok(Received { size, md5, sha512 })
}

/// Gathers the body's chunks (a few KiB each, as the socket delivers them)
/// into pieces of about [`PIECE_BYTES`] for the hashers and the store.
#[derive(Default)]
struct Pieces {
    buf: BytesMut,
}

impl Pieces {
    /// Takes the next chunk (`None` at the end of the body); returns a
    /// piece when one is full, or the rest at the end.
    fn push(&mut self, chunk: Option<Bytes>) -> Option<Bytes> {
        match chunk {
            // A chunk as large as a piece goes on as it is, uncopied.
            Some(c) if self.buf.is_empty() && c.len() >= PIECE_BYTES => Some(c),
            Some(c) => {
                if self.buf.capacity() == 0 {
                    self.buf.reserve(PIECE_BYTES);
                }
                self.buf.extend_from_slice(&c);
                (self.buf.len() >= PIECE_BYTES).then(|| self.buf.split().freeze())
            }
            None => (!self.buf.is_empty()).then(|| self.buf.split().freeze()),
        }
    }
}

/// Puts an image whose upload or staging failed (status `from`) back to
/// `queued`, without data.
pub(super) async fn requeue(state: &Shared, id: Uuid, from: Status) {
    let stamp = now();
    let result = blocking(state, move |m| {
        m.update(&id, &mut |img| {
            if img.status == from {
                img.status = Status::Queued;
                img.size = None;
                img.staged = None;
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

/// The answer when no stream node can serve a download.
pub(super) fn no_node() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "No stream node is available to serve image data; try again later",
    )
}

/// The copy a download reads: the first in a store `?prefer=a,b` names, in
/// that order, else the image's first location. An unknown store is a
/// `400`.
fn preferred(
    state: &Shared,
    image: &crate::model::Image,
    query: Option<&str>,
) -> Result<Option<Location>, ApiError> {
    let Some(list) = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "prefer")
        .map(|(_, v)| v.into_owned())
    else {
        return Ok(None);
    };
    let mut found = None;
    for store in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if state.config.store_by_id(store).is_none() {
            return Err(ApiError::bad_request(format!(
                "Store '{store}' is not configured."
            )));
        }
        if found.is_none() {
            found = image.location_in(store).cloned();
        }
    }
    Ok(found)
}

/// `GET /v2/images/{id}/file`: `307` to a signed link on the stream node that
/// rendezvous hashing picks for this image; `204` when there is no data.
pub async fn download(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    let mut image = load_visible(&state, &ctx, id).await?;
    if let Some(chosen) = preferred(&state, &image, query.as_deref())? {
        image.location = Some(chosen);
    }
    policy::check(Action::DownloadImage, &ctx, Target::image(&image))?;
    if image.status == Status::Deactivated {
        policy::check(Action::DownloadDeactivated, &ctx, Target::image(&image))?;
    }
    let link = match links::sign(&state, &image) {
        links::Download::NoData => return Ok(StatusCode::NO_CONTENT.into_response()),
        links::Download::NoNode => return Err(no_node()),
        links::Download::Link { url, .. } => url,
    };
    state.metrics.link_issued("stream");
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
