//! `inkan ledger …`: operate the seal's Merkle log from the command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use ledger::log::{Ledger, SealRequest};
use ledger::resource::Format;
use ledger::store::VersionKey;
use sha2::Digest;

use crate::config::Config;

#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// TOML configuration file; its [ledger] table is used.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// Ledger directory (overrides the file).
    #[arg(long, global = true)]
    pub dir: Option<PathBuf>,
    /// Log origin (overrides the file).
    #[arg(long, global = true)]
    pub origin: Option<String>,
    #[command(subcommand)]
    pub command: LedgerCommand,
}

/// Which resource version: `--type Patient --id 123 --version 2`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    #[arg(long = "type")]
    pub resource_type: String,
    #[arg(long)]
    pub id: String,
    #[arg(long = "version")]
    pub version_id: String,
}

impl VersionArgs {
    fn key(self) -> VersionKey {
        VersionKey {
            resource_type: self.resource_type,
            id: self.id,
            version_id: self.version_id,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Seal one resource version from a file (JSON or XML), durably.
    Seal {
        #[command(flatten)]
        version: VersionArgs,
        /// The version's bytes as stored upstream.
        #[arg(long)]
        resource: PathBuf,
    },
    /// Sign a checkpoint now (when the tree grew) and print it.
    Checkpoint,
    /// Print the proof bundle of one version.
    Proof {
        #[command(flatten)]
        version: VersionArgs,
        /// `json` (the bundle) or `tlog-proof` (C2SP text).
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// Find sealed versions by content: give the resource file (JSON or
    /// XML) or its content digest (SHA-256 of the canonical form, hex).
    Find {
        #[arg(long, conflicts_with = "digest", required_unless_present = "digest")]
        resource: Option<PathBuf>,
        #[arg(long)]
        digest: Option<String>,
    },
    /// Print the log's size, checkpoints and disk use.
    Stats,
    /// Recompute the tree and check leaves, index, checkpoints and tiles.
    /// Exits non-zero on any defect.
    Fsck,
    /// Print the log's verifier key (give it to whoever verifies bundles).
    Key,
    /// Load test: seal `count` synthetic versions in batches, printing
    /// `sealed <n>` after each durable batch (used by the crash test).
    Stress {
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        #[arg(long, default_value_t = 1_000)]
        batch: u64,
    },
}

pub fn run(args: LedgerArgs) -> ExitCode {
    let mut config = match Config::load(args.config.as_deref(), |v| std::env::var(v).ok()) {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    if let Some(dir) = args.dir {
        config.ledger.dir = dir;
    }
    if let Some(origin) = args.origin {
        config.ledger.origin = origin;
    }
    // Commands that append or sign take the directory's writer lock; the
    // others read beside a running gateway.
    let writes = matches!(
        args.command,
        LedgerCommand::Seal { .. } | LedgerCommand::Checkpoint | LedgerCommand::Stress { .. }
    );
    let opened = if writes {
        Ledger::open(&config.ledger.dir, &config.ledger.options())
    } else {
        Ledger::open_reader(&config.ledger.dir, &config.ledger.options())
    };
    let ledger = match opened {
        Ok(ledger) => ledger,
        Err(error) => return fail(&error),
    };
    match run_command(&ledger, args.command, &config) {
        Ok(code) => code,
        Err(error) => fail(&error),
    }
}

fn run_command(
    ledger: &Ledger,
    command: LedgerCommand,
    config: &Config,
) -> Result<ExitCode, super::CommandError> {
    let mut out = std::io::stdout().lock();
    match command {
        LedgerCommand::Seal { version, resource } => {
            let bytes = std::fs::read(&resource)?;
            let format = Format::sniff(&bytes);
            // A file sealed under another key could never be verified.
            let key = version.key();
            let canonical = ledger::resource::canonical_resource(&bytes, format)?;
            ledger::resource::check_identity(
                &canonical,
                &key.resource_type,
                &key.id,
                &key.version_id,
            )
            .map_err(|reason| format!("{}: {reason}", resource.display()))?;
            let receipt = ledger
                .seal(vec![SealRequest::Version {
                    key: key.clone(),
                    original_digest: Some(sha2::Sha256::digest(&bytes).into()),
                    bytes,
                    format,
                    backfilled: false,
                }])?
                .remove(0);
            if receipt.conflict {
                return Err(format!(
                    "{key} is already sealed (leaf {}) with different content",
                    receipt.leaf_index
                )
                .into());
            }
            writeln!(
                out,
                "leaf {} commitment {}{}",
                receipt.leaf_index,
                hex::encode(receipt.commitment),
                if receipt.newly_sealed {
                    ""
                } else {
                    " (already sealed)"
                }
            )?;
        }
        LedgerCommand::Checkpoint => match ledger.checkpoint()? {
            Some(checkpoint) => write!(out, "{}", checkpoint.note)?,
            None => match ledger.store().latest_checkpoint()? {
                Some(latest) => write!(out, "{}", latest.note)?,
                None => writeln!(out, "the log is empty: nothing to checkpoint")?,
            },
        },
        LedgerCommand::Proof { version, format } => {
            let bundle = ledger.proof_bundle(&version.key())?;
            match format.as_str() {
                "json" => writeln!(out, "{}", serde_json::to_string_pretty(&bundle)?)?,
                "tlog-proof" => write!(out, "{}", bundle.to_tlog_proof())?,
                other => {
                    return Err(format!("unknown proof format {other:?} (json, tlog-proof)").into())
                }
            }
        }
        LedgerCommand::Find { resource, digest } => {
            let digest: [u8; 32] = match (resource, digest) {
                (Some(path), _) => {
                    let bytes = std::fs::read(&path)?;
                    let canonical =
                        ledger::resource::canonical_resource(&bytes, Format::sniff(&bytes))?;
                    ledger::leaf::content_digest(&canonical)
                }
                (None, Some(hex_digest)) => hex::decode(hex_digest.trim())
                    .map_err(|_| "a content digest is hex")?
                    .try_into()
                    .map_err(|_| "a content digest is 32 bytes (64 hex digits)")?,
                (None, None) => return Err("give --resource or --digest".into()),
            };
            let records = ledger.store().find_by_content_digest(&digest)?;
            if records.is_empty() {
                writeln!(
                    out,
                    "no sealed version has content digest {}",
                    hex::encode(digest)
                )?;
                return Ok(ExitCode::FAILURE);
            }
            for record in records {
                writeln!(
                    out,
                    "{}  leaf {}  sealed at {} (unix){}",
                    record.key,
                    record.leaf_index,
                    record.sealed_at,
                    if record.leaf.backfilled {
                        "  backfilled"
                    } else {
                        ""
                    }
                )?;
            }
        }
        LedgerCommand::Stats => {
            let size = ledger.store().size()?;
            let checkpoints = ledger.store().checkpoints()?;
            let bytes = ledger::log::disk_usage(&config.ledger.dir);
            writeln!(out, "origin:          {}", ledger.origin())?;
            writeln!(
                out,
                "verifier key:    {}",
                ledger.verifier().to_key_string()
            )?;
            writeln!(out, "leaves:          {size}")?;
            writeln!(out, "checkpoints:     {}", checkpoints.len())?;
            if let Some(latest) = checkpoints.last() {
                writeln!(out, "latest size:     {}", latest.size)?;
            }
            writeln!(out, "bytes on disk:   {bytes}")?;
            if size > 0 {
                writeln!(out, "bytes per leaf:  {:.1}", bytes as f64 / size as f64)?;
            }
        }
        LedgerCommand::Fsck => {
            let defects = ledger.fsck()?;
            if defects.is_empty() {
                writeln!(
                    out,
                    "ok: {} leaves, every checkpoint, index row and tile verified",
                    ledger.store().size()?
                )?;
            } else {
                for defect in &defects {
                    writeln!(out, "DEFECT: {defect}")?;
                }
                writeln!(out, "{} defect(s)", defects.len())?;
                return Ok(ExitCode::FAILURE);
            }
        }
        LedgerCommand::Key => writeln!(out, "{}", ledger.verifier().to_key_string())?,
        LedgerCommand::Stress { count, batch } => {
            let start = ledger.store().size()?;
            let mut done = 0;
            while done < count {
                let n = batch.min(count - done);
                let requests = (0..n)
                    .map(|i| {
                        let id = format!("stress-{}", start + done + i);
                        let body = format!(
                            r#"{{"resourceType":"Patient","id":"{id}","meta":{{"versionId":"1"}}}}"#
                        );
                        SealRequest::Version {
                            key: VersionKey {
                                resource_type: "Patient".into(),
                                id,
                                version_id: "1".into(),
                            },
                            bytes: body.into_bytes(),
                            format: Format::Json,
                            original_digest: None,
                            backfilled: false,
                        }
                    })
                    .collect();
                ledger.seal(requests)?;
                done += n;
                // Printed only after the batch is durable.
                writeln!(out, "sealed {}", start + done)?;
                out.flush()?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("inkan ledger: {error}");
    ExitCode::FAILURE
}
