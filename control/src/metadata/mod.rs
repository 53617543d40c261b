//! Image metadata storage: the `MetadataStore` trait and its two
//! implementations, the embedded redb file (one glance-api) and SQL
//! (PostgreSQL or MariaDB/MySQL, shared by several glance-api replicas).

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use crate::model::{Image, KeyRecord, Member, MemberStatus, StreamNode};

mod redb_store;
mod sql;

pub use redb_store::{RedbStore, SCHEMA_VERSION};
pub use sql::{Dialect, ImportCounts, SqlStore, redact, sync};

/// Opens the metadata store the config names: the redb file, or the SQL
/// database (which must be migrated: `glance-api db sync`).
pub fn open(
    config: &crate::config::MetadataConfig,
) -> Result<Arc<dyn MetadataStore>, MetadataError> {
    match config {
        crate::config::MetadataConfig::Redb(path) => Ok(Arc::new(RedbStore::open(path)?)),
        crate::config::MetadataConfig::Sql {
            url,
            max_connections,
        } => Ok(Arc::new(SqlStore::open(url, *max_connections)?)),
    }
}

/// Why a metadata operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The database failed.
    #[error("metadata database: {0}")]
    Db(String),
    /// A record could not be decoded.
    #[error("metadata record {id} is corrupt: {message}")]
    Corrupt {
        /// The record's key (an image id, a node name, a key id).
        id: String,
        /// What failed.
        message: String,
    },
    /// The file was written by a newer glance-api.
    #[error(
        "metadata file has schema version {found}, this glance-api reads up to {SCHEMA_VERSION}: upgrade glance-api"
    )]
    NewerSchema {
        /// The version in the file.
        found: u64,
    },
    /// An image with that id already exists.
    #[error("an image with id {0} already exists")]
    Exists(Uuid),
    /// A document of that kind and key already exists.
    #[error("a {kind} named {key} already exists", kind = .0.noun(), key = .1)]
    DocExists(DocKind, String),
    /// No document of that kind and key.
    #[error("no {kind} named {key}", kind = .0.noun(), key = .1)]
    DocNotFound(DocKind, String),
    /// No image with that id.
    #[error("no image with id {0}")]
    NotFound(Uuid),
    /// The update function refused the change.
    #[error("{0}")]
    Refused(String),
    /// The SQL database lacks tables or migrations this glance-api needs.
    #[error("the metadata database is not ready: {0}; run `glance-api db sync --config FILE`")]
    NotMigrated(String),
    /// The SQL database was migrated by a newer glance-api.
    #[error(
        "the metadata database has schema migration {0}, which this glance-api does not know: upgrade glance-api"
    )]
    NewerDatabase(i64),
}

/// The kinds of JSON documents kept beside images, each keyed by a string
/// unique within its kind. The API layer gives them their types; the stores
/// keep them whole, so each document changes atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DocKind {
    /// An asynchronous task, such as an image import (key: its UUID).
    Task,
    /// A metadata definitions namespace, with its objects, properties, tags
    /// and resource type associations (key: its name).
    MetadefNamespace,
    /// A metadata definitions resource type (key: its name).
    MetadefResourceType,
}

impl DocKind {
    /// Every kind, for copying a whole store.
    pub const ALL: [DocKind; 3] = [
        DocKind::Task,
        DocKind::MetadefNamespace,
        DocKind::MetadefResourceType,
    ];

    /// The kind's name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Task => "task",
            DocKind::MetadefNamespace => "metadef_namespace",
            DocKind::MetadefResourceType => "metadef_resource_type",
        }
    }

    /// The kind in words, for messages.
    pub fn noun(self) -> &'static str {
        match self {
            DocKind::Task => "task",
            DocKind::MetadefNamespace => "metadata definition namespace",
            DocKind::MetadefResourceType => "metadata definition resource type",
        }
    }
}

/// A document from its JSON.
fn decode_doc(kind: DocKind, key: &str, bytes: &[u8]) -> Result<serde_json::Value, MetadataError> {
    serde_json::from_slice(bytes).map_err(|e| MetadataError::Corrupt {
        id: format!("{} {key}", kind.noun()),
        message: e.to_string(),
    })
}

