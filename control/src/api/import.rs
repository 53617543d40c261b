//! Interoperable image import, as Glance: data is staged (`PUT .../stage`:
//! `uploading`, hashed as it lands in the staging directory) or fetched
//! (`web-download`, from URLs the operator's filter passes), then imported
//! into the store by a task (`importing`, then `active`); a failed import
//! puts the image back to `queued` without data and says why in the task
//! and in `os_glance_failed_import`. `copy-image` copies an active image to
//! the stores that lack it.
//!
//! An image being imported carries Glance's lock, `os_glance_import_task`
//! (the task's id): a second import is refused while the task runs, and a
//! lock whose task ended, vanished or has not moved for an hour is broken.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::data::{claim, receive, requeue};
use super::extract::ImageId;
use super::images::{blocking, load_visible, now};
use super::policy::{self, Action, Target};
use super::tasks::{self, Task};
use super::{RequestId, Shared};
use crate::auth::Context;
use crate::error::ApiError;
use crate::import_filter::Passed;
use crate::model::{Image, Location, Status};
use crate::store::Store;

/// The image's import lock: the id of the task importing it.
pub const LOCK: &str = "os_glance_import_task";
/// Stores an import is still writing to (comma list).
pub const IMPORTING: &str = "os_glance_importing_to_stores";
/// Stores an import failed to write to (comma list).
pub const FAILED: &str = "os_glance_failed_import";
/// A lock older than this, with its task not ended, is taken to be left by
/// a glance-api that stopped mid-import.
const STALE_LOCK: time::Duration = time::Duration::hours(1);
/// How often a running import shows its task is alive.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest a web-download may take, whatever the server's pace.
const DOWNLOAD_LIMIT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);
/// Redirects followed by web-download, each checked by the filter.
const MAX_REDIRECTS: usize = 5;

/// The staging directory as a store (files named by image id).
fn staging(state: &Shared) -> Store {
    Store::File(state.config.import.staging_dir.clone())
}

/// Removes an image's staged data (gone already is fine).
pub async fn unstage(state: &Shared, id: Uuid) {
    staging(state)
        .delete_logged(&id.to_string(), "staged data")
        .await;
}

fn offered(state: &Shared, method: &str) -> bool {
    state.config.import.methods.iter().any(|m| m == method)
}

/// `GET /v2/info/import`.
pub async fn info(State(state): State<Shared>) -> Response {
    axum::Json(json!({
        "import-methods": {
            "description": "Import methods available.",
            "type": "array",
            "value": state.config.import.methods,
        }
    }))
    .into_response()
}

/// `PUT /v2/images/{id}/stage`: streams the body into the staging
/// directory, hashing it; the image is `uploading` from then on, or back to
/// `queued` if staging fails.
pub async fn stage(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !offered(&state, "glance-direct") {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "'glance-direct' method is not available at this site.",
        ));
    }
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !media.starts_with("application/octet-stream") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Staged data must be sent as application/octet-stream, not '{media}'"),
        ));
    }
    let image = load_visible(&state, &ctx, id).await?;
    policy::check(Action::ImportImage, &ctx, Target::image(&image))?;
    let mut guard = claim(&state, id, Status::Uploading).await?;
    // The staging directory is made at start, with the stores'.
    let received = receive(&state, &staging(&state), &id.to_string(), body).await;
    guard.state = None;
    let data = match received {
        Ok(d) => d,
        Err(e) => {
            requeue(&state, id, Status::Uploading).await;
            return Err(e);
        }
    };
    let stamp = now();
    let recorded = blocking(&state, move |m| {
        m.update(&id, &mut |img| {
            if img.status != Status::Uploading {
                return Err(format!(
                    "Image {id} changed to {} while staging",
                    img.status.as_str()
                ));
            }
            img.size = Some(data.size);
            img.staged = Some(crate::model::Staged {
                size: data.size,
                md5: data.md5.clone(),
                sha512: data.sha512.clone(),
            });
            img.updated_at = stamp.clone();
            Ok(())
        })
    })
    .await;
    if let Err(e) = recorded {
        unstage(&state, id).await;
        requeue(&state, id, Status::Uploading).await;
        return Err(e);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What an import was asked to do, checked.
#[derive(Debug, Clone)]
enum Method {
    /// From the staging directory.
    GlanceDirect,
    /// From a URL the filter passed.
    WebDownload(Passed),
    /// From the image's store into others.
    CopyImage,
}

impl Method {
    fn name(&self) -> &'static str {
        match self {
            Method::GlanceDirect => "glance-direct",
            Method::WebDownload(_) => "web-download",
            Method::CopyImage => "copy-image",
        }
    }
}

