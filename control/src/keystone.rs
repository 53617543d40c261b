//! Auth mode `keystone`: `X-Auth-Token` validated with Keystone v3, as
//! keystonemiddleware does for Glance. glance-api holds a token of its own
//! service user (re-authenticating when it expires or Keystone refuses it)
//! and asks `GET /v3/auth/tokens` about each new user token; validated
//! tokens are cached, bounded, until their expiry or the configured maximum,
//! so a boot storm of the same few tokens costs Keystone one call each.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::Digest as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::Context;

/// Where Keystone is and who glance-api is to it.
#[derive(Clone)]
pub struct KeystoneConfig {
    /// Keystone's v3 URL, without a trailing `/` (`http://keystone:5000/v3`).
    pub auth_url: String,
    /// The service user's name.
    pub username: String,
    /// Its password.
    pub password: String,
    /// The project its token is scoped to (`service`).
    pub project_name: String,
    /// The service user's domain.
    pub user_domain_name: String,
    /// The project's domain.
    pub project_domain_name: String,
    /// Most validated tokens kept.
    pub cache_max_tokens: usize,
    /// Longest a validated token is trusted without asking again.
    pub cache_ttl: Duration,
    /// Longest one call to Keystone may take.
    pub timeout: Duration,
    /// CAs trusted beside the system's (a Keystone behind a private CA).
    pub roots: crate::tls::Roots,
}

impl std::fmt::Debug for KeystoneConfig {
    // The password never reaches a log line, not even through `Debug`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeystoneConfig")
            .field("auth_url", &self.auth_url)
            .field("username", &self.username)
            .field("project_name", &self.project_name)
            .field("cache_max_tokens", &self.cache_max_tokens)
            .field("cache_ttl", &self.cache_ttl)
            .finish_non_exhaustive()
    }
}

/// Why a token could not be checked (not: the token is invalid).
#[derive(Debug, thiserror::Error)]
pub enum KeystoneError {
    /// Keystone did not answer, or answered something unexpected.
    #[error("keystone is unavailable: {0}")]
    Unavailable(String),
    /// Keystone refused glance-api's own credentials.
    #[error("keystone refused the service user's credentials ({0})")]
    ServiceCredentials(u16),
}

/// A token's caller and how long to trust it.
#[derive(Clone)]
struct Validated {
    context: Context,
    until: Instant,
}

/// Validates tokens with Keystone.
pub struct KeystoneAuth {
    config: KeystoneConfig,
    http: reqwest::Client,
    /// The service user's token and when to get a new one.
    service: tokio::sync::Mutex<Option<(String, Instant)>>,
    /// Validated tokens by the SHA-256 of the token (tokens are not kept).
    cache: std::sync::Mutex<HashMap<[u8; 32], Validated>>,
    /// One gate per token being validated: concurrent requests with the
    /// same new token wait for the first one's answer instead of asking too.
    inflight: std::sync::Mutex<HashMap<[u8; 32], std::sync::Arc<tokio::sync::Mutex<()>>>>,
    /// Counts validations answered from the cache and by Keystone.
    counts: TokenCounts,
}

/// Counters of validations answered from the cache (`hit`) and by asking
/// Keystone (`miss`).
#[derive(Debug, Clone, Default)]
pub struct TokenCounts(
    pub  prometheus_client::metrics::family::Family<
        crate::metrics::KindLabel,
        prometheus_client::metrics::counter::Counter,
    >,
);

impl TokenCounts {
    fn count(&self, kind: &'static str) {
        self.0
            .get_or_create(&crate::metrics::KindLabel { kind })
            .inc();
    }
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(Deserialize)]
struct TokenInfo {
    expires_at: String,
    user: Named,
    project: Option<Named>,
    #[serde(default)]
    roles: Vec<Named>,
}

#[derive(Deserialize)]
struct Named {
    id: String,
    #[serde(default)]
    name: String,
}

/// Tokens are re-validated this long before Keystone says they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

