//! glance-api's configuration: TOML as written, checked into typed values at
//! load. Every key is documented in `docs/operations.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("config {path}: {message}")]
pub struct ConfigError {
    /// The config file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// One static token and who it stands for (auth mode `static`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    /// The token, as sent in `X-Auth-Token`.
    pub token: String,
    /// The user id.
    pub user_id: String,
    /// The project (tenant) id.
    pub project_id: String,
    /// Roles: `admin`, `member`, `reader`, `service`.
    pub roles: Vec<String>,
}

/// The TOML file, as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Listen address.
    pub listen: String,
    /// Base URL clients reach this API on (for `Location` headers).
    pub public_url: String,
    /// Keyring file shared with the stream nodes.
    pub keyring: PathBuf,
    /// Lifetime of the signed links.
    #[serde(default = "default_ttl")]
    pub link_ttl_secs: u64,
    /// Base URLs of the stream nodes (their `public_url`).
    pub stream_nodes: Vec<String>,
    /// Largest image accepted, in bytes.
    #[serde(default = "default_cap")]
    pub image_size_cap: u64,
    /// The redb metadata file.
    pub metadata: PathBuf,
    /// The store uploads go to.
    pub store: RawStore,
    /// Authentication.
    pub auth: RawAuth,
}

fn default_ttl() -> u64 {
    glance_link::DEFAULT_TTL_SECS
}

fn default_cap() -> u64 {
    1 << 40
}

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// Store id: the same id names the store in the stream nodes' config.
    pub id: String,
    /// `file`.
    pub kind: String,
    /// Directory of a file store.
    pub path: PathBuf,
}

/// `[auth]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `static` or `keystone`.
    pub mode: String,
    /// Tokens of mode `static`.
    #[serde(default)]
    pub tokens: Vec<StaticToken>,
    /// Keystone, for mode `keystone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keystone: Option<RawKeystone>,
}

/// `[auth.keystone]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeystone {
    /// Keystone's v3 URL (`http://keystone:5000/v3`).
    pub auth_url: String,
    /// glance-api's service user.
    pub username: String,
    /// File holding its password alone (mode 0600).
    pub password_file: PathBuf,
    /// The project its token is scoped to.
    #[serde(default = "default_service_project")]
    pub project_name: String,
    /// The user's domain.
    #[serde(default = "default_domain")]
    pub user_domain_name: String,
    /// The project's domain.
    #[serde(default = "default_domain")]
    pub project_domain_name: String,
    /// Most validated tokens cached.
    #[serde(default = "default_cache_tokens")]
    pub cache_max_tokens: usize,
    /// Longest a validated token is trusted without asking Keystone again.
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl_secs: u64,
    /// Longest one call to Keystone may take.
    #[serde(default = "default_keystone_timeout")]
    pub timeout_secs: u64,
}

fn default_service_project() -> String {
    "service".into()
}

fn default_domain() -> String {
    "Default".into()
}

fn default_cache_tokens() -> usize {
    10_000
}

fn default_cache_ttl() -> u64 {
    300
}

fn default_keystone_timeout() -> u64 {
    10
}

/// How callers are authenticated.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    /// Tokens from the config file.
    Static(Vec<StaticToken>),
    /// Tokens validated with Keystone.
    Keystone(crate::keystone::KeystoneConfig),
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Base URL of this API, without a trailing `/`.
    pub public_url: String,
    /// Keyring file.
    pub keyring: PathBuf,
    /// Signed link lifetime.
    pub link_ttl: Duration,
    /// Stream node base URLs, without trailing `/`.
    pub stream_nodes: Vec<String>,
    /// Largest image accepted.
    pub image_size_cap: u64,
    /// Metadata file.
    pub metadata: PathBuf,
    /// Store id.
    pub store_id: glance_link::StoreId,
    /// File store directory.
    pub store_path: PathBuf,
    /// Authentication.
    pub auth: AuthConfig,
}

