//! The `glance-api` binary: serve the API, or run the quickstart.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use glance_api::config::Config;
use glance_api::{quickstart, server};

/// glance-api: the Glance Image API v2, with downloads redirected to glance-stream.
#[derive(Parser)]
#[command(name = "glance-api", version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// The configuration file (TOML; see docs/operations.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a working directory and run glance-api with one glance-stream node.
    Quickstart(quickstart::Args),
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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("glance-api: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match (cli.command, cli.config) {
            (Some(Command::Quickstart(args)), _) => quickstart::run(args).await,
            (None, Some(path)) => run(path).await,
            (None, None) => {
                Err("give --config FILE, or run `glance-api quickstart` (see --help)".into())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("glance-api: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: PathBuf) -> Result<(), String> {
    let config = Config::load(&path).map_err(|e| e.to_string())?;
    let listener = server::bind(&config).await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let state = server::state(config).map_err(|e| e.to_string())?;
    println!("glance-api listening on {addr}");
    server::serve(listener, state, server::signal())
        .await
        .map_err(|e| e.to_string())
}
