//! Recovery on open: the index is the truth; files and records that disagree
//! with it, or with themselves, are dropped.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt as _;

use crate::engine::{ChunkState, RecoveryView};
use crate::error::CacheError;
use crate::format::State;
use crate::index::Key;

/// Rebuilds the in-memory state from the index and the data files.
///
/// - a record that fails to decode, an `invalid` entry, or one whose data
///   file is missing or has the wrong length: entry and file removed;
/// - a `filling` or `reserved` entry: each recorded chunk's crc32 is checked
///   against the file; a bad chunk is forgotten (it will be filled again);
/// - a `complete` entry missing any chunk row goes back to `filling`; an
///   unfinished entry with every chunk present is verified now (complete, or
///   dropped);
/// - a file in the data directory with no entry (a crash between creating it
///   and indexing it): removed.
///
/// Entries are restored in insertion order, so the eviction order survives.
pub(crate) fn recover(view: &RecoveryView<'_>) -> Result<(), CacheError> {
    let mut kept: HashSet<String> = HashSet::new();
    let mut entries = view.index.entries()?;
    entries.sort_by_key(|(_, r)| r.as_ref().map_or(0, |r| r.seq));
    for (key, record) in entries {
        let name = hex::encode(key);
        let path = view.data_dir.join(&name);
        let Ok(mut record) = record else {
            drop_entry(view, &key)?;
            continue;
        };
        let file = File::options().read(true).write(true).open(&path);
        let file = match file {
            Ok(f)
                if f.metadata().is_ok_and(|m| m.len() == record.size)
                    && record.state != State::Invalid =>
            {
                f
            }
            _ => {
                drop_entry(view, &key)?;
                continue;
            }
        };
        if record.chunk_count() > crate::engine::MAX_CHUNKS {
            drop_entry(view, &key)?;
            continue;
        }
        let count = record.chunk_count() as usize;
        let mut chunks = vec![ChunkState::Missing; count];
        let mut crcs = vec![0u32; count];
        for (chunk, crc) in view.index.chunks(&key)? {
            let i = chunk as usize;
            if i >= count {
                view.index.drop_chunk(&key, chunk)?;
                continue;
            }
            let good =
                record.state == State::Complete || chunk_crc_matches(&file, &record, chunk, crc);
            if good {
                chunks[i] = ChunkState::Present;
                crcs[i] = crc;
            } else {
                view.index.drop_chunk(&key, chunk)?;
            }
        }
        let all_present = chunks.iter().all(|c| *c == ChunkState::Present);
        if record.state == State::Complete && !all_present {
            record.state = State::Filling;
            view.index.put_entry(&key, &record)?;
        }
        if record.state != State::Complete && all_present {
            // Stopped between the last chunk and the hash check: check now,
            // or no commit would ever come to finish it.
            match crate::engine::hash_file(&file, record.size) {
                Ok((md5, sha512)) if md5 == record.md5 && sha512 == record.sha512 => {
                    record.state = State::Complete;
                    view.index.put_entry(&key, &record)?;
                }
                _ => {
                    drop_entry(view, &key)?;
                    continue;
                }
            }
        }
        if view.restore(key, record, chunks, crcs, file) {
            kept.insert(name);
        } else {
            drop_entry(view, &key)?;
        }
    }
    let listing = std::fs::read_dir(view.data_dir).map_err(|source| CacheError::Io {
        path: view.data_dir.display().to_string(),
        source,
    })?;
    for item in listing.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        if !kept.contains(&name) {
            let _ = std::fs::remove_file(item.path());
        }
    }
    Ok(())
}

fn drop_entry(view: &RecoveryView<'_>, key: &Key) -> Result<(), CacheError> {
    view.index.remove_entry(key)?;
    let _ = std::fs::remove_file(view.data_dir.join(hex::encode(key)));
    Ok(())
}

/// Re-reads one chunk and compares its crc32 with the recorded one.
pub(crate) fn chunk_crc_matches(
    file: &File,
    record: &crate::format::EntryRecord,
    chunk: u32,
    crc: u32,
) -> bool {
    let Some((start, end)) = record.chunk_range(u64::from(chunk)) else {
        return false;
    };
    let mut buf = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut buf, start).is_ok() && crc32fast::hash(&buf) == crc
}