/// A boolean field of the import body (absent: `false`).
fn flag(body: &Value, key: &str) -> Result<bool, ApiError> {
    match body.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::bad_request(format!(
            "'{key}' must be boolean value only"
        ))),
    }
}

/// The stores an import writes to: `stores`, the `X-Image-Meta-Store`
/// header, every store (`all_stores`), or the default one.
fn target_stores(
    state: &Shared,
    body: &Value,
    headers: &HeaderMap,
) -> Result<(Vec<String>, bool), ApiError> {
    let all = flag(body, "all_stores")?;
    let header = super::data::store_header(headers)?;
    let listed = match body.get("stores") {
        None => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|s| s.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ApiError::bad_request("'stores' must be a list of store ids"))?,
        ),
        Some(_) => {
            return Err(ApiError::bad_request(
                "'stores' must be a list of store ids",
            ));
        }
    };
    let configured = state.config.store_ids();
    if all && (listed.is_some() || header.is_some()) {
        return Err(ApiError::bad_request(
            "All_stores parameter can't be used with x-image-meta-store header or stores parameter",
        ));
    }
    if listed.is_some() && header.is_some() {
        return Err(ApiError::bad_request(
            "Stores parameter and x-image-meta-store header can't be both specified",
        ));
    }
    let stores = match (all, listed, header) {
        (true, _, _) => configured.clone(),
        (_, Some(list), _) => list,
        (_, None, Some(h)) => vec![h],
        _ => vec![state.config.store_id.to_string()],
    };
    if let Some(unknown) = stores.iter().find(|s| !configured.contains(s)) {
        return Err(ApiError::conflict(format!(
            "Unknown store '{unknown}': this site has {}",
            configured.join(", ")
        )));
    }
    for (i, store) in stores.iter().enumerate() {
        if stores[..i].contains(store) {
            return Err(ApiError::bad_request(format!(
                "'stores' names {store} twice"
            )));
        }
    }
    Ok((stores, all))
}

