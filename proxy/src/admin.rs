//! The stream node's admin API, under `/admin/`, for operators and
//! glance-api: pre-warm, evict, list and prune the cache. Every call carries
//! `Authorization: Bearer <token>`, the token read at start from the file
//! the config names; without `[admin]` in the config the API does not exist
//! (404).
//!
//! - `GET /admin/cache`: the inventory (JSON): every entry with its state,
//!   bytes present, lookups (`hits`, a pre-warm included) and last access.
//! - `PUT /admin/cache/{id}`: pre-warm; the body is a signed link's query
//!   string for that image, checked like a download's. Answers `202` at once;
//!   the fill goes on in the background (watch the inventory).
//! - `DELETE /admin/cache/{id}`: evict (`204`; `404` if absent, `409` while
//!   a download reads it).
//! - `POST /admin/cache/prune[?target_bytes=N]`: evict entries nobody is
//!   reading, in eviction order, until at most N bytes (default 0) remain.
//! - `GET /admin/keyring`: the key ids and the primary (never a secret).
//! - `PUT /admin/keyring`: install a keyring (its TOML in the body), as
//!   glance-api pushes it on rotation; kept in the keyring file too.

use std::io;

use glance_cache::format::State;
use glance_link::LinkRequest;
use serde::Serialize;
use sha2::Digest as _;

use crate::clock;
use crate::conn::Io;
use crate::fill::{Source, blocking};
use crate::http::ResponseHead;
use crate::isolate::{CatchUnwind, panic_message};

/// Largest request body the admin API reads (a signed link's query string).
pub const MAX_BODY: u64 = 16 << 10;

/// Path prefix of the admin API.
pub const PREFIX: &str = "/admin/";

/// An admin request, copied out of the read buffer (the API is not a hot path).
pub struct AdminRequest {
    /// Method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// Query, without `?`.
    pub query: String,
    /// The `Authorization` header.
    pub authorization: Option<Vec<u8>>,
    /// The body.
    pub body: Vec<u8>,
}

/// An inventory line.
#[derive(Serialize)]
struct Item {
    id: String,
    size: u64,
    state: &'static str,
    bytes_present: u64,
    hits: u64,
    last_access: u64,
    created: u64,
}

/// The inventory.
#[derive(Serialize)]
struct Inventory {
    images: Vec<Item>,
    bytes_used: u64,
    bytes_limit: u64,
}

