//! OpenStack Swift accounts as both planes reach them: the store settings,
//! checked the same way on glance-api (which writes objects and hands out
//! TempURLs) and glance-stream (which reads them); the authentication
//! request (tempauth v1 or Keystone v3 password) and the parsing of its
//! answer into a [`Session`]; object URLs; and TempURL signing. Nothing here
//! sends a request or reads the clock: each plane sends [`AuthRequest`] with
//! its own HTTP client and passes the time in.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::Deserialize;
use sha2::Sha256;

/// The container images go to when the config names none (as Glance's).
pub const DEFAULT_CONTAINER: &str = "glance";

/// Largest authentication answer read (a Keystone token with a big catalog).
pub const MAX_AUTH_BODY: usize = 1 << 20;

/// Shortest TempURL key accepted.
pub const MIN_TEMP_URL_KEY: usize = 16;

/// A Swift store's settings as the config holds them: every key optional,
/// checked by [`SwiftAccount::from_settings`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SwiftSettings<'a> {
    /// Where to authenticate: tempauth's `http[s]://host[:port]/auth/v1.0`
    /// or Keystone's `http[s]://host[:port]/v3`.
    pub auth_url: Option<&'a str>,
    /// `"1"` (tempauth) or `"3"` (Keystone); by default `"3"` when the
    /// auth URL's path ends in `/v3`, else `"1"`.
    pub auth_version: Option<&'a str>,
    /// tempauth: `account:user`; Keystone: the user's name.
    pub user: Option<&'a str>,
    /// File holding the key (tempauth) or password (Keystone) alone, mode
    /// 0600, relative to the config's directory.
    pub key_file: Option<&'a Path>,
    /// Keystone: the project the token is scoped to.
    pub project: Option<&'a str>,
    /// Keystone: the user's domain name (default `Default`).
    pub user_domain: Option<&'a str>,
    /// Keystone: the project's domain name (default `Default`).
    pub project_domain: Option<&'a str>,
    /// Keystone: the catalog region to pick the object-store endpoint in.
    pub region: Option<&'a str>,
    /// Keystone: the endpoint interface, `public` (default), `internal` or `admin`.
    pub interface: Option<&'a str>,
    /// The storage URL to use instead of the one authentication names.
    pub storage_url: Option<&'a str>,
    /// The container (default [`DEFAULT_CONTAINER`]).
    pub container: Option<&'a str>,
    /// Prepended to the image id to make the object name.
    pub prefix: Option<&'a str>,
}

/// How an account authenticates (secrets never in `Debug`).
#[derive(Clone)]
enum Auth {
    /// tempauth (or any v1 auth): a GET with `X-Auth-User` and `X-Auth-Key`.
    V1 {
        url: String,
        user: String,
        key: String,
    },
    /// Keystone v3 password authentication, scoped to a project.
    V3 {
        url: String,
        user: String,
        password: String,
        user_domain: String,
        project: String,
        project_domain: String,
        region: Option<String>,
        interface: String,
    },
}

/// A Swift account, its credentials, the container and the object prefix.
#[derive(Clone)]
pub struct SwiftAccount {
    auth: Auth,
    storage_url: Option<StorageUrl>,
    container: String,
    prefix: String,
}

impl std::fmt::Debug for SwiftAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (version, url, user) = match &self.auth {
            Auth::V1 { url, user, .. } => ("1", url, user),
            Auth::V3 { url, user, .. } => ("3", url, user),
        };
        f.debug_struct("SwiftAccount")
            .field("auth_version", &version)
            .field("auth_url", url)
            .field("user", user)
            .field("container", &self.container)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A storage URL: `http[s]://host[:port]/v1/ACCOUNT`, without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageUrl(url::Url);