/// `POST /v2/images/{id}/import`: checks the request, records the task and
/// locks the image, answers `202`, and imports in the background.
pub async fn import(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Extension(request): Extension<RequestId>,
    ImageId(id): ImageId,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body = Value::Object(super::metadefs::model::body_object(&raw)?);
    let method = body
        .get("method")
        .ok_or_else(|| ApiError::bad_request("Import request requires a 'method' field."))?;
    let name = method
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("Import request requires a 'name' field."))?
        .to_owned();
    if !offered(&state, &name) {
        return Err(ApiError::bad_request(format!(
            "Unknown import method name '{name}'."
        )));
    }
    flag(&body, "all_stores_must_succeed")?;
    let image = load_visible(&state, &ctx, id).await?;
    let image = recover_stale(&state, image).await?;
    check_status(&image, &name)?;
    let action = if name == "copy-image" {
        Action::CopyImage
    } else {
        Action::ImportImage
    };
    policy::check(action, &ctx, Target::image(&image))?;
    let (mut stores, all) = target_stores(&state, &body, &headers)?;
    if name == "copy-image" {
        if !all && let Some(s) = stores.iter().find(|s| image.location_in(s).is_some()) {
            return Err(ApiError::bad_request(format!(
                "Image is already present at store '{s}'"
            )));
        }
        stores.retain(|s| image.location_in(s).is_none());
    } else if stores.is_empty() {
        return Err(ApiError::bad_request(
            "'stores' names no store to import into",
        ));
    }
    let method = match name.as_str() {
        "glance-direct" => Method::GlanceDirect,
        "copy-image" => Method::CopyImage,
        _ => Method::WebDownload(
            web_download_url(
                &state,
                method.get("uri").and_then(Value::as_str),
                "web-download",
            )
            .await?,
        ),
    };
    let must_succeed = body
        .get("all_stores_must_succeed")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let input = json!({"image_id": id, "import_req": body, "backend": stores});
    let task = Task::new("api_image_import", &ctx, &request.0, Some(id), input);
    let job = Job {
        task: task.id,
        image: id,
        method,
        stores,
        must_succeed,
    };
    start(&state, image, task, job).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Checks a web-download URL (`what` names the API asking, for the
/// message): `400` with the filter's reason when it does not pass.
pub(super) async fn web_download_url(
    state: &Shared,
    uri: Option<&str>,
    what: &str,
) -> Result<Passed, ApiError> {
    let uri = uri.unwrap_or("");
    state
        .config
        .import
        .web_download
        .pass(uri)
        .await
        .map_err(|why| {
            ApiError::bad_request(format!(
                "URI for {what} does not pass filtering: {uri} ({why})"
            ))
        })
}

/// Takes the image's lock for the job, records its task, and runs it, all
/// in a task of its own (a request dropped half-way leaves neither a lock
/// without its job nor a job without its task); answers once the lock and
/// the task are in place.
async fn start(state: &Shared, image: Image, task: Task, job: Job) -> Result<(), ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let began = async {
            lock(&state, &image, &job).await?;
            if let Err(e) = tasks::create(&state, &task).await {
                release(&state, &job).await;
                return Err(e);
            }
            Ok(())
        }
        .await;
        let ok = began.is_ok();
        let _ = tx.send(began);
        if ok {
            run(state, job).await;
        }
    });
    rx.await
        .unwrap_or_else(|_| Err(ApiError::from_internal(&"the import's task ended early")))
}

/// Releases a lock taken for a job that will not run.
async fn release(state: &Shared, job: &Job) {
    let (id, holder, status) = (job.image, job.task.to_string(), Status::Importing);
    let copy = matches!(job.method, Method::CopyImage);
    let result = blocking(state, move |m| {
        m.update(&id, &mut |img| {
            if img.properties.get(LOCK) == Some(&holder) {
                img.properties.remove(LOCK);
                img.properties.insert(IMPORTING.into(), String::new());
                if !copy && img.status == status {
                    img.status = if img.staged.is_some() {
                        Status::Uploading
                    } else {
                        Status::Queued
                    };
                }
            }
            Ok(())
        })
    })
    .await;
    if let Err(e) = result {
        tracing::error!(image = %id, error = %e.message, "cannot release an import lock");
    }
}

/// An image left `importing` by an import that will never end (its lock is
/// stale: see [`stale`]) goes back to `uploading` when its staged data is
/// still on record, else to `queued`, so that it can be imported again.
async fn recover_stale(state: &Shared, image: Image) -> Result<Image, ApiError> {
    let Some(holder) = image
        .properties
        .get(LOCK)
        .filter(|h| !h.is_empty())
        .cloned()
    else {
        return Ok(image);
    };
    if image.status != Status::Importing || !stale(state, &holder).await? {
        return Ok(image);
    }
    let (id, stamp) = (image.id, now());
    tracing::warn!(image = %id, task = %holder, "breaking the stale lock of an import that stopped");
    blocking(state, move |m| {
        m.update(&id, &mut |img| {
            if img.properties.get(LOCK) != Some(&holder) || img.status != Status::Importing {
                return Ok(());
            }
            let left = img.properties.get(IMPORTING).cloned().unwrap_or_default();
            img.properties.remove(LOCK);
            img.properties.insert(IMPORTING.into(), String::new());
            img.properties.insert(FAILED.into(), left);
            img.status = if img.staged.is_some() {
                Status::Uploading
            } else {
                Status::Queued
            };
            if img.status == Status::Queued {
                img.size = None;
            }
            img.updated_at = stamp.clone();
            Ok(())
        })
    })
    .await
}

