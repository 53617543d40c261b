//! The cache engine: admission with space reserved up front, one filler per
//! chunk, the durability order (data, then index), whole-image verification,
//! leases that keep an entry from eviction, and recovery on open.
//!
//! Thread-safe: the in-memory state sits behind one mutex, so monoio worker
//! threads share one `Cache`. It is never held across data-file I/O (chunk
//! writes, syncs, read-backs); index commits of state changes are made under
//! it, so they land in the order the state changed. Leases and claims carry
//! their entry's generation (its `seq`), so a late one never acts on a later
//! entry of the same image.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use md5::Digest as _;

use crate::error::CacheError;
use crate::format::{EntryRecord, Queue, State};
use crate::index::{Index, Key};
use crate::policy::S3Fifo;

/// Smallest and largest chunk sizes the cache accepts. Deployments use 4 to
/// 16 MiB (glance-stream's configuration holds to that); smaller sizes exist
/// so tests can run many fills quickly.
pub const CHUNK_SIZE_RANGE: std::ops::RangeInclusive<u32> = (64 << 10)..=(64 << 20);
/// The default chunk size (see `docs/cache-format.md` for why).
pub const DEFAULT_CHUNK_SIZE: u32 = 8 << 20;

/// How the cache is set up.
#[derive(Clone)]
pub struct CacheConfig {
    /// The cache directory.
    pub dir: PathBuf,
    /// Hard limit on the bytes of admitted images.
    pub max_bytes: u64,
    /// Chunk size (new entries; existing ones keep theirs).
    pub chunk_size: u32,
    /// Fault injection for tests: asked before each data write, data sync
    /// and index write of a chunk commit; an error it returns is what that
    /// operation returns. `None` in production.
    pub faults: Option<FaultHook>,
}

impl std::fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheConfig")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .field("chunk_size", &self.chunk_size)
            .field("faults", &self.faults.is_some())
            .finish()
    }
}

/// Where a commit consults the fault hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Before writing a chunk's bytes.
    DataWrite,
    /// Before `fdatasync` of the data file.
    DataSync,
    /// Before recording the chunk (or a state change) in the index.
    IndexWrite,
}

/// A fault hook (see [`CacheConfig::faults`]).
pub type FaultHook = Arc<dyn Fn(FaultPoint) -> std::io::Result<()> + Send + Sync>;

/// What the caller knows of an image (from its signed link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageMeta {
    /// Size in bytes.
    pub size: u64,
    /// md5 of the whole image.
    pub md5: [u8; 16],
    /// sha512 of the whole image.
    pub sha512: [u8; 64],
}

/// The state of one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    /// Not there; free to claim.
    Missing,
    /// Claimed by a filler.
    Filling,
    /// Durable and indexed.
    Present,
}

/// Counters of the cache's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lookups that found a complete entry.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Lookups that could not be admitted (stream through).
    pub bypasses: u64,
    /// Entries whose hashes did not match.
    pub invalidations: u64,
    /// Entries evicted to make room or on request.
    pub evictions: u64,
    /// Chunks found damaged by their crc32: by the scrubber, or by a
    /// reader's first read of a complete entry since the cache was opened.
    pub scrub_failures: u64,
    /// Completions verified by reading the image back (fills out of order).
    pub read_backs: u64,
    /// Chunk commits that failed to write or record their bytes (a full or
    /// failing disk).
    pub write_failures: u64,
    /// Bytes admitted (reserved or filled).
    pub bytes_used: u64,
    /// The limit.
    pub bytes_limit: u64,
}

/// What one scrub step found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Chunks re-read.
    pub checked: usize,
    /// Chunks whose crc32 no longer matched (now missing).
    pub bad: usize,
}

type ScrubTarget = (Key, u64, u32, Arc<File>, EntryRecord);

/// The next present chunk after the scrub cursor, advancing it.
fn next_scrub_target(shared: &mut Shared) -> Option<ScrubTarget> {
    let mut keys: Vec<Key> = shared.entries.keys().copied().collect();
    keys.sort_unstable();
    let (ck, cc) = shared.scrub_cursor;
    // Candidates from the cursor on, then from the start (one wrap).
    let order = keys
        .iter()
        .filter(|k| **k >= ck)
        .chain(keys.iter().filter(|k| **k < ck))
        .copied()
        .collect::<Vec<_>>();
    for (n, key) in order.iter().enumerate() {
        let entry = shared.entries.get(key)?;
        let from = if n == 0 && *key == ck { cc } else { 0 };
        let found = (from..entry.chunks.len() as u64)
            .find(|&i| entry.chunks[i as usize] == ChunkState::Present);
        if let Some(i) = found {
            let target = (
                *key,
                i,
                entry.crcs[i as usize],
                Arc::clone(&entry.file),
                entry.record.clone(),
            );
            shared.scrub_cursor = (*key, i + 1);
            return Some(target);
        }
    }
    shared.scrub_cursor = ([0; 16], 0);
    None
}

/// One entry, as the inventory shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// Image id bytes.
    pub key: Key,
    /// Size.
    pub size: u64,
    /// State.
    pub state: State,
    /// Bytes of the chunks present.
    pub bytes_present: u64,
    /// Times the entry was opened: the request or pre-warm that made it
    /// counts once, then every download.
    pub hits: u64,
    /// Last access, Unix seconds.
    pub last_access: u64,
    /// When the entry was made, Unix seconds.
    pub created: u64,
}

