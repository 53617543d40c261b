//! The hot-object benchmark: keep-alive clients download one cached image
//! again and again, from glance-stream (signed link, file store), from nginx
//! (`sendfile on`, `tcp_nopush on`, a static root) and from the real Glance
//! (uWSGI, its file store), all serving the same bytes from the page cache.

use crate::client::{Check, Conn, Verify};
use crate::imageapi::ImageApi;
use crate::load::{self, Round};
use crate::object::Workdir;
use crate::peer::{self, GlancePeer, Server};
use crate::report::{self, Metric, Run, Scenario};

/// Options of `glance-bench hot`.
#[derive(clap::Args, Clone)]
pub struct HotArgs {
    /// Object size in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Client counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Whole-object downloads per round, shared among the clients (at least
    /// one per client).
    #[arg(long, default_value_t = 16)]
    downloads: usize,
    /// Rounds per server and client count (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Worker threads of glance-stream, worker processes of nginx and of Glance.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// What the clients check of every body (the first download from each
    /// server is always compared byte for byte).
    #[arg(long, value_enum, default_value_t = Verify::Length)]
    verify: Verify,
    #[command(flatten)]
    glance: GlancePeer,
    /// Directory for the object and the servers' files (default: a temporary one).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

const COLUMNS: &[&Metric] = &[
    &report::GB_PER_S,
    &report::SERVER_CPU_PER_GB,
    &report::CLIENT_GB_PER_S_MIN,
    &report::LATENCY_P50,
    &report::LATENCY_P99,
    &report::TTFB_P50,
    &report::TTFB_P99,
    &report::PEAK_RSS,
    &report::CLIENT_CPU_PER_GB,
];

/// Runs the scenario; `command` is how it was asked for.
pub fn run(run: &mut Run, args: &HotArgs, command: String) {
    peer::ensure_nginx();
    let work = Workdir::new(args.dir.as_deref(), args.size_mib);
    run.begin(Scenario::new(
        "hot",
        format!(
            "hot object: {} MiB, at least {} downloads per round, {} rounds, {} server workers, {} cores",
            args.size_mib,
            args.downloads,
            args.rounds,
            args.workers,
            report::machine()["cores"]
        ),
        command,
        serde_json::json!({
            "size_mib": args.size_mib, "downloads": args.downloads, "rounds": args.rounds,
            "workers": args.workers, "verify": format!("{:?}", args.verify),
        }),
        COLUMNS,
    ));
    let mut servers = vec![
        peer::glance_stream(&work.dir, &work, args.workers),
        peer::nginx(&work.dir, &work.object, args.workers, true),
    ];
    let image = std::fs::read(&work.object).unwrap();
    if let Some(mut glance) = args
        .glance
        .start(run, &work.dir.join("glance"), args.workers)
    {
        let id = ImageApi::glance(&glance).image_with(&image, &work.hashes);
        glance.target = ImageApi::file_target(&id);
        servers.push(glance);
    }
    for s in &servers {
        // Warm the page cache, and check the server answers the whole object.
        let check = Verify::Bytes.check(&image, &work.hashes.1);
        Conn::connect(s.addr).fetch(&s.target, "", 200, &check);
    }
    run.plan(args.clients.len() * args.rounds * servers.len());
    let refs: Vec<&Server> = servers.iter().collect();
    for &clients in &args.clients {
        let per_client = args.downloads.div_ceil(clients).max(1);
        let point = load::compare(run, &refs, clients, None, args.rounds, |s, _| {
            let check = args.verify.check(&image, &work.hashes.1);
            round(s, clients, per_client, &check)
        });
        run.point(point);
    }
}

/// `clients` clients each download the object `per_client` times over one
/// keep-alive connection.
fn round(s: &Server, clients: usize, per_client: usize, check: &Check) -> Round {
    load::round(s, clients, |_| {
        let mut conn = Conn::connect(s.addr);
        (0..per_client)
            .map(|_| conn.fetch(&s.target, "", 200, check).1)
            .collect()
    })
}
