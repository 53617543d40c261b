//! Starting and stopping the server: one worker thread per core, each with its
//! own monoio runtime (io_uring, or epoll where io_uring is refused) and its
//! own `SO_REUSEPORT` listener, so the kernel spreads connections across
//! cores and no state is shared between them but this `Shared`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use glance_link::{Keyring, KeyringError, StoreId};
use monoio::net::TcpListener;

use crate::config::{Config, IoDriver};
use crate::isolate::{CatchUnwind, panic_message};
use crate::metrics::Metrics;
use crate::store::Store;

/// Connections over the cap answered 503 at once per worker; more are closed.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// io_uring submission queue entries per worker.
const RING_ENTRIES: u32 = 1024;

/// State every worker thread reads.
pub struct Shared {
    /// The checked configuration.
    pub config: Config,
    /// The keyring, swapped whole on reload.
    pub keyring: ArcSwap<Keyring>,
    /// Backend stores by id.
    pub stores: BTreeMap<StoreId, Store>,
    /// The on-disk image cache.
    pub cache: glance_cache::Cache,
    /// Counters.
    pub metrics: Metrics,
    /// The admin API's bearer token, if the API is on.
    pub admin_token: Option<String>,
    /// The TLS certificate and key in use (`None`: plain HTTP), swapped
    /// whole on reload; connections keep the one they started with.
    pub tls: Option<ArcSwap<rustls::ServerConfig>>,
    /// What the kernel's TLS layer takes, when sessions are handed to it
    /// after their handshake (`None`: TLS stays in rustls).
    pub offload: Option<crate::ktls::Offload>,
    /// Set when the server starts draining.
    pub shutdown: AtomicBool,
    /// Duplicates of the workers' listening sockets: shutting them down wakes
    /// every pending accept, so no accept is ever cancelled (a cancelled
    /// io_uring accept can still take a connection and lose it).
    listeners: Vec<StdListener>,
}

impl Shared {
    /// Shuts the listening socket of worker `i` (whose thread is gone), so
    /// the kernel stops queueing connections nobody will accept.
    fn close_listener(&self, i: usize) {
        if let Some(l) = self.listeners.get(i) {
            let _ = socket2::SockRef::from(l).shutdown(std::net::Shutdown::Read);
        }
    }

    /// Re-reads the TLS certificate and key (after a renewal); on failure
    /// the old ones stay in use. New connections get the new certificate;
    /// open ones go on with theirs.
    pub fn reload_tls(&self) -> Result<(), String> {
        let (Some(tls), Some(files)) = (&self.tls, &self.config.tls) else {
            return Ok(());
        };
        tls.store(tls_config(files, self.offload.is_some())?);
        tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
        Ok(())
    }

