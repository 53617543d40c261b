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
    /// The stream nodes registered at every start: base URLs, or tables.
    #[serde(default)]
    pub stream_nodes: Vec<RawNode>,
    /// Largest image accepted, in bytes.
    #[serde(default = "default_cap")]
    pub image_size_cap: u64,
    /// Where metadata lives: a redb file's path, or a `[metadata]` table
    /// with a database `url`.
    pub metadata: RawMetadata,
    /// The store uploads go to (the default store).
    pub store: RawStore,
    /// More stores (`[[stores]]`), which imports may write to and
    /// `copy-image` copies into, and uploads choose with `X-Image-Meta-Store`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<RawStore>,
    /// Authentication.
    pub auth: RawAuth,
    /// The stream-node fleet: health checks, placement, keyring pushes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<RawFleet>,
    /// HTTPS, and the CAs trusted when calling out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawTls>,
    /// Interoperable image import: methods, staging, web-download's filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<RawImport>,
}

/// `[import]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImport {
    /// The import methods offered (default: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Where staged and downloaded data waits for its import (default
    /// `staging`, beside the config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging_dir: Option<PathBuf>,
    /// Which URLs `web-download` may fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_download: Option<RawUriFilter>,
}

/// `[import.web_download]`: Glance's `[import_filtering_opts]`. An allow
/// list, when not empty, is the only list of its kind that counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUriFilter {
    /// Schemes allowed (default `http`, `https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_schemes: Option<Vec<String>>,
    /// Schemes refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disallowed_schemes: Vec<String>,
    /// The only hosts allowed, when not empty; a host listed here may be a
    /// loopback or link-local address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// Hosts refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disallowed_hosts: Vec<String>,
    /// Ports allowed (default 80 and 443).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ports: Option<Vec<u16>>,
    /// Ports refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disallowed_ports: Vec<u16>,
}

/// The import methods, as Glance names them.
pub const IMPORT_METHODS: [&str; 3] = ["glance-direct", "web-download", "copy-image"];

/// Interoperable import, checked.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    /// Methods offered, in the order configured.
    pub methods: Vec<String>,
    /// The staging directory.
    pub staging_dir: PathBuf,
    /// What web-download may fetch.
    pub web_download: crate::import_filter::UriFilter,
}

/// Refuses stores that would share their objects (the same directory,
/// bucket and prefix, or container and prefix) and a staging directory
/// that is a store's: deleting from one would delete from the other.
fn check_apart(
    default_id: &glance_link::StoreId,
    default: &crate::store::Store,
    extra: &[(glance_link::StoreId, crate::store::Store)],
    staging: &Path,
) -> Result<(), String> {
    let all: Vec<(&str, &crate::store::Store)> = std::iter::once((default_id.as_str(), default))
        .chain(extra.iter().map(|(i, s)| (i.as_str(), s)))
        .collect();
    for (i, (id, store)) in all.iter().enumerate() {
        let probe = store.location_url("probe");
        if let Some((other, _)) = all[..i]
            .iter()
            .find(|(_, s)| s.location_url("probe") == probe)
        {
            return Err(format!(
                "stores {other} and {id} would keep their images in the same place"
            ));
        }
        if let crate::store::Store::File(dir) = store
            && dir == staging
        {
            return Err(format!(
                "[import] staging_dir is the directory of store {id}; give it one of its own"
            ));
        }
    }
    Ok(())
}

/// Checks `[import]`.
fn check_import(raw: RawImport, base: &Path) -> Result<ImportConfig, String> {
    let methods = raw
        .methods
        .unwrap_or_else(|| IMPORT_METHODS.iter().map(|m| (*m).to_owned()).collect());
    for m in &methods {
        if !IMPORT_METHODS.contains(&m.as_str()) {
            return Err(format!(
                "[import] methods: unknown method {m:?}; expected some of {}",
                IMPORT_METHODS.join(", ")
            ));
        }
    }
    let filter = raw.web_download.unwrap_or_default();
    Ok(ImportConfig {
        methods,
        staging_dir: base.join(raw.staging_dir.unwrap_or_else(|| PathBuf::from("staging"))),
        web_download: crate::import_filter::UriFilter::check(filter)
            .map_err(|m| format!("[import.web_download] {m}"))?,
    })
}

