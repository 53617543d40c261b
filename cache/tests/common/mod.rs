//! Helpers shared by the cache's integration tests.
#![allow(dead_code)]

use glance_cache::ImageMeta;
use md5::Digest as _;

/// What a link would say of `bytes`.
pub fn meta(bytes: &[u8]) -> ImageMeta {
    ImageMeta {
        size: bytes.len() as u64,
        md5: md5::Md5::digest(bytes).into(),
        sha512: sha2::Sha512::digest(bytes).into(),
    }
}

/// Chunk `i` of `bytes` cut in chunks of `chunk` bytes.
pub fn chunk_bytes(bytes: &[u8], i: u64, chunk: u32) -> &[u8] {
    let start = (i * u64::from(chunk)) as usize;
    &bytes[start..(start + chunk as usize).min(bytes.len())]
}