    /// Starts draining: workers stop accepting, in-flight requests finish up
    /// to the drain timeout, idle connections close.
    pub fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        for i in 0..self.listeners.len() {
            self.close_listener(i);
        }
    }

    /// Replaces the keyring with `text` (a keyring file's TOML, as glance-api
    /// pushes it on rotation): checked whole, written to the keyring file
    /// (mode 0600, synced, renamed into place), then swapped in. On any
    /// failure the old keyring stays in use. Blocks (file I/O).
    pub fn install_keyring(&self, text: &str) -> Result<Arc<Keyring>, String> {
        let keyring = Keyring::from_toml(text).map_err(|e| e.to_string())?;
        let path = &self.config.keyring;
        glance_link::write_private_file(path, text, "push")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let keyring = Arc::new(keyring);
        self.keyring.store(Arc::clone(&keyring));
        let ids: Vec<String> = keyring.key_ids().map(|k| k.to_string()).collect();
        tracing::info!(keys = ?ids, primary = %keyring.primary(), "keyring installed");
        Ok(keyring)
    }

    /// Re-reads the keyring file; on failure the old keyring stays in use.
    pub fn reload_keyring(&self) -> Result<(), KeyringError> {
        let keyring = Keyring::load(&self.config.keyring)?;
        let ids: Vec<String> = keyring.key_ids().map(|k| k.to_string()).collect();
        self.keyring.store(Arc::new(keyring));
        tracing::info!(keys = ?ids, "keyring reloaded");
        Ok(())
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The keyring could not be loaded.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The TLS certificate or key could not be loaded.
    #[error("[tls]: {0}")]
    Tls(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A store directory is missing.
    #[error("store {store}: directory {path} does not exist")]
    StoreMissing {
        /// The store id.
        store: String,
        /// Its directory.
        path: String,
    },
    /// The cache could not be opened.
    #[error("cache: {0}")]
    Cache(#[from] glance_cache::CacheError),
    /// A worker thread could not start its runtime.
    #[error("worker {worker} cannot start: {message}")]
    Worker {
        /// Worker index.
        worker: usize,
        /// What failed.
        message: String,
    },
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    driver: &'static str,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds the listeners and starts the worker threads; returns once every
    /// worker is accepting.
    pub fn start(config: Config) -> Result<Server, StartError> {
        let keyring = Keyring::load(&config.keyring)?;
        let kernel = crate::ktls::Offload::probe();
        let offload = match &kernel {
            Ok(offload) if config.kernel_tls && config.tls.is_some() => Some(offload.clone()),
            _ => None,
        };
        let tls = match &config.tls {
            Some(files) => Some(tls_config(files, offload.is_some()).map_err(StartError::Tls)?),
            None => None,
        };
        let mut stores = BTreeMap::new();
        for (id, sc) in &config.stores {
            if let crate::config::StoreConfig::File { path, .. } = sc
                && !path.is_dir()
            {
                return Err(StartError::StoreMissing {
                    store: id.to_string(),
                    path: path.display().to_string(),
                });
            }
            stores.insert(*id, Store::new(sc));
        }
        let cache = glance_cache::Cache::open(glance_cache::CacheConfig {
            dir: config.cache_dir.clone(),
            max_bytes: config.cache_max_bytes,
            chunk_size: config.cache_chunk_size,
            faults: None,
        })?;
        let threads = config.threads.get();
        let listeners = bind_all(config.listen, threads)?;
        let addr = listeners[0]
            .local_addr()
            .map_err(|source| StartError::Listen {
                addr: config.listen,
                source,
            })?;
        let driver_choice = config.io_driver;
        let duplicates = listeners
            .iter()
            .map(StdListener::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| StartError::Listen { addr, source })?;
        let metrics = Metrics::new(threads, stores.keys().copied());
        let admin_token = config.admin_token.as_ref().map(|t| t.0.clone());
        let shared = Arc::new(Shared {
            admin_token,
            config,
            keyring: ArcSwap::from_pointee(keyring),
            stores,
            cache,
            metrics,
            tls: tls.map(ArcSwap::new),
            offload,
            shutdown: AtomicBool::new(false),
            listeners: duplicates,
        });
        // Blocking work (cache commits: write, fdatasync, index) runs here,
        // off the event loops.
        let pool = monoio::blocking::DefaultThreadPool::new((threads * 2).max(4));
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut workers = Vec::with_capacity(threads);
        for (i, listener) in listeners.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let ready = ready_tx.clone();
            let pool = pool.clone();
            let handle = std::thread::Builder::new()
                .name(format!("glance-stream-{i}"))
                .spawn(move || worker(i, listener, shared, driver_choice, pool, ready))
                .map_err(|e| StartError::Worker {
                    worker: i,
                    message: e.to_string(),
                })?;
            workers.push(handle);
        }
        drop(ready_tx);
        let mut driver = "legacy";
        for _ in 0..threads {
            match ready_rx.recv() {
                Ok((_, Ok(d))) => driver = d,
                Ok((worker, Err(message))) => {
                    shared.begin_shutdown();
                    return Err(StartError::Worker { worker, message });
                }
                Err(_) => {
                    return Err(StartError::Worker {
                        worker: 0,
                        message: "worker exited".into(),
                    });
                }
            }
        }
        shared.metrics.set_driver(driver);
        report_tls(&shared, kernel);
        Ok(Server {
            addr,
            driver,
            shared,
            workers,
        })
    }

    /// The address the listeners are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The I/O driver the workers run (`io_uring` or `legacy`).
    pub fn driver(&self) -> &'static str {
        self.driver
    }

    /// State shared with the workers (for signal handling).
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Starts draining: stop accepting, finish in-flight requests up to the
    /// drain timeout, close idle connections.
    pub fn shutdown(&self) {
        self.shared.begin_shutdown();
    }

    /// Waits for every worker to finish (after [`Server::shutdown`]).
    pub fn join(self) {
        for w in self.workers {
            let _ = w.join();
        }
    }
}

