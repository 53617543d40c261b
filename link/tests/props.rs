//! Property tests: round trip, tampering, expiry, CIDR, unknown keys, rotation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::IpAddr;

use glance_link::{
    KeyId, Keyring, LinkParams, LinkRequest, Rejection, Secret, SignedLink, StoreId,
};
use ipnet::IpNet;
use proptest::prelude::*;

fn kid(s: &str) -> KeyId {
    KeyId::new(s).unwrap()
}

fn secret(seed: u8) -> Secret {
    Secret::new(
        (0..32)
            .map(|i| seed.wrapping_mul(31).wrapping_add(i))
            .collect(),
    )
    .unwrap()
}

fn ring(primary: &str, ids: &[(&str, u8)]) -> Keyring {
    Keyring::new(
        kid(primary),
        ids.iter().map(|&(id, s)| (kid(id), secret(s))),
    )
    .unwrap()
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,64}"
}

fn cidr() -> impl Strategy<Value = Option<IpNet>> {
    prop_oneof![
        Just(None),
        (any::<[u8; 4]>(), 0u8..=32)
            .prop_map(|(a, len)| Some(IpNet::new(IpAddr::from(a), len).unwrap().trunc())),
        (any::<[u8; 16]>(), 0u8..=128)
            .prop_map(|(a, len)| Some(IpNet::new(IpAddr::from(a), len).unwrap().trunc())),
    ]
}

prop_compose! {
    fn params()(
        id in any::<u128>(),
        store in token(),
        size in any::<u64>(),
        md5 in any::<[u8; 16]>(),
        sha512 in proptest::collection::vec(any::<u8>(), 64),
        expires in 1u64..,
        client_cidr in cidr(),
    ) -> LinkParams {
        LinkParams {
            image_id: uuid::Uuid::from_u128(id),
            store: StoreId::new(&store).unwrap(),
            size,
            md5,
            sha512: sha512.try_into().unwrap(),
            expires,
            client_cidr,
        }
    }
}

/// An address inside `net` (or anywhere when there is none).
fn inside(net: Option<IpNet>) -> IpAddr {
    net.map_or("203.0.113.9".parse().unwrap(), |n| n.network())
}

fn verify(
    k: &Keyring,
    url_path: &str,
    query: &str,
    client: IpAddr,
    now: u64,
) -> Result<(), Rejection> {
    let req = LinkRequest {
        method: "GET",
        path: url_path,
        query,
        client,
    };
    k.verify(&req, now).map(|_| ())
}

