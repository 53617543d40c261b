//! glance-stream's configuration: the TOML as written (`RawConfig`), checked
//! and turned into typed values (`Config`) at load. Only `Config` is passed on.
//!
//! Every key is documented in `docs/operations.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use glance_link::StoreId;
use serde::Deserialize;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The config file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or missing keys.
    #[error("config {path}: {message}")]
    Syntax {
        /// The config file.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("config {path}: {message}")]
    Invalid {
        /// The config file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    public_url: String,
    keyring: PathBuf,
    #[serde(default)]
    threads: usize,
    #[serde(default)]
    io_driver: IoDriver,
    cache: RawCache,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    stores: BTreeMap<String, RawStore>,
    admin: Option<RawAdmin>,
    tls: Option<RawTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    #[serde(default = "yes")]
    kernel_offload: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    token_file: PathBuf,
}

/// The admin API's bearer token (never shown by `Debug`).
#[derive(Clone)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// The shortest admin token accepted, in bytes.
pub const MIN_ADMIN_TOKEN: usize = 16;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    dir: PathBuf,
    max_bytes: u64,
    #[serde(default = "default_chunk_mib")]
    chunk_size_mib: u32,
    #[serde(default = "default_scrub")]
    scrub_chunks_per_sec: u32,
    #[serde(default = "default_readahead_mib")]
    readahead_mib: u32,
    #[serde(default = "default_fill_parallelism")]
    fill_parallelism: usize,
}

fn default_readahead_mib() -> u32 {
    16
}

fn default_fill_parallelism() -> usize {
    8
}

fn default_scrub() -> u32 {
    1
}

fn default_chunk_mib() -> u32 {
    8
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    header_timeout_secs: u64,
    idle_timeout_secs: u64,
    send_timeout_secs: u64,
    drain_timeout_secs: u64,
    max_header_bytes: usize,
    max_headers: usize,
    max_connections_per_thread: usize,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            send_timeout_secs: 60,
            drain_timeout_secs: 30,
            max_header_bytes: 8192,
            max_headers: 64,
            max_connections_per_thread: 10_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    kind: StoreKind,
    path: Option<PathBuf>,
    url: Option<String>,
    cache: Option<bool>,
    endpoint: Option<String>,
    bucket: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key_file: Option<PathBuf>,
    prefix: Option<String>,
    auth_url: Option<String>,
    auth_version: Option<String>,
    user: Option<String>,
    key_file: Option<PathBuf>,
    project: Option<String>,
    user_domain: Option<String>,
    project_domain: Option<String>,
    interface: Option<String>,
    storage_url: Option<String>,
    container: Option<String>,
    connect_timeout_secs: Option<u64>,
    first_byte_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_idle_connections: Option<usize>,
    ca_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum StoreKind {
    File,
    Http,
    S3,
    Swift,
}

/// Which monoio driver the worker threads run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoDriver {
    /// io_uring, falling back to epoll when the kernel or a sandbox refuses it.
    #[default]
    Auto,
    /// io_uring only: refuse to start without it.
    IoUring,
    /// epoll (monoio's legacy driver) only.
    Legacy,
}

/// HTTP limits and timeouts.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Longest time a client may take to send a whole request head.
    pub header_timeout: Duration,
    /// Longest a keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Longest a response may make no progress because the client is not reading.
    pub send_timeout: Duration,
    /// How long SIGTERM waits for in-flight requests before closing them.
    pub drain_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Most open connections per worker thread; more are answered 503 and closed.
    pub max_connections_per_thread: usize,
}

