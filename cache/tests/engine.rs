//! The cache engine through its public API: fills, hits, hashes, leases,
//! eviction, the size limit, recovery after a crash, concurrency.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::meta;

use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use glance_cache::format::State;
use glance_cache::{Cache, CacheConfig, CacheError, ChunkState, Committed, Lookup};
use redb::ReadableTable as _;

const CHUNK: u32 = 4 << 20;
const MIB: u64 = 1 << 20;

fn chunk_of(bytes: &[u8], i: u64) -> &[u8] {
    common::chunk_bytes(bytes, i, CHUNK)
}

fn data(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn open(dir: &Path, max: u64) -> Cache {
    Cache::open(CacheConfig {
        dir: dir.to_path_buf(),
        max_bytes: max,
        chunk_size: CHUNK,
        faults: None,
    })
    .unwrap()
}

fn key(n: u8) -> [u8; 16] {
    [n; 16]
}

/// Fills every chunk of an entry in order; returns the last commit's outcome.
fn fill(cache: &Cache, k: [u8; 16], bytes: &[u8]) -> Committed {
    let Lookup::Partial(lease) = cache.lookup(k, &meta(bytes), 1).unwrap() else {
        panic!("expected a new entry");
    };
    let n = lease.record().chunk_count();
    let mut last = Committed::Chunk;
    for i in 0..n {
        last = lease.claim(i).unwrap().commit(chunk_of(bytes, i)).unwrap();
    }
    last
}

#[test]
fn fill_then_hit_serves_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 100 * MIB);
    let bytes = data(10 * MIB + 123, 1);
    assert_eq!(fill(&cache, key(1), &bytes), Committed::Complete);
    let Lookup::Hit(lease) = cache.lookup(key(1), &meta(&bytes), 2).unwrap() else {
        panic!("expected a hit");
    };
    assert!(lease.is_complete());
    let mut got = Vec::new();
    for i in 0..lease.record().chunk_count() {
        got.extend(lease.read_chunk(i).unwrap().unwrap());
    }
    assert_eq!(got, bytes);
    // The file itself holds the image, for zero-copy senders.
    let mut direct = vec![0u8; bytes.len()];
    lease.file().read_exact_at(&mut direct, 0).unwrap();
    assert_eq!(direct, bytes);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.invalidations), (1, 1, 0));
}

#[test]
fn concurrency_one_claim_per_chunk_and_a_dropped_claim_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 100 * MIB);
    let bytes = data(9 * MIB, 2);
    let Lookup::Partial(a) = cache.lookup(key(2), &meta(&bytes), 1).unwrap() else {
        panic!()
    };
    let Lookup::Partial(b) = cache.lookup(key(2), &meta(&bytes), 1).unwrap() else {
        panic!()
    };
    let claim = a.claim(0).unwrap();
    assert!(b.claim(0).is_none(), "two fillers for one chunk");
    assert_eq!(b.chunk(0), Some(ChunkState::Filling));
    drop(claim);
    assert_eq!(b.chunk(0), Some(ChunkState::Missing));
    let claim = b.claim(0).unwrap();
    assert_eq!(claim.commit(chunk_of(&bytes, 0)).unwrap(), Committed::Chunk);
    assert_eq!(a.chunk(0), Some(ChunkState::Present));
    assert!(a.claim(0).is_none());
}