impl KeystoneAuth {
    /// A validator for `config` (no call is made yet).
    pub fn new(config: KeystoneConfig, counts: TokenCounts) -> Result<KeystoneAuth, KeystoneError> {
        // No redirects: credentials and tokens go to Keystone's own URL only.
        let http = config
            .roots
            .client()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| KeystoneError::Unavailable(e.to_string()))?;
        Ok(KeystoneAuth {
            config,
            http,
            service: tokio::sync::Mutex::new(None),
            cache: std::sync::Mutex::new(HashMap::new()),
            inflight: std::sync::Mutex::new(HashMap::new()),
            counts,
        })
    }

    /// The caller `token` stands for; `None` when Keystone says it is not
    /// a valid project-scoped token. `allow_expired` (a valid service token
    /// came with it, as Nova sends) accepts a token that expired recently,
    /// within Keystone's `allow_expired_window`.
    pub async fn validate(
        &self,
        token: &str,
        allow_expired: bool,
    ) -> Result<Option<Context>, KeystoneError> {
        let mut hasher = sha2::Sha256::new();
        hasher.update([u8::from(allow_expired)]);
        hasher.update(token.as_bytes());
        let key: [u8; 32] = hasher.finalize().into();
        if let Some(v) = self.cached(&key, Instant::now()) {
            self.counts.count("hit");
            return Ok(Some(v));
        }
        let gate = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            std::sync::Arc::clone(inflight.entry(key).or_default())
        };
        let turn = gate.lock().await;
        let result = match self.cached(&key, Instant::now()) {
            Some(v) => {
                self.counts.count("hit");
                Ok(Some(v))
            }
            None => {
                self.counts.count("miss");
                self.ask_and_remember(key, token, allow_expired).await
            }
        };
        drop(turn);
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map and this caller hold the gate: nobody else waits.
        if std::sync::Arc::strong_count(&gate) <= 2 {
            inflight.remove(&key);
        }
        result
    }

    async fn ask_and_remember(
        &self,
        key: [u8; 32],
        token: &str,
        allow_expired: bool,
    ) -> Result<Option<Context>, KeystoneError> {
        let now = Instant::now();
        let Some(info) = self.ask(token, allow_expired).await? else {
            return Ok(None);
        };
        let Some(project) = info.project else {
            // Glance works on project-scoped tokens only.
            return Ok(None);
        };
        let left = remaining(&info.expires_at).unwrap_or_default();
        if left <= EXPIRY_MARGIN && !allow_expired {
            return Ok(None);
        }
        let context = Context {
            user_id: info.user.id,
            project_id: project.id,
            roles: info.roles.into_iter().map(|r| r.name).collect(),
        };
        let trusted = if allow_expired {
            self.config.cache_ttl
        } else {
            (left - EXPIRY_MARGIN).min(self.config.cache_ttl)
        };
        let until = now + trusted;
        self.remember(key, context.clone(), until, now);
        Ok(Some(context))
    }

    fn cached(&self, key: &[u8; 32], now: Instant) -> Option<Context> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|v| v.until > now)
            .map(|v| v.context.clone())
    }

    /// Keeps a validated token, making room when the cache is full: expired
    /// entries first, then the one closest to its end.
    fn remember(&self, key: [u8; 32], context: Context, until: Instant, now: Instant) {
        let max = self.config.cache_max_tokens;
        if max == 0 {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= max {
            cache.retain(|_, v| v.until > now);
        }
        if cache.len() >= max
            && let Some(oldest) = cache.iter().min_by_key(|(_, v)| v.until).map(|(k, _)| *k)
        {
            cache.remove(&oldest);
        }
        cache.insert(key, Validated { context, until });
    }

    /// Asks Keystone about `token`, with a fresh service token once if
    /// Keystone refuses ours.
    async fn ask(
        &self,
        token: &str,
        allow_expired: bool,
    ) -> Result<Option<TokenInfo>, KeystoneError> {
        let query = if allow_expired {
            "?nocatalog&allow_expired=1"
        } else {
            "?nocatalog"
        };
        let mut rejected: Option<String> = None;
        for attempt in 0..2 {
            let service = self.service_token(rejected.as_deref()).await?;
            let resp = self
                .http
                .get(format!("{}/auth/tokens{query}", self.config.auth_url))
                .header("X-Auth-Token", &service)
                .header("X-Subject-Token", token)
                .send()
                .await
                .map_err(|e| KeystoneError::Unavailable(e.without_url().to_string()))?;
            match resp.status().as_u16() {
                200 => {
                    let body: TokenBody = resp
                        .json()
                        .await
                        .map_err(|e| KeystoneError::Unavailable(e.without_url().to_string()))?;
                    return Ok(Some(body.token));
                }
                // Our own token expired or was revoked: get a new one, once.
                401 if attempt == 0 => rejected = Some(service),
                // Refused again, or not allowed to validate tokens at all.
                s @ (401 | 403) => return Err(KeystoneError::ServiceCredentials(s)),
                // The subject token is not valid (expired, revoked, unknown).
                404 => return Ok(None),
                s => return Err(KeystoneError::Unavailable(format!("keystone answered {s}"))),
            }
        }
        Ok(None)
    }

    /// The service user's token, fetched (password auth, project scope)
    /// when there is none, it is about to expire, or Keystone refused it
    /// (`rejected`; renewed only if no other request renewed it already).
    async fn service_token(&self, rejected: Option<&str>) -> Result<String, KeystoneError> {
        let mut held = self.service.lock().await;
        if let Some((token, until)) = held.as_ref()
            && *until > Instant::now()
            && rejected != Some(token.as_str())
        {
            return Ok(token.clone());
        }
        let c = &self.config;
        let body = serde_json::json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.username,
                "domain": {"name": c.user_domain_name},
                "password": c.password,
            }}},
            "scope": {"project": {
                "name": c.project_name,
                "domain": {"name": c.project_domain_name},
            }},
        }});
        let resp = self
            .http
            .post(format!("{}/auth/tokens", c.auth_url))
            .json(&body)
            .send()
            .await
            .map_err(|e| KeystoneError::Unavailable(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        if status != 201 {
            *held = None;
            return Err(KeystoneError::ServiceCredentials(status));
        }
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| KeystoneError::Unavailable("no X-Subject-Token in the answer".into()))?;
        let info: TokenBody = resp
            .json()
            .await
            .map_err(|e| KeystoneError::Unavailable(e.without_url().to_string()))?;
        let left = remaining(&info.token.expires_at).unwrap_or_default();
        // Renewed a minute before it expires (at least a minute after now).
        let until = Instant::now()
            + left
                .saturating_sub(Duration::from_secs(60))
                .max(Duration::from_secs(60).min(left));
        *held = Some((token.clone(), until));
        Ok(token)
    }
}