impl Config {
    /// Reads and checks the file; relative paths are taken from its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| ConfigError {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        Config::check(raw, path.parent().unwrap_or(Path::new(".")), &shown)
    }

    /// Checks a parsed file.
    pub fn check(raw: RawConfig, base: &Path, shown: &str) -> Result<Config, ConfigError> {
        let bad = |message: String| ConfigError {
            path: shown.to_owned(),
            message,
        };
        let listen = raw.listen.parse().map_err(|_| {
            bad(format!(
                "listen = {:?} is not an IP address and port",
                raw.listen
            ))
        })?;
        let url = |u: &str| {
            if u.starts_with("http://") || u.starts_with("https://") {
                Ok(u.trim_end_matches('/').to_owned())
            } else {
                Err(bad(format!("{u:?} must start with http:// or https://")))
            }
        };
        let public_url = url(&raw.public_url)?;
        let stream_nodes = raw
            .stream_nodes
            .iter()
            .map(|u| url(u))
            .collect::<Result<Vec<_>, _>>()?;
        if stream_nodes.is_empty() {
            return Err(bad("stream_nodes must name at least one stream node".into()));
        }
        if raw.link_ttl_secs == 0 {
            return Err(bad("link_ttl_secs must be at least 1".into()));
        }
        if raw.store.kind != "file" {
            return Err(bad(format!(
                "[store] kind = {:?}: this build stores images in kind = \"file\" only",
                raw.store.kind
            )));
        }
        let store_id = glance_link::StoreId::new(&raw.store.id)
            .map_err(|e| bad(format!("[store] id: {e}")))?;
        let auth = check_auth(raw.auth, base).map_err(bad)?;
        Ok(Config {
            listen,
            public_url,
            keyring: base.join(raw.keyring),
            link_ttl: Duration::from_secs(raw.link_ttl_secs),
            stream_nodes,
            image_size_cap: raw.image_size_cap,
            metadata: base.join(raw.metadata),
            store_id,
            store_path: base.join(raw.store.path),
            auth,
        })
    }
}

/// Checks `[auth]`: the keys its mode needs, and no others.
fn check_auth(raw: RawAuth, base: &Path) -> Result<AuthConfig, String> {
    match (raw.mode.as_str(), raw.keystone) {
        ("static", None) => {
            if raw.tokens.iter().any(|t| t.token.len() < 16) {
                return Err("[auth] every static token must be at least 16 characters".into());
            }
            Ok(AuthConfig::Static(raw.tokens))
        }
        ("static", Some(_)) => Err("[auth.keystone] needs [auth] mode = \"keystone\"".into()),
        ("keystone", None) => {
            Err("[auth] mode = \"keystone\" needs an [auth.keystone] table".into())
        }
        ("keystone", Some(k)) => {
            if !raw.tokens.is_empty() {
                return Err("[auth] tokens apply to mode = \"static\" only".into());
            }
            let auth_url = k.auth_url.trim_end_matches('/').to_owned();
            if !(auth_url.starts_with("http://") || auth_url.starts_with("https://")) {
                return Err(format!(
                    "[auth.keystone] auth_url = {:?} must start with http:// or https://",
                    k.auth_url
                ));
            }
            let password = glance_link::read_private_file(&base.join(&k.password_file))
                .map_err(|e| format!("[auth.keystone] password_file: {e}"))?;
            if k.timeout_secs == 0 {
                return Err("[auth.keystone] timeout_secs must be at least 1".into());
            }
            Ok(AuthConfig::Keystone(crate::keystone::KeystoneConfig {
                auth_url,
                username: k.username,
                password: password.trim_end_matches(['\r', '\n']).to_owned(),
                project_name: k.project_name,
                user_domain_name: k.user_domain_name,
                project_domain_name: k.project_domain_name,
                cache_max_tokens: k.cache_max_tokens,
                cache_ttl: Duration::from_secs(k.cache_ttl_secs),
                timeout: Duration::from_secs(k.timeout_secs),
            }))
        }
        (mode, _) => Err(format!(
            "[auth] mode = {mode:?}: use \"static\" or \"keystone\""
        )),
    }
}
