//! Glance's default policy, as data: [`RULES`] says who may take each action
//! this API checks (docs/api.md has the same table), [`check`] applies it.
//! Who may *see* an image is [`visible`]: others get `404`, as in Glance.

use crate::auth::Context;
use crate::error::ApiError;
use crate::model::{Image, MemberStatus, Visibility};

/// An action the policy rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create an image (in the caller's project).
    AddImage,
    /// Change an image's metadata or tags.
    ModifyImage,
    /// Delete an image.
    DeleteImage,
    /// Upload an image's data.
    UploadImage,
    /// Download an image's data.
    DownloadImage,
    /// Download a deactivated image's data.
    DownloadDeactivated,
    /// Make an image `public`.
    Publicize,
    /// Make an image `community`.
    Communitize,
    /// Give an image to another project.
    SetOwner,
    /// Deactivate or reactivate an image.
    Deactivate,
    /// Share an image with a project.
    AddMember,
    /// Answer a share (accept, reject).
    ModifyMember,
    /// Stop sharing an image with a project.
    DeleteMember,
    /// List, queue, evict, clean and prune the image cache (`/v2/cache`).
    ManageCache,
    /// Register and drain stream nodes; rotate and list signing keys (`/admin/`).
    ManageFleet,
    /// Get a direct backend link that bypasses glance-stream.
    DirectLink,
    /// Import staged or fetched data into an image (`glance-direct`,
    /// `web-download`).
    ImportImage,
    /// Copy an active image's data into more stores (`copy-image`).
    CopyImage,
    /// Remove an image's data from one store (`DELETE /v2/stores/...`).
    DeleteFromStore,
    /// Read tasks (`/v2/tasks`).
    ReadTasks,
    /// Start a task through the task API (`POST /v2/tasks`).
    CreateTask,
    /// Read an image's locations (`GET /v2/images/{id}/locations`).
    ReadLocations,
    /// Read the stores' details (`/v2/info/stores/detail`).
    ReadStoreDetail,
    /// Read metadata definitions (visibility still applies).
    ReadMetadefs,
    /// Create, change or delete metadata definitions.
    ManageMetadefs,
}

/// Who a rule lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Holders of the `admin` role.
    Admin,
    /// Holders of `member` in any project.
    AnyMember,
    /// Holders of `reader` (or `member`) in any project.
    AnyReader,
    /// Holders of `member` in the project owning the image.
    OwnerMember,
    /// Holders of `member` in the project a share names.
    SharedProjectMember,
    /// Holders of the `service` role (other OpenStack services, such as Nova).
    Service,
}

/// Glance's defaults for every action this API checks: the action, who may
/// take it, and what the others are told (`403`).
pub const RULES: &[(Action, &[Who], &str)] = &[
    (
        Action::AddImage,
        &[Who::Admin, Who::AnyMember],
        "You are not permitted to create images.",
    ),
    (
        Action::ModifyImage,
        &[Who::Admin, Who::OwnerMember],
        "You are not permitted to modify this image.",
    ),
    (
        Action::DeleteImage,
        &[Who::Admin, Who::OwnerMember],
        "You are not permitted to delete this image.",
    ),
    (
        Action::UploadImage,
        &[Who::Admin, Who::OwnerMember],
        "You are not permitted to upload data for this image.",
    ),
    (
        Action::DownloadImage,
        &[Who::Admin, Who::AnyMember],
        "You are not permitted to download this image.",
    ),
    (
        Action::DownloadDeactivated,
        &[Who::Admin],
        "The requested image has been deactivated. Image data download is forbidden.",
    ),
    (
        Action::Publicize,
        &[Who::Admin],
        "You are not permitted to publicize images.",
    ),
    (
        Action::Communitize,
        &[Who::Admin, Who::OwnerMember],
        "You are not permitted to communitize images.",
    ),
    (
        Action::SetOwner,
        &[Who::Admin],
        "Only an admin may change the owner of an image.",
    ),
    (
        Action::Deactivate,
        &[Who::Admin, Who::OwnerMember],
        "You are not permitted to deactivate or reactivate images.",
    ),
    (
        Action::AddMember,
        &[Who::Admin, Who::OwnerMember],
        "You are not permitted to share this image.",
    ),
    (
        Action::ModifyMember,
        &[Who::Admin, Who::SharedProjectMember],
        "You are not permitted to modify this membership.",
    ),
    (
        Action::DeleteMember,
        &[Who::Admin, Who::OwnerMember],
        "You are not permitted to stop sharing this image.",
    ),
    (
        Action::ManageCache,
        &[Who::Admin],
        "Access was denied to this resource.",
    ),
    (
        Action::ManageFleet,
        &[Who::Admin],
        "Only an admin may manage the stream nodes and signing keys.",
    ),
    (
        Action::DirectLink,
        &[Who::Admin, Who::Service],
        "Only the service and admin roles may get a direct link to the backend.",
    ),
    (
        Action::ImportImage,
        &[Who::Admin, Who::OwnerMember],
        "You are not permitted to import this image.",
    ),
    (
        Action::CopyImage,
        &[Who::Admin],
        "Only an admin may copy an image to other stores.",
    ),
    (
        Action::DeleteFromStore,
        &[Who::Admin],
        "Only an admin may delete an image's data from a store.",
    ),
    (
        Action::ReadTasks,
        &[Who::Admin],
        "Only an admin may read tasks.",
    ),
    (
        Action::CreateTask,
        &[Who::Admin],
        "Only an admin may create tasks.",
    ),
    (
        Action::ReadLocations,
        &[Who::Service],
        "Only the service role may read image locations.",
    ),
    (
        Action::ReadStoreDetail,
        &[Who::Admin, Who::Service],
        "Only the admin and service roles may read the stores' details.",
    ),
    (
        Action::ReadMetadefs,
        &[Who::Admin, Who::AnyReader],
        "You are not permitted to read metadata definitions.",
    ),
    (
        Action::ManageMetadefs,
        &[Who::Admin],
        "Only an admin may create, change or delete metadata definitions.",
    ),
];