#[test]
fn concurrency_racing_fillers_commit_each_chunk_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 200 * MIB);
    let bytes = data(40 * MIB + 5, 3);
    let commits = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let lease = match cache.lookup(key(3), &meta(&bytes), 1).unwrap() {
                    Lookup::Hit(l) | Lookup::Partial(l) => l,
                    Lookup::Bypass => panic!("bypass"),
                };
                for i in 0..lease.record().chunk_count() {
                    if let Some(claim) = lease.claim(i) {
                        claim.commit(chunk_of(&bytes, i)).unwrap();
                        commits.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(commits.load(Ordering::SeqCst), 11);
    let Lookup::Hit(lease) = cache.lookup(key(3), &meta(&bytes), 2).unwrap() else {
        panic!()
    };
    let mut got = Vec::new();
    for i in 0..11 {
        got.extend(lease.read_chunk(i).unwrap().unwrap());
    }
    assert_eq!(got, bytes);
}

#[test]
fn crc_and_hash_mismatch_makes_the_entry_invalid_and_removes_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 100 * MIB);
    let bytes = data(5 * MIB, 4);
    let mut wrong = bytes.clone();
    wrong[4_000_000] ^= 1;
    let Lookup::Partial(lease) = cache.lookup(key(4), &meta(&bytes), 1).unwrap() else {
        panic!()
    };
    lease.claim(0).unwrap().commit(chunk_of(&wrong, 0)).unwrap();
    assert_eq!(
        lease.claim(1).unwrap().commit(chunk_of(&wrong, 1)).unwrap(),
        Committed::Invalid
    );
    drop(lease);
    assert_eq!(cache.stats().invalidations, 1);
    assert!(cache.list().is_empty());
    assert!(
        std::fs::read_dir(dir.path().join("data"))
            .unwrap()
            .next()
            .is_none()
    );
    // Never served: the next lookup starts a new fill.
    assert!(matches!(
        cache.lookup(key(4), &meta(&bytes), 2).unwrap(),
        Lookup::Partial(_)
    ));
}

#[test]
fn chunk_of_the_wrong_length_is_refused_and_can_be_filled_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 100 * MIB);
    let bytes = data(6 * MIB, 5);
    let Lookup::Partial(lease) = cache.lookup(key(5), &meta(&bytes), 1).unwrap() else {
        panic!()
    };
    let err = lease.claim(1).unwrap().commit(&bytes[..10]).unwrap_err();
    assert!(
        matches!(err, CacheError::ChunkLength { chunk: 1, .. }),
        "{err}"
    );
    assert_eq!(lease.chunk(1), Some(ChunkState::Missing));
    assert!(lease.claim(1).is_some());
}

#[test]
fn evict_never_removes_a_leased_entry_and_bypasses_instead() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 12 * MIB);
    let a = data(8 * MIB, 6);
    let b = data(8 * MIB, 7);
    let held = match cache.lookup(key(6), &meta(&a), 1).unwrap() {
        Lookup::Partial(l) => l,
        _ => panic!(),
    };
    assert!(matches!(
        cache.lookup(key(7), &meta(&b), 2).unwrap(),
        Lookup::Bypass
    ));
    assert!(matches!(cache.evict(&key(6)), Err(CacheError::InUse)));
    drop(held);
    assert!(matches!(
        cache.lookup(key(7), &meta(&b), 3).unwrap(),
        Lookup::Partial(_)
    ));
    assert_eq!(
        cache.list().iter().map(|e| e.key).collect::<Vec<_>>(),
        vec![key(7)]
    );
    assert!(!dir.path().join("data").join(hex::encode(key(6))).exists());
    assert_eq!(cache.stats().evictions, 1);
}

#[test]
fn evict_on_request_and_the_size_limit_holds_under_a_burst() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 50 * MIB);
    for n in 0..40u8 {
        let bytes = data(u64::from(n % 7 + 1) * MIB, n);
        let _ = cache.lookup(key(n), &meta(&bytes), u64::from(n)).unwrap();
        assert!(cache.stats().bytes_used <= 50 * MIB);
        let on_disk: u64 = cache.list().iter().map(|e| e.size).sum();
        assert!(on_disk <= 50 * MIB);
    }
    let some = cache.list()[0].key;
    cache.evict(&some).unwrap();
    assert!(matches!(cache.evict(&some), Err(CacheError::NotFound)));
}

