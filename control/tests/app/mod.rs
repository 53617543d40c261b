//! The API under test, called through its router without a socket, as
//! static-token callers of two projects; on the metadata backend
//! `GLANCE_TEST_METADATA` names (see `common`).
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use glance_api::api::{AppState, router};
use glance_api::config::{Config, RawAuth, RawConfig, RawNode, RawStore, StaticToken};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

use super::common;

pub const ADMIN: &str = "admin-token-0123456789";
pub const MEMBER_A: &str = "member-a-token-0123456789";
pub const READER_A: &str = "reader-a-token-0123456789";
pub const MEMBER_B: &str = "member-b-token-0123456789";
pub const SERVICE: &str = "service-token-0123456789";
pub const PATCH: &str = "application/openstack-images-v2.1-json-patch";

/// The API with its state and the directory it keeps files in.
pub struct App {
    pub dir: tempfile::TempDir,
    pub state: Arc<AppState>,
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

pub fn token(token: &str, user: &str, project: &str, roles: &[&str]) -> StaticToken {
    StaticToken {
        token: token.into(),
        user_id: user.into(),
        project_id: project.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    }
}

impl App {
    pub fn new() -> App {
        App::with_cap(1 << 30)
    }

    pub fn with_cap(cap: u64) -> App {
        App::configured(|raw| raw.image_size_cap = cap)
    }

    /// With an `[import]` table.
    pub fn with(cap: u64, import: Option<glance_api::config::RawImport>) -> App {
        App::configured(|raw| {
            raw.image_size_cap = cap;
            raw.import = import;
        })
    }

    /// With the test config changed by `edit` first.
    pub fn configured(edit: impl FnOnce(&mut RawConfig)) -> App {
        let dir = tempfile::tempdir().unwrap();
        let keyring = dir.path().join("keyring.toml");
        std::fs::write(
            &keyring,
            "primary = \"k1\"\n[keys]\nk1 = \"AUpHxry2pHEpkVJGCYLJ-TpiLWITLVzhgiWlW1sGUv8\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&keyring, std::fs::Permissions::from_mode(0o600)).unwrap();
        let raw = RawConfig {
            listen: "127.0.0.1:0".into(),
            public_url: "http://api.test:9292".into(),
            keyring: "keyring.toml".into(),
            link_ttl_secs: 300,
            stream_nodes: vec![
                RawNode::Url("http://stream-a:9393".into()),
                RawNode::Url("http://stream-b:9393".into()),
            ],
            image_size_cap: 1 << 30,
            metadata: common::metadata_for_test(),
            store: RawStore {
                id: "local".into(),
                kind: "file".into(),
                path: Some("images".into()),
                ..RawStore::default()
            },
            stores: Vec::new(),
            auth: RawAuth {
                mode: "static".into(),
                tokens: vec![
                    token(ADMIN, "root", "ops", &["admin", "member", "reader"]),
                    token(MEMBER_A, "alice", "proj-a", &["member", "reader"]),
                    token(READER_A, "rita", "proj-a", &["reader"]),
                    token(MEMBER_B, "bob", "proj-b", &["member", "reader"]),
                    token(SERVICE, "nova", "service", &["service"]),
                ],
                keystone: None,
            },
            fleet: None,
            tls: None,
            import: None,
        };
        let mut raw = raw;
        edit(&mut raw);
        let config = Config::check(raw, dir.path(), "test").unwrap();
        let state = glance_api::server::state(config).unwrap();
        App { dir, state }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Body,
        ctype: Option<&str>,
    ) -> Reply {
        // Errors come as JSON when asked for (see the HTML test below).
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("Accept", "application/json");
        if let Some(t) = token {
            req = req.header("X-Auth-Token", t);
        }
        if let Some(c) = ctype {
            req = req.header("Content-Type", c);
        }
        self.request(req.body(body).unwrap()).await
    }

    /// Sends a request as it is.
    pub async fn request(&self, req: Request<Body>) -> Reply {
        let resp = router(Arc::clone(&self.state)).oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A request without a body.
    pub async fn send(&self, method: &str, path: &str, token: &str) -> Reply {
        self.call(method, path, Some(token), Body::empty(), None)
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), Body::empty(), None)
            .await
    }

    pub async fn create(&self, token: &str, body: Value) -> Reply {
        self.call(
            "POST",
            "/v2/images",
            Some(token),
            Body::from(body.to_string()),
            Some("application/json"),
        )
        .await
    }

    pub async fn create_id(&self, token: &str, body: Value) -> String {
        let r = self.create(token, body).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()["id"].as_str().unwrap().to_owned()
    }

    pub async fn upload(&self, token: &str, id: &str, data: Vec<u8>) -> Reply {
        self.call(
            "PUT",
            &format!("/v2/images/{id}/file"),
            Some(token),
            Body::from(data),
            Some("application/octet-stream"),
        )
        .await
    }

    pub async fn patch(&self, token: &str, id: &str, ops: Value) -> Reply {
        self.call(
            "PATCH",
            &format!("/v2/images/{id}"),
            Some(token),
            Body::from(ops.to_string()),
            Some(PATCH),
        )
        .await
    }
}

pub fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}
