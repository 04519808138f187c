//! `inkan verify`: check a proof bundle offline.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use ledger::bundle::{verify_bundle_with, ProofBundle};
use ledger::note::NoteVerifier;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The proof bundle (JSON) from `inkan ledger proof` or `$proof`.
    #[arg(long)]
    pub bundle: PathBuf,
    /// The resource version (FHIR JSON or XML). Not needed for a deletion.
    #[arg(long)]
    pub resource: Option<PathBuf>,
    /// The log's verifier key `<name>+<hash>+<key>`, or a file holding it.
    #[arg(long)]
    pub log_key: String,
    /// PEM file of the TSA CA certificate(s): checks the bundle's RFC 3161
    /// time-stamp tokens (without it they are reported as unchecked).
    #[arg(long)]
    pub tsa_ca: Option<PathBuf>,
    /// An EVM node's JSON-RPC URL: checks the bundle's chain receipts on
    /// chain (without it they are reported as unchecked).
    #[arg(long)]
    pub evm_rpc: Option<String>,
}

pub fn run(args: VerifyArgs) -> ExitCode {
    match verify(&args) {
        Ok(lines) => {
            println!("VERIFIED");
            for line in lines {
                println!("  {line}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("NOT VERIFIED: {error}");
            ExitCode::FAILURE
        }
    }
}

fn verify(args: &VerifyArgs) -> Result<Vec<String>, super::CommandError> {
    let key_text = match std::fs::read_to_string(&args.log_key) {
        Ok(text) => text,
        Err(_) => args.log_key.clone(),
    };
    let log_key = NoteVerifier::parse(&key_text)?;
    let bundle: ProofBundle = serde_json::from_slice(&std::fs::read(&args.bundle)?)
        .map_err(|e| format!("{} is not a proof bundle: {e}", args.bundle.display()))?;
    let resource = args.resource.as_ref().map(std::fs::read).transpose()?;
    let trust = args
        .tsa_ca
        .as_ref()
        .map(|path| -> Result<_, super::CommandError> {
            Ok(ledger::tsa::TrustAnchors::from_pem(&std::fs::read(path)?)?)
        })
        .transpose()?;
    let verified = verify_bundle_with(&bundle, resource.as_deref(), &log_key, trust.as_ref())?;
    let mut lines = vec![
        format!(
            "{}/{}/_history/{} is leaf {} of {}'s log",
            verified.resource.resource_type,
            verified.resource.id,
            verified.resource.version_id,
            verified.leaf_index,
            log_key.name()
        ),
        format!(
            "inclusion proof checked against the signed checkpoint of {} leaves (root {})",
            verified.tree_size,
            hex::encode(verified.root)
        ),
    ];
    // With a node, chain receipts are checked on chain below instead.
    let checking_chain = args.evm_rpc.is_some();
    lines.extend(
        verified
            .anchors
            .into_iter()
            .filter(|line| !(checking_chain && line.starts_with("evm:"))),
    );
    if let Some(rpc) = &args.evm_rpc {
        for receipt in bundle.anchors.iter().filter(|r| r.backend == "evm") {
            if receipt.checkpoint_size != bundle.tree_size {
                return Err("the evm receipt is for another checkpoint".into());
            }
            lines.push(ledger::backends::evm::check_evm_receipt(
                rpc,
                &receipt.receipt,
                &bundle.checkpoint,
            )?);
        }
    }
    Ok(lines)
}
