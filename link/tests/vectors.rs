//! Checks the test vectors published in `docs/signed-links.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::IpAddr;

use glance_link::{
    KeyId, Keyring, LinkParams, LinkRequest, Rejection, Secret, SignedLink, StoreId,
    canonical_string, parse_image_id,
};

const DOC: &str = include_str!("../../docs/signed-links.md");

struct Vector {
    input: HashMap<String, String>,
    canonical: String,
    link: String,
}

/// The fenced blocks of the doc whose info string is `info`, in order.
fn blocks(info: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in DOC.lines() {
        match &mut current {
            None if line == format!("```{info}") => current = Some(Vec::new()),
            Some(lines) if line == "```" => {
                out.push(lines.join("\n"));
                current = None;
            }
            Some(lines) => lines.push(line),
            None => {}
        }
    }
    out
}

fn vectors() -> Vec<Vector> {
    let inputs = blocks("vector-input");
    let canonicals = blocks("vector-canonical");
    let links = blocks("vector-link");
    assert_eq!(inputs.len(), canonicals.len());
    assert_eq!(inputs.len(), links.len());
    inputs
        .into_iter()
        .zip(canonicals)
        .zip(links)
        .map(|((input, canonical), link)| Vector {
            input: input
                .lines()
                .map(|l| {
                    let (k, v) = l.split_once(':').expect("key: value");
                    (k.to_owned(), v.trim().to_owned())
                })
                .collect(),
            canonical,
            link,
        })
        .collect()
}

fn keyring_and_params(v: &Vector) -> (Keyring, KeyId, LinkParams) {
    let kid = KeyId::new(&v.input["kid"]).unwrap();
    let toml = format!(
        "primary = \"{kid}\"\n[keys]\n{kid} = \"{}\"\n",
        v.input["secret"]
    );
    let keyring = Keyring::from_toml(&toml).unwrap();
    let hex16: [u8; 16] = hex::decode(&v.input["md5"]).unwrap().try_into().unwrap();
    let hex64: [u8; 64] = hex::decode(&v.input["sha512"]).unwrap().try_into().unwrap();
    let cidr = &v.input["cidr"];
    let params = LinkParams {
        image_id: parse_image_id(&v.input["image_id"]).unwrap(),
        store: StoreId::new(&v.input["store"]).unwrap(),
        size: v.input["size"].parse().unwrap(),
        md5: hex16,
        sha512: hex64,
        expires: v.input["expires"].parse().unwrap(),
        client_cidr: (!cidr.is_empty()).then(|| cidr.parse().unwrap()),
    };
    (keyring, kid, params)
}

#[test]
fn doc_has_at_least_four_vectors_one_with_ipv6_cidr() {
    let vs = vectors();
    assert!(vs.len() >= 4, "only {} vectors", vs.len());
    assert!(vs.iter().any(|v| v.input["cidr"].contains(':')));
}

#[test]
fn vectors_match_canonical_string_and_link() {
    for v in vectors() {
        let (keyring, kid, params) = keyring_and_params(&v);
        assert_eq!(canonical_string(&kid, &params), v.canonical);
        let link = keyring.sign(params);
        assert_eq!(format!("{}?{}", link.path(), link.query()), v.link);
        assert_eq!(
            link.url("http://stream:9393/"),
            format!("http://stream:9393{}", v.link)
        );
    }
}

#[test]
fn vector_links_verify_until_expiry_and_only_from_inside_their_cidr() {
    for v in vectors() {
        let (keyring, _, params) = keyring_and_params(&v);
        let (path, query) = v.link.split_once('?').unwrap();
        let inside: IpAddr = match params.client_cidr {
            Some(net) => net.network(),
            None => "192.0.2.7".parse().unwrap(),
        };
        let req = |method, client| LinkRequest {
            method,
            path,
            query,
            client,
        };
        let before = params.expires - 1;
        let ok = keyring.verify(&req("GET", inside), before).unwrap();
        assert_eq!(ok.params(), &params);
        assert!(keyring.verify(&req("HEAD", inside), before).is_ok());
        assert_eq!(
            keyring
                .verify(&req("GET", inside), params.expires)
                .unwrap_err(),
            Rejection::Expired
        );
        if params.client_cidr.is_some() {
            let outside: IpAddr = "198.51.100.1".parse().unwrap();
            assert_eq!(
                keyring.verify(&req("GET", outside), before).unwrap_err(),
                Rejection::ClientAddress
            );
        }
        assert_eq!(SignedLink::parse(path, query).unwrap().query(), query);
    }
}

#[test]
fn vector_secret_round_trips_through_keyring_file_format() {
    for v in vectors() {
        let (keyring, kid, _) = keyring_and_params(&v);
        let again = Keyring::from_toml(&keyring.to_toml()).unwrap();
        assert_eq!(again.primary(), &kid);
        let secret = Secret::new(
            base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                &v.input["secret"],
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(secret.to_base64url(), v.input["secret"]);
    }
}
