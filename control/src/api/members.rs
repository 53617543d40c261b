//! Image members (sharing): the owner shares a `shared` image with other
//! projects; each answers `accepted` (listed), `rejected` or stays `pending`
//! (visible, not listed), as Glance's members API.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::extract::{ImageId, MemberId};
use super::images::{blocking, load_visible, now};
use super::policy::{Action, Target};
use super::{Shared, policy};
use crate::auth::Context;
use crate::error::ApiError;
use crate::model::{Member, MemberStatus, Visibility};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    member: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    status: String,
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))
}

async fn member_of(
    state: &Shared,
    id: uuid::Uuid,
    member: String,
) -> Result<Option<Member>, ApiError> {
    blocking(state, move |m| {
        Ok(m.members(&id)?
            .into_iter()
            .find(|mb| mb.member_id == member))
    })
    .await
}

/// Glance's answer for the members of an image that is not `shared`.
fn shared_only(image: &crate::model::Image) -> Result<(), ApiError> {
    if image.visibility == Visibility::Shared {
        Ok(())
    } else {
        Err(ApiError::forbidden("Only shared images have members."))
    }
}

/// Writes a member record and answers with it.
async fn store(state: &Shared, record: Member) -> Result<Response, ApiError> {
    let stored = record.clone();
    blocking(state, move |m| m.put_member(&stored)).await?;
    Ok(axum::Json(record.to_json()).into_response())
}

fn no_member(member: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("{member} is not a member of this image."),
    )
}

/// `GET /v2/images/{id}/members`: all of them for the owner and admins, a
/// member's own entry for a member.
pub async fn list(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
) -> Result<Response, ApiError> {
    let image = load_visible(&state, &ctx, id).await?;
    shared_only(&image)?;
    let all = blocking(&state, move |m| m.members(&id)).await?;
    let members: Vec<serde_json::Value> = all
        .iter()
        .filter(|mb| policy::sees_membership(&ctx, &image, &mb.member_id))
        .map(Member::to_json)
        .collect();
    Ok(axum::Json(json!({"members": members, "schema": "/v2/schemas/members"})).into_response())
}

/// `POST /v2/images/{id}/members` with `{"member": "<project id>"}`.
pub async fn create(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let image = load_visible(&state, &ctx, id).await?;
    policy::check(Action::AddMember, &ctx, Target::image(&image))?;
    shared_only(&image)?;
    let NewMember { member } = parse_body(&body)?;
    if member.is_empty() || member.len() > 255 {
        return Err(ApiError::bad_request(
            "A member is a project id of 1 to 255 characters.",
        ));
    }
    if member_of(&state, id, member.clone()).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{member} is already a member of image {id}."),
        ));
    }
    let t = now();
    let record = Member {
        image_id: id,
        member_id: member,
        status: MemberStatus::Pending,
        created_at: t.clone(),
        updated_at: t,
    };
    store(&state, record).await
}

/// `GET /v2/images/{id}/members/{member}`.
pub async fn show(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
    MemberId(member): MemberId,
) -> Result<Response, ApiError> {
    let image = load_visible(&state, &ctx, id).await?;
    if !policy::sees_membership(&ctx, &image, &member) {
        return Err(no_member(&member));
    }
    match member_of(&state, id, member.clone()).await? {
        Some(mb) => Ok(axum::Json(mb.to_json()).into_response()),
        None => Err(no_member(&member)),
    }
}

/// `PUT /v2/images/{id}/members/{member}` with `{"status": "accepted"}`: the
/// member project answers.
pub async fn update(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
    MemberId(member): MemberId,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let image = load_visible(&state, &ctx, id).await?;
    shared_only(&image)?;
    // Another project's membership is revealed only to the owner (who
    // lists them anyway), not even by a 403.
    if !policy::sees_membership(&ctx, &image, &member) {
        return Err(no_member(&member));
    }
    let Some(mut record) = member_of(&state, id, member.clone()).await? else {
        return Err(no_member(&member));
    };
    let target = Target {
        image: None,
        member: Some(&member),
    };
    policy::check(Action::ModifyMember, &ctx, target)?;
    let Answer { status } = parse_body(&body)?;
    record.status = MemberStatus::parse(&status).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid status {status:?}: use pending, accepted or rejected."
        ))
    })?;
    record.updated_at = now();
    store(&state, record).await
}

/// `DELETE /v2/images/{id}/members/{member}`: the owner stops sharing.
pub async fn delete(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    ImageId(id): ImageId,
    MemberId(member): MemberId,
) -> Result<Response, ApiError> {
    let image = load_visible(&state, &ctx, id).await?;
    policy::check(Action::DeleteMember, &ctx, Target::image(&image))?;
    shared_only(&image)?;
    let removed = blocking(&state, {
        let member = member.clone();
        move |m| m.delete_member(&id, &member)
    })
    .await?;
    if removed {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(no_member(&member))
    }
}
