//! Path parameters with Glance's answers for bad ones: an image id that is not
//! a UUID names no image (404), not a malformed request.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use uuid::Uuid;

use crate::error::ApiError;

/// The `{id}` of an image route.
pub struct ImageId(pub Uuid);

/// The `{tag}` of a tag route.
pub struct Tag(pub String);

/// The `{member}` of a member route (a project id).
pub struct MemberId(pub String);

async fn param<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    name: &str,
) -> Result<String, ApiError> {
    let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::bad_request(format!("Invalid path: {e}")))?;
    params
        .into_iter()
        .find_map(|(k, v)| (k == name).then_some(v))
        .ok_or_else(|| ApiError::bad_request(format!("Missing path parameter {name}")))
}

impl<S: Send + Sync> FromRequestParts<S> for ImageId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = param(parts, state, "id").await?;
        Uuid::try_parse(&raw)
            .map(ImageId)
            .map_err(|_| ApiError::no_image(raw))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tag {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        param(parts, state, "tag").await.map(Tag)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for MemberId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        param(parts, state, "member").await.map(MemberId)
    }
}