/// The TLS server config of a certificate and key; with `kernel`, rustls
/// lets finished sessions' secrets go (to the kernel, and nowhere else).
fn tls_config(
    files: &crate::tls::TlsFiles,
    kernel: bool,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = crate::tls::server_config(files)?;
    if kernel {
        Arc::make_mut(&mut config).enable_secret_extraction = true;
    }
    Ok(config)
}

/// Says, in the log and the metrics, how TLS is served and what the
/// kernel probe at start found.
fn report_tls(shared: &Shared, kernel: Result<crate::ktls::Offload, String>) {
    use crate::metrics::TlsMode;
    let mode = match (&shared.tls, &shared.offload) {
        (None, _) => TlsMode::Off,
        (Some(_), Some(_)) => TlsMode::Kernel,
        (Some(_), None) => TlsMode::Userspace,
    };
    shared.metrics.set_tls(mode, kernel.is_ok());
    if shared.tls.is_none() {
        return;
    }
    match (&shared.offload, kernel) {
        (Some(offload), _) => tracing::info!(
            ciphers = %offload.describe(),
            "TLS: rustls runs each handshake, then hands the session to the kernel, which \
             encrypts (cached bodies leave with sendfile)"
        ),
        (None, Ok(offload)) => tracing::info!(
            ciphers = %offload.describe(),
            "TLS in user space (rustls): kernel TLS is offered but turned off \
             ([tls] kernel_offload = false); cached bodies are encrypted from mapped cache files"
        ),
        (None, Err(why)) => tracing::info!(
            kernel_tls = %why,
            "TLS in user space (rustls): the kernel offers no TLS offload, so cached bodies \
             are encrypted from mapped cache files instead of sent with sendfile"
        ),
    }
}

/// Binds `threads` listeners on one address with `SO_REUSEPORT`; with port 0,
/// the first picks the port and the others join it.
fn bind_all(addr: SocketAddr, threads: usize) -> Result<Vec<StdListener>, StartError> {
    let mut out = Vec::with_capacity(threads);
    let mut at = addr;
    for _ in 0..threads {
        let l = bind_one(at).map_err(|source| StartError::Listen { addr: at, source })?;
        if let Ok(bound) = l.local_addr() {
            at = bound;
        }
        out.push(l);
    }
    Ok(out)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<StdListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

type Ready = mpsc::Sender<(usize, Result<&'static str, String>)>;
type Pool = monoio::blocking::DefaultThreadPool;

/// One worker thread: build its runtime, report, serve until shutdown.
fn worker(
    i: usize,
    listener: StdListener,
    shared: Arc<Shared>,
    choice: IoDriver,
    pool: Pool,
    ready: Ready,
) {
    let guard = Arc::clone(&shared);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drive(i, listener, shared, choice, pool, ready);
    }));
    if !guard.shutdown.load(Ordering::SeqCst) {
        if let Err(payload) = &outcome {
            tracing::error!(
                worker = i,
                panic = panic_message(payload.as_ref()),
                "worker thread failed"
            );
        }
        guard.close_listener(i);
    }
}

