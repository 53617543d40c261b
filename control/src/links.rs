//! Download links: the parameters signed for an image, and the signed URL on
//! the stream node placement picks.

use glance_link::LinkParams;

use crate::api::AppState;
use crate::model::{Image, Status};

/// What a download answers.
pub enum Download {
    /// No data to serve (not uploaded, or zero bytes): `204`.
    NoData,
    /// No stream node is registered (or every one is drained): `503`.
    NoNode,
    /// `307` to this URL, valid until `expires` (Unix time).
    Link {
        /// The signed URL.
        url: String,
        /// When it stops working.
        expires: u64,
    },
}

/// The parameters a link to this image binds, expiring at `expires`; `None`
/// when the image has no data to serve.
pub fn params(image: &Image, expires: u64) -> Option<LinkParams> {
    let (Some(size), Some(md5), Some(sha512), Some(location)) = (
        image.size,
        image.checksum.as_deref(),
        image.os_hash_value.as_deref(),
        image.location.as_ref(),
    ) else {
        return None;
    };
    if size == 0 || !matches!(image.status, Status::Active | Status::Deactivated) {
        return None;
    }
    let (mut md5_bytes, mut sha_bytes) = ([0u8; 16], [0u8; 64]);
    let store = glance_link::StoreId::new(&location.store);
    let (Ok(()), Ok(()), Ok(store)) = (
        hex::decode_to_slice(md5, &mut md5_bytes),
        hex::decode_to_slice(sha512, &mut sha_bytes),
        store,
    ) else {
        tracing::error!(image = %image.id, "image record has malformed hashes or store");
        return None;
    };
    Some(LinkParams {
        image_id: image.id,
        store,
        size,
        md5: md5_bytes,
        sha512: sha_bytes,
        expires,
        client_cidr: None,
    })
}

/// When a link signed now expires.
pub fn expiry(state: &AppState) -> u64 {
    crate::fleet::unix_now().saturating_add(state.config.link_ttl.as_secs())
}

/// The signed link for an image, on the node placement picks for it.
pub fn sign(state: &AppState, image: &Image) -> Download {
    let expires = expiry(state);
    let Some(params) = params(image, expires) else {
        return Download::NoData;
    };
    let Some((node, keys)) = state.fleet.pick(&image.id) else {
        return Download::NoNode;
    };
    let link = keys.keyring.sign(params);
    Download::Link {
        url: link.url(&node.public_url),
        expires,
    }
}

/// A direct link to the image's object in the backend store, valid for the
/// link TTL: an S3 presigned GET, or a Swift TempURL (when the store has a
/// TempURL key). Other stores have none.
pub async fn direct(
    state: &AppState,
    image: &Image,
) -> Result<(String, u64), crate::error::ApiError> {
    use crate::error::ApiError;
    let expires = expiry(state);
    let (Some(_), Some(location)) = (params(image, expires), image.location.as_ref()) else {
        return Err(ApiError::conflict(format!(
            "Image {} has no data to link to",
            image.id
        )));
    };
    let Some(store) = state.config.store_by_id(&location.store) else {
        return Err(ApiError::conflict(format!(
            "Image {} is in store {}, which is not configured",
            image.id, location.store
        )));
    };
    let none = || {
        ApiError::conflict(format!(
            "Image {} is in store {} (kind {}), which has no direct links",
            image.id,
            location.store,
            store.kind()
        ))
    };
    match store {
        crate::store::Store::S3(s3) => Ok((
            s3.presigned_get(&location.key, state.config.link_ttl),
            expires,
        )),
        crate::store::Store::Swift(swift) => match swift.temp_url(&location.key, expires).await {
            Ok(Some(url)) => Ok((url, expires)),
            Ok(None) => Err(none()),
            Err(e) => {
                tracing::error!(image = %image.id, error = %e, "cannot sign a TempURL");
                Err(ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "the Swift store cannot be reached to sign a direct link",
                ))
            }
        },
        crate::store::Store::File(_) => Err(none()),
    }
}
