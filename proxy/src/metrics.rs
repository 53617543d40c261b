//! Prometheus metrics. Each worker thread updates only its own slot (relaxed
//! atomics, no sharing of cache lines between cores); `/metrics` sums them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use std::collections::BTreeMap;

use glance_link::{Rejection, StoreId};

/// Status codes counted by name; any other lands in `other`.
pub const STATUSES: [u16; 16] = [
    200, 204, 206, 400, 403, 404, 405, 408, 411, 413, 416, 431, 500, 501, 502, 503,
];

/// How response bytes left the process.
#[derive(Debug, Clone, Copy)]
pub enum SendPath {
    /// Page cache to socket with no copy through user space (`sendfile`).
    ZeroCopy,
    /// Read into a buffer, then written (the fallback; TLS from a store's
    /// file).
    Copy,
    /// Encrypted for TLS straight from a read-only map of the cache file.
    Mapped,
}

/// How a TLS handshake ended, for the metrics.
#[derive(Debug, Clone, Copy)]
pub enum Handshake {
    /// Complete.
    Done,
    /// Refused by either side or cut (a bad hello, an unknown CA, a reset).
    Failed,
    /// Not finished within the header timeout.
    TimedOut,
    /// A plaintext HTTP request on the TLS port (answered 400).
    Plaintext,
}

impl Handshake {
    /// Every outcome, in counter order.
    const ALL: [Handshake; 4] = [
        Handshake::Done,
        Handshake::Failed,
        Handshake::TimedOut,
        Handshake::Plaintext,
    ];

    fn label(self) -> &'static str {
        match self {
            Handshake::Done => "done",
            Handshake::Failed => "failed",
            Handshake::TimedOut => "timed_out",
            Handshake::Plaintext => "plaintext",
        }
    }
}

/// What became of a TLS session offered to the kernel after its
/// handshake, for the metrics.
#[derive(Debug, Clone, Copy)]
pub enum KernelHandOff {
    /// The kernel holds its keys.
    Kernel,
    /// It stayed in rustls (a version or cipher the kernel lacks).
    UserSpace,
    /// The kernel refused the keys; the connection closed.
    Failed,
}

impl KernelHandOff {
    /// Every outcome, in counter order.
    const ALL: [KernelHandOff; 3] = [
        KernelHandOff::Kernel,
        KernelHandOff::UserSpace,
        KernelHandOff::Failed,
    ];

    fn label(self) -> &'static str {
        match self {
            KernelHandOff::Kernel => "kernel",
            KernelHandOff::UserSpace => "user_space",
            KernelHandOff::Failed => "failed",
        }
    }
}

/// One worker thread's counters.
#[derive(Default)]
#[repr(align(128))]
pub struct CoreMetrics {
    requests: [AtomicU64; STATUSES.len() + 1],
    bytes_zero_copy: AtomicU64,
    bytes_copy: AtomicU64,
    bytes_mapped: AtomicU64,
    handshakes: [AtomicU64; Handshake::ALL.len()],
    hand_offs: [AtomicU64; KernelHandOff::ALL.len()],
    active_connections: AtomicU64,
    refused_connections: AtomicU64,
    rejections: [AtomicU64; Rejection::ALL.len()],
    panics: AtomicU64,
    cache_lookups: [AtomicU64; 3],
    coalesced: AtomicU64,
    invalidations: AtomicU64,
}

/// What happened to a chunk fill (one chunk's fetch from a backend and its
/// commit to the cache).
#[derive(Debug, Clone, Copy)]
pub enum FillEvent {
    /// A chunk was claimed and its fetch started.
    Started,
    /// The chunk landed in the cache.
    Completed,
    /// The fetch or the commit failed after its retries; the chunk stays missing.
    Failed,
}

/// One backend store's counters (updated once per chunk, so shared by all threads).
#[derive(Default)]
struct StoreCounters {
    backend_bytes: AtomicU64,
    fills: [AtomicU64; 3],
}