/// Builds the worker's runtime (io_uring, else epoll as configured) and runs it.
fn drive(
    i: usize,
    listener: StdListener,
    shared: Arc<Shared>,
    choice: IoDriver,
    pool: Pool,
    ready: Ready,
) {
    if choice != IoDriver::Legacy {
        let built = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(RING_ENTRIES)
            .attach_thread_pool(Box::new(pool.clone()))
            .enable_timer()
            .build();
        match built {
            Ok(mut rt) => {
                rt.block_on(run(i, listener, shared, "io_uring", ready));
                return;
            }
            Err(e) if choice == IoDriver::Auto => {
                if i == 0 {
                    tracing::warn!(error = %e, "io_uring is not available; falling back to the epoll (legacy) driver");
                }
            }
            Err(e) => {
                let _ = ready.send((i, Err(format!("io_uring driver: {e}"))));
                return;
            }
        }
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .attach_thread_pool(Box::new(pool))
        .enable_timer()
        .build()
    {
        Ok(mut rt) => rt.block_on(run(i, listener, shared, "legacy", ready)),
        Err(e) => {
            let _ = ready.send((i, Err(format!("legacy driver: {e}"))));
        }
    }
}

/// The accept loop, then the drain.
async fn run(
    i: usize,
    listener: StdListener,
    shared: Arc<Shared>,
    driver: &'static str,
    ready: Ready,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send((i, Err(format!("listener: {e}"))));
            return;
        }
    };
    let _ = ready.send((i, Ok(driver)));
    drop(ready);
    let limits = shared.config.http.clone();
    let metrics = shared.metrics.core(i);
    let worker = std::rc::Rc::new(crate::fill::Worker::new(
        &shared.stores,
        shared.config.fill_parallelism,
        shared.config.readahead_bytes,
    ));
    if i == 0 && shared.config.scrub_chunks_per_sec > 0 {
        monoio::spawn(scrub(Arc::clone(&shared)));
    }
    let refusing = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let tls = shared.tls.is_some();
    loop {
        let accepted = listener.accept().await;
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // Out of descriptors or memory: give in-flight work room.
                monoio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if metrics.active() >= limits.max_connections_per_thread as u64 {
            metrics.refused();
            // A flood past the cap must not turn into unbounded refusal tasks
            // (each holds a descriptor for up to two seconds): past a few,
            // close at once.
            if refusing.get() < MAX_REFUSALS_IN_FLIGHT {
                refusing.set(refusing.get() + 1);
                let counter = std::rc::Rc::clone(&refusing);
                monoio::spawn(async move {
                    let _ = CatchUnwind::new(refuse(stream, tls)).await;
                    counter.set(counter.get() - 1);
                });
            }
            continue;
        }
        let task_shared = Arc::clone(&shared);
        let task_worker = std::rc::Rc::clone(&worker);
        monoio::spawn(async move {
            let result = CatchUnwind::new(crate::conn::serve(
                stream,
                peer,
                Arc::clone(&task_shared),
                i,
                task_worker,
            ))
            .await;
            if let Err(payload) = result {
                task_shared.metrics.core(i).panicked();
                tracing::error!(%peer, panic = panic_message(payload.as_ref()), "connection task panicked; only this connection was closed");
            }
        });
    }
    drop(listener);
    let deadline = Instant::now() + limits.drain_timeout;
    while metrics.active() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    if metrics.active() > 0 {
        tracing::warn!(
            worker = i,
            open = metrics.active(),
            "drain timeout: closing the remaining connections"
        );
    }
}

/// Re-checks cached chunks' crc32 a few per second, on the blocking pool,
/// until shutdown (worker 0 runs it: one scrubber per process).
async fn scrub(shared: Arc<Shared>) {
    let per_sec = shared.config.scrub_chunks_per_sec as usize;
    while !shared.shutdown.load(Ordering::Relaxed) {
        monoio::time::sleep(Duration::from_secs(1)).await;
        let cache = shared.cache.clone();
        match monoio::spawn_blocking(move || cache.scrub(per_sec)).await {
            Ok(Ok(report)) if report.bad > 0 => {
                tracing::warn!(
                    bad = report.bad,
                    "the scrubber found damaged cache chunks; they will be fetched again"
                );
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cache scrub failed"),
            _ => {}
        }
    }
}

/// Answers a connection over the cap with 503 and closes it (a TLS
/// connection is closed at once: a handshake would cost what the cap saves).
async fn refuse(mut stream: monoio::net::TcpStream, tls: bool) {
    if tls {
        return;
    }
    use monoio::io::AsyncWriteRentExt as _;
    let msg: &'static [u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 22\r\nRetry-After: 1\r\nConnection: close\r\n\r\nserver is at capacity\n";
    let _ = monoio::time::timeout(Duration::from_secs(1), stream.write_all(msg)).await;
    crate::conn::linger(&mut stream).await;
}
