//! Serving through the cache: a hit goes out with sendfile from the cache
//! file; a miss is served while it fills, chunk by chunk, each chunk fetched
//! from the backend exactly once whoever asks (the reader that finds it
//! missing claims it; every other reader, on any thread, waits for it);
//! when the cache cannot admit the image, it streams through uncached.
//!
//! A backend that fails mid-response cuts the response before its
//! `Content-Length` (a short body, never a complete-looking lie); the chunks
//! that landed stay, and a later request resumes from them. When the bytes
//! turn out not to match the link's hashes, the entry is thrown away; the
//! client that was streaming got the backend's bytes and verifies them end
//! to end, as Glance's clients do.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::time::Duration;

use glance_cache::{ChunkState, Claim, Committed, ImageMeta, Lease, Lookup};
use glance_link::{StoreId, VerifiedLink};
use monoio::io::AsyncWriteRentExt as _;

use crate::clock;
use crate::conn::Io;
use crate::image::{Answer, send_body, write_head};
use crate::metrics::SendPath;
use crate::origin::{FetchError, Origin};
use crate::store::Store;

/// Bytes fetched per backend request when streaming through uncached.
const THROUGH_CHUNK: u64 = 4 << 20;
/// Attempts of one backend fetch (retryable failures only).
const ATTEMPTS: u32 = 3;

/// One worker thread's backend connections (sockets never leave their thread).
pub struct Worker {
    origins: HashMap<StoreId, Origin>,
}