struct Entry {
    record: EntryRecord,
    chunks: Vec<ChunkState>,
    /// crc32 of each present chunk (0 where missing), as the index holds them.
    crcs: Vec<u32>,
    leases: usize,
    file: Arc<File>,
    /// Readers waiting for a chunk of this entry to change state, by id.
    waiters: HashMap<u64, Waker>,
    /// Hashes of the chunks committed so far in order from the first: the
    /// committer of the chunk they expect advances them, catching up on the
    /// chunks that landed out of order (read back while still in the page
    /// cache), so completion needs no whole-image read-back.
    hasher: Option<Box<SeqHasher>>,
    /// A committer holds the running hashes: it finishes the entry when it
    /// brings them to the end.
    hasher_out: bool,
    /// The whole-image check is under way.
    verifying: bool,
    /// When a commit of one of its chunks last failed to write (a full or
    /// failing disk): for [`WRITE_FAILURE_PAUSE`] after, its readers stream
    /// the rest through instead of filling or waiting.
    write_failed: Option<std::time::Instant>,
    /// Which present chunks had their crc32 checked since the cache was
    /// opened (written by this process, re-read by the scrubber or by a
    /// reader's first read).
    checked: Vec<bool>,
    /// A chunk of this complete entry failed its crc32: no new reader gets
    /// it, and the first lookup (or scrubber pass) after its readers let go
    /// drops it, to be fetched again.
    doomed: bool,
}

/// md5 and sha512 of chunks `0..next`.
struct SeqHasher {
    next: u64,
    md5: md5::Md5,
    sha512: sha2::Sha512,
}

impl Entry {
    fn new(
        record: EntryRecord,
        chunks: Vec<ChunkState>,
        crcs: Vec<u32>,
        leases: usize,
        file: Arc<File>,
    ) -> Entry {
        // Recovery re-checks the present chunks of an unfinished entry; a
        // complete one is checked by the scrubber or a reader's first read.
        let unfinished = record.state != State::Complete;
        let checked = chunks
            .iter()
            .map(|c| unfinished && *c == ChunkState::Present)
            .collect();
        Entry {
            record,
            chunks,
            crcs,
            leases,
            file,
            waiters: HashMap::new(),
            hasher: None,
            hasher_out: false,
            verifying: false,
            write_failed: None,
            checked,
            doomed: false,
        }
    }

    /// Wakes every waiter: a chunk landed, a fill gave up, or the entry went.
    fn wake_all(&mut self) {
        for (_, w) in self.waiters.drain() {
            w.wake();
        }
    }
}

/// Most chunks of one entry (a larger image is streamed through, not cached).
pub const MAX_CHUNKS: u64 = 1 << 20;

/// A lease on `key`'s entry when it is there with `meta`'s size and hashes,
/// counting the access; `None` when absent or stale.
fn lease_existing(
    inner: &Arc<Inner>,
    shared: &mut Shared,
    key: Key,
    meta: &ImageMeta,
    now: u64,
) -> Option<Lookup> {
    let entry = shared.entries.get_mut(&key)?;
    let r = &entry.record;
    if r.size != meta.size || r.md5 != meta.md5 || r.sha512 != meta.sha512 || entry.doomed {
        return None;
    }
    entry.leases += 1;
    entry.record.hits += 1;
    entry.record.last_access = now;
    let lease = Lease {
        inner: Arc::clone(inner),
        key,
        generation: entry.record.seq,
        file: Arc::clone(&entry.file),
        record: entry.record.clone(),
    };
    let complete = entry.record.state == State::Complete;
    shared.policy.access(&key);
    if complete {
        shared.stats.hits += 1;
        Some(Lookup::Hit(lease))
    } else {
        shared.stats.misses += 1;
        Some(Lookup::Partial(lease))
    }
}

/// The entry of `key` if it is still generation `generation`.
fn current<'a>(shared: &'a mut Shared, key: &Key, generation: u64) -> Option<&'a mut Entry> {
    shared
        .entries
        .get_mut(key)
        .filter(|e| e.record.seq == generation)
}

/// Most readers that may wait on one entry at once.
pub const MAX_WAITERS: usize = 4096;

pub(crate) struct Shared {
    policy: S3Fifo<Key>,
    entries: HashMap<Key, Entry>,
    seq: u64,
    stats: Stats,
    /// Where the scrubber resumes: entry key and chunk index.
    scrub_cursor: (Key, u64),
    /// When a chunk commit last failed to write: admissions pause after it.
    write_failed_at: Option<std::time::Instant>,
}

/// How long new images are not admitted after a chunk could not be written
/// (the disk may be full): they stream through uncached meanwhile.
pub const WRITE_FAILURE_PAUSE: std::time::Duration = std::time::Duration::from_secs(10);

struct Inner {
    config: CacheConfig,
    data_dir: PathBuf,
    index: Index,
    shared: Mutex<Shared>,
}

/// The cache. Cheap to clone; every clone is the same cache.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

/// What a lookup found.
pub enum Lookup {
    /// A complete, verified entry.
    Hit(Lease),
    /// An entry being filled (just reserved, or partly present).
    Partial(Lease),
    /// No room (everything evictable is in use): stream through without caching.
    Bypass,
}

