//! A storage layer that fails after N operations: whatever point a commit
//! fails at (data write, sync, index write), the cache answers with an error,
//! never a panic, and after reopening without faults it holds only right
//! bytes and can finish every image.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::meta;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use glance_cache::format::State;
use glance_cache::{Cache, CacheConfig, ChunkState, Committed, FaultHook, FaultPoint, Lookup};
use proptest::prelude::*;

fn chunk_bytes(b: &[u8], i: u64) -> &[u8] {
    common::chunk_bytes(b, i, CHUNK)
}

const CHUNK: u32 = 64 << 10;

fn image(k: u8) -> Vec<u8> {
    (0..(3 * CHUNK as usize + 500 * usize::from(k)))
        .map(|i| (i as u8) ^ k)
        .collect()
}

fn open(dir: &Path, faults: Option<FaultHook>) -> Cache {
    Cache::open(CacheConfig {
        dir: dir.to_path_buf(),
        max_bytes: 16 << 20,
        chunk_size: CHUNK,
        faults,
    })
    .unwrap()
}

/// Fills images 0..4 (image 2 out of order), tolerating errors.
fn fill_all(cache: &Cache) -> usize {
    let mut errors = 0;
    for k in 0..4u8 {
        let img = image(k);
        let lease = match cache.lookup([k; 16], &meta(&img), 1) {
            Ok(Lookup::Hit(l) | Lookup::Partial(l)) => l,
            Ok(Lookup::Bypass) => continue,
            Err(_) => {
                errors += 1;
                continue;
            }
        };
        let n = lease.record().chunk_count();
        let order: Vec<u64> = if k == 2 {
            (0..n).rev().collect()
        } else {
            (0..n).collect()
        };
        for i in order {
            if let Some(claim) = lease.claim(i)
                && claim.commit(chunk_bytes(&img, i)).is_err()
            {
                errors += 1;
                // The failed chunk is free to claim again.
                assert_ne!(lease.chunk(i), Some(ChunkState::Filling));
            }
        }
    }
    errors
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn crash_after_n_writes_leaves_a_cache_that_reopens_right(n in 0usize..45, which in 0u8..3) {
        let dir = tempfile::tempdir().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&count);
        let only = [FaultPoint::DataWrite, FaultPoint::DataSync, FaultPoint::IndexWrite][which as usize];
        // Every operation of the chosen kind after the n-th fails, as a disk
        // that died (or a process that stopped) would leave things.
        let hook: FaultHook = Arc::new(move |p| {
            if p == only && c.fetch_add(1, Ordering::SeqCst) >= n {
                Err(std::io::Error::other("injected fault"))
            } else {
                Ok(())
            }
        });
        {
            let cache = open(dir.path(), Some(hook));
            let errors = fill_all(&cache);
            prop_assert!(count.load(Ordering::SeqCst) <= n || errors > 0);
        }
        let cache = open(dir.path(), None);
        for info in cache.list() {
            let k = info.key[0];
            let img = image(k);
            let (Lookup::Hit(l) | Lookup::Partial(l)) = cache.lookup(info.key, &meta(&img), 2).unwrap() else {
                panic!("listed entry missing");
            };
            for i in 0..l.record().chunk_count() {
                if l.chunk(i) == Some(ChunkState::Present) {
                    prop_assert_eq!(l.read_chunk(i).unwrap().unwrap(), chunk_bytes(&img, i).to_vec());
                }
            }
            if info.state == State::Complete {
                prop_assert!((0..l.record().chunk_count()).all(|i| l.chunk(i) == Some(ChunkState::Present)));
            }
        }
        // Without faults, every image can be finished.
        prop_assert_eq!(fill_all(&cache), 0);
        for k in 0..4u8 {
            let r = cache.lookup([k; 16], &meta(&image(k)), 3).unwrap();
            prop_assert!(matches!(r, Lookup::Hit(_)), "image {} not complete", k);
        }
    }
}

#[test]
fn a_failed_commit_frees_the_chunk_for_another_filler() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicUsize::new(1));
    let f = Arc::clone(&fail);
    let hook: FaultHook = Arc::new(move |p| {
        if p == FaultPoint::DataSync && f.swap(0, Ordering::SeqCst) == 1 {
            Err(std::io::Error::other("EIO"))
        } else {
            Ok(())
        }
    });
    let cache = open(dir.path(), Some(hook));
    let img = image(1);
    let Lookup::Partial(lease) = cache.lookup([1; 16], &meta(&img), 1).unwrap() else {
        panic!()
    };
    let err = lease
        .claim(0)
        .unwrap()
        .commit(chunk_bytes(&img, 0))
        .unwrap_err();
    assert!(err.to_string().contains("EIO"), "{err}");
    assert_eq!(lease.chunk(0), Some(ChunkState::Missing));
    // The failure is told to the entry's readers and counted; new images
    // stream through for a while (the disk may be full)...
    assert!(lease.write_failed());
    assert_eq!(cache.stats().write_failures, 1);
    let other = image(2);
    assert!(matches!(
        cache.lookup([2; 16], &meta(&other), 1).unwrap(),
        Lookup::Bypass
    ));
    // ...while the entry under way can still be filled.
    assert_eq!(
        lease
            .claim(0)
            .unwrap()
            .commit(chunk_bytes(&img, 0))
            .unwrap(),
        Committed::Chunk
    );
}
