//! The upload benchmark: clients upload images through glance-api (static
//! tokens, redb, a file store) and through the real Glance (uWSGI, SQLite,
//! its file store), each upload a create and a `PUT` of the data, after
//! which the image must be active with the md5 and sha512 of the data, as
//! the server computed them on the way. Images are deleted between rounds.

use crate::client::Sample;
use crate::imageapi::ImageApi;
use crate::load::{self, Round};
use crate::object::Workdir;
use crate::peer::{self, GlancePeer, Server};
use crate::report::{self, Metric, Run, Scenario};

/// Options of `glance-bench upload`.
#[derive(clap::Args, Clone)]
pub struct UploadArgs {
    /// Image size in MiB.
    #[arg(long, default_value_t = 256)]
    size_mib: u64,
    /// Client counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    clients: Vec<usize>,
    /// Uploads per client per round.
    #[arg(long, default_value_t = 2)]
    uploads: usize,
    /// Rounds per server and client count (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Worker processes of the real Glance.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[command(flatten)]
    glance: GlancePeer,
    /// Directory for the data and the servers' files (default: a temporary one).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

const COLUMNS: &[&Metric] = &[
    &report::MIB_PER_S,
    &report::SERVER_CPU_PER_GIB,
    &report::CLIENT_MIB_PER_S_P50,
    &report::LATENCY_P50,
    &report::LATENCY_P99,
    &report::PEAK_RSS,
];

/// Runs the scenario; `command` is how it was asked for.
pub fn run(run: &mut Run, args: &UploadArgs, command: String) {
    let work = Workdir::new(args.dir.as_deref(), args.size_mib);
    let data = std::fs::read(&work.object).unwrap();
    // A stream node is not needed to take uploads; glance-api starts without.
    let keyring = work.dir.join("keyring.toml");
    peer::write_keyring(&keyring);
    run.begin(Scenario::new(
        "upload",
        format!(
            "uploads: {} MiB images, {} per client per round, {} rounds, md5 and sha512 checked, {} cores",
            args.size_mib,
            args.uploads,
            args.rounds,
            report::machine()["cores"]
        ),
        command,
        serde_json::json!({
            "size_mib": args.size_mib, "uploads": args.uploads, "rounds": args.rounds,
            "glance_workers": args.workers,
        }),
        COLUMNS,
    ));
    let mut servers = vec![peer::glance_api(&work.dir.join("api"), None, &keyring)];
    servers.extend(
        args.glance
            .start(run, &work.dir.join("glance"), args.workers),
    );
    run.plan(args.clients.len() * args.rounds * servers.len());
    let refs: Vec<&Server> = servers.iter().collect();
    for &clients in &args.clients {
        let point = load::compare(run, &refs, clients, None, args.rounds, |s, _| {
            let api = if s.key == "ours" {
                ImageApi::ours(s)
            } else {
                ImageApi::glance(s)
            };
            round(&api, clients, args.uploads, &data, &work.hashes)
        });
        run.point(point);
    }
}

/// `clients` clients each upload `uploads` images of `data` over one
/// keep-alive connection; each is checked, then deleted after the round.
fn round(
    api: &ImageApi,
    clients: usize,
    uploads: usize,
    data: &[u8],
    hashes: &([u8; 16], [u8; 64]),
) -> Round {
    let made = std::sync::Mutex::new(Vec::new());
    let round = load::round(api.server, clients, |c| {
        let mut conn = api.connect();
        let mut out: Vec<Sample> = Vec::with_capacity(uploads);
        for i in 0..uploads {
            let id = api.create(&mut conn, &format!("bench-{c}-{i}"));
            out.push(api.upload(&mut conn, &id, data));
            api.check_hashes(&mut conn, &id, hashes);
            made.lock().unwrap().push(id);
        }
        out
    });
    let mut conn = api.connect();
    for id in made.into_inner().unwrap() {
        api.delete(&mut conn, &id);
    }
    round
}
