//! Hit ratio of the eviction policy (S3-FIFO) against plain LRU on a
//! synthetic image trace: a Zipf-popular catalogue of images (the base images
//! a fleet boots again and again) interleaved with a long tail of images read
//! once. Prints object and byte hit ratios per cache size; deterministic.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, HashMap};

use glance_cache::policy::S3Fifo;

/// xorshift64*: a small deterministic generator, so every run sees the same trace.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Plain LRU over byte sizes: the baseline.
struct Lru {
    capacity: u64,
    used: u64,
    clock: u64,
    by_key: HashMap<u64, (u64, u64)>,
    by_age: BTreeMap<u64, u64>,
}

impl Lru {
    fn new(capacity: u64) -> Lru {
        Lru {
            capacity,
            used: 0,
            clock: 0,
            by_key: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }
    fn access(&mut self, key: u64, size: u64) -> bool {
        self.clock += 1;
        if let Some((age, size)) = self.by_key.get(&key).copied() {
            self.by_age.remove(&age);
            self.by_age.insert(self.clock, key);
            self.by_key.insert(key, (self.clock, size));
            return true;
        }
        if size > self.capacity {
            return false;
        }
        while self.used + size > self.capacity {
            let (age, old) = self.by_age.pop_first().unwrap();
            let _ = age;
            let (_, s) = self.by_key.remove(&old).unwrap();
            self.used -= s;
        }
        self.by_age.insert(self.clock, key);
        self.by_key.insert(key, (self.clock, size));
        self.used += size;
        false
    }
}

struct Trace {
    requests: Vec<(u64, u64)>,
    total_unique_bytes: u64,
}

/// `catalogue` popular images with Zipf(alpha) popularity, sizes 256 MiB to
/// 8 GiB; one request in `one_off_every` is an image never seen before.
fn trace(len: usize, catalogue: u64, alpha: f64, one_off_every: u64, seed: u64) -> Trace {
    let mut rng = Rng(seed);
    let weights: Vec<f64> = (1..=catalogue)
        .map(|r| 1.0 / (r as f64).powf(alpha))
        .collect();
    let sum: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for w in weights {
        acc += w / sum;
        cdf.push(acc);
    }
    let mib = 1u64 << 20;
    let size_of = |key: u64| {
        // Sizes spread log-uniformly from 256 MiB to 8 GiB, fixed per image.
        let mut r = Rng(key.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let e = 8.0 + r.unit() * 5.0;
        (2f64.powf(e) as u64) * mib
    };
    let mut requests = Vec::with_capacity(len);
    let mut next_one_off = catalogue + 1;
    let mut seen = std::collections::HashSet::new();
    let mut total_unique_bytes = 0;
    for _ in 0..len {
        let key = if rng.next().is_multiple_of(one_off_every) {
            next_one_off += 1;
            next_one_off
        } else {
            let u = rng.unit();
            cdf.partition_point(|&c| c < u) as u64 + 1
        };
        let size = size_of(key);
        if seen.insert(key) {
            total_unique_bytes += size;
        }
        requests.push((key, size));
    }
    Trace {
        requests,
        total_unique_bytes,
    }
}

fn run(trace: &Trace, capacity: u64) -> ((f64, f64), (f64, f64)) {
    let mut s3 = S3Fifo::new(capacity);
    let mut lru = Lru::new(capacity);
    let (mut s3_hits, mut s3_bytes, mut lru_hits, mut lru_bytes, mut all_bytes) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for &(key, size) in &trace.requests {
        all_bytes += size;
        if s3.access(&key) {
            s3_hits += 1;
            s3_bytes += size;
        } else {
            let _ = s3.insert(key, size, |_| true);
        }
        if lru.access(key, size) {
            lru_hits += 1;
            lru_bytes += size;
        }
    }
    let n = trace.requests.len() as f64;
    (
        (s3_hits as f64 / n, s3_bytes as f64 / all_bytes as f64),
        (lru_hits as f64 / n, lru_bytes as f64 / all_bytes as f64),
    )
}

fn main() {
    // `cargo bench` passes flags such as --bench; nothing here needs them.
    let t = trace(200_000, 2_000, 0.9, 3, 0x5eed);
    let gib = 1u64 << 30;
    println!(
        "trace: {} requests, 2000 Zipf(0.9) images + one-off images every 3rd request, {:.0} GiB of distinct images",
        t.requests.len(),
        t.total_unique_bytes as f64 / gib as f64
    );
    println!("| cache | S3-FIFO hits | LRU hits | S3-FIFO byte hits | LRU byte hits |");
    println!("| --- | --- | --- | --- | --- |");
    for cache_gib in [64u64, 256, 1024, 4096] {
        let ((s3, s3b), (lru, lrub)) = run(&t, cache_gib * gib);
        println!(
            "| {cache_gib} GiB | {:.1}% | {:.1}% | {:.1}% | {:.1}% |",
            s3 * 100.0,
            lru * 100.0,
            s3b * 100.0,
            lrub * 100.0
        );
    }
}