impl CoreMetrics {
    /// Counts one response with `status`.
    pub fn response(&self, status: u16) {
        let i = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len());
        self.requests[i].fetch_add(1, Relaxed);
    }

    /// Counts body bytes sent along `path`.
    pub fn sent(&self, path: SendPath, bytes: u64) {
        match path {
            SendPath::ZeroCopy => self.bytes_zero_copy.fetch_add(bytes, Relaxed),
            SendPath::Copy => self.bytes_copy.fetch_add(bytes, Relaxed),
            SendPath::Mapped => self.bytes_mapped.fetch_add(bytes, Relaxed),
        };
    }

    /// Counts a TLS handshake's outcome.
    pub fn handshake(&self, outcome: Handshake) {
        self.handshakes[outcome as usize].fetch_add(1, Relaxed);
    }

    /// Counts what became of a session offered to the kernel.
    pub fn hand_off(&self, outcome: KernelHandOff) {
        self.hand_offs[outcome as usize].fetch_add(1, Relaxed);
    }

    /// A connection opened (`true`) or closed (`false`).
    pub fn connection(&self, opened: bool) {
        if opened {
            self.active_connections.fetch_add(1, Relaxed);
        } else {
            self.active_connections.fetch_sub(1, Relaxed);
        }
    }

    /// Open connections on this thread.
    pub fn active(&self) -> u64 {
        self.active_connections.load(Relaxed)
    }

    /// A connection refused because the thread was at its cap.
    pub fn refused(&self) {
        self.refused_connections.fetch_add(1, Relaxed);
    }

    /// A link that failed verification.
    pub fn rejected(&self, reason: Rejection) {
        let i = Rejection::ALL
            .iter()
            .position(|&r| r == reason)
            .unwrap_or(0);
        self.rejections[i].fetch_add(1, Relaxed);
    }

    /// A download of a cached store looked up the cache.
    pub fn cache(&self, outcome: crate::fill::CacheOutcome) {
        let i = match outcome {
            crate::fill::CacheOutcome::Hit => 0,
            crate::fill::CacheOutcome::Miss => 1,
            crate::fill::CacheOutcome::Bypass => 2,
        };
        self.cache_lookups[i].fetch_add(1, Relaxed);
    }

    /// A reader waited for a chunk another request was fetching, instead
    /// of fetching it again.
    pub fn coalesced(&self) {
        self.coalesced.fetch_add(1, Relaxed);
    }

    /// A cached image was thrown away: its bytes did not match the link's hashes.
    pub fn invalidated(&self) {
        self.invalidations.fetch_add(1, Relaxed);
    }

    /// A connection task that panicked (and was contained).
    pub fn panicked(&self) {
        self.panics.fetch_add(1, Relaxed);
    }
}

/// Every thread's counters, plus process-wide facts.
pub struct Metrics {
    cores: Vec<CoreMetrics>,
    stores: BTreeMap<StoreId, StoreCounters>,
    driver: std::sync::OnceLock<&'static str>,
    tls: std::sync::OnceLock<TlsMode>,
    kernel_tls: std::sync::OnceLock<bool>,
}

/// How this node serves TLS, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain HTTP.
    Off,
    /// rustls in user space; cached bodies encrypted from mapped files.
    Userspace,
    /// rustls for the handshake, then the kernel (bodies sent with `sendfile`).
    Kernel,
}

impl Metrics {
    /// Counters for `threads` workers (at least one slot) and the given stores.
    pub fn new(threads: usize, stores: impl IntoIterator<Item = StoreId>) -> Metrics {
        Metrics {
            cores: (0..threads.max(1))
                .map(|_| CoreMetrics::default())
                .collect(),
            stores: stores
                .into_iter()
                .map(|id| (id, StoreCounters::default()))
                .collect(),
            driver: std::sync::OnceLock::new(),
            tls: std::sync::OnceLock::new(),
            kernel_tls: std::sync::OnceLock::new(),
        }
    }

    /// Bytes read from a backend store.
    pub fn backend_bytes(&self, store: &StoreId, n: u64) {
        if let Some(c) = self.stores.get(store) {
            c.backend_bytes.fetch_add(n, Relaxed);
        }
    }

    /// Counts a chunk fill event of a store.
    pub fn fill(&self, store: &StoreId, event: FillEvent) {
        if let Some(c) = self.stores.get(store) {
            c.fills[event as usize].fetch_add(1, Relaxed);
        }
    }

    /// Records the I/O driver the workers run (`io_uring` or `legacy`), once.
    pub fn set_driver(&self, driver: &'static str) {
        let _ = self.driver.set(driver);
    }

    /// Records how this node serves TLS and whether the kernel offers TLS
    /// offload, once.
    pub fn set_tls(&self, mode: TlsMode, kernel_tls: bool) {
        let _ = self.tls.set(mode);
        let _ = self.kernel_tls.set(kernel_tls);
    }

    /// The slot of worker `i`.
    pub fn core(&self, i: usize) -> &CoreMetrics {
        &self.cores[i % self.cores.len()]
    }

    /// Open connections across all threads.
    pub fn active_connections(&self) -> u64 {
        self.cores.iter().map(CoreMetrics::active).sum()
    }