/// `[tls]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// The certificate chain served (PEM, leaf first); with `key`, the API
    /// speaks HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM, mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) trusted beside the system's roots when
    /// glance-api calls stream nodes, Keystone or S3 over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// One entry of `stream_nodes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawNode {
    /// Just the public base URL: named after its host and port, weight 100,
    /// admin endpoints on the same URL.
    Url(String),
    /// Every setting.
    Table(RawNodeTable),
}

/// `[[stream_nodes]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNodeTable {
    /// The node's name: placement hashes it.
    pub name: String,
    /// The base URL downloads are redirected to.
    pub public_url: String,
    /// The base URL of `/healthz` and `/admin/` (default: `public_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url: Option<String>,
    /// Its relative share of the images.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// `[fleet]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    /// File holding the stream nodes' admin token alone (mode 0600): without
    /// it, glance-api cannot push keyrings or reach the nodes' caches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    /// Time between two health checks of a node.
    #[serde(default = "default_health_interval")]
    pub health_interval_secs: u64,
    /// Longest a health check, or any call to a node, may take.
    #[serde(default = "default_node_timeout")]
    pub node_timeout_secs: u64,
    /// Failed health checks in a row that take a node out of placement.
    #[serde(default = "default_unhealthy_after")]
    pub unhealthy_after: u32,
    /// Nodes each image is placed on (downloads spread among them).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long a replaced signing key outlives the last link it signed.
    #[serde(default = "default_key_grace")]
    pub key_grace_secs: u64,
}

impl Default for RawFleet {
    fn default() -> RawFleet {
        RawFleet {
            admin_token_file: None,
            health_interval_secs: default_health_interval(),
            node_timeout_secs: default_node_timeout(),
            unhealthy_after: default_unhealthy_after(),
            replicas: default_replicas(),
            key_grace_secs: default_key_grace(),
        }
    }
}

fn default_weight() -> u32 {
    100
}

fn default_health_interval() -> u64 {
    5
}

fn default_node_timeout() -> u64 {
    5
}

fn default_unhealthy_after() -> u32 {
    2
}

fn default_replicas() -> usize {
    1
}

fn default_key_grace() -> u64 {
    300
}

/// The stream nodes' admin token (its `Debug` never shows it).
#[derive(Clone)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// The checked `[fleet]` table.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The nodes' admin token, if glance-api may call their admin API.
    pub admin_token: Option<AdminToken>,
    /// Time between two health checks.
    pub health_interval: Duration,
    /// Longest one call to a node may take.
    pub node_timeout: Duration,
    /// Failed checks in a row that make a node unhealthy.
    pub unhealthy_after: u32,
    /// Nodes per image.
    pub replicas: std::num::NonZeroUsize,
    /// How long a replaced key outlives its last link.
    pub key_grace: Duration,
}

fn default_ttl() -> u64 {
    glance_link::DEFAULT_TTL_SECS
}

fn default_cap() -> u64 {
    1 << 40
}

/// `[store]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// Store id: the same id names the store in the stream nodes' config.
    pub id: String,
    /// `file`, `s3` or `swift`.
    pub kind: String,
    /// Directory of a file store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `http://host[:port]` of an S3 store's API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// An S3 store's bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The region an S3 store's signatures name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// An S3 store's access key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// File holding an S3 store's secret access key alone (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<PathBuf>,
    /// Prepended to the image id to make an S3 object key or a Swift
    /// object name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A Swift store's auth endpoint: tempauth's `.../auth/v1.0` or
    /// Keystone's `.../v3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_url: Option<String>,
    /// `"1"` (tempauth) or `"3"` (Keystone); by default from the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_version: Option<String>,
    /// A Swift store's user (`account:user` for tempauth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// File holding a Swift store's key or password alone (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Keystone: the project a Swift store's token is scoped to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Keystone: the Swift user's domain (default `Default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_domain: Option<String>,
    /// Keystone: the project's domain (default `Default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_domain: Option<String>,
    /// Keystone: the catalog interface of the object-store endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// A Swift storage URL to use instead of the one authentication names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_url: Option<String>,
    /// A Swift store's container (default `glance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// File holding the key Swift TempURLs are signed with (mode 0600):
    /// direct links for a Swift store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_url_key_file: Option<PathBuf>,
    /// Size of a Swift large object's first segments (they double every
    /// 200 segments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_bytes: Option<u64>,
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

