//! The `glance-stream` binary: run the server, or mint a link.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use glance_stream::config::Config;
use glance_stream::mint::{MintRequest, mint};
use glance_stream::server::Server;
use glance_stream::{clock, signals};

/// glance-stream: serves OpenStack images behind signed links, zero-copy from disk.
#[derive(Parser)]
#[command(
    name = "glance-stream",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// The configuration file (TOML; see docs/operations.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print one signed link to an image (for debugging and drills).
    Mint(MintArgs),
}

#[derive(Args)]
struct MintArgs {
    /// The configuration file: its keyring signs, its public_url is the base.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The store id (a [stores.<id>] table of the config).
    #[arg(long)]
    store: String,
    /// The image id (lowercase hyphenated UUID).
    #[arg(long)]
    image: String,
    /// Link lifetime in seconds.
    #[arg(long, value_name = "SECS", default_value_t = glance_link::DEFAULT_TTL_SECS)]
    ttl: u64,
    /// Image size in bytes (with --md5 and --sha512; otherwise read from the store).
    #[arg(long, requires_all = ["md5", "sha512"])]
    size: Option<u64>,
    /// Hex md5 of the image.
    #[arg(long, requires_all = ["size", "sha512"])]
    md5: Option<String>,
    /// Hex sha512 of the image.
    #[arg(long, requires_all = ["size", "md5"])]
    sha512: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: not in log files or journals.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match (cli.command, cli.config) {
        (Some(Command::Mint(args)), _) => run_mint(args),
        (None, Some(config)) => run_server(config),
        (None, None) => Err("give --config FILE to run the server (see --help)".to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("glance-stream: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_server(path: PathBuf) -> Result<(), String> {
    let config = Config::load(&path).map_err(|e| e.to_string())?;
    let threads = config.threads;
    let wanted = threads.get() as u64 * config.http.max_connections_per_thread as u64;
    match glance_stream::sys::raise_open_files_limit() {
        Ok(limit) if limit < wanted => tracing::warn!(
            limit,
            wanted,
            "the open-files limit is below threads x max_connections_per_thread: \
             connections past it are refused by the kernel, not answered 503"
        ),
        Ok(limit) => tracing::debug!(limit, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-files limit"),
    }
    let server = Server::start(config).map_err(|e| e.to_string())?;
    signals::install(server.shared())
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    // The first line on stdout says where the server listens: scripts wait for it.
    println!(
        "glance-stream listening on {} (driver {}, {threads} threads)",
        server.local_addr(),
        server.driver()
    );
    tracing::info!(addr = %server.local_addr(), driver = server.driver(), threads, "serving");
    server.join();
    tracing::info!("stopped");
    Ok(())
}

fn run_mint(args: MintArgs) -> Result<(), String> {
    let config = Config::load(&args.config).map_err(|e| e.to_string())?;
    let known = match (args.size, args.md5, args.sha512) {
        (Some(size), Some(md5), Some(sha512)) => Some((size, md5, sha512)),
        _ => None,
    };
    let req = MintRequest {
        store: args.store,
        image: args.image,
        ttl_secs: args.ttl,
        known,
    };
    println!("{}", mint(&config, &req, clock::unix_now())?);
    Ok(())
}