#[test]
fn crash_mid_fill_keeps_the_durable_chunks_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(17 * MIB, 8);
    {
        let cache = open(dir.path(), 100 * MIB);
        let Lookup::Partial(lease) = cache.lookup(key(8), &meta(&bytes), 1).unwrap() else {
            panic!()
        };
        lease.claim(0).unwrap().commit(chunk_of(&bytes, 0)).unwrap();
        lease.claim(2).unwrap().commit(chunk_of(&bytes, 2)).unwrap();
        // A claim in flight when the process stops: its bytes are written but
        // never committed to the index, which is what a crash leaves.
        let claim = lease.claim(3).unwrap();
        let path = dir.path().join("data").join(hex::encode(key(8)));
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(chunk_of(&bytes, 3), 3 * u64::from(CHUNK))
            .unwrap();
        drop((claim, lease, cache));
    }
    let cache = open(dir.path(), 100 * MIB);
    let info = &cache.list()[0];
    assert_eq!(info.state, State::Filling);
    assert_eq!(info.bytes_present, 8 * MIB);
    let Lookup::Partial(lease) = cache.lookup(key(8), &meta(&bytes), 2).unwrap() else {
        panic!()
    };
    assert_eq!(lease.chunk(0), Some(ChunkState::Present));
    assert_eq!(lease.chunk(1), Some(ChunkState::Missing));
    assert_eq!(
        lease.chunk(3),
        Some(ChunkState::Missing),
        "a claim does not survive a crash"
    );
    for i in [1, 3, 4] {
        lease.claim(i).unwrap().commit(chunk_of(&bytes, i)).unwrap();
    }
    assert!(lease.is_complete());
}

#[test]
fn crc_recovery_forgets_a_chunk_damaged_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(12 * MIB, 9);
    {
        let cache = open(dir.path(), 100 * MIB);
        let Lookup::Partial(lease) = cache.lookup(key(9), &meta(&bytes), 1).unwrap() else {
            panic!()
        };
        lease.claim(0).unwrap().commit(chunk_of(&bytes, 0)).unwrap();
        lease.claim(1).unwrap().commit(chunk_of(&bytes, 1)).unwrap();
    }
    // Flip a byte inside chunk 1 behind the cache's back.
    let path = dir.path().join("data").join(hex::encode(key(9)));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0xff ^ bytes[5 * MIB as usize]], 5 * MIB)
        .unwrap();
    let cache = open(dir.path(), 100 * MIB);
    let Lookup::Partial(lease) = cache.lookup(key(9), &meta(&bytes), 2).unwrap() else {
        panic!()
    };
    assert_eq!(lease.chunk(0), Some(ChunkState::Present));
    assert_eq!(lease.chunk(1), Some(ChunkState::Missing));
}

#[test]
fn crash_recovery_drops_orphans_and_entries_whose_file_is_gone_or_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (data(5 * MIB, 10), data(5 * MIB, 11));
    {
        let cache = open(dir.path(), 100 * MIB);
        fill(&cache, key(10), &a);
        fill(&cache, key(11), &b);
    }
    let data_dir = dir.path().join("data");
    std::fs::remove_file(data_dir.join(hex::encode(key(10)))).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(data_dir.join(hex::encode(key(11))))
        .unwrap();
    f.set_len(MIB).unwrap();
    std::fs::write(data_dir.join("orphan"), b"left by a crash").unwrap();
    let cache = open(dir.path(), 100 * MIB);
    assert!(cache.list().is_empty());
    assert!(std::fs::read_dir(&data_dir).unwrap().next().is_none());
    assert_eq!(cache.stats().bytes_used, 0);
}

