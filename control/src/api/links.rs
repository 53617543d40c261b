//! `POST /v2/images/{id}/links`: a download link without the redirect, for
//! callers that hand it on. `kind: "stream"` (default) signs a glance-stream
//! link; `kind: "direct"` presigns the backend object itself (an S3
//! presigned GET or a Swift TempURL), for the
//! `service` and `admin` roles only (docs/security.md says why).

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::Shared;
use super::extract::ImageId;
use super::images::load_visible;
use super::policy::{self, Action, Target};
use crate::auth::Context;
use crate::error::ApiError;
use crate::model::Status;

/// The request body (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    /// `stream` or `direct`.
    #[serde(default)]
    pub kind: Option<String>,
}

/// The link kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// Through glance-stream.
    Stream,
    /// Straight to the backend store.
    Direct,
}

impl LinkKind {
    /// The name in the API and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Stream => "stream",
            LinkKind::Direct => "direct",
        }
    }
}

/// `POST /v2/images/{id}/links`.
pub async fn create(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body: LinkBody = if body.iter().all(u8::is_ascii_whitespace) {
        LinkBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("The request is not valid JSON: {e}")))?
    };
    let kind = match body.kind.as_deref() {
        None | Some("stream") => LinkKind::Stream,
        Some("direct") => LinkKind::Direct,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "kind {other:?}: use \"stream\" or \"direct\""
            )));
        }
    };
    let image = load_visible(&state, &ctx, id).await?;
    // A direct link is the trusted callers' download: their rule replaces
    // the download rule (a service user may hold no `member` role).
    let rule = match kind {
        LinkKind::Stream => Action::DownloadImage,
        LinkKind::Direct => Action::DirectLink,
    };
    policy::check(rule, &ctx, Target::image(&image))?;
    if image.status == Status::Deactivated {
        policy::check(Action::DownloadDeactivated, &ctx, Target::image(&image))?;
    }
    let (url, expires) = match kind {
        LinkKind::Stream => match crate::links::sign(&state, &image) {
            crate::links::Download::NoData => return Err(no_data(id)),
            crate::links::Download::NoNode => return Err(super::data::no_node()),
            crate::links::Download::Link { url, expires } => (url, expires),
        },
        LinkKind::Direct => crate::links::direct(&state, &image).await?,
    };
    state.metrics.link_issued(kind.as_str());
    let expires_at = time::OffsetDateTime::from_unix_timestamp(expires as i64)
        .map(crate::model::timestamp)
        .map_err(|e| ApiError::from_internal(&e))?;
    Ok((
        StatusCode::OK,
        axum::Json(json!({"url": url, "expires_at": expires_at, "kind": kind.as_str()})),
    )
        .into_response())
}

/// The answer for an image without data.
fn no_data(id: uuid::Uuid) -> ApiError {
    ApiError::conflict(format!("Image {id} has no data to link to"))
}