/// A hold on an entry: while it lives the entry is not evicted, and its data
/// file stays open (so it is never truncated or unlinked under a reader).
pub struct Lease {
    inner: Arc<Inner>,
    key: Key,
    /// The entry's generation (its record's `seq`): a lease never acts on a
    /// later entry of the same image.
    generation: u64,
    file: Arc<File>,
    record: EntryRecord,
}

/// The right to fill one chunk; dropping it without `commit` makes the chunk
/// missing again, so another filler may claim it.
pub struct Claim {
    inner: Arc<Inner>,
    key: Key,
    /// The generation of the entry the claim was taken on; the claim also
    /// counts as a lease on it, so the entry is not evicted under a filler.
    generation: u64,
    chunk: u64,
    file: Arc<File>,
    done: bool,
}

/// What committing a chunk led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Chunk present; others still missing.
    Chunk,
    /// That was the last chunk and the image's hashes match: complete.
    Complete,
    /// That was the last chunk and the hashes did not match: the entry is
    /// invalid and its data removed.
    Invalid,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Inner {
    /// Asks the fault hook, if any.
    fn fault(&self, point: FaultPoint, path: &Path) -> Result<(), CacheError> {
        match &self.config.faults {
            Some(hook) => hook(point).map_err(io_err(path)),
            None => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic elsewhere while holding the lock leaves bookkeeping that is
        // still consistent (every update is a single assignment), so recover.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.data_dir.join(hex::encode(key))
    }

    /// Removes an entry's bookkeeping, index rows and data. The file is only
    /// unlinked, never truncated: a reader that still has it open (or
    /// mapped) keeps intact bytes.
    fn remove(&self, shared: &mut Shared, key: &Key) -> Result<(), CacheError> {
        if let Some(mut e) = shared.entries.remove(key) {
            e.wake_all();
        }
        shared.policy.remove(key);
        let indexed = self.index.remove_entry(key);
        let unlinked = match std::fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&self.path(key))(e)),
            _ => Ok(()),
        };
        indexed.and(unlinked)
    }

    /// Removes entries the policy already let go of; every one is processed
    /// before the first error is returned, so bookkeeping never drifts.
    fn remove_evicted(&self, shared: &mut Shared, victims: &[Key]) -> Result<(), CacheError> {
        let mut first_error = Ok(());
        for victim in victims {
            shared.stats.evictions += 1;
            let result = self.remove(shared, victim);
            if first_error.is_ok() {
                first_error = result;
            }
        }
        first_error
    }
}

impl Cache {
    /// Opens the cache in `config.dir`, recovering from whatever state a
    /// crash left: entries whose records or files are damaged are dropped,
    /// files without an entry removed, chunks of unfinished entries re-checked
    /// against their crc32 (a bad one is missing again).
    pub fn open(config: CacheConfig) -> Result<Cache, CacheError> {
        if !CHUNK_SIZE_RANGE.contains(&config.chunk_size) {
            return Err(CacheError::Config(format!(
                "chunk size {} is outside {}..={} bytes",
                config.chunk_size,
                CHUNK_SIZE_RANGE.start(),
                CHUNK_SIZE_RANGE.end()
            )));
        }
        let data_dir = config.dir.join("data");
        std::fs::create_dir_all(&data_dir).map_err(io_err(&data_dir))?;
        let index = Index::open(&config.dir.join("index.redb"))?;
        let inner = Inner {
            shared: Mutex::new(Shared {
                policy: S3Fifo::new(config.max_bytes),
                entries: HashMap::new(),
                seq: 0,
                scrub_cursor: ([0; 16], 0),
                write_failed_at: None,
                stats: Stats {
                    bytes_limit: config.max_bytes,
                    ..Stats::default()
                },
            }),
            config,
            data_dir,
            index,
        };
        crate::recovery::recover(&inner_view(&inner))?;
        Ok(Cache {
            inner: Arc::new(inner),
        })
    }

    /// The memory-only part of [`Cache::lookup`]: a lease on an entry that
    /// is already there with these hashes, or `None` (absent, stale, or
    /// nothing to cache), in which case `lookup` must decide. It does no I/O,
    /// so a hit can be answered on an event loop; `lookup` may create files
    /// and commit the index and belongs on a blocking thread.
    pub fn lookup_present(&self, key: Key, meta: &ImageMeta, now: u64) -> Option<Lookup> {
        let mut shared = self.inner.lock();
        lease_existing(&self.inner, &mut shared, key, meta, now)
    }