proptest! {
    #[test]
    fn signed_links_round_trip(p in params()) {
        let k = ring("k1", &[("k1", 1)]);
        let link = k.sign(p.clone());
        let url = link.url("http://127.0.0.1:9393");
        let path_and_query = url.strip_prefix("http://127.0.0.1:9393").unwrap();
        let (path, query) = path_and_query.split_once('?').unwrap();
        let parsed = SignedLink::parse(path, query).unwrap();
        prop_assert_eq!(&parsed, &link);
        let req = LinkRequest { method: "HEAD", path, query, client: inside(p.client_cidr) };
        let verified = k.verify(&req, p.expires - 1).unwrap();
        prop_assert_eq!(verified.params(), &p);
        prop_assert_eq!(verified.key_id(), &kid("k1"));
    }

    /// Changing any byte of any parameter value, or the path, never verifies.
    #[test]
    fn tampering_with_any_field_or_the_signature_is_rejected(
        p in params(),
        which in any::<prop::sample::Index>(),
        pos in any::<prop::sample::Index>(),
        replacement in "[0-9a-f]",
    ) {
        let k = ring("k1", &[("k1", 1)]);
        let link = k.sign(p.clone());
        let path = link.path();
        let query = link.query();
        let client = inside(p.client_cidr);
        let mut pairs: Vec<(String, String)> = query
            .split('&')
            .map(|kv| { let (a, b) = kv.split_once('=').unwrap(); (a.into(), b.into()) })
            .collect();
        // Tamper with one value (or the path: index == pairs.len()), by one character.
        let n = which.index(pairs.len() + 1);
        let tampered_path;
        if n == pairs.len() {
            let mut bytes = path.clone().into_bytes();
            let i = "/v1/images/".len() + pos.index(36);
            prop_assume!(bytes[i] != b'-' && bytes[i] != replacement.as_bytes()[0]);
            bytes[i] = replacement.as_bytes()[0];
            tampered_path = String::from_utf8(bytes).unwrap();
        } else {
            tampered_path = path.clone();
            let value = &mut pairs[n].1;
            let i = pos.index(value.len());
            let old = value.as_bytes()[i];
            let new = if old == replacement.as_bytes()[0] { if old == b'1' { b'2' } else { b'1' } } else { replacement.as_bytes()[0] };
            let mut bytes = value.clone().into_bytes();
            bytes[i] = new;
            *value = String::from_utf8(bytes).unwrap();
        }
        let tampered: Vec<String> = pairs.iter().map(|(a, b)| format!("{a}={b}")).collect();
        let tampered = tampered.join("&");
        let result = verify(&k, &tampered_path, &tampered, client, p.expires - 1);
        prop_assert!(result.is_err(), "tampered link verified: {tampered_path}?{tampered}");
    }

    #[test]
    fn expiry_boundary_is_exclusive(p in params()) {
        let k = ring("k1", &[("k1", 1)]);
        let link = k.sign(p.clone());
        let c = inside(p.client_cidr);
        prop_assert_eq!(verify(&k, &link.path(), &link.query(), c, p.expires - 1), Ok(()));
        prop_assert_eq!(verify(&k, &link.path(), &link.query(), c, p.expires), Err(Rejection::Expired));
        prop_assert_eq!(verify(&k, &link.path(), &link.query(), c, u64::MAX), Err(Rejection::Expired));
    }

    #[test]
    fn parse_then_format_is_canonical(query in "[a-z0-9=&/:.]{0,300}") {
        glance_link::fuzzing::query_round_trip(query.as_bytes());
    }
}

fn sample(expires: u64, cidr: Option<&str>) -> LinkParams {
    LinkParams {
        image_id: glance_link::parse_image_id("6f1c3b2a-9e8d-4f7a-b6c5-d4e3f2a1b0c9").unwrap(),
        store: StoreId::new("local").unwrap(),
        size: 67_108_864,
        md5: [0x11; 16],
        sha512: [0x22; 64],
        expires,
        client_cidr: cidr.map(|c| c.parse().unwrap()),
    }
}

#[test]
fn tampered_signature_is_rejected_in_every_position() {
    let k = ring("k1", &[("k1", 1)]);
    let link = k.sign(sample(1000, None));
    let query = link.query();
    let sig_at = query.find("&sig=").unwrap() + 5;
    for i in sig_at..query.len() {
        let mut bytes = query.clone().into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let q = String::from_utf8(bytes).unwrap();
        let r = verify(&k, &link.path(), &q, "10.0.0.1".parse().unwrap(), 10);
        assert!(
            matches!(r, Err(Rejection::Signature | Rejection::Malformed)),
            "position {i}: {r:?}"
        );
    }
}

#[test]
fn cidr_admits_inside_and_refuses_outside_for_ipv4_and_ipv6() {
    let k = ring("k1", &[("k1", 1)]);
    let cases = [
        ("10.20.0.0/16", "10.20.255.1", "10.21.0.1"),
        ("10.20.0.0/16", "::ffff:10.20.0.9", "::ffff:10.21.0.9"),
        ("2001:db8:42::/48", "2001:db8:42:ffff::1", "2001:db8:43::1"),
        ("fd00::1/128", "fd00::1", "fd00::2"),
    ];
    for (net, good, bad) in cases {
        let link = k.sign(sample(1000, Some(net)));
        let (p, q) = (link.path(), link.query());
        assert_eq!(
            verify(&k, &p, &q, good.parse().unwrap(), 999),
            Ok(()),
            "{net} {good}"
        );
        assert_eq!(
            verify(&k, &p, &q, bad.parse().unwrap(), 999),
            Err(Rejection::ClientAddress),
            "{net} {bad}"
        );
    }
}

#[test]
fn unknown_key_id_is_rejected() {
    let signer = ring("old", &[("old", 1)]);
    let verifier = ring("new", &[("new", 2)]);
    let link = signer.sign(sample(1000, None));
    assert_eq!(
        verify(
            &verifier,
            &link.path(),
            &link.query(),
            "10.0.0.1".parse().unwrap(),
            1
        ),
        Err(Rejection::UnknownKey)
    );
}

