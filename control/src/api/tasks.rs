//! Tasks: the record of each image import (and of the older task API's
//! imports), kept in the metadata store for 48 hours after it ends.
//! `/v2/tasks` is admin-only, as in Glance; an image's own tasks are read
//! by whoever sees the image.

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::extract::ImageId;
use super::images::{blocking, load_visible, now};
use super::policy::{self, Action, Target};
use super::{RequestId, Shared};
use crate::auth::Context;
use crate::error::ApiError;
use crate::metadata::{DocKind, MetadataError};

/// How long a finished task is kept.
pub const TASK_TTL: time::Duration = time::Duration::hours(48);
/// Task statuses.
pub const STATUSES: [&str; 4] = ["pending", "processing", "success", "failure"];

/// One task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Its id.
    pub id: Uuid,
    /// `api_image_import` (interoperable import) or `import` (task API).
    #[serde(rename = "type")]
    pub kind: String,
    /// pending, processing, success or failure.
    pub status: String,
    /// The project that asked.
    pub owner: String,
    /// What was asked.
    pub input: Value,
    /// What came of it (`{"image_id": ...}` on success).
    pub result: Option<Value>,
    /// Progress, or why it failed.
    pub message: String,
    /// The image it works on.
    pub image_id: Option<Uuid>,
    /// The request that started it (`x-openstack-request-id`).
    pub request_id: Option<String>,
    /// The user that asked.
    pub user_id: Option<String>,
    /// When it may be removed (set when it ends).
    pub expires_at: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// Creation time in nanoseconds, for the lists' order.
    #[serde(default)]
    pub created_ns: i128,
}

impl Task {
    /// A new pending task.
    pub fn new(
        kind: &str,
        ctx: &Context,
        request_id: &str,
        image: Option<Uuid>,
        input: Value,
    ) -> Task {
        let stamp = now();
        Task {
            id: Uuid::new_v4(),
            kind: kind.to_owned(),
            status: "pending".into(),
            owner: ctx.project_id.clone(),
            input,
            result: None,
            message: String::new(),
            image_id: image,
            request_id: Some(request_id.to_owned()),
            user_id: Some(ctx.user_id.clone()),
            expires_at: None,
            created_at: stamp.clone(),
            updated_at: stamp,
            created_ns: time::OffsetDateTime::now_utc().unix_timestamp_nanos(),
        }
    }

    /// The full view (`GET /v2/tasks/{id}`).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "type": self.kind,
            "status": self.status,
            "owner": self.owner,
            "input": self.input,
            "result": self.result,
            "message": self.message,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "self": format!("/v2/tasks/{}", self.id),
            "schema": "/v2/schemas/task",
        });
        if let Some(o) = v.as_object_mut() {
            for (k, val) in [
                ("image_id", self.image_id.map(|i| i.to_string())),
                ("request_id", self.request_id.clone()),
                ("user_id", self.user_id.clone()),
                ("expires_at", self.expires_at.clone()),
            ] {
                if let Some(val) = val {
                    o.insert(k.into(), Value::String(val));
                }
            }
        }
        v
    }

    /// The list entry (`GET /v2/tasks`): no input, result or message.
    pub fn stub_json(&self) -> Value {
        let mut v = self.to_json();
        if let Some(o) = v.as_object_mut() {
            for k in [
                "input",
                "result",
                "message",
                "image_id",
                "request_id",
                "user_id",
            ] {
                o.remove(k);
            }
        }
        v
    }

    /// Whether it has ended and its time is up.
    fn expired(&self, now: time::OffsetDateTime) -> bool {
        self.expires_at
            .as_deref()
            .and_then(crate::model::parse_time)
            .is_some_and(|t| t <= now)
    }
}

/// Stores a new task.
pub async fn create(state: &Shared, task: &Task) -> Result<(), ApiError> {
    let doc = serde_json::to_value(task).map_err(|e| ApiError::from_internal(&e))?;
    let key = task.id.to_string();
    blocking(state, move |m| m.doc_create(DocKind::Task, &key, &doc)).await
}

/// Changes a stored task; a failure is logged (the task's work is done
/// either way).
pub async fn record(state: &Shared, id: Uuid, change: impl Fn(&mut Task) + Send + 'static) {
    let key = id.to_string();
    let stamp = now();
    let result = blocking(state, move |m| {
        m.doc_update(DocKind::Task, &key, None, &mut |doc| {
            let mut task: Task = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
            change(&mut task);
            task.updated_at = stamp.clone();
            *doc = serde_json::to_value(&task).map_err(|e| e.to_string())?;
            Ok(())
        })
    })
    .await;
    if let Err(e) = result {
        tracing::error!(task = %id, error = %e.message, "cannot record a task's progress");
    }
}

