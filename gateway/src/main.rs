//! The `inkan` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use inkan::config::{Config, LogFormat};
use inkan::pipeline::Gateway;

// mimalloc instead of the system allocator: the proxy path allocates small
// buffers and header maps per request, where glibc malloc showed up as ~11%
// of CPU in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "inkan",
    version,
    about = "FHIR gateway that seals every resource version in a verifiable log"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway in front of an upstream FHIR server.
    #[command(after_help = env_help())]
    Serve(ServeArgs),
    /// Operate the seal's Merkle log: seal, checkpoint, proof, stats, fsck.
    Ledger(inkan::commands::ledger::LedgerArgs),
    /// Verify a proof bundle offline.
    Verify(inkan::commands::verify::VerifyArgs),
    /// Sweep the upstream's history and compare every version with the
    /// ledger: tampered, missing and unsealed versions. Exit 1 when any
    /// version is tampered or missing.
    Audit(inkan::commands::audit::AuditArgs),
    /// Anchor backends: `inkan anchors status`.
    Anchors(inkan::commands::anchors::AnchorsArgs),
    /// Seal the upstream's existing versions the ledger has not seen
    /// (first-seen sealing when onboarding a server that holds data).
    Backfill(inkan::commands::audit::BackfillArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file (see docs/configuration.md). Unknown keys are an error.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Upstream FHIR base URL, e.g. http://127.0.0.1:8080/fhir (overrides the file).
    #[arg(long)]
    upstream: Option<String>,
    /// Listen address, e.g. 127.0.0.1:8090 (overrides the file).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Path of the FHIR API on the gateway, e.g. /fhir (overrides the file).
    #[arg(long)]
    base_path: Option<String>,
    /// Public base URL clients see (overrides the file).
    #[arg(long)]
    public_base_url: Option<String>,
}

fn env_help() -> String {
    let mut help = String::from("Environment overrides (between the file and the flags):\n");
    for (var, key) in inkan::config::ENV_OVERRIDES {
        help.push_str(&format!("  {var:<24} sets {key}\n"));
    }
    help
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Ledger(args) => inkan::commands::ledger::run(args),
        Command::Verify(args) => inkan::commands::verify::run(args),
        Command::Audit(args) => inkan::commands::audit::run_audit(args),
        Command::Backfill(args) => inkan::commands::audit::run_backfill(args),
        Command::Anchors(args) => inkan::commands::anchors::run(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut config = match Config::load(args.config.as_deref(), |var| std::env::var(var).ok()) {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    if let Some(upstream) = args.upstream {
        config.upstream.url = upstream;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(base_path) = args.base_path {
        config.base_path = base_path;
    }
    if let Some(public) = args.public_base_url {
        config.public_base_url = Some(public);
    }
    if let Err(error) = config.validate() {
        return fail(&error);
    }
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error),
    };
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    let tls = match &config.tls {
        Some(tls) => match inkan::tls::server_config(tls) {
            Ok(server_config) => Some(tokio_rustls::TlsAcceptor::from(server_config)),
            Err(error) => return fail(&error),
        },
        None => None,
    };
    if tls.is_none() && !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen, "plain HTTP on a non-loopback address: the security guideline asks for TLS; configure [tls]");
    }
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => return fail(&format!("cannot listen on {}: {error}", config.listen)),
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let gateway = match Gateway::new(config) {
        Ok(gateway) => Arc::new(gateway.with_faults(test_faults())),
        Err(error) => return fail(&error),
    };
    tracing::info!(
        listen = %local,
        base_path = %gateway.config.base_path,
        upstream = %inkan::upstream::redact_url(&gateway.config.upstream.url),
        tls = tls.is_some(),
        "inkan listening"
    );
    // Learn the upstream's XML support and advertised base early; failure is
    // fine here (readiness reports it, requests retry the probe).
    if let Err(error) = gateway.probe_capabilities().await {
        tracing::warn!(%error, "upstream CapabilityStatement not available yet");
    }
    if let Some(sealer) = gateway.sealer() {
        // Completes seals a crash or a failed seal left open: at start, then
        // every 30 s for intents older than any request can be in flight.
        let in_flight_bound = std::time::Duration::from_millis(
            gateway.config.upstream.response_timeout_ms
                + gateway.config.limits.client_body_timeout_ms,
        ) + std::time::Duration::from_secs(10);
        let recovered = gateway
            .metrics
            .seals
            .get_or_create(&inkan::metrics::KindLabels { kind: "recovered" })
            .clone();
        tokio::spawn(inkan::seal::recovery::run_periodically(
            sealer.clone(),
            gateway.upstream().clone(),
            recovered,
            std::time::Duration::from_secs(30),
            in_flight_bound,
        ));
    }
    gateway.authenticator().prefetch().await;
    if let (Some(sealer), Some(repository)) = (gateway.sealer(), gateway.audit_repository()) {
        // Access records go to the audit repository in the background;
        // what waits is in the ledger, so a restart resumes delivery.
        let repository = repository.clone();
        let delivered = gateway
            .metrics
            .access_records
            .get_or_create(&inkan::metrics::KindLabels { kind: "delivered" })
            .clone();
        tokio::spawn(inkan::audit::deliver::run(
            sealer.clone(),
            repository,
            gateway.config.audit.batch_size,
            std::time::Duration::from_millis(gateway.config.audit.delivery_interval_ms),
            delivered,
        ));
    }
    inkan::server::serve(gateway, listener, tls, shutdown_signal()).await;
    ExitCode::SUCCESS
}

/// Faults for the crash tests, from `INKAN_FAULT_SEAL_DELAY_MS`. Debug
/// builds only: a release binary injects nothing, whatever its
/// environment says.
fn test_faults() -> inkan::pipeline::Faults {
    let mut faults = inkan::pipeline::Faults::default();
    if cfg!(debug_assertions) {
        faults.seal_delay = std::env::var("INKAN_FAULT_SEAL_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(std::time::Duration::from_millis);
    }
    faults
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("inkan: {error}");
    ExitCode::FAILURE
}
