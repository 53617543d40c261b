//! The metadata benchmark: one glance-api on each metadata store (its
//! embedded redb file, PostgreSQL, MariaDB), measured in turn in one run:
//! keep-alive clients show an image (`GET /v2/images/{id}`), list a page of
//! images (`GET /v2/images?limit=25`) and create images (`POST
//! /v2/images`). Every answer's status is checked. The databases are the
//! caller's throw-away ones (`scripts/sql.sh start` makes servers); the
//! bench creates the tables.

use crate::api::COLUMNS;
use crate::imageapi::ImageApi;
use crate::load::{self, Load};
use crate::object::Workdir;
use crate::peer::{self, Auth, Server};
use crate::report::{self, Run, Scenario};

/// Options of `glance-bench metadata`.
#[derive(clap::Args, Clone)]
pub struct MetadataArgs {
    /// Client counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,32")]
    clients: Vec<usize>,
    #[command(flatten)]
    load: Load,
    /// An empty PostgreSQL database (postgresql://USER:PASSWORD@HOST:PORT/DB).
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// An empty MariaDB or MySQL database (mysql://... or mariadb://...).
    #[arg(long, value_name = "URL")]
    mariadb: Option<String>,
    /// Images created before the rounds, so lists page through a catalogue.
    #[arg(long, default_value_t = 200)]
    images: usize,
    /// Directory for the servers' files (default: a temporary one).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// What a request kind sends and must get.
struct Kind {
    name: &'static str,
    method: &'static str,
    target: fn(&str) -> String,
    body: &'static [u8],
    status: u16,
}

const KINDS: [Kind; 3] = [
    Kind {
        name: "show",
        method: "GET",
        target: |id| format!("/v2/images/{id}"),
        body: b"",
        status: 200,
    },
    Kind {
        name: "list",
        method: "GET",
        target: |_| "/v2/images?limit=25".to_owned(),
        body: b"",
        status: 200,
    },
    Kind {
        name: "create",
        method: "POST",
        target: |_| "/v2/images".to_owned(),
        body: br#"{"name": "bench", "disk_format": "raw", "container_format": "bare"}"#,
        status: 201,
    },
];

/// Runs the scenario; `command` is how it was asked for.
pub fn run(run: &mut Run, args: &MetadataArgs, command: String) {
    let work = Workdir::with_size(args.dir.as_deref(), 1 << 10);
    let keyring = work.dir.join("keyring.toml");
    glance_link::write_private_file(
        &keyring,
        "primary = \"k1\"\n[keys]\nk1 = \"AUpHxry2pHEpkVJGCYLJ-TpiLWITLVzhgiWlW1sGUv8\"\n",
        "keyring",
    )
    .unwrap();
    let mut servers = vec![peer::glance_api_on(
        &work.dir.join("redb"),
        None,
        &keyring,
        &Auth::Static,
        None,
        ("ours", "glance-api on redb"),
    )];
    for (url, key, name) in [
        (&args.postgres, "postgresql", "glance-api on PostgreSQL"),
        (&args.mariadb, "mariadb", "glance-api on MariaDB"),
    ] {
        let Some(url) = url else { continue };
        glance_api::metadata::sync(url).unwrap_or_else(|e| panic!("{name}: {e}"));
        servers.push(peer::glance_api_on(
            &work.dir.join(key),
            None,
            &keyring,
            &Auth::Static,
            Some(url),
            (key, name),
        ));
    }
    let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
    run.begin(
        Scenario::new(
            "metadata",
            format!(
                "image API on each metadata store: {} (static tokens, {} images before the rounds), {} s rounds, {} rounds, {} cores",
                names.join(", "),
                args.images,
                args.load.seconds,
                args.load.rounds,
                report::machine()["cores"]
            ),
            command,
            serde_json::json!({
                "seconds": args.load.seconds, "rounds": args.load.rounds, "images": args.images,
            }),
            COLUMNS,
        )
        .by_kind("request"),
    );
    // The same catalogue on each: `images` records, the first one shown.
    let ids: Vec<String> = servers
        .iter()
        .map(|s| {
            let api = ImageApi::ours(s);
            let mut conn = api.connect();
            let mut first = None;
            for i in 0..args.images.max(1) {
                let id = api.create(&mut conn, &format!("catalogue-{i}"));
                first.get_or_insert(id);
            }
            first.unwrap_or_default()
        })
        .collect();
    run.plan(args.clients.len() * args.load.rounds * KINDS.len() * servers.len());
    // Creates come last: they grow the catalogue the lists read.
    for kind in &KINDS {
        for &clients in &args.clients {
            let refs: Vec<&Server> = servers.iter().collect();
            let point = load::compare(
                run,
                &refs,
                clients,
                Some(kind.name),
                args.load.rounds,
                |s, _| {
                    let i = servers
                        .iter()
                        .position(|x| std::ptr::eq(x, s))
                        .expect("a measured server");
                    let target = (kind.target)(&ids[i]);
                    let request = (kind.method, target.as_str(), kind.body);
                    crate::api::round(
                        &ImageApi::ours(s),
                        clients,
                        &args.load,
                        request,
                        kind.status,
                        "",
                    )
                },
            );
            run.point(point);
        }
    }
}
