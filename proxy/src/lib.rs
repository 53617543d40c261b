//! glance-stream: the data plane. A thread-per-core HTTP/1.1 server (monoio)
//! that verifies signed links (`glance-link`) and streams image bytes from
//! the page cache to the socket with `sendfile`; misses are fetched from
//! backend stores (file, HTTP, S3) once, into `glance-cache`, and served
//! while they fill. An admin API pre-warms, evicts, lists and prunes the cache.
//!
//! Boundaries: never depends on the control plane; all `unsafe` lives in
//! [`sys`]; per-core state crosses threads only through [`server::Shared`];
//! Keystone tokens a client re-sends are ignored and never logged.

pub mod admin;
pub mod clock;
pub mod config;
pub mod conn;
pub mod fill;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod image;
pub mod isolate;
pub mod ktls;
pub mod metrics;
pub mod mint;
pub mod origin;
pub mod range;
pub mod server;
pub mod signals;
pub mod store;
pub mod swift_auth;
pub mod sys;
pub mod tls;
