//! The `glance-api` binary: serve the API, or run the quickstart.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use glance_api::config::Config;
use glance_api::{metadata, quickstart, server};

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
    Quickstart(Box<quickstart::Args>),
    /// Manage the SQL metadata database.
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Subcommand)]
enum DbCommand {
    /// Create or upgrade the tables of the `[metadata] url` database (as
    /// `glance-manage db_sync`). Safe to run again, and from several hosts.
    Sync {
        /// The configuration file naming the database.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Copy an embedded (redb) metadata file into an empty SQL database,
    /// all or nothing (the database is synced first).
    Migrate {
        /// The redb file: `redb:PATH`.
        #[arg(long, value_name = "redb:PATH")]
        from: String,
        /// The database: `postgresql://...`, `mysql://...` or `mariadb://...`
        /// (from GLANCE_METADATA_URL when not given: a password on the
        /// command line is visible to every local user).
        #[arg(
            long,
            value_name = "URL",
            env = "GLANCE_METADATA_URL",
            hide_env_values = true
        )]
        to: String,
    },
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
            (Some(Command::Quickstart(args)), _) => quickstart::run(*args).await,
            (Some(Command::Db(command)), _) => db(command).await,
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

/// Runs a `db` command off the async threads (the metadata stores block).
async fn db(command: DbCommand) -> Result<(), String> {
    tokio::task::spawn_blocking(move || match command {
        DbCommand::Sync { config } => db_sync(&config),
        DbCommand::Migrate { from, to } => db_migrate(&from, &to),
    })
    .await
    .map_err(|e| format!("db: {e}"))?
}

fn db_sync(config: &std::path::Path) -> Result<(), String> {
    let config = Config::load(config).map_err(|e| e.to_string())?;
    let glance_api::config::MetadataConfig::Sql { url, .. } = &config.metadata else {
        return Err(
            "db sync: the config keeps metadata in a redb file, which needs no sync; \
             give a [metadata] url to use a SQL database"
                .into(),
        );
    };
    let applied = metadata::sync(url).map_err(|e| e.to_string())?;
    let shown = metadata::redact(url);
    if applied.is_empty() {
        println!("{shown}: the schema is current");
    } else {
        let list: Vec<String> = applied.iter().map(i64::to_string).collect();
        println!("{shown}: applied migration {}", list.join(", "));
    }
    Ok(())
}

fn db_migrate(from: &str, to: &str) -> Result<(), String> {
    let Some(path) = from.strip_prefix("redb:") else {
        // The value is not echoed: it may be a database URL given here by mistake.
        return Err("db migrate --from: give redb:PATH (the embedded file)".into());
    };
    let path = std::path::Path::new(path);
    if !path.is_file() {
        return Err(format!(
            "db migrate: no metadata file at {}",
            path.display()
        ));
    }
    let source = metadata::RedbStore::open(path).map_err(|e| e.to_string())?;
    metadata::sync(to).map_err(|e| e.to_string())?;
    let target = metadata::SqlStore::open(to, 2).map_err(|e| e.to_string())?;
    let n = target
        .import(&source)
        .map_err(|e| format!("db migrate: {e}"))?;
    println!(
        "copied {} images, {} memberships, {} stream nodes, {} signing key records and {} documents (tasks, metadata definitions) from {} to {}",
        n.images,
        n.members,
        n.stream_nodes,
        n.signing_keys,
        n.documents,
        path.display(),
        metadata::redact(to)
    );
    Ok(())
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
