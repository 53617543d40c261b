//! Glance's default policy, for the rules this API enforces.

use crate::auth::Context;
use crate::error::ApiError;
use crate::model::{Image, MemberStatus, Visibility};

/// Whether `ctx` may see `image` at all (others get 404, as in Glance);
/// `membership` is the caller's project's answer if the image is shared with it.
pub fn visible(ctx: &Context, image: &Image, membership: Option<MemberStatus>) -> bool {
    ctx.is_admin()
        || owns(ctx, image)
        || matches!(image.visibility, Visibility::Public | Visibility::Community)
        || (image.visibility == Visibility::Shared && membership.is_some())
}

/// Whether the caller's project is the member `member_id`.
pub fn is_member(ctx: &Context, member_id: &str) -> bool {
    ctx.project_id == member_id
}

/// May share the image or stop sharing it: the owner's members, or admin;
/// only `shared` images have members.
pub fn check_share(ctx: &Context, image: &Image) -> Result<(), ApiError> {
    check_modify(ctx, image)?;
    if image.visibility != Visibility::Shared {
        return Err(ApiError::forbidden("Only shared images have members."));
    }
    Ok(())
}

/// May answer a share: the member project itself (`member` role), or admin.
pub fn check_answer(ctx: &Context, member_id: &str) -> Result<(), ApiError> {
    if ctx.is_admin() || (is_member(ctx, member_id) && ctx.can_write()) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "You are not permitted to modify this membership.",
        ))
    }
}

/// The caller's project owns the image.
pub fn owns(ctx: &Context, image: &Image) -> bool {
    image.owner.as_deref() == Some(ctx.project_id.as_str())
}

/// May change the image's metadata or data: admin, or a member of the owning project.
pub fn check_modify(ctx: &Context, image: &Image) -> Result<(), ApiError> {
    if ctx.is_admin() || (ctx.has_role("member") && owns(ctx, image)) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "You are not permitted to modify this image.",
        ))
    }
}

/// May download: `member` or `admin` (not `reader`), as Glance's default.
pub fn check_download(ctx: &Context) -> Result<(), ApiError> {
    if ctx.can_write() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "You are not permitted to download this image.",
        ))
    }
}

/// Setting `public` visibility is for admins only.
pub fn check_visibility(ctx: &Context, v: Visibility) -> Result<(), ApiError> {
    if v == Visibility::Public && !ctx.is_admin() {
        return Err(ApiError::forbidden(
            "You are not permitted to publicize images.",
        ));
    }
    Ok(())
}
