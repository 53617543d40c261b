//! The signing keys: the keyring glance-api signs links with, its rotation,
//! and the dropping of replaced keys once every link they signed expired.
//!
//! The secrets live in the keyring file only (mode 0600, rewritten whole on
//! every change); the metadata store keeps when each key was made and when
//! it is to be dropped. Every change bumps a generation number, which the
//! fleet compares with the generation each node last received.
//!
//! A rotation has two steps: [`SigningKeys::stage`] adds the new key beside
//! the others (the fleet pushes that keyring), then
//! [`SigningKeys::promote`] makes it primary. So the nodes hold a key before
//! the first link signed with it exists.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use glance_link::{KeyId, Keyring, Secret};

use crate::metadata::MetadataStore;
use crate::model::KeyRecord;

/// Bytes of a generated secret.
const SECRET_BYTES: usize = 32;

/// The keyring in use and its generation numbers.
pub struct SigningKeys {
    path: PathBuf,
    /// Changes are made one at a time (file, then records, then the swap).
    change: Mutex<Pending>,
    /// The keyring and its generations, swapped together and read without
    /// a lock on every download.
    current: ArcSwap<KeyState>,
}

/// What changes hold between the two steps of a rotation.
struct Pending {
    /// A key added but not yet primary, and the generation that added it.
    staged: Option<(KeyId, u64)>,
}

/// A keyring and its generation numbers, as one snapshot.
pub struct KeyState {
    /// The keyring.
    pub keyring: Keyring,
    /// Its generations.
    pub generations: Generations,
}

/// Generation numbers: every keyring change bumps `keyring`; `primary` is
/// the generation that first held the current primary key, so a node that
/// received that generation or a later one verifies every new link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generations {
    /// The keyring's generation.
    pub keyring: u64,
    /// The generation a node needs to verify links signed now.
    pub primary: u64,
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The new primary key.
    pub primary: String,
    /// The replaced key and when it is dropped.
    pub replaced: KeyRecord,
}

/// A key as `GET /admin/keys` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyView {
    /// Its id.
    pub id: String,
    /// Whether new links are signed with it.
    pub primary: bool,
    /// When it was made, if by a rotation.
    pub created_at: Option<u64>,
    /// When it is dropped, once replaced.
    pub retire_at: Option<u64>,
}

