//! Proof bundles: everything an outsider needs to check one resource
//! version offline (docs/ledger-format.md), plus the same proof as a C2SP
//! `tlog-proof@v1` file. Verification is pure.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::leaf::{self, Leaf, LeafKind, Salt};
use crate::merkle::{self, Hash};
use crate::note::note_digest;
use crate::note::{Checkpoint, NoteVerifier};
use crate::resource::{self, Format};
use crate::store::IndexRecord;
use crate::Error;

/// The `format` of the bundles this crate writes and accepts.
pub const BUNDLE_FORMAT: &str = "inkan-proof-bundle/v1";
/// The canonical form the commitments are over (docs/canonical-form.md).
pub const CANONICAL_FORM: &str = "inkan-canonical/v1";

/// The version a bundle is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleResource {
    /// FHIR resource type, e.g. `Patient`.
    pub resource_type: String,
    /// Logical id of the resource.
    pub id: String,
    /// The version's `meta.versionId`.
    pub version_id: String,
}

/// An anchor receipt for the bundle's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnchorReceipt {
    /// The backend's name: `local`, `rfc3161` or `evm` (others are listed
    /// but not checked).
    pub backend: String,
    /// Tree size of the checkpoint the receipt anchors.
    pub checkpoint_size: u64,
    /// The backend's receipt (JSON text).
    pub receipt: String,
}

/// A proof bundle (JSON, versioned by `format`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProofBundle {
    /// Always [`BUNDLE_FORMAT`]; anything else is refused.
    pub format: String,
    /// Always [`CANONICAL_FORM`]; anything else is refused.
    pub canonical_form: String,
    /// The version the bundle is about.
    pub resource: BundleResource,
    /// `version` or `tombstone`.
    pub kind: String,
    /// Base64 of the 32-byte salt (private: whoever holds the bundle and
    /// the resource can check it; the salt alone reveals nothing).
    pub salt: String,
    /// Base64 of the 35-byte leaf data.
    pub leaf: String,
    /// Index of the version's leaf in the log.
    pub leaf_index: u64,
    /// Size of the tree the proof and the checkpoint are for.
    pub tree_size: u64,
    /// Base64 hashes, leaf to root.
    pub inclusion_proof: Vec<String>,
    /// The signed checkpoint note for `tree_size`.
    pub checkpoint: String,
    /// Receipts anchoring the checkpoint, one per backend that has one.
    pub anchors: Vec<AnchorReceipt>,
}

/// What an offline verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The version the bundle is about.
    pub resource: BundleResource,
    /// Index of its leaf in the log.
    pub leaf_index: u64,
    /// Size of the tree in the signed checkpoint.
    pub tree_size: u64,
    /// The root hash the checkpoint signs, which the proof reached.
    pub root: Hash,
    /// One line per receipt: what was checked.
    pub anchors: Vec<String>,
}

impl ProofBundle {
    /// Assembles the bundle for `record`: `proof` is its inclusion proof in
    /// the tree of `tree_size` leaves, `checkpoint` the signed note of that
    /// size and `anchors` the receipts for it.
    pub fn new(
        record: &IndexRecord,
        tree_size: u64,
        proof: Vec<Hash>,
        checkpoint: String,
        anchors: Vec<AnchorReceipt>,
    ) -> ProofBundle {
        ProofBundle {
            format: BUNDLE_FORMAT.into(),
            canonical_form: CANONICAL_FORM.into(),
            resource: BundleResource {
                resource_type: record.key.resource_type.clone(),
                id: record.key.id.clone(),
                version_id: record.key.version_id.clone(),
            },
            kind: match record.leaf.kind {
                LeafKind::Version => "version".into(),
                LeafKind::Tombstone => "tombstone".into(),
                LeafKind::Access => "access".into(),
            },
            salt: B64.encode(record.salt),
            leaf: B64.encode(record.leaf.encode()),
            leaf_index: record.leaf_index,
            tree_size,
            inclusion_proof: proof.iter().map(|h| B64.encode(h)).collect(),
            checkpoint,
            anchors,
        }
    }

