//! The md5 and sha512 of an upload, each computed on a blocking thread of
//! its own while the request task receives and stores the data.
//!
//! Both hashes are pure CPU (here about 1.7 s per GB for md5 and 2.5 s for
//! sha512, in software): on the request task they would cost their sum per
//! byte and hold up one of the runtime's workers for it; on threads of their
//! own an upload goes at the speed of the slower one, and the runtime keeps
//! serving. The data reaches them in large pieces (see [`PIECE_BYTES`]),
//! so the hand-over costs little next to the hashing.

use bytes::Bytes;
use md5::Digest as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Pieces queued for each hasher before the upload waits for it: this many
/// times [`PIECE_BYTES`] of memory at most per upload.
const QUEUE_PIECES: usize = 4;

/// Size of the pieces an upload is cut into for the hashers and the store.
pub const PIECE_BYTES: usize = 1 << 20;

/// A hash being computed on a blocking thread.
struct Hasher<T> {
    tx: mpsc::Sender<Bytes>,
    done: JoinHandle<T>,
}

impl<T: Send + 'static> Hasher<T> {
    fn start<D: md5::Digest + Send + 'static>(finish: fn(D) -> T) -> Hasher<T> {
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE_PIECES);
        let done = tokio::task::spawn_blocking(move || {
            let mut digest = D::new();
            while let Some(piece) = rx.blocking_recv() {
                digest.update(&piece);
            }
            finish(digest)
        });
        Hasher { tx, done }
    }
}

/// The hashes of one upload, fed piece by piece.
pub struct UploadDigests {
    md5: Hasher<[u8; 16]>,
    sha512: Hasher<[u8; 64]>,
}

/// A hasher thread is gone (it can only have panicked).
#[derive(Debug, thiserror::Error)]
#[error("the upload's hashing stopped")]
pub struct DigestError;

impl UploadDigests {
    /// Starts both hashers.
    pub fn start() -> UploadDigests {
        UploadDigests {
            md5: Hasher::start(|d: md5::Md5| d.finalize().into()),
            sha512: Hasher::start(|d: sha2::Sha512| d.finalize().into()),
        }
    }

    /// Hands `piece` to both hashers; waits while either is
    /// [`QUEUE_PIECES`] behind.
    pub async fn update(&self, piece: &Bytes) -> Result<(), DigestError> {
        self.md5
            .tx
            .send(piece.clone())
            .await
            .map_err(|_| DigestError)?;
        self.sha512
            .tx
            .send(piece.clone())
            .await
            .map_err(|_| DigestError)
    }

    /// The md5 and sha512 of everything fed, in hex.
    pub async fn finish(self) -> Result<(String, String), DigestError> {
        let UploadDigests { md5, sha512 } = self;
        drop((md5.tx, sha512.tx));
        let md5 = md5.done.await.map_err(|_| DigestError)?;
        let sha512 = sha512.done.await.map_err(|_| DigestError)?;
        Ok((hex::encode(md5), hex::encode(sha512)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pieces_hash_as_the_whole() {
        let data: Vec<u8> = (0..3 * PIECE_BYTES + 12_345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let d = UploadDigests::start();
        for piece in data.chunks(PIECE_BYTES / 3) {
            d.update(&Bytes::copy_from_slice(piece)).await.unwrap();
        }
        let (md5, sha512) = d.finish().await.unwrap();
        assert_eq!(md5, hex::encode(md5::Md5::digest(&data)));
        assert_eq!(sha512, hex::encode(sha2::Sha512::digest(&data)));
    }

    #[tokio::test]
    async fn nothing_fed_is_the_empty_hash() {
        let (md5, sha512) = UploadDigests::start().finish().await.unwrap();
        assert_eq!(md5, "d41d8cd98f00b204e9800998ecf8427e");
        assert!(sha512.starts_with("cf83e1357eefb8bdf1542850d66d8007"));
    }
}