/// Glance's status rules for each method (`409`).
fn check_status(image: &Image, method: &str) -> Result<(), ApiError> {
    let refuse = |m: String| Err(ApiError::conflict(m));
    match (image.status, method) {
        (Status::Active, "copy-image") => {}
        (_, "copy-image") => {
            return refuse("Only images with status active can be targeted for copying".into());
        }
        (Status::Active, _) => {
            return refuse("Image with status active cannot be target for import".into());
        }
        (Status::Queued, "web-download") => {}
        (Status::Uploading, "glance-direct") if image.staged.is_some() => {}
        (_, "glance-direct") => {
            return refuse(
                "Image needs to be staged before 'glance-direct' method can be used".into(),
            );
        }
        (_, m) => {
            return refuse(format!(
                "Image needs to be in 'queued' state to use '{m}' method"
            ));
        }
    }
    if method != "copy-image" {
        if image.container_format.is_none() {
            return refuse("'container_format' needs to be set before import".into());
        }
        if image.disk_format.is_none() {
            return refuse("'disk_format' needs to be set before import".into());
        }
    }
    Ok(())
}

/// Whether the lock held by `holder` (a task id) may be broken: its task
/// ended, vanished, or has not moved for [`STALE_LOCK`].
async fn stale(state: &Shared, holder: &str) -> Result<bool, ApiError> {
    let Ok(id) = Uuid::try_parse(holder) else {
        return Ok(true);
    };
    let Some(task) = tasks::load(state, id).await? else {
        return Ok(true);
    };
    let moved = crate::model::parse_time(&task.updated_at);
    let old = moved.is_none_or(|t| time::OffsetDateTime::now_utc() - t >= STALE_LOCK);
    let broken = task.status == "success" || task.status == "failure" || old;
    if broken && old && task.status != "success" && task.status != "failure" {
        tasks::finish(state, id, Err("Expired lock preempted".into())).await;
    }
    Ok(broken)
}

/// Takes the image's import lock for the job's task and marks the import
/// begun (`409` when another import holds it).
async fn lock(state: &Shared, image: &Image, job: &Job) -> Result<(), ApiError> {
    let breakable = match image.properties.get(LOCK) {
        Some(holder) if !holder.is_empty() => stale(state, holder).await?.then(|| holder.clone()),
        _ => None,
    };
    let (id, task_id, stamp) = (image.id, job.task.to_string(), now());
    let (copy, list) = (
        matches!(job.method, Method::CopyImage),
        job.stores.join(","),
    );
    let expected = (image.status, breakable);
    let result = blocking(state, move |m| {
        m.update(&id, &mut |img| {
            let holder = img.properties.get(LOCK).filter(|h| !h.is_empty());
            if holder.is_some() && holder != expected.1.as_ref() {
                return Err(format!(
                    "Image has active task: another operation on image {id} is still in progress"
                ));
            }
            if img.status != expected.0 {
                return Err(format!(
                    "Image {id} changed to {} meanwhile",
                    img.status.as_str()
                ));
            }
            img.properties.insert(LOCK.into(), task_id.clone());
            img.properties.insert(IMPORTING.into(), list.clone());
            img.properties.insert(FAILED.into(), String::new());
            if !copy {
                img.status = Status::Importing;
            }
            img.updated_at = stamp.clone();
            Ok(())
        })
    })
    .await;
    result.map(|_| ())
}

/// One import to run.
struct Job {
    task: Uuid,
    image: Uuid,
    method: Method,
    /// The stores to write to, in order.
    stores: Vec<String>,
    /// Fail the whole import when one store fails (else keep what landed).
    must_succeed: bool,
}

/// What the data should measure: as staged, downloaded, or as the image
/// records it (a copy).
type Expected = crate::model::Staged;

