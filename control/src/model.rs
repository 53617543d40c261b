//! The image record and its JSON form, as Glance's v2 API shows it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// An image's lifecycle state (Glance's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created, no data yet.
    Queued,
    /// Data is being uploaded.
    Saving,
    /// Data is staged for an import, or being staged.
    Uploading,
    /// An import is writing the data into the stores.
    Importing,
    /// Data uploaded and checked.
    Active,
    /// An upload failed in a way that cannot be retried.
    Killed,
    /// Deleted (kept only for the record).
    Deleted,
    /// Downloads refused to everyone but admins.
    Deactivated,
}

impl Status {
    /// The name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Saving => "saving",
            Status::Uploading => "uploading",
            Status::Importing => "importing",
            Status::Active => "active",
            Status::Killed => "killed",
            Status::Deleted => "deleted",
            Status::Deactivated => "deactivated",
        }
    }
}

/// Who may see an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Everyone.
    Public,
    /// Everyone may use it; it is listed only when asked for.
    Community,
    /// The owner and the projects it is shared with.
    Shared,
    /// The owner only.
    Private,
}

impl Visibility {
    /// The name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Community => "community",
            Visibility::Shared => "shared",
            Visibility::Private => "private",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Option<Visibility> {
        Some(match s {
            "public" => Visibility::Public,
            "community" => Visibility::Community,
            "shared" => Visibility::Shared,
            "private" => Visibility::Private,
            _ => return None,
        })
    }
}

/// Disk formats Glance accepts.
pub const DISK_FORMATS: [&str; 11] = [
    "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop",
];
/// Container formats Glance accepts.
pub const CONTAINER_FORMATS: [&str; 8] = [
    "ami",
    "ari",
    "aki",
    "bare",
    "ovf",
    "ova",
    "docker",
    "compressed",
];

/// Where an image's data lives (never shown to API users).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The store id (the same id names the store on the stream nodes).
    pub store: String,
    /// The object's key in the store (the image id for a file store).
    pub key: String,
}

/// One image's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The image id.
    pub id: Uuid,
    /// Free-form name.
    pub name: Option<String>,
    /// Lifecycle state.
    pub status: Status,
    /// Who may see it.
    pub visibility: Visibility,
    /// Protected images cannot be deleted.
    pub protected: bool,
    /// Hidden from default lists.
    pub os_hidden: bool,
    /// Hex md5 of the data.
    pub checksum: Option<String>,
    /// `sha512` once data is uploaded.
    pub os_hash_algo: Option<String>,
    /// Hex sha512 of the data.
    pub os_hash_value: Option<String>,
    /// The owning project.
    pub owner: Option<String>,
    /// Data size in bytes.
    pub size: Option<u64>,
    /// Size of the virtual disk, where known.
    pub virtual_size: Option<u64>,
    /// Disk format.
    pub disk_format: Option<String>,
    /// Container format.
    pub container_format: Option<String>,
    /// Minimum disk in GB to boot it.
    pub min_disk: u64,
    /// Minimum RAM in MB to boot it.
    pub min_ram: u64,
    /// Creation time, `YYYY-MM-DDThh:mm:ssZ`.
    pub created_at: String,
    /// Last change, same form.
    pub updated_at: String,
    /// Tags.
    pub tags: BTreeSet<String>,
    /// Extra (custom) properties, shown at the top level of the JSON.
    pub properties: BTreeMap<String, String>,
    /// Where the data lives, once uploaded (the store downloads read first).
    pub location: Option<Location>,
    /// Copies in other stores (imports to several stores, `copy-image`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<Location>,
    /// Data staged for an import (never shown to API users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<Staged>,
}

/// What was staged for an import: the file in the staging directory named
/// by the image id, and what staging it measured, which the import checks
/// again as it copies the file into the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    /// Bytes staged.
    pub size: u64,
    /// Their hex md5.
    pub md5: String,
    /// Their hex sha512.
    pub sha512: String,
}

/// Properties a client may never set or change.
pub const READ_ONLY: [&str; 14] = [
    "id",
    "status",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "size",
    "virtual_size",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "stores",
    "direct_url",
];

/// Names that are base properties (anything else is an extra property).
pub const BASE: [&str; 20] = [
    "id",
    "name",
    "status",
    "visibility",
    "protected",
    "os_hidden",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "owner",
    "size",
    "virtual_size",
    "disk_format",
    "container_format",
    "min_disk",
    "min_ram",
    "created_at",
    "updated_at",
    "tags",
    "locations",
];

impl Image {
    /// A new queued image.
    pub fn new(id: Uuid, owner: Option<String>, now: &str) -> Image {
        Image {
            id,
            name: None,
            status: Status::Queued,
            visibility: Visibility::Shared,
            protected: false,
            os_hidden: false,
            checksum: None,
            os_hash_algo: None,
            os_hash_value: None,
            owner,
            size: None,
            virtual_size: None,
            disk_format: None,
            container_format: None,
            min_disk: 0,
            min_ram: 0,
            created_at: now.to_owned(),
            updated_at: now.to_owned(),
            tags: BTreeSet::new(),
            properties: BTreeMap::new(),
            location: None,
            copies: Vec::new(),
            staged: None,
        }
    }