impl Worker {
    /// Connection pools for every HTTP store.
    pub fn new(stores: &std::collections::BTreeMap<StoreId, Store>) -> Worker {
        let origins = stores
            .iter()
            .filter_map(|(id, s)| match s {
                Store::Http { origin } => Some((*id, Origin::new(origin.clone()))),
                Store::File { .. } => None,
            })
            .collect();
        Worker { origins }
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Longest one backend fetch attempt may take, whole.
const FETCH_DEADLINE: Duration = Duration::from_secs(120);
/// Longest a reader waits for a chunk another request is filling.
const WAIT_DEADLINE: Duration = Duration::from_secs(180);
/// Longest a cache operation on the blocking pool may take.
const CACHE_DEADLINE: Duration = Duration::from_secs(120);

/// Runs blocking cache work on monoio's pool, bounded in time.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> io::Result<R> {
    match monoio::time::timeout(CACHE_DEADLINE, monoio::spawn_blocking(f)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(_)) => Err(other("a cache task failed")),
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Answers a download of an image in a cached store.
///
/// The response head goes out once the first bytes are at hand, so a backend
/// that fails at once gets the client a 502, not a 200 with no body.
pub async fn serve(io: &mut Io, link: &VerifiedLink, a: &Answer) -> io::Result<bool> {
    if a.head_only {
        // Nothing to fetch for a HEAD: the link has everything the head needs.
        write_head(io, link, a).await?;
        return Ok(a.keep_alive);
    }
    let p = link.params();
    let meta = ImageMeta {
        size: p.size,
        md5: p.md5,
        sha512: p.sha512,
    };
    let key = *p.image_id.as_bytes();
    let now = clock::unix_now();
    // A cached image is found in memory, here; only admission (a new file,
    // an index commit) goes to the blocking pool.
    let lookup = match io.shared.cache.lookup_present(key, &meta, now) {
        Some(found) => found,
        None => {
            let cache = io.shared.cache.clone();
            match blocking(move || cache.lookup(key, &meta, now)).await {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => {
                    tracing::error!(image = %p.image_id, error = %e, "cache lookup failed; streaming through");
                    Lookup::Bypass
                }
                Err(e) => return Err(e),
            }
        }
    };
    let mut head = Head {
        answer: a,
        sent: false,
    };
    let served = match lookup {
        Lookup::Hit(lease) => {
            io.metrics().cache(CacheOutcome::Hit);
            head.send(io, link).await?;
            send_body(io, lease.file(), a.start, a.end - a.start + 1).await
        }
        Lookup::Partial(lease) => {
            io.metrics().cache(CacheOutcome::Miss);
            serve_filling(io, link, lease, &mut head).await
        }
        Lookup::Bypass => {
            io.metrics().cache(CacheOutcome::Bypass);
            stream_through(io, link, a.start, a.end, &mut head).await
        }
    };
    match served {
        Ok(()) => Ok(a.keep_alive),
        Err(e) if !head.sent => {
            tracing::error!(image = %p.image_id, error = %e, "backend failed before any byte was sent");
            io.simple(502, "the image could not be read from its store\n", false)
                .await?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The response head, sent once, just before the first body bytes.
struct Head<'a> {
    answer: &'a Answer,
    sent: bool,
}

impl Head<'_> {
    async fn send(&mut self, io: &mut Io, link: &VerifiedLink) -> io::Result<()> {
        if !self.sent {
            self.sent = true;
            write_head(io, link, self.answer).await?;
        }
        Ok(())
    }
}

/// How a lookup went, for the metrics.
#[derive(Debug, Clone, Copy)]
pub enum CacheOutcome {
    /// Complete in the cache.
    Hit,
    /// Being filled (by this request or another).
    Miss,
    /// Not admitted: streamed through.
    Bypass,
}

/// Sends the answer's bytes of a filling entry, filling missing chunks.
async fn serve_filling(
    io: &mut Io,
    link: &VerifiedLink,
    lease: Lease,
    head: &mut Head<'_>,
) -> io::Result<()> {
    let (start, end) = (head.answer.start, head.answer.end);
    // Every chunk present yet not complete: a commit failed before the
    // hashes were checked. Check them now rather than serve unverified bytes.
    let (lease, finished) = blocking(move || {
        let r = lease.finish_if_filled();
        (lease, r)
    })
    .await?;
    if finished.map_err(other)? == Some(Committed::Invalid) {
        io.metrics().chunk_filled(true);
        return stream_through(io, link, start, end, head).await;
    }
    let cs = u64::from(lease.record().chunk_size);
    for i in start / cs..=end / cs {
        loop {
            match lease.chunk(i) {
                Some(ChunkState::Present) => break,
                Some(ChunkState::Filling) => {
                    match monoio::time::timeout(WAIT_DEADLINE, lease.wait(i)).await {
                        Ok(r) => {
                            r.map_err(other)?;
                        }
                        Err(_) => {
                            return Err(other("timed out waiting for another request's fill"));
                        }
                    }
                }
                Some(ChunkState::Missing) => {
                    if let Some(claim) = lease.claim(i)
                        && fill_chunk(io, link, &lease, claim).await? == Committed::Invalid
                    {
                        // The bytes do not match the link: the entry is gone.
                        // This client gets the backend's bytes (it verifies
                        // them end to end); nothing of it is kept.
                        let (a, b) = overlap(&lease, i, start, end);
                        head.send(io, link).await?;
                        send_body(io, lease.file(), a, b - a).await?;
                        let rest = ((i + 1) * cs).min(end + 1);
                        if rest <= end {
                            stream_through(io, link, rest, end, head).await?;
                        }
                        return Ok(());
                    }
                }
                None => return Err(other("the cache entry was invalidated")),
            }
        }
        let (a, b) = overlap(&lease, i, start, end);
        head.send(io, link).await?;
        send_body(io, lease.file(), a, b - a).await?;
    }
    Ok(())
}

/// The part of chunk `i` inside `start..=end`, as `[a, b)`.
fn overlap(lease: &Lease, i: u64, start: u64, end: u64) -> (u64, u64) {
    let (cs, ce) = lease.record().chunk_range(i).unwrap_or((start, start));
    (cs.max(start), ce.min(end + 1))
}

/// Fetches one claimed chunk from the backend and commits it to the cache
/// (write, fdatasync, index) on the blocking pool, off the event loop.
async fn fill_chunk(
    io: &mut Io,
    link: &VerifiedLink,
    lease: &Lease,
    claim: Claim,
) -> io::Result<Committed> {
    let (a, b) = lease
        .record()
        .chunk_range(claim.chunk())
        .ok_or_else(|| other("chunk out of range"))?;
    let data = fetch(io, link, a, b - 1).await?;
    let committed = blocking(move || claim.commit(&data)).await?;
    match committed {
        Ok(c) => {
            io.metrics().chunk_filled(c == Committed::Invalid);
            if c == Committed::Invalid {
                tracing::error!(image = %link.params().image_id, "backend bytes do not match the link's hashes; entry discarded");
            }
            Ok(c)
        }
        Err(e) => Err(other(e)),
    }
}

/// Streams bytes `start..=end` from the backend without caching them.
async fn stream_through(
    io: &mut Io,
    link: &VerifiedLink,
    start: u64,
    end: u64,
    head: &mut Head<'_>,
) -> io::Result<()> {
    let mut at = start;
    while at <= end {
        let last = (at + THROUGH_CHUNK - 1).min(end);
        let data = fetch(io, link, at, last).await?;
        head.send(io, link).await?;
        let sent = data.len() as u64;
        let timeout = io.shared.config.http.send_timeout;
        match monoio::time::timeout(timeout, io.stream.write_all(data)).await {
            Ok((res, _)) => res?,
            Err(_) => return Err(io::ErrorKind::TimedOut.into()),
        };
        io.metrics().sent(SendPath::Copy, sent);
        at = last + 1;
    }
    Ok(())
}

/// Fetches bytes `start..=end` of the link's image from its store, retrying
/// retryable failures with backoff.
async fn fetch(io: &mut Io, link: &VerifiedLink, start: u64, end: u64) -> io::Result<Vec<u8>> {
    let p = link.params();
    let store = io
        .shared
        .stores
        .get(&p.store)
        .ok_or_else(|| other("store not configured"))?;
    let object = Store::object_name(&p.image_id);
    let data = match store {
        Store::File { dir, .. } => {
            let path = dir.join(&object);
            blocking(move || read_range(&path, start, end)).await??
        }
        Store::Http { .. } => {
            let origin = io
                .worker
                .origins
                .get(&p.store)
                .ok_or_else(|| other("no origin pool for the store"))?;
            let mut buf = Vec::new();
            let mut attempt = 0;
            loop {
                attempt += 1;
                let attempt_result = monoio::time::timeout(
                    FETCH_DEADLINE,
                    origin.fetch(&object, start, end, p.size, buf),
                )
                .await;
                let r = match attempt_result {
                    Ok((r, b)) => {
                        buf = b;
                        r
                    }
                    Err(_) => {
                        buf = Vec::new();
                        Err(FetchError::Timeout("the whole fetch"))
                    }
                };
                match r {
                    Ok(()) => break buf,
                    Err(e) if e.retryable() && attempt < ATTEMPTS => {
                        tracing::warn!(image = %p.image_id, attempt, error = %e, "backend fetch failed; retrying");
                        monoio::time::sleep(Duration::from_millis(100 << (2 * attempt))).await;
                    }
                    Err(e) => return Err(fetch_error(e)),
                }
            }
        }
    };
    io.metrics().backend_bytes(data.len() as u64);
    Ok(data)
}

fn fetch_error(e: FetchError) -> io::Error {
    io::Error::other(e.to_string())
}

/// Reads bytes `start..=end` of a file (on the blocking pool).
fn read_range(path: &std::path::Path, start: u64, end: u64) -> io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let len = usize::try_from(end - start + 1).map_err(other)?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, start)?;
    Ok(buf)
}
