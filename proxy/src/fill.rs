//! Serving through the cache: a hit goes out with sendfile from the cache
//! file; a miss is served while it fills, chunk by chunk, each chunk fetched
//! from the backend exactly once whoever asks (the reader that finds it
//! missing claims it; every other reader, on any thread, waits for it);
//! when the cache cannot admit the image, it streams through uncached.
//!
//! Each claimed chunk is fetched and committed by a task of its own, so a
//! fill finishes even when the client that started it goes away. A reader
//! also claims up to the configured readahead past its position, so several
//! chunks come from the backend at once (bounded per thread): a backend that
//! limits each connection's rate is read in parallel.
//!
//! A backend that fails mid-response cuts the response before its
//! `Content-Length` (a short body, never a complete-looking lie); the chunks
//! that landed stay, and a later request resumes from them. A download of
//! the whole image holds back its last byte until the image's hashes are
//! checked: when the bytes turn out not to match the link, the entry is
//! thrown away and the response is cut one byte short, so no client ever
//! receives a complete-looking wrong image (clients verify end to end too,
//! as Glance's do). A range of the image cannot be checked on its own and is
//! sent as the backend gives it.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glance_cache::{ChunkState, Claim, Committed, ImageMeta, Lease, Lookup};
use glance_link::{LinkParams, StoreId, VerifiedLink};

use crate::clock;
use crate::conn::Io;
use crate::image::{Answer, send_body, write_head};
use crate::isolate::{CatchUnwind, panic_message};
use crate::metrics::{CoreMetrics, FillEvent, SendPath};
use crate::origin::{FetchError, Origin};
use crate::server::Shared;
use crate::store::Store;

/// Bytes fetched per backend request when streaming through uncached.
const THROUGH_CHUNK: u64 = 4 << 20;
/// Attempts of one backend fetch (retryable failures only).
const ATTEMPTS: u32 = 3;
/// Longest one backend fetch attempt may take, whole.
const FETCH_DEADLINE: Duration = Duration::from_secs(120);
/// Longest a reader waits for a chunk being filled: longer than a fill may
/// legitimately take (its attempts, their backoff and the commit).
const WAIT_DEADLINE: Duration = Duration::from_secs(600);
/// Longest a cache operation on the blocking pool may take.
const CACHE_DEADLINE: Duration = Duration::from_secs(120);

/// One worker thread's backend connections (sockets never leave their
/// thread) and its count of chunk fills under way.
pub struct Worker {
    origins: HashMap<StoreId, Rc<Origin>>,
    fills: Cell<usize>,
    max_fills: usize,
    readahead: u64,
}

impl Worker {
    /// Connection pools for every remote store; readahead stops while
    /// `max_fills` chunk fills are under way on this thread (a reader's own
    /// chunk is always fetched), and claims at most `readahead` bytes past a
    /// reader's position.
    pub fn new(stores: &BTreeMap<StoreId, Store>, max_fills: usize, readahead: u64) -> Worker {
        let origins = stores
            .iter()
            .filter_map(|(id, s)| match s {
                Store::Remote { origin } => Some((*id, Rc::new(Origin::new(origin.clone())))),
                Store::File { .. } => None,
            })
            .collect();
        Worker {
            origins,
            fills: Cell::new(0),
            max_fills,
            readahead,
        }
    }
}

/// Counts a chunk fill as under way on its thread for as long as it lives.
struct FillSlot(Rc<Worker>);

impl FillSlot {
    fn new(worker: &Rc<Worker>) -> FillSlot {
        worker.fills.set(worker.fills.get() + 1);
        FillSlot(Rc::clone(worker))
    }
}

impl Drop for FillSlot {
    fn drop(&mut self) {
        self.0.fills.set(self.0.fills.get().saturating_sub(1));
    }
}

/// Where an image's bytes come from, independent of any client connection:
/// fill tasks outlive the request that started them.
#[derive(Clone)]
pub struct Source {
    shared: Arc<Shared>,
    worker: Rc<Worker>,
    core: usize,
    params: Rc<LinkParams>,
}

impl Source {
    /// The source of a verified link's image, on worker `core`.
    pub fn new(shared: Arc<Shared>, worker: Rc<Worker>, core: usize, params: LinkParams) -> Source {
        Source {
            shared,
            worker,
            core,
            params: Rc::new(params),
        }
    }