/// An image record from its JSON.
fn decode(id: Uuid, bytes: &[u8]) -> Result<Image, MetadataError> {
    serde_json::from_slice(bytes).map_err(|e| MetadataError::Corrupt {
        id: id.to_string(),
        message: e.to_string(),
    })
}

/// A member record from its JSON.
fn decode_member(id: Uuid, bytes: &[u8]) -> Result<Member, MetadataError> {
    serde_json::from_slice(bytes).map_err(|e| MetadataError::Corrupt {
        id: id.to_string(),
        message: e.to_string(),
    })
}

/// An image record as JSON.
fn encode(image: &Image) -> Result<Vec<u8>, MetadataError> {
    serde_json::to_vec(image).map_err(db_err)
}

fn db_err<E: std::fmt::Display>(e: E) -> MetadataError {
    MetadataError::Db(e.to_string())
}

/// Where image records live.
pub trait MetadataStore: Send + Sync + 'static {
    /// Adds a new image; fails if the id is taken.
    fn create(&self, image: &Image) -> Result<(), MetadataError>;
    /// One image.
    fn get(&self, id: &Uuid) -> Result<Option<Image>, MetadataError>;
    /// Every image (callers filter, sort and page).
    fn list(&self) -> Result<Vec<Image>, MetadataError>;
    /// Reads, changes and writes one image atomically. `change` returns
    /// `Err(message)` to leave the record untouched
    /// ([`MetadataError::Refused`]).
    fn update(
        &self,
        id: &Uuid,
        change: &mut dyn FnMut(&mut Image) -> Result<(), String>,
    ) -> Result<Image, MetadataError>;
    /// Removes an image; `false` if there was none.
    fn delete(&self, id: &Uuid) -> Result<bool, MetadataError>;
    /// The projects an image is shared with.
    fn members(&self, image: &Uuid) -> Result<Vec<Member>, MetadataError>;
    /// Adds or replaces a member.
    fn put_member(&self, member: &Member) -> Result<(), MetadataError>;
    /// Removes a member; `false` if it was not one.
    fn delete_member(&self, image: &Uuid, member: &str) -> Result<bool, MetadataError>;
    /// Every image shared with `project`, with its answer.
    fn memberships(&self, project: &str) -> Result<HashMap<Uuid, MemberStatus>, MetadataError>;
    /// Every registered stream node, by name.
    fn stream_nodes(&self) -> Result<Vec<StreamNode>, MetadataError>;
    /// Adds or replaces a stream node.
    fn put_stream_node(&self, node: &StreamNode) -> Result<(), MetadataError>;
    /// Removes a stream node; `false` if there was none.
    fn delete_stream_node(&self, name: &str) -> Result<bool, MetadataError>;
    /// Every signing key record, by id.
    fn key_records(&self) -> Result<Vec<KeyRecord>, MetadataError>;
    /// Adds or replaces a signing key record.
    fn put_key_record(&self, record: &KeyRecord) -> Result<(), MetadataError>;
    /// Removes a signing key record; `false` if there was none.
    fn delete_key_record(&self, id: &str) -> Result<bool, MetadataError>;
    /// Adds a document; [`MetadataError::DocExists`] if the key is taken.
    fn doc_create(
        &self,
        kind: DocKind,
        key: &str,
        doc: &serde_json::Value,
    ) -> Result<(), MetadataError>;
    /// One document.
    fn doc_get(&self, kind: DocKind, key: &str)
    -> Result<Option<serde_json::Value>, MetadataError>;
    /// Every document of a kind, with its key, in key order.
    fn doc_list(&self, kind: DocKind) -> Result<Vec<(String, serde_json::Value)>, MetadataError>;
    /// Reads, changes and writes one document atomically, under the key
    /// `rename` when given ([`MetadataError::DocExists`] if that key is
    /// taken). `change` returns `Err(message)` to leave it untouched
    /// ([`MetadataError::Refused`]).
    fn doc_update(
        &self,
        kind: DocKind,
        key: &str,
        rename: Option<&str>,
        change: &mut dyn FnMut(&mut serde_json::Value) -> Result<(), String>,
    ) -> Result<serde_json::Value, MetadataError>;
    /// Removes a document; `false` if there was none.
    fn doc_delete(&self, kind: DocKind, key: &str) -> Result<bool, MetadataError>;
}
