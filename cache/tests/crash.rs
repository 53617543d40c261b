//! Crash consistency with a real crash: a child process fills the cache and
//! is killed with SIGKILL at arbitrary moments; after every kill the cache
//! reopens and must hold only right bytes: every present chunk matches the
//! image, and no entry is complete unless all of it does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::meta;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use glance_cache::format::State;
use glance_cache::{Cache, CacheConfig, ChunkState, Lookup};

fn chunk_bytes(b: &[u8], i: u64) -> &[u8] {
    common::chunk_bytes(b, i, CHUNK)
}

const CHUNK: u32 = 64 << 10;
const CHILD_ENV: &str = "GLANCE_CACHE_CRASH_CHILD";

fn image(k: u8) -> Vec<u8> {
    let len = 40 * CHUNK as usize + usize::from(k) * 1000;
    (0..len)
        .map(|i| (i as u8).wrapping_add(k).rotate_left(3))
        .collect()
}

fn open(dir: &Path) -> Cache {
    Cache::open(CacheConfig {
        dir: dir.to_path_buf(),
        max_bytes: 64 << 20,
        chunk_size: CHUNK,
        faults: None,
    })
    .unwrap()
}

/// The child's work: fill images 0..8, alternating in-order and reversed
/// chunk orders, over and over (evicting to start again), until killed.
#[test]
fn crash_child_fills_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let cache = open(Path::new(&dir));
    for round in 0u64.. {
        for k in 0..8u8 {
            let img = image(k);
            let lease = match cache.lookup([k; 16], &meta(&img), round).unwrap() {
                Lookup::Hit(l) | Lookup::Partial(l) => l,
                Lookup::Bypass => continue,
            };
            let n = lease.record().chunk_count();
            let order: Vec<u64> = if (round + u64::from(k)) % 2 == 0 {
                (0..n).collect()
            } else {
                (0..n).rev().collect()
            };
            for i in order {
                if let Some(claim) = lease.claim(i) {
                    claim.commit(chunk_bytes(&img, i)).unwrap();
                }
            }
            drop(lease);
            if round % 3 == 2 {
                let _ = cache.evict(&[k; 16]);
            }
        }
    }
}

#[test]
fn crash_by_sigkill_at_random_moments_leaves_only_right_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seed = 0x1234_5678_u64;
    let mut complete_seen = 0;
    for _ in 0..12 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_fills_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(30 + seed % 250));
        child.kill().unwrap();
        child.wait().unwrap();
        let cache = open(dir.path());
        for info in cache.list() {
            let k = info.key[0];
            let img = image(k);
            let (Lookup::Hit(l) | Lookup::Partial(l)) =
                cache.lookup(info.key, &meta(&img), 0).unwrap()
            else {
                panic!("listed entry {k} missing");
            };
            let mut present = 0;
            for i in 0..l.record().chunk_count() {
                if l.chunk(i) == Some(ChunkState::Present) {
                    assert_eq!(
                        l.read_chunk(i).unwrap().unwrap(),
                        chunk_bytes(&img, i),
                        "entry {k} chunk {i}"
                    );
                    present += 1;
                }
            }
            if info.state == State::Complete {
                assert_eq!(
                    present,
                    l.record().chunk_count(),
                    "complete entry {k} missing chunks"
                );
                complete_seen += 1;
            }
        }
        assert!(cache.stats().bytes_used <= 64 << 20);
    }
    assert!(
        complete_seen > 0,
        "the child never completed an image: the test saw nothing"
    );
}