/// A backend store, by kind.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreConfig {
    /// A directory holding one file per image, named by image id (Glance's filesystem store layout).
    File {
        /// The directory.
        path: PathBuf,
        /// Serve through the cache (for a directory on NFS); otherwise
        /// straight from the directory.
        cache: bool,
    },
    /// An HTTP origin: the object of an image is the URL plus its id;
    /// always served through the cache.
    Http {
        /// Where and how to fetch.
        origin: crate::origin::OriginConfig,
    },
    /// An S3 bucket: the object of an image is the key prefix plus its id,
    /// read with SigV4-presigned ranged GETs; always served through the cache.
    S3 {
        /// Where and how to fetch.
        origin: crate::origin::OriginConfig,
    },
    /// A Swift container: the object of an image is the prefix plus its id,
    /// read with ranged GETs carrying a tempauth or Keystone token; always
    /// served through the cache.
    Swift {
        /// Where and how to fetch.
        origin: crate::origin::OriginConfig,
    },
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the listeners bind (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Base URL of the links this node serves, without a trailing `/`.
    pub public_url: String,
    /// The keyring file (shared with glance-api).
    pub keyring: PathBuf,
    /// Worker threads, one ring and listener each.
    pub threads: NonZeroUsize,
    /// Which I/O driver to run.
    pub io_driver: IoDriver,
    /// The on-disk cache directory.
    pub cache_dir: PathBuf,
    /// Hard limit on the cache's size in bytes.
    pub cache_max_bytes: u64,
    /// Cache chunk size in bytes.
    pub cache_chunk_size: u32,
    /// Chunks the scrubber re-checks per second (0: no scrubbing).
    pub scrub_chunks_per_sec: u32,
    /// Bytes a reader claims past its position on a miss, fetched in parallel.
    pub readahead_bytes: u64,
    /// Most readahead chunk fetches under way at once per worker thread.
    pub fill_parallelism: usize,
    /// HTTP limits and timeouts.
    pub http: HttpLimits,
    /// Backend stores by id.
    pub stores: BTreeMap<StoreId, StoreConfig>,
    /// The admin API's token; no admin API without one.
    pub admin_token: Option<AdminToken>,
    /// HTTPS: the certificate chain and key (`[tls]`); `None` for plain HTTP.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Hand TLS sessions to the kernel after the handshake where it offers
    /// TLS offload (`[tls] kernel_offload`, on by default).
    pub kernel_tls: bool,
}

impl Config {
    /// Reads and checks the config file. Relative paths in it are taken
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml(&text, base, &path.display().to_string())
    }

    /// Parses and checks config text; `base` resolves relative paths and
    /// `shown` names the source in errors.
    pub fn from_toml(text: &str, base: &Path, shown: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: shown.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: shown.to_owned(),
            message,
        };
        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            invalid(format!(
                "listen = {:?} is not an IP address and port",
                raw.listen
            ))
        })?;
        let public_url = raw.public_url.trim_end_matches('/').to_owned();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(invalid(format!(
                "public_url = {:?} must start with http:// or https://",
                raw.public_url
            )));
        }
        let threads = match NonZeroUsize::new(raw.threads) {
            Some(n) if n.get() > MAX_THREADS => {
                return Err(invalid(format!(
                    "threads = {n}: at most {MAX_THREADS} worker threads"
                )));
            }
            Some(n) => n,
            None => std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
        };
        let http = check_http(&raw.http).map_err(invalid)?;
        let mut stores = BTreeMap::new();
        for (id, store) in raw.stores {
            let store_id = StoreId::new(&id).map_err(|e| invalid(format!("[stores.{id}]: {e}")))?;
            let store =
                check_store(store, base).map_err(|e| invalid(format!("[stores.{id}]: {e}")))?;
            stores.insert(store_id, store);
        }
        if raw.cache.max_bytes == 0 {
            return Err(invalid("[cache] max_bytes must be greater than 0".into()));
        }
        if !(4..=16).contains(&raw.cache.chunk_size_mib) {
            return Err(invalid(
                "[cache] chunk_size_mib must be between 4 and 16".into(),
            ));
        }
        if raw.cache.readahead_mib > 16 {
            return Err(invalid("[cache] readahead_mib must be at most 16".into()));
        }
        if !(1..=64).contains(&raw.cache.fill_parallelism) {
            return Err(invalid(
                "[cache] fill_parallelism must be between 1 and 64".into(),
            ));
        }
        let admin_token = match raw.admin {
            None => None,
            Some(admin) => {
                let text = glance_link::read_private_file(&base.join(admin.token_file))
                    .map_err(|e| invalid(format!("[admin] token_file: {e}")))?;
                let token = text.trim();
                if token.len() < MIN_ADMIN_TOKEN || token.contains(char::is_whitespace) {
                    return Err(invalid(format!(
                        "[admin] token_file: the token must be one word of at least {MIN_ADMIN_TOKEN} characters"
                    )));
                }
                Some(AdminToken(token.to_owned()))
            }
        };
        let kernel_tls = raw.tls.as_ref().is_none_or(|t| t.kernel_offload);
        let tls = raw.tls.map(|t| crate::tls::TlsFiles {
            cert: base.join(t.cert),
            key: base.join(t.key),
        });
        if tls.is_some() && public_url.starts_with("http://") {
            return Err(invalid(format!(
                "public_url = {:?}: a node serving TLS ([tls]) is reached at an https:// URL",
                raw.public_url
            )));
        }
        Ok(Config {
            listen,
            public_url,
            keyring: base.join(raw.keyring),
            threads,
            io_driver: raw.io_driver,
            cache_dir: base.join(raw.cache.dir),
            cache_max_bytes: raw.cache.max_bytes,
            cache_chunk_size: raw.cache.chunk_size_mib << 20,
            scrub_chunks_per_sec: raw.cache.scrub_chunks_per_sec,
            readahead_bytes: u64::from(raw.cache.readahead_mib) << 20,
            fill_parallelism: raw.cache.fill_parallelism,
            http,
            stores,
            admin_token,
            tls,
            kernel_tls,
        })
    }
}

