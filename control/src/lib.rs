//! glance-api: the control plane. The Glance Image API v2 (axum) over redb
//! metadata and a file store; downloads answer `307` to a link signed with
//! `glance-link` on a glance-stream node.
//!
//! Boundaries: never depends on glance-stream or the cache (they share only
//! `glance-link` and HTTP); metadata sits behind [`metadata::MetadataStore`].
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod import_filter;
pub mod keystone;
pub mod links;
pub mod metadata;
pub mod metrics;
pub mod model;
pub mod quickstart;
pub mod server;
pub mod store;
pub mod tls;