/// Runs an import to its end: the task and the image say how it went.
async fn run(state: Shared, job: Job) {
    let (task, id) = (job.task, job.image);
    tasks::record(&state, task, |t| t.status = "processing".into()).await;
    tracing::info!(image = %id, %task, method = job.method.name(), "import started");
    // The task moves at least every minute while the import runs, so its
    // lock is never taken for stale (see `stale`).
    let heartbeat = {
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                tasks::record(&state, task, |_| {}).await;
            }
        })
    };
    let source = prepare(&state, &job).await;
    let mut written: Vec<String> = Vec::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut measured = None;
    match &source {
        Err(e) => failed.extend(job.stores.iter().map(|s| (s.clone(), e.clone()))),
        Ok((from, expected)) => {
            for store in &job.stores {
                match copy_to(&state, id, from, store, expected).await {
                    Ok(()) => {
                        written.push(store.clone());
                        progress(&state, id, task, store).await;
                    }
                    Err(e) => {
                        tracing::warn!(image = %id, store = %store, error = %e, "import into a store failed");
                        failed.push((store.clone(), e));
                        if job.must_succeed {
                            break;
                        }
                    }
                }
            }
            measured = Some(expected.clone());
        }
    }
    unstage(&state, id).await;
    let ok = if job.must_succeed {
        failed.is_empty()
    } else {
        !written.is_empty() || job.stores.is_empty()
    };
    if !ok {
        // Nothing of a failed import stays: the stores written are emptied.
        for store in written.drain(..) {
            remove_from(&state, &store, id).await;
        }
    }
    let failed_list: Vec<String> = failed.iter().map(|(s, _)| s.clone()).collect();
    let recorded = finish_image(&state, &job, ok, &written, &failed_list, measured).await;
    let outcome = match (ok, recorded) {
        (true, Ok(())) => {
            let mib = source.as_ref().map_or(0, |(_, e)| e.size >> 20);
            let message = match (&job.method, written.is_empty()) {
                (Method::CopyImage, true) => {
                    "Nothing to copy: the image is in every store asked for".to_owned()
                }
                _ => format!("Copied {mib} MiB"),
            };
            Ok((json!({"image_id": id}), message))
        }
        (true, Err(e)) => {
            for store in &written {
                remove_from(&state, store, id).await;
            }
            Err(format!("The import could not be recorded: {}", e.message))
        }
        (false, _) => Err(failed
            .iter()
            .map(|(s, e)| format!("{s}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")),
    };
    heartbeat.abort();
    match &outcome {
        Ok(_) => tracing::info!(image = %id, %task, "import done"),
        Err(e) => tracing::warn!(image = %id, %task, error = %e, "import failed"),
    }
    tasks::finish(&state, task, outcome).await;
}

/// Where the data comes from and what it must measure: the staging file
/// (staged, or downloaded now), or the image's first store (a copy).
async fn prepare(state: &Shared, job: &Job) -> Result<(Source, Expected), String> {
    let id = job.image;
    let image = blocking(state, move |m| m.get(&id))
        .await
        .map_err(|e| e.message)?
        .ok_or_else(|| format!("Image {id} was deleted"))?;
    match &job.method {
        Method::GlanceDirect => {
            let staged = image
                .staged
                .ok_or_else(|| format!("Image {id} has no staged data on record"))?;
            Ok((Source::Staging, staged))
        }
        Method::WebDownload(passed) => Ok((Source::Staging, download(state, id, passed).await?)),
        Method::CopyImage => {
            let (Some(from), Some(size), Some(md5), Some(sha512)) = (
                image.location.clone(),
                image.size,
                image.checksum,
                image.os_hash_value,
            ) else {
                return Err(format!("Image {id} has no data to copy"));
            };
            Ok((Source::Store(from), Expected { size, md5, sha512 }))
        }
    }
}

/// Where an import reads its data.
enum Source {
    /// The file named by the image id in the staging directory.
    Staging,
    /// A store holding the image.
    Store(Location),
}