    /// Finds the entry for `key`, or reserves space for a new one.
    ///
    /// An entry whose recorded size or hashes differ from `meta` is stale
    /// (another image under the same id): it is dropped and the image
    /// admitted afresh, unless a reader holds it (then: bypass).
    pub fn lookup(&self, key: Key, meta: &ImageMeta, now: u64) -> Result<Lookup, CacheError> {
        let inner = &self.inner;
        let chunks_needed = meta.size.div_ceil(u64::from(inner.config.chunk_size));
        if meta.size == 0 || chunks_needed > MAX_CHUNKS {
            // Nothing to cache, or more chunks than one entry tracks.
            inner.lock().stats.bypasses += 1;
            return Ok(Lookup::Bypass);
        }
        let mut shared = inner.lock();
        if let Some(entry) = shared.entries.get(&key) {
            let r = &entry.record;
            let same = r.size == meta.size && r.md5 == meta.md5 && r.sha512 == meta.sha512;
            if !same || entry.doomed {
                if entry.leases > 0 {
                    shared.stats.bypasses += 1;
                    return Ok(Lookup::Bypass);
                }
                inner.remove(&mut shared, &key)?;
            }
        }
        if let Some(found) = lease_existing(inner, &mut shared, key, meta, now) {
            return Ok(found);
        }
        shared.stats.misses += 1;
        if shared
            .write_failed_at
            .is_some_and(|t| t.elapsed() < WRITE_FAILURE_PAUSE)
        {
            shared.stats.bypasses += 1;
            return Ok(Lookup::Bypass);
        }
        let admission = {
            let Shared {
                policy, entries, ..
            } = &mut *shared;
            // Entries a reader holds are never evicted.
            policy.insert(key, meta.size, |k| {
                entries.get(k).is_none_or(|e| e.leases == 0)
            })
        };
        let admission = match admission {
            Ok(a) => a,
            Err(_) => {
                shared.stats.bypasses += 1;
                return Ok(Lookup::Bypass);
            }
        };
        let evicted = inner.remove_evicted(&mut shared, &admission.evicted);
        if let Err(e) = evicted {
            if admission.admitted {
                shared.policy.remove(&key);
            }
            return Err(e);
        }
        if !admission.admitted {
            shared.stats.bypasses += 1;
            return Ok(Lookup::Bypass);
        }
        shared.seq += 1;
        let record = EntryRecord {
            state: State::Reserved,
            queue: Queue::Small,
            freq: 0,
            size: meta.size,
            chunk_size: inner.config.chunk_size,
            md5: meta.md5,
            sha512: meta.sha512,
            hits: 1,
            last_access: now,
            created: now,
            seq: shared.seq,
        };
        let path = inner.path(&key);
        let file = create_data_file(&path, meta.size);
        let file = match file {
            Ok(f) => Arc::new(f),
            Err(e) => {
                shared.policy.remove(&key);
                return Err(io_err(&path)(e));
            }
        };
        if let Err(e) = inner.index.put_entry(&key, &record) {
            shared.policy.remove(&key);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let count = record.chunk_count() as usize;
        let chunks = vec![ChunkState::Missing; count];
        let mut entry = Entry::new(record.clone(), chunks, vec![0; count], 1, Arc::clone(&file));
        entry.hasher = Some(Box::new(SeqHasher::new()));
        shared.entries.insert(key, entry);
        Ok(Lookup::Partial(Lease {
            inner: Arc::clone(inner),
            key,
            generation: record.seq,
            file,
            record,
        }))
    }

    /// Evicts one entry now; refused while a reader holds it.
    pub fn evict(&self, key: &Key) -> Result<(), CacheError> {
        let mut shared = self.inner.lock();
        match shared.entries.get(key) {
            None => Err(CacheError::NotFound),
            Some(e) if e.leases > 0 => Err(CacheError::InUse),
            Some(_) => {
                shared.stats.evictions += 1;
                self.inner.remove(&mut shared, key)
            }
        }
    }

    /// Evicts unleased entries, in policy order, until at most `target`
    /// bytes are admitted. Returns how many entries went.
    pub fn prune(&self, target: u64) -> Result<usize, CacheError> {
        let mut shared = self.inner.lock();
        let (evicted, _) = {
            let Shared {
                policy, entries, ..
            } = &mut *shared;
            policy.shrink_to(target, &mut |k| {
                entries.get(k).is_none_or(|e| e.leases == 0)
            })
        };
        self.inner.remove_evicted(&mut shared, &evicted)?;
        Ok(evicted.len())
    }

    /// Re-checks the crc32 of up to `max_chunks` present chunks, continuing
    /// where the previous call stopped and wrapping around. A chunk whose
    /// bytes no longer match is forgotten (index row dropped, entry back to
    /// filling) and will be filled again on demand. The caller sets the
    /// pace: calling this from a timer with a small budget rate-limits the
    /// disk reads it costs.
    pub fn scrub(&self, max_chunks: usize) -> Result<ScrubReport, CacheError> {
        let mut report = ScrubReport::default();
        for _ in 0..max_chunks {
            let target = {
                let mut shared = self.inner.lock();
                let Some(t) = next_scrub_target(&mut shared) else {
                    break;
                };
                t
            };
            let (key, chunk, crc, file, record) = target;
            report.checked += 1;
            let good = u32::try_from(chunk)
                .is_ok_and(|c| crate::recovery::chunk_crc_matches(&file, &record, c, crc));
            if good {
                let mut shared = self.inner.lock();
                if let Some(slot) = current(&mut shared, &key, record.seq)
                    .and_then(|e| e.checked.get_mut(chunk as usize))
                {
                    *slot = true;
                }
                continue;
            }
            report.bad += 1;
            let mut shared = self.inner.lock();
            shared.stats.scrub_failures += 1;
            let Some(entry) = current(&mut shared, &key, record.seq) else {
                continue;
            };
            if entry.record.state == State::Complete {
                // A complete entry may be mapped or read: its file is never
                // rewritten in place. Without readers it is dropped (and
                // fetched again on demand); with readers it is doomed: no
                // new reader gets it, and the next lookup drops it.
                if entry.leases == 0 {
                    shared.stats.evictions += 1;
                    self.inner.remove(&mut shared, &key)?;
                } else {
                    entry.doomed = true;
                }
                continue;
            }
            if entry.chunks.get(chunk as usize) == Some(&ChunkState::Present) {
                if let Some(slot) = entry.chunks.get_mut(chunk as usize) {
                    *slot = ChunkState::Missing;
                }
                if let Some(slot) = entry.checked.get_mut(chunk as usize) {
                    *slot = false;
                }
                // The running hashes no longer cover a complete prefix.
                entry.hasher = None;
                entry.wake_all();
                if let Ok(c) = u32::try_from(chunk) {
                    self.inner.index.drop_chunk(&key, c)?;
                }
            }
        }
        Ok(report)
    }

    /// The inventory: every entry with its state and bytes present.
    pub fn list(&self) -> Vec<EntryInfo> {
        let shared = self.inner.lock();
        let mut out: Vec<EntryInfo> = shared
            .entries
            .iter()
            .map(|(key, e)| EntryInfo {
                key: *key,
                size: e.record.size,
                state: e.record.state,
                bytes_present: (0..e.chunks.len() as u64)
                    .filter(|&i| e.chunks[i as usize] == ChunkState::Present)
                    .filter_map(|i| e.record.chunk_range(i).map(|(a, b)| b - a))
                    .sum(),
                hits: e.record.hits,
                last_access: e.record.last_access,
                created: e.record.created,
            })
            .collect();
        out.sort_by_key(|e| e.key);
        out
    }

    /// Counters and space.
    pub fn stats(&self) -> Stats {
        let shared = self.inner.lock();
        Stats {
            bytes_used: shared.policy.used(),
            ..shared.stats
        }
    }
}

/// What recovery needs of a cache being opened.
pub(crate) struct RecoveryView<'a> {
    pub index: &'a Index,
    pub data_dir: &'a Path,
    pub shared: &'a Mutex<Shared>,
}

