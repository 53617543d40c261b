//! Reading the keyring file, and other private files holding secrets: the
//! one piece of I/O in this crate.

use std::path::Path;

use crate::{Keyring, KeyringError};

/// Permission bits that must be clear on a keyring file: any access by group or others.
const FORBIDDEN_MODE_BITS: u32 = 0o077;

/// Largest private file read (a keyring of thousands of keys fits): a path
/// to a device or a huge file is refused instead of read without end.
pub const MAX_PRIVATE_FILE: u64 = 1 << 20;

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
/// access it, when it is not a regular file (a FIFO would block, a device
/// never end) or when it is larger than [`MAX_PRIVATE_FILE`].
pub fn read_private_file(path: &Path) -> Result<String, KeyringError> {
    use std::io::Read as _;
    let shown = path.display().to_string();
    let io = |source| KeyringError::Io {
        path: shown.clone(),
        source,
    };
    let invalid = |what: &str| io(std::io::Error::new(std::io::ErrorKind::InvalidInput, what));
    // Checked before opening too: opening a FIFO for reading waits for a writer.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(invalid("not a regular file"));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(invalid("not a regular file"));
    }
    check_mode(&meta, &shown)?;
    let mut text = String::new();
    file.take(MAX_PRIVATE_FILE + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_PRIVATE_FILE {
        return Err(invalid("larger than 1 MiB"));
    }
    Ok(text)
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
fn check_mode(meta: &std::fs::Metadata, shown: &str) -> Result<(), KeyringError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & FORBIDDEN_MODE_BITS != 0 {
        return Err(KeyringError::Permissions {
            path: shown.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_: &std::fs::Metadata, _: &str) -> Result<(), KeyringError> {
    Ok(())
}