/// How long reading an image from a remote store for a copy may take.
const COPY_READ: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Writes the data into `store`, hashing it again; it must measure what
/// `expected` says, or it is removed.
async fn copy_to(
    state: &Shared,
    id: Uuid,
    from: &Source,
    store: &str,
    expected: &Expected,
) -> Result<(), String> {
    let target = state
        .config
        .store_by_id(store)
        .ok_or_else(|| format!("store {store} is not configured"))?;
    let stream = match from {
        Source::Staging => {
            let path = state.config.import.staging_dir.join(id.to_string());
            let file = tokio::fs::File::open(&path).await.map_err(|e| {
                tracing::error!(image = %id, path = %path.display(), error = %e, "cannot open staged data");
                format!("No staged data for image {id}")
            })?;
            Box::pin(crate::store::file_stream(file)) as crate::store::ByteStream
        }
        Source::Store(location) => {
            let source = state
                .config
                .store_by_id(&location.store)
                .ok_or_else(|| format!("store {} is not configured", location.store))?;
            source
                .reader(&location.key, COPY_READ)
                .await
                .map_err(|e| e.0)?
        }
    };
    let data = receive(state, target, &id.to_string(), Body::from_stream(stream))
        .await
        .map_err(|e| e.message)?;
    if data.size != expected.size || data.md5 != expected.md5 || data.sha512 != expected.sha512 {
        remove_from(state, store, id).await;
        return Err(format!(
            "the data changed on its way: {} bytes, sha512 {}, where {} bytes, sha512 {} were expected",
            data.size, data.sha512, expected.size, expected.sha512
        ));
    }
    Ok(())
}

/// Removes image `id`'s object from `store` (logged on failure).
async fn remove_from(state: &Shared, store: &str, id: Uuid) {
    if let Some(s) = state.config.store_by_id(store) {
        s.delete_logged(&id.to_string(), "data an import wrote")
            .await;
    }
}

/// Takes `store` off the image's `os_glance_importing_to_stores`, while the
/// image is still locked by `task`.
async fn progress(state: &Shared, id: Uuid, task: Uuid, store: &str) {
    let (store, holder) = (store.to_owned(), task.to_string());
    let result = blocking(state, move |m| {
        m.update(&id, &mut |img| {
            if img.properties.get(LOCK) != Some(&holder) {
                return Err(format!("image {id} is no longer locked by task {holder}"));
            }
            if let Some(list) = img.properties.get_mut(IMPORTING) {
                let left: Vec<&str> = list
                    .split(',')
                    .filter(|s| !s.is_empty() && *s != store)
                    .collect();
                *list = left.join(",");
            }
            Ok(())
        })
    })
    .await;
    if let Err(e) = result {
        tracing::warn!(image = %id, error = %e.message, "cannot record an import's progress");
    }
}

/// Records the import's end on the image: its data and locations when it
/// succeeded (`active`), back to `queued` without data when an import of
/// new data failed; the lock released either way.
async fn finish_image(
    state: &Shared,
    job: &Job,
    ok: bool,
    written: &[String],
    failed: &[String],
    measured: Option<Expected>,
) -> Result<(), ApiError> {
    let id = job.image;
    let copy = matches!(job.method, Method::CopyImage);
    let (written, failed, stamp) = (written.to_vec(), failed.join(","), now());
    let holder = job.task.to_string();
    blocking(state, move |m| {
        m.update(&id, &mut |img| {
            // Only the import holding the lock records its end: an image
            // deleted (and made again under its id) or taken over meanwhile
            // is not this import's any more.
            if img.properties.get(LOCK) != Some(&holder) {
                return Err(format!(
                    "image {id} is no longer locked by this import's task"
                ));
            }
            img.properties.remove(LOCK);
            img.properties.insert(IMPORTING.into(), String::new());
            img.properties.insert(FAILED.into(), failed.clone());
            img.staged = None;
            img.updated_at = stamp.clone();
            let at = |store: &String| Location {
                store: store.clone(),
                key: id.to_string(),
            };
            if copy {
                if ok {
                    img.copies.extend(
                        written
                            .iter()
                            .filter(|s| img.location_in(s).is_none())
                            .map(at)
                            .collect::<Vec<_>>(),
                    );
                }
                return Ok(());
            }
            match (ok, &measured, written.split_first()) {
                (true, Some(data), Some((first, rest))) => {
                    img.set_data(data.size, &data.md5, &data.sha512, at(first));
                    img.copies = rest.iter().map(at).collect();
                }
                _ => {
                    if img.status == Status::Importing {
                        img.status = Status::Queued;
                        img.size = None;
                    }
                }
            }
            Ok(())
        })
    })
    .await
    .map(|_| ())
}

