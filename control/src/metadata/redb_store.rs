//! The embedded metadata store: one redb file.

use std::collections::HashMap;
use std::path::Path;

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use uuid::Uuid;

use super::{
    DocKind, MetadataError, MetadataStore, db_err, decode, decode_doc, decode_member, encode,
};
use crate::model::{Image, KeyRecord, Member, MemberStatus, StreamNode};

/// Images by id (the 16 UUID bytes), each a JSON-encoded [`Image`].
const IMAGES: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("images");
/// Image members (sharing): key = image id bytes followed by the member
/// project id, value = a JSON member record. Created with the file so that
/// sharing needs no schema change.
const MEMBERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("members");
/// Facts about the file itself.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Stream nodes by name, as JSON.
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("stream_nodes");
/// Signing key records by key id, as JSON (the secrets stay in the keyring file).
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("signing_keys");
/// Documents (tasks, metadata definitions) by kind and key, as JSON. A file
/// written before they existed gains the table when opened.
const DOCS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("documents");
/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u64 = 1;

/// The embedded store: one redb file.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (or creates) the file, creating tables and checking the schema version.
    pub fn open(path: &Path) -> Result<RedbStore, MetadataError> {
        let db = Database::create(path).map_err(db_err)?;
        let txn = db.begin_write().map_err(db_err)?;
        {
            txn.open_table(IMAGES).map_err(db_err)?;
            txn.open_table(MEMBERS).map_err(db_err)?;
            txn.open_table(NODES).map_err(db_err)?;
            txn.open_table(KEYS).map_err(db_err)?;
            txn.open_table(DOCS).map_err(db_err)?;
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let found = meta
                .get("schema_version")
                .map_err(db_err)?
                .map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(MetadataError::NewerSchema { found: v });
                }
                Some(_) => {}
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)
                        .map_err(db_err)?;
                }
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(RedbStore { db })
    }
}