#[test]
fn same_key_id_with_another_secret_is_a_bad_signature() {
    let signer = ring("k1", &[("k1", 1)]);
    let verifier = ring("k1", &[("k1", 9)]);
    let link = signer.sign(sample(1000, None));
    assert_eq!(
        verify(
            &verifier,
            &link.path(),
            &link.query(),
            "10.0.0.1".parse().unwrap(),
            1
        ),
        Err(Rejection::Signature)
    );
}

#[test]
fn rotation_keeps_old_links_valid_until_their_key_is_dropped() {
    let c: IpAddr = "10.0.0.1".parse().unwrap();
    // Before: only "a".
    let before = ring("a", &[("a", 1)]);
    let old_link = before.sign(sample(1000, None));
    // Step 1+2: "b" added and made primary; "a" still held.
    let during = ring("b", &[("a", 1), ("b", 2)]);
    let new_link = during.sign(sample(1000, None));
    assert_eq!(new_link.key_id(), &kid("b"));
    assert_eq!(
        verify(&during, &old_link.path(), &old_link.query(), c, 1),
        Ok(())
    );
    assert_eq!(
        verify(&during, &new_link.path(), &new_link.query(), c, 1),
        Ok(())
    );
    // Step 4: "a" dropped.
    let after = ring("b", &[("b", 2)]);
    assert_eq!(
        verify(&after, &old_link.path(), &old_link.query(), c, 1),
        Err(Rejection::UnknownKey)
    );
    assert_eq!(
        verify(&after, &new_link.path(), &new_link.query(), c, 1),
        Ok(())
    );
    // A stream node that has not yet learnt "b" refuses new links.
    assert_eq!(
        verify(&before, &new_link.path(), &new_link.query(), c, 1),
        Err(Rejection::UnknownKey)
    );
}

#[test]
fn only_get_and_head_are_covered() {
    let k = ring("k1", &[("k1", 1)]);
    let link = k.sign(sample(1000, None));
    let (path, query) = (link.path(), link.query());
    for method in ["POST", "PUT", "DELETE", "get", "OPTIONS"] {
        let req = LinkRequest {
            method,
            path: &path,
            query: &query,
            client: "10.0.0.1".parse().unwrap(),
        };
        assert_eq!(
            k.verify(&req, 1).unwrap_err(),
            Rejection::Method,
            "{method}"
        );
    }
}

#[test]
fn malformed_queries_are_rejected() {
    let k = ring("k1", &[("k1", 1)]);
    let link = k.sign(sample(1000, None));
    let (path, query) = (link.path(), link.query());
    let c: IpAddr = "10.0.0.1".parse().unwrap();
    let cases = [
        format!("{query}&kid=k1"),                        // duplicate
        format!("{query}&extra=1"),                       // unknown
        query.replace("&size=67108864", ""),              // missing
        query.replace("size=67108864", "size=067108864"), // leading zero
        query.replace("kid=k1", "kid=k%31"),              // percent-encoding
        format!("{query}&"),                              // empty pair
        query.replacen("v=1&kid=k1&", "kid=k1&v=1&", 1),  // another order
        format!("{query}&cidr={}", "1".repeat(1024)),     // too long
        String::new(),
    ];
    for q in &cases {
        assert_eq!(verify(&k, &path, q, c, 1), Err(Rejection::Malformed), "{q}");
    }
    assert_eq!(
        verify(&k, &path, &query.replace("v=1", "v=2"), c, 1),
        Err(Rejection::Version)
    );
    for bad_path in [
        "/v1/images/../../etc/passwd".to_owned(),
        path.to_uppercase(),
        format!("{path}/"),
        path.replace("/v1/", "/v2/"),
    ] {
        assert_eq!(
            verify(&k, &bad_path, &query, c, 1),
            Err(Rejection::Malformed),
            "{bad_path}"
        );
    }
}

#[test]
fn keyring_debug_never_shows_secrets() {
    let k = ring("k1", &[("k1", 1)]);
    let shown = format!("{k:?}");
    assert!(shown.contains("k1"));
    assert!(!shown.contains(&secret(1).to_base64url()));
}
