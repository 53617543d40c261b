//! glance-cache: the chunked on-disk image cache behind glance-stream.
//!
//! One sparse data file per image and a redb index ([`index`]) whose entry
//! records have a byte-exact format ([`mod@format`], written down in
//! `docs/cache-format.md`). [`Cache`] admits images with space reserved up
//! front, evicts with S3-FIFO ([`policy`], measured against LRU by `cargo
//! bench -p glance-cache --bench hit_ratio`), hands out one [`Claim`] per
//! chunk, writes data before index, verifies the whole image, and recovers
//! from a crash on open.
//!
//! Boundaries: knows nothing of HTTP, Keystone or links; no project crate.
//! The only `unsafe` is the memory map in `map`, with its reasons.
#![deny(unsafe_code)]

mod engine;
mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod index;
mod map;
pub mod policy;
mod recovery;

pub use engine::{
    CHUNK_SIZE_RANGE, Cache, CacheConfig, ChunkMap, ChunkState, ChunkWait, Claim, Committed,
    DEFAULT_CHUNK_SIZE, EntryInfo, FaultHook, FaultPoint, ImageMeta, Lease, Lookup, MAX_WAITERS,
    ScrubReport, Stats, WRITE_FAILURE_PAUSE,
};
pub use error::CacheError;
