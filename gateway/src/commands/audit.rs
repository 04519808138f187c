//! `inkan audit` and `inkan backfill`: sweep the upstream's history, page
//! by page, and compare every version with the ledger.
//!
//! - **audit** reports versions that are *tampered* (sealed, content
//!   differs), *missing* (sealed, but the upstream no longer shows that
//!   version) and *unsealed* (the upstream has it, the ledger does not).
//!   Exit code 1 when anything is tampered or missing, 2 when the sweep
//!   itself failed, 0 otherwise.
//! - **backfill** seals the unsealed versions as first seen (leaves marked
//!   `backfilled`), for onboarding a server that already holds data.
//!
//! Both are resumable: progress is saved to a state file every few seconds
//! and when `--max-pages` pauses the sweep (exit code 3); run the same
//! command again to continue (`--restart` to start over). A crash loses at
//! most the last few seconds of work, which is redone.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use ledger::log::{Ledger, SealRequest, VersionCheck};
use serde::{Deserialize, Serialize};

use super::CommandError;
use crate::config::Config;
use crate::fhir::bundle::{scan_bundle, EntryVersion};
use crate::seal::recovery::first_seen_request;
use crate::seal::verify_read::check_entry;
use crate::upstream::UpstreamReader;

/// What to sweep and where the ledger is.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// TOML configuration file; its `[upstream]` and `[ledger]` tables are used.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Upstream FHIR base URL (overrides the file).
    #[arg(long)]
    pub upstream: Option<String>,
    /// Ledger directory (overrides the file).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Only versions updated at or after this FHIR instant
    /// (e.g. 2026-04-01T00:00:00+09:00), passed upstream as `_since`.
    #[arg(long)]
    pub since: Option<String>,
    /// Only these resource types (repeatable); default: the whole server
    /// (system history).
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// History page size asked of the upstream (`_count`).
    #[arg(long, default_value_t = 200)]
    pub page_size: u32,
    /// Start over instead of resuming a saved sweep.
    #[arg(long)]
    pub restart: bool,
    /// Read at most this many pages, save the progress and stop (exit code
    /// 3); run the same command again to continue. For sweeps split over
    /// several quiet hours.
    #[arg(long)]
    pub max_pages: Option<u64>,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub sweep: SweepArgs,
    /// Where the full JSON report is written.
    #[arg(long, default_value = "inkan-audit.json")]
    pub report: PathBuf,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub sweep: SweepArgs,
    /// Count what would be sealed without sealing it.
    #[arg(long)]
    pub dry_run: bool,
}

/// A sealed version whose upstream copy differs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TamperedFinding {
    pub reference: String,
    pub leaf_index: u64,
    pub reason: String,
}

/// A sealed version the upstream no longer shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MissingFinding {
    pub reference: String,
    pub leaf_index: u64,
    /// When it was sealed (Unix seconds).
    pub sealed_at: i64,
}

/// A version the upstream has and the ledger does not.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnsealedFinding {
    pub reference: String,
    /// True when other versions of the same resource are sealed: this one
    /// was written behind the gateway's back (or its seal failed).
    pub resource_has_seals: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counts {
    pub versions: u64,
    pub verified: u64,
    pub tampered: u64,
    pub missing: u64,
    pub unsealed: u64,
    /// Unsealed versions of resources that have sealed versions.
    pub unsealed_in_sealed_resources: u64,
    /// Versions that cannot be compared (no version id, subsetted).
    pub unchecked: u64,
    /// Backfill: versions sealed by this run.
    pub backfilled: u64,
}