impl StorageUrl {
    /// Checks `url`: http or https, a host, no query, and a path of
    /// characters that need no escaping (what TempURLs sign is the path as
    /// sent).
    pub fn parse(url: &str) -> Result<StorageUrl, String> {
        let parsed: url::Url = url
            .trim_end_matches('/')
            .parse()
            .map_err(|e| format!("storage URL {url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host_str().is_none()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
            || !parsed.username().is_empty()
        {
            return Err(format!(
                "storage URL {url:?} is not http[s]://host[:port]/v1/ACCOUNT"
            ));
        }
        if !parsed.path().bytes().all(|b| plain(b) || b == b'/') {
            return Err(format!(
                "storage URL {url:?}: its path has characters that need escaping"
            ));
        }
        Ok(StorageUrl(parsed))
    }

    /// The URL.
    pub fn url(&self) -> &url::Url {
        &self.0
    }

    /// `https` or not.
    pub fn is_https(&self) -> bool {
        self.0.scheme() == "https"
    }

    /// The host (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        self.0
            .host_str()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']')
    }

    /// The port (the scheme's default when the URL gives none).
    pub fn port(&self) -> u16 {
        self.0.port_or_known_default().unwrap_or(80)
    }

    /// The `Host` header: the port only when it is not the default.
    pub fn host_header(&self) -> String {
        let host = self.0.host_str().unwrap_or("");
        match self.0.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    /// The path, `/v1/ACCOUNT`, without a trailing `/`.
    pub fn path(&self) -> &str {
        self.0.path().trim_end_matches('/')
    }
}

/// Bytes a path segment may hold unescaped (RFC 3986 unreserved, and the
/// sub-delimiters Swift account names use).
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'@')
}

/// An authenticated session: a token and the account's storage URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// The token to send as `X-Auth-Token`.
    pub token: String,
    /// Where the account's containers are.
    pub storage_url: StorageUrl,
    /// How long the token stays valid from when it was obtained, when the
    /// answer says.
    pub lifetime: Option<Duration>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("storage_url", &self.storage_url.url().as_str())
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// How long a failed authentication is remembered: callers in that time get
/// its error (or the session still valid) without asking again.
pub const FAILURE_HOLD: Duration = Duration::from_secs(5);

/// A session as a plane holds it, with when to renew it and when it expires.
#[derive(Debug)]
pub struct Held {
    /// The session.
    pub session: Session,
    renew_at: Option<Instant>,
    expires_at: Option<Instant>,
}

/// What [`SessionCache::begin`] says to do.
#[derive(Debug)]
pub enum Step {
    /// Use this session.
    Ready(Arc<Held>),
    /// Authentication failed a moment ago and nothing valid is held.
    Failed(AuthError),
    /// Authenticate, then hand the outcome to [`SessionCache::finish`].
    Authenticate,
}

/// One account's session and last failure: the renewal policy both planes
/// share (each holds it under its own lock and sends the request with its
/// own client). A new token is renewed when less than half its lifetime or
/// 10 minutes remain, whichever is shorter, so a long upload does not run
/// into the expiry; a token the service handed out again (tempauth answers
/// with the token it holds until that expires) is kept until it expires. A
/// token of unknown lifetime is renewed only after a `401`. When renewing
/// fails, a session that has not expired is still used.
#[derive(Debug, Default)]
pub struct SessionCache {
    held: Option<Arc<Held>>,
    failed: Option<(Instant, AuthError)>,
}

impl SessionCache {
    /// The session held, unless it is due for renewal at `now`.
    pub fn usable(&self, now: Instant) -> Option<Arc<Held>> {
        self.held
            .as_ref()
            .filter(|h| h.renew_at.is_none_or(|at| now < at))
            .map(Arc::clone)
    }

    /// The session held, unless it has expired at `now`.
    fn valid(&self, now: Instant) -> Option<Arc<Held>> {
        self.held
            .as_ref()
            .filter(|h| h.expires_at.is_none_or(|at| now < at))
            .map(Arc::clone)
    }