/// Ends a task: `success` with `result`, or `failure`; kept 48 hours more.
pub async fn finish(state: &Shared, id: Uuid, outcome: Result<(Value, String), String>) {
    let expires = crate::model::timestamp(time::OffsetDateTime::now_utc() + TASK_TTL);
    record(state, id, move |t| {
        match &outcome {
            Ok((result, message)) => {
                t.status = "success".into();
                t.result = Some(result.clone());
                t.message = message.clone();
            }
            Err(message) => {
                t.status = "failure".into();
                t.message = message.clone();
            }
        }
        t.expires_at = Some(expires.clone());
    })
    .await;
}

/// One stored task, if it has not expired.
pub async fn load(state: &Shared, id: Uuid) -> Result<Option<Task>, ApiError> {
    let key = id.to_string();
    let doc = blocking(state, move |m| m.doc_get(DocKind::Task, &key)).await?;
    let task = doc
        .map(serde_json::from_value::<Task>)
        .transpose()
        .map_err(|e| ApiError::from_internal(&e))?;
    Ok(task.filter(|t| !t.expired(time::OffsetDateTime::now_utc())))
}

/// Every task not expired, oldest first; expired ones are removed.
async fn all(state: &Shared) -> Result<Vec<Task>, ApiError> {
    let docs = blocking(state, |m| m.doc_list(DocKind::Task)).await?;
    let now = time::OffsetDateTime::now_utc();
    let mut live = Vec::with_capacity(docs.len());
    let mut gone = Vec::new();
    for (key, doc) in docs {
        match serde_json::from_value::<Task>(doc) {
            Ok(t) if t.expired(now) => gone.push(key),
            Ok(t) => live.push(t),
            Err(e) => tracing::error!(task = %key, error = %e, "unreadable task record"),
        }
    }
    if !gone.is_empty() {
        blocking(state, move |m| {
            for key in &gone {
                m.doc_delete(DocKind::Task, key)?;
            }
            Ok::<(), MetadataError>(())
        })
        .await?;
    }
    live.sort_by_key(|t| t.created_ns);
    Ok(live)
}

/// `GET /v2/tasks/{id}` (admins).
pub async fn show(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    policy::check(Action::ReadTasks, &ctx, Target::default())?;
    let no_task = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Task with the given id {id} was not found"),
        )
    };
    let uuid = Uuid::try_parse(&id).map_err(|_| no_task())?;
    let task = load(&state, uuid).await?.ok_or_else(no_task)?;
    Ok(axum::Json(task.to_json()).into_response())
}

/// `GET /v2/tasks` (admins): filtered by `status` and `type`, newest first
/// unless sorted otherwise, a page at a time.
pub async fn list(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    policy::check(Action::ReadTasks, &ctx, Target::default())?;
    let (mut limit, mut marker, mut descending) = (25usize, None, true);
    let (mut status, mut kind) = (None, None);
    let mut sort_key = "created_at".to_owned();
    let mut base = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        let (k, v) = (k.into_owned(), v.into_owned());
        match k.as_str() {
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("Invalid limit value: {v}")))?
                    .min(1000);
            }
            "marker" => {
                marker = Some(v);
                continue;
            }
            "sort_dir" => {
                descending = match v.as_str() {
                    "desc" => true,
                    "asc" => false,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "Invalid sort direction: {v}"
                        )));
                    }
                }
            }
            "sort_key" => {
                if !["created_at", "updated_at", "id", "status", "type"].contains(&v.as_str()) {
                    return Err(ApiError::bad_request(format!("Invalid sort key: {v}")));
                }
                sort_key = v.clone();
            }
            "status" => {
                if !STATUSES.contains(&v.as_str()) {
                    return Err(ApiError::bad_request(format!("Invalid status value: {v}")));
                }
                status = Some(v.clone());
            }
            "type" => {
                if v != "import" {
                    return Err(ApiError::bad_request(format!("Invalid type value: {v}")));
                }
                kind = Some(v.clone());
            }
            _ => {}
        }
        base.push((k, v));
    }
    let mut tasks = all(&state).await?;
    tasks.retain(|t| {
        status.as_ref().is_none_or(|s| *s == t.status) && kind.as_ref().is_none_or(|k| *k == t.kind)
    });
    // Stable: ties stay in creation order.
    tasks.sort_by(|a, b| match sort_key.as_str() {
        "updated_at" => a.updated_at.cmp(&b.updated_at),
        "id" => a.id.cmp(&b.id),
        "status" => a.status.cmp(&b.status),
        "type" => a.kind.cmp(&b.kind),
        _ => std::cmp::Ordering::Equal,
    });
    if descending {
        tasks.reverse();
    }
    let start = match marker {
        None => 0,
        Some(m) => tasks
            .iter()
            .position(|t| t.id.to_string() == m)
            .map(|i| i + 1)
            .ok_or_else(|| ApiError::bad_request(format!("Invalid marker: {m}")))?,
    };
    let page: Vec<&Task> = tasks.iter().skip(start).take(limit).collect();
    let mut body = json!({
        "tasks": page.iter().map(|t| t.stub_json()).collect::<Vec<_>>(),
        "first": super::list::page_link("/v2/tasks", &base, None),
        "schema": "/v2/schemas/tasks",
    });
    if limit > 0
        && page.len() == limit
        && let (Some(last), Some(o)) = (page.last(), body.as_object_mut())
    {
        let next = super::list::page_link("/v2/tasks", &base, Some(&last.id.to_string()));
        o.insert("next".into(), json!(next));
    }
    Ok(axum::Json(body).into_response())
}