#[test]
fn crash_recovery_keeps_complete_entries_and_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let imgs: Vec<Vec<u8>> = (0..3).map(|n| data(5 * MIB, 20 + n)).collect();
    {
        let cache = open(dir.path(), 100 * MIB);
        for (n, img) in imgs.iter().enumerate() {
            fill(&cache, key(20 + n as u8), img);
        }
    }
    let cache = open(dir.path(), 100 * MIB);
    for (n, img) in imgs.iter().enumerate() {
        assert!(matches!(
            cache.lookup(key(20 + n as u8), &meta(img), 5).unwrap(),
            Lookup::Hit(_)
        ));
    }
    assert_eq!(cache.stats().bytes_used, 15 * MIB);
}

#[test]
fn a_stale_entry_with_other_hashes_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 100 * MIB);
    let old = data(5 * MIB, 30);
    let new = data(5 * MIB, 31);
    fill(&cache, key(30), &old);
    assert!(matches!(
        cache.lookup(key(30), &meta(&new), 2).unwrap(),
        Lookup::Partial(_)
    ));
    assert_eq!(cache.list()[0].state, State::Reserved);
}

#[test]
fn an_index_of_another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), 10 * MIB));
    {
        let db = redb::Database::create(dir.path().join("index.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        let def: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        txn.open_table(def)
            .unwrap()
            .insert("format_version", 9)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Cache::open(CacheConfig {
        dir: dir.path().to_path_buf(),
        max_bytes: MIB,
        chunk_size: CHUNK,
        faults: None,
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("format version 9"), "{err}");
}

#[test]
fn a_chunk_size_out_of_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = Cache::open(CacheConfig {
        dir: dir.path().to_path_buf(),
        max_bytes: MIB,
        chunk_size: 1024,
        faults: None,
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("chunk size"), "{err}");
}

#[test]
fn integrity_sequential_fills_verify_without_reading_back_and_others_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 100 * MIB);
    let a = data(10 * MIB, 40);
    assert_eq!(fill(&cache, key(40), &a), Committed::Complete);
    assert_eq!(cache.stats().read_backs, 0);
    // Out of order (readahead): the running hashes catch up on the chunks
    // that landed early; still no whole-image read-back.
    let b = data(10 * MIB, 41);
    let Lookup::Partial(lease) = cache.lookup(key(41), &meta(&b), 1).unwrap() else {
        panic!()
    };
    lease.claim(2).unwrap().commit(chunk_of(&b, 2)).unwrap();
    lease.claim(0).unwrap().commit(chunk_of(&b, 0)).unwrap();
    assert_eq!(
        lease.claim(1).unwrap().commit(chunk_of(&b, 1)).unwrap(),
        Committed::Complete
    );
    assert_eq!(cache.stats().read_backs, 0);
    drop(lease);
    // Hashes lost to a restart mid-fill: the last commit reads the image back.
    let d = data(10 * MIB, 44);
    {
        let Lookup::Partial(lease) = cache.lookup(key(44), &meta(&d), 1).unwrap() else {
            panic!()
        };
        lease.claim(0).unwrap().commit(chunk_of(&d, 0)).unwrap();
        lease.claim(1).unwrap().commit(chunk_of(&d, 1)).unwrap();
    }
    drop(cache);
    let cache = open(dir.path(), 100 * MIB);
    let Lookup::Partial(lease) = cache.lookup(key(44), &meta(&d), 2).unwrap() else {
        panic!()
    };
    assert_eq!(
        lease.claim(2).unwrap().commit(chunk_of(&d, 2)).unwrap(),
        Committed::Complete
    );
    assert_eq!(cache.stats().read_backs, 1);
    drop(lease);
    // A wrong chunk in a sequential fill is still caught.
    let c = data(10 * MIB, 42);
    let mut bad = c.clone();
    bad[1] ^= 0x80;
    let Lookup::Partial(lease) = cache.lookup(key(42), &meta(&c), 1).unwrap() else {
        panic!()
    };
    for i in 0..3 {
        let last = lease.claim(i).unwrap().commit(chunk_of(&bad, i)).unwrap();
        if i == 2 {
            assert_eq!(last, Committed::Invalid);
        }
    }
    assert_eq!(cache.stats().invalidations, 1);
    // A wrong chunk that landed out of order is caught as well.
    let e = data(10 * MIB, 45);
    let mut bad = e.clone();
    bad[9 * MIB as usize] ^= 0x01;
    let Lookup::Partial(lease) = cache.lookup(key(45), &meta(&e), 1).unwrap() else {
        panic!()
    };
    lease.claim(1).unwrap().commit(chunk_of(&bad, 1)).unwrap();
    lease.claim(2).unwrap().commit(chunk_of(&bad, 2)).unwrap();
    assert_eq!(
        lease.claim(0).unwrap().commit(chunk_of(&bad, 0)).unwrap(),
        Committed::Invalid
    );
    assert_eq!(cache.stats().read_backs, 1);
}

#[test]
fn crc_scrub_drops_a_damaged_complete_entry_and_it_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 100 * MIB);
    let a = data(9 * MIB, 43);
    fill(&cache, key(43), &a);
    let report = cache.scrub(100).unwrap();
    assert_eq!((report.checked, report.bad), (3, 0));
    let path = dir.path().join("data").join(hex::encode(key(43)));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[!a[(4 * MIB + 7) as usize]], 4 * MIB + 7)
        .unwrap();
    // While a reader holds it, a complete entry is left alone (its file may
    // be mapped: never rewritten in place).
    let Lookup::Hit(held) = cache.lookup(key(43), &meta(&a), 2).unwrap() else {
        panic!()
    };
    let bad: usize = (0..3).map(|_| cache.scrub(1).unwrap().bad).sum();
    assert_eq!(bad, 1);
    assert_eq!(cache.list().len(), 1);
    drop(held);
    // Budgeted steps: one chunk per call, wrapping around.
    let bad: usize = (0..3).map(|_| cache.scrub(1).unwrap().bad).sum();
    assert_eq!(bad, 1);
    assert_eq!(cache.stats().scrub_failures, 2);
    assert!(cache.list().is_empty(), "the damaged entry is dropped");
    assert_eq!(fill(&cache, key(43), &a), Committed::Complete);
}

