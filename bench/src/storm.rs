//! The cold-storm benchmark: many clients ask at once for the same image,
//! absent from every cache, from an origin that limits each connection's
//! rate (nginx `limit_rate`, like a busy object store). Reported per server:
//! the bytes read from the origin (as a multiple of the image), the time
//! until every client has the whole image (next to the fill time, one direct
//! download from the origin), each client's bytes over time and the
//! origin's; every body is compared with the image, byte for byte.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::client::{Conn, Sample, Verify};
use crate::load::{self, Round};
use crate::measure;
use crate::object::Workdir;
use crate::peer::{self, Server};
use crate::report::{self, Figures, Metric, Point, Run, Scenario, Timeline};

/// Options of `glance-bench storm`.
#[derive(clap::Args, Clone)]
pub struct StormArgs {
    /// Image size in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Client counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,32,128")]
    clients: Vec<usize>,
    /// The origin's rate per connection, as nginx's `limit_rate` reads it
    /// (`100m`: 100 MiB/s, about 105 MB/s).
    #[arg(long, default_value = "100m")]
    rate: String,
    /// nginx `proxy_cache_lock_timeout` values to run, in seconds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "600,5")]
    nginx_locks: Vec<u64>,
    /// Largest client count the nginx runs with a lock timeout under 60 s get
    /// (each of their clients reads the whole image from the origin).
    #[arg(long, default_value_t = 32)]
    short_lock_max_clients: usize,
    /// Worker threads of glance-stream and worker processes of nginx.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// What the clients check of every body: all its bytes by default.
    #[arg(long, value_enum, default_value_t = Verify::Bytes)]
    verify: Verify,
    /// Milliseconds between two samples of the timeline.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Directory for the image and the servers' files (default: a temporary one).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

const COLUMNS: &[&Metric] = &[
    &report::ALL_DONE_X_FILL,
    &report::BACKEND_X,
    &report::ALL_DONE_S,
    &report::CLIENT_GB_PER_S_MIN,
    &report::TTFB_P50,
    &report::TTFB_P99,
    &report::SERVER_CPU_PER_GB,
    &report::PEAK_RSS,
    &report::CLIENT_CPU_PER_GB,
];

/// What every storm of a run shares.
struct Setting<'a> {
    work: &'a Workdir,
    image: &'a [u8],
    origin: &'a Server,
    log: &'a Path,
    fill: Duration,
    verify: Verify,
    interval: Duration,
}

/// Runs the scenario; `command` is how it was asked for.
pub fn run(run: &mut Run, args: &StormArgs, command: String) {
    peer::ensure_nginx();
    let work = Workdir::new(args.dir.as_deref(), args.size_mib);
    let image = std::fs::read(&work.object).unwrap();
    let (origin, log) = peer::origin(&work.dir, &work.object, &args.rate);
    // The fill time: one client straight from the origin.
    let start = Instant::now();
    Conn::connect(origin.addr).fetch(
        &origin.target,
        "",
        200,
        &Verify::Bytes.check(&image, &work.hashes.1),
    );
    let fill = start.elapsed();
    let set = Setting {
        work: &work,
        image: &image,
        origin: &origin,
        log: &log,
        fill,
        verify: args.verify,
        interval: Duration::from_millis(args.interval_ms.max(10)),
    };
    run.begin(Scenario::new(
        "storm",
        format!(
            "cold storm: {} MiB image, origin limit_rate {} per connection, fill time (one direct download) {:.1} s, \
             bodies checked: {:?}, {} server workers, {} cores",
            args.size_mib,
            args.rate,
            fill.as_secs_f64(),
            set.verify,
            args.workers,
            report::machine()["cores"]
        ),
        command,
        serde_json::json!({
            "size_mib": args.size_mib, "rate": args.rate, "fill_time_s": fill.as_secs_f64(),
            "workers": args.workers, "verify": format!("{:?}", set.verify),
        }),
        COLUMNS,
    ));
    let locks = |clients: usize| {
        args.nginx_locks
            .iter()
            .copied()
            .filter(move |&l| l >= 60 || clients <= args.short_lock_max_clients)
    };
    run.plan(args.clients.iter().map(|&c| 2 + locks(c).count()).sum());
    for &clients in &args.clients {
        let stream_dir = work.dir.join("stream");
        std::fs::create_dir_all(&stream_dir).unwrap();
        let stores = format!(
            "[stores.web]\nkind = \"http\"\nurl = \"http://{}/\"\n",
            origin.addr
        );
        let gs = peer::glance_stream_with(&stream_dir, &work, args.workers, "web", &stores);
        let (ours, timeline) = storm(run, &set, &gs, clients, &gs.name);
        run.current().timelines.push(timeline);
        // The same storm again, the image now cached: the time this machine
        // takes just to deliver clients x image, the floor of any cold storm.
        let floor = "glance-stream warm (delivery floor)";
        let (warm, _) = storm(run, &set, &gs, clients, floor);
        drop(gs);
        let mut peers = vec![("warm_floor".to_owned(), warm)];
        for lock in args
            .nginx_locks
            .iter()
            .filter(|&&l| !locks(clients).any(|x| x == l))
        {
            run.note(format!(
                "nginx with a {lock} s lock is not run at {clients} clients: past the lock timeout \
                 each waiter reads the whole image from the origin (--short-lock-max-clients)"
            ));
        }
        for lock in locks(clients) {
            let nginx = peer::nginx_proxy_cache(&work.dir, origin.addr, lock, args.workers);
            let (figures, timeline) = storm(run, &set, &nginx, clients, &nginx.name);
            run.current().timelines.push(timeline);
            peers.push((nginx.key.clone(), figures));
        }
        run.point(Point {
            clients,
            kind: None,
            ours,
            peers,
        });
    }
}

