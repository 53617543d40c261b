//! Model-based test: arbitrary sequences of lookups, chunk commits (right
//! and corrupt), lease drops, evictions, prunes, scrubs and reopenings,
//! checked after every step against what must hold whatever the eviction
//! order: the byte limit, leased entries staying, complete entries holding
//! exactly the image's bytes, and every present chunk matching the image.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::meta;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use glance_cache::format::State;
use glance_cache::{Cache, CacheConfig, ChunkState, Lease, Lookup};
use proptest::prelude::*;

fn chunk_bytes(b: &[u8], i: u64) -> &[u8] {
    common::chunk_bytes(b, i, CHUNK)
}

const CHUNK: u32 = 64 << 10;
const LIMIT: u64 = 600 << 10;
const KEYS: u8 = 6;

/// Image `k`'s bytes: sizes from 1 byte to just over 4 chunks.
fn image(k: u8) -> Vec<u8> {
    let len = [1usize, 64 << 10, 100_000, 200_000, 262_145, 150_000][k as usize];
    (0..len).map(|i| (i as u8) ^ k.wrapping_mul(37)).collect()
}

#[derive(Debug, Clone)]
enum Op {
    Lookup(u8),
    Commit(u8, u8),
    CommitCorrupt(u8, u8),
    DropLeases(u8),
    Evict(u8),
    Prune(u64),
    Scrub,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..KEYS).prop_map(Op::Lookup),
        6 => (0..KEYS, 0u8..5).prop_map(|(k, c)| Op::Commit(k, c)),
        1 => (0..KEYS, 0u8..5).prop_map(|(k, c)| Op::CommitCorrupt(k, c)),
        2 => (0..KEYS).prop_map(Op::DropLeases),
        1 => (0..KEYS).prop_map(Op::Evict),
        1 => (0..LIMIT).prop_map(Op::Prune),
        1 => Just(Op::Scrub),
        1 => Just(Op::Reopen),
    ]
}

fn open(dir: &Path) -> Cache {
    Cache::open(CacheConfig {
        dir: dir.to_path_buf(),
        max_bytes: LIMIT,
        chunk_size: CHUNK,
        faults: None,
    })
    .unwrap()
}

/// `corrupted`: entries that were given wrong bytes since they were created;
/// their unfinished chunks may hold them until the hashes throw them out.
fn check(cache: &Cache, leases: &HashMap<u8, Vec<Lease>>, corrupted: &mut HashSet<u8>) {
    let stats = cache.stats();
    assert!(
        stats.bytes_used <= LIMIT,
        "over the limit: {}",
        stats.bytes_used
    );
    let listed: Vec<[u8; 16]> = cache.list().iter().map(|e| e.key).collect();
    corrupted.retain(|k| listed.contains(&[*k; 16]));
    for (k, held) in leases {
        if !held.is_empty() {
            // A leased entry can only go by invalidation (a corrupt commit).
            let gone = !listed.contains(&[*k; 16]);
            if gone {
                assert!(stats.invalidations > 0, "leased entry {k} evicted");
            }
        }
    }
    for info in cache.list() {
        let k = info.key[0];
        let want = image(k);
        let (Lookup::Hit(l) | Lookup::Partial(l)) =
            cache.lookup(info.key, &meta(&want), 0).unwrap()
        else {
            panic!("listed entry {k} not found");
        };
        let trusted = info.state == State::Complete || !corrupted.contains(&k);
        for i in 0..l.record().chunk_count() {
            if trusted && l.chunk(i) == Some(ChunkState::Present) {
                let got = l.read_chunk(i).unwrap().unwrap();
                assert_eq!(
                    got,
                    chunk_bytes(&want, i),
                    "entry {k} chunk {i} holds other bytes"
                );
            }
        }
        if info.state == State::Complete {
            assert_eq!(info.bytes_present, want.len() as u64);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn crash_and_evict_model_holds_for_any_sequence(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = open(dir.path());
        let mut leases: HashMap<u8, Vec<Lease>> = HashMap::new();
        let mut corrupted: HashSet<u8> = HashSet::new();
        for op in ops {
            match op {
                Op::Lookup(k) => {
                    if let Lookup::Hit(l) | Lookup::Partial(l) = cache.lookup([k; 16], &meta(&image(k)), 1).unwrap() {
                        leases.entry(k).or_default().push(l);
                    }
                }
                Op::Commit(k, c) | Op::CommitCorrupt(k, c) => {
                    let corrupt = matches!(op, Op::CommitCorrupt(..));
                    if let Some(l) = leases.get(&k).and_then(|v| v.first())
                        && let Some(claim) = l.claim(u64::from(c))
                    {
                        let mut bytes = chunk_bytes(&image(k), u64::from(c)).to_vec();
                        if corrupt {
                            bytes[0] ^= 0xff;
                            corrupted.insert(k);
                        }
                        claim.commit(&bytes).unwrap();
                    }
                }
                Op::DropLeases(k) => {
                    leases.remove(&k);
                }
                Op::Evict(k) => {
                    let _ = cache.evict(&[k; 16]);
                }
                Op::Prune(target) => {
                    cache.prune(target).unwrap();
                }
                Op::Scrub => {
                    let report = cache.scrub(8).unwrap();
                    // Corrupt commits are caught by the hashes, never left as
                    // present chunks with a matching crc of wrong bytes.
                    let _ = report;
                }
                Op::Reopen => {
                    leases.clear();
                    drop(cache);
                    cache = open(dir.path());
                }
            }
            check(&cache, &leases, &mut corrupted);
        }
    }
}