#[test]
fn crc_first_read_after_open_catches_a_chunk_damaged_while_closed() {
    let dir = tempfile::tempdir().unwrap();
    let a = data(9 * MIB, 45);
    {
        let cache = open(dir.path(), 100 * MIB);
        fill(&cache, key(45), &a);
        // Written by this process: checked already, nothing to re-read.
        let Lookup::Hit(lease) = cache.lookup(key(45), &meta(&a), 2).unwrap() else {
            panic!()
        };
        assert!(lease.checked(0, 9 * MIB - 1));
    }
    let path = dir.path().join("data").join(hex::encode(key(45)));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[!a[(4 * MIB + 9) as usize]], 4 * MIB + 9)
        .unwrap();
    let cache = open(dir.path(), 100 * MIB);
    let Lookup::Hit(lease) = cache.lookup(key(45), &meta(&a), 3).unwrap() else {
        panic!()
    };
    let cs = u64::from(CHUNK);
    assert!(
        !lease.checked(0, cs - 1),
        "a reopened complete entry is unchecked"
    );
    assert!(lease.check_chunk(0).unwrap());
    assert!(lease.checked(0, cs - 1) && !lease.checked(0, 2 * cs - 1));
    let damaged = (4 * MIB + 9) / cs;
    assert!(!lease.check_chunk(damaged).unwrap(), "the damage is found");
    assert_eq!(cache.stats().scrub_failures, 1);
    // Doomed: no new reader gets it while this one holds it...
    assert!(matches!(
        cache.lookup(key(45), &meta(&a), 4).unwrap(),
        Lookup::Bypass
    ));
    drop(lease);
    // ...and once it is let go, the next lookup drops it and admits afresh.
    assert!(matches!(
        cache.lookup(key(45), &meta(&a), 5).unwrap(),
        Lookup::Partial(_)
    ));
}

