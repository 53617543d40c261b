//! glance-cache: the chunked on-disk image cache behind glance-stream.
//!
//! This build holds the parts that fix the cache's shape: the index record
//! format ([`format`], written down in `docs/cache-format.md`) and the
//! eviction policy ([`policy`], S3-FIFO, measured against LRU by
//! `cargo bench -p glance-cache --bench hit_ratio`). The data files, the redb
//! index, fill coordination and recovery build on them.
//!
//! Boundaries: knows nothing of HTTP, Keystone or links; no project crate.
#![forbid(unsafe_code)]

pub mod format;
pub mod policy;