/// Time left until an RFC 3339 instant (`None` if it cannot be read).
fn remaining(expires_at: &str) -> Option<Duration> {
    let at = OffsetDateTime::parse(expires_at, &Rfc3339).ok()?;
    let left = at - OffsetDateTime::now_utc();
    Some(Duration::try_from(left).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(max: usize) -> KeystoneAuth {
        KeystoneAuth::new(
            KeystoneConfig {
                auth_url: "http://127.0.0.1:1/v3".into(),
                username: "glance".into(),
                password: "pw-not-shown".into(),
                project_name: "service".into(),
                user_domain_name: "Default".into(),
                project_domain_name: "Default".into(),
                cache_max_tokens: max,
                cache_ttl: Duration::from_secs(300),
                timeout: Duration::from_secs(1),
                roots: crate::tls::Roots::default(),
            },
            TokenCounts::default(),
        )
        .unwrap()
    }

    fn ctx(user: &str) -> Context {
        Context {
            user_id: user.into(),
            project_id: "p".into(),
            roles: vec!["member".into()],
        }
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_the_entry_closest_to_its_end_first() {
        let a = auth(2);
        let now = Instant::now();
        let k = |i: u8| [i; 32];
        a.remember(k(1), ctx("u1"), now + Duration::from_secs(10), now);
        a.remember(k(2), ctx("u2"), now + Duration::from_secs(100), now);
        a.remember(k(3), ctx("u3"), now + Duration::from_secs(50), now);
        assert!(a.cached(&k(1), now).is_none(), "the nearest end went first");
        assert_eq!(a.cached(&k(2), now).unwrap().user_id, "u2");
        assert_eq!(a.cached(&k(3), now).unwrap().user_id, "u3");
        assert!(
            a.cached(&k(3), now + Duration::from_secs(60)).is_none(),
            "expired"
        );
        assert!(!format!("{:?}", a.config).contains("pw-not-shown"));
    }

    #[test]
    fn expiry_times_are_read_as_keystone_writes_them() {
        let soon = OffsetDateTime::now_utc() + time::Duration::minutes(10);
        let text = soon.format(&Rfc3339).unwrap();
        let left = remaining(&text).unwrap();
        assert!(left > Duration::from_secs(590) && left <= Duration::from_secs(600));
        assert_eq!(
            remaining("2020-01-01T00:00:00.000000Z"),
            Some(Duration::ZERO)
        );
        assert_eq!(remaining("tomorrow"), None);
    }

    #[tokio::test]
    async fn an_unreachable_keystone_is_an_error_not_an_invalid_token() {
        let a = auth(10);
        assert!(matches!(
            a.validate("some-token", false).await,
            Err(KeystoneError::Unavailable(_))
        ));
    }
}