/// Where metadata lives, as written: `metadata = "glance.redb"` (the
/// embedded file) or a `[metadata]` table naming a database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawMetadata {
    /// The redb file.
    File(PathBuf),
    /// A SQL database.
    Sql(RawSqlMetadata),
}

impl From<&str> for RawMetadata {
    fn from(path: &str) -> RawMetadata {
        RawMetadata::File(path.into())
    }
}

/// The `[metadata]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSqlMetadata {
    /// `postgresql://USER:PASSWORD@HOST:PORT/DB` or `mysql://...` (also
    /// `mariadb://...`); sqlx's options (`sslmode`, ...) as query parameters.
    pub url: String,
    /// Connections this glance-api keeps open to the database at most.
    #[serde(default = "default_sql_connections")]
    pub max_connections: u32,
}

fn default_sql_connections() -> u32 {
    16
}

/// Where metadata lives, checked.
#[derive(Clone)]
pub enum MetadataConfig {
    /// The embedded redb file.
    Redb(PathBuf),
    /// A PostgreSQL or MariaDB/MySQL database.
    Sql {
        /// Its URL (with credentials: never logged as is).
        url: String,
        /// The pool's size.
        max_connections: u32,
    },
}

impl std::fmt::Debug for MetadataConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetadataConfig::Redb(path) => write!(f, "Redb({})", path.display()),
            MetadataConfig::Sql {
                url,
                max_connections,
            } => write!(
                f,
                "Sql({}, max_connections = {max_connections})",
                crate::metadata::redact(url)
            ),
        }
    }
}

/// A TOML error as its message and place, without the source line toml
/// quotes (it may hold the database password).
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

fn check_metadata(raw: RawMetadata, base: &Path) -> Result<MetadataConfig, String> {
    match raw {
        RawMetadata::File(path) => Ok(MetadataConfig::Redb(base.join(path))),
        RawMetadata::Sql(sql) => {
            let scheme = sql.url.split("://").next().unwrap_or("");
            if !matches!(scheme, "postgres" | "postgresql" | "mysql" | "mariadb") {
                return Err(format!(
                    "[metadata] url: {} is not a postgresql://, mysql:// or mariadb:// URL",
                    crate::metadata::redact(&sql.url)
                ));
            }
            if !(1..=1024).contains(&sql.max_connections) {
                return Err(format!(
                    "[metadata] max_connections = {}: give 1 to 1024",
                    sql.max_connections
                ));
            }
            Ok(MetadataConfig::Sql {
                url: sql.url,
                max_connections: sql.max_connections,
            })
        }
    }
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
    /// Stream nodes registered at every start.
    pub stream_nodes: Vec<crate::model::StreamNode>,
    /// The fleet's settings.
    pub fleet: FleetConfig,
    /// Largest image accepted.
    pub image_size_cap: u64,
    /// Where metadata lives.
    pub metadata: MetadataConfig,
    /// Store id.
    pub store_id: glance_link::StoreId,
    /// The store uploads go to.
    pub store: crate::store::Store,
    /// The other stores, by id, in the order configured.
    pub extra_stores: Vec<(glance_link::StoreId, crate::store::Store)>,
    /// Authentication.
    pub auth: AuthConfig,
    /// The certificate and key served (`None`: plain HTTP).
    pub tls: Option<glance_link::tls::TlsFiles>,
    /// CAs trusted beside the system's when calling out.
    pub roots: crate::tls::Roots,
    /// Interoperable image import.
    pub import: ImportConfig,
}