/// Everything a sweep knows; saved as the resumable state and written as
/// the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sweep {
    pub format: String,
    pub upstream: String,
    pub types: Vec<String>,
    pub since: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// History pages still to read (upstream URLs); the first is next.
    pub queue: Vec<String>,
    /// Ledger size when the sweep started: later seals are not expected.
    pub ledger_size_at_start: u64,
    pub counts: Counts,
    pub tampered: Vec<TamperedFinding>,
    pub missing: Vec<MissingFinding>,
    pub unsealed: Vec<UnsealedFinding>,
    /// Seconds spent waiting for upstream pages.
    pub upstream_seconds: f64,
    /// Seconds spent recomputing and comparing commitments (and sealing,
    /// for backfill).
    pub verify_seconds: f64,
    /// Leaves seen in the upstream (bitmap, base64), for `missing`.
    seen: String,
}

const SWEEP_FORMAT: &str = "inkan-audit/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Audit,
    Backfill { dry_run: bool },
}

pub fn run_audit(args: AuditArgs) -> ExitCode {
    let state = state_path(&args.report);
    match sweep(args.sweep, Mode::Audit, |_| state.clone()) {
        Ok(result) => {
            if let Err(error) = write_json(&args.report, &result) {
                return error_exit(&error);
            }
            print_summary(&result, Mode::Audit, Some(&args.report));
            if result.counts.tampered > 0 || result.counts.missing > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => error_exit(&error),
    }
}

pub fn run_backfill(args: BackfillArgs) -> ExitCode {
    let mode = Mode::Backfill {
        dry_run: args.dry_run,
    };
    // Backfill writes to the ledger, so its progress lives beside it.
    match sweep(args.sweep, mode, |config| {
        config.ledger.dir.join("backfill.state.json")
    }) {
        Ok(result) => {
            print_summary(&result, mode, None);
            ExitCode::SUCCESS
        }
        Err(error) => error_exit(&error),
    }
}

fn error_exit(error: &SweepError) -> ExitCode {
    eprintln!("inkan: {error}");
    if matches!(error, CommandError::Paused { .. }) {
        ExitCode::from(3)
    } else {
        ExitCode::from(2)
    }
}

fn state_path(report: &Path) -> PathBuf {
    let mut name = report.as_os_str().to_owned();
    name.push(".state");
    PathBuf::from(name)
}

type SweepError = CommandError;

/// Runs a sweep; `state_file` says where its progress is saved (removed
/// once the sweep completes).
fn sweep(
    args: SweepArgs,
    mode: Mode,
    state_file: impl FnOnce(&Config) -> PathBuf,
) -> Result<Sweep, SweepError> {
    let mut config = Config::load(args.config.as_deref(), |v| std::env::var(v).ok())?;
    if let Some(url) = &args.upstream {
        config.upstream.url.clone_from(url);
    }
    if let Some(dir) = &args.dir {
        config.ledger.dir.clone_from(dir);
    }
    if config.upstream.url.is_empty() {
        return Err("no upstream: give --upstream or a config file with [upstream] url".into());
    }
    // An audit only reads the ledger (beside a running gateway); a backfill
    // appends, so it takes the writer lock.
    let ledger = if mode == Mode::Audit {
        Ledger::open_reader(&config.ledger.dir, &config.ledger.options())?
    } else {
        Ledger::open(&config.ledger.dir, &config.ledger.options())?
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let state_file = state_file(&config);
    let result = runtime.block_on(sweep_upstream(&config, &ledger, &args, mode, &state_file))?;
    let _ = std::fs::remove_file(&state_file);
    Ok(result)
}

async fn sweep_upstream(
    config: &Config,
    ledger: &Ledger,
    args: &SweepArgs,
    mode: Mode,
    state_file: &Path,
) -> Result<Sweep, SweepError> {
    // History `next` links use the base the upstream advertises, which may
    // differ from the address we connect to: the reader learns it here.
    let upstream = UpstreamReader::new(&config.upstream)?;
    upstream.capability_statement().await?;
    let upstream_base = upstream.base().to_owned();

    let mut state = match load_state(state_file, args, &upstream_base) {
        Some(state) if !args.restart => {
            eprintln!(
                "resuming the sweep saved in {} ({} versions done)",
                state_file.display(),
                state.counts.versions
            );
            state
        }
        _ => new_sweep(ledger, args, &upstream_base)?,
    };
    let mut seen = Bitmap::decode(&state.seen, state.ledger_size_at_start);
    let progress = progress_bar(args.no_progress, state.ledger_size_at_start, mode);
    progress.set_position(state.counts.versions);
    let mut last_saved = Instant::now();
    let mut pages = 0u64;

    while let Some(url) = state.queue.first().cloned() {
        if args.max_pages.is_some_and(|max| pages >= max) {
            state.seen = seen.encode();
            write_json(state_file, &state)?;
            progress.finish_and_clear();
            return Err(CommandError::Paused {
                state_file: state_file.to_owned(),
                versions: state.counts.versions,
            });
        }
        pages += 1;
        let fetch_started = Instant::now();
        let page = upstream.get_url(&url).await?;
        state.upstream_seconds += fetch_started.elapsed().as_secs_f64();

        let verify_started = Instant::now();
        let bundle = scan_bundle(&page)
            .ok_or_else(|| format!("the upstream's history page {url} is not a Bundle"))?;
        let mut to_seal = Vec::new();
        for entry in &bundle.entries {
            match &entry.version {
                EntryVersion::NotAVersion => continue,
                EntryVersion::Unchecked => state.counts.unchecked += 1,
                EntryVersion::Stored(key) | EntryVersion::Deleted(key) => {
                    let check = check_entry(ledger, &entry.version, entry.resource_bytes())?;
                    match check {
                        Some(VersionCheck::Verified { leaf_index, .. }) => {
                            seen.set(leaf_index);
                            state.counts.verified += 1;
                        }
                        Some(VersionCheck::Tampered { leaf_index, reason }) => {
                            seen.set(leaf_index);
                            state.counts.tampered += 1;
                            state.tampered.push(TamperedFinding {
                                reference: key.to_string(),
                                leaf_index,
                                reason,
                            });
                        }
                        Some(VersionCheck::Unsealed) | None => {
                            let has_seals = ledger
                                .store()
                                .count_resource_versions(&key.resource_type, &key.id)?
                                > 0;
                            state.counts.unsealed += 1;
                            if has_seals {
                                state.counts.unsealed_in_sealed_resources += 1;
                            }
                            if mode == Mode::Audit {
                                state.unsealed.push(UnsealedFinding {
                                    reference: key.to_string(),
                                    resource_has_seals: has_seals,
                                });
                            }
                            to_seal
                                .push(first_seen_request(&entry.version, entry.resource_bytes()));
                        }
                    }
                }
            }
            state.counts.versions += 1;
        }
        if let Mode::Backfill { dry_run: false } = mode {
            let requests: Vec<SealRequest> = to_seal.into_iter().flatten().collect();
            if !requests.is_empty() {
                let receipts = ledger.seal(requests)?;
                state.counts.backfilled +=
                    receipts.iter().filter(|r| r.newly_sealed).count() as u64;
            }
        }
        state.verify_seconds += verify_started.elapsed().as_secs_f64();

        // Advance the queue only after the page is fully processed, so a
        // resumed sweep re-reads at most one page.
        let next = bundle.next.as_deref().map(|next| upstream.follow(next));
        match next {
            Some(next) => state.queue[0] = next,
            None => {
                state.queue.remove(0);
            }
        }
        if state.counts.versions > progress.length().unwrap_or(0) {
            progress.set_length(state.counts.versions);
        }
        progress.set_position(state.counts.versions);
        if last_saved.elapsed() > Duration::from_secs(5) {
            state.seen = seen.encode();
            write_json(state_file, &state)?;
            last_saved = Instant::now();
        }
    }
    progress.finish_and_clear();

    if mode == Mode::Audit {
        find_missing(ledger, &mut state, &seen, args)?;
    }
    state.seen = String::new();
    state.finished_at = Some(now_rfc3339());
    Ok(state)
}

/// Sealed versions (in scope, sealed before the sweep began) that the
/// sweep never saw upstream.
fn find_missing(
    ledger: &Ledger,
    state: &mut Sweep,
    seen: &Bitmap,
    args: &SweepArgs,
) -> Result<(), SweepError> {
    let since = match &args.since {
        Some(since) => Some(
            time::OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339)
                .map_err(|e| format!("--since {since:?} is not an RFC 3339 instant: {e}"))?
                .unix_timestamp(),
        ),
        None => None,
    };
    // Access records live in the audit repository, and only once
    // delivered: they are looked for only in a sweep asked for AuditEvents
    // (`--type AuditEvent`, usually with `--upstream <repository>`).
    let sweeping_access_records = state.types.iter().any(|t| t == "AuditEvent");
    let queued: std::collections::HashSet<u64> = match sweeping_access_records {
        true => ledger.store().queued_deliveries()?.into_iter().collect(),
        false => Default::default(),
    };
    let mut start = 0;
    while start < state.ledger_size_at_start {
        let end = (start + 10_000).min(state.ledger_size_at_start);
        for record in ledger.store().records(start, end)? {
            if record.leaf.kind == ::ledger::leaf::LeafKind::Access
                && (!sweeping_access_records || queued.contains(&record.leaf_index))
            {
                continue;
            }
            let in_scope = (state.types.is_empty() || state.types.contains(&record.key.resource_type))
                // Sealing follows the upstream's write within a second or so.
                && since.is_none_or(|since| record.sealed_at + 2 >= since);
            if in_scope && !seen.get(record.leaf_index) {
                state.counts.missing += 1;
                state.missing.push(MissingFinding {
                    reference: record.key.to_string(),
                    leaf_index: record.leaf_index,
                    sealed_at: record.sealed_at,
                });
            }
        }
        start = end;
    }
    Ok(())
}

fn new_sweep(ledger: &Ledger, args: &SweepArgs, upstream_base: &str) -> Result<Sweep, SweepError> {
    let mut query = format!("_count={}", args.page_size.max(1));
    if let Some(since) = &args.since {
        let encoded =
            percent_encoding::utf8_percent_encode(since, percent_encoding::NON_ALPHANUMERIC);
        query.push_str(&format!("&_since={encoded}"));
    }
    let queue = if args.types.is_empty() {
        vec![format!("{upstream_base}/_history?{query}")]
    } else {
        args.types
            .iter()
            .map(|t| format!("{upstream_base}/{t}/_history?{query}"))
            .collect()
    };
    let size = ledger.store().size()?;
    Ok(Sweep {
        format: SWEEP_FORMAT.into(),
        upstream: upstream_base.to_owned(),
        types: args.types.clone(),
        since: args.since.clone(),
        started_at: now_rfc3339(),
        finished_at: None,
        queue,
        ledger_size_at_start: size,
        counts: Counts::default(),
        tampered: Vec::new(),
        missing: Vec::new(),
        unsealed: Vec::new(),
        upstream_seconds: 0.0,
        verify_seconds: 0.0,
        seen: Bitmap::new(size).encode(),
    })
}

/// A saved sweep for the same upstream and scope, if any.
fn load_state(path: &Path, args: &SweepArgs, upstream_base: &str) -> Option<Sweep> {
    let text = std::fs::read_to_string(path).ok()?;
    let state: Sweep = serde_json::from_str(&text).ok()?;
    (state.format == SWEEP_FORMAT
        && state.upstream == upstream_base
        && state.types == args.types
        && state.since == args.since)
        .then_some(state)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), SweepError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn progress_bar(hidden: bool, expected: u64, mode: Mode) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(expected.max(1));
    let verb = if mode == Mode::Audit {
        "checked"
    } else {
        "seen"
    };
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{spinner}} {{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} versions {verb} ({{per_sec}}, ETA {{eta}})"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

fn print_summary(sweep: &Sweep, mode: Mode, report: Option<&Path>) {
    let c = &sweep.counts;
    let seconds = sweep.upstream_seconds + sweep.verify_seconds;
    let scope = if sweep.types.is_empty() {
        "all types".to_owned()
    } else {
        sweep.types.join(", ")
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{} of {} ({scope}{}): {} versions in {seconds:.1} s ({:.0} versions/s; upstream paging {:.1} s, {} {:.1} s)",
        if mode == Mode::Audit { "audit" } else { "backfill" },
        sweep.upstream,
        sweep.since.as_deref().map(|s| format!(", since {s}")).unwrap_or_default(),
        c.versions,
        c.versions as f64 / seconds.max(1e-9),
        sweep.upstream_seconds,
        if mode == Mode::Audit { "verification" } else { "verification and sealing" },
        sweep.verify_seconds,
    );
    let _ = writeln!(out, "  verified  {:>8}", c.verified);
    let _ = writeln!(out, "  tampered  {:>8}", c.tampered);
    for finding in &sweep.tampered {
        let _ = writeln!(
            out,
            "      {} (leaf {}): {}",
            finding.reference, finding.leaf_index, finding.reason
        );
    }
    if mode == Mode::Audit {
        let _ = writeln!(out, "  missing   {:>8}", c.missing);
        for finding in &sweep.missing {
            let _ = writeln!(
                out,
                "      {} (leaf {}): sealed, not in the upstream's history",
                finding.reference, finding.leaf_index
            );
        }
    }
    let _ = writeln!(
        out,
        "  unsealed  {:>8}  ({} in resources that have sealed versions)",
        c.unsealed, c.unsealed_in_sealed_resources
    );
    for finding in sweep.unsealed.iter().filter(|f| f.resource_has_seals) {
        let _ = writeln!(
            out,
            "      {}: not sealed, though other versions of it are",
            finding.reference
        );
    }
    let _ = writeln!(out, "  unchecked {:>8}", c.unchecked);
    if let Mode::Backfill { dry_run } = mode {
        let verb = if dry_run {
            "would seal"
        } else {
            "sealed (backfilled)"
        };
        let count = if dry_run { c.unsealed } else { c.backfilled };
        let _ = writeln!(out, "  {verb}: {count}");
    }
    if let Some(report) = report {
        let _ = writeln!(out, "report: {}", report.display());
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// One bit per leaf index.
#[derive(Debug)]
struct Bitmap(Vec<u8>);

impl Bitmap {
    fn new(size: u64) -> Bitmap {
        Bitmap(vec![0; usize::try_from(size.div_ceil(8)).unwrap_or(0)])
    }

    fn decode(text: &str, size: u64) -> Bitmap {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_default();
        let mut bitmap = Bitmap::new(size);
        if bytes.len() == bitmap.0.len() {
            bitmap.0 = bytes;
        }
        bitmap
    }

    fn encode(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&self.0)
    }

    fn set(&mut self, index: u64) {
        if let Some(byte) = usize::try_from(index / 8)
            .ok()
            .and_then(|i| self.0.get_mut(i))
        {
            *byte |= 1 << (index % 8);
        }
    }

    fn get(&self, index: u64) -> bool {
        usize::try_from(index / 8)
            .ok()
            .and_then(|i| self.0.get(i))
            .is_some_and(|byte| byte & (1 << (index % 8)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_round_trips() {
        let mut bitmap = Bitmap::new(20);
        for i in [0, 7, 8, 19, 25] {
            bitmap.set(i);
        }
        let back = Bitmap::decode(&bitmap.encode(), 20);
        let set: Vec<u64> = (0..26).filter(|&i| back.get(i)).collect();
        assert_eq!(set, vec![0, 7, 8, 19], "out-of-range indexes are ignored");
        assert!(!Bitmap::decode("garbage!", 20).get(0));
    }
}