    /// What to do for a caller that needs a session, having had `refused`
    /// refused by Swift (`401`), or none.
    pub fn begin(&mut self, refused: Option<&Arc<Held>>, now: Instant) -> Step {
        if let Some(refused) = refused {
            self.forget(refused);
        }
        if let Some(held) = self.usable(now)
            && refused.is_none_or(|r| !Arc::ptr_eq(r, &held))
        {
            return Step::Ready(held);
        }
        match &self.failed {
            Some((at, e)) if now.saturating_duration_since(*at) < FAILURE_HOLD => {
                match self.valid(now) {
                    Some(held) => Step::Ready(held),
                    None => Step::Failed(e.clone()),
                }
            }
            _ => Step::Authenticate,
        }
    }

    /// Drops `refused` (a token Swift refused) unless a newer one replaced it.
    pub fn forget(&mut self, refused: &Arc<Held>) {
        if self.held.as_ref().is_some_and(|h| Arc::ptr_eq(h, refused)) {
            self.held = None;
        }
    }

    /// Takes the outcome of an authentication that ended at `now`.
    pub fn finish(
        &mut self,
        outcome: Result<Session, AuthError>,
        now: Instant,
    ) -> Result<Arc<Held>, AuthError> {
        match outcome {
            Ok(session) => {
                let again = self
                    .held
                    .as_ref()
                    .is_some_and(|h| h.session.token == session.token);
                let expires_at = session.lifetime.map(|life| now + life);
                let renew_at = session.lifetime.map(|life| {
                    let margin = (life / 2).min(Duration::from_secs(600));
                    if again {
                        now + life
                    } else {
                        now + (life - margin)
                    }
                });
                let held = Arc::new(Held {
                    session,
                    renew_at,
                    expires_at,
                });
                self.held = Some(Arc::clone(&held));
                self.failed = None;
                Ok(held)
            }
            Err(e) => {
                self.failed = Some((now, e.clone()));
                self.valid(now).ok_or(e)
            }
        }
    }
}

/// The authentication request to send (no credential in `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// `GET` (v1) or `POST` (v3).
    pub method: &'static str,
    /// The URL.
    pub url: String,
    /// Headers to send (they hold the credentials: never log them).
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body (v3).
    pub body: Option<Vec<u8>>,
}

impl std::fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The auth service refused the credentials (`401`, `403`): trying again
    /// does not help.
    #[error("Swift authentication refused the credentials ({0})")]
    Refused(u16),
    /// Another status: the service may be down.
    #[error("Swift authentication answered {0}")]
    Status(u16),
    /// The request did not complete.
    #[error("Swift authentication failed: {0}")]
    Transport(String),
    /// The answer lacks what a session needs.
    #[error("Swift authentication answer is not usable: {0}")]
    Malformed(String),
}

impl AuthError {
    /// Whether trying again later may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            AuthError::Transport(_) => true,
            AuthError::Status(s) => *s >= 500 || *s == 429,
            AuthError::Refused(_) | AuthError::Malformed(_) => false,
        }
    }
}