impl SigningKeys {
    /// Loads the keyring file, and gives every replaced key without a record
    /// (a rotation cut short, or keys written by hand) a drop time of
    /// `now + lifetime`, so no key stays forever by accident.
    pub fn load(
        path: PathBuf,
        metadata: &dyn MetadataStore,
        lifetime: Duration,
        now: u64,
    ) -> Result<SigningKeys, String> {
        let keyring = Keyring::load(&path).map_err(|e| e.to_string())?;
        let records = metadata.key_records().map_err(|e| e.to_string())?;
        for id in keyring.key_ids().filter(|id| *id != keyring.primary()) {
            let known = records.iter().find(|r| r.id == id.as_str());
            if known.is_none_or(|r| r.retire_at.is_none()) {
                metadata
                    .put_key_record(&KeyRecord {
                        id: id.to_string(),
                        created_at: known.and_then(|r| r.created_at),
                        retire_at: Some(now.saturating_add(lifetime.as_secs())),
                    })
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(SigningKeys {
            path,
            change: Mutex::new(Pending { staged: None }),
            current: ArcSwap::from_pointee(KeyState {
                keyring,
                generations: Generations {
                    keyring: 1,
                    primary: 1,
                },
            }),
        })
    }

    /// The keyring in use and its generations, as one snapshot.
    pub fn current(&self) -> Arc<KeyState> {
        self.current.load_full()
    }

    /// The current generation numbers.
    pub fn generations(&self) -> Generations {
        self.current.load().generations
    }

    /// Every key, with its record.
    pub fn list(&self, metadata: &dyn MetadataStore) -> Result<Vec<KeyView>, String> {
        let state = self.current();
        let keyring = &state.keyring;
        let records = metadata.key_records().map_err(|e| e.to_string())?;
        Ok(keyring
            .key_ids()
            .map(|id| {
                let record = records.iter().find(|r| r.id == id.as_str());
                KeyView {
                    id: id.to_string(),
                    primary: id == keyring.primary(),
                    created_at: record.and_then(|r| r.created_at),
                    retire_at: record.and_then(|r| r.retire_at),
                }
            })
            .collect())
    }

    /// The first step of a rotation: a new random key joins the keyring,
    /// not yet primary, so it can reach every node before any link is
    /// signed with it. Returns its id. Blocking: writes the keyring file and
    /// the metadata store.
    pub fn stage(&self, metadata: &dyn MetadataStore, now: u64) -> Result<String, String> {
        let mut pending = self.change.lock().map_err(|_| "the key lock is poisoned")?;
        let state = self.current();
        let id = fresh_id(&state.keyring, now)?;
        let mut bytes = vec![0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a new key: {e}"))?;
        let secret = Secret::new(bytes).ok_or("a generated secret is too short")?;
        let new = state
            .keyring
            .with_key(id, secret)
            .map_err(|e| e.to_string())?;
        self.write(&new)?;
        metadata
            .put_key_record(&KeyRecord {
                id: id.to_string(),
                created_at: Some(now),
                retire_at: None,
            })
            .map_err(|e| e.to_string())?;
        let generations = Generations {
            keyring: state.generations.keyring + 1,
            primary: state.generations.primary,
        };
        pending.staged = Some((id, generations.keyring));
        self.publish(new, generations);
        Ok(id.to_string())
    }

    /// The second step: the staged key becomes primary; the old primary
    /// stays for `lifetime` (the link TTL plus the grace period), so links
    /// it signed keep working. Blocking, like [`SigningKeys::stage`].
    pub fn promote(
        &self,
        metadata: &dyn MetadataStore,
        lifetime: Duration,
        now: u64,
    ) -> Result<Rotation, String> {
        let mut pending = self.change.lock().map_err(|_| "the key lock is poisoned")?;
        let (id, staged_at) = pending.staged.take().ok_or("no key is staged")?;
        let state = self.current();
        let old = *state.keyring.primary();
        let new = state.keyring.with_primary(id).map_err(|e| e.to_string())?;
        self.write(&new)?;
        let records = metadata.key_records().map_err(|e| e.to_string())?;
        let replaced = KeyRecord {
            id: old.to_string(),
            created_at: records
                .iter()
                .find(|r| r.id == old.as_str())
                .and_then(|r| r.created_at),
            retire_at: Some(now.saturating_add(lifetime.as_secs())),
        };
        metadata
            .put_key_record(&replaced)
            .map_err(|e| e.to_string())?;
        self.publish(
            new,
            Generations {
                keyring: state.generations.keyring + 1,
                primary: staged_at,
            },
        );
        Ok(Rotation {
            primary: id.to_string(),
            replaced,
        })
    }

    /// Drops every replaced key whose time has come; returns their ids.
    /// Blocking, like [`SigningKeys::stage`].
    pub fn expire(&self, metadata: &dyn MetadataStore, now: u64) -> Result<Vec<String>, String> {
        let _pending = self.change.lock().map_err(|_| "the key lock is poisoned")?;
        let state = self.current();
        let keyring = &state.keyring;
        let records = metadata.key_records().map_err(|e| e.to_string())?;
        let due: Vec<KeyId> = keyring
            .key_ids()
            .filter(|id| *id != keyring.primary())
            .filter(|id| {
                records
                    .iter()
                    .any(|r| r.id == id.as_str() && r.retire_at.is_some_and(|t| t <= now))
            })
            .copied()
            .collect();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let new = keyring.without(&due);
        self.write(&new)?;
        for id in &due {
            metadata
                .delete_key_record(id.as_str())
                .map_err(|e| e.to_string())?;
        }
        self.publish(
            new,
            Generations {
                keyring: state.generations.keyring + 1,
                primary: state.generations.primary,
            },
        );
        Ok(due.iter().map(|id| id.to_string()).collect())
    }

    /// Replaces the keyring file whole (mode 0600).
    fn write(&self, keyring: &Keyring) -> Result<(), String> {
        glance_link::write_private_file(&self.path, &keyring.to_toml(), "rotate")
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }

    fn publish(&self, keyring: Keyring, generations: Generations) {
        self.current.store(Arc::new(KeyState {
            keyring,
            generations,
        }));
    }
}

/// A key id not yet in the keyring: `k` and the UTC time of the rotation,
/// with a counter if two rotations fall in one second.
fn fresh_id(keyring: &Keyring, now: u64) -> Result<KeyId, String> {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(now).unwrap_or(i64::MAX))
        .map_err(|e| e.to_string())?;
    let base = format!(
        "k{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    for n in 0..1000u32 {
        let text = if n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let id = KeyId::new(&text).map_err(|e| e.to_string())?;
        if !keyring.key_ids().any(|k| *k == id) {
            return Ok(id);
        }
    }
    Err("no free key id for this second".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::RedbStore;

    fn setup() -> (tempfile::TempDir, RedbStore, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("m.redb")).unwrap();
        let path = dir.path().join("keyring.toml");
        glance_link::write_private_file(
            &path,
            "primary = \"a\"\n[keys]\na = \"AUpHxry2pHEpkVJGCYLJ-TpiLWITLVzhgiWlW1sGUv8\"\n",
            "tmp",
        )
        .unwrap();
        (dir, store, path)
    }

    #[test]
    fn rotation_keeps_the_old_key_until_its_links_expired() {
        let (_dir, store, path) = setup();
        let keys = SigningKeys::load(path.clone(), &store, Duration::from_secs(600), 1000).unwrap();
        assert_eq!(
            keys.generations(),
            Generations {
                keyring: 1,
                primary: 1
            }
        );
        let g = |keyring, primary| Generations { keyring, primary };
        let staged = keys.stage(&store, 1_764_000_000).unwrap();
        assert_eq!(staged, "k20251124T160000Z");
        // Staged: in the file, not yet primary; the primary generation holds.
        assert_eq!(Keyring::load(&path).unwrap().primary().as_str(), "a");
        assert_eq!(keys.current().keyring.primary().as_str(), "a");
        assert_eq!(keys.generations(), g(2, 1));
        let r = keys
            .promote(&store, Duration::from_secs(600), 1_764_000_000)
            .unwrap();
        assert_eq!(r.primary, "k20251124T160000Z");
        assert_eq!(r.replaced.id, "a");
        assert_eq!(r.replaced.retire_at, Some(1_764_000_600));
        // A node that got generation 2 (the staged keyring) holds the primary.
        assert_eq!(keys.generations(), g(3, 2));
        // The file holds both keys, the new one primary; a second rotation in
        // the same second gets its own id.
        let file = Keyring::load(&path).unwrap();
        assert_eq!(file.primary().as_str(), "k20251124T160000Z");
        assert_eq!(file.key_ids().count(), 2);
        keys.stage(&store, 1_764_000_000).unwrap();
        let r2 = keys
            .promote(&store, Duration::from_secs(600), 1_764_000_000)
            .unwrap();
        assert_eq!(r2.primary, "k20251124T160000Z-1");
        assert!(
            keys.promote(&store, Duration::from_secs(1), 1).is_err(),
            "nothing staged"
        );
        // Nothing is due before its time; then both replaced keys go.
        assert!(keys.expire(&store, 1_764_000_599).unwrap().is_empty());
        let mut dropped = keys.expire(&store, 1_764_000_600).unwrap();
        dropped.sort();
        assert_eq!(dropped, ["a", "k20251124T160000Z"]);
        assert_eq!(keys.generations(), g(6, 4));
        let view = keys.list(&store).unwrap();
        assert_eq!(view.len(), 1);
        assert!(view[0].primary);
        assert_eq!(view[0].created_at, Some(1_764_000_000));
        assert_eq!(Keyring::load(&path).unwrap().key_ids().count(), 1);
    }

    #[test]
    fn a_replaced_key_without_a_record_gets_a_drop_time_at_load() {
        let (_dir, store, path) = setup();
        glance_link::write_private_file(
            &path,
            "primary = \"b\"\n[keys]\na = \"AUpHxry2pHEpkVJGCYLJ-TpiLWITLVzhgiWlW1sGUv8\"\n\
             b = \"JLH-AqnLqctURn65MUavw2HDszQRFwdEFT4pepw7ZsQ\"\n",
            "tmp",
        )
        .unwrap();
        let keys = SigningKeys::load(path, &store, Duration::from_secs(60), 500).unwrap();
        let view = keys.list(&store).unwrap();
        assert_eq!(view[0].id, "a");
        assert_eq!(view[0].retire_at, Some(560));
        assert_eq!(view[1].retire_at, None);
        assert_eq!(keys.expire(&store, 560).unwrap(), ["a"]);
    }
}