    /// The Prometheus text exposition of every metric, with the cache's
    /// own counters.
    pub fn render_with_cache(&self, cache: &glance_cache::Stats) -> String {
        let mut out = self.render();
        let _ = writeln!(
            out,
            "# HELP glance_stream_cache_bytes Bytes admitted to the cache, and its limit."
        );
        let _ = writeln!(out, "# TYPE glance_stream_cache_bytes gauge");
        let _ = writeln!(
            out,
            "glance_stream_cache_bytes{{kind=\"used\"}} {}",
            cache.bytes_used
        );
        let _ = writeln!(
            out,
            "glance_stream_cache_bytes{{kind=\"limit\"}} {}",
            cache.bytes_limit
        );
        let _ = writeln!(
            out,
            "# HELP glance_stream_cache_evictions_total Cache entries evicted."
        );
        let _ = writeln!(out, "# TYPE glance_stream_cache_evictions_total counter");
        let _ = writeln!(
            out,
            "glance_stream_cache_evictions_total {}",
            cache.evictions
        );
        let _ = writeln!(
            out,
            "# HELP glance_stream_cache_scrub_failures_total Cached chunks found damaged by their crc32 (by the scrubber, or by the first read of a chunk after a start)."
        );
        let _ = writeln!(
            out,
            "# TYPE glance_stream_cache_scrub_failures_total counter"
        );
        let _ = writeln!(
            out,
            "glance_stream_cache_scrub_failures_total {}",
            cache.scrub_failures
        );
        let _ = writeln!(
            out,
            "# HELP glance_stream_cache_write_failures_total Chunks that could not be written to the cache (a full or failing disk); their downloads streamed through."
        );
        let _ = writeln!(
            out,
            "# TYPE glance_stream_cache_write_failures_total counter"
        );
        let _ = writeln!(
            out,
            "glance_stream_cache_write_failures_total {}",
            cache.write_failures
        );
        out
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let sum = |f: &dyn Fn(&CoreMetrics) -> &AtomicU64| -> u64 {
            self.cores.iter().map(|c| f(c).load(Relaxed)).sum()
        };
        let _ = writeln!(
            out,
            "# HELP glance_stream_requests_total Responses sent, by status code."
        );
        let _ = writeln!(out, "# TYPE glance_stream_requests_total counter");
        for (i, status) in STATUSES.iter().enumerate() {
            let n = sum(&|c| &c.requests[i]);
            let _ = writeln!(
                out,
                "glance_stream_requests_total{{status=\"{status}\"}} {n}"
            );
        }
        let n = sum(&|c| &c.requests[STATUSES.len()]);
        let _ = writeln!(out, "glance_stream_requests_total{{status=\"other\"}} {n}");

        let _ = writeln!(
            out,
            "# HELP glance_stream_sent_bytes_total Body bytes sent, by path (zero_copy: sendfile; copy: through a buffer; mapped: encrypted for TLS from a map of the cache file)."
        );
        let _ = writeln!(out, "# TYPE glance_stream_sent_bytes_total counter");
        let _ = writeln!(
            out,
            "glance_stream_sent_bytes_total{{path=\"zero_copy\"}} {}",
            sum(&|c| &c.bytes_zero_copy)
        );
        let _ = writeln!(
            out,
            "glance_stream_sent_bytes_total{{path=\"copy\"}} {}",
            sum(&|c| &c.bytes_copy)
        );
        let _ = writeln!(
            out,
            "glance_stream_sent_bytes_total{{path=\"mapped\"}} {}",
            sum(&|c| &c.bytes_mapped)
        );
        let _ = writeln!(
            out,
            "# HELP glance_stream_tls_handshakes_total TLS handshakes, by outcome (plaintext: an HTTP request on the TLS port)."
        );
        let _ = writeln!(out, "# TYPE glance_stream_tls_handshakes_total counter");
        for (i, outcome) in Handshake::ALL.iter().enumerate() {
            let n = sum(&|c| &c.handshakes[i]);
            let _ = writeln!(
                out,
                "glance_stream_tls_handshakes_total{{outcome=\"{}\"}} {n}",
                outcome.label()
            );
        }
        let _ = writeln!(
            out,
            "# HELP glance_stream_tls_kernel_hand_offs_total TLS sessions offered to the kernel after their handshake, by outcome (kernel: it holds the keys; user_space: kept in rustls; failed: refused, connection closed)."
        );
        let _ = writeln!(
            out,
            "# TYPE glance_stream_tls_kernel_hand_offs_total counter"
        );
        for (i, outcome) in KernelHandOff::ALL.iter().enumerate() {
            let n = sum(&|c| &c.hand_offs[i]);
            let _ = writeln!(
                out,
                "glance_stream_tls_kernel_hand_offs_total{{outcome=\"{}\"}} {n}",
                outcome.label()
            );
        }
        let mode = self.tls.get().copied().unwrap_or(TlsMode::Off);
        let _ = writeln!(
            out,
            "# HELP glance_stream_tls_mode How TLS is served (off; userspace: rustls, cached bodies encrypted from mapped cache files; kernel: rustls handshakes, then the kernel encrypts and bodies leave with sendfile), 1 for the one in use."
        );
        let _ = writeln!(out, "# TYPE glance_stream_tls_mode gauge");
        for (m, label) in [
            (TlsMode::Off, "off"),
            (TlsMode::Userspace, "userspace"),
            (TlsMode::Kernel, "kernel"),
        ] {
            let _ = writeln!(
                out,
                "glance_stream_tls_mode{{mode=\"{label}\"}} {}",
                u8::from(m == mode)
            );
        }
        let _ = writeln!(
            out,
            "# HELP glance_stream_kernel_tls_available 1 when this kernel offers TLS offload (TCP_ULP \"tls\"), found by a probe at start."
        );
        let _ = writeln!(out, "# TYPE glance_stream_kernel_tls_available gauge");
        let _ = writeln!(
            out,
            "glance_stream_kernel_tls_available {}",
            u8::from(self.kernel_tls.get().copied().unwrap_or(false))
        );

        let _ = writeln!(
            out,
            "# HELP glance_stream_active_connections Open client connections, by worker thread."
        );
        let _ = writeln!(out, "# TYPE glance_stream_active_connections gauge");
        for (i, c) in self.cores.iter().enumerate() {
            let _ = writeln!(
                out,
                "glance_stream_active_connections{{core=\"{i}\"}} {}",
                c.active()
            );
        }

        let _ = writeln!(
            out,
            "# HELP glance_stream_refused_connections_total Connections answered 503 because their thread was at its connection cap."
        );
        let _ = writeln!(
            out,
            "# TYPE glance_stream_refused_connections_total counter"
        );
        let _ = writeln!(
            out,
            "glance_stream_refused_connections_total {}",
            sum(&|c| &c.refused_connections)
        );

        let _ = writeln!(
            out,
            "# HELP glance_stream_link_rejections_total Signed links refused, by reason (clients all get the same 403)."
        );
        let _ = writeln!(out, "# TYPE glance_stream_link_rejections_total counter");
        for (i, reason) in Rejection::ALL.iter().enumerate() {
            let n = sum(&|c| &c.rejections[i]);
            let _ = writeln!(
                out,
                "glance_stream_link_rejections_total{{reason=\"{}\"}} {n}",
                reason.label()
            );
        }

        let _ = writeln!(
            out,
            "# HELP glance_stream_panics_total Connection tasks that panicked; each closed only its own connection."
        );
        let _ = writeln!(out, "# TYPE glance_stream_panics_total counter");
        let _ = writeln!(out, "glance_stream_panics_total {}", sum(&|c| &c.panics));

        let _ = writeln!(
            out,
            "# HELP glance_stream_cache_lookups_total Downloads of cached stores, by outcome (bypass: streamed through uncached)."
        );
        let _ = writeln!(out, "# TYPE glance_stream_cache_lookups_total counter");
        for (i, outcome) in ["hit", "miss", "bypass"].iter().enumerate() {
            let n = sum(&|c| &c.cache_lookups[i]);
            let _ = writeln!(
                out,
                "glance_stream_cache_lookups_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP glance_stream_backend_bytes_total Bytes read from backend stores, by store."
        );
        let _ = writeln!(out, "# TYPE glance_stream_backend_bytes_total counter");
        for (id, c) in &self.stores {
            let _ = writeln!(
                out,
                "glance_stream_backend_bytes_total{{store=\"{id}\"}} {}",
                c.backend_bytes.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP glance_stream_chunk_fills_total Chunk fetches from a backend into the cache, by store and event (started, completed, failed after retries)."
        );
        let _ = writeln!(out, "# TYPE glance_stream_chunk_fills_total counter");
        for (id, c) in &self.stores {
            for (i, event) in ["started", "completed", "failed"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "glance_stream_chunk_fills_total{{store=\"{id}\",event=\"{event}\"}} {}",
                    c.fills[i].load(Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP glance_stream_coalesced_waits_total Times a reader waited for a chunk another request was already fetching."
        );
        let _ = writeln!(out, "# TYPE glance_stream_coalesced_waits_total counter");
        let _ = writeln!(
            out,
            "glance_stream_coalesced_waits_total {}",
            sum(&|c| &c.coalesced)
        );
        let _ = writeln!(
            out,
            "# HELP glance_stream_cache_invalidations_total Cached images thrown away because their bytes did not match the link's hashes."
        );
        let _ = writeln!(
            out,
            "# TYPE glance_stream_cache_invalidations_total counter"
        );
        let _ = writeln!(
            out,
            "glance_stream_cache_invalidations_total {}",
            sum(&|c| &c.invalidations)
        );

        let _ = writeln!(
            out,
            "# HELP glance_stream_io_driver The I/O driver the worker threads run (1 for the one in use)."
        );
        let _ = writeln!(out, "# TYPE glance_stream_io_driver gauge");
        let _ = writeln!(
            out,
            "glance_stream_io_driver{{driver=\"{}\"}} 1",
            self.driver.get().copied().unwrap_or("starting")
        );
        out
    }
}
