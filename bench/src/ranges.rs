//! The random-range benchmark: many keep-alive clients fetch ranges of one
//! hot object at random offsets, from glance-stream (signed link, file
//! store) and from nginx (`sendfile on`, `tcp_nopush` off: its fastest
//! setting for small responses), in alternating rounds. Every body is
//! compared with the object's bytes at its offset.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::hot::{Workdir, median};
use crate::load::{Load, micros_since};
use crate::peer::{self, Server};

/// Options of `glance-bench ranges`.
#[derive(clap::Args)]
pub struct RangesArgs {
    /// Object size in MiB.
    #[arg(long, default_value_t = 256)]
    size_mib: u64,
    /// Range size in KiB.
    #[arg(long, default_value_t = 64)]
    range_kib: u64,
    /// Client counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    clients: Vec<usize>,
    #[command(flatten)]
    load: Load,
    /// Worker threads of glance-stream and worker processes of nginx.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Directory for the object and the servers' files (default: a temporary one).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

pub fn run(args: &RangesArgs) {
    let work = Workdir::new(args.dir.as_deref(), args.size_mib);
    let object = std::fs::read(&work.object).unwrap();
    let servers = [
        peer::glance_stream(&work.dir, &work.object, args.workers),
        peer::nginx(&work.dir, &work.object, args.workers, false),
    ];
    let range = (args.range_kib << 10).min(work.size).max(1);
    println!(
        "random ranges: {} KiB of a {} MiB object, {} s rounds, {} rounds, {} server workers, {} cores",
        args.range_kib,
        args.size_mib,
        args.load.seconds,
        args.load.rounds,
        args.workers,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| clients | server | req/s (median) | p50 ms | p99 ms | server CPU µs/req |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for &clients in &args.clients {
        let mut results: Vec<Vec<[f64; 4]>> = servers.iter().map(|_| Vec::new()).collect();
        for r in 0..args.load.rounds {
            for (i, s) in servers.iter().enumerate() {
                results[i].push(round(s, clients, args, range, &object, r as u64));
            }
        }
        let meds: Vec<[f64; 4]> = results
            .iter()
            .map(|rs| {
                let m = |k: usize| median(rs.iter().map(|r| r[k]).collect());
                [m(0), m(1), m(2), m(3)]
            })
            .collect();
        for (s, m) in servers.iter().zip(&meds) {
            println!(
                "| {clients} | {} | {:.0} | {:.2} | {:.2} | {:.1} |",
                s.name,
                m[0],
                m[1] / 1e3,
                m[2] / 1e3,
                m[3]
            );
        }
        println!(
            "| {clients} | ratio glance-stream/nginx | {:.2}x | {:.2}x | {:.2}x | {:.2}x |",
            meds[0][0] / meds[1][0],
            meds[0][1] / meds[1][1],
            meds[0][2] / meds[1][2],
            meds[0][3] / meds[1][3]
        );
    }
}

fn round(
    s: &Server,
    clients: usize,
    args: &RangesArgs,
    range: u64,
    object: &[u8],
    seed: u64,
) -> [f64; 4] {
    let deadline = Instant::now() + Duration::from_secs(args.load.seconds);
    crate::load::round(s, clients, |c| {
        let seed = seed.wrapping_mul(0x9e37_79b9).wrapping_add(c as u64 + 1);
        client(
            s.addr,
            &s.target,
            object,
            range,
            seed,
            deadline,
            args.load.max_requests,
        )
    })
}

/// One keep-alive client: random ranges until the deadline or `max`
/// requests; returns each request's latency in µs. Each body is checked.
fn client(
    addr: SocketAddr,
    target: &str,
    object: &[u8],
    range: u64,
    mut x: u64,
    deadline: Instant,
    max: usize,
) -> Vec<u32> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let size = object.len() as u64;
    let mut buf = vec![0u8; (range as usize + 4096).max(64 << 10)];
    let mut out = Vec::with_capacity(max.min(1 << 20));
    let mut req = String::with_capacity(256);
    while out.len() < max && Instant::now() < deadline {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let first = x % (size - range + 1);
        let last = first + range - 1;
        req.clear();
        use std::fmt::Write as _;
        write!(
            req,
            "GET {target} HTTP/1.1\r\nHost: bench\r\nRange: bytes={first}-{last}\r\n\r\n"
        )
        .unwrap();
        let t0 = Instant::now();
        s.write_all(req.as_bytes()).unwrap();
        let body = read_response(&mut s, &mut buf);
        out.push(micros_since(t0));
        assert_eq!(
            body,
            &object[first as usize..=last as usize],
            "wrong bytes for {first}-{last}"
        );
    }
    out
}

/// Reads one `206` response into `buf`; returns its body. The buffer holds
/// a whole response (head + range), so nothing is left over between them.
fn read_response<'b>(s: &mut TcpStream, buf: &'b mut [u8]) -> &'b [u8] {
    let mut have = 0;
    let (head_end, len) = loop {
        let n = s.read(&mut buf[have..]).unwrap();
        assert!(n > 0, "connection closed early");
        have += n;
        if let Some(p) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 206"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap();
            break (p + 4, len);
        }
    };
    let end = head_end + len;
    assert!(end <= buf.len(), "response larger than the buffer");
    while have < end {
        let n = s.read(&mut buf[have..end]).unwrap();
        assert!(n > 0, "connection closed early");
        have += n;
    }
    &buf[head_end..end]
}
