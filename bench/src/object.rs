//! The object every scenario serves or uploads: pseudo-random bytes of a
//! given size in a work directory, and its md5 and sha512.

use std::io::{Read as _, Write as _};
use std::path::Path;

use md5::Digest as _;

/// Where a benchmark keeps its object and its servers' files: the given
/// directory, or a temporary one removed when this is dropped.
pub struct Workdir {
    /// The directory.
    pub dir: std::path::PathBuf,
    /// The object every server serves, `size` bytes.
    pub object: std::path::PathBuf,
    /// Its size.
    pub size: u64,
    /// Its md5 and sha512.
    pub hashes: ([u8; 16], [u8; 64]),
    _tmp: Option<tempfile::TempDir>,
}

impl Workdir {
    /// Prepares the directory and writes an object of `size_mib` MiB in it.
    pub fn new(dir: Option<&Path>, size_mib: u64) -> Workdir {
        Workdir::with_size(dir, size_mib << 20)
    }

    /// Prepares the directory and writes an object of `size` bytes in it.
    pub fn with_size(dir: Option<&Path>, size: u64) -> Workdir {
        let (dir, tmp) = match dir {
            Some(d) => (d.to_path_buf(), None),
            None => {
                let t = tempfile::tempdir().unwrap();
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(&dir).unwrap();
        let object = dir.join("object");
        write_object(&object, size);
        let hashes = hashes(&object);
        Workdir {
            dir,
            object,
            size,
            hashes,
            _tmp: tmp,
        }
    }
}

/// Writes `size` pseudo-random bytes to `path` (kept when already there).
pub fn write_object(path: &Path, size: u64) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == size) {
        return;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// md5 and sha512 of a file.
pub fn hashes(path: &Path) -> ([u8; 16], [u8; 64]) {
    let mut f = std::fs::File::open(path).unwrap();
    let mut md5 = md5::Md5::new();
    let mut sha = sha2::Sha512::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        sha.update(&buf[..n]);
    }
    (md5.finalize().into(), sha.finalize().into())
}
