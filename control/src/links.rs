//! Download links: which stream node, and the signed URL.

use sha2::Digest as _;

use crate::api::AppState;
use crate::model::{Image, Status};

/// What a download answers.
pub enum Download {
    /// No data to serve (not uploaded, or zero bytes): `204`.
    NoData,
    /// `307` to this URL.
    Link(String),
}

/// Picks the stream node for an image by rendezvous (highest random weight)
/// hashing: each image always goes to the same node while the set of nodes is
/// unchanged, so it is cached on few nodes, and removing a node moves only
/// that node's images.
pub fn pick_node<'a>(nodes: &'a [String], image: &uuid::Uuid) -> Option<&'a str> {
    nodes
        .iter()
        .max_by_key(|node| {
            let mut h = sha2::Sha256::new();
            h.update(node.as_bytes());
            h.update(image.as_bytes());
            let d = h.finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&d[..8]);
            u64::from_be_bytes(first)
        })
        .map(String::as_str)
}

/// The signed link for an image that has data.
pub fn sign(state: &AppState, image: &Image) -> Download {
    let (Some(size), Some(md5), Some(sha512), Some(location)) = (
        image.size,
        image.checksum.as_deref(),
        image.os_hash_value.as_deref(),
        image.location.as_ref(),
    ) else {
        return Download::NoData;
    };
    if size == 0 || !matches!(image.status, Status::Active | Status::Deactivated) {
        return Download::NoData;
    }
    let (mut md5_bytes, mut sha_bytes) = ([0u8; 16], [0u8; 64]);
    let store = glance_link::StoreId::new(&location.store);
    let (Ok(()), Ok(()), Ok(store), Some(node)) = (
        hex::decode_to_slice(md5, &mut md5_bytes),
        hex::decode_to_slice(sha512, &mut sha_bytes),
        store,
        pick_node(&state.config.stream_nodes, &image.id),
    ) else {
        tracing::error!(image = %image.id, "image record has malformed hashes or store");
        return Download::NoData;
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let link = state.keyring.sign(glance_link::LinkParams {
        image_id: image.id,
        store,
        size,
        md5: md5_bytes,
        sha512: sha_bytes,
        expires: now.saturating_add(state.config.link_ttl.as_secs()),
        client_cidr: None,
    });
    Download::Link(link.url(node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_is_stable_and_moves_only_the_removed_nodes_images() {
        let nodes: Vec<String> = (0..4).map(|i| format!("http://10.0.0.{i}:9393")).collect();
        let ids: Vec<uuid::Uuid> = (0..400u128).map(uuid::Uuid::from_u128).collect();
        let before: Vec<&str> = ids
            .iter()
            .map(|id| pick_node(&nodes, id).unwrap())
            .collect();
        for n in &nodes {
            let share = before.iter().filter(|p| **p == n.as_str()).count();
            assert!(share > 50, "{n} got only {share} of 400");
        }
        let fewer: Vec<String> = nodes[..3].to_vec();
        for (id, was) in ids.iter().zip(&before) {
            let now = pick_node(&fewer, id).unwrap();
            if *was != nodes[3] {
                assert_eq!(now, *was, "an image moved off a node that stayed");
            }
        }
        assert_eq!(pick_node(&[], &ids[0]), None);
    }
}