/// `GET /v2/images/{id}/tasks`: the image's tasks, as whoever sees the
/// image may read them (non-admins: their project's only).
pub async fn of_image(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
) -> Result<Response, ApiError> {
    load_visible(&state, &ctx, id).await?;
    let tasks: Vec<Value> = all(&state)
        .await?
        .into_iter()
        .filter(|t| t.image_id == Some(id) && (ctx.is_admin() || t.owner == ctx.project_id))
        .map(|t| {
            let mut v = t.to_json();
            if let Some(o) = v.as_object_mut() {
                o.remove("self");
                o.remove("schema");
                o.insert("image_id".into(), json!(t.image_id));
                o.insert("request_id".into(), json!(t.request_id));
                o.insert("user_id".into(), json!(t.user_id));
                o.insert("expires_at".into(), json!(t.expires_at));
                o.insert("deleted".into(), json!(false));
                o.insert("deleted_at".into(), Value::Null);
            }
            v
        })
        .collect();
    Ok(axum::Json(json!({"tasks": tasks})).into_response())
}

/// `POST /v2/tasks` (admins), the task API Glance still serves for imports
/// from a URL: the body is checked, then the import runs as a
/// `web-download` into a new image.
pub async fn create_legacy(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    Extension(request): Extension<RequestId>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    policy::check(Action::CreateTask, &ctx, Target::default())?;
    let body = super::metadefs::model::body_object(&body)?;
    for key in ["type", "input"] {
        if !body.contains_key(key) {
            return Err(ApiError::bad_request(format!("Task '{key}' is required")));
        }
    }
    if body.get("type").and_then(Value::as_str) != Some("import") {
        return Err(ApiError::bad_request(
            "Invalid type value: only 'import' tasks are served",
        ));
    }
    // The task API's import is a web-download: offered only with it.
    if !state
        .config
        .import
        .methods
        .iter()
        .any(|m| m == "web-download")
    {
        return Err(ApiError::bad_request(
            "Imports from a URL are not offered at this site (web-download is not enabled)",
        ));
    }
    let input = body.get("input").cloned().unwrap_or(Value::Null);
    let from = input.get("import_from").and_then(Value::as_str);
    if from.is_none() {
        return Err(ApiError::bad_request("Invalid location: None"));
    }
    let passed = super::import::web_download_url(&state, from, "legacy import task").await?;
    let props = input
        .get("image_properties")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let image = super::import::image_for_task(&state, &ctx, &props).await?;
    let task = Task::new("import", &ctx, &request.0, Some(image), input);
    let shown = task.to_json();
    let id = task.id;
    if let Err(e) = super::import::start_download(&state, task, image, passed).await {
        // The image made for it goes too.
        if let Err(d) = blocking(&state, move |m| m.delete(&image)).await {
            tracing::warn!(%image, error = %d.message, "cannot remove the image of a task that did not start");
        }
        return Err(e);
    }
    let mut resp = (StatusCode::CREATED, axum::Json(shown)).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("/v2/tasks/{id}")) {
        resp.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    Ok(resp)
}