/// `clients` downloads of the image at once from `s`, each checked; the
/// figures (named `name`) and the timeline of bytes received and read from
/// the origin.
fn storm(run: &Run, set: &Setting, s: &Server, clients: usize, name: &str) -> (Figures, Timeline) {
    run.starting(format!("{name}, {clients} clients"));
    let size = set.work.size;
    let log_before = origin_bytes(set.log);
    let origin_before = measure::tree_bytes_written(set.origin.pid());
    let counters: Vec<Arc<AtomicU64>> = (0..clients).map(|_| Arc::default()).collect();
    let mut timeline = Timeline {
        server: name.to_owned(),
        clients,
        interval_s: set.interval.as_secs_f64(),
        image_bytes: size,
        times_s: Vec::new(),
        per_client_bytes: vec![Vec::new(); clients],
        backend_bytes: Vec::new(),
    };
    let window = measure::Window::open(s.pid());
    let barrier = Barrier::new(clients);
    let check = set.verify.check(set.image, &set.work.hashes.1);
    let start = Instant::now();
    let done: Vec<(Sample, Duration)> = std::thread::scope(|scope| {
        let handles: Vec<_> = counters
            .iter()
            .map(|counter| {
                let (barrier, check) = (&barrier, &check);
                scope.spawn(move || {
                    barrier.wait();
                    let mut conn = Conn::connect(s.addr);
                    conn.track(Arc::clone(counter));
                    let (_, sample) = conn.fetch(&s.target, "", 200, check);
                    assert_eq!(sample.bytes, size, "{} served a short body", s.name);
                    (sample, start.elapsed())
                })
            })
            .collect();
        // Sample the clients' and the origin's bytes until all are done,
        // on a fixed beat (each sample also records when it was taken).
        let mut next = start;
        while !handles.iter().all(|h| h.is_finished()) {
            next += set.interval;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            timeline.times_s.push(start.elapsed().as_secs_f64());
            for (c, counter) in counters.iter().enumerate() {
                timeline.per_client_bytes[c].push(counter.load(Ordering::Relaxed));
            }
            let origin_now = measure::tree_bytes_written(set.origin.pid());
            timeline
                .backend_bytes
                .push(origin_now.saturating_sub(origin_before));
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all_done = done.iter().map(|d| d.1).max().unwrap_or_default();
    let costs = window.close();
    let samples: Vec<Vec<Sample>> = done.iter().map(|d| vec![d.0]).collect();
    let Round {
        mut metrics,
        latencies_us,
    } = load::figures(&samples, all_done.as_secs_f64(), &costs);
    let read = settled_origin_bytes(set.log) - log_before;
    let secs = all_done.as_secs_f64();
    // Each client's own rate: the image over the time it took that client
    // (they all start together).
    let mut rates: Vec<f64> = done
        .iter()
        .map(|d| size as f64 / d.1.as_secs_f64().max(1e-9))
        .collect();
    rates.sort_by(f64::total_cmp);
    for (m, v) in [
        (&report::BACKEND_X, read as f64 / size as f64),
        (&report::ALL_DONE_S, secs),
        (&report::ALL_DONE_X_FILL, secs / set.fill.as_secs_f64()),
        (&report::CLIENT_GB_PER_S_MIN, rates[0] / 1e9),
        (&report::CLIENT_GB_PER_S_P50, load::median(rates) / 1e9),
    ] {
        metrics.insert(m.key.to_owned(), v);
    }
    run.done_round();
    let figures = load::summarize(
        name,
        vec![Round {
            metrics,
            latencies_us,
        }],
    );
    (figures, timeline)
}

/// The origin's body bytes once its access log stops growing: it logs an
/// answer when the answer ends, which can be a moment after the client has
/// its last byte (at most 5 s are waited).
fn settled_origin_bytes(log: &Path) -> u64 {
    let mut last = origin_bytes(log);
    for _ in 0..25 {
        std::thread::sleep(Duration::from_millis(200));
        let now = origin_bytes(log);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Body bytes the origin has sent so far (its access log: one number a line).
fn origin_bytes(log: &Path) -> u64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum()
}