/// Checks one `[stores.X]` table: the keys its kind needs, and no others.
fn check_store(raw: RawStore, base: &Path) -> Result<StoreConfig, String> {
    const REMOTE: &[&str] = &[
        "connect_timeout_secs",
        "first_byte_timeout_secs",
        "idle_timeout_secs",
        "max_idle_connections",
        "ca_file",
    ];
    const S3: &[&str] = &[
        "endpoint",
        "bucket",
        "region",
        "access_key_id",
        "secret_access_key_file",
        "prefix",
    ];
    const SWIFT: &[&str] = &[
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
    ];
    let set = [
        ("path", raw.path.is_some()),
        ("url", raw.url.is_some()),
        ("cache", raw.cache.is_some()),
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
        ("connect_timeout_secs", raw.connect_timeout_secs.is_some()),
        (
            "first_byte_timeout_secs",
            raw.first_byte_timeout_secs.is_some(),
        ),
        ("idle_timeout_secs", raw.idle_timeout_secs.is_some()),
        ("max_idle_connections", raw.max_idle_connections.is_some()),
        ("ca_file", raw.ca_file.is_some()),
    ];
    let (kind, allowed): (&str, &[&[&str]]) = match raw.kind {
        StoreKind::File => ("file", &[&["path", "cache"]]),
        StoreKind::Http => ("http", &[&["url", "cache"], REMOTE]),
        StoreKind::S3 => ("s3", &[&["cache"], S3, REMOTE]),
        StoreKind::Swift => ("swift", &[&["cache"], SWIFT, REMOTE]),
    };
    if let Some((key, _)) = set
        .iter()
        .find(|(k, on)| *on && !allowed.iter().any(|keys| keys.contains(k)))
    {
        return Err(format!("`{key}` does not apply to a {kind} store"));
    }
    if !matches!(raw.kind, StoreKind::File) && raw.cache == Some(false) {
        return Err(format!(
            "an {kind} store is always served through the cache"
        ));
    }
    match raw.kind {
        StoreKind::File => {
            let path = raw.path.ok_or("a file store needs `path`")?;
            Ok(StoreConfig::File {
                path: base.join(path),
                cache: raw.cache.unwrap_or(false),
            })
        }
        StoreKind::Http => {
            let url = raw.url.as_deref().ok_or("an http store needs `url`")?;
            let mut origin = crate::origin::OriginConfig::from_url(url)?;
            remote_settings(&raw, base, &mut origin)?;
            Ok(StoreConfig::Http { origin })
        }
        StoreKind::S3 => {
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
            let mut origin = crate::origin::OriginConfig::s3(bucket)?;
            remote_settings(&raw, base, &mut origin)?;
            Ok(StoreConfig::S3 { origin })
        }
        StoreKind::Swift => {
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
            let ca = raw.ca_file.as_ref().map(|f| base.join(f));
            let auth = crate::swift_auth::SwiftAuth::new(account, ca.as_deref())
                .map_err(|e| format!("`ca_file`: {e}"))?;
            let auth_url = raw.auth_url.as_deref().unwrap_or_default();
            let mut origin = crate::origin::OriginConfig::swift(auth, auth_url)?;
            remote_settings(&raw, base, &mut origin)?;
            Ok(StoreConfig::Swift { origin })
        }
    }
}