impl SwiftAccount {
    /// Checks the settings and reads the key file (relative to `base`).
    /// Errors name the key at fault and never the secret.
    pub fn from_settings(s: &SwiftSettings<'_>, base: &Path) -> Result<SwiftAccount, String> {
        let auth_url = s.auth_url.ok_or("a swift store needs `auth_url`")?;
        let url: url::Url = auth_url
            .parse()
            .map_err(|e| format!("auth_url {auth_url:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || url.query().is_some()
            || !url.username().is_empty()
        {
            return Err(format!(
                "auth_url {auth_url:?} is not http[s]://host[:port]/path"
            ));
        }
        let version = match s.auth_version {
            Some(v) => v,
            None if url.path().trim_end_matches('/').ends_with("/v3") => "3",
            None => "1",
        };
        let user = s.user.ok_or("a swift store needs `user`")?.to_owned();
        let key_file = s.key_file.ok_or("a swift store needs `key_file`")?;
        let key = crate::read_private_file(&base.join(key_file))
            .map_err(|e| format!("key_file: {e}"))?
            .trim()
            .to_owned();
        if user.is_empty() || key.is_empty() {
            return Err("the user and the key must not be empty".into());
        }
        let keystone_keys = [
            ("project", s.project.is_some()),
            ("user_domain", s.user_domain.is_some()),
            ("project_domain", s.project_domain.is_some()),
            ("region", s.region.is_some()),
            ("interface", s.interface.is_some()),
        ];
        let auth = match version {
            "1" => {
                if let Some((k, _)) = keystone_keys.iter().find(|(_, set)| *set) {
                    return Err(format!("`{k}` applies to auth_version = \"3\" only"));
                }
                if !user.contains(':') {
                    return Err("with auth_version = \"1\", `user` is account:user".into());
                }
                Auth::V1 {
                    url: auth_url.to_owned(),
                    user,
                    key,
                }
            }
            "3" => {
                let interface = s.interface.unwrap_or("public");
                if !matches!(interface, "public" | "internal" | "admin") {
                    return Err(format!(
                        "interface {interface:?}: use \"public\", \"internal\" or \"admin\""
                    ));
                }
                Auth::V3 {
                    url: auth_url.trim_end_matches('/').to_owned(),
                    user,
                    password: key,
                    user_domain: s.user_domain.unwrap_or("Default").to_owned(),
                    project: s
                        .project
                        .ok_or("with auth_version = \"3\", a swift store needs `project`")?
                        .to_owned(),
                    project_domain: s.project_domain.unwrap_or("Default").to_owned(),
                    region: s.region.map(str::to_owned),
                    interface: interface.to_owned(),
                }
            }
            other => return Err(format!("auth_version {other:?}: use \"1\" or \"3\"")),
        };
        let container = s.container.unwrap_or(DEFAULT_CONTAINER);
        if container.is_empty() || container.len() > 256 || !container.bytes().all(plain) {
            return Err(format!(
                "container {container:?}: use 1 to 256 letters, digits and -._~:@"
            ));
        }
        let prefix = s.prefix.unwrap_or("");
        if prefix.len() > 512 || !prefix.bytes().all(|b| plain(b) || b == b'/') {
            return Err(format!(
                "prefix {prefix:?}: use at most 512 letters, digits and -._~:@/"
            ));
        }
        Ok(SwiftAccount {
            auth,
            storage_url: s.storage_url.map(StorageUrl::parse).transpose()?,
            container: container.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// An account for the fuzz targets: tempauth, or Keystone when `v3`,
    /// with fixed credentials and no file read.
    pub(crate) fn for_fuzzing(v3: bool) -> SwiftAccount {
        let auth = if v3 {
            Auth::V3 {
                url: "http://keystone/v3".into(),
                user: "glance".into(),
                password: "secret".into(),
                user_domain: "Default".into(),
                project: "service".into(),
                project_domain: "Default".into(),
                region: None,
                interface: "public".into(),
            }
        } else {
            Auth::V1 {
                url: "http://swift/auth/v1.0".into(),
                user: "test:tester".into(),
                key: "secret".into(),
            }
        };
        SwiftAccount {
            auth,
            storage_url: None,
            container: DEFAULT_CONTAINER.into(),
            prefix: String::new(),
        }
    }

    /// Whether authentication is over HTTPS.
    pub fn auth_is_https(&self) -> bool {
        let url = match &self.auth {
            Auth::V1 { url, .. } | Auth::V3 { url, .. } => url,
        };
        url.starts_with("https://")
    }

    /// The storage URL the config fixes, if any.
    pub fn fixed_storage_url(&self) -> Option<&StorageUrl> {
        self.storage_url.as_ref()
    }

    /// The container.
    pub fn container(&self) -> &str {
        &self.container
    }

    /// The object name of image object `object`: the prefix, then `object`.
    pub fn object_name(&self, object: &str) -> String {
        format!("{}{object}", self.prefix)
    }

    /// The URL of object `name` (already prefixed) in the container.
    pub fn object_url(&self, storage: &StorageUrl, name: &str) -> String {
        format!(
            "{}/{}/{name}",
            storage.url().as_str().trim_end_matches('/'),
            self.container
        )
    }

    /// The request target (path) of object `name` in the container.
    pub fn object_path(&self, storage: &StorageUrl, name: &str) -> String {
        format!("{}/{}/{name}", storage.path(), self.container)
    }

    /// The request that authenticates this account.
    pub fn auth_request(&self) -> AuthRequest {
        match &self.auth {
            Auth::V1 { url, user, key } => AuthRequest {
                method: "GET",
                url: url.clone(),
                headers: vec![("X-Auth-User", user.clone()), ("X-Auth-Key", key.clone())],
                body: None,
            },
            Auth::V3 {
                url,
                user,
                password,
                user_domain,
                project,
                project_domain,
                ..
            } => {
                let body = serde_json::json!({"auth": {
                    "identity": {"methods": ["password"], "password": {"user": {
                        "name": user, "domain": {"name": user_domain}, "password": password,
                    }}},
                    "scope": {"project": {"name": project, "domain": {"name": project_domain}}},
                }});
                AuthRequest {
                    method: "POST",
                    url: format!("{url}/auth/tokens"),
                    headers: vec![("Content-Type", "application/json".to_owned())],
                    body: Some(body.to_string().into_bytes()),
                }
            }
        }
    }

    /// Reads the answer to [`SwiftAccount::auth_request`]: its status, a
    /// header lookup (any case) and its body (at most [`MAX_AUTH_BODY`]
    /// bytes read).
    pub fn parse_auth(
        &self,
        status: u16,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> Result<Session, AuthError> {
        match status {
            200..=299 => {}
            401 | 403 => return Err(AuthError::Refused(status)),
            s => return Err(AuthError::Status(s)),
        }
        let missing = |what: &str| AuthError::Malformed(format!("no {what}"));
        let (token, storage, lifetime) = match &self.auth {
            Auth::V1 { .. } => {
                let token = header("x-auth-token").ok_or_else(|| missing("X-Auth-Token"))?;
                let storage = header("x-storage-url");
                let lifetime = header("x-auth-token-expires")
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
                    .map(Duration::from_secs_f64);
                (token, storage, lifetime)
            }
            Auth::V3 {
                region, interface, ..
            } => {
                let token = header("x-subject-token").ok_or_else(|| missing("X-Subject-Token"))?;
                let (storage, lifetime) = keystone_token(body, region.as_deref(), interface)?;
                (token, storage, lifetime)
            }
        };
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthError::Malformed("the token is not printable".into()));
        }
        let storage_url = match (&self.storage_url, storage) {
            (Some(fixed), _) => fixed.clone(),
            (None, Some(url)) => StorageUrl::parse(&url).map_err(AuthError::Malformed)?,
            (None, None) => return Err(missing("storage URL")),
        };
        // The token goes with every request to the storage URL: not in clear
        // text when tempauth itself was reached over TLS (a TLS front before a
        // tempauth that names http://), unless the config says so. A
        // Keystone catalog's http endpoint is the operator's choice (an
        // internal network).
        if matches!(self.auth, Auth::V1 { .. })
            && self.auth_is_https()
            && !storage_url.is_https()
            && self.storage_url.is_none()
        {
            return Err(AuthError::Malformed(format!(
                "the storage URL {} is http:// while auth_url is https://; \
                 set `storage_url` to the https:// one (or to this one, to accept it)",
                storage_url.url()
            )));
        }
        Ok(Session {
            token,
            storage_url,
            lifetime,
        })
    }
}

/// The object-store endpoint and the token's lifetime in a Keystone token body.
fn keystone_token(
    body: &[u8],
    region: Option<&str>,
    interface: &str,
) -> Result<(Option<String>, Option<Duration>), AuthError> {
    #[derive(Deserialize)]
    struct Body {
        token: Token,
    }
    #[derive(Deserialize)]
    struct Token {
        expires_at: Option<String>,
        issued_at: Option<String>,
        #[serde(default)]
        catalog: Vec<Service>,
    }
    #[derive(Deserialize)]
    struct Service {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        endpoints: Vec<Endpoint>,
    }
    #[derive(Deserialize)]
    struct Endpoint {
        interface: String,
        region_id: Option<String>,
        region: Option<String>,
        url: String,
    }
    if body.len() > MAX_AUTH_BODY {
        return Err(AuthError::Malformed("the token body is too large".into()));
    }
    let parsed: Body = serde_json::from_slice(body)
        .map_err(|e| AuthError::Malformed(format!("the token body: {e}")))?;
    let t = parsed.token;
    let time = |v: &Option<String>| {
        v.as_deref().and_then(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        })
    };
    // The token's lifetime by the server's clock: the difference needs no
    // agreement between the clocks.
    let lifetime = match (time(&t.issued_at), time(&t.expires_at)) {
        (Some(issued), Some(expires)) => Duration::try_from(expires - issued).ok(),
        _ => None,
    };
    let url = t
        .catalog
        .iter()
        .filter(|s| s.kind == "object-store")
        .flat_map(|s| &s.endpoints)
        .find(|e| {
            e.interface == interface
                && region.is_none_or(|r| {
                    e.region_id.as_deref() == Some(r) || e.region.as_deref() == Some(r)
                })
        })
        .map(|e| e.url.clone());
    Ok((url, lifetime))
}

/// The key TempURLs are signed with (never in `Debug`).
#[derive(Clone)]
pub struct TempUrlKey(Hmac<Sha256>);

impl std::fmt::Debug for TempUrlKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TempUrlKey(****)")
    }
}

impl TempUrlKey {
    /// A key of at least [`MIN_TEMP_URL_KEY`] bytes: the value of the
    /// container's (or account's) `Temp-URL-Key` metadata.
    pub fn new(key: &str) -> Result<TempUrlKey, String> {
        if key.len() < MIN_TEMP_URL_KEY {
            return Err(format!(
                "a TempURL key needs at least {MIN_TEMP_URL_KEY} characters"
            ));
        }
        <Hmac<Sha256>>::new_from_slice(key.as_bytes())
            .map(TempUrlKey)
            .map_err(|e| format!("TempURL key: {e}"))
    }