impl Config {
    /// The store with this id.
    pub fn store_by_id(&self, id: &str) -> Option<&crate::store::Store> {
        if id == self.store_id.as_str() {
            return Some(&self.store);
        }
        self.extra_stores
            .iter()
            .find(|(i, _)| i.as_str() == id)
            .map(|(_, s)| s)
    }

    /// Every store's id, the default first.
    pub fn store_ids(&self) -> Vec<String> {
        std::iter::once(self.store_id.to_string())
            .chain(self.extra_stores.iter().map(|(i, _)| i.to_string()))
            .collect()
    }

    /// Reads and checks the file; relative paths are taken from its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        Config::from_toml(&text, path.parent().unwrap_or(Path::new(".")), &shown)
    }

    /// Parses and checks config text; `base` resolves relative paths and
    /// `shown` names the source in errors.
    pub fn from_toml(text: &str, base: &Path, shown: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            path: shown.to_owned(),
            message: syntax_error(text, &e),
        })?;
        Config::check(raw, base, shown)
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
        let public_url =
            check_node_url(&raw.public_url).map_err(|m| bad(format!("public_url: {m}")))?;
        let mut stream_nodes = Vec::with_capacity(raw.stream_nodes.len());
        for node in &raw.stream_nodes {
            let node = check_node(node).map_err(|m| bad(format!("stream_nodes: {m}")))?;
            if stream_nodes
                .iter()
                .any(|n: &crate::model::StreamNode| n.name == node.name)
            {
                return Err(bad(format!(
                    "stream_nodes: two nodes are named {:?}",
                    node.name
                )));
            }
            stream_nodes.push(node);
        }
        let (tls, roots) = check_tls(raw.tls.unwrap_or_default(), base).map_err(bad)?;
        if tls.is_some() && public_url.starts_with("http://") {
            return Err(bad(format!(
                "public_url = {:?}: an API serving TLS ([tls] cert) is reached at an https:// URL",
                raw.public_url
            )));
        }
        let fleet = check_fleet(raw.fleet.unwrap_or_default(), base).map_err(bad)?;
        if raw.link_ttl_secs == 0 || raw.link_ttl_secs > MAX_LINK_TTL_SECS {
            return Err(bad(format!(
                "link_ttl_secs must be 1 to {MAX_LINK_TTL_SECS} (7 days, as S3 presigned links)"
            )));
        }
        let store_id = glance_link::StoreId::new(&raw.store.id)
            .map_err(|e| bad(format!("[store] id: {e}")))?;
        let store =
            check_store(&raw.store, base, &roots).map_err(|m| bad(format!("[store] {m}")))?;
        let mut extra_stores: Vec<(glance_link::StoreId, crate::store::Store)> = Vec::new();
        for more in &raw.stores {
            let id = glance_link::StoreId::new(&more.id)
                .map_err(|e| bad(format!("[[stores]] id: {e}")))?;
            if id == store_id || extra_stores.iter().any(|(i, _)| *i == id) {
                return Err(bad(format!(
                    "[[stores]] id {:?}: two stores have that id",
                    more.id
                )));
            }
            let checked = check_store(more, base, &roots)
                .map_err(|m| bad(format!("[[stores]] {}: {m}", more.id)))?;
            extra_stores.push((id, checked));
        }
        for s in std::iter::once(&store).chain(extra_stores.iter().map(|(_, s)| s)) {
            let most = match s {
                crate::store::Store::File(_) => None,
                crate::store::Store::S3(_) => Some(("an S3 upload", crate::store::MAX_S3_OBJECT)),
                crate::store::Store::Swift(swift) => {
                    Some(("a Swift large object of 1000 segments", swift.max_object()))
                }
            };
            if let Some((what, most)) = most
                && raw.image_size_cap > most
            {
                return Err(bad(format!(
                    "image_size_cap = {} is more than {what} can hold ({most} bytes)",
                    raw.image_size_cap,
                )));
            }
        }
        let auth = check_auth(raw.auth, base, &roots).map_err(bad)?;
        let import = check_import(raw.import.unwrap_or_default(), base).map_err(bad)?;
        check_apart(&store_id, &store, &extra_stores, &import.staging_dir).map_err(bad)?;
        Ok(Config {
            listen,
            public_url,
            keyring: base.join(raw.keyring),
            link_ttl: Duration::from_secs(raw.link_ttl_secs),
            stream_nodes,
            fleet,
            image_size_cap: raw.image_size_cap,
            metadata: check_metadata(raw.metadata, base).map_err(bad)?,
            store_id,
            store,
            extra_stores,
            auth,
            tls,
            roots,
            import,
        })
    }
}

