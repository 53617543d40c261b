//! The cache's errors.

/// Why a cache operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The index (redb) failed.
    #[error("cache index: {0}")]
    Index(String),
    /// The index was written by another format version.
    #[error(
        "cache index has format version {found}; this build reads version {}: move the cache directory away or empty it",
        crate::index::FORMAT_VERSION
    )]
    FormatVersion {
        /// The version found.
        found: u64,
    },
    /// A data file could not be read or written.
    #[error("cache data file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A chunk's bytes have the wrong length.
    #[error("chunk {chunk} must have {expected} bytes, got {got}")]
    ChunkLength {
        /// The chunk.
        chunk: u64,
        /// Its length.
        expected: u64,
        /// What was given.
        got: u64,
    },
    /// The entry is held by a reader.
    #[error("the entry is in use")]
    InUse,
    /// Too many readers already wait on this entry.
    #[error("too many readers are waiting for this image")]
    TooManyWaiters,
    /// The entry is not complete (mapping needs a complete, immutable file).
    #[error("the entry is not complete")]
    NotComplete,
    /// No such entry.
    #[error("no such entry")]
    NotFound,
    /// The configuration is out of range.
    #[error("cache configuration: {0}")]
    Config(String),
}
