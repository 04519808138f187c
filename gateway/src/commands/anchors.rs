//! `inkan anchors status`: how far each anchor backend is behind, and its
//! last error (read from the ledger; works while the gateway runs).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use ledger::log::Ledger;

use crate::config::Config;

#[derive(Debug, Args)]
pub struct AnchorsArgs {
    /// TOML configuration file; its `[ledger]` and `[anchors]` tables are used.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AnchorsCommand,
}

#[derive(Debug, Subcommand)]
pub enum AnchorsCommand {
    /// Per backend: last anchored checkpoint, lag in checkpoints and
    /// seconds, failures since the last success and the last error.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: AnchorsArgs) -> ExitCode {
    match status(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("inkan: {error}");
            ExitCode::from(2)
        }
    }
}

fn status(args: &AnchorsArgs) -> Result<(), super::CommandError> {
    let AnchorsCommand::Status { json } = args.command;
    let config = Config::load(args.config.as_deref(), |v| std::env::var(v).ok())?;
    let mut ledger = Ledger::open_reader(&config.ledger.dir, &config.ledger.options())?;
    // Configured backends are listed even before their first attempt.
    for backend in crate::seal::backends::backends(&config.anchors, &config.ledger.dir)? {
        ledger.add_backend(backend);
    }
    let lags = ledger.anchor_status()?;
    let mut out = std::io::stdout().lock();
    if json {
        let rows: Vec<serde_json::Value> = lags
            .iter()
            .map(|lag| {
                serde_json::json!({
                    "backend": lag.backend,
                    "latestCheckpoint": lag.latest_checkpoint,
                    "lastAnchored": lag.last_anchored,
                    "lagCheckpoints": lag.lag_checkpoints,
                    "lagSeconds": lag.lag_seconds,
                    "lastSuccessAt": lag.health.last_success_at,
                    "failures": lag.health.failures,
                    "lastError": lag.health.last_error,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<10} {:>10} {:>10} {:>8} {:>8} {:>9}  last error",
        "backend", "anchored", "latest", "lag", "lag s", "failures"
    )?;
    for lag in lags {
        let show = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        writeln!(
            out,
            "{:<10} {:>10} {:>10} {:>8} {:>8} {:>9}  {}",
            lag.backend,
            show(lag.last_anchored),
            show(lag.latest_checkpoint),
            lag.lag_checkpoints,
            lag.lag_seconds,
            lag.health.failures,
            lag.health.last_error.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}