    fn metrics(&self) -> &CoreMetrics {
        self.shared.metrics.core(self.core)
    }

    fn fill_event(&self, event: FillEvent) {
        self.shared.metrics.fill(&self.params.store, event);
    }

    fn meta(&self) -> ImageMeta {
        ImageMeta {
            size: self.params.size,
            md5: self.params.md5,
            sha512: self.params.sha512,
        }
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Runs blocking cache work on monoio's pool, bounded in time.
pub(crate) async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> io::Result<R> {
    blocking_for(CACHE_DEADLINE, f).await
}

/// Runs blocking work that reads a whole image on monoio's pool, bounded by
/// `deadline`.
async fn blocking_for<R: Send + 'static>(
    deadline: Duration,
    f: impl FnOnce() -> R + Send + 'static,
) -> io::Result<R> {
    match monoio::time::timeout(deadline, monoio::spawn_blocking(f)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(_)) => Err(other("a cache task failed")),
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Finds or admits the image's cache entry: in memory on the event loop
/// when it exists; admission (a new file, an index commit) on the blocking pool.
async fn lookup(src: &Source) -> io::Result<Lookup> {
    let meta = src.meta();
    let key = *src.params.image_id.as_bytes();
    let now = clock::unix_now();
    if let Some(found) = src.shared.cache.lookup_present(key, &meta, now) {
        return Ok(found);
    }
    let cache = src.shared.cache.clone();
    match blocking(move || cache.lookup(key, &meta, now)).await? {
        Ok(l) => Ok(l),
        Err(e) => {
            tracing::error!(image = %src.params.image_id, error = %e, "cache lookup failed; streaming through");
            Ok(Lookup::Bypass)
        }
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
    let src = Source::new(
        io.shared.clone(),
        io.worker.clone(),
        io.core,
        link.params().clone(),
    );
    let mut sink = Sink {
        io,
        link,
        answer: a,
        head_sent: false,
    };
    let served = match lookup(&src).await? {
        Lookup::Hit(lease) => {
            src.metrics().cache(CacheOutcome::Hit);
            send_hit(&src, &mut sink, lease, a).await
        }
        Lookup::Partial(lease) => {
            src.metrics().cache(CacheOutcome::Miss);
            match walk(&src, lease, a.start, a.end, Some(&mut sink)).await {
                Ok((Walked::Done, _)) => Ok(()),
                Ok((Walked::Unwritable { from }, lease)) => {
                    tracing::warn!(image = %src.params.image_id, from, "the cache cannot write; streaming the rest through");
                    let check = match whole_image(&src, a) {
                        true => Some(hash_prefix(lease, from).await?),
                        false => None,
                    };
                    stream_through(&src, &mut sink, from, a.end, check).await
                }
                // The backend's bytes are not the image's: streaming them
                // through would hand the whole image over unchecked.
                Ok((Walked::Invalidated { .. }, _)) if whole_image(&src, a) => Err(mismatch()),
                Ok((Walked::Invalidated { from }, _)) => {
                    stream_through(&src, &mut sink, from, a.end, None).await
                }
                Err(e) => Err(e),
            }
        }
        Lookup::Bypass => {
            src.metrics().cache(CacheOutcome::Bypass);
            let check = whole_image(&src, a).then(<sha2::Sha512 as sha2::Digest>::new);
            stream_through(&src, &mut sink, a.start, a.end, check).await
        }
    };
    match served {
        Ok(()) => Ok(a.keep_alive),
        Err(e) if !sink.head_sent => {
            tracing::error!(image = %src.params.image_id, error = %e, "backend failed before any byte was sent");
            let io = sink.io;
            io.simple(502, "the image could not be read from its store\n", false)
                .await?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The error of an image whose bytes do not match its link.
fn mismatch() -> io::Error {
    other("the backend's bytes do not match the link's hashes")
}

/// Whether answer `a` carries every byte of the image (a whole download,
/// which can be checked against the link's hashes before it ends).
fn whole_image(src: &Source, a: &Answer) -> bool {
    a.start == 0 && a.end + 1 == src.params.size
}

/// Sends bytes `a.start..=a.end` of a complete entry, zero-copy. A chunk
/// not read since the cache was opened (a restart, bytes on disk the whole
/// time) is first re-read and its crc32 compared, once: a damaged chunk
/// dooms the entry, and the rest of the answer streams through from the
/// backend instead (checked against the link's hashes when it is the whole
/// image), so damaged bytes are never sent.
async fn send_hit(
    src: &Source,
    sink: &mut Sink<'_, '_>,
    lease: Lease,
    a: &Answer,
) -> io::Result<()> {
    if lease.checked(a.start, a.end) {
        sink.head().await?;
        return send_cached(sink.io, &lease, a.start, a.end - a.start + 1).await;
    }
    let cs = u64::from(lease.record().chunk_size);
    let mut lease = lease;
    for i in a.start / cs..=a.end / cs {
        let (checked, good) = blocking(move || {
            let good = lease.check_chunk(i);
            (lease, good)
        })
        .await?;
        lease = checked;
        let (from, to) = overlap(&lease, i, a.start, a.end);
        if !good.map_err(other)? {
            tracing::error!(image = %src.params.image_id, chunk = i, "a cached chunk failed its crc32; the rest comes from the backend and the entry is dropped");
            let check = match whole_image(src, a) {
                true => Some(hash_prefix(lease, from).await?),
                false => None,
            };
            return stream_through(src, sink, from, a.end, check).await;
        }
        sink.head().await?;
        send_cached(sink.io, &lease, from, to - from).await?;
    }
    Ok(())
}

/// Fills every missing chunk of an image without sending it anywhere (a
/// pre-warm). Returns once the image is complete in the cache.
pub async fn prewarm(src: Source) -> io::Result<()> {
    match lookup(&src).await? {
        Lookup::Hit(_) => Ok(()),
        Lookup::Partial(lease) => {
            let (walked, lease) = walk(&src, lease, 0, src.params.size - 1, None).await?;
            match walked {
                Walked::Done => {}
                Walked::Invalidated { .. } => return Err(mismatch()),
                Walked::Unwritable { .. } => return Err(other("the cache cannot write now")),
            }
            let (verified, _) = wait_verified(lease).await?;
            verified.then_some(()).ok_or_else(mismatch)
        }
        Lookup::Bypass => Err(other("the cache cannot admit the image now")),
    }
}

/// How long the whole-image check of `size` bytes may take: the running
/// hashes usually finish within milliseconds of the last chunk, but after a
/// restart (or a lost hasher) the image is read back and hashed whole.
fn verify_deadline(size: u64) -> Duration {
    CACHE_DEADLINE + Duration::from_secs(size / (50 << 20))
}

/// Waits until an entry whose chunks are all present is verified: `true`
/// when complete, `false` when its bytes did not match; the lease comes
/// back. The commit of its last chunk verifies it; when nobody is
/// verifying it (a failed or lost check), it is verified here.
async fn wait_verified(mut lease: Lease) -> io::Result<(bool, Lease)> {
    let deadline = std::time::Instant::now() + verify_deadline(lease.record().size);
    let mut pause = Duration::from_millis(2);
    loop {
        if lease.is_complete() {
            return Ok((true, lease));
        }
        if lease.chunk(0).is_none() {
            return Ok((false, lease));
        }
        if std::time::Instant::now() > deadline {
            return Err(other("the image was not verified in time"));
        }
        // Verifies it here unless a committer or another reader is at it
        // (then this does nothing, and the wait goes on).
        let (l, finished) = blocking_for(verify_deadline(lease.record().size), move || {
            let r = lease.finish_if_filled();
            (lease, r)
        })
        .await?;
        lease = l;
        match finished.map_err(other)? {
            Some(Committed::Invalid) => return Ok((false, lease)),
            Some(_) => continue,
            None => {}
        }
        monoio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A client receiving an answer: its head goes out once, just before the
/// first body bytes.
struct Sink<'a, 'l> {
    io: &'a mut Io,
    link: &'l VerifiedLink,
    answer: &'l Answer,
    head_sent: bool,
}

impl Sink<'_, '_> {
    async fn head(&mut self) -> io::Result<()> {
        if !self.head_sent {
            self.head_sent = true;
            write_head(self.io, self.link, self.answer).await?;
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

/// How a walk over an entry's chunks ended.
enum Walked {
    /// Every byte asked for is present (and was sent, with a sink).
    Done,
    /// The entry was thrown away (its bytes did not match the link) before
    /// byte `from` was sent.
    Invalidated { from: u64 },
    /// A chunk could not be written to the cache (a full or failing disk)
    /// before byte `from` was sent: the rest streams through.
    Unwritable { from: u64 },
}

/// Goes through the chunks holding bytes `start..=end` of a filling entry,
/// in order: fills the missing ones, waits for the ones being filled, and
/// sends each to `sink` (if any) as it lands.
async fn walk(
    src: &Source,
    lease: Lease,
    start: u64,
    end: u64,
    mut sink: Option<&mut Sink<'_, '_>>,
) -> io::Result<(Walked, Lease)> {
    let whole = start == 0 && end + 1 == src.params.size;
    // Every chunk present yet not complete: a commit failed before the
    // hashes were checked. Check them now rather than serve unverified bytes.
    let (lease, finished) = blocking(move || {
        let r = lease.finish_if_filled();
        (lease, r)
    })
    .await?;
    if finished.map_err(other)? == Some(Committed::Invalid) {
        src.metrics().invalidated();
        return Ok((Walked::Invalidated { from: start }, lease));
    }
    let cs = u64::from(lease.record().chunk_size);
    let last_chunk = (src.params.size - 1) / cs;
    let ahead = src.worker.readahead / cs;
    for i in start / cs..=end / cs {
        let from = start.max(i * cs);
        read_ahead(src, &lease, i + 1, (i + ahead).min(last_chunk));
        // Whether this reader waited for a fill of chunk `i` (its own or
        // another request's): if that fill gives up, the backend is failing.
        let mut waited = false;
        let mut claimed = false;
        loop {
            match lease.chunk(i) {
                Some(ChunkState::Present) => break,
                Some(ChunkState::Filling) => {
                    if !waited && !claimed {
                        src.metrics().coalesced();
                    }
                    waited = true;
                    match monoio::time::timeout(WAIT_DEADLINE, lease.wait(i)).await {
                        Ok(Ok(_)) => {}
                        // Thrown away while we waited: its bytes were wrong.
                        Ok(Err(glance_cache::CacheError::NotFound)) => {
                            return Ok((Walked::Invalidated { from }, lease));
                        }
                        Ok(Err(e)) => return Err(other(e)),
                        Err(_) => {
                            return Err(other("timed out waiting for another request's fill"));
                        }
                    }
                }
                // The fill this reader waited for gave up after its retries:
                // the backend is failing. Cut this response too rather than
                // retry one waiter after another; a later request resumes.
                Some(ChunkState::Missing) if waited && lease.write_failed() => {
                    return Ok((Walked::Unwritable { from }, lease));
                }
                Some(ChunkState::Missing) if waited => {
                    return Err(other("the backend failed while this chunk was filled"));
                }
                // The disk refused a chunk of this entry a moment ago:
                // fetching more to throw away would only multiply backend reads.
                Some(ChunkState::Missing) if sink.is_some() && lease.write_failed() => {
                    return Ok((Walked::Unwritable { from }, lease));
                }
                Some(ChunkState::Missing) => {
                    if let Some(claim) = lease.claim(i) {
                        // Waited for like any other fill: the chunk turns
                        // present before its commit goes on to hash and
                        // verify, which this reader need not wait for.
                        spawn_fill(src, &lease, claim)?;
                        claimed = true;
                    }
                }
                None => return Ok((Walked::Invalidated { from }, lease)),
            }
        }
        if let Some(sink) = sink.as_deref_mut() {
            let (a, b) = overlap(&lease, i, start, end);
            sink.head().await?;
            if whole && b == end + 1 {
                // The image's last byte goes out only once its hashes match.
                if b - 1 > a {
                    send_cached(sink.io, &lease, a, b - 1 - a).await?;
                }
                let (verified, checked) = wait_verified(lease).await?;
                if !verified {
                    return Err(mismatch());
                }
                send_cached(sink.io, &checked, b - 1, 1).await?;
                return Ok((Walked::Done, checked));
            }
            send_cached(sink.io, &lease, a, b - a).await?;
        }
    }
    Ok((Walked::Done, lease))
}

/// Starts fills of the missing chunks among `from..=to`, as far as this
/// thread's fill budget allows; nobody waits on them here.
fn read_ahead(src: &Source, lease: &Lease, from: u64, to: u64) {
    if from > to || lease.write_failed() {
        return;
    }
    for j in from..=to {
        if src.worker.fills.get() >= src.worker.max_fills {
            return;
        }
        if let Some(claim) = lease.claim(j) {
            // The fill goes on whoever reads the chunk.
            let _ = spawn_fill(src, lease, claim);
        }
    }
}

/// The part of chunk `i` inside `start..=end`, as `[a, b)`.
fn overlap(lease: &Lease, i: u64, start: u64, end: u64) -> (u64, u64) {
    let (cs, ce) = lease.record().chunk_range(i).unwrap_or((start, start));
    (cs.max(start), ce.min(end + 1))
}

/// Starts a task that fetches one claimed chunk from the backend and
/// commits it to the cache (write, fdatasync, index, hashes) on the blocking
/// pool. Readers learn the outcome from the chunk's state: present, missing
/// again (the fill gave up), or gone with its entry (the image's bytes did
/// not match the link).
fn spawn_fill(src: &Source, lease: &Lease, claim: Claim) -> io::Result<()> {
    let (a, b) = lease
        .record()
        .chunk_range(claim.chunk())
        .ok_or_else(|| other("chunk out of range"))?;
    let slot = FillSlot::new(&src.worker);
    let src = src.clone();
    src.fill_event(FillEvent::Started);
    monoio::spawn(async move {
        let _slot = slot;
        let chunk = claim.chunk();
        let image = src.params.image_id;
        let result = CatchUnwind::new(fill_chunk(&src, claim, a, b)).await;
        match result {
            Ok(Ok(c)) => {
                src.fill_event(FillEvent::Completed);
                if c == Committed::Invalid {
                    src.metrics().invalidated();
                    tracing::error!(%image, "backend bytes do not match the link's hashes; entry discarded");
                }
            }
            Ok(Err(e)) => {
                src.fill_event(FillEvent::Failed);
                tracing::warn!(%image, chunk, error = %e, "chunk fill failed");
            }
            Err(panic) => {
                src.fill_event(FillEvent::Failed);
                src.metrics().panicked();
                tracing::error!(%image, chunk, panic = panic_message(panic.as_ref()), "chunk fill panicked");
            }
        }
    });
    Ok(())
}

/// Fetches bytes `a..b` for a claimed chunk and commits them.
async fn fill_chunk(src: &Source, claim: Claim, a: u64, b: u64) -> io::Result<Committed> {
    let data = fetch(src, a, b - 1).await?;
    blocking(move || claim.commit(&data)).await?.map_err(other)
}

/// The sha512 of bytes `0..len` of a cache entry (already sent to a client
/// from the cache), read back on the blocking pool: the start of a whole
/// image whose rest streams through.
async fn hash_prefix(lease: Lease, len: u64) -> io::Result<sha2::Sha512> {
    use sha2::Digest as _;
    blocking_for(verify_deadline(len), move || {
        let mut hasher = sha2::Sha512::new();
        let mut buf = vec![0u8; THROUGH_CHUNK as usize];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(THROUGH_CHUNK) as usize;
            lease.file().read_exact_at(&mut buf[..n], at)?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        Ok(hasher)
    })
    .await?
}

/// Streams bytes `start..=end` from the backend without caching them. With
/// `check` (the sha512 of the image's bytes before `start`), the rest of the
/// whole image is hashed on the way and its last byte held back until the
/// sha512 matches the link's.
async fn stream_through(
    src: &Source,
    sink: &mut Sink<'_, '_>,
    start: u64,
    end: u64,
    check: Option<sha2::Sha512>,
) -> io::Result<()> {
    use sha2::Digest as _;
    let mut hasher = check;
    let mut at = start;
    while at <= end {
        let last = (at + THROUGH_CHUNK - 1).min(end);
        let mut data = fetch(src, at, last).await?;
        sink.head().await?;
        let mut held = None;
        if let Some(h) = hasher.as_mut() {
            h.update(&data);
            if last == end {
                held = data.pop();
            }
        }
        write_through(src, sink, data).await?;
        // Only once the last byte is held: taking the hasher earlier would
        // end the check before the end.
        if let Some(byte) = held
            && let Some(h) = hasher.take()
        {
            if h.finalize().as_slice() != src.params.sha512 {
                tracing::error!(image = %src.params.image_id, "backend bytes do not match the link's hashes; response cut");
                return Err(mismatch());
            }
            write_through(src, sink, vec![byte]).await?;
        }
        at = last + 1;
    }
    Ok(())
}

/// Writes fetched bytes to the client, bounded by the send timeout.
async fn write_through(src: &Source, sink: &mut Sink<'_, '_>, data: Vec<u8>) -> io::Result<()> {
    let sent = data.len() as u64;
    sink.io.write_all(data).await.0?;
    src.metrics().sent(SendPath::Copy, sent);
    Ok(())
}

/// Bytes of a cache file mapped at once by the TLS sender: a window, not
/// the whole answer, so a download holds a few MiB of mapping (and of
/// resident set), not the image.
const MAP_WINDOW: u64 = 4 << 20;

/// Sends `len` bytes of a cache entry from `start` (every chunk holding
/// them present): with sendfile on plain HTTP; on TLS, encrypted straight
/// from a read-only map of the cache file (no read into a buffer first),
/// a window at a time, a segment per socket write, with the kernel's
/// readahead asked for ahead of the encryption.
async fn send_cached(io: &mut Io, lease: &Lease, start: u64, len: u64) -> io::Result<()> {
    if io.tls.is_none() {
        return send_body(io, lease.file(), start, len).await;
    }
    let timeout = io.shared.config.http.send_timeout;
    let mut readahead = crate::image::Readahead::new(lease.file(), start, len);
    let end = start + len;
    let (mut at, mut since_yield) = (start, 0u64);
    while at < end {
        let window = lease
            .map_present(at, MAP_WINDOW.min(end - at))
            .map_err(other)?;
        for (i, segment) in window.chunks(crate::tls::SEGMENT).enumerate() {
            // Per segment, so the kernel reads ahead of the encryption,
            // not of the window: a page touched before it is read would
            // make this thread wait for the disk.
            readahead.ahead_of(at + (i * crate::tls::SEGMENT) as u64);
            let Some(session) = io.tls.as_mut() else {
                return Err(other("the TLS session is gone"));
            };
            session.encrypt(segment)?;
            match monoio::time::timeout(timeout, session.flush(&mut io.stream)).await {
                Ok(res) => res?,
                Err(_) => return Err(io::ErrorKind::TimedOut.into()),
            }
            io.metrics().sent(SendPath::Mapped, segment.len() as u64);
            since_yield += segment.len() as u64;
            if since_yield >= crate::image::FAIR_SHARE {
                since_yield = 0;
                crate::image::YieldNow(false).await;
            }
        }
        at += window.len() as u64;
    }
    Ok(())
}

/// Fetches bytes `start..=end` of the image from its store, retrying
/// retryable failures with backoff.
async fn fetch(src: &Source, start: u64, end: u64) -> io::Result<Vec<u8>> {
    let p = &src.params;
    let store = src
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
        Store::Remote { .. } => {
            let origin = src
                .worker
                .origins
                .get(&p.store)
                .ok_or_else(|| other("no origin pool for the store"))?;
            fetch_remote(origin, &object, start, end, p).await?
        }
    };
    src.shared
        .metrics
        .backend_bytes(&p.store, data.len() as u64);
    Ok(data)
}

/// One ranged GET from a remote store, retried with backoff.
async fn fetch_remote(
    origin: &Origin,
    object: &str,
    start: u64,
    end: u64,
    p: &LinkParams,
) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let attempt_result = monoio::time::timeout(
            FETCH_DEADLINE,
            origin.fetch(object, start, end, p.size, buf),
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
            Ok(()) => return Ok(buf),
            Err(e) if e.retryable() && attempt < ATTEMPTS => {
                tracing::warn!(image = %p.image_id, attempt, error = %e, "backend fetch failed; retrying");
                monoio::time::sleep(Duration::from_millis(100 << (2 * attempt))).await;
            }
            Err(e) => return Err(other(e)),
        }
    }
}

/// Reads bytes `start..=end` of a file (on the blocking pool).
fn read_range(path: &std::path::Path, start: u64, end: u64) -> io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let len = usize::try_from(end - start + 1).map_err(other)?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, start)?;
    Ok(buf)
}
