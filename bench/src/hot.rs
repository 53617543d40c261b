//! The hot-object benchmark.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use md5::Digest as _;

use crate::peer::{self, Server};

/// Options of `glance-bench hot`.
#[derive(clap::Args)]
pub struct HotArgs {
    /// Object size in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Client counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    clients: Vec<usize>,
    /// Whole-object downloads per round, shared among the clients.
    #[arg(long, default_value_t = 16)]
    downloads: usize,
    /// Rounds per server and client count (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Worker threads of glance-stream and worker processes of nginx.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Directory for the object and the servers' files (default: a temporary one).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// One measured round.
struct Round {
    gbps: f64,
    cpu_per_gb: f64,
}

pub fn run(args: &HotArgs) {
    let work = Workdir::new(args.dir.as_deref(), args.size_mib);
    let (dir, object, size) = (work.dir.clone(), work.object.clone(), work.size);
    let servers = [
        peer::glance_stream(&dir, &object, args.workers),
        peer::nginx(&dir, &object, args.workers, true),
    ];
    for s in &servers {
        // Warm the page cache and check the server answers the whole object.
        let got = download(s.addr, &s.target, 1, &mut vec![0u8; 1 << 20]);
        assert_eq!(got, size, "{} served {got} of {size} bytes", s.name);
    }
    println!(
        "hot object: {} MiB, {} downloads per round, {} rounds, {} server workers, {} cores",
        args.size_mib,
        args.downloads,
        args.rounds,
        args.workers,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| clients | server | GB/s (median) | server CPU s/GB (median) |");
    println!("| --- | --- | --- | --- |");
    for &clients in &args.clients {
        let mut results: Vec<Vec<Round>> = servers.iter().map(|_| Vec::new()).collect();
        for _ in 0..args.rounds {
            for (i, s) in servers.iter().enumerate() {
                results[i].push(round(s, clients, args.downloads, size));
            }
        }
        let medians: Vec<(f64, f64)> = results
            .iter()
            .map(|r| {
                (
                    median(r.iter().map(|x| x.gbps).collect()),
                    median(r.iter().map(|x| x.cpu_per_gb).collect()),
                )
            })
            .collect();
        for (s, (gbps, cpu)) in servers.iter().zip(&medians) {
            println!("| {clients} | {} | {gbps:.2} | {cpu:.3} |", s.name);
        }
        let (ours, peer) = (medians[0], medians[1]);
        println!(
            "| {clients} | ratio glance-stream/nginx | {:.2}x | {:.2}x |",
            ours.0 / peer.0,
            ours.1 / peer.1
        );
    }
}

fn round(s: &Server, clients: usize, downloads: usize, size: u64) -> Round {
    let per_client = downloads.div_ceil(clients).max(1);
    let cpu0 = s.cpu_seconds();
    let start = Instant::now();
    let total: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| download(s.addr, &s.target, per_client, &mut vec![0u8; 1 << 20]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let secs = start.elapsed().as_secs_f64();
    let cpu = s.cpu_seconds() - cpu0;
    assert_eq!(
        total,
        size * (per_client * clients) as u64,
        "{} short",
        s.name
    );
    let gb = total as f64 / 1e9;
    Round {
        gbps: gb / secs,
        cpu_per_gb: cpu / gb,
    }
}

/// Downloads the object `times` over one keep-alive connection; returns the
/// body bytes received.
pub fn download(addr: SocketAddr, target: &str, times: usize, buf: &mut [u8]) -> u64 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(900))).unwrap();
    let mut total = 0;
    for _ in 0..times {
        write!(s, "GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n").unwrap();
        // Read the head.
        let mut head = Vec::with_capacity(512);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let len: u64 = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        let mut left = len;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = s.read(&mut buf[..want]).unwrap();
            assert!(n > 0, "connection closed early");
            left -= n as u64;
        }
        total += len;
    }
    total
}

/// The median of `v` (the upper one for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Where a benchmark keeps its object and its servers' files: the given
/// directory, or a temporary one removed when this is dropped.
pub struct Workdir {
    /// The directory.
    pub dir: std::path::PathBuf,
    /// The object every server serves, `size` bytes.
    pub object: std::path::PathBuf,
    /// Its size.
    pub size: u64,
    _tmp: Option<tempfile::TempDir>,
}

impl Workdir {
    /// Prepares the directory and writes an object of `size_mib` MiB in it.
    pub fn new(dir: Option<&Path>, size_mib: u64) -> Workdir {
        let (dir, tmp) = match dir {
            Some(d) => (d.to_path_buf(), None),
            None => {
                let t = tempfile::tempdir().unwrap();
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(&dir).unwrap();
        let object = dir.join("object");
        let size = size_mib << 20;
        write_object(&object, size);
        Workdir {
            dir,
            object,
            size,
            _tmp: tmp,
        }
    }
}

/// Writes `size` pseudo-random bytes to `path` (kept when already there).
pub fn write_object(path: &Path, size: u64) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == size) {
        return;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// md5 and sha512 of a file.
pub fn hashes(path: &Path) -> ([u8; 16], [u8; 64]) {
    let mut f = std::fs::File::open(path).unwrap();
    let mut md5 = md5::Md5::new();
    let mut sha = sha2::Sha512::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        sha.update(&buf[..n]);
    }
    (md5.finalize().into(), sha.finalize().into())
}