/// Most worker threads (one ring, listener and cache handle each).
pub const MAX_THREADS: usize = 1024;

/// The longest timeout a setting may ask for: past it a deadline would be
/// no limit at all, and far past it adding it to the clock overflows.
pub const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

/// Applies a remote store's timeouts, pool size and CA file.
fn remote_settings(
    raw: &RawStore,
    base: &Path,
    origin: &mut crate::origin::OriginConfig,
) -> Result<(), String> {
    // A Swift store's CA file went to its authentication and storage URLs.
    if let Some(ca) = raw.ca_file.as_ref().filter(|_| !origin.is_swift()) {
        if origin.tls.is_none() {
            return Err("`ca_file` applies to an https:// backend only".into());
        }
        origin
            .use_tls(Some(&base.join(ca)))
            .map_err(|e| format!("`ca_file`: {e}"))?;
    }
    let secs = |v: Option<u64>, key: &str, default: Duration| match v {
        None => Ok(default),
        Some(n @ 1..=MAX_TIMEOUT_SECS) => Ok(Duration::from_secs(n)),
        Some(_) => Err(format!("`{key}` must be 1 to {MAX_TIMEOUT_SECS} (7 days)")),
    };
    let t = &mut origin.timeouts;
    t.connect = secs(raw.connect_timeout_secs, "connect_timeout_secs", t.connect)?;
    t.first_byte = secs(
        raw.first_byte_timeout_secs,
        "first_byte_timeout_secs",
        t.first_byte,
    )?;
    t.idle = secs(raw.idle_timeout_secs, "idle_timeout_secs", t.idle)?;
    if let Some(n) = raw.max_idle_connections {
        origin.max_idle = n;
    }
    Ok(())
}

