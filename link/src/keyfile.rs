//! Reading the keyring file, and other private files holding secrets: the
//! one piece of I/O in this crate.

use std::path::Path;

use crate::{Keyring, KeyringError};

/// Permission bits that must be clear on a keyring file: any access by group or others.
const FORBIDDEN_MODE_BITS: u32 = 0o077;

impl Keyring {
    /// Reads and parses the keyring file at `path`.
    ///
    /// Refuses a file that group or others may access at all, before reading
    /// its contents: the secrets in it sign every download link.
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        Keyring::from_toml(&read_private_file(path)?)
    }
}

/// Reads a file that holds secrets (the keyring, a backend's secret key, an
/// admin token), refusing it before reading a byte when group or others may
/// access it.
pub fn read_private_file(path: &Path) -> Result<String, KeyringError> {
    let shown = path.display().to_string();
    let io = |source| KeyringError::Io {
        path: shown.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    check_mode(&file, &shown)?;
    std::io::read_to_string(file).map_err(io)
}

/// Writes `text` to `path` as a private file (mode 0600): into a temporary
/// file beside it (`tmp_extension`), synced, then renamed over `path`, so a
/// reader sees the old contents or the new, never a part.
pub fn write_private_file(path: &Path, text: &str, tmp_extension: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension(tmp_extension);
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut f = options.open(&tmp)?;
        #[cfg(unix)]
        {
            // An existing temporary file keeps its old mode: set it again.
            use std::os::unix::fs::PermissionsExt as _;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(unix)]
fn check_mode(file: &std::fs::File, shown: &str) -> Result<(), KeyringError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = file
        .metadata()
        .map_err(|source| KeyringError::Io {
            path: shown.to_owned(),
            source,
        })?
        .permissions()
        .mode()
        & 0o7777;
    if mode & FORBIDDEN_MODE_BITS != 0 {
        return Err(KeyringError::Permissions {
            path: shown.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_: &std::fs::File, _: &str) -> Result<(), KeyringError> {
    Ok(())
}