fn inner_view(inner: &Inner) -> RecoveryView<'_> {
    RecoveryView {
        index: &inner.index,
        data_dir: &inner.data_dir,
        shared: &inner.shared,
    }
}

impl RecoveryView<'_> {
    /// Puts a recovered entry back into the bookkeeping (in FIFO order);
    /// `false` when it no longer fits under the limit.
    pub fn restore(
        &self,
        key: Key,
        record: EntryRecord,
        chunks: Vec<ChunkState>,
        crcs: Vec<u32>,
        file: File,
    ) -> bool {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.seq = shared.seq.max(record.seq);
        // Restored entries fit: they fitted when admitted, and the limit is
        // the configured one. Should it have shrunk, the newest do not come back.
        let admitted = shared
            .policy
            .insert(key, record.size, |_| false)
            .is_ok_and(|a| a.admitted);
        if admitted {
            shared
                .entries
                .insert(key, Entry::new(record, chunks, crcs, 0, Arc::new(file)));
        }
        admitted
    }
}

impl Lease {
    /// The entry's record as it was when the lease was taken.
    pub fn record(&self) -> &EntryRecord {
        &self.record
    }

    /// The data file: zero-copy senders read chunk ranges from it.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The state of chunk `i` (`None` past the end, or once the entry was
    /// invalidated).
    pub fn chunk(&self, i: u64) -> Option<ChunkState> {
        let mut shared = self.inner.lock();
        current(&mut shared, &self.key, self.generation)
            .and_then(|e| e.chunks.get(usize::try_from(i).ok()?).copied())
    }

    /// Whether every chunk holding bytes `start..=end` had its crc32 checked
    /// since the cache was opened (or was written since): such bytes can go
    /// out without reading them first.
    pub fn checked(&self, start: u64, end: u64) -> bool {
        let cs = u64::from(self.record.chunk_size);
        let mut shared = self.inner.lock();
        current(&mut shared, &self.key, self.generation).is_some_and(|e| {
            (start / cs..=end / cs).all(|i| e.checked.get(i as usize) == Some(&true))
        })
    }

    /// Re-reads chunk `i` and compares its crc32 with the recorded one,
    /// unless that was done since the cache was opened: `false` when the
    /// chunk is damaged (or gone). A damaged complete entry is doomed: no
    /// new reader gets it, and the first lookup (or scrubber pass) after its
    /// readers let go drops it, to be fetched again. Blocking: run it off
    /// the event loop.
    pub fn check_chunk(&self, i: u64) -> Result<bool, CacheError> {
        let crc = {
            let mut shared = self.inner.lock();
            let Some(e) = current(&mut shared, &self.key, self.generation) else {
                return Ok(false);
            };
            if e.checked.get(i as usize) == Some(&true) {
                return Ok(true);
            }
            match (e.chunks.get(i as usize), e.crcs.get(i as usize)) {
                (Some(ChunkState::Present), Some(crc)) => *crc,
                _ => return Ok(false),
            }
        };
        let chunk = u32::try_from(i).map_err(|_| CacheError::NotFound)?;
        let good = crate::recovery::chunk_crc_matches(&self.file, &self.record, chunk, crc);
        let mut shared = self.inner.lock();
        if !good {
            shared.stats.scrub_failures += 1;
        }
        if let Some(e) = current(&mut shared, &self.key, self.generation) {
            if good {
                if let Some(slot) = e.checked.get_mut(i as usize) {
                    *slot = true;
                }
            } else if e.record.state == State::Complete {
                e.doomed = true;
            }
        }
        Ok(good)
    }

