//! The cold-storm benchmark: many clients ask at once for the same image,
//! absent from every cache, from an origin that limits each connection's rate
//! (nginx `limit_rate`, like a busy object store). Reported per server: the
//! bytes read from the origin (as a multiple of the image) and the time
//! until every client has the whole image, next to the time one direct
//! download from the origin takes (the fill time).

use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::hot::{Workdir, download};
use crate::peer::{self, Server};

/// Options of `glance-bench cold`.
#[derive(clap::Args)]
pub struct ColdArgs {
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
    /// Directory for the image and the servers' files (default: a temporary one).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// One measured storm.
struct Storm {
    origin_ratio: f64,
    all_done: Duration,
}

pub fn run(args: &ColdArgs) {
    let work = Workdir::new(args.dir.as_deref(), args.size_mib);
    let (dir, object, size) = (work.dir.clone(), work.object.clone(), work.size);
    let (origin, log) = peer::origin(&dir, &object, &args.rate);
    // The fill time: one client straight from the origin.
    let start = Instant::now();
    let got = download(origin.addr, &origin.target, 1, &mut vec![0u8; 1 << 20]);
    assert_eq!(got, size, "the origin served {got} of {size} bytes");
    let fill = start.elapsed();
    println!(
        "cold storm: {} MiB image, origin limit_rate {} per connection, fill time (one direct download) {:.1} s, {} server workers, {} cores",
        args.size_mib,
        args.rate,
        fill.as_secs_f64(),
        args.workers,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| clients | server | read from origin (x image) | all clients done (s) | vs fill time |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for &clients in &args.clients {
        let stream_dir = dir.join("stream");
        std::fs::create_dir_all(&stream_dir).unwrap();
        let stores = format!(
            "[stores.web]\nkind = \"http\"\nurl = \"http://{}/\"\n",
            origin.addr
        );
        let gs = peer::glance_stream_with(&stream_dir, &object, args.workers, "web", &stores);
        report(clients, &gs, storm(&gs, &log, clients, size), fill);
        // The same storm again, the image now cached: the time this machine
        // takes just to deliver clients x image, the floor of any cold storm.
        let warm = storm(&gs, &log, clients, size);
        println!(
            "| {clients} | glance-stream, the same storm warm (delivery floor) | {:.2} | {:.1} | {:.2}x |",
            warm.origin_ratio,
            warm.all_done.as_secs_f64(),
            warm.all_done.as_secs_f64() / fill.as_secs_f64()
        );
        drop(gs);
        for &lock in &args.nginx_locks {
            if lock < 60 && clients > args.short_lock_max_clients {
                continue;
            }
            let nginx = peer::nginx_proxy_cache(&dir, origin.addr, lock, args.workers);
            report(clients, &nginx, storm(&nginx, &log, clients, size), fill);
        }
    }
}

fn report(clients: usize, s: &Server, r: Storm, fill: Duration) {
    println!(
        "| {clients} | {} | {:.2} | {:.1} | {:.2}x |",
        s.name,
        r.origin_ratio,
        r.all_done.as_secs_f64(),
        r.all_done.as_secs_f64() / fill.as_secs_f64()
    );
}

/// `clients` downloads of the cold image at once; checks each got it whole.
fn storm(s: &Server, log: &Path, clients: usize, size: u64) -> Storm {
    let before = origin_bytes(log);
    let barrier = Barrier::new(clients);
    let start = Instant::now();
    let done: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let got = download(s.addr, &s.target, 1, &mut vec![0u8; 1 << 20]);
                    assert_eq!(got, size, "{} served {got} of {size} bytes", s.name);
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // The origin logs an answer when it ends: give the last line a moment.
    std::thread::sleep(Duration::from_millis(300));
    let read = origin_bytes(log) - before;
    Storm {
        origin_ratio: read as f64 / size as f64,
        all_done: done.into_iter().max().unwrap_or_default(),
    }
}

/// Body bytes the origin has sent so far (its access log: one number a line).
fn origin_bytes(log: &Path) -> u64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum()
}
