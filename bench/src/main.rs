//! glance-bench: measures glance-stream next to a peer serving the same bytes
//! in the same run, on this machine.
//!
//! `glance-bench hot` serves one hot (page-cached) object from glance-stream
//! (signed link, file store) and from nginx (`sendfile on`, static root), to
//! 1, 4 and 16 keep-alive clients, and reports throughput and server CPU
//! seconds per GB (user + system time of the server's processes, read from
//! /proc). Rounds alternate between the servers; medians are reported.
//!
//! `glance-bench cold` sends 8, 32 and 128 clients at once after one image
//! that no cache holds, from a rate-limited nginx origin, through
//! glance-stream and through nginx `proxy_cache` with `proxy_cache_lock`,
//! and reports the origin bytes and the time until every client is done.
//!
//! `glance-bench ranges` has 16 and 64 keep-alive clients fetch 64 KiB
//! ranges at random offsets of a hot object from glance-stream and from
//! nginx, checking every body, and reports requests per second, latency
//! percentiles and server CPU per request.
//!
//! `glance-bench api` measures glance-api: image shows and download
//! redirects (`307` to a signed link) per second, with latency percentiles.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod cold;
mod hot;
mod load;
mod peer;
mod ranges;

use clap::{Parser, Subcommand};

/// Benchmarks for glance-stream.
#[derive(Parser)]
#[command(name = "glance-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Hot object throughput and CPU per GB: glance-stream vs nginx sendfile.
    Hot(hot::HotArgs),
    /// Cold storm: many clients, one uncached image, a rate-limited origin:
    /// glance-stream vs nginx proxy_cache with its cache lock.
    Cold(cold::ColdArgs),
    /// Random ranges of a hot object: requests/s and latency, glance-stream
    /// vs nginx sendfile.
    Ranges(ranges::RangesArgs),
    /// glance-api: image show and download redirects per second.
    Api(api::ApiArgs),
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Hot(args) => hot::run(&args),
        Command::Cold(args) => cold::run(&args),
        Command::Ranges(args) => ranges::run(&args),
        Command::Api(args) => api::run(&args),
    }
}