impl RedbStore {
    /// Every record of a small table keyed by name, decoded from JSON.
    fn named_all<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, MetadataError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(table).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.push(
                serde_json::from_slice(v.value()).map_err(|e| MetadataError::Corrupt {
                    id: k.value().to_owned(),
                    message: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }

    /// Writes one record of a table keyed by name.
    fn named_put<T: serde::Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), MetadataError> {
        let bytes = serde_json::to_vec(value).map_err(db_err)?;
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(table)
            .map_err(db_err)?
            .insert(key, bytes.as_slice())
            .map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    /// Removes one record of a table keyed by name.
    fn named_delete(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<bool, MetadataError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = txn
            .open_table(table)
            .map_err(db_err)?
            .remove(key)
            .map_err(db_err)?
            .is_some();
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }
}

/// A member's key: the image id's 16 bytes, then the project id.
fn member_key(image: &Uuid, member: &str) -> Vec<u8> {
    let mut key = image.as_bytes().to_vec();
    key.extend_from_slice(member.as_bytes());
    key
}

/// The keys of an image's members: its id followed by any project id
/// (UTF-8, which never starts with the byte 0xFF).
fn member_range(image: &Uuid) -> (Vec<u8>, Vec<u8>) {
    let from = image.as_bytes().to_vec();
    let mut to = from.clone();
    to.push(0xFF);
    (from, to)
}

impl MetadataStore for RedbStore {
    fn create(&self, image: &Image) -> Result<(), MetadataError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(IMAGES).map_err(db_err)?;
            if t.get(image.id.as_bytes()).map_err(db_err)?.is_some() {
                return Err(MetadataError::Exists(image.id));
            }
            t.insert(image.id.as_bytes(), encode(image)?.as_slice())
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    fn get(&self, id: &Uuid) -> Result<Option<Image>, MetadataError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(IMAGES).map_err(db_err)?;
        let found = t.get(id.as_bytes()).map_err(db_err)?;
        found.map(|v| decode(*id, v.value())).transpose()
    }

    fn list(&self) -> Result<Vec<Image>, MetadataError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(IMAGES).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.push(decode(Uuid::from_bytes(*k.value()), v.value())?);
        }
        Ok(out)
    }

    fn update(
        &self,
        id: &Uuid,
        change: &mut dyn FnMut(&mut Image) -> Result<(), String>,
    ) -> Result<Image, MetadataError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let image = {
            let mut t = txn.open_table(IMAGES).map_err(db_err)?;
            let mut image = match t.get(id.as_bytes()).map_err(db_err)? {
                Some(v) => decode(*id, v.value())?,
                None => return Err(MetadataError::NotFound(*id)),
            };
            change(&mut image).map_err(MetadataError::Refused)?;
            t.insert(id.as_bytes(), encode(&image)?.as_slice())
                .map_err(db_err)?;
            image
        };
        txn.commit().map_err(db_err)?;
        Ok(image)
    }

    fn delete(&self, id: &Uuid) -> Result<bool, MetadataError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = {
            let mut t = txn.open_table(IMAGES).map_err(db_err)?;
            t.remove(id.as_bytes()).map_err(db_err)?.is_some()
        };
        {
            // Its members go with it.
            let mut m = txn.open_table(MEMBERS).map_err(db_err)?;
            let (from, to) = member_range(id);
            m.retain_in(from.as_slice()..to.as_slice(), |_, _| false)
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }

    fn members(&self, image: &Uuid) -> Result<Vec<Member>, MetadataError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(MEMBERS).map_err(db_err)?;
        let (from, to) = member_range(image);
        let mut out = Vec::new();
        for entry in t.range(from.as_slice()..to.as_slice()).map_err(db_err)? {
            let (_, v) = entry.map_err(db_err)?;
            out.push(decode_member(*image, v.value())?);
        }
        Ok(out)
    }

    fn put_member(&self, member: &Member) -> Result<(), MetadataError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(MEMBERS).map_err(db_err)?;
            let value = serde_json::to_vec(member).map_err(db_err)?;
            t.insert(
                member_key(&member.image_id, &member.member_id).as_slice(),
                value.as_slice(),
            )
            .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    fn delete_member(&self, image: &Uuid, member: &str) -> Result<bool, MetadataError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = {
            let mut t = txn.open_table(MEMBERS).map_err(db_err)?;
            t.remove(member_key(image, member).as_slice())
                .map_err(db_err)?
                .is_some()
        };
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }

    fn memberships(&self, project: &str) -> Result<HashMap<Uuid, MemberStatus>, MetadataError> {
        // A scan of every membership: sharing is rare next to images.
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(MEMBERS).map_err(db_err)?;
        let mut out = HashMap::new();
        for entry in t.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            let key = k.value();
            if key.len() > 16 && &key[16..] == project.as_bytes() {
                let image = Uuid::from_slice(&key[..16]).map_err(db_err)?;
                out.insert(image, decode_member(image, v.value())?.status);
            }
        }
        Ok(out)
    }

    fn stream_nodes(&self) -> Result<Vec<StreamNode>, MetadataError> {
        self.named_all(NODES)
    }

    fn put_stream_node(&self, node: &StreamNode) -> Result<(), MetadataError> {
        self.named_put(NODES, &node.name, node)
    }

    fn delete_stream_node(&self, name: &str) -> Result<bool, MetadataError> {
        self.named_delete(NODES, name)
    }

    fn key_records(&self) -> Result<Vec<KeyRecord>, MetadataError> {
        self.named_all(KEYS)
    }

    fn put_key_record(&self, record: &KeyRecord) -> Result<(), MetadataError> {
        self.named_put(KEYS, &record.id, record)
    }

    fn delete_key_record(&self, id: &str) -> Result<bool, MetadataError> {
        self.named_delete(KEYS, id)
    }

    fn doc_create(
        &self,
        kind: DocKind,
        key: &str,
        doc: &serde_json::Value,
    ) -> Result<(), MetadataError> {
        let bytes = serde_json::to_vec(doc).map_err(db_err)?;
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(DOCS).map_err(db_err)?;
            if t.get((kind.as_str(), key)).map_err(db_err)?.is_some() {
                return Err(MetadataError::DocExists(kind, key.to_owned()));
            }
            t.insert((kind.as_str(), key), bytes.as_slice())
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    fn doc_get(
        &self,
        kind: DocKind,
        key: &str,
    ) -> Result<Option<serde_json::Value>, MetadataError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(DOCS).map_err(db_err)?;
        let found = t.get((kind.as_str(), key)).map_err(db_err)?;
        found.map(|v| decode_doc(kind, key, v.value())).transpose()
    }

    fn doc_list(&self, kind: DocKind) -> Result<Vec<(String, serde_json::Value)>, MetadataError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(DOCS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in t.range((kind.as_str(), "")..).map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            let (k_kind, k_key) = k.value();
            if k_kind != kind.as_str() {
                break;
            }
            out.push((k_key.to_owned(), decode_doc(kind, k_key, v.value())?));
        }
        Ok(out)
    }

    fn doc_update(
        &self,
        kind: DocKind,
        key: &str,
        rename: Option<&str>,
        change: &mut dyn FnMut(&mut serde_json::Value) -> Result<(), String>,
    ) -> Result<serde_json::Value, MetadataError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let doc = {
            let mut t = txn.open_table(DOCS).map_err(db_err)?;
            let mut doc = match t.get((kind.as_str(), key)).map_err(db_err)? {
                Some(v) => decode_doc(kind, key, v.value())?,
                None => return Err(MetadataError::DocNotFound(kind, key.to_owned())),
            };
            change(&mut doc).map_err(MetadataError::Refused)?;
            let bytes = serde_json::to_vec(&doc).map_err(db_err)?;
            let target = match rename {
                Some(new) if new != key => {
                    if t.get((kind.as_str(), new)).map_err(db_err)?.is_some() {
                        return Err(MetadataError::DocExists(kind, new.to_owned()));
                    }
                    t.remove((kind.as_str(), key)).map_err(db_err)?;
                    new
                }
                _ => key,
            };
            t.insert((kind.as_str(), target), bytes.as_slice())
                .map_err(db_err)?;
            doc
        };
        txn.commit().map_err(db_err)?;
        Ok(doc)
    }

    fn doc_delete(&self, kind: DocKind, key: &str) -> Result<bool, MetadataError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = txn
            .open_table(DOCS)
            .map_err(db_err)?
            .remove((kind.as_str(), key))
            .map_err(db_err)?
            .is_some();
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_get_update_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("m.redb")).unwrap();
        let img = Image::new(Uuid::from_u128(1), Some("p".into()), "2026-01-01T00:00:00Z");
        store.create(&img).unwrap();
        assert!(matches!(store.create(&img), Err(MetadataError::Exists(_))));
        assert_eq!(store.get(&img.id).unwrap(), Some(img.clone()));
        let changed = store
            .update(&img.id, &mut |i| {
                i.name = Some("n".into());
                Ok(())
            })
            .unwrap();
        assert_eq!(changed.name.as_deref(), Some("n"));
        let refused = store.update(&img.id, &mut |i| {
            i.name = Some("lost".into());
            Err("no".into())
        });
        assert!(matches!(refused, Err(MetadataError::Refused(m)) if m == "no"));
        assert_eq!(
            store.get(&img.id).unwrap().unwrap().name.as_deref(),
            Some("n")
        );
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(store.delete(&img.id).unwrap());
        assert!(!store.delete(&img.id).unwrap());
        assert_eq!(store.get(&img.id).unwrap(), None);
    }

    #[test]
    fn documents_are_kept_by_kind_renamed_atomically_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("m.redb")).unwrap();
        let ns = DocKind::MetadefNamespace;
        store
            .doc_create(ns, "b", &serde_json::json!({"n": 1}))
            .unwrap();
        store
            .doc_create(ns, "a", &serde_json::json!({"n": 2}))
            .unwrap();
        store
            .doc_create(DocKind::Task, "a", &serde_json::json!({"t": 1}))
            .unwrap();
        assert!(matches!(
            store.doc_create(ns, "a", &serde_json::json!({})),
            Err(MetadataError::DocExists(DocKind::MetadefNamespace, k)) if k == "a"
        ));
        let keys: Vec<String> = store
            .doc_list(ns)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["a", "b"], "one kind, in key order");
        assert_eq!(store.doc_list(DocKind::Task).unwrap().len(), 1);
        // A rename onto a taken key changes nothing.
        let clash = store.doc_update(ns, "a", Some("b"), &mut |d| {
            d["n"] = serde_json::json!(9);
            Ok(())
        });
        assert!(matches!(clash, Err(MetadataError::DocExists(..))));
        assert_eq!(store.doc_get(ns, "a").unwrap().unwrap()["n"], 2);
        let moved = store
            .doc_update(ns, "a", Some("c"), &mut |d| {
                d["n"] = serde_json::json!(3);
                Ok(())
            })
            .unwrap();
        assert_eq!(moved["n"], 3);
        assert_eq!(store.doc_get(ns, "a").unwrap(), None);
        assert_eq!(store.doc_get(ns, "c").unwrap().unwrap()["n"], 3);
        let refused = store.doc_update(ns, "c", None, &mut |_| Err("no".into()));
        assert!(matches!(refused, Err(MetadataError::Refused(m)) if m == "no"));
        assert!(matches!(
            store.doc_update(ns, "zz", None, &mut |_| Ok(())),
            Err(MetadataError::DocNotFound(..))
        ));
        assert!(store.doc_delete(ns, "c").unwrap());
        assert!(!store.doc_delete(ns, "c").unwrap());
        assert_eq!(store.doc_get(DocKind::Task, "a").unwrap().unwrap()["t"], 1);
    }

    #[test]
    fn a_newer_schema_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.redb");
        drop(RedbStore::open(&path).unwrap());
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", 99)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = RedbStore::open(&path).err().unwrap().to_string();
        assert!(
            err.contains("schema version 99") && err.contains("upgrade"),
            "{err}"
        );
    }
}
