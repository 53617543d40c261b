//! The md5 and sha512 of an upload, computed on the blocking pool while the
//! request task goes on receiving and storing the data.
//!
//! Both hashes are pure CPU (here about 2.0 s per GB for md5 and 2.2 s for
//! sha512, in software): on the request task they would cost their sum per
//! byte and hold up one of the runtime's workers for it. Instead two blocking
//! tasks, one per hash, take the pieces received so far, and the pieces that
//! arrive meanwhile wait for the next pair: an upload goes at the speed of
//! the slower hash, never waits for the hashes while less than
//! [`MAX_PENDING`] bytes are queued, and holds a blocking thread only while
//! there are bytes to hash, never while it waits for its client (slow
//! uploads cannot take the pool from the metadata calls that share it).

use bytes::Bytes;
use md5::Digest as _;
use tokio::task::JoinHandle;

/// Size of the pieces an upload is cut into for the hashers and the store.
pub const PIECE_BYTES: usize = 1 << 20;

/// Bytes received but not yet handed to the hashers, at most, before an
/// upload waits for them (its memory for hashing, besides the pieces being
/// hashed).
pub const MAX_PENDING: usize = 8 * PIECE_BYTES;

/// The hash states of one upload, fed piece by piece.
pub struct UploadDigests {
    /// The states, while no pieces are being hashed.
    idle: Option<(md5::Md5, sha2::Sha512)>,
    /// The pieces being hashed, each hash on a blocking task of its own.
    busy: Option<(JoinHandle<md5::Md5>, JoinHandle<sha2::Sha512>)>,
    /// Pieces received since, in order.
    pending: Vec<Bytes>,
    /// Their bytes.
    pending_bytes: usize,
}

/// A hashing task did not come back (it can only have panicked).
#[derive(Debug, thiserror::Error)]
#[error("hashing the upload failed: {0}")]
pub struct DigestError(String);

impl Default for UploadDigests {
    fn default() -> UploadDigests {
        UploadDigests {
            idle: Some((md5::Md5::new(), sha2::Sha512::new())),
            busy: None,
            pending: Vec::new(),
            pending_bytes: 0,
        }
    }
}

impl UploadDigests {
    /// Queues `piece`; hands the queue to the hashers when they are free,
    /// and waits for them only when [`MAX_PENDING`] bytes are queued.
    pub async fn update(&mut self, piece: Bytes) -> Result<(), DigestError> {
        self.pending_bytes += piece.len();
        self.pending.push(piece);
        let free = self
            .busy
            .as_ref()
            .is_none_or(|(m, s)| m.is_finished() && s.is_finished());
        if free || self.pending_bytes >= MAX_PENDING {
            self.hash_pending().await?;
        }
        Ok(())
    }

    /// Waits for the hashers, then hands them every queued piece.
    async fn hash_pending(&mut self) -> Result<(), DigestError> {
        let (mut md5, mut sha512) = self.settle().await?;
        let pieces = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let same = pieces.clone();
        self.busy = Some((
            tokio::task::spawn_blocking(move || {
                pieces.iter().for_each(|p| md5.update(p));
                md5
            }),
            tokio::task::spawn_blocking(move || {
                same.iter().for_each(|p| sha512.update(p));
                sha512
            }),
        ));
        Ok(())
    }

    /// Waits for the pieces being hashed; returns the states.
    async fn settle(&mut self) -> Result<(md5::Md5, sha2::Sha512), DigestError> {
        if let Some((md5, sha512)) = self.busy.take() {
            let joined = tokio::join!(md5, sha512);
            let md5 = joined.0.map_err(|e| DigestError(e.to_string()))?;
            let sha512 = joined.1.map_err(|e| DigestError(e.to_string()))?;
            self.idle = Some((md5, sha512));
        }
        self.idle
            .take()
            .ok_or_else(|| DigestError("the hash states were lost".into()))
    }

    /// The md5 and sha512 of everything fed, in hex.
    pub async fn finish(mut self) -> Result<(String, String), DigestError> {
        if !self.pending.is_empty() {
            self.hash_pending().await?;
        }
        let (md5, sha512) = self.settle().await?;
        Ok((hex::encode(md5.finalize()), hex::encode(sha512.finalize())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pieces_hash_as_the_whole() {
        // More than MAX_PENDING: the upload waits for the hashers at least once.
        let data: Vec<u8> = (0..MAX_PENDING + 3 * PIECE_BYTES + 12_345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut d = UploadDigests::default();
        for piece in data.chunks(PIECE_BYTES / 3) {
            d.update(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        let (md5, sha512) = d.finish().await.unwrap();
        assert_eq!(md5, hex::encode(md5::Md5::digest(&data)));
        assert_eq!(sha512, hex::encode(sha2::Sha512::digest(&data)));
    }

    #[tokio::test]
    async fn nothing_fed_is_the_empty_hash() {
        let (md5, sha512) = UploadDigests::default().finish().await.unwrap();
        assert_eq!(md5, "d41d8cd98f00b204e9800998ecf8427e");
        assert!(sha512.starts_with("cf83e1357eefb8bdf1542850d66d8007"));
    }
}
