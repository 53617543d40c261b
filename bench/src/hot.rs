//! The hot-object benchmark: keep-alive clients download one cached image
//! again and again, from glance-stream (signed link, file store), from nginx
//! (`sendfile on`, `tcp_nopush on`, a static root) and from the real Glance
//! (uWSGI, its file store), all serving the same bytes from the page cache.
//! With `--idle`, a slowloris holds that many idle connections open against
//! the server during each round (see `slowloris`), to show what they cost
//! the real downloads. With `--tls`, glance-stream (its cache, the bodies
//! encrypted from the mapped cache file) and nginx (OpenSSL) serve HTTPS
//! with the same certificate, and the clients speak TLS.

use crate::client::{Check, Conn, Verify};
use crate::imageapi::ImageApi;
use crate::load::{self, Round};
use crate::object::Workdir;
use crate::peer::{self, GlancePeer, Server};
use crate::report::{self, Metric, Run, Scenario};
use crate::slowloris::{self, Holder};

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
    /// Idle connection counts to run each client count with, comma-separated:
    /// during each round a slowloris holds that many connections open against
    /// the server, each having sent part of a request head, reopening any the
    /// server closes.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    idle: Vec<usize>,
    /// Rounds per server, client count and idle count (medians are reported).
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
    /// HTTPS: glance-stream and nginx serve TLS (the real Glance is left
    /// out: it serves plain HTTP behind a proxy).
    #[arg(long, conflicts_with = "idle")]
    tls: bool,
}

/// The columns when some points hold idle connections: the last says how
/// many of them the server dropped.
const IDLE_COLUMNS: &[&Metric] = &[
    &report::GB_PER_S,
    &report::SERVER_CPU_PER_GB,
    &report::CLIENT_GB_PER_S_MIN,
    &report::LATENCY_P50,
    &report::LATENCY_P99,
    &report::TTFB_P50,
    &report::TTFB_P99,
    &report::PEAK_RSS,
    &report::CLIENT_CPU_PER_GB,
    &report::IDLE_DROPPED,
];

/// The columns otherwise.
const COLUMNS: &[&Metric] = IDLE_COLUMNS.split_at(IDLE_COLUMNS.len() - 1).0;

/// The longest the slowloris may take to open a round's idle connections.
const IDLE_OPEN_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the scenario; `command` is how it was asked for.
pub fn run(run: &mut Run, args: &HotArgs, command: String) {
    peer::ensure_nginx();
    let work = Workdir::new(args.dir.as_deref(), args.size_mib);
    let with_idle = slowloris::kind(0, &args.idle).is_some();
    let scenario = Scenario::new(
        "hot",
        format!(
            "hot object{}: {} MiB, at least {} downloads per round, {} rounds, {} server workers, {} cores{}",
            if args.tls { " over HTTPS" } else { "" },
            args.size_mib,
            args.downloads,
            args.rounds,
            args.workers,
            report::machine()["cores"],
            if with_idle {
                ", idle connections held by a slowloris"
            } else {
                ""
            }
        ),
        command,
        serde_json::json!({
            "size_mib": args.size_mib, "downloads": args.downloads, "rounds": args.rounds,
            "workers": args.workers, "verify": format!("{:?}", args.verify), "idle": args.idle,
            "tls": args.tls,
        }),
        if with_idle { IDLE_COLUMNS } else { COLUMNS },
    );
    run.begin(if with_idle {
        scenario.by_kind("load")
    } else {
        scenario
    });
    let most = args.idle.iter().max().unwrap_or(&0) + args.clients.iter().max().unwrap_or(&0);
    if most >= peer::NGINX_WORKER_CONNECTIONS {
        run.note(format!(
            "{most} connections at once may exceed nginx's worker_connections ({})",
            peer::NGINX_WORKER_CONNECTIONS
        ));
    }
    let tls = args.tls.then(|| peer::Tls::new(&work.dir));
    let mut servers = match &tls {
        Some(tls) => vec![
            peer::glance_stream_tls(&work.dir, &work, args.workers, tls),
            peer::nginx_tls(&work.dir, &work.object, args.workers, tls),
        ],
        None => vec![
            peer::glance_stream(&work.dir, &work, args.workers),
            peer::nginx(&work.dir, &work.object, args.workers, true),
        ],
    };
    let image = std::fs::read(&work.object).unwrap();
    if tls.is_none()
        && let Some(mut glance) = args
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
        Conn::to(s).fetch(&s.target, "", 200, &check);
    }
    run.plan(args.clients.len() * args.idle.len() * args.rounds * servers.len());
    let refs: Vec<&Server> = servers.iter().collect();
    for &clients in &args.clients {
        let per_client = args.downloads.div_ceil(clients).max(1);
        for &idle in &args.idle {
            let kind = slowloris::kind(idle, &args.idle);
            let point = load::compare(run, &refs, clients, kind.as_deref(), args.rounds, |s, _| {
                let check = args.verify.check(&image, &work.hashes.1);
                // Every idle connection is open before the downloads start,
                // and closed once they are done.
                let holder = (idle > 0).then(|| Holder::open(s.addr, idle, IDLE_OPEN_WITHIN));
                let mut r = round(s, clients, per_client, &check);
                if let Some(holder) = holder {
                    let dropped = holder.close();
                    r.metrics
                        .insert(report::IDLE_DROPPED.key.to_owned(), dropped as f64);
                }
                r
            });
            run.point(point);
        }
    }
}

/// `clients` clients each download the object `per_client` times over one
/// keep-alive connection.
fn round(s: &Server, clients: usize, per_client: usize, check: &Check) -> Round {
    load::round(s, clients, |_| {
        let mut conn = Conn::to(s);
        (0..per_client)
            .map(|_| conn.fetch(&s.target, "", 200, check).1)
            .collect()
    })
}