#[test]
fn crc_scrub_forgets_a_damaged_chunk_of_an_unfinished_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 100 * MIB);
    let a = data(9 * MIB, 44);
    let Lookup::Partial(lease) = cache.lookup(key(44), &meta(&a), 1).unwrap() else {
        panic!()
    };
    lease.claim(0).unwrap().commit(chunk_of(&a, 0)).unwrap();
    lease.claim(1).unwrap().commit(chunk_of(&a, 1)).unwrap();
    let path = dir.path().join("data").join(hex::encode(key(44)));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[!a[(4 * MIB + 1) as usize]], 4 * MIB + 1)
        .unwrap();
    assert_eq!(cache.scrub(10).unwrap().bad, 1);
    assert_eq!(lease.chunk(1), Some(ChunkState::Missing));
    lease.claim(1).unwrap().commit(chunk_of(&a, 1)).unwrap();
    assert_eq!(
        lease.claim(2).unwrap().commit(chunk_of(&a, 2)).unwrap(),
        Committed::Complete
    );
}

#[test]
fn evict_an_outstanding_claim_holds_the_entry_like_a_lease() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 100 * MIB);
    let a = data(9 * MIB, 45);
    let Lookup::Partial(lease) = cache.lookup(key(45), &meta(&a), 1).unwrap() else {
        panic!()
    };
    let claim = lease.claim(0).unwrap();
    drop(lease);
    assert!(matches!(cache.evict(&key(45)), Err(CacheError::InUse)));
    assert_eq!(claim.commit(chunk_of(&a, 0)).unwrap(), Committed::Chunk);
    cache.evict(&key(45)).unwrap();
}

#[test]
fn crash_between_the_last_chunk_and_the_hash_check_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let a = data(9 * MIB, 46);
    {
        let cache = open(dir.path(), 100 * MIB);
        fill(&cache, key(46), &a);
    }
    // Put the record back to `filling`, as a crash before the complete
    // record was written leaves it.
    {
        let db = redb::Database::create(dir.path().join("index.redb")).unwrap();
        let def: redb::TableDefinition<&[u8; 16], &[u8]> = redb::TableDefinition::new("entries");
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(def).unwrap();
            let mut r = glance_cache::format::EntryRecord::decode(
                t.get(&key(46)).unwrap().unwrap().value(),
            )
            .unwrap();
            r.state = State::Filling;
            t.insert(&key(46), r.encode().as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let cache = open(dir.path(), 100 * MIB);
    assert!(matches!(
        cache.lookup(key(46), &meta(&a), 2).unwrap(),
        Lookup::Hit(_)
    ));
}

#[test]
fn an_empty_image_is_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 100 * MIB);
    assert!(matches!(
        cache.lookup(key(47), &meta(&[]), 1).unwrap(),
        Lookup::Bypass
    ));
    assert!(cache.list().is_empty());
}