/// Whether `authorization` carries the configured token. Both sides are
/// hashed first, so the comparison takes the same time whatever the lengths.
fn authorized(token: &str, authorization: Option<&[u8]>) -> bool {
    let Some(given) = authorization.and_then(|a| a.strip_prefix(b"Bearer ")) else {
        return false;
    };
    let a = sha2::Sha256::digest(given.trim_ascii());
    let b = sha2::Sha256::digest(token.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Whether a request with this `Authorization` header may use the admin
/// API (checked before its body is read).
pub fn allowed(io: &Io, authorization: Option<&[u8]>) -> bool {
    io.shared
        .admin_token
        .as_deref()
        .is_some_and(|token| authorized(token, authorization))
}

/// Answers a request the admin API refuses: `404` when the API is off,
/// `401` for a missing or wrong token.
pub async fn refuse(io: &mut Io, keep_alive: bool) -> io::Result<()> {
    if io.shared.admin_token.is_none() {
        return io.simple(404, "no such resource\n", keep_alive).await;
    }
    let body = "a valid token is needed\n";
    ResponseHead::new(&mut io.out, 401)
        .header("WWW-Authenticate", "Bearer")
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("Content-Length", body.len())
        .finish(keep_alive);
    if !io.head_only {
        io.out.extend_from_slice(body.as_bytes());
    }
    io.metrics().response(401);
    io.write_out().await
}

/// Answers one admin request the caller checked with [`allowed`]. Returns
/// whether the connection may stay open.
pub async fn serve(io: &mut Io, req: AdminRequest, keep_alive: bool) -> io::Result<bool> {
    if req.path == "/admin/keyring" {
        return keyring(io, &req, keep_alive).await;
    }
    let rest = req.path.strip_prefix("/admin/cache").unwrap_or("-");
    match (req.method.as_str(), rest) {
        ("GET", "") => {
            let body = inventory(io).await?;
            json(io, 200, &body, keep_alive).await
        }
        ("POST", "/prune") => prune(io, &req.query, keep_alive).await,
        ("PUT", id) if id.starts_with('/') => prewarm(io, &id[1..], &req.body, keep_alive).await,
        ("DELETE", id) if id.starts_with('/') => evict(io, &id[1..], keep_alive).await,
        (_, "" | "/prune") => {
            io.simple(405, "method not allowed\n", keep_alive).await?;
            Ok(keep_alive)
        }
        (_, id) if id.starts_with('/') => {
            io.simple(405, "method not allowed\n", keep_alive).await?;
            Ok(keep_alive)
        }
        _ => {
            io.simple(404, "no such resource\n", keep_alive).await?;
            Ok(keep_alive)
        }
    }
}

/// `GET` or `PUT /admin/keyring`.
async fn keyring(io: &mut Io, req: &AdminRequest, keep_alive: bool) -> io::Result<bool> {
    let describe = |k: &glance_link::Keyring| {
        let keys: Vec<String> = k.key_ids().map(|id| id.to_string()).collect();
        serde_json::json!({"primary": k.primary().to_string(), "keys": keys}).to_string()
    };
    match req.method.as_str() {
        "GET" => {
            let body = describe(&io.shared.keyring.load());
            json(io, 200, &body, keep_alive).await
        }
        "PUT" => {
            let Ok(text) = String::from_utf8(req.body.clone()) else {
                io.simple(400, "the keyring must be UTF-8 TOML\n", keep_alive)
                    .await?;
                return Ok(keep_alive);
            };
            let shared = io.shared.clone();
            match blocking(move || shared.install_keyring(&text)).await? {
                Ok(k) => {
                    let body = describe(&k);
                    json(io, 200, &body, keep_alive).await
                }
                Err(e) => {
                    io.simple(400, &format!("keyring refused: {e}\n"), keep_alive)
                        .await?;
                    Ok(keep_alive)
                }
            }
        }
        _ => {
            io.simple(405, "method not allowed\n", keep_alive).await?;
            Ok(keep_alive)
        }
    }
}

/// The inventory as JSON, built on the blocking pool (it walks every entry
/// under the cache's lock).
async fn inventory(io: &Io) -> io::Result<String> {
    let cache = io.shared.cache.clone();
    blocking(move || inventory_json(&cache)).await
}

fn inventory_json(cache: &glance_cache::Cache) -> String {
    let stats = cache.stats();
    let images = cache
        .list()
        .into_iter()
        .map(|e| Item {
            id: uuid::Uuid::from_bytes(e.key).hyphenated().to_string(),
            size: e.size,
            state: match e.state {
                State::Reserved | State::Filling => "filling",
                State::Complete => "complete",
                State::Invalid => "invalid",
            },
            bytes_present: e.bytes_present,
            hits: e.hits,
            last_access: e.last_access,
            created: e.created,
        })
        .collect();
    serde_json::to_string(&Inventory {
        images,
        bytes_used: stats.bytes_used,
        bytes_limit: stats.bytes_limit,
    })
    .unwrap_or_else(|_| "{}".into())
}

async fn json(io: &mut Io, status: u16, body: &str, keep_alive: bool) -> io::Result<bool> {
    ResponseHead::new(&mut io.out, status)
        .header("Content-Type", "application/json")
        .header("Content-Length", body.len())
        .finish(keep_alive);
    if !io.head_only {
        io.out.extend_from_slice(body.as_bytes());
    }
    io.metrics().response(status);
    io.write_out().await?;
    Ok(keep_alive)
}

async fn prewarm(io: &mut Io, id: &str, body: &[u8], keep_alive: bool) -> io::Result<bool> {
    let path = format!("{}{id}", glance_link::PATH_PREFIX);
    let Ok(query) = std::str::from_utf8(body) else {
        io.simple(
            400,
            "the body must be a signed link's query string\n",
            keep_alive,
        )
        .await?;
        return Ok(keep_alive);
    };
    let request = LinkRequest {
        method: "GET",
        path: &path,
        query: query.trim(),
        client: io.peer.ip(),
    };
    let link = match io.shared.keyring.load().verify(&request, clock::unix_now()) {
        Ok(link) => link,
        Err(reason) => {
            io.metrics().rejected(reason);
            io.simple(403, "the link is not valid for this image\n", keep_alive)
                .await?;
            return Ok(keep_alive);
        }
    };
    let p = link.params().clone();
    if !io.shared.stores.get(&p.store).is_some_and(|s| s.cached()) {
        let msg = format!("store {} is not served through the cache\n", p.store);
        io.simple(409, &msg, keep_alive).await?;
        return Ok(keep_alive);
    }
    if p.size == 0 {
        io.simple(409, "the image has no data\n", keep_alive)
            .await?;
        return Ok(keep_alive);
    }
    let image = p.image_id;
    let src = Source::new(io.shared.clone(), io.worker.clone(), io.core, p);
    // The fill runs on this thread after the answer, whatever the client does.
    monoio::spawn(async move {
        match CatchUnwind::new(crate::fill::prewarm(src)).await {
            Ok(Ok(())) => tracing::info!(%image, "pre-warm complete"),
            Ok(Err(e)) => tracing::warn!(%image, error = %e, "pre-warm failed"),
            Err(panic) => {
                tracing::error!(%image, panic = panic_message(panic.as_ref()), "pre-warm panicked");
            }
        }
    });
    let body = format!("{{\"id\":\"{image}\",\"state\":\"filling\"}}");
    json(io, 202, &body, keep_alive).await
}

async fn evict(io: &mut Io, id: &str, keep_alive: bool) -> io::Result<bool> {
    let Some(image) = glance_link::parse_image_id(id) else {
        io.simple(404, "no such image in the cache\n", keep_alive)
            .await?;
        return Ok(keep_alive);
    };
    let cache = io.shared.cache.clone();
    let key = *image.as_bytes();
    match blocking(move || cache.evict(&key)).await? {
        Ok(()) => {
            ResponseHead::new(&mut io.out, 204).finish(keep_alive);
            io.metrics().response(204);
            io.write_out().await?;
        }
        Err(glance_cache::CacheError::NotFound) => {
            io.simple(404, "no such image in the cache\n", keep_alive)
                .await?;
        }
        Err(glance_cache::CacheError::InUse) => {
            io.simple(
                409,
                "a download is reading the image; try again later\n",
                keep_alive,
            )
            .await?;
        }
        Err(e) => {
            tracing::error!(%image, error = %e, "eviction failed");
            io.simple(500, "the eviction failed; see the node's log\n", keep_alive)
                .await?;
        }
    }
    Ok(keep_alive)
}

async fn prune(io: &mut Io, query: &str, keep_alive: bool) -> io::Result<bool> {
    let mut target = 0u64;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match (k.as_ref(), v.parse()) {
            ("target_bytes", Ok(n)) => target = n,
            _ => {
                io.simple(400, "the only parameter is target_bytes=N\n", keep_alive)
                    .await?;
                return Ok(keep_alive);
            }
        }
    }
    let cache = io.shared.cache.clone();
    match blocking(move || cache.prune(target)).await? {
        Ok(evicted) => {
            let used = io.shared.cache.stats().bytes_used;
            let body = format!("{{\"evicted\":{evicted},\"bytes_used\":{used}}}");
            json(io, 200, &body, keep_alive).await
        }
        Err(e) => {
            tracing::error!(error = %e, "prune failed");
            io.simple(500, "the prune failed; see the node's log\n", keep_alive)
                .await?;
            Ok(keep_alive)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        let t = "0123456789abcdef0123";
        assert!(authorized(t, Some(b"Bearer 0123456789abcdef0123")));
        assert!(!authorized(t, Some(b"Bearer 0123456789abcdef012")));
        assert!(!authorized(t, Some(b"Bearer 0123456789abcdef01234")));
        assert!(!authorized(t, Some(b"Basic 0123456789abcdef0123")));
        assert!(!authorized(t, Some(b"0123456789abcdef0123")));
        assert!(!authorized(t, None));
    }
}