    /// Whether a commit of one of the entry's chunks failed to write its
    /// bytes (a full or failing disk) within the last
    /// [`WRITE_FAILURE_PAUSE`]: a reader should stream the rest through
    /// rather than fill or wait for a refill.
    pub fn write_failed(&self) -> bool {
        let mut shared = self.inner.lock();
        current(&mut shared, &self.key, self.generation)
            .and_then(|e| e.write_failed)
            .is_some_and(|t| t.elapsed() < WRITE_FAILURE_PAUSE)
    }

    /// Whether the entry is complete and verified.
    pub fn is_complete(&self) -> bool {
        let mut shared = self.inner.lock();
        current(&mut shared, &self.key, self.generation)
            .is_some_and(|e| e.record.state == State::Complete)
    }

    /// Waits until chunk `i` is no longer being filled: `Present` (read it)
    /// or `Missing` (its filler gave up: claim it). Any thread may complete
    /// the wait. At most [`MAX_WAITERS`] readers wait on one entry; dropping
    /// the future (the client went away) withdraws it.
    pub fn wait(&self, i: u64) -> ChunkWait<'_> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        ChunkWait {
            lease: self,
            chunk: i,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            registered: false,
        }
    }

    /// Claims chunk `i` for filling; `None` if it is present or being filled.
    /// The claim holds the entry like a lease until it is committed or dropped.
    pub fn claim(&self, i: u64) -> Option<Claim> {
        let mut shared = self.inner.lock();
        let entry = current(&mut shared, &self.key, self.generation)?;
        let slot = entry.chunks.get_mut(usize::try_from(i).ok()?)?;
        if *slot != ChunkState::Missing {
            return None;
        }
        *slot = ChunkState::Filling;
        entry.leases += 1;
        Some(Claim {
            inner: Arc::clone(&self.inner),
            key: self.key,
            generation: self.generation,
            chunk: i,
            file: Arc::clone(&self.file),
            done: false,
        })
    }

    /// Maps bytes `start..start + len` of the entry read-only, for senders
    /// that must copy (TLS encrypts straight from the mapping). Every chunk
    /// holding them must be present; the mapping borrows the lease, so the
    /// entry is not evicted while it is read.
    pub fn map_present(&self, start: u64, len: u64) -> Result<ChunkMap<'_>, CacheError> {
        let end = start.checked_add(len).ok_or(CacheError::NotFound)?;
        if len == 0 || end > self.record.size {
            return Err(CacheError::NotFound);
        }
        let cs = u64::from(self.record.chunk_size);
        let map = {
            // Checked and mapped under the lock: nothing changes the chunks between.
            let mut shared = self.inner.lock();
            let Some(e) = current(&mut shared, &self.key, self.generation) else {
                return Err(CacheError::NotFound);
            };
            let present = (start / cs..=(end - 1) / cs)
                .all(|i| e.chunks.get(i as usize) == Some(&ChunkState::Present));
            if !present {
                return Err(CacheError::NotComplete);
            }
            crate::map::map_present(&self.file, start, len)
                .map_err(io_err(&self.inner.path(&self.key)))?
        };
        Ok(ChunkMap { map, _lease: self })
    }

    /// When every chunk is present but the entry is not complete (a commit
    /// failed after its chunk landed, before the hashes were checked), checks
    /// the hashes now. `None` when there is nothing to do. Blocks: it may
    /// read the whole image back.
    pub fn finish_if_filled(&self) -> Result<Option<Committed>, CacheError> {
        let pending = {
            let mut shared = self.inner.lock();
            current(&mut shared, &self.key, self.generation).and_then(|e| {
                let pending = e.record.state != State::Complete
                    && !e.hasher_out
                    && !e.verifying
                    && e.chunks.iter().all(|c| *c == ChunkState::Present);
                e.verifying |= pending;
                pending.then(|| e.hasher.take())
            })
        };
        match pending {
            None => Ok(None),
            Some(running) => {
                finish(&self.inner, &self.key, self.generation, &self.file, running).map(Some)
            }
        }
    }

    /// Reads chunk `i` back (for the copy path and tests); `None` unless present.
    pub fn read_chunk(&self, i: u64) -> Result<Option<Vec<u8>>, CacheError> {
        if self.chunk(i) != Some(ChunkState::Present) {
            return Ok(None);
        }
        let Some((start, end)) = self.record.chunk_range(i) else {
            return Ok(None);
        };
        let mut buf = vec![0u8; (end - start) as usize];
        self.file
            .read_exact_at(&mut buf, start)
            .map_err(io_err(&self.inner.path(&self.key)))?;
        Ok(Some(buf))
    }
}

/// Present bytes of an entry, mapped read-only, borrowing the lease that
/// keeps the entry from eviction.
pub struct ChunkMap<'a> {
    map: memmap2::Mmap,
    _lease: &'a Lease,
}

impl std::ops::Deref for ChunkMap<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map
    }
}

/// The future of [`Lease::wait`].
pub struct ChunkWait<'a> {
    lease: &'a Lease,
    chunk: u64,
    id: u64,
    registered: bool,
}

