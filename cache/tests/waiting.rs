//! Readers waiting for chunks being filled, across monoio threads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::meta;

use std::sync::Arc;
use std::time::Duration;

use glance_cache::{Cache, CacheConfig, CacheError, ChunkState, Lookup};

const CHUNK: u32 = 4 << 20;

fn bytes(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 20) as u8)
        .collect()
}

fn open(dir: &std::path::Path) -> Cache {
    Cache::open(CacheConfig {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 30,
        chunk_size: CHUNK,
        faults: None,
    })
    .unwrap()
}

/// Reads the whole image through a lease, waiting for each chunk.
async fn read_all(cache: Cache, image: Arc<Vec<u8>>) -> Vec<u8> {
    let lease = match cache.lookup([7; 16], &meta(&image), 1).unwrap() {
        Lookup::Hit(l) | Lookup::Partial(l) => l,
        Lookup::Bypass => panic!("bypass"),
    };
    let mut out = Vec::with_capacity(image.len());
    for i in 0..lease.record().chunk_count() {
        loop {
            match lease.wait(i).await.unwrap() {
                ChunkState::Present => break,
                ChunkState::Missing => monoio::time::sleep(Duration::from_millis(1)).await,
                ChunkState::Filling => unreachable!("wait returns only when not filling"),
            }
        }
        out.extend(lease.read_chunk(i).unwrap().unwrap());
    }
    out
}

#[test]
fn concurrency_64_readers_on_2_threads_get_identical_bytes_while_one_filler_fills() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let image = Arc::new(bytes(24 << 20));
    // The filler claims every chunk first, so readers can only wait.
    let Lookup::Partial(fill_lease) = cache.lookup([7; 16], &meta(&image), 1).unwrap() else {
        panic!()
    };
    let claims: Vec<_> = (0..6).map(|i| fill_lease.claim(i).unwrap()).collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (cache, image) = (cache.clone(), Arc::clone(&image));
            std::thread::spawn(move || {
                let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                    .enable_timer()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let tasks: Vec<_> = (0..32)
                        .map(|_| monoio::spawn(read_all(cache.clone(), Arc::clone(&image))))
                        .collect();
                    let mut results = Vec::new();
                    for t in tasks {
                        results.push(t.await);
                    }
                    results
                })
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    for claim in claims {
        let i = claim.chunk() as usize;
        let end = ((i + 1) * CHUNK as usize).min(image.len());
        claim.commit(&image[i * CHUNK as usize..end]).unwrap();
    }
    let mut readers_done = 0;
    for r in readers {
        for got in r.join().unwrap() {
            assert!(got == *image, "a reader got different bytes");
            readers_done += 1;
        }
    }
    assert_eq!(readers_done, 64);
    assert!(fill_lease.is_complete());
}

#[test]
fn concurrency_a_waiter_sees_missing_when_the_filler_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let image = bytes(8 << 20);
    let Lookup::Partial(lease) = cache.lookup([8; 16], &meta(&image), 1).unwrap() else {
        panic!()
    };
    let claim = lease.claim(1).unwrap();
    let c2 = cache.clone();
    let m = meta(&image);
    let waiter = std::thread::spawn(move || {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            let Lookup::Partial(l) = c2.lookup([8; 16], &m, 1).unwrap() else {
                panic!()
            };
            l.wait(1).await.unwrap()
        })
    });
    std::thread::sleep(Duration::from_millis(50));
    drop(claim);
    assert_eq!(waiter.join().unwrap(), ChunkState::Missing);
}

#[test]
fn concurrency_a_cancelled_wait_leaves_no_waiter_behind() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let image = bytes(4 << 20);
    let Lookup::Partial(lease) = cache.lookup([9; 16], &meta(&image), 1).unwrap() else {
        panic!()
    };
    let claim = lease.claim(0).unwrap();
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        // More cancelled waits than the waiter limit: each withdraws itself.
        for _ in 0..(glance_cache::MAX_WAITERS + 10) {
            let r = monoio::time::timeout(Duration::from_micros(1), lease.wait(0)).await;
            assert!(r.is_err(), "the chunk is still filling");
        }
        // A new wait is still accepted, and completes when the chunk lands.
        let w = lease.wait(0);
        claim.commit(&image).unwrap();
        assert_eq!(w.await.unwrap(), ChunkState::Present);
    });
}

#[test]
fn concurrency_waiters_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let image = bytes(4 << 20);
    let Lookup::Partial(lease) = cache.lookup([10; 16], &meta(&image), 1).unwrap() else {
        panic!()
    };
    let _claim = lease.claim(0).unwrap();
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut pending = Vec::new();
        for _ in 0..glance_cache::MAX_WAITERS {
            let mut w = Box::pin(lease.wait(0));
            assert!(futures_poll_once(w.as_mut()).is_none());
            pending.push(w);
        }
        let mut extra = Box::pin(lease.wait(0));
        match futures_poll_once(extra.as_mut()) {
            Some(Err(CacheError::TooManyWaiters)) => {}
            other => panic!("expected TooManyWaiters, got {other:?}"),
        }
    });
}

/// Polls a future once with a no-op waker.
fn futures_poll_once<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match f.poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}
