//! S3 objects addressed the same way by glance-api (which writes them and
//! hands out direct links) and glance-stream (which reads them): a bucket
//! reached path-style over plain HTTP, an object key made of a prefix and
//! the image id, and SigV4 query signing (rusty-s3). Signing is pure: no
//! request is sent here.

use std::path::Path;
use std::time::Duration;

use rusty_s3::S3Action as _;

/// The region signatures name when the config gives none.
pub const DEFAULT_REGION: &str = "us-east-1";

/// An S3 store's settings as the config holds them: every key optional,
/// checked by [`S3Bucket::from_settings`].
#[derive(Debug, Clone, Copy, Default)]
pub struct S3Settings<'a> {
    /// `http[s]://host[:port]` of the S3 API.
    pub endpoint: Option<&'a str>,
    /// The bucket.
    pub bucket: Option<&'a str>,
    /// The region (default [`DEFAULT_REGION`]).
    pub region: Option<&'a str>,
    /// The access key id.
    pub access_key_id: Option<&'a str>,
    /// The file holding the secret access key alone (mode 0600), relative
    /// to the config's directory.
    pub secret_access_key_file: Option<&'a Path>,
    /// Prepended to the image id to make the object key.
    pub prefix: Option<&'a str>,
}

/// A bucket, its credentials and the key prefix (the secret never shows in
/// `Debug`).
#[derive(Clone)]
pub struct S3Bucket {
    bucket: rusty_s3::Bucket,
    credentials: rusty_s3::Credentials,
    prefix: String,
}

impl std::fmt::Debug for S3Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Bucket")
            .field("bucket", &self.bucket.name())
            .field("region", &self.bucket.region())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl S3Bucket {
    /// Checks the settings and reads the secret file (relative to `base`).
    /// Errors name the key at fault and never the secret.
    pub fn from_settings(s: &S3Settings<'_>, base: &Path) -> Result<S3Bucket, String> {
        let need = |v: Option<&str>, key: &str| {
            v.map(str::to_owned)
                .ok_or_else(|| format!("an s3 store needs `{key}`"))
        };
        let endpoint = need(s.endpoint, "endpoint")?;
        let bucket = need(s.bucket, "bucket")?;
        let access_key_id = need(s.access_key_id, "access_key_id")?;
        let secret_file = s
            .secret_access_key_file
            .ok_or("an s3 store needs `secret_access_key_file`")?;
        let secret = crate::read_private_file(&base.join(secret_file))
            .map_err(|e| format!("secret_access_key_file: {e}"))?;
        S3Bucket::new(
            &endpoint,
            &bucket,
            s.region.unwrap_or(DEFAULT_REGION),
            &access_key_id,
            secret.trim(),
            s.prefix.unwrap_or(""),
        )
    }

    /// A bucket at `endpoint` (`http[s]://host[:port]`), path-style.
    pub fn new(
        endpoint: &str,
        bucket: &str,
        region: &str,
        access_key_id: &str,
        secret_access_key: &str,
        prefix: &str,
    ) -> Result<S3Bucket, String> {
        let url: url::Url = endpoint
            .parse()
            .map_err(|e| format!("endpoint {endpoint:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "endpoint {endpoint:?}: an S3 endpoint is http[s]://host[:port]"
            ));
        }
        if bucket.is_empty() || bucket.contains(['/', '?', '#']) {
            return Err(format!("bucket {bucket:?} is not a bucket name"));
        }
        if access_key_id.is_empty() || secret_access_key.is_empty() {
            return Err("the access key id and the secret access key must not be empty".into());
        }
        if prefix.contains(['\r', '\n']) {
            return Err("the key prefix must be one line".into());
        }
        let b = rusty_s3::Bucket::new(
            url,
            rusty_s3::UrlStyle::Path,
            bucket.to_owned(),
            region.to_owned(),
        )
        .map_err(|e| format!("bucket {bucket:?}: {e}"))?;
        Ok(S3Bucket {
            bucket: b,
            credentials: rusty_s3::Credentials::new(access_key_id, secret_access_key),
            prefix: prefix.to_owned(),
        })
    }

    /// The object key of image object `object`: the prefix, then `object`.
    pub fn key(&self, object: &str) -> String {
        format!("{}{object}", self.prefix)
    }

    /// A GET of `object`, presigned for `ttl`.
    pub fn presigned_get(&self, object: &str, ttl: Duration) -> url::Url {
        self.bucket
            .get_object(Some(&self.credentials), &self.key(object))
            .sign(ttl)
    }

    /// The bucket, for other actions.
    pub fn bucket(&self) -> &rusty_s3::Bucket {
        &self.bucket
    }

    /// The credentials, for other actions.
    pub fn credentials(&self) -> &rusty_s3::Credentials {
        &self.credentials
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presigned_gets_are_path_style_with_the_key_encoded_and_no_secret() {
        let b = S3Bucket::new(
            "http://127.0.0.1:8080",
            "images",
            "us-east-1",
            "AKID",
            "s3cr3t-value",
            "glance images/",
        )
        .unwrap();
        let url = b.presigned_get("0f0e", Duration::from_secs(60));
        assert_eq!(url.path(), "/images/glance%20images/0f0e");
        let q = url.query().unwrap();
        assert!(q.contains("X-Amz-Expires=60") && q.contains("X-Amz-Signature="));
        assert!(!url.as_str().contains("s3cr3t"));
        assert!(!format!("{b:?}").contains("s3cr3t"));
        for (endpoint, bucket) in [("ftp://s3.example", "b"), ("http://s3.example", "")] {
            assert!(S3Bucket::new(endpoint, bucket, "r", "a", "s", "").is_err());
        }
    }

    #[test]
    fn settings_name_the_missing_key() {
        let err = S3Bucket::from_settings(
            &S3Settings {
                endpoint: Some("http://h"),
                ..S3Settings::default()
            },
            Path::new("."),
        )
        .unwrap_err();
        assert!(err.contains("`bucket`"), "{err}");
    }
}