    /// The image as the API shows it.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in &self.properties {
            m.insert(k.clone(), Value::String(v.clone()));
        }
        let id = self.id.to_string();
        let base = json!({
            "name": self.name,
            "disk_format": self.disk_format,
            "container_format": self.container_format,
            "visibility": self.visibility.as_str(),
            "size": self.size,
            "virtual_size": self.virtual_size,
            "status": self.status.as_str(),
            "checksum": self.checksum,
            "protected": self.protected,
            "min_ram": self.min_ram,
            "min_disk": self.min_disk,
            "owner": self.owner,
            "os_hidden": self.os_hidden,
            "os_hash_algo": self.os_hash_algo,
            "os_hash_value": self.os_hash_value,
            "id": id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "tags": self.tags,
            "self": format!("/v2/images/{id}"),
            "file": format!("/v2/images/{id}/file"),
            "schema": "/v2/schemas/image",
        });
        if let Value::Object(b) = base {
            m.extend(b);
        }
        if self.location.is_some() {
            // A set of stores, written in name order (clients compare it
            // with the sorted ids of /v2/info/stores).
            let mut stores: Vec<&str> = self.locations().map(|l| l.store.as_str()).collect();
            stores.sort_unstable();
            m.insert("stores".into(), Value::String(stores.join(",")));
        }
        Value::Object(m)
    }

    /// Records data that landed: `active`, its size (the virtual size too
    /// for raw and iso, whose disk is the data), md5, sha512 and where it is.
    pub fn set_data(&mut self, size: u64, md5: &str, sha512: &str, location: Location) {
        self.status = Status::Active;
        self.size = Some(size);
        self.virtual_size = match self.disk_format.as_deref() {
            Some("raw") | Some("iso") => Some(size),
            _ => None,
        };
        self.checksum = Some(md5.to_owned());
        self.os_hash_algo = Some("sha512".into());
        self.os_hash_value = Some(sha512.to_owned());
        self.location = Some(location);
    }

    /// Every location of the data: the first, then the copies.
    pub fn locations(&self) -> impl Iterator<Item = &Location> {
        self.location.iter().chain(self.copies.iter())
    }

    /// The location in store `store`, if the data is there.
    pub fn location_in(&self, store: &str) -> Option<&Location> {
        self.locations().find(|l| l.store == store)
    }

    /// The value of a property by its API name, for filters and sorting.
    pub fn field(&self, name: &str) -> Option<Value> {
        let v = self.to_json();
        v.get(name).cloned().filter(|v| !v.is_null())
    }
}

/// Where a project stands on an image shared with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// Shared, not yet answered: the image is visible, not listed.
    Pending,
    /// Accepted: the image is listed.
    Accepted,
    /// Refused: the image is visible, not listed.
    Rejected,
}

impl MemberStatus {
    /// Parses an API name.
    pub fn parse(s: &str) -> Option<MemberStatus> {
        Some(match s {
            "pending" => MemberStatus::Pending,
            "accepted" => MemberStatus::Accepted,
            "rejected" => MemberStatus::Rejected,
            _ => return None,
        })
    }

    /// The name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Pending => "pending",
            MemberStatus::Accepted => "accepted",
            MemberStatus::Rejected => "rejected",
        }
    }
}

/// A project an image is shared with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The image.
    pub image_id: Uuid,
    /// The project it is shared with.
    pub member_id: String,
    /// Its answer.
    pub status: MemberStatus,
    /// When the image was shared.
    pub created_at: String,
    /// When the status last changed.
    pub updated_at: String,
}

impl Member {
    /// The member as Glance shows it.
    pub fn to_json(&self) -> Value {
        json!({
            "image_id": self.image_id,
            "member_id": self.member_id,
            "status": self.status.as_str(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "schema": "/v2/schemas/member",
        })
    }
}

/// The current time as Glance writes it (`2026-11-24T22:53:12Z`).
pub fn timestamp(now: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    now.to_offset(time::UtcOffset::UTC)
        .format(&f)
        .unwrap_or_default()
}

/// Parses a time given in a filter (`2026-11-24T22:53:12Z` or with an offset).
pub fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// A glance-stream node in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamNode {
    /// Its name: what placement hashes, so renaming a node moves its images.
    pub name: String,
    /// The base URL downloads are redirected to.
    pub public_url: String,
    /// The base URL of its `/healthz` and `/admin/` endpoints.
    pub admin_url: String,
    /// Its share of the images, relative to the other nodes' weights.
    pub weight: u32,
    /// A drained node gets no new downloads; its cache stays.
    pub drained: bool,
}

/// When a signing key was made and when it is to be dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key id.
    pub id: String,
    /// Unix time it was made by a rotation; `None` for keys that came with
    /// the keyring file.
    pub created_at: Option<u64>,
    /// Unix time after which it is dropped from the keyring: set when a newer
    /// key replaces it as primary, to the last expiry of a link it signed
    /// plus a grace period.
    pub retire_at: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_matches_glances_shape() {
        let mut img = Image::new(Uuid::nil(), Some("p1".into()), "2026-11-24T22:53:12Z");
        img.properties.insert("foo".into(), "bar".into());
        img.tags.insert("t1".into());
        let v = img.to_json();
        assert_eq!(v["foo"], "bar");
        assert_eq!(v["status"], "queued");
        assert_eq!(v["visibility"], "shared");
        assert_eq!(v["size"], Value::Null);
        assert_eq!(v["tags"], json!(["t1"]));
        assert_eq!(v["self"], "/v2/images/00000000-0000-0000-0000-000000000000");
        assert_eq!(v["schema"], "/v2/schemas/image");
        assert!(v.get("stores").is_none());
        assert!(v.get("location").is_none() && v.get("locations").is_none());
    }

    #[test]
    fn timestamps_round_trip() {
        let t = parse_time("2026-11-24T22:53:12Z").unwrap();
        assert_eq!(timestamp(t), "2026-11-24T22:53:12Z");
    }
}