/// Fetches a web-download URL into the staging directory, following
/// redirects that the filter passes, each connection pinned to the
/// addresses checked.
async fn download(state: &Shared, id: Uuid, first: &Passed) -> Result<Expected, String> {
    match tokio::time::timeout(DOWNLOAD_LIMIT, fetch(state, id, first)).await {
        Ok(r) => r,
        Err(_) => {
            unstage(state, id).await;
            Err(format!(
                "{} took more than {} s",
                first.url,
                DOWNLOAD_LIMIT.as_secs()
            ))
        }
    }
}

/// [`download`] without its time limit.
async fn fetch(state: &Shared, id: Uuid, first: &Passed) -> Result<Expected, String> {
    let mut passed = first.clone();
    for _ in 0..=MAX_REDIRECTS {
        let client = state
            .config
            .roots
            .client()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(std::time::Duration::from_secs(15))
            .read_timeout(std::time::Duration::from_secs(60))
            .resolve_to_addrs(&passed.host, &passed.addrs)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let resp = client
            .get(passed.url.clone())
            .send()
            .await
            .map_err(|e| format!("Cannot fetch {}: {e}", passed.url))?;
        if resp.status().is_redirection() {
            let to = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| passed.url.join(l).ok())
                .ok_or_else(|| format!("{} redirects nowhere", passed.url))?;
            if passed.url.scheme() == "https" && to.scheme() != "https" {
                return Err(format!("{} redirects from https to {to}", passed.url));
            }
            passed = state
                .config
                .import
                .web_download
                .pass(to.as_str())
                .await
                .map_err(|why| {
                    format!(
                        "{} redirects to {to}, which does not pass filtering ({why})",
                        passed.url
                    )
                })?;
            continue;
        }
        if !resp.status().is_success() {
            return Err(format!("{} answered {}", passed.url, resp.status()));
        }
        let expected = resp.content_length();
        let body = Body::from_stream(resp.bytes_stream());
        let data = receive(state, &staging(state), &id.to_string(), body)
            .await
            .map_err(|e| format!("Downloading {}: {}", passed.url, e.message))?;
        if let Some(n) = expected
            && n != data.size
        {
            unstage(state, id).await;
            return Err(format!(
                "{} announced {n} bytes and sent {}",
                passed.url, data.size
            ));
        }
        return Ok(Expected {
            size: data.size,
            md5: data.md5,
            sha512: data.sha512,
        });
    }
    Err(format!(
        "{} redirects more than {MAX_REDIRECTS} times",
        first.url
    ))
}

/// The image an import task of the older task API creates, from its
/// `image_properties`.
pub async fn image_for_task(
    state: &Shared,
    ctx: &Context,
    props: &Value,
) -> Result<Uuid, ApiError> {
    let fields = props
        .as_object()
        .ok_or_else(|| ApiError::bad_request("'image_properties' must be a JSON object"))?;
    let id = Uuid::new_v4();
    let mut image = Image::new(id, Some(ctx.project_id.clone()), &now());
    for (k, v) in fields {
        super::patch::set_property(ctx, &mut image, k, v)?;
    }
    blocking(state, move |m| m.create(&image)).await?;
    Ok(id)
}

/// Starts the task API's import of `image` from a URL that passed: a
/// web-download into the default store, recorded as `task`.
pub async fn start_download(
    state: &Shared,
    task: Task,
    image: Uuid,
    passed: Passed,
) -> Result<(), ApiError> {
    let img = blocking(state, move |m| m.get(&image))
        .await?
        .ok_or_else(|| ApiError::no_image(image))?;
    let job = Job {
        task: task.id,
        image,
        method: Method::WebDownload(passed),
        stores: vec![state.config.store_id.to_string()],
        must_succeed: true,
    };
    start(state, img, task, job).await
}
