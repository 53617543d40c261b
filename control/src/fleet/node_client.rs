//! Calls to one stream node: its `/healthz` and its admin API (keyring push,
//! cache inventory, pre-warm, eviction, prune). Every call is bounded by the
//! fleet's node timeout, and every failure comes back as a one-line reason
//! fit for a log line or an operator's JSON (never the admin token).

use std::time::Duration;

use serde::Deserialize;

use crate::config::AdminToken;
use crate::model::StreamNode;

/// One image in a node's cache (the node's `GET /admin/cache`).
#[derive(Debug, Clone, Deserialize)]
pub struct CachedImage {
    /// The image id.
    pub id: String,
    /// Its size.
    pub size: u64,
    /// `filling`, `complete` or `invalid`.
    pub state: String,
    /// Bytes already in the cache.
    pub bytes_present: u64,
    /// Times the entry was opened (its fill once, then every download).
    pub hits: u64,
    /// Unix time of the last download.
    pub last_access: u64,
    /// Unix time the entry was made.
    #[serde(default)]
    pub created: u64,
}

/// A node's cache inventory.
#[derive(Debug, Clone, Deserialize)]
pub struct Inventory {
    /// Every entry.
    pub images: Vec<CachedImage>,
    /// Bytes in use.
    pub bytes_used: u64,
    /// The node's hard limit.
    pub bytes_limit: u64,
}

/// The answer of an eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted {
    /// Removed.
    Removed,
    /// The node did not hold it.
    NotCached,
    /// A download is reading it.
    InUse,
}

/// What a prune removed on one node.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Pruned {
    /// Entries evicted.
    pub evicted: u64,
    /// Bytes in use afterwards.
    pub bytes_used: u64,
}

/// An HTTP client for the stream nodes' admin endpoints.
#[derive(Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    token: Option<AdminToken>,
    timeout: Duration,
}

impl NodeClient {
    /// A client whose calls each take at most `timeout`.
    pub fn new(
        token: Option<AdminToken>,
        timeout: Duration,
        roots: &crate::tls::Roots,
    ) -> Result<NodeClient, String> {
        let http = roots
            .client()
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build the stream-node client: {e}"))?;
        Ok(NodeClient {
            http,
            token,
            timeout,
        })
    }

    /// Whether glance-api holds the token the admin calls need.
    pub fn can_administer(&self) -> bool {
        self.token.is_some()
    }

    /// `GET /healthz`: `Ok` when the node answers 200.
    pub async fn health(&self, node: &StreamNode) -> Result<(), String> {
        let resp = self
            .http
            .get(format!("{}/healthz", node.admin_url))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| reason(&e))?;
        match resp.status().as_u16() {
            200 => Ok(()),
            s => Err(format!("/healthz answered {s}")),
        }
    }

    /// Sends an admin request with the bearer token (an error without one).
    async fn admin(
        &self,
        method: reqwest::Method,
        node: &StreamNode,
        path: &str,
        body: Option<&str>,
    ) -> Result<reqwest::Response, String> {
        let token = self
            .token
            .as_ref()
            .ok_or("no [fleet] admin_token_file is configured")?;
        let mut req = self
            .http
            .request(method, format!("{}/admin/{path}", node.admin_url))
            .bearer_auth(&token.0)
            .timeout(self.timeout);
        if let Some(body) = body {
            req = req.body(body.to_owned());
        }
        req.send().await.map_err(|e| reason(&e))
    }

    /// `PUT /admin/keyring` with the keyring file's text.
    pub async fn push_keyring(&self, node: &StreamNode, text: &str) -> Result<(), String> {
        let resp = self
            .admin(reqwest::Method::PUT, node, "keyring", Some(text))
            .await?;
        expect(resp, 200).await.map(drop)
    }

    /// `GET /admin/cache`.
    pub async fn inventory(&self, node: &StreamNode) -> Result<Inventory, String> {
        let resp = self
            .admin(reqwest::Method::GET, node, "cache", None)
            .await?;
        let resp = expect(resp, 200).await?;
        resp.json()
            .await
            .map_err(|e| format!("the inventory is not the expected JSON: {e}"))
    }

    /// `PUT /admin/cache/{id}` with a signed link's query string: the node
    /// fills the image in the background (202).
    pub async fn prewarm(&self, node: &StreamNode, id: &str, query: &str) -> Result<(), String> {
        let resp = self
            .admin(
                reqwest::Method::PUT,
                node,
                &format!("cache/{id}"),
                Some(query),
            )
            .await?;
        expect(resp, 202).await.map(drop)
    }

    /// `DELETE /admin/cache/{id}`.
    pub async fn evict(&self, node: &StreamNode, id: &str) -> Result<Evicted, String> {
        let resp = self
            .admin(reqwest::Method::DELETE, node, &format!("cache/{id}"), None)
            .await?;
        match resp.status().as_u16() {
            204 => Ok(Evicted::Removed),
            404 => Ok(Evicted::NotCached),
            409 => Ok(Evicted::InUse),
            _ => expect(resp, 204).await.map(|_| Evicted::Removed),
        }
    }

    /// `POST /admin/cache/prune?target_bytes=N`.
    pub async fn prune(&self, node: &StreamNode, target_bytes: u64) -> Result<Pruned, String> {
        let path = format!("cache/prune?target_bytes={target_bytes}");
        let resp = self.admin(reqwest::Method::POST, node, &path, None).await?;
        let resp = expect(resp, 200).await?;
        resp.json()
            .await
            .map_err(|e| format!("the prune answer is not the expected JSON: {e}"))
    }
}

/// The response if it has the status wanted, else the status and the first
/// line of the node's message.
async fn expect(resp: reqwest::Response, want: u16) -> Result<reqwest::Response, String> {
    let status = resp.status().as_u16();
    if status == want {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let line: String = text
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    Err(format!("answered {status}: {line}"))
}

/// A transport error as one line: what failed, without the URL's query.
fn reason(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {detail}")
    }
}