/// Checks `[tls]`: a certificate and key together or neither, and the CA
/// file's certificates.
fn check_tls(
    raw: RawTls,
    base: &Path,
) -> Result<(Option<glance_link::tls::TlsFiles>, crate::tls::Roots), String> {
    let files = match (raw.cert, raw.key) {
        (Some(cert), Some(key)) => Some(glance_link::tls::TlsFiles {
            cert: base.join(cert),
            key: base.join(key),
        }),
        (None, None) => None,
        _ => return Err("[tls] cert and key go together".into()),
    };
    let roots = match raw.ca_file {
        Some(path) => {
            crate::tls::Roots::load(&base.join(path)).map_err(|e| format!("[tls] ca_file: {e}"))?
        }
        None => crate::tls::Roots::default(),
    };
    Ok((files, roots))
}

/// The longest link lifetime: S3 presigns for 7 days at most, and a link is
/// a bearer credential.
pub const MAX_LINK_TTL_SECS: u64 = 7 * 24 * 3600;

/// The longest interval, timeout or grace any other setting may ask for:
/// past it a deadline is no limit, and far past it the clock overflows.
pub const MAX_DURATION_SECS: u64 = 7 * 24 * 3600;

/// The longest node name.
const MAX_NODE_NAME: usize = 64;

/// Checks a node name: 1 to 64 characters from `A-Z a-z 0-9 . _ : -`, so it
/// fits in a URL path, a metric label and a log line as it is.
pub fn check_node_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NODE_NAME
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "node name {name:?} must be 1 to {MAX_NODE_NAME} characters from A-Z a-z 0-9 . _ : -"
        ))
    }
}

