//! `switchboard edge | router | standalone`: parses flags, loads the
//! configuration (exit 64 listing every problem), initialises tracing and
//! the shutdown token, then hands over to the libraries.

mod config;
mod console;
mod local;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Distributed WebSocket push gateway.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
struct Cli {
    /// TOML configuration file (must exist when given). Environment
    /// variables `SWITCHBOARD_<SECTION>__<KEY>` override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Edge + router in one process, no NATS (the default).
    Standalone,
    /// An edge: client WebSockets, connected to NATS.
    Edge,
    /// A router: presence, routing and the HTTP API, connected to NATS.
    Router,
    /// Print the effective configuration check and exit (0 if valid).
    CheckConfig,
}

/// Raises the soft limit on open files to the hard limit: every client is
/// a file descriptor, and service managers start processes with a soft
/// limit (systemd: 1024) far below what the hard limit allows.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(open_files = n, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match switchboard_runtime::config::load::<config::Config>(
        cli.config.as_deref(),
        config::ENV_ROOTS,
        config::ENV_RAW,
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return ExitCode::from(64);
        }
    };
    let command = cli.command.unwrap_or(Command::Standalone);
    let mut problems = Vec::new();
    config.validate_for(
        matches!(command, Command::Router | Command::Standalone),
        matches!(command, Command::Standalone),
        &mut problems,
    );
    if !problems.is_empty() {
        eprintln!("switchboard: invalid configuration:\n  - {}", problems.join("\n  - "));
        return ExitCode::from(64);
    }
    switchboard_runtime::telemetry::init(&config.log);
    if !matches!(command, Command::CheckConfig) {
        raise_open_files_limit();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Standalone => run::standalone(config).await,
            Command::Edge => run::edge(config).await,
            Command::Router => run::router(config).await,
            Command::CheckConfig => {
                println!("configuration is valid");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "switchboard stopped");
            ExitCode::FAILURE
        }
    }
}