impl Future for ChunkWait<'_> {
    type Output = Result<ChunkState, CacheError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = Arc::clone(&self.lease.inner);
        let mut shared = inner.lock();
        let Some(entry) = current(&mut shared, &self.lease.key, self.lease.generation) else {
            // Invalidated while we waited.
            return Poll::Ready(Err(CacheError::NotFound));
        };
        let state = usize::try_from(self.chunk)
            .ok()
            .and_then(|i| entry.chunks.get(i).copied())
            .ok_or(CacheError::NotFound);
        match state {
            Ok(ChunkState::Filling) => {
                if !self.registered && entry.waiters.len() >= MAX_WAITERS {
                    return Poll::Ready(Err(CacheError::TooManyWaiters));
                }
                entry.waiters.insert(self.id, cx.waker().clone());
                self.registered = true;
                Poll::Pending
            }
            other => {
                entry.waiters.remove(&self.id);
                self.registered = false;
                Poll::Ready(other)
            }
        }
    }
}

impl Drop for ChunkWait<'_> {
    fn drop(&mut self) {
        if self.registered {
            let mut shared = self.lease.inner.lock();
            if let Some(e) = current(&mut shared, &self.lease.key, self.lease.generation) {
                e.waiters.remove(&self.id);
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut shared = self.inner.lock();
        if let Some(e) = current(&mut shared, &self.key, self.generation) {
            e.leases = e.leases.saturating_sub(1);
        }
    }
}

impl Claim {
    /// The chunk's index.
    pub fn chunk(&self) -> u64 {
        self.chunk
    }

    /// Writes the chunk's bytes, makes them durable, then records the chunk
    /// in the index (the durability order), and verifies the whole image when
    /// it was the last one.
    pub fn commit(mut self, data: &[u8]) -> Result<Committed, CacheError> {
        let inner = Arc::clone(&self.inner);
        let path = inner.path(&self.key);
        let record = match current(&mut inner.lock(), &self.key, self.generation) {
            Some(e) => e.record.clone(),
            None => return Err(CacheError::NotFound),
        };
        let (start, end) = record.chunk_range(self.chunk).ok_or(CacheError::NotFound)?;
        if data.len() as u64 != end - start {
            return Err(CacheError::ChunkLength {
                chunk: self.chunk,
                expected: end - start,
                got: data.len() as u64,
            });
        }
        let crc = crc32fast::hash(data);
        let chunk = u32::try_from(self.chunk).map_err(|_| CacheError::NotFound)?;
        let written = (|| {
            inner.fault(FaultPoint::DataWrite, &path)?;
            self.file.write_all_at(data, start).map_err(io_err(&path))?;
            inner.fault(FaultPoint::DataSync, &path)?;
            self.file.sync_data().map_err(io_err(&path))?;
            inner.fault(FaultPoint::IndexWrite, &path)?;
            // The index row is written only if the entry is still this generation.
            inner
                .index
                .put_chunk(&self.key, self.generation, chunk, crc)
        })();
        if let Err(e) = written {
            // Marked before the claim's drop frees the chunk and wakes its
            // waiters, so they see why.
            if !matches!(e, CacheError::NotFound) {
                let mut shared = inner.lock();
                shared.stats.write_failures += 1;
                shared.write_failed_at = Some(std::time::Instant::now());
                if let Some(entry) = current(&mut shared, &self.key, self.generation) {
                    entry.write_failed = Some(std::time::Instant::now());
                }
            }
            return Err(e);
        }
        self.done = true;
        // Marked present, and the running hashes taken when they expect this
        // chunk, in one step: whoever holds them sees every chunk that landed.
        let (mut hasher, last) = {
            let mut shared = inner.lock();
            let Some(entry) = current(&mut shared, &self.key, self.generation) else {
                return Err(CacheError::NotFound);
            };
            if let Some(slot) = entry.chunks.get_mut(self.chunk as usize) {
                *slot = ChunkState::Present;
            }
            if let Some(c) = entry.crcs.get_mut(self.chunk as usize) {
                *c = crc;
            }
            if let Some(c) = entry.checked.get_mut(self.chunk as usize) {
                *c = true;
            }
            entry.wake_all();
            if entry.record.state == State::Reserved {
                // Under the lock, so it can never land after `finish`'s Complete.
                entry.record.state = State::Filling;
                inner.index.put_entry(&self.key, &entry.record)?;
            }
            // Taken last: nothing after this in the lock can fail and lose them.
            let hasher = entry.hasher.take_if(|h| h.next == self.chunk);
            entry.hasher_out |= hasher.is_some();
            let last = entry.chunks.iter().all(|c| *c == ChunkState::Present);
            (hasher, last)
        };
        if let Some(h) = hasher.as_mut() {
            // Outside the lock: hashing 8 MiB takes milliseconds.
            h.md5.update(data);
            h.sha512.update(data);
            h.next += 1;
            match catch_up(&inner, &self.key, self.generation, &self.file, h) {
                Ok(true) => {}
                Ok(false) => return Ok(Committed::Chunk),
                Err(e) => {
                    // The running hashes are lost: the last commit reads back.
                    if let Some(entry) = current(&mut inner.lock(), &self.key, self.generation) {
                        entry.hasher_out = false;
                    }
                    return Err(e);
                }
            }
            // Every chunk is hashed: this committer finishes the entry.
            return finish(&inner, &self.key, self.generation, &self.file, hasher);
        }
        // The last chunk, and nobody holds the running hashes (they were
        // lost to a scrub or a restart): finish here, reading the image back.
        // Otherwise their holder finishes once it reaches the end.
        let finish_here = last && {
            let mut shared = inner.lock();
            current(&mut shared, &self.key, self.generation).is_some_and(|e| {
                let idle = !e.hasher_out && !e.verifying && e.record.state != State::Complete;
                e.verifying |= idle;
                idle
            })
        };
        if !finish_here {
            return Ok(Committed::Chunk);
        }
        finish(&inner, &self.key, self.generation, &self.file, None)
    }
}

/// Advances running hashes over the chunks already present after the one
/// they just took in, reading them back. Returns `true` when they cover the
/// whole image (the caller finishes the entry), `false` once they reach a
/// chunk not yet present: they go back to the entry, for that chunk's committer.
fn catch_up(
    inner: &Inner,
    key: &Key,
    generation: u64,
    file: &File,
    h: &mut SeqHasher,
) -> Result<bool, CacheError> {
    let mut buf = Vec::new();
    loop {
        let range = {
            let mut shared = inner.lock();
            let Some(entry) = current(&mut shared, key, generation) else {
                return Err(CacheError::NotFound);
            };
            if h.next == entry.record.chunk_count() {
                entry.hasher_out = false;
                entry.verifying = true;
                return Ok(true);
            }
            if entry.chunks.get(h.next as usize) != Some(&ChunkState::Present) {
                entry.hasher = Some(Box::new(std::mem::replace(h, SeqHasher::new())));
                entry.hasher_out = false;
                return Ok(false);
            }
            entry.record.chunk_range(h.next)
        };
        let Some((start, end)) = range else {
            return Err(CacheError::NotFound);
        };
        buf.resize((end - start) as usize, 0);
        file.read_exact_at(&mut buf, start)
            .map_err(io_err(&inner.path(key)))?;
        h.md5.update(&buf);
        h.sha512.update(&buf);
        h.next += 1;
    }
}

impl SeqHasher {
    fn new() -> SeqHasher {
        SeqHasher {
            next: 0,
            md5: md5::Md5::new(),
            sha512: sha2::Sha512::new(),
        }
    }
}

/// Checks a fully present entry's md5 and sha512 (from its running hashes
/// when the fill was sequential, else by reading it back) and marks it
/// complete, or invalid and removed.
fn finish(
    inner: &Inner,
    key: &Key,
    generation: u64,
    file: &File,
    running: Option<Box<SeqHasher>>,
) -> Result<Committed, CacheError> {
    let path = inner.path(key);
    // The caller marked the entry `verifying`, under the lock where it
    // decided to finish: nobody else finishes it meanwhile.
    let record = {
        let mut shared = inner.lock();
        let Some(entry) = current(&mut shared, key, generation) else {
            return Err(CacheError::NotFound);
        };
        entry.record.clone()
    };
    let hashes = match running.filter(|h| h.next == record.chunk_count()) {
        Some(h) => Ok((h.md5.finalize().into(), h.sha512.finalize().into())),
        None => {
            inner.lock().stats.read_backs += 1;
            hash_file(file, record.size).map_err(io_err(&path))
        }
    };
    let mut shared = inner.lock();
    let Some(entry) = current(&mut shared, key, generation) else {
        return Err(CacheError::NotFound);
    };
    entry.verifying = false;
    let (md5, sha512) = hashes?;
    if md5 == record.md5 && sha512 == record.sha512 {
        // A chunk may have been forgotten (scrub) while the hashes ran.
        if entry.chunks.iter().any(|c| *c != ChunkState::Present) {
            return Ok(Committed::Chunk);
        }
        entry.record.state = State::Complete;
        inner.index.put_entry(key, &entry.record)?;
        return Ok(Committed::Complete);
    }
    shared.stats.invalidations += 1;
    inner.remove(&mut shared, key)?;
    Ok(Committed::Invalid)
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut shared = self.inner.lock();
        let Some(entry) = current(&mut shared, &self.key, self.generation) else {
            return;
        };
        entry.leases = entry.leases.saturating_sub(1);
        if !self.done
            && let Some(slot) = entry.chunks.get_mut(self.chunk as usize)
            && *slot == ChunkState::Filling
        {
            *slot = ChunkState::Missing;
            entry.wake_all();
        }
    }
}

/// Creates an entry's data file at its full length (sparse). A new entry
/// always gets a new file: one left at the path (a failed unlink) is
/// unlinked first, never truncated, since a reader may still hold it.
fn create_data_file(path: &Path, size: u64) -> std::io::Result<File> {
    let open = || {
        File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
    };
    let file = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            open()?
        }
        other => other?,
    };
    file.set_len(size)?;
    Ok(file)
}

/// md5 and sha512 of the first `size` bytes of a file.
pub(crate) fn hash_file(file: &File, size: u64) -> std::io::Result<([u8; 16], [u8; 64])> {
    let mut md5 = md5::Md5::new();
    let mut sha = sha2::Sha512::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    // Positional reads: the shared descriptor's offset is never relied on.
    while offset < size {
        let want = (size - offset).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..want], offset)?;
        md5.update(&buf[..want]);
        sha.update(&buf[..want]);
        offset += want as u64;
    }
    Ok((md5.finalize().into(), sha.finalize().into()))
}