/// What an action is taken on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target<'a> {
    /// The image, when there is one.
    pub image: Option<&'a Image>,
    /// The project a share names.
    pub member: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// An image.
    pub fn image(image: &'a Image) -> Target<'a> {
        Target {
            image: Some(image),
            member: None,
        }
    }
}

fn admits(who: Who, ctx: &Context, target: Target<'_>) -> bool {
    let member = ctx.has_role("member");
    match who {
        Who::Admin => ctx.is_admin(),
        Who::AnyMember => member,
        Who::AnyReader => member || ctx.has_role("reader"),
        Who::OwnerMember => member && target.image.is_some_and(|i| owns(ctx, i)),
        Who::SharedProjectMember => member && target.member.is_some_and(|m| is_member(ctx, m)),
        Who::Service => ctx.has_role("service"),
    }
}

/// Whether `ctx` may take `action` on `target`.
pub fn allowed(action: Action, ctx: &Context, target: Target<'_>) -> bool {
    RULES
        .iter()
        .find(|(a, _, _)| *a == action)
        .is_some_and(|(_, who, _)| who.iter().any(|w| admits(*w, ctx, target)))
}

/// `Ok` when `ctx` may take `action` on `target`, else Glance's `403`.
pub fn check(action: Action, ctx: &Context, target: Target<'_>) -> Result<(), ApiError> {
    if allowed(action, ctx, target) {
        return Ok(());
    }
    let message = RULES
        .iter()
        .find(|(a, _, _)| *a == action)
        .map_or("You are not permitted to do this.", |(_, _, m)| m);
    Err(ApiError::forbidden(message))
}

/// Whether `ctx` may see `image` at all (others get 404, as in Glance);
/// `membership` is the caller's project's answer if the image is shared with it.
pub fn visible(ctx: &Context, image: &Image, membership: Option<MemberStatus>) -> bool {
    ctx.is_admin()
        || owns(ctx, image)
        || matches!(image.visibility, Visibility::Public | Visibility::Community)
        || (image.visibility == Visibility::Shared && membership.is_some())
}

/// The caller's project owns the image.
pub fn owns(ctx: &Context, image: &Image) -> bool {
    image.owner.as_deref() == Some(ctx.project_id.as_str())
}

/// Whether `ctx` may know of the membership of `member_id` in `image`:
/// admins, the owning project, and that project itself.
pub fn sees_membership(ctx: &Context, image: &Image, member_id: &str) -> bool {
    ctx.is_admin() || owns(ctx, image) || is_member(ctx, member_id)
}

/// Whether the caller's project is the member `member_id`.
pub fn is_member(ctx: &Context, member_id: &str) -> bool {
    ctx.project_id == member_id
}

