//! The keyring: named HMAC keys, one of them primary.
//!
//! glance-api signs with the primary key; glance-stream accepts a link signed
//! by any key it holds. Rotation is add a key, make it primary, then drop the
//! old one once every link it signed has expired.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::canonical::{MAX_CANONICAL_BYTES, with_fields};
use crate::{IdError, KeyId, LinkParams, LinkRequest, Rejection, SignedLink, VerifiedLink};

type HmacSha256 = Hmac<Sha256>;

/// The shortest secret accepted, in bytes (256 bits, the HMAC-SHA256 block's worth of entropy).
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a keyring could not be built or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// The file (the keyring, or another private file) could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The keyring file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Group or others may read the file.
    #[error(
        "{path} has mode {mode:o}: group and others must have no access (run `chmod 600 {path}`)"
    )]
    Permissions {
        /// The keyring file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The TOML does not have the expected shape.
    #[error("keyring is not valid: {0}")]
    Syntax(String),
    /// No keys at all.
    #[error("keyring has no keys")]
    Empty,
    /// The primary key id names no key.
    #[error("keyring primary {0:?} is not among its keys")]
    PrimaryMissing(String),
    /// A key id is not a valid identifier.
    #[error("keyring key id {id:?} is invalid: {source}")]
    KeyId {
        /// The offending id.
        id: String,
        /// What is wrong with it.
        source: IdError,
    },
    /// A secret is not base64url.
    #[error("keyring key {0:?}: secret is not base64url (RFC 4648 section 5, no padding)")]
    SecretEncoding(String),
    /// A secret is too short.
    #[error("keyring key {id:?}: secret has {len} bytes, at least {MIN_SECRET_BYTES} are required")]
    SecretTooShort {
        /// The key id.
        id: String,
        /// The decoded secret length.
        len: usize,
    },
    /// A key added by rotation has the id of a key already held.
    #[error("keyring already holds a key {0:?}")]
    DuplicateKey(String),
}

/// Secret key bytes. Its `Debug` never prints them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps raw key bytes; at least [`MIN_SECRET_BYTES`] long.
    pub fn new(bytes: Vec<u8>) -> Option<Secret> {
        (bytes.len() >= MIN_SECRET_BYTES).then_some(Secret(bytes))
    }

    /// The secret in base64url without padding, as the keyring file holds it.
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// One key: its secret and the HMAC state already keyed with it, so signing
/// and verifying only clone that state instead of re-hashing the key.
#[derive(Clone)]
struct Key {
    secret: Secret,
    mac: HmacSha256,
}

/// The keyring file's shape: `primary = "kid"` and `[keys] kid = "secret"`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    primary: String,
    keys: BTreeMap<String, String>,
}

/// A set of named keys, one of them primary.
#[derive(Clone)]
pub struct Keyring {
    primary: KeyId,
    keys: BTreeMap<KeyId, Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("primary", &self.primary)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// Builds a keyring from `(id, secret)` pairs; `primary` must be one of them.
    pub fn new(
        primary: KeyId,
        keys: impl IntoIterator<Item = (KeyId, Secret)>,
    ) -> Result<Keyring, KeyringError> {
        let mut map = BTreeMap::new();
        for (id, secret) in keys {
            let mac = HmacSha256::new_from_slice(&secret.0)
                .map_err(|_| KeyringError::SecretEncoding(id.to_string()))?;
            map.insert(id, Key { secret, mac });
        }
        if map.is_empty() {
            return Err(KeyringError::Empty);
        }
        if !map.contains_key(&primary) {
            return Err(KeyringError::PrimaryMissing(primary.to_string()));
        }
        Ok(Keyring { primary, keys: map })
    }

    /// Parses the keyring file format (TOML). Does no I/O.
    pub fn from_toml(text: &str) -> Result<Keyring, KeyringError> {
        let file: KeyringFile =
            toml::from_str(text).map_err(|e| KeyringError::Syntax(e.message().to_owned()))?;
        let primary = parse_key_id(&file.primary)?;
        let mut keys = Vec::with_capacity(file.keys.len());
        for (id, encoded) in &file.keys {
            let key_id = parse_key_id(id)?;
            let bytes = URL_SAFE_NO_PAD
                .decode(encoded.trim())
                .map_err(|_| KeyringError::SecretEncoding(id.clone()))?;
            let len = bytes.len();
            let secret = Secret::new(bytes).ok_or_else(|| KeyringError::SecretTooShort {
                id: id.clone(),
                len,
            })?;
            keys.push((key_id, secret));
        }
        Keyring::new(primary, keys)
    }

