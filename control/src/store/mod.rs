//! Where image data goes: a directory (`kind = "file"`), an S3 bucket
//! (`kind = "s3"`) or a Swift container (`kind = "swift"`). An upload
//! streams through a [`Writer`]: into a `.partial` file renamed into place,
//! an S3 multipart upload (one part in flight while the next is received:
//! at most two parts in memory), or a Swift Static Large Object whose
//! segments stream through (at most 16 MiB held), so no large image is
//! held whole in memory. A failed upload leaves nothing behind.

mod s3;
mod swift;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

pub use s3::{MAX_S3_OBJECT, S3Store, S3Writer};
pub use swift::{DEFAULT_SEGMENT_BYTES, SwiftStore, SwiftWriter};

/// Why a store operation failed (the message is for the log only).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// The store uploads go to.
#[derive(Debug, Clone)]
pub enum Store {
    /// A directory: the object of an image is the file named by its id.
    File(PathBuf),
    /// An S3 bucket: the object is the key prefix plus the image id.
    S3(Arc<S3Store>),
    /// A Swift container: the object is the prefix plus the image id.
    Swift(Arc<SwiftStore>),
}

impl Store {
    /// The kind's name, as the config writes it.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::File(_) => "file",
            Store::S3(_) => "s3",
            Store::Swift(_) => "swift",
        }
    }

    /// The backend URL of image `object`'s data, as Glance shows locations
    /// (`file://`, `s3://bucket/key`, `swift://container/object`); no
    /// credentials.
    pub fn location_url(&self, object: &str) -> String {
        match self {
            Store::File(dir) => format!("file://{}", dir.join(object).display()),
            Store::S3(s3) => format!("s3://{}/{}", s3.bucket_name(), s3.key(object)),
            Store::Swift(swift) => swift.location_url(object),
        }
    }

    /// Starts writing the object of image `object`.
    pub async fn writer(&self, object: &str) -> Result<Writer, StoreError> {
        match self {
            Store::File(dir) => {
                let partial = dir.join(format!("{object}.partial"));
                let file = tokio::fs::File::create(&partial)
                    .await
                    .map_err(|e| StoreError(format!("{}: {e}", partial.display())))?;
                Ok(Writer::File(FileWriter {
                    file: Some(file),
                    partial,
                    done: dir.join(object),
                    finished: false,
                }))
            }
            Store::S3(s3) => Ok(Writer::S3(S3Writer::new(Arc::clone(s3), object))),
            Store::Swift(swift) => swift.writer(object).map(Writer::Swift),
        }
    }

    /// Reads the object of image `object` as a stream of chunks (for
    /// copying it to another store); a remote read may take `timeout`.
    pub async fn reader(
        &self,
        object: &str,
        timeout: std::time::Duration,
    ) -> Result<ByteStream, StoreError> {
        use futures_util::StreamExt as _;
        let response = match self {
            Store::File(dir) => {
                let path = dir.join(object);
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
                return Ok(Box::pin(file_stream(file)));
            }
            Store::S3(s3) => s3.read(object, timeout).await?,
            Store::Swift(swift) => swift.read(object, timeout).await?,
        };
        Ok(Box::pin(
            response
                .bytes_stream()
                .map(|r| r.map_err(std::io::Error::other)),
        ))
    }

    /// [`Store::delete`], a failure logged (`what` says what was deleted):
    /// for clean-ups that must not fail the request they follow.
    pub async fn delete_logged(&self, object: &str, what: &str) {
        if let Err(e) = self.delete(object).await {
            tracing::warn!(object, error = %e, "cannot delete {what}");
        }
    }

    /// Removes the object of image `object` (gone already is fine).
    pub async fn delete(&self, object: &str) -> Result<(), StoreError> {
        match self {
            Store::File(dir) => match tokio::fs::remove_file(dir.join(object)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(StoreError(e.to_string())),
            },
            Store::S3(s3) => s3.delete(object).await,
            Store::Swift(swift) => swift.delete(object).await,
        }
    }
}

/// An object's bytes, as a store reads them.
pub type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static>>;

/// A file's bytes as a stream of chunks of up to 1 MiB.
pub fn file_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = bytes::BytesMut::with_capacity(1 << 20);
        match file.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), file)),
            Err(e) => Some((Err(e), file)),
        }
    })
}

/// An upload in progress. Dropped before [`Writer::commit`] (a request
/// cancelled mid-way), it removes what it wrote.
pub enum Writer {
    /// Into a file.
    File(FileWriter),
    /// Into S3.
    S3(S3Writer),
    /// Into Swift.
    Swift(SwiftWriter),
}

/// An upload into `partial`, renamed to `done` at commit.
pub struct FileWriter {
    file: Option<tokio::fs::File>,
    partial: PathBuf,
    done: PathBuf,
    finished: bool,
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if !self.finished {
            // One unlink of a file this upload made.
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

impl Writer {
    /// Appends `chunk`.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        match self {
            Writer::File(w) => {
                use tokio::io::AsyncWriteExt as _;
                let Some(file) = w.file.as_mut() else {
                    return Err(StoreError("the upload is closed".into()));
                };
                file.write_all(&chunk)
                    .await
                    .map_err(|e| StoreError(format!("{}: {e}", w.partial.display())))
            }
            Writer::S3(w) => w.write(&chunk).await,
            Writer::Swift(w) => w.write(chunk).await,
        }
    }

    /// Makes the object durable and visible under its name.
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Writer::File(mut w) => {
                let partial = w.partial.clone();
                let io = |e: std::io::Error| StoreError(format!("{}: {e}", partial.display()));
                let file = w
                    .file
                    .take()
                    .ok_or_else(|| StoreError("the upload is closed".into()))?;
                file.sync_all().await.map_err(io)?;
                drop(file);
                tokio::fs::rename(&w.partial, &w.done).await.map_err(io)?;
                w.finished = true;
                Ok(())
            }
            Writer::S3(w) => w.commit().await,
            Writer::Swift(w) => w.commit().await,
        }
    }

    /// Throws the partial object away.
    pub async fn abort(self) {
        match self {
            Writer::File(mut w) => {
                drop(w.file.take());
                let _ = tokio::fs::remove_file(&w.partial).await;
                w.finished = true;
            }
            Writer::S3(w) => w.abort().await,
            Writer::Swift(w) => w.abort().await,
        }
    }
}
