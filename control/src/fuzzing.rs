//! Properties for the fuzz targets in `fuzz/`: each target is one call here.
#![allow(clippy::panic)]

use std::path::Path;
use std::time::Duration;

use uuid::Uuid;

use crate::api::patch::{Dialect, apply_patch, parse_patch};
use crate::auth::Context;
use crate::config::{Config, MAX_DURATION_SECS, MAX_LINK_TTL_SECS};
use crate::model::{Image, Status};

/// An uploaded image with a few extra properties, owned by project `p1`.
fn sample_image() -> Image {
    let mut img = Image::new(Uuid::nil(), Some("p1".into()), "2026-01-01T00:00:00Z");
    img.name = Some("cirros".into());
    img.status = Status::Active;
    img.checksum = Some("0".repeat(32));
    img.os_hash_algo = Some("sha512".into());
    img.os_hash_value = Some("0".repeat(128));
    img.size = Some(1 << 20);
    img.properties.insert("hw_disk_bus".into(), "virtio".into());
    img.tags.insert("golden".into());
    img
}

/// Arbitrary bytes as a PATCH body never panic the JSON-patch parser or
/// applier. A patch that applies leaves every read-only field as it was,
/// keeps every string within Glance's 255 characters, keeps extra
/// properties apart from base ones, and leaves an image that stores and
/// loads back unchanged. A patch that fails is refused with a 4xx.
///
/// The first byte chooses the caller (a member of the owning project, or an
/// admin) and the dialect (v2.1 or v2.0).
pub fn json_patch(data: &[u8]) {
    let Some((who, body)) = data.split_first() else {
        return;
    };
    let roles = if who & 1 == 0 { "member" } else { "admin" };
    let dialect = if who & 2 == 0 {
        Dialect::V21
    } else {
        Dialect::V20
    };
    let ctx = Context {
        user_id: "u1".into(),
        project_id: "p1".into(),
        roles: vec![roles.into()],
    };
    let before = sample_image();
    let mut img = before.clone();
    let outcome = parse_patch(body).and_then(|ops| apply_patch(&ctx, &mut img, dialect, &ops));
    if let Err(e) = outcome {
        assert!(e.status.is_client_error(), "{} for a bad patch", e.status);
        return;
    }
    assert_eq!(
        (
            img.id,
            img.status,
            &img.checksum,
            &img.os_hash_value,
            img.size
        ),
        (
            before.id,
            before.status,
            &before.checksum,
            &before.os_hash_value,
            before.size
        ),
        "a read-only field changed"
    );
    assert_eq!(
        (&img.created_at, &img.location, img.virtual_size),
        (&before.created_at, &before.location, before.virtual_size)
    );
    let strings = img
        .name
        .iter()
        .chain(&img.tags)
        .chain(img.properties.values());
    for s in strings {
        assert!(s.chars().count() <= 255, "a string of {} chars", s.len());
    }
    for key in img.properties.keys() {
        assert!(
            !crate::model::BASE.contains(&key.as_str())
                && !key.is_empty()
                && !key.starts_with(crate::api::patch::RESERVED_PREFIX),
            "extra property {key:?}"
        );
    }
    let stored = serde_json::to_vec(&img).unwrap_or_default();
    let loaded: Result<Image, _> = serde_json::from_slice(&stored);
    assert_eq!(loaded.ok().as_ref(), Some(&img), "store -> load differs");
}

/// Arbitrary text never panics glance-api's config checker; a refusal names
/// the file, and a config it accepts has every lifetime and timeout within
/// its documented bounds.
///
/// Relative paths resolve under a directory that does not exist, so only a
/// file named by an absolute path can be read (and must be private).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let shown = "fuzz.toml";
    let config = match Config::from_toml(text, Path::new("/nonexistent-fuzz-base"), shown) {
        Ok(config) => config,
        Err(e) => {
            assert!(e.to_string().contains(shown), "unnamed error: {e}");
            return;
        }
    };
    let ttl = config.link_ttl.as_secs();
    assert!((1..=MAX_LINK_TTL_SECS).contains(&ttl), "link ttl {ttl}");
    let fleet = &config.fleet;
    let longest = Duration::from_secs(MAX_DURATION_SECS);
    for d in [fleet.health_interval, fleet.node_timeout, fleet.key_grace] {
        assert!(d <= longest, "{d:?}");
    }
    assert!(!fleet.health_interval.is_zero() && !fleet.node_timeout.is_zero());
    assert!(!config.public_url.ends_with('/'), "{}", config.public_url);
    if let crate::config::MetadataConfig::Sql {
        url,
        max_connections,
    } = &config.metadata
    {
        assert!((1..=1024).contains(max_connections), "{max_connections}");
        // The database password never shows where the config is printed.
        if let Ok(parsed) = url::Url::parse(url)
            && let Some(password) = parsed.password()
            && password != "****"
        {
            let shown = format!("{:?}", config.metadata);
            assert!(!shown.contains(&format!(":{password}@")), "{shown}");
        }
    }
}

/// Any JSON never panics the metadata definitions' property checker; a
/// definition it accepts has only known fields, a `default` kept as text, a
/// name of 1 to 80 characters, and checks again to itself; a refused one is
/// a 400 or a 403.
pub fn metadef_property(data: &[u8]) {
    let Some((top, body)) = data.split_first() else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let top_level = top & 1 == 1;
    match crate::api::metadefs::model::property_definition(&value, top_level) {
        Err(e) => assert!(
            e.status.as_u16() == 400 || e.status.as_u16() == 403,
            "{} for a bad definition",
            e.status
        ),
        Ok(def) => {
            assert!(def.get("default").is_none_or(|d| d.is_string()), "{def:?}");
            if let Some(name) = def.get("name") {
                let n = name.as_str().map_or(0, |s| s.chars().count());
                assert!((1..=80).contains(&n), "name {name}");
            }
            let again = crate::api::metadefs::model::property_definition(
                &serde_json::Value::Object(def.clone()),
                top_level,
            );
            assert_eq!(again.ok().as_ref(), Some(&def), "not stable");
        }
    }
}

/// Any text never panics web-download's URL filter (the default one); a URL
/// it passes is http or https on port 80 or 443, with a host.
pub fn import_uri(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((url, host, port)) = crate::import_filter::UriFilter::default().check_url(text) {
        assert!(matches!(url.scheme(), "http" | "https"), "{url}");
        assert!(port == 80 || port == 443, "{url}");
        assert!(!host.is_empty(), "{url}");
    }
}
