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