    /// The same proof as a C2SP `tlog-proof@v1` file; the extra data is the
    /// leaf data, so the file is checkable with generic tlog tooling.
    pub fn to_tlog_proof(&self) -> String {
        let mut out = String::from("c2sp.org/tlog-proof@v1\n");
        out.push_str(&format!("extra {}\n", self.leaf));
        out.push_str(&format!("index {}\n", self.leaf_index));
        for hash in &self.inclusion_proof {
            out.push_str(hash);
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }
}

fn decode32(what: &str, b64: &str) -> Result<[u8; 32], Error> {
    B64.decode(b64)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| Error::Bundle(format!("{what} is not 32 bytes of base64")))
}

/// Verifies `bundle` offline. For a `version` bundle, `resource` is the
/// resource's bytes (JSON or XML); for a `tombstone`, `None`.
/// Every failure names what did not match, expected (from the bundle or the
/// signed checkpoint) versus computed.
pub fn verify_bundle(
    bundle: &ProofBundle,
    resource: Option<&[u8]>,
    log_key: &NoteVerifier,
) -> Result<Verified, Error> {
    verify_bundle_with(bundle, resource, log_key, None)
}

/// [`verify_bundle`], also checking `rfc3161` receipts against the TSA CA
/// certificates in `tsa_trust` (without them such receipts are reported as
/// present but unchecked, never as valid).
pub fn verify_bundle_with(
    bundle: &ProofBundle,
    resource: Option<&[u8]>,
    log_key: &NoteVerifier,
    tsa_trust: Option<&crate::tsa::TrustAnchors>,
) -> Result<Verified, Error> {
    // Preconditions first.
    if bundle.format != BUNDLE_FORMAT {
        return Err(Error::Bundle(format!(
            "unknown bundle format {:?}",
            bundle.format
        )));
    }
    if bundle.canonical_form != CANONICAL_FORM {
        return Err(Error::Bundle(format!(
            "unknown canonical form {:?}",
            bundle.canonical_form
        )));
    }
    let checkpoint = Checkpoint::verify(&bundle.checkpoint, log_key)?;
    if checkpoint.size != bundle.tree_size {
        return Err(Error::Bundle(format!(
            "the bundle claims tree size {} but its signed checkpoint is for {}",
            bundle.tree_size, checkpoint.size
        )));
    }
    let leaf_data = B64
        .decode(&bundle.leaf)
        .map_err(|_| Error::Bundle("leaf is not base64".into()))?;
    let leaf = Leaf::decode(&leaf_data)?;
    let salt: Salt = decode32("salt", &bundle.salt)?;
    let computed = match (leaf.kind, bundle.kind.as_str(), resource) {
        (LeafKind::Version, "version", Some(bytes)) => {
            let canonical = resource::canonical_resource(bytes, Format::sniff(bytes))?;
            check_identity(&canonical, &bundle.resource)?;
            leaf::commitment(&salt, &canonical)
        }
        (LeafKind::Access, "access", Some(bytes)) => {
            let format = Format::sniff(bytes);
            check_access_identity(
                &resource::canonical_resource(bytes, format)?,
                &bundle.resource,
            )?;
            let canonical = resource::canonical_access_record(bytes, format)?;
            leaf::access_commitment(&salt, &canonical)
        }
        (LeafKind::Version, "version", None) | (LeafKind::Access, "access", None) => {
            return Err(Error::Bundle(
                "this bundle is for a resource version: give the resource file".into(),
            ))
        }
        (LeafKind::Tombstone, "tombstone", _) => leaf::tombstone_commitment(
            &salt,
            &bundle.resource.resource_type,
            &bundle.resource.id,
            &bundle.resource.version_id,
        ),
        _ => {
            return Err(Error::Bundle(format!(
                "bundle kind {:?} does not match its leaf",
                bundle.kind
            )))
        }
    };
    if computed != leaf.commitment {
        return Err(Error::Bundle(format!(
            "commitment mismatch: the leaf commits to {} but the resource and salt give {}",
            hex::encode(leaf.commitment),
            hex::encode(computed)
        )));
    }
    let proof = bundle
        .inclusion_proof
        .iter()
        .map(|h| decode32("inclusion proof hash", h))
        .collect::<Result<Vec<_>, _>>()?;
    merkle::verify_inclusion(
        bundle.leaf_index,
        checkpoint.size,
        &merkle::leaf_hash(&leaf_data),
        &proof,
        &checkpoint.root,
    )?;
    let mut anchors = Vec::new();
    for receipt in &bundle.anchors {
        anchors.push(check_receipt(receipt, bundle, tsa_trust)?);
    }
    Ok(Verified {
        resource: bundle.resource.clone(),
        leaf_index: bundle.leaf_index,
        tree_size: checkpoint.size,
        root: checkpoint.root,
        anchors,
    })
}

