//! Loading the keyring file: permissions, shape and clear errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;

use glance_link::{Keyring, KeyringError};

const GOOD: &str = r#"
primary = "b"
[keys]
a = "AUpHxry2pHEpkVJGCYLJ-TpiLWITLVzhgiWlW1sGUv8"
b = "JLH-AqnLqctURn65MUavw2HDszQRFwdEFT4pepw7ZsQ"
"#;

fn file_with(text: &str, mode: u32) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    f
}

#[test]
fn loads_a_private_keyring_with_several_keys() {
    let f = file_with(GOOD, 0o600);
    let k = Keyring::load(f.path()).unwrap();
    assert_eq!(k.primary().as_str(), "b");
    assert_eq!(
        k.key_ids().map(|id| id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
}

#[test]
fn refuses_a_keyring_that_group_or_others_can_read() {
    for mode in [0o640, 0o604, 0o660, 0o644, 0o610] {
        let f = file_with(GOOD, mode);
        let err = Keyring::load(f.path()).unwrap_err();
        assert!(
            matches!(err, KeyringError::Permissions { .. }),
            "{mode:o}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("{mode:o}")), "{msg}");
        assert!(msg.contains("chmod 600"), "{msg}");
    }
}

#[test]
fn missing_file_names_the_path() {
    let err = Keyring::load(std::path::Path::new("/nonexistent/keyring.toml")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/keyring.toml"),
        "{err}"
    );
}

#[test]
fn bad_keyrings_get_clear_errors() {
    let cases: [(&str, &str); 6] = [
        (
            "primary = \"x\"\n[keys]\na = \"AUpHxry2pHEpkVJGCYLJ-TpiLWITLVzhgiWlW1sGUv8\"",
            "primary \"x\" is not among",
        ),
        ("primary = \"a\"\n[keys]\na = \"c2hvcnQ\"", "at least 32"),
        (
            "primary = \"a\"\n[keys]\na = \"not base64!\"",
            "not base64url",
        ),
        ("primary = \"a\"\n[keys]\n", "no keys"),
        (
            "primary = \"a\"\nother = 1\n[keys]\na = \"AUpHxry2pHEpkVJGCYLJ-TpiLWITLVzhgiWlW1sGUv8\"",
            "unknown field",
        ),
        (
            "primary = \"a.b\"\n[keys]\n\"a.b\" = \"AUpHxry2pHEpkVJGCYLJ-TpiLWITLVzhgiWlW1sGUv8\"",
            "may only contain",
        ),
    ];
    for (text, want) in cases {
        let err = Keyring::from_toml(text).unwrap_err().to_string();
        assert!(err.contains(want), "{text:?}: {err}");
    }
}

#[test]
fn rotation_adds_a_key_then_makes_it_primary_and_old_links_verify_until_their_key_is_dropped() {
    use glance_link::{KeyId, LinkParams, LinkRequest, Secret};
    let old = Keyring::from_toml(GOOD).unwrap();
    let params = LinkParams {
        image_id: uuid::Uuid::from_u128(7),
        store: glance_link::StoreId::new("s").unwrap(),
        size: 1,
        md5: [0; 16],
        sha512: [0; 64],
        expires: 1_000,
        client_cidr: None,
    };
    let before = old.sign(params.clone());
    let new_id = KeyId::new("c").unwrap();
    let staged = old
        .with_key(new_id, Secret::new(vec![9; 32]).unwrap())
        .unwrap();
    assert_eq!(staged.primary().as_str(), "b");
    let rotated = staged.with_primary(new_id).unwrap();
    assert_eq!(rotated.primary().as_str(), "c");
    assert!(
        old.with_primary(new_id).is_err(),
        "a primary it does not hold"
    );
    let after = rotated.sign(params);
    let verify = |k: &Keyring, l: &glance_link::SignedLink| {
        k.verify(
            &LinkRequest {
                method: "GET",
                path: &l.path(),
                query: &l.query(),
                client: std::net::Ipv4Addr::LOCALHOST.into(),
            },
            10,
        )
        .map(|v| v.key_id().as_str().to_owned())
    };
    assert_eq!(verify(&rotated, &before).unwrap(), "b");
    assert_eq!(verify(&rotated, &after).unwrap(), "c");
    assert!(
        verify(&old, &after).is_err(),
        "the old keyring lacks the new key"
    );
    // The round trip through the file format keeps every key.
    let reread = Keyring::from_toml(&rotated.to_toml()).unwrap();
    assert_eq!(reread.key_ids().count(), 3);
    // Dropping keys never drops the primary.
    let dropped = rotated.without(&[KeyId::new("b").unwrap(), KeyId::new("c").unwrap()]);
    assert_eq!(
        dropped.key_ids().map(|id| id.as_str()).collect::<Vec<_>>(),
        ["a", "c"]
    );
    assert!(verify(&dropped, &before).is_err());
    assert_eq!(verify(&dropped, &after).unwrap(), "c");
    let dup = rotated.with_key(new_id, Secret::new(vec![1; 32]).unwrap());
    assert!(dup.unwrap_err().to_string().contains("already holds"));
}

#[test]
fn private_files_are_written_whole_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.toml");
    std::fs::write(&path, "old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    glance_link::write_private_file(&path, GOOD, "tmp").unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(Keyring::load(&path).unwrap().primary().as_str(), "b");
    assert!(!path.with_extension("tmp").exists());
}

#[test]
fn private_files_must_be_small_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    // A FIFO would block the reader until a writer came; a device never ends.
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o600)).unwrap();
    for path in [
        fifo.as_path(),
        std::path::Path::new("/dev/zero"),
        dir.path(),
    ] {
        let err = glance_link::read_private_file(path).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("not a regular file"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
    let big = file_with(
        &"#".repeat(glance_link::MAX_PRIVATE_FILE as usize + 1),
        0o600,
    );
    let msg = glance_link::read_private_file(big.path())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("larger than 1 MiB"), "{msg}");
    let fits = file_with(&"#".repeat(glance_link::MAX_PRIVATE_FILE as usize), 0o600);
    assert_eq!(
        glance_link::read_private_file(fits.path()).unwrap().len() as u64,
        glance_link::MAX_PRIVATE_FILE
    );
}
