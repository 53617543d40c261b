//! The redb index: entry records and present chunks (see
//! `docs/cache-format.md`). Every write is its own committed transaction, so
//! the index on disk is always a state the cache can reopen from.

use std::path::Path;

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use crate::error::CacheError;
use crate::format::{EntryRecord, FormatError};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ENTRIES: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("entries");
const CHUNKS: TableDefinition<(&[u8; 16], u32), u32> = TableDefinition::new("chunks");

/// The index format version (the `meta.format_version` value).
pub const FORMAT_VERSION: u64 = 1;

/// An image id as the index keys it.
pub type Key = [u8; 16];

/// One stored entry: its key and its record, or why the record is unreadable.
pub type StoredEntry = (Key, Result<EntryRecord, FormatError>);

fn db<E: std::fmt::Display>(e: E) -> CacheError {
    CacheError::Index(e.to_string())
}

/// The open index.
pub struct Index {
    db: Database,
}

impl Index {
    /// Opens or creates the index, refusing one of another format version.
    pub fn open(path: &Path) -> Result<Index, CacheError> {
        let database = Database::create(path).map_err(db)?;
        let txn = database.begin_write().map_err(db)?;
        {
            txn.open_table(ENTRIES).map_err(db)?;
            txn.open_table(CHUNKS).map_err(db)?;
            let mut meta = txn.open_table(META).map_err(db)?;
            let found = meta.get("format_version").map_err(db)?.map(|v| v.value());
            match found {
                Some(v) if v != FORMAT_VERSION => {
                    return Err(CacheError::FormatVersion { found: v });
                }
                Some(_) => {}
                None => {
                    meta.insert("format_version", FORMAT_VERSION).map_err(db)?;
                }
            }
        }
        txn.commit().map_err(db)?;
        Ok(Index { db: database })
    }

    /// Writes (or replaces) an entry record.
    pub fn put_entry(&self, key: &Key, record: &EntryRecord) -> Result<(), CacheError> {
        let txn = self.db.begin_write().map_err(db)?;
        txn.open_table(ENTRIES)
            .map_err(db)?
            .insert(key, record.encode().as_slice())
            .map_err(db)?;
        txn.commit().map_err(db)
    }

    /// Records a chunk as present with its crc32 (after its data is durable),
    /// in the same transaction that checks the entry is still generation
    /// `generation`: a late commit never adds rows to a later entry or an orphan.
    pub fn put_chunk(
        &self,
        key: &Key,
        generation: u64,
        chunk: u32,
        crc: u32,
    ) -> Result<(), CacheError> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let entries = txn.open_table(ENTRIES).map_err(db)?;
            let current = entries
                .get(key)
                .map_err(db)?
                .and_then(|v| EntryRecord::decode(v.value()).ok())
                .is_some_and(|r| r.seq == generation);
            if !current {
                return Err(CacheError::NotFound);
            }
            txn.open_table(CHUNKS)
                .map_err(db)?
                .insert((key, chunk), crc)
                .map_err(db)?;
        }
        txn.commit().map_err(db)
    }

    /// Forgets a chunk (its crc failed: it will be filled again).
    pub fn drop_chunk(&self, key: &Key, chunk: u32) -> Result<(), CacheError> {
        let txn = self.db.begin_write().map_err(db)?;
        txn.open_table(CHUNKS)
            .map_err(db)?
            .remove((key, chunk))
            .map_err(db)?;
        txn.commit().map_err(db)
    }

    /// Removes an entry and all its chunk rows.
    pub fn remove_entry(&self, key: &Key) -> Result<(), CacheError> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            txn.open_table(ENTRIES)
                .map_err(db)?
                .remove(key)
                .map_err(db)?;
            let mut chunks = txn.open_table(CHUNKS).map_err(db)?;
            chunks
                .retain_in((key, 0)..=(key, u32::MAX), |_, _| false)
                .map_err(db)?;
        }
        txn.commit().map_err(db)
    }

    /// Every entry, decoded; records that fail to decode are returned as errors
    /// beside their key so recovery can drop them.
    pub fn entries(&self) -> Result<Vec<StoredEntry>, CacheError> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(ENTRIES).map_err(db)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db)? {
            let (k, v) = row.map_err(db)?;
            out.push((*k.value(), EntryRecord::decode(v.value())));
        }
        Ok(out)
    }

    /// The present chunks of an entry with their crc32, in order.
    pub fn chunks(&self, key: &Key) -> Result<Vec<(u32, u32)>, CacheError> {
        let txn = self.db.begin_read().map_err(db)?;
        let table = txn.open_table(CHUNKS).map_err(db)?;
        let mut out = Vec::new();
        for row in table.range((key, 0)..=(key, u32::MAX)).map_err(db)? {
            let (k, v) = row.map_err(db)?;
            out.push((k.value().1, v.value()));
        }
        Ok(out)
    }
}