/// Setting a visibility on `image`: `public` and `community` have rules of
/// their own.
pub fn check_visibility(ctx: &Context, image: &Image, v: Visibility) -> Result<(), ApiError> {
    match v {
        Visibility::Public => check(Action::Publicize, ctx, Target::image(image)),
        Visibility::Community => check(Action::Communitize, ctx, Target::image(image)),
        Visibility::Shared | Visibility::Private => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(project: &str, roles: &[&str]) -> Context {
        Context {
            user_id: "u".into(),
            project_id: project.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    /// The callers every rule is tried with, in this order.
    fn callers() -> [Context; 6] {
        [
            ctx("ops", &["admin", "member", "reader"]),
            ctx("own", &["member", "reader"]),
            ctx("own", &["reader"]),
            ctx("other", &["member", "reader"]),
            ctx("guest", &["member", "reader"]),
            ctx("service", &["service"]),
        ]
    }

    /// One line per rule: may the admin of another project, a member of the
    /// owning project, a reader of it, a member of an unrelated project, a
    /// member of the project the share names (`guest`), another service
    /// (the `service` role alone)?
    const EXPECTED: &[(Action, [bool; 6])] = &[
        (Action::AddImage, [true, true, false, true, true, false]),
        (
            Action::ModifyImage,
            [true, true, false, false, false, false],
        ),
        (
            Action::DeleteImage,
            [true, true, false, false, false, false],
        ),
        (
            Action::UploadImage,
            [true, true, false, false, false, false],
        ),
        (
            Action::DownloadImage,
            [true, true, false, true, true, false],
        ),
        (
            Action::DownloadDeactivated,
            [true, false, false, false, false, false],
        ),
        (Action::Publicize, [true, false, false, false, false, false]),
        (
            Action::Communitize,
            [true, true, false, false, false, false],
        ),
        (Action::SetOwner, [true, false, false, false, false, false]),
        (Action::Deactivate, [true, true, false, false, false, false]),
        (Action::AddMember, [true, true, false, false, false, false]),
        (
            Action::ModifyMember,
            [true, false, false, false, true, false],
        ),
        (
            Action::DeleteMember,
            [true, true, false, false, false, false],
        ),
        (
            Action::ManageCache,
            [true, false, false, false, false, false],
        ),
        (
            Action::ManageFleet,
            [true, false, false, false, false, false],
        ),
        (Action::DirectLink, [true, false, false, false, false, true]),
        (
            Action::ImportImage,
            [true, true, false, false, false, false],
        ),
        (Action::CopyImage, [true, false, false, false, false, false]),
        (
            Action::DeleteFromStore,
            [true, false, false, false, false, false],
        ),
        (Action::ReadTasks, [true, false, false, false, false, false]),
        (
            Action::CreateTask,
            [true, false, false, false, false, false],
        ),
        (
            Action::ReadLocations,
            [false, false, false, false, false, true],
        ),
        (
            Action::ReadStoreDetail,
            [true, false, false, false, false, true],
        ),
        (Action::ReadMetadefs, [true, true, true, true, true, false]),
        (
            Action::ManageMetadefs,
            [true, false, false, false, false, false],
        ),
    ];

    #[test]
    fn every_rule_admits_exactly_glances_callers() {
        let image = Image::new(
            uuid::Uuid::nil(),
            Some("own".into()),
            "2026-11-25T00:00:00Z",
        );
        let target = Target {
            image: Some(&image),
            member: Some("guest"),
        };
        assert_eq!(EXPECTED.len(), RULES.len(), "a rule without its test line");
        for (action, expected) in EXPECTED {
            for (caller, want) in callers().iter().zip(expected) {
                assert_eq!(
                    allowed(*action, caller, target),
                    *want,
                    "{action:?} for {caller:?}"
                );
            }
            let refused = check(*action, &ctx("x", &[]), target).unwrap_err();
            assert_eq!(refused.status.as_u16(), 403);
        }
    }

    #[test]
    fn visibility_hides_private_and_unshared_images_only() {
        let mut image = Image::new(
            uuid::Uuid::nil(),
            Some("own".into()),
            "2026-11-25T00:00:00Z",
        );
        let other = ctx("other", &["member"]);
        for (vis, seen) in [
            (Visibility::Public, true),
            (Visibility::Community, true),
            (Visibility::Shared, false),
            (Visibility::Private, false),
        ] {
            image.visibility = vis;
            assert_eq!(visible(&other, &image, None), seen, "{vis:?}");
            assert!(visible(&ctx("own", &["reader"]), &image, None));
            assert!(visible(&ctx("ops", &["admin"]), &image, None));
        }
        image.visibility = Visibility::Shared;
        assert!(visible(&other, &image, Some(MemberStatus::Pending)));
        image.visibility = Visibility::Private;
        assert!(
            !visible(&other, &image, Some(MemberStatus::Accepted)),
            "a member of a no longer shared image"
        );
    }
}
