//! glance-bench: measures glance-stream and glance-api next to their peers
//! serving the same bytes in the same run, on this machine, and writes the
//! figures as Markdown tables, `results.json` and an HTML report.
//!
//! - `hot`: keep-alive clients download a cached image again and again:
//!   glance-stream vs nginx `sendfile on` vs the real Glance; `--idle`
//!   adds a slowloris holding idle connections open meanwhile.
//! - `storm`: many clients ask at once for one image no cache holds, from a
//!   rate-limited origin: glance-stream vs nginx `proxy_cache_lock`.
//! - `ranges`: random ranges of a hot image: glance-stream vs nginx.
//! - `upload`: image uploads through glance-api vs the real Glance.
//! - `api`: image shows and download redirects per second: glance-api vs
//!   the real Glance.
//! - `metadata`: image shows, lists and creates per second, glance-api on
//!   its redb file vs on PostgreSQL vs on MariaDB (databases the caller
//!   gives; not part of `all`).
//! - `all`: every scenario in turn (`--quick`: a few minutes on 2 cores).
//!
//! Each reports aggregate and per-client throughput or requests per second,
//! latency and time-to-first-byte percentiles, server CPU per GB (or per
//! request) and peak RSS from /proc, and the bench's own CPU, so a client
//! bottleneck shows. The bench installs and starts its peers itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod client;
mod hot;
mod html;
mod imageapi;
mod load;
mod measure;
mod metadata;
mod object;
mod peer;
mod ranges;
mod report;
mod slowloris;
mod storm;
mod upload;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Benchmarks for glance-stream and glance-api, beside their peers.
#[derive(Parser)]
#[command(name = "glance-bench", version)]
struct Cli {
    /// Write DIR/results.json and DIR/index.html (the report) at the end.
    #[arg(long, global = true, value_name = "DIR")]
    report: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Hot image throughput and CPU per GB: glance-stream vs nginx sendfile
    /// vs the real Glance.
    Hot(hot::HotArgs),
    /// Cold storm: many clients, one uncached image, a rate-limited origin:
    /// glance-stream vs nginx proxy_cache with its cache lock.
    #[command(alias = "cold")]
    Storm(storm::StormArgs),
    /// Random ranges of a hot image: requests/s and latency, glance-stream
    /// vs nginx sendfile.
    Ranges(ranges::RangesArgs),
    /// Image uploads through glance-api vs the real Glance.
    Upload(upload::UploadArgs),
    /// Image shows and download redirects per second: glance-api vs the
    /// real Glance.
    Api(api::ApiArgs),
    /// Image shows, lists and creates per second on each metadata store:
    /// redb vs PostgreSQL vs MariaDB.
    Metadata(metadata::MetadataArgs),
    /// Every scenario in turn.
    All(AllArgs),
}

/// Options of `glance-bench all`.
#[derive(clap::Args)]
struct AllArgs {
    /// Small sizes, short rounds: a few minutes on 2 cores.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run, comma-separated (default: all).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "hot,storm,ranges,upload,api"
    )]
    only: Vec<String>,
    #[command(flatten)]
    glance: peer::GlancePeer,
}

/// One scenario's options from words, as if typed after its name.
#[derive(Parser)]
#[command(name = "glance-bench")]
struct Words<T: clap::Args> {
    #[command(flatten)]
    args: T,
}

fn parse<T: clap::Args>(scenario: &str, words: &[String]) -> T {
    let argv = std::iter::once(format!("glance-bench {scenario}")).chain(words.iter().cloned());
    Words::<T>::try_parse_from(argv)
        .unwrap_or_else(|e| e.exit())
        .args
}

/// The options `all` gives a scenario: `quick` or full, plus the peers'.
fn all_words(scenario: &str, a: &AllArgs) -> Vec<String> {
    let quick = match scenario {
        "hot" => "--size-mib 256 --clients 1,16,64 --downloads 32 --rounds 2",
        "storm" => "--size-mib 256 --clients 8,32",
        "ranges" => "--size-mib 64 --clients 16,64 --seconds 3 --rounds 2",
        "upload" => "--size-mib 64 --clients 1,4 --uploads 2 --rounds 2",
        "api" => "--clients 8,32 --seconds 3 --rounds 2",
        _ => "",
    };
    let mut words: Vec<String> = if a.quick {
        quick.split_whitespace().map(str::to_owned).collect()
    } else {
        Vec::new()
    };
    if matches!(scenario, "hot" | "upload" | "api") {
        if a.glance.no_glance {
            words.push("--no-glance".into());
        }
        words.push("--glance-venv".into());
        words.push(a.glance.glance_venv.display().to_string());
    }
    words
}

fn main() {
    let cli = Cli::parse();
    let mut run = report::Run::new(cli.report);
    let typed = format!(
        "glance-bench {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    match cli.command {
        Command::Hot(args) => hot::run(&mut run, &args, typed),
        Command::Storm(args) => storm::run(&mut run, &args, typed),
        Command::Ranges(args) => ranges::run(&mut run, &args, typed),
        Command::Upload(args) => upload::run(&mut run, &args, typed),
        Command::Api(args) => api::run(&mut run, &args, typed),
        Command::Metadata(args) => metadata::run(&mut run, &args, typed),
        Command::All(a) => {
            const SCENARIOS: [&str; 5] = ["hot", "storm", "ranges", "upload", "api"];
            if let Some(other) = a.only.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
                eprintln!("glance-bench: no scenario named {other:?} (there are {SCENARIOS:?})");
                std::process::exit(2);
            }
            for scenario in &a.only {
                let words = all_words(scenario, &a);
                let line = format!("glance-bench {scenario} {}", words.join(" "));
                match scenario.as_str() {
                    "hot" => hot::run(&mut run, &parse(scenario, &words), line),
                    "storm" => storm::run(&mut run, &parse(scenario, &words), line),
                    "ranges" => ranges::run(&mut run, &parse(scenario, &words), line),
                    "upload" => upload::run(&mut run, &parse(scenario, &words), line),
                    "api" => api::run(&mut run, &parse(scenario, &words), line),
                    _ => unreachable!("checked above"),
                }
            }
        }
    }
    run.finish();
}
