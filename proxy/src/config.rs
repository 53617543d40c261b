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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    dir: PathBuf,
    max_bytes: u64,
    #[serde(default = "default_chunk_mib")]
    chunk_size_mib: u32,
    #[serde(default = "default_scrub")]
    scrub_chunks_per_sec: u32,
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// HTTP limits and timeouts.
    pub http: HttpLimits,
    /// Backend stores by id.
    pub stores: BTreeMap<StoreId, StoreConfig>,
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
            Some(n) => n,
            None => std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
        };
        let http = check_http(&raw.http).map_err(invalid)?;
        let mut stores = BTreeMap::new();
        for (id, store) in raw.stores {
            let store_id = StoreId::new(&id).map_err(|e| invalid(format!("[stores.{id}]: {e}")))?;
            let store = match (store.kind, store.path, store.url) {
                (StoreKind::File, Some(path), None) => StoreConfig::File {
                    path: base.join(path),
                    cache: store.cache.unwrap_or(false),
                },
                (StoreKind::File, _, _) => {
                    return Err(invalid(format!(
                        "[stores.{id}]: a file store needs `path` (and no `url`)"
                    )));
                }
                (StoreKind::Http, None, Some(url)) => {
                    if store.cache == Some(false) {
                        return Err(invalid(format!(
                            "[stores.{id}]: an http store is always served through the cache"
                        )));
                    }
                    let origin = crate::origin::OriginConfig::from_url(&url)
                        .map_err(|e| invalid(format!("[stores.{id}]: {e}")))?;
                    StoreConfig::Http { origin }
                }
                (StoreKind::Http, _, _) => {
                    return Err(invalid(format!(
                        "[stores.{id}]: an http store needs `url` (and no `path`)"
                    )));
                }
                (StoreKind::S3 | StoreKind::Swift, _, _) => {
                    return Err(invalid(format!(
                        "[stores.{id}]: this build serves kind = \"file\" and \"http\" stores"
                    )));
                }
            };
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
            http,
            stores,
        })
    }
}

fn check_http(raw: &RawHttp) -> Result<HttpLimits, String> {
    let secs = |name: &str, v: u64| {
        if v == 0 {
            Err(format!("[http] {name} must be at least 1"))
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
        assert_eq!(
            c.stores[&local],
            StoreConfig::File {
                path: "/etc/gs/images".into(),
                cache: false,
            }
        );
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
        ];
        for (text, key) in cases {
            let err = Config::from_toml(&text, Path::new("."), "t")
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }
}