/// Checks a base URL (glance-api's or a node's): `http://` or `https://`
/// with a host, no query, returned without a trailing `/`.
pub fn check_node_url(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{url:?} must be an http:// or https:// URL"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("{url:?} must not have a query or fragment"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Checks one `stream_nodes` entry.
fn check_node(raw: &RawNode) -> Result<crate::model::StreamNode, String> {
    let (name, public_url, admin_url, weight) = match raw {
        RawNode::Url(u) => {
            let public_url = check_node_url(u)?;
            let name = public_url
                .split_once("://")
                .map_or(public_url.as_str(), |(_, rest)| rest)
                .trim_end_matches('/')
                .replace('/', "_");
            (name, public_url.clone(), public_url, default_weight())
        }
        RawNode::Table(t) => {
            let public_url = check_node_url(&t.public_url)?;
            let admin_url = match &t.admin_url {
                Some(a) => check_node_url(a)?,
                None => public_url.clone(),
            };
            (t.name.clone(), public_url, admin_url, t.weight)
        }
    };
    check_node_name(&name)?;
    if weight == 0 {
        return Err(format!("node {name:?}: weight must be at least 1"));
    }
    Ok(crate::model::StreamNode {
        name,
        public_url,
        admin_url,
        weight,
        drained: false,
    })
}

/// Checks `[fleet]`, reading the admin token file.
fn check_fleet(raw: RawFleet, base: &Path) -> Result<FleetConfig, String> {
    let admin_token = match raw.admin_token_file {
        None => None,
        Some(file) => {
            let text = glance_link::read_private_file(&base.join(file))
                .map_err(|e| format!("[fleet] admin_token_file: {e}"))?;
            let token = text.trim();
            if token.len() < 16 || token.contains(char::is_whitespace) {
                return Err(
                    "[fleet] admin_token_file: the token must be one word of at least 16 characters"
                        .into(),
                );
            }
            Some(AdminToken(token.to_owned()))
        }
    };
    for (key, v, least) in [
        ("health_interval_secs", raw.health_interval_secs, 1),
        ("node_timeout_secs", raw.node_timeout_secs, 1),
        ("key_grace_secs", raw.key_grace_secs, 0),
    ] {
        if !(least..=MAX_DURATION_SECS).contains(&v) {
            return Err(format!(
                "[fleet] {key} must be {least} to {MAX_DURATION_SECS} (7 days)"
            ));
        }
    }
    let replicas =
        std::num::NonZeroUsize::new(raw.replicas).ok_or("[fleet] replicas must be at least 1")?;
    Ok(FleetConfig {
        admin_token,
        health_interval: Duration::from_secs(raw.health_interval_secs),
        node_timeout: Duration::from_secs(raw.node_timeout_secs),
        unhealthy_after: raw.unhealthy_after.max(1),
        replicas,
        key_grace: Duration::from_secs(raw.key_grace_secs),
    })
}

/// Checks `[store]`: the keys its kind needs, and no others.
fn check_store(
    raw: &RawStore,
    base: &Path,
    roots: &crate::tls::Roots,
) -> Result<crate::store::Store, String> {
    let set = [
        ("path", raw.path.is_some()),
        ("endpoint", raw.endpoint.is_some()),
        ("bucket", raw.bucket.is_some()),
        ("region", raw.region.is_some()),
        ("access_key_id", raw.access_key_id.is_some()),
        (
            "secret_access_key_file",
            raw.secret_access_key_file.is_some(),
        ),
        ("prefix", raw.prefix.is_some()),
        ("auth_url", raw.auth_url.is_some()),
        ("auth_version", raw.auth_version.is_some()),
        ("user", raw.user.is_some()),
        ("key_file", raw.key_file.is_some()),
        ("project", raw.project.is_some()),
        ("user_domain", raw.user_domain.is_some()),
        ("project_domain", raw.project_domain.is_some()),
        ("interface", raw.interface.is_some()),
        ("storage_url", raw.storage_url.is_some()),
        ("container", raw.container.is_some()),
        ("temp_url_key_file", raw.temp_url_key_file.is_some()),
        ("segment_bytes", raw.segment_bytes.is_some()),
    ];
    let allowed: &[&str] = match raw.kind.as_str() {
        "file" => &["path"],
        "s3" => &[
            "endpoint",
            "bucket",
            "region",
            "access_key_id",
            "secret_access_key_file",
            "prefix",
        ],
        "swift" => &[
            "auth_url",
            "auth_version",
            "user",
            "key_file",
            "project",
            "user_domain",
            "project_domain",
            "region",
            "interface",
            "storage_url",
            "container",
            "prefix",
            "temp_url_key_file",
            "segment_bytes",
        ],
        other => {
            return Err(format!(
                "kind = {other:?}: use \"file\", \"s3\" or \"swift\""
            ));
        }
    };
    if let Some((key, _)) = set.iter().find(|(k, on)| *on && !allowed.contains(k)) {
        return Err(format!("`{key}` does not apply to kind = {:?}", raw.kind));
    }
    match raw.kind.as_str() {
        "file" => {
            let path = raw.path.as_ref().ok_or("a file store needs `path`")?;
            Ok(crate::store::Store::File(base.join(path)))
        }
        "s3" => {
            let bucket = glance_link::s3::S3Bucket::from_settings(
                &glance_link::s3::S3Settings {
                    endpoint: raw.endpoint.as_deref(),
                    bucket: raw.bucket.as_deref(),
                    region: raw.region.as_deref(),
                    access_key_id: raw.access_key_id.as_deref(),
                    secret_access_key_file: raw.secret_access_key_file.as_deref(),
                    prefix: raw.prefix.as_deref(),
                },
                base,
            )?;
            let s3 = crate::store::S3Store::new(bucket, roots)?;
            Ok(crate::store::Store::S3(std::sync::Arc::new(s3)))
        }
        _ => {
            let account = glance_link::swift::SwiftAccount::from_settings(
                &glance_link::swift::SwiftSettings {
                    auth_url: raw.auth_url.as_deref(),
                    auth_version: raw.auth_version.as_deref(),
                    user: raw.user.as_deref(),
                    key_file: raw.key_file.as_deref(),
                    project: raw.project.as_deref(),
                    user_domain: raw.user_domain.as_deref(),
                    project_domain: raw.project_domain.as_deref(),
                    region: raw.region.as_deref(),
                    interface: raw.interface.as_deref(),
                    storage_url: raw.storage_url.as_deref(),
                    container: raw.container.as_deref(),
                    prefix: raw.prefix.as_deref(),
                },
                base,
            )?;
            let temp_url_key = raw
                .temp_url_key_file
                .as_ref()
                .map(|f| {
                    glance_link::read_private_file(&base.join(f))
                        .map(|k| k.trim().to_owned())
                        .map_err(|e| format!("temp_url_key_file: {e}"))
                })
                .transpose()?;
            let segment_bytes = raw
                .segment_bytes
                .unwrap_or(crate::store::DEFAULT_SEGMENT_BYTES);
            let swift = crate::store::SwiftStore::new(account, temp_url_key, segment_bytes, roots)?;
            Ok(crate::store::Store::Swift(std::sync::Arc::new(swift)))
        }
    }
}

/// Checks `[auth]`: the keys its mode needs, and no others.
fn check_auth(raw: RawAuth, base: &Path, roots: &crate::tls::Roots) -> Result<AuthConfig, String> {
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
            if !(1..=MAX_DURATION_SECS).contains(&k.timeout_secs) {
                return Err(format!(
                    "[auth.keystone] timeout_secs must be 1 to {MAX_DURATION_SECS} (7 days)"
                ));
            }
            if k.cache_ttl_secs > MAX_DURATION_SECS {
                return Err(format!(
                    "[auth.keystone] cache_ttl_secs must be at most {MAX_DURATION_SECS} (7 days)"
                ));
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
                roots: roots.clone(),
            }))
        }
        (mode, _) => Err(format!(
            "[auth] mode = {mode:?}: use \"static\" or \"keystone\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(extra: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "listen = \"127.0.0.1:0\"\npublic_url = \"http://api\"\nkeyring = \"k\"\n\
             metadata = \"m\"\n{extra}\n[store]\nid = \"local\"\nkind = \"file\"\npath = \"images\"\n\
             [auth]\nmode = \"static\"\n"
        );
        let raw: RawConfig = toml::from_str(&text).unwrap();
        Config::check(raw, dir.path(), "t")
    }

    #[test]
    fn nodes_links_and_the_fleet_are_checked() {
        let c = raw("stream_nodes = [\"http://10.0.0.1:9393/\"]").unwrap();
        assert_eq!(c.stream_nodes[0].name, "10.0.0.1:9393");
        assert_eq!(c.stream_nodes[0].public_url, "http://10.0.0.1:9393");
        assert_eq!(c.fleet.replicas.get(), 1);
        for (extra, want) in [
            ("link_ttl_secs = 604801", "7 days"),
            ("link_ttl_secs = 0", "link_ttl_secs"),
            ("stream_nodes = [\"ftp://x\"]", "http://"),
            (
                "stream_nodes = [\"http://a:1\", {name = \"a:1\", public_url = \"http://b:2\"}]",
                "two nodes",
            ),
            (
                "stream_nodes = [{name = \"n\", public_url = \"http://b:2\", weight = 0}]",
                "weight",
            ),
            ("[fleet]\nreplicas = 0", "replicas"),
            (
                "[fleet]\nkey_grace_secs = 604801",
                "key_grace_secs must be 0 to 604800",
            ),
            (
                "[fleet]\nnode_timeout_secs = 0",
                "node_timeout_secs must be 1",
            ),
        ] {
            let err = raw(extra).unwrap_err().to_string();
            assert!(err.contains(want), "{extra}: {err}");
        }
    }
}
