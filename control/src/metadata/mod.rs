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
}