#[test]
fn evict_prune_to_a_target_skips_leased_entries() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 100 * MIB);
    let imgs: Vec<Vec<u8>> = (0..5).map(|n| data(5 * MIB, 50 + n)).collect();
    for (n, img) in imgs.iter().enumerate() {
        fill(&cache, key(50 + n as u8), img);
    }
    let Lookup::Hit(held) = cache.lookup(key(50), &meta(&imgs[0]), 9).unwrap() else {
        panic!()
    };
    let gone = cache.prune(5 * MIB).unwrap();
    assert_eq!(gone, 4);
    assert_eq!(cache.stats().bytes_used, 5 * MIB);
    assert_eq!(
        cache.list().iter().map(|e| e.key).collect::<Vec<_>>(),
        vec![key(50)]
    );
    drop(held);
    assert_eq!(cache.prune(0).unwrap(), 1);
    assert!(
        std::fs::read_dir(dir.path().join("data"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn present_chunks_map_and_the_map_holds_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 100 * MIB);
    let a = data(6 * MIB + 1, 60);
    let Lookup::Partial(lease) = cache.lookup(key(60), &meta(&a), 1).unwrap() else {
        panic!()
    };
    assert!(matches!(
        lease.map_present(0, 1),
        Err(CacheError::NotComplete)
    ));
    lease.claim(1).unwrap().commit(chunk_of(&a, 1)).unwrap();
    // Chunk 1 alone is present: a range reaching into chunk 0 is refused.
    let cs = u64::from(CHUNK);
    assert!(lease.map_present(cs - 1, 2).is_err());
    let tail = lease.map_present(cs + 3, a.len() as u64 - cs - 3).unwrap();
    assert_eq!(&tail[..], &a[cs as usize + 3..]);
    drop(tail);
    lease.claim(0).unwrap().commit(chunk_of(&a, 0)).unwrap();
    let whole = lease.map_present(0, a.len() as u64).unwrap();
    assert_eq!(&whole[..], &a[..]);
    assert!(
        lease.map_present(1, a.len() as u64).is_err(),
        "past the end"
    );
    assert!(matches!(cache.evict(&key(60)), Err(CacheError::InUse)));
    drop(whole);
    drop(lease);
    cache.evict(&key(60)).unwrap();
}

#[test]
fn list_and_stats_report_the_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 100 * MIB);
    let a = data(9 * MIB, 61);
    fill(&cache, key(61), &a);
    let b = data(9 * MIB, 62);
    let Lookup::Partial(lease) = cache.lookup(key(62), &meta(&b), 7).unwrap() else {
        panic!()
    };
    lease.claim(0).unwrap().commit(chunk_of(&b, 0)).unwrap();
    let list = cache.list();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0].key, list[0].state, list[0].bytes_present),
        (key(61), State::Complete, 9 * MIB)
    );
    assert_eq!(
        (
            list[1].key,
            list[1].state,
            list[1].bytes_present,
            list[1].last_access
        ),
        (key(62), State::Filling, 4 * MIB, 7)
    );
    let s = cache.stats();
    assert_eq!(
        (s.bytes_used, s.bytes_limit, s.misses),
        (18 * MIB, 100 * MIB, 2)
    );
}

#[test]
fn evict_the_size_limit_holds_under_a_concurrent_burst_of_reservations() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 40 * MIB);
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let cache = cache.clone();
            s.spawn(move || {
                let mut held = Vec::new();
                for n in 0..12u8 {
                    let k = t * 16 + n;
                    let bytes = data(u64::from(n % 5 + 1) * MIB, k);
                    if let Lookup::Partial(l) = cache.lookup(key(k), &meta(&bytes), 1).unwrap() {
                        // Keep some leases to pin entries while others reserve.
                        if n % 3 == 0 {
                            held.push(l);
                        }
                    }
                    assert!(cache.stats().bytes_used <= 40 * MIB);
                }
            });
        }
    });
    let listed: u64 = cache.list().iter().map(|e| e.size).sum();
    assert!(listed <= 40 * MIB, "{listed}");
    assert_eq!(listed, cache.stats().bytes_used);
}

#[test]
fn lookup_present_finds_only_what_is_there_and_never_admits() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 100 * MIB);
    let a = data(5 * MIB, 70);
    assert!(cache.lookup_present(key(70), &meta(&a), 1).is_none());
    assert!(cache.list().is_empty(), "lookup_present reserved space");
    fill(&cache, key(70), &a);
    assert!(matches!(
        cache.lookup_present(key(70), &meta(&a), 2),
        Some(Lookup::Hit(_))
    ));
    // Other hashes under the same id: left to `lookup` to replace.
    let b = data(5 * MIB, 71);
    assert!(cache.lookup_present(key(70), &meta(&b), 3).is_none());
    assert_eq!(cache.stats().hits, 1);
}
