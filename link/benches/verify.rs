//! Cost of checking one link (the work glance-stream does per request) and of signing one.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use glance_link::{KeyId, Keyring, LinkParams, LinkRequest, Secret, StoreId, parse_image_id};

fn setup() -> (Keyring, LinkParams) {
    let kid = KeyId::new("2026-11-a").unwrap();
    let keyring = Keyring::new(kid, [(kid, Secret::new(vec![7; 32]).unwrap())]).unwrap();
    let params = LinkParams {
        image_id: parse_image_id("6f1c3b2a-9e8d-4f7a-b6c5-d4e3f2a1b0c9").unwrap(),
        store: StoreId::new("local").unwrap(),
        size: 21_474_836_480,
        md5: [0xab; 16],
        sha512: [0xcd; 64],
        expires: 1_798_761_600,
        client_cidr: Some("10.20.0.0/16".parse().unwrap()),
    };
    (keyring, params)
}

fn bench(c: &mut Criterion) {
    let (keyring, params) = setup();
    let link = keyring.sign(params.clone());
    let (path, query) = (link.path(), link.query());
    let client: IpAddr = "10.20.1.2".parse().unwrap();
    c.bench_function("verify", |b| {
        b.iter(|| {
            let req = LinkRequest {
                method: "GET",
                path: black_box(&path),
                query: black_box(&query),
                client,
            };
            keyring.verify(&req, black_box(1_798_000_000)).unwrap()
        })
    });
    c.bench_function("parse", |b| {
        b.iter(|| glance_link::SignedLink::parse(black_box(&path), black_box(&query)).unwrap())
    });
    c.bench_function("sign_and_format", |b| {
        b.iter(|| keyring.sign(black_box(params.clone())).query())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
