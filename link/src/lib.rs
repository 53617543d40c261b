//! `glance-link`: the signed-link format shared by glance-api (which signs) and
//! glance-stream (which verifies).
//!
//! A link is `GET|HEAD {stream_base}/v1/images/{image_id}?{query}`; the query
//! carries every bound parameter and an HMAC-SHA256 signature over a canonical,
//! versioned string (see `docs/signed-links.md`, whose test vectors this crate's
//! tests check).
//!
//! The [`s3`] module addresses backend objects the same way on both planes
//! and presigns S3 requests: the direct links trusted callers may get. The
//! [`swift`] module does the same for OpenStack Swift: store settings, the
//! authentication request and its answer, object URLs and TempURLs.
//!
//! Boundaries: no network, no clock reads (the time is always a parameter), no
//! other project crate. The only I/O reads and writes private files (the
//! keyring, a backend secret) and refuses ones that group or others can read.

#![forbid(unsafe_code)]

mod canonical;
mod ids;
mod keyfile;
mod keyring;
mod link;
mod query;
mod rejection;
pub mod s3;
pub mod swift;
pub mod tls;

#[doc(hidden)]
pub mod fuzzing;

pub use canonical::canonical_string;
pub use ids::{IdError, KeyId, StoreId, parse_image_id};
pub use keyfile::{MAX_PRIVATE_FILE, read_private_file, write_private_file};
pub use keyring::{Keyring, KeyringError, MIN_SECRET_BYTES, Secret};
pub use link::{LinkParams, LinkRequest, SignedLink, VerifiedLink};
pub use rejection::Rejection;

/// The version of the canonical string and query format this crate speaks.
pub const FORMAT_VERSION: u32 = 1;

/// The link lifetime glance-api uses unless configured otherwise.
pub const DEFAULT_TTL_SECS: u64 = 300;

/// The path prefix of every link: the image id follows it.
pub const PATH_PREFIX: &str = "/v1/images/";

/// Longest query string [`SignedLink::parse`] reads; anything longer is malformed.
pub const MAX_QUERY_BYTES: usize = 1024;
