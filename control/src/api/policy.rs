//! Glance's default policy, for the rules this API enforces.

use crate::auth::Context;
use crate::error::ApiError;
use crate::model::{Image, Visibility};

/// Whether `ctx` may see `image` at all (others get 404, as in Glance).
pub fn visible(ctx: &Context, image: &Image) -> bool {
    ctx.is_admin()
        || owns(ctx, image)
        || matches!(image.visibility, Visibility::Public | Visibility::Community)
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
