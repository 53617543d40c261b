//! glance-bench: measures glance-stream next to a peer serving the same bytes
//! in the same run, on this machine.
//!
//! `glance-bench hot` serves one hot (page-cached) object from glance-stream
//! (signed link, file store) and from nginx (`sendfile on`, static root), to
//! 1, 4 and 16 keep-alive clients, and reports throughput and server CPU
//! seconds per GB (user + system time of the server's processes, read from
//! /proc). Rounds alternate between the servers; medians are reported.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hot;
mod peer;

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
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Hot(args) => hot::run(&args),
    }
}