    /// The keyring in its file format (TOML), secrets included.
    pub fn to_toml(&self) -> String {
        let file = KeyringFile {
            primary: self.primary.to_string(),
            keys: self
                .keys
                .iter()
                .map(|(id, key)| (id.to_string(), key.secret.to_base64url()))
                .collect(),
        };
        // A map of strings always serialises.
        toml::to_string(&file).unwrap_or_default()
    }

    /// The id of the key new links are signed with.
    pub fn primary(&self) -> &KeyId {
        &self.primary
    }

    /// The ids of every key held, in order.
    pub fn key_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.keys()
    }

    /// Signs `params` with the primary key.
    pub fn sign(&self, params: LinkParams) -> SignedLink {
        let primary = self.primary;
        // The primary is always present: `new` checks it and nothing removes keys.
        let key = &self.keys[&primary];
        sign_with(key, primary, params)
    }

    /// Signs `params` with the key `key_id` (for tests and rotation drills).
    pub fn sign_with(&self, key_id: &KeyId, params: LinkParams) -> Option<SignedLink> {
        let key = self.keys.get(key_id)?;
        Some(sign_with(key, *key_id, params))
    }

    /// This keyring with the key `id` added beside the others (the primary
    /// unchanged): the first step of a rotation, so verifiers hold a key
    /// before anything is signed with it.
    pub fn with_key(&self, id: KeyId, secret: Secret) -> Result<Keyring, KeyringError> {
        if self.keys.contains_key(&id) {
            return Err(KeyringError::DuplicateKey(id.to_string()));
        }
        let keys = self
            .keys
            .iter()
            .map(|(k, key)| (*k, key.secret.clone()))
            .chain(std::iter::once((id, secret)));
        Keyring::new(self.primary, keys)
    }

    /// This keyring with `id`, one of its keys, as the primary.
    pub fn with_primary(&self, id: KeyId) -> Result<Keyring, KeyringError> {
        if !self.keys.contains_key(&id) {
            return Err(KeyringError::PrimaryMissing(id.to_string()));
        }
        Ok(Keyring {
            primary: id,
            keys: self.keys.clone(),
        })
    }

    /// This keyring without the keys in `drop`; the primary is never dropped.
    pub fn without(&self, drop: &[KeyId]) -> Keyring {
        let mut keys = self.keys.clone();
        keys.retain(|id, _| *id == self.primary || !drop.contains(id));
        Keyring {
            primary: self.primary,
            keys,
        }
    }

    /// Checks a request against the keyring at Unix time `now` (seconds).
    ///
    /// On success the link's parameters can be trusted. Every check runs in
    /// constant time with respect to the signature; the [`Rejection`] says
    /// which check failed, for a metric label only.
    pub fn verify(&self, req: &LinkRequest<'_>, now: u64) -> Result<VerifiedLink, Rejection> {
        if req.method != "GET" && req.method != "HEAD" {
            return Err(Rejection::Method);
        }
        let (link, image_id, raw) = SignedLink::parse_raw(req.path, req.query)?;
        let key = self.keys.get(&link.key_id).ok_or(Rejection::UnknownKey)?;
        let mut buf = [0u8; MAX_CANONICAL_BYTES];
        // The MAC covers the text exactly as received: any spelling other than
        // the one the signer wrote fails here.
        let canonical = raw
            .fields(image_id)
            .canonical(&mut buf)
            .ok_or(Rejection::Malformed)?;
        let mut mac = key.mac.clone();
        mac.update(canonical);
        mac.verify_slice(&link.signature)
            .map_err(|_| Rejection::Signature)?;
        if now >= link.params.expires {
            return Err(Rejection::Expired);
        }
        if let Some(net) = link.params.client_cidr
            && !net.contains(&req.client.to_canonical())
        {
            return Err(Rejection::ClientAddress);
        }
        Ok(VerifiedLink {
            params: link.params,
            key_id: link.key_id,
        })
    }
}

fn parse_key_id(id: &str) -> Result<KeyId, KeyringError> {
    KeyId::new(id).map_err(|source| KeyringError::KeyId {
        id: id.to_owned(),
        source,
    })
}

fn sign_with(key: &Key, key_id: KeyId, params: LinkParams) -> SignedLink {
    let mut mac = key.mac.clone();
    let mut buf = [0u8; MAX_CANONICAL_BYTES];
    with_fields(&key_id, &params, |f| {
        // Formatted fields are bounded by their types, far below the buffer.
        mac.update(f.canonical(&mut buf).unwrap_or_default());
    });
    let signature: [u8; 32] = mac.finalize().into_bytes().into();
    SignedLink {
        params,
        key_id,
        signature,
    }
}
