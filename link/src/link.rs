//! Link values: what is bound ([`LinkParams`]), a signed link ([`SignedLink`]),
//! a request to check ([`LinkRequest`]) and the result ([`VerifiedLink`]).

use std::net::IpAddr;

use ipnet::IpNet;
use uuid::Uuid;

use crate::canonical::with_fields;
use crate::query::{self, RawQuery};
use crate::{KeyId, PATH_PREFIX, Rejection, StoreId, parse_image_id};

/// Everything a link binds, apart from the key id and the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkParams {
    /// The image (a Glance image id).
    pub image_id: Uuid,
    /// The backend store holding the image, by its id in the stream node's config.
    pub store: StoreId,
    /// The image size in bytes.
    pub size: u64,
    /// MD5 of the whole image (Glance's `checksum`, sent as `Content-MD5`).
    pub md5: [u8; 16],
    /// SHA-512 of the whole image (Glance's `os_hash_value`); fills are checked against it.
    pub sha512: [u8; 64],
    /// Unix time (seconds) from which the link is refused. Checked when a request
    /// starts only: a long transfer may outlive it.
    pub expires: u64,
    /// When set, only clients whose address falls in this network may use the link.
    pub client_cidr: Option<IpNet>,
}

/// A link with its key id and signature: what travels in the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedLink {
    pub(crate) params: LinkParams,
    pub(crate) key_id: KeyId,
    pub(crate) signature: [u8; 32],
}

impl SignedLink {
    /// Parses a link's path (`/v1/images/{id}`) and query (without `?`).
    ///
    /// This checks form only; [`crate::Keyring::verify`] checks the signature.
    pub fn parse(path: &str, query: &str) -> Result<SignedLink, Rejection> {
        Self::parse_raw(path, query).map(|(link, _, _)| link)
    }

    /// Parses a link and also returns the raw texts its signature covers.
    pub(crate) fn parse_raw<'a>(
        path: &'a str,
        query: &'a str,
    ) -> Result<(SignedLink, &'a str, RawQuery<'a>), Rejection> {
        let id_text = path.strip_prefix(PATH_PREFIX).ok_or(Rejection::Malformed)?;
        let image_id = parse_image_id(id_text).ok_or(Rejection::Malformed)?;
        let raw = query::split(query)?;
        let q = raw.decode()?;
        let link = SignedLink {
            params: LinkParams {
                image_id,
                store: q.store,
                size: q.size,
                md5: q.md5,
                sha512: q.sha512,
                expires: q.expires,
                client_cidr: q.client_cidr,
            },
            key_id: q.key_id,
            signature: q.signature,
        };
        Ok((link, id_text, raw))
    }

    /// The bound parameters.
    pub fn params(&self) -> &LinkParams {
        &self.params
    }

    /// The id of the key that signed the link.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The raw HMAC-SHA256 signature.
    pub fn signature(&self) -> &[u8; 32] {
        &self.signature
    }

    /// The link's path: `/v1/images/{image_id}`.
    pub fn path(&self) -> String {
        format!("{PATH_PREFIX}{}", self.params.image_id.hyphenated())
    }

    /// The link's canonical query string (without `?`).
    pub fn query(&self) -> String {
        with_fields(&self.key_id, &self.params, |f| {
            query::format(f, &self.signature)
        })
    }

    /// The absolute URL of the link on a stream node whose base URL is `base`
    /// (for example `http://10.0.0.5:9393`; a trailing `/` is ignored).
    pub fn url(&self, base: &str) -> String {
        format!(
            "{}{}?{}",
            base.trim_end_matches('/'),
            self.path(),
            self.query()
        )
    }
}

/// One incoming request, as the stream node sees it.
#[derive(Debug, Clone, Copy)]
pub struct LinkRequest<'a> {
    /// The HTTP method (`GET` and `HEAD` are covered; anything else is refused).
    pub method: &'a str,
    /// The request path, without the query.
    pub path: &'a str,
    /// The query string, without `?`.
    pub query: &'a str,
    /// The peer address of the connection.
    pub client: IpAddr,
}

/// A link that passed every check; only [`crate::Keyring::verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLink {
    pub(crate) params: LinkParams,
    pub(crate) key_id: KeyId,
}

impl VerifiedLink {
    /// The bound parameters, now trusted.
    pub fn params(&self) -> &LinkParams {
        &self.params
    }

    /// The id of the key that signed the link (for logs).
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }
}