fn check_http(raw: &RawHttp) -> Result<HttpLimits, String> {
    let secs = |name: &str, v: u64| {
        if v == 0 || v > MAX_TIMEOUT_SECS {
            Err(format!(
                "[http] {name} must be 1 to {MAX_TIMEOUT_SECS} (7 days)"
            ))
        } else {
            Ok(Duration::from_secs(v))
        }
    };
    if !(1024..=1 << 20).contains(&raw.max_header_bytes) {
        return Err("[http] max_header_bytes must be between 1024 and 1048576".into());
    }
    if !(8..=crate::http::MAX_HEADERS_CAP).contains(&raw.max_headers) {
        return Err(format!(
            "[http] max_headers must be between 8 and {}",
            crate::http::MAX_HEADERS_CAP
        ));
    }
    if raw.max_connections_per_thread == 0 {
        return Err("[http] max_connections_per_thread must be at least 1".into());
    }
    Ok(HttpLimits {
        header_timeout: secs("header_timeout_secs", raw.header_timeout_secs)?,
        idle_timeout: secs("idle_timeout_secs", raw.idle_timeout_secs)?,
        send_timeout: secs("send_timeout_secs", raw.send_timeout_secs)?,
        drain_timeout: secs("drain_timeout_secs", raw.drain_timeout_secs)?,
        max_header_bytes: raw.max_header_bytes,
        max_headers: raw.max_headers,
        max_connections_per_thread: raw.max_connections_per_thread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:9393/"
keyring = "keyring.toml"
[cache]
dir = "cache"
max_bytes = 1000
[stores.local]
kind = "file"
path = "images"
"#;

    #[test]
    fn minimal_config_gets_defaults_and_resolves_paths() {
        let c = Config::from_toml(MINIMAL, Path::new("/etc/gs"), "t").unwrap();
        assert_eq!(c.public_url, "http://127.0.0.1:9393");
        assert_eq!(c.keyring, Path::new("/etc/gs/keyring.toml"));
        assert_eq!(c.http.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.io_driver, IoDriver::Auto);
        let local = StoreId::new("local").unwrap();
        assert!(matches!(
            &c.stores[&local],
            StoreConfig::File { path, cache: false } if path == Path::new("/etc/gs/images")
        ));
        assert_eq!(c.cache_chunk_size, 8 << 20);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_key_named() {
        let cases = [
            (format!("{MINIMAL}\nbogus = 1"), "bogus"),
            (MINIMAL.replace("127.0.0.1:0", "localhost"), "listen"),
            (
                MINIMAL.replace("max_bytes = 1000", "max_bytes = 0"),
                "max_bytes",
            ),
            (MINIMAL.replace("kind = \"file\"", "kind = \"ftp\""), "ftp"),
            (
                MINIMAL.replace("http://127.0.0.1:9393/", "127.0.0.1:9393"),
                "public_url",
            ),
            (format!("{MINIMAL}\n[http]\nmax_headers = 2"), "max_headers"),
            (MINIMAL.replace("[stores.local]", "[stores.\"a/b\"]"), "a/b"),
            // Past 7 days a deadline is no limit and the clock could overflow.
            (
                format!("{MINIMAL}\n[http]\nsend_timeout_secs = 604801"),
                "send_timeout_secs must be 1 to 604800",
            ),
            (
                format!(
                    "{MINIMAL}\n[stores.o]\nkind = \"http\"\nurl = \"http://10.0.0.9/i/\"\n\
                     first_byte_timeout_secs = 18446744073709551615"
                ),
                "`first_byte_timeout_secs` must be 1 to 604800",
            ),
            (
                MINIMAL.replace("keyring = ", "threads = 1025\nkeyring = "),
                "at most 1024 worker threads",
            ),
        ];
        for (text, key) in cases {
            let err = Config::from_toml(&text, Path::new("."), "t")
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn s3_stores_read_their_secret_from_a_private_file_and_refuse_foreign_keys() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s3-secret");
        std::fs::write(&secret, "s3cr3t\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s3 = format!(
            "{MINIMAL}\n[stores.s3]\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:8080\"\n\
             bucket = \"images\"\nregion = \"us-east-1\"\naccess_key_id = \"test:tester\"\n\
             secret_access_key_file = \"s3-secret\"\nprefix = \"glance/\"\nidle_timeout_secs = 7\n"
        );
        let c = Config::from_toml(&s3, dir.path(), "t").unwrap();
        let StoreConfig::S3 { origin } = &c.stores[&StoreId::new("s3").unwrap()] else {
            panic!("not an s3 store");
        };
        assert_eq!(origin.timeouts.idle, Duration::from_secs(7));
        assert!(!format!("{c:?}").contains("s3cr3t"), "the secret in Debug");
        let cases = [
            (s3.replace("bucket = \"images\"\n", ""), "bucket"),
            (s3.replace("prefix", "path"), "path"),
            (
                s3.replace("idle_timeout_secs = 7", "idle_timeout_secs = 0"),
                "idle_timeout_secs",
            ),
            (
                s3.replace("http://127.0.0.1:8080", "ftp://s3.example"),
                "http[s]://",
            ),
            (
                format!("{s3}ca_file = \"ca.pem\"\n"),
                "`ca_file` applies to an https://",
            ),
            (
                format!(
                    "{MINIMAL}\n[stores.w]\nkind = \"http\"\nurl = \"http://o/\"\nbucket = \"b\"\n"
                ),
                "bucket",
            ),
        ];
        for (text, key) in cases {
            let err = Config::from_toml(&text, dir.path(), "t")
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Config::from_toml(&s3, dir.path(), "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("chmod 600") && !err.contains("s3cr3t"),
            "{err}"
        );
    }

    #[test]
    fn the_admin_token_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let text = format!("{MINIMAL}\n[admin]\ntoken_file = \"token\"\n");
        for (token, mode, ok) in [
            ("0123456789abcdef\n", 0o600, true),
            ("short", 0o600, false),
            ("0123456789abcdef", 0o640, false),
        ] {
            std::fs::write(&file, token).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let c = Config::from_toml(&text, dir.path(), "t");
            assert_eq!(c.is_ok(), ok, "{token} {mode:o}");
            if let Ok(c) = c {
                assert_eq!(c.admin_token.unwrap().0, "0123456789abcdef");
            }
        }
    }
}
