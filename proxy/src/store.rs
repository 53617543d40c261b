//! Backend stores, as far as serving needs them: open one image's object.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use uuid::Uuid;

use crate::config::StoreConfig;

/// A configured backend store.
#[derive(Debug, Clone)]
pub enum Store {
    /// A directory of objects named by image id.
    File {
        /// The directory.
        dir: PathBuf,
        /// Served through the cache.
        cached: bool,
    },
    /// An HTTP origin or an S3 bucket (always served through the cache).
    Remote {
        /// Where and how to fetch.
        origin: crate::origin::OriginConfig,
    },
}

/// Why an object could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The store has no object for the image.
    #[error("no object for the image in the store")]
    NotFound,
    /// The object's size differs from the size the link binds.
    #[error("object has {actual} bytes, the link says {expected}")]
    SizeMismatch {
        /// Size bound by the link.
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// Any other failure.
    #[error("cannot open object: {0}")]
    Io(io::Error),
}

impl Store {
    /// The store for a configuration entry.
    pub fn new(config: &StoreConfig) -> Store {
        match config {
            StoreConfig::File { path, cache } => Store::File {
                dir: path.clone(),
                cached: *cache,
            },
            StoreConfig::Http { origin }
            | StoreConfig::S3 { origin }
            | StoreConfig::Swift { origin } => Store::Remote {
                origin: origin.clone(),
            },
        }
    }

    /// Whether images of this store go through the cache.
    pub fn cached(&self) -> bool {
        match self {
            Store::File { cached, .. } => *cached,
            Store::Remote { .. } => true,
        }
    }

    /// The object name of an image: its canonical UUID text.
    pub fn object_name(image: &Uuid) -> String {
        image.hyphenated().to_string()
    }

    /// Opens the object of `image` and checks it has `size` bytes.
    ///
    /// The image id is a parsed UUID, so the file name is 36 safe characters:
    /// no path from the request reaches the file system.
    pub fn open(&self, image: &Uuid, size: u64) -> Result<File, OpenError> {
        let Store::File { dir, .. } = self else {
            return Err(OpenError::NotFound);
        };
        let mut name = Uuid::encode_buffer();
        let path = dir.join(image.hyphenated().encode_lower(&mut name));
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => OpenError::NotFound,
            _ => OpenError::Io(e),
        })?;
        let meta = file.metadata().map_err(OpenError::Io)?;
        if !meta.is_file() {
            return Err(OpenError::NotFound);
        }
        if meta.len() != size {
            return Err(OpenError::SizeMismatch {
                expected: size,
                actual: meta.len(),
            });
        }
        Ok(file)
    }
}