    /// A TempURL for a GET of object `name` in the account's container,
    /// valid until `expires` (Unix time): HMAC-SHA256 over
    /// `GET\n{expires}\n{path}`, as Swift's `tempurl` middleware checks it.
    pub fn sign_get(
        &self,
        account: &SwiftAccount,
        storage: &StorageUrl,
        name: &str,
        expires: u64,
    ) -> String {
        let path = account.object_path(storage, name);
        let mut mac = self.0.clone();
        mac.update(format!("GET\n{expires}\n{path}").as_bytes());
        let sig = hex::encode(mac.finalize().into_bytes());
        format!(
            "{}?temp_url_sig={sig}&temp_url_expires={expires}",
            account.object_url(storage, name)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(extra: impl FnOnce(&mut SwiftSettings<'_>)) -> Result<SwiftAccount, String> {
        let dir = tempfile::tempdir().unwrap();
        crate::write_private_file(&dir.path().join("key"), "s3cr3t-key\n", "tmp").unwrap();
        let mut s = SwiftSettings {
            auth_url: Some("http://127.0.0.1:8080/auth/v1.0"),
            user: Some("test:tester"),
            key_file: Some(Path::new("key")),
            ..SwiftSettings::default()
        };
        extra(&mut s);
        SwiftAccount::from_settings(&s, dir.path())
    }

    fn headers(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn tempauth_sends_the_user_and_key_and_reads_token_url_and_expiry() {
        let a = account(|_| {}).unwrap();
        let req = a.auth_request();
        assert_eq!(
            (req.method, req.url.as_str()),
            ("GET", "http://127.0.0.1:8080/auth/v1.0")
        );
        assert!(req.headers.contains(&("X-Auth-Key", "s3cr3t-key".into())));
        assert!(!format!("{a:?}").contains("s3cr3t"));
        let s = a
            .parse_auth(
                200,
                &headers(&[
                    ("X-Auth-Token", "AUTH_tk0123"),
                    ("X-Storage-Url", "http://127.0.0.1:8080/v1/AUTH_test"),
                    ("X-Auth-Token-Expires", "86399"),
                ]),
                b"",
            )
            .unwrap();
        assert_eq!(s.token, "AUTH_tk0123");
        assert_eq!(s.storage_url.path(), "/v1/AUTH_test");
        assert_eq!(s.lifetime, Some(Duration::from_secs(86399)));
        assert!(!format!("{s:?}").contains("AUTH_tk"));
        assert_eq!(
            a.object_url(&s.storage_url, &a.object_name("abc")),
            "http://127.0.0.1:8080/v1/AUTH_test/glance/abc"
        );
        assert_eq!(
            a.parse_auth(401, &headers(&[]), b""),
            Err(AuthError::Refused(401))
        );
        assert!(AuthError::Status(503).retryable() && !AuthError::Refused(401).retryable());
        assert!(matches!(
            a.parse_auth(200, &headers(&[("X-Auth-Token", "t")]), b""),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn keystone_picks_the_object_store_endpoint_of_the_interface_and_region() {
        let a = account(|s| {
            s.auth_url = Some("https://keystone.example:5000/v3/");
            s.user = Some("glance");
            s.project = Some("service");
            s.region = Some("RegionTwo");
            s.interface = Some("internal");
        })
        .unwrap();
        let req = a.auth_request();
        assert_eq!(req.url, "https://keystone.example:5000/v3/auth/tokens");
        let body: serde_json::Value = serde_json::from_slice(req.body.as_ref().unwrap()).unwrap();
        assert_eq!(body["auth"]["scope"]["project"]["name"], "service");
        assert_eq!(
            body["auth"]["identity"]["password"]["user"]["password"],
            "s3cr3t-key"
        );
        let token = br#"{"token": {"issued_at": "2026-12-05T05:00:00.000000Z",
            "expires_at": "2026-12-05T06:00:00.000000Z", "catalog": [
            {"type": "image", "endpoints": [{"interface": "internal", "region_id": "RegionTwo", "url": "http://glance/"}]},
            {"type": "object-store", "endpoints": [
              {"interface": "public", "region_id": "RegionTwo", "url": "https://swift.example/v1/AUTH_p"},
              {"interface": "internal", "region_id": "RegionOne", "url": "http://one:8080/v1/AUTH_p"},
              {"interface": "internal", "region_id": "RegionTwo", "url": "http://two:8080/v1/AUTH_p"}]}]}}"#;
        let s = a
            .parse_auth(201, &headers(&[("X-Subject-Token", "gAAAA")]), token)
            .unwrap();
        assert_eq!(s.storage_url.url().as_str(), "http://two:8080/v1/AUTH_p");
        assert_eq!(s.lifetime, Some(Duration::from_secs(3600)));
        let none = br#"{"token": {"expires_at": "x", "catalog": []}}"#;
        assert!(matches!(
            a.parse_auth(201, &headers(&[("X-Subject-Token", "t")]), none),
            Err(AuthError::Malformed(m)) if m.contains("storage URL")
        ));
    }

    #[test]
    fn settings_are_checked_and_name_the_key_at_fault() {
        let err = |f: fn(&mut SwiftSettings<'_>)| account(f).unwrap_err();
        assert!(err(|s| s.user = Some("tester")).contains("account:user"));
        assert!(err(|s| s.project = Some("p")).contains("`project`"));
        assert!(err(|s| s.container = Some("a/b")).contains("container"));
        assert!(err(|s| s.auth_version = Some("2")).contains("auth_version"));
        assert!(err(|s| s.auth_url = Some("ftp://x/")).contains("auth_url"));
        assert!(
            err(|s| s.auth_url = Some("http://k:5000/v3")).contains("`project`"),
            "a /v3 URL means Keystone"
        );
        assert!(StorageUrl::parse("http://h/v1/AUTH_%20x").is_err());
        assert!(StorageUrl::parse("http://h:8080/v1/AUTH_test/").is_ok());
    }

    #[test]
    fn temp_urls_sign_method_expiry_and_path_as_swift_does() {
        let a = account(|s| s.prefix = Some("img/")).unwrap();
        let storage = StorageUrl::parse("http://127.0.0.1:8080/v1/AUTH_test").unwrap();
        assert!(TempUrlKey::new("short").is_err());
        let key = TempUrlKey::new("mykey-0123456789").unwrap();
        assert!(!format!("{key:?}").contains("mykey"));
        let url = key.sign_get(&a, &storage, &a.object_name("o1"), 1_800_000_000);
        // printf 'GET\n1800000000\n/v1/AUTH_test/glance/img/o1' |
        //   openssl dgst -sha256 -hmac mykey-0123456789
        assert_eq!(
            url,
            "http://127.0.0.1:8080/v1/AUTH_test/glance/img/o1?temp_url_sig=5dc30bad676330a55a6066b7b177341949d44387ae8f57f4fece573876b41205\
             &temp_url_expires=1800000000"
        );
    }

    fn session(token: &str, life: Option<u64>) -> Session {
        Session {
            token: token.into(),
            storage_url: StorageUrl::parse("http://h/v1/AUTH_a").unwrap(),
            lifetime: life.map(Duration::from_secs),
        }
    }

    #[test]
    fn sessions_renew_before_expiry_once_and_outlive_failed_renewals() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut c = SessionCache::default();
        assert!(matches!(c.begin(None, t0), Step::Authenticate));
        let first = c.finish(Ok(session("a", Some(3600))), t0).unwrap();
        // Renewed when 10 minutes remain, not before.
        assert!(matches!(c.begin(None, at(2999)), Step::Ready(h) if Arc::ptr_eq(&h, &first)));
        assert!(matches!(c.begin(None, at(3000)), Step::Authenticate));
        // The renewal fails: the token still valid is used, and for 5 s
        // nobody asks again.
        let kept = c.finish(Err(AuthError::Transport("down".into())), at(3000));
        assert!(Arc::ptr_eq(&kept.unwrap(), &first));
        assert!(matches!(c.begin(None, at(3004)), Step::Ready(h) if Arc::ptr_eq(&h, &first)));
        assert!(matches!(c.begin(None, at(3005)), Step::Authenticate));
        // The same token again (tempauth): kept until it expires.
        let same = c.finish(Ok(session("a", Some(595))), at(3005)).unwrap();
        assert!(matches!(c.begin(None, at(3599)), Step::Ready(h) if Arc::ptr_eq(&h, &same)));
        assert!(matches!(c.begin(None, at(3600)), Step::Authenticate));
        // Past its expiry a failure is the caller's, held for 5 s.
        let e = c.finish(Err(AuthError::Status(503)), at(3600)).unwrap_err();
        assert_eq!(e, AuthError::Status(503));
        assert!(matches!(
            c.begin(None, at(3601)),
            Step::Failed(AuthError::Status(503))
        ));
        // A refused token is dropped at once, whatever its lifetime.
        let fresh = c.finish(Ok(session("b", None)), at(3700)).unwrap();
        assert!(matches!(c.begin(None, at(9999)), Step::Ready(_)));
        assert!(matches!(
            c.begin(Some(&fresh), at(9999)),
            Step::Authenticate
        ));
        let req = SwiftAccount::for_fuzzing(false).auth_request();
        assert!(!format!("{req:?}").contains("secret"));
    }

    #[test]
    fn an_https_authentication_does_not_send_the_token_to_an_http_storage_url() {
        let a = account(|s| s.auth_url = Some("https://swift.example/auth/v1.0")).unwrap();
        let answer = headers(&[
            ("X-Auth-Token", "AUTH_tk0123"),
            ("X-Storage-Url", "http://swift.example/v1/AUTH_test"),
        ]);
        let err = a.parse_auth(200, &answer, b"").unwrap_err();
        assert!(matches!(err, AuthError::Malformed(m) if m.contains("storage_url")));
        let fixed = account(|s| {
            s.auth_url = Some("https://swift.example/auth/v1.0");
            s.storage_url = Some("https://swift.example/v1/AUTH_test");
        })
        .unwrap();
        assert!(
            fixed
                .parse_auth(200, &answer, b"")
                .unwrap()
                .storage_url
                .is_https()
        );
    }
}