/// A resource whose `id` or `meta.versionId` contradicts the bundle is the
/// wrong file, even if someone arranged its commitment to match.
/// The resource must be the version the bundle is for (see
/// [`resource::check_identity`]).
fn check_identity(canonical: &[u8], expected: &BundleResource) -> Result<(), Error> {
    resource::check_identity(
        canonical,
        &expected.resource_type,
        &expected.id,
        &expected.version_id,
    )
    .map_err(|reason| Error::Bundle(format!("{reason}; the bundle is for another version")))
}

/// An access record must be the one the bundle names: its type and the
/// repository's id (the id and `meta` are outside the commitment; the
/// ledger bound the id to the leaf when the record was delivered).
fn check_access_identity(canonical: &[u8], expected: &BundleResource) -> Result<(), Error> {
    let value: serde_json::Value = serde_json::from_slice(canonical)
        .map_err(|e| Error::Bundle(format!("the access record is not JSON: {e}")))?;
    for (field, expected) in [
        ("resourceType", expected.resource_type.as_str()),
        ("id", expected.id.as_str()),
    ] {
        let found = value[field].as_str();
        if found != Some(expected) {
            return Err(Error::Bundle(format!(
                "the access record's {field} is {found:?}, the bundle is for {expected:?}"
            )));
        }
    }
    Ok(())
}

fn check_receipt(
    receipt: &AnchorReceipt,
    bundle: &ProofBundle,
    tsa_trust: Option<&crate::tsa::TrustAnchors>,
) -> Result<String, Error> {
    match receipt.backend.as_str() {
        "local" => {
            let value: serde_json::Value = serde_json::from_str(&receipt.receipt)
                .map_err(|_| Error::Bundle("local receipt is not JSON".into()))?;
            let digest = note_digest(&bundle.checkpoint);
            if value["checkpointSha256"] != digest.as_str()
                || receipt.checkpoint_size != bundle.tree_size
            {
                return Err(Error::Bundle(format!(
                    "local anchor receipt is for checkpoint {} but the bundle's checkpoint hashes to {digest}",
                    value["checkpointSha256"]
                )));
            }
            Ok(format!(
                "local: checkpoint {} recorded in the hospital's anchor file (checked)",
                receipt.checkpoint_size
            ))
        }
        "rfc3161" => match tsa_trust {
            Some(trust) => {
                if receipt.checkpoint_size != bundle.tree_size {
                    return Err(Error::Bundle(format!(
                        "the rfc3161 receipt is for checkpoint {}, the bundle's is {}",
                        receipt.checkpoint_size, bundle.tree_size
                    )));
                }
                let stamp = crate::tsa::verify_receipt(&receipt.receipt, &bundle.checkpoint, None, trust)?;
                Ok(format!(
                    "rfc3161: checkpoint {} time-stamped at {} by {} (token checked against the TSA CA)",
                    receipt.checkpoint_size, stamp.gen_time, stamp.tsa
                ))
            }
            None => Ok(format!(
                "rfc3161: time-stamp token present for checkpoint {}, NOT checked (give the TSA CA with --tsa-ca)",
                receipt.checkpoint_size
            )),
        },
        "evm" => {
            let value: serde_json::Value = serde_json::from_str(&receipt.receipt)
                .map_err(|_| Error::Bundle("evm receipt is not JSON".into()))?;
            Ok(format!(
                "evm: checkpoint {} anchored by transaction {} on chain {}, NOT checked (give a node with --evm-rpc)",
                receipt.checkpoint_size, value["txHash"], value["chainId"]
            ))
        }
        other => Ok(format!(
            "{other}: receipt present, not checked by this verifier"
        )),
    }
}
