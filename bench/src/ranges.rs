//! The random-range benchmark: many keep-alive clients fetch ranges of one
//! hot object at random offsets, from glance-stream (signed link, file
//! store) and from nginx (`sendfile on`, `tcp_nopush` off: its fastest
//! setting for small responses), in alternating rounds. Every body is
//! compared with the object's bytes at its offset.

use std::time::Instant;

use crate::client::{Check, Conn, Sample};
use crate::load::{self, Load, Round};
use crate::object::Workdir;
use crate::peer::{self, Server};
use crate::report::{self, Metric, Run, Scenario};

/// Options of `glance-bench ranges`.
#[derive(clap::Args, Clone)]
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

const COLUMNS: &[&Metric] = &[
    &report::REQ_PER_S,
    &report::SERVER_CPU_PER_REQ,
    &report::LATENCY_P50,
    &report::LATENCY_P99,
    &report::TTFB_P50,
    &report::PEAK_RSS,
    &report::CLIENT_CPU_PER_REQ,
];

/// Runs the scenario; `command` is how it was asked for.
pub fn run(run: &mut Run, args: &RangesArgs, command: String) {
    peer::ensure_nginx();
    let work = Workdir::new(args.dir.as_deref(), args.size_mib);
    let object = std::fs::read(&work.object).unwrap();
    let servers = [
        peer::glance_stream(&work.dir, &work, args.workers),
        peer::nginx(&work.dir, &work.object, args.workers, false),
    ];
    let range = (args.range_kib << 10).min(work.size).max(1);
    run.begin(Scenario::new(
        "ranges",
        format!(
            "random ranges: {} KiB of a {} MiB object, {} s rounds, {} rounds, {} server workers, {} cores",
            args.range_kib,
            args.size_mib,
            args.load.seconds,
            args.load.rounds,
            args.workers,
            report::machine()["cores"]
        ),
        command,
        serde_json::json!({
            "size_mib": args.size_mib, "range_kib": args.range_kib, "seconds": args.load.seconds,
            "rounds": args.load.rounds, "workers": args.workers,
        }),
        COLUMNS,
    ));
    run.plan(args.clients.len() * args.load.rounds * servers.len());
    let refs: Vec<&Server> = servers.iter().collect();
    for &clients in &args.clients {
        // The same ranges for every server in a round.
        let point = load::compare(run, &refs, clients, None, args.load.rounds, |s, r| {
            round(s, clients, args, range, &object, r as u64 + 1)
        });
        run.point(point);
    }
}

fn round(
    s: &Server,
    clients: usize,
    args: &RangesArgs,
    range: u64,
    object: &[u8],
    seed: u64,
) -> Round {
    let deadline = args.load.deadline();
    load::round(s, clients, |c| {
        let seed = seed.wrapping_mul(0x9e37_79b9).wrapping_add(c as u64 + 1);
        client(s, object, range, seed, deadline, args.load.max_requests)
    })
}

/// One keep-alive client: random ranges until the deadline or `max`
/// requests, each body compared with the object's bytes.
fn client(
    s: &Server,
    object: &[u8],
    range: u64,
    mut x: u64,
    deadline: Instant,
    max: usize,
) -> Vec<Sample> {
    use std::fmt::Write as _;
    let mut conn = Conn::connect(s.addr);
    let size = object.len() as u64;
    let mut out = Vec::with_capacity(max.min(1 << 20));
    let mut header = String::with_capacity(64);
    while out.len() < max && Instant::now() < deadline {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let first = x % (size - range + 1);
        let last = first + range - 1;
        header.clear();
        write!(header, "Range: bytes={first}-{last}\r\n").unwrap();
        let want = Check::Bytes(&object[first as usize..=last as usize]);
        out.push(conn.fetch(&s.target, &header, 206, &want).1);
    }
    out
}
