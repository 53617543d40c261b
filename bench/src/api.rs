//! The control-plane benchmark: keep-alive clients ask glance-api (static
//! tokens, or with `--keystone` a real Keystone's; redb metadata) for an
//! image's record (`GET /v2/images/{id}`) and
//! for its download redirect (`GET /v2/images/{id}/file`, a `307` to a
//! signed link), and the real Glance (uWSGI, SQLite, no auth) for the same
//! record. Every answer's status is checked, and every redirect's
//! `Location` is a signed link on the stream node.

use std::time::Instant;

use crate::client::Sample;
use crate::imageapi::ImageApi;
use crate::load::{self, Load, Round};
use crate::object::Workdir;
use crate::peer::{self, Auth, GlancePeer, Server};
use crate::report::{self, Metric, Run, Scenario};

/// Options of `glance-bench api`.
#[derive(clap::Args, Clone)]
pub struct ApiArgs {
    /// Client counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,32")]
    clients: Vec<usize>,
    #[command(flatten)]
    load: Load,
    /// Worker processes of the real Glance.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[command(flatten)]
    glance: GlancePeer,
    /// glance-api validates Keystone tokens (a real Keystone, started by
    /// tests/keystone/keystone.sh; the clients use demo-member's token)
    /// instead of static ones.
    #[arg(long)]
    keystone: bool,
    /// The Python venv Keystone is installed into (made if missing).
    #[arg(long, default_value = ".venv")]
    keystone_venv: std::path::PathBuf,
    /// Directory for the servers' files (default: a temporary one).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// The figures both image-API scenarios report.
pub const COLUMNS: &[&Metric] = &[
    &report::REQ_PER_S,
    &report::SERVER_CPU_PER_REQ,
    &report::LATENCY_P50,
    &report::LATENCY_P99,
    &report::PEAK_RSS,
    &report::CLIENT_CPU_PER_REQ,
];

/// What a request kind asks and must get.
struct Kind {
    name: &'static str,
    path: fn(&str) -> String,
    status: u16,
}

const KINDS: [Kind; 2] = [
    Kind {
        name: "show",
        path: |id| format!("/v2/images/{id}"),
        status: 200,
    },
    Kind {
        name: "redirect",
        path: ImageApi::file_target,
        status: 307,
    },
];

/// Runs the scenario; `command` is how it was asked for.
pub fn run(run: &mut Run, args: &ApiArgs, command: String) {
    let work = Workdir::with_size(args.dir.as_deref(), 1 << 20);
    let data = std::fs::read(&work.object).unwrap();
    let node = peer::glance_stream(&work.dir, &work, 1);
    let keystone = args
        .keystone
        .then(|| peer::keystone(&work.dir.join("keystone"), &args.keystone_venv));
    let (auth, token) = match &keystone {
        Some(k) => (Auth::Keystone(k), k.token("demo-member", "demo")),
        None => (Auth::Static, peer::API_TOKEN.to_owned()),
    };
    let api = peer::glance_api_with(
        &work.dir.join("api"),
        Some(node.addr),
        &work.dir.join("keyring.toml"),
        &auth,
    );
    let ours_id = ImageApi::with_token(&api, &token).image_with(&data, &work.hashes);
    run.begin(Scenario::new(
        "api",
        format!(
            "image API: glance-api ({}, redb, one healthy stream node){}, {} s rounds, {} rounds, {} cores",
            if args.keystone {
                "a real Keystone's tokens, validated once and cached"
            } else {
                "static tokens"
            },
            if !args.glance.no_glance { " vs the real Glance (uWSGI, SQLite, no auth)" } else { "" },
            args.load.seconds,
            args.load.rounds,
            report::machine()["cores"]
        ),
        command,
        serde_json::json!({
            "seconds": args.load.seconds, "rounds": args.load.rounds, "glance_workers": args.workers,
            "auth": if args.keystone { "keystone" } else { "static" },
        }),
        COLUMNS,
    )
    .by_kind("request"));
    let glance = args
        .glance
        .start(run, &work.dir.join("glance"), args.workers);
    let glance_id = glance
        .as_ref()
        .map(|g| ImageApi::glance(g).image_with(&data, &work.hashes));
    let peers = usize::from(glance.is_some());
    run.plan(args.clients.len() * args.load.rounds * (2 + peers));
    let node_url = format!("http://{}/v1/images/", node.addr);
    for &clients in &args.clients {
        for kind in &KINDS {
            // Glance has no redirect: the show is the one request both answer.
            let mut servers: Vec<(&Server, ImageApi, &str)> =
                vec![(&api, ImageApi::with_token(&api, &token), &ours_id)];
            if let (Some(g), Some(id), "show") = (&glance, &glance_id, kind.name) {
                servers.push((g, ImageApi::glance(g), id));
            }
            let refs: Vec<&Server> = servers.iter().map(|s| s.0).collect();
            let point = load::compare(
                run,
                &refs,
                clients,
                Some(kind.name),
                args.load.rounds,
                |s, _| {
                    let (_, image_api, id) = servers
                        .iter()
                        .find(|x| std::ptr::eq(x.0, s))
                        .expect("a measured server");
                    round(
                        image_api,
                        clients,
                        &args.load,
                        ("GET", &(kind.path)(id), b""),
                        kind.status,
                        &node_url,
                    )
                },
            );
            run.point(point);
        }
    }
}

/// One round of `method target` (with `body`) from `clients` keep-alive
/// clients, each answer checked to be `want`, and a redirect's `Location`
/// a signed link on the stream node at `node_url`.
pub fn round(
    api: &ImageApi,
    clients: usize,
    load: &Load,
    (method, target, body): (&str, &str, &[u8]),
    want: u16,
    node_url: &str,
) -> Round {
    let deadline = load.deadline();
    let headers = match method {
        "POST" => format!("{}Content-Type: application/json\r\n", api.headers),
        _ => api.headers.clone(),
    };
    load::round(api.server, clients, |_| {
        let mut conn = api.connect();
        let mut out = Vec::new();
        while out.len() < load.max_requests && Instant::now() < deadline {
            let t0 = Instant::now();
            let (head, ttfb) = conn.request(method, target, &headers, body);
            let text = conn.read_text(head.content_length);
            out.push(Sample {
                latency_us: crate::client::micros(t0.elapsed()),
                ttfb_us: crate::client::micros(ttfb),
                bytes: 0,
            });
            assert_eq!(head.status, want, "{method} {target}: {text}");
            if want == 307 {
                let l = head.location.unwrap_or_default();
                assert!(l.starts_with(node_url), "{l}");
                assert!(l.contains("&sig="), "{l}");
            }
        }
        out
    })
}
