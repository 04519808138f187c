//! Verify-on-read (the pipeline's verify step).
//!
//! When it runs: on a 200 answer in FHIR JSON to read, vread, history or
//! search, when the ledger is open and `ledger.verify_reads` is not `off`,
//! on the upstream's bytes before any URL rewriting (the seal covers the
//! version as the upstream stores it).
//!
//! What it does: for every returned version (the resource itself for read
//! and vread; every `entry` of a history or searchset Bundle), looks up the
//! seal by type, id and `meta.versionId`, recomputes the salted commitment
//! and compares. A history entry for a deletion is compared with its
//! tombstone. Subsetted resources (`_summary`, `_elements`: tag
//! `SUBSETTED`) cannot match a seal and are counted as `unchecked`.
//!
//! What it may change: the `Inkan-Verify` header (counts); in Bundles, an
//! extension on each checked `entry` (never inside the resource, whose
//! bytes stay exactly as the upstream sent them: the edit is a splice, not
//! a re-serialization); in `block` mode a tampered entry's resource is
//! replaced by an OperationOutcome, and a tampered read or vread becomes
//! a 502 OperationOutcome ([`GatewayError::TamperedVersion`]).

use ledger::log::{Ledger, VersionCheck};
use ledger::resource::Format;
use ledger::store::VersionKey;
use serde_json::value::RawValue;

use crate::config::VerifyReads;
use crate::error::GatewayError;
use crate::fhir::bundle::{scan_bundle, EntryVersion, MetaHead, ResourceHead, ScannedEntry};

/// Response header with the counts, e.g.
/// `verified=3, tampered=0, unsealed=1, unchecked=0`.
pub const INKAN_VERIFY: &str = "inkan-verify";

/// Response header, only when some verified version was sealed when first
/// seen (recovery, `inkan backfill`) rather than when written: their seal
/// proves the content since then, not since the write.
pub const INKAN_VERIFY_BACKFILLED: &str = "inkan-verify-backfilled";

/// The extension put on each checked Bundle entry; `valueCode` is
/// `verified`, `tampered` or `unsealed`.
pub const ENTRY_EXTENSION_URL: &str =
    "https://inkan.dev/fhir/StructureDefinition/seal-verification";

/// What verify-on-read found in one response.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadVerification {
    pub verified: u32,
    pub tampered: u32,
    pub unsealed: u32,
    pub unchecked: u32,
    /// Of the verified, how many were sealed when first seen (recovery,
    /// backfill) rather than when written: `Inkan-Verify-Backfilled`.
    pub backfilled: u32,
}

impl ReadVerification {
    pub fn header_value(&self) -> String {
        format!(
            "verified={}, tampered={}, unsealed={}, unchecked={}",
            self.verified, self.tampered, self.unsealed, self.unchecked
        )
    }

    fn count(&mut self, check: &VersionCheck) {
        match check {
            VersionCheck::Verified { backfilled, .. } => {
                self.verified += 1;
                self.backfilled += u32::from(*backfilled);
            }
            VersionCheck::Tampered { .. } => self.tampered += 1,
            VersionCheck::Unsealed => self.unsealed += 1,
        }
    }
}

/// The shape verify-on-read expects of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// read, vread: the body is one resource.
    Resource,
    /// history, search: the body is a Bundle of versions.
    Bundle,
}

/// Compares one version found in a response with the ledger.
pub fn check_entry(
    ledger: &Ledger,
    version: &EntryVersion,
    resource: Option<&[u8]>,
) -> Result<Option<VersionCheck>, ledger::Error> {
    match (version, resource) {
        (EntryVersion::Stored(key), Some(bytes)) => {
            ledger.check_version(key, bytes, Format::Json).map(Some)
        }
        (EntryVersion::Deleted(key), _) => ledger.check_deletion(key).map(Some),
        _ => Ok(None),
    }
}

/// What the gateway knows about the read it verifies, beside the body:
/// the body must answer exactly this request.
#[derive(Debug, Clone, Default)]
pub struct ReadRequest {
    /// Type and id from the request path (read, vread).
    pub resource_type: Option<String>,
    pub id: Option<String>,
    /// The version in the path of a vread.
    pub version_id: Option<String>,
    /// The version the upstream's `ETag` names, if it sent one.
    pub etag_version: Option<String>,
    /// The client asked for a subset (`_summary`, `_elements`): a
    /// `SUBSETTED` copy is expected and cannot be checked.
    pub subset_requested: bool,
    /// When the request reached the gateway (seconds since the epoch): a
    /// version sealed after this may legitimately be missing from the
    /// answer.
    pub started_at: i64,
}

/// Verifies the versions in `body` (upstream FHIR JSON). Returns the
/// counts and, when entries were annotated or replaced, the new body.
pub fn verify_answer(
    ledger: &Ledger,
    body: &[u8],
    shape: Shape,
    policy: VerifyReads,
    request: &ReadRequest,
) -> Result<(ReadVerification, Option<Vec<u8>>), GatewayError> {
    let mut summary = ReadVerification::default();
    match shape {
        Shape::Resource => {
            let found = check_read(ledger, body, request).map_err(ledger_error)?;
            match found {
                ReadCheck::Unchecked => summary.unchecked += 1,
                ReadCheck::Checked(reference, check) => {
                    summary.count(&check);
                    refuse_in_block_mode(&reference, &check, policy)?;
                }
            }
            Ok((summary, None))
        }
        Shape::Bundle => {
            let Some(bundle) = scan_bundle(body) else {
                return Ok((summary, None));
            };
            let mut splices = Splices::new(body);
            for entry in &bundle.entries {
                let (version, check) = check_bundle_entry(ledger, entry, request)?;
                if version == EntryVersion::Unchecked {
                    summary.unchecked += 1;
                }
                let Some(check) = check else {
                    continue;
                };
                summary.count(&check);
                splices.annotate(entry.raw, entry.extension, check.as_str());
                if let (EntryVersion::Stored(key), VerifyReads::Block, Some(resource)) =
                    (&version, policy, entry.resource)
                {
                    withhold_if_tampered(&mut splices, key, &check, resource);
                }
            }
            Ok((summary, splices.apply()))
        }
    }
}

/// One history or searchset entry against the ledger: the version it is
/// taken to be, and the result (`None`: nothing to compare).
fn check_bundle_entry(
    ledger: &Ledger,
    entry: &ScannedEntry<'_>,
    request: &ReadRequest,
) -> Result<(EntryVersion, Option<VersionCheck>), GatewayError> {
    // A SUBSETTED tag nobody asked for does not excuse an entry from the
    // check (an insider could add it to any row).
    let version = match (&entry.version, entry.resource_bytes()) {
        (EntryVersion::Unchecked, Some(bytes)) if !request.subset_requested => {
            serde_json::from_slice::<ResourceHead>(bytes)
                .ok()
                .and_then(|head| stored_key(head, request))
                .map_or(EntryVersion::Unchecked, EntryVersion::Stored)
        }
        (version, _) => version.clone(),
    };
    // An entry without a checkable version whose resource is sealed (its
    // versionId removed, or members duplicated) is not excused as
    // `unchecked` either.
    if version == EntryVersion::Unchecked && !request.subset_requested {
        if let Some(bytes) = entry.resource_bytes() {
            if let Some(record) = sealed_resource_of(ledger, bytes).map_err(ledger_error)? {
                let check = VersionCheck::Tampered {
                    leaf_index: record.leaf_index,
                    reason: "a sealed resource without a checkable meta.versionId".into(),
                };
                return Ok((EntryVersion::Stored(record.key), Some(check)));
            }
        }
    }
    let check = check_entry(ledger, &version, entry.resource_bytes()).map_err(ledger_error)?;
    Ok((version, check))
}

/// `block` mode: a tampered entry's resource becomes an OperationOutcome.
fn withhold_if_tampered(
    splices: &mut Splices<'_>,
    key: &VersionKey,
    check: &VersionCheck,
    resource: &RawValue,
) {
    if let VersionCheck::Tampered { leaf_index, reason } = check {
        let error = GatewayError::TamperedVersion {
            reference: key.to_string(),
            leaf_index: *leaf_index,
            reason: reason.clone(),
        };
        let outcome = crate::fhir::outcome::render(&error, crate::fhir::format::WireFormat::Json);
        splices.replace(resource, &outcome);
    }
}

/// What verify-on-read concluded about a read or vread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadCheck {
    /// Nothing to compare (an unsealed resource without a version, or a
    /// subset the client asked for).
    Unchecked,
    /// Compared: the reference and the result.
    Checked(String, VersionCheck),
}

/// A checked read found tampered: `reference` against the seal at
/// `leaf_index`, for `reason`.
fn tampered(reference: String, leaf_index: u64, reason: impl Into<String>) -> ReadCheck {
    ReadCheck::Checked(
        reference,
        VersionCheck::Tampered {
            leaf_index,
            reason: reason.into(),
        },
    )
}

/// `block` mode withholds a tampered answer (502).
pub fn refuse_in_block_mode(
    reference: &str,
    check: &VersionCheck,
    policy: VerifyReads,
) -> Result<(), GatewayError> {
    match (check, policy) {
        (VersionCheck::Tampered { leaf_index, reason }, VerifyReads::Block) => {
            Err(GatewayError::TamperedVersion {
                reference: reference.to_owned(),
                leaf_index: *leaf_index,
                reason: reason.clone(),
            })
        }
        _ => Ok(()),
    }
}

/// Checks a read's or vread's 2xx answer against the request and the
/// ledger. Whoever can edit the upstream's database must not be able to
/// talk the check into `unchecked` or into `verified` for the wrong
/// version, so besides the commitment it requires, once the resource has
/// any seal:
/// - type and id as in the path; for a vread, the version in the path;
///   `meta.versionId` present and equal to the `ETag`;
/// - no `SUBSETTED` tag unless the client asked for a subset;
/// - JSON a strict reader accepts (no duplicate members);
/// - for a read, the newest sealed version (a row rolled back to an older
///   sealed version's bytes is caught here), and not a sealed deletion.
pub fn check_read(
    ledger: &Ledger,
    body: &[u8],
    request: &ReadRequest,
) -> Result<ReadCheck, ledger::Error> {
    let (Some(path_type), Some(path_id)) = (&request.resource_type, &request.id) else {
        return Ok(ReadCheck::Unchecked);
    };
    let newest = ledger.store().newest_sealed(path_type, path_id)?;
    let reference = match &request.version_id {
        Some(version) => format!("{path_type}/{path_id}/_history/{version}"),
        None => format!("{path_type}/{path_id}"),
    };
    let head = serde_json::from_slice::<ResourceHead>(body);
    let Some(newest) = newest else {
        return check_never_sealed(ledger, body, head.ok(), request, reference);
    };
    let key = match answered_version(head, request) {
        Ok(Some(key)) => key,
        Ok(None) => return Ok(ReadCheck::Unchecked),
        Err(reason) => return Ok(tampered(reference, newest.leaf_index, reason)),
    };
    let check = ledger.check_version(&key, body, Format::Json)?;
    if request.version_id.is_none() {
        if let Some(rolled_back) = check_current(&key, &check, &newest, request) {
            return Ok(rolled_back);
        }
    }
    Ok(ReadCheck::Checked(key.to_string(), check))
}

/// The path's resource was never sealed; the body may still be another
/// resource's sealed version (an insider answering a read of B with A's
/// bytes): that is not `verified`.
fn check_never_sealed(
    ledger: &Ledger,
    body: &[u8],
    head: Option<ResourceHead>,
    request: &ReadRequest,
    reference: String,
) -> Result<ReadCheck, ledger::Error> {
    let Some(key) = head.and_then(|h| stored_key(h, request)) else {
        return Ok(ReadCheck::Unchecked);
    };
    let asked_for = |key: &VersionKey| {
        request.resource_type.as_ref() == Some(&key.resource_type)
            && request.id.as_ref() == Some(&key.id)
            && [&request.version_id, &request.etag_version]
                .iter()
                .all(|v| v.as_ref().is_none_or(|v| *v == key.version_id))
    };
    Ok(match ledger.check_version(&key, body, Format::Json)? {
        VersionCheck::Unsealed => ReadCheck::Checked(reference, VersionCheck::Unsealed),
        VersionCheck::Verified { leaf_index, .. } if !asked_for(&key) => tampered(
            reference,
            leaf_index,
            "the answer is another sealed version than the one asked for",
        ),
        other => ReadCheck::Checked(key.to_string(), other),
    })
}

/// The version a read's answer claims to be, checked against the request:
/// type and id as in the path, `meta.versionId` present and equal to the
/// vread's and the `ETag`'s, no `SUBSETTED` tag nobody asked for, JSON a
/// strict reader accepts. `Ok(None)`: a subset the client asked for.
fn answered_version(
    head: Result<ResourceHead, serde_json::Error>,
    request: &ReadRequest,
) -> Result<Option<VersionKey>, &'static str> {
    let Ok(head) = head else {
        return Err("the answer is not valid FHIR JSON (a duplicate member?)");
    };
    if head.resource_type != request.resource_type || head.id != request.id {
        return Err("the answer is another resource than the one asked for");
    }
    if request.subset_requested && head.meta.as_ref().is_some_and(MetaHead::subsetted) {
        return Ok(None);
    }
    let Some(version_id) = head.meta.and_then(|m| m.version_id) else {
        return Err("meta.versionId was removed from a sealed resource");
    };
    if request
        .version_id
        .as_ref()
        .is_some_and(|v| *v != version_id)
    {
        return Err("the answer is another version than the one asked for");
    }
    if request
        .etag_version
        .as_ref()
        .is_some_and(|v| *v != version_id)
    {
        return Err("meta.versionId does not match the ETag");
    }
    Ok(head
        .resource_type
        .zip(head.id)
        .map(|(resource_type, id)| VersionKey {
            resource_type,
            id,
            version_id,
        }))
}

/// A read answers the current version: one older than the newest seal
/// (sealed before this request started) is a rollback; a never-sealed
/// version id older than it is forged; an unsealed version of a resource
/// sealed as deleted is tampered. `None` when none of these.
fn check_current(
    key: &VersionKey,
    check: &VersionCheck,
    newest: &ledger::store::IndexRecord,
    request: &ReadRequest,
) -> Option<ReadCheck> {
    let newest_settled = newest.sealed_at < request.started_at;
    if !newest_settled || newest.key == *key {
        return None;
    }
    let reference = key.to_string();
    let older = match check {
        VersionCheck::Verified { leaf_index, .. } | VersionCheck::Tampered { leaf_index, .. } => {
            *leaf_index < newest.leaf_index
        }
        VersionCheck::Unsealed => false,
    };
    if older {
        let reason = format!(
            "rolled back: version {} is sealed as newer",
            newest.key.version_id
        );
        return Some(tampered(reference, newest.leaf_index, reason));
    }
    let unsealed = *check == VersionCheck::Unsealed;
    let forged_older = unsealed
        && matches!(
            (key.version_id.parse::<u64>(), newest.key.version_id.parse::<u64>()),
            (Ok(returned), Ok(sealed)) if returned < sealed
        );
    if forged_older {
        let reason = format!(
            "version id {} was never sealed and is older than the sealed version {}",
            key.version_id, newest.key.version_id
        );
        return Some(tampered(reference, newest.leaf_index, reason));
    }
    if unsealed && newest.leaf.kind == ledger::leaf::LeafKind::Tombstone {
        return Some(tampered(
            reference,
            newest.leaf_index,
            "the resource is sealed as deleted",
        ));
    }
    None
}

/// A read or vread answered 404 or 410: reported when the ledger holds
/// the resource (read) or that version (vread) sealed as present — an
/// insider deleting a row must not go unnoticed.
pub fn check_missing(
    ledger: &Ledger,
    request: &ReadRequest,
) -> Result<Option<(String, VersionCheck)>, ledger::Error> {
    let (Some(resource_type), Some(id)) = (&request.resource_type, &request.id) else {
        return Ok(None);
    };
    let record = match &request.version_id {
        Some(version_id) => ledger.store().find_version(&VersionKey {
            resource_type: resource_type.clone(),
            id: id.clone(),
            version_id: version_id.clone(),
        })?,
        None => ledger
            .store()
            .newest_sealed(resource_type, id)?
            .filter(|r| r.sealed_at < request.started_at),
    };
    Ok(record
        .filter(|r| r.leaf.kind == ledger::leaf::LeafKind::Version)
        .map(|r| {
            (
                r.key.to_string(),
                VersionCheck::Tampered {
                    leaf_index: r.leaf_index,
                    reason: "a sealed version is missing from the upstream".into(),
                },
            )
        }))
}

/// The newest seal of the resource a Bundle entry holds, read leniently
/// (type and id only; duplicate members allowed, the last wins), for
/// entries that name no checkable version.
fn sealed_resource_of(
    ledger: &Ledger,
    bytes: &[u8],
) -> Result<Option<ledger::store::IndexRecord>, ledger::Error> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Ok(None);
    };
    match (value["resourceType"].as_str(), value["id"].as_str()) {
        (Some(resource_type), Some(id)) => ledger.store().newest_sealed(resource_type, id),
        _ => Ok(None),
    }
}

/// The key a resource head names, when it names one.
fn stored_key(head: ResourceHead, request: &ReadRequest) -> Option<VersionKey> {
    let meta = head.meta?;
    if request.subset_requested && meta.subsetted() {
        return None;
    }
    Some(VersionKey {
        resource_type: head.resource_type?,
        id: head.id?,
        version_id: meta.version_id?,
    })
}

fn ledger_error(error: ledger::Error) -> GatewayError {
    GatewayError::ledger(error)
}

/// Byte-range edits of a JSON body, applied in one pass. Positions come
/// from borrowed [`RawValue`]s, which are slices of the body itself.
struct Splices<'a> {
    body: &'a [u8],
    /// (start, end, replacement): bytes `start..end` become `replacement`.
    edits: Vec<(usize, usize, Vec<u8>)>,
}

impl<'a> Splices<'a> {
    fn new(body: &'a [u8]) -> Self {
        Splices {
            body,
            edits: Vec::new(),
        }
    }

    fn offset_of(&self, raw: &RawValue) -> usize {
        // A borrowed RawValue points into `body`: its address minus the
        // body's address is its offset (no unsafe needed to compare).
        raw.get().as_ptr() as usize - self.body.as_ptr() as usize
    }

    /// Adds the verification extension to an entry object: into its
    /// existing `extension` array, or as a new first member.
    fn annotate(&mut self, entry: &RawValue, existing: Option<&RawValue>, status: &str) {
        let extension = format!(r#"{{"url":"{ENTRY_EXTENSION_URL}","valueCode":"{status}"}}"#);
        match existing {
            Some(array) if array.get().starts_with('[') => {
                let at = self.offset_of(array) + 1;
                let empty = array.get()[1..].trim_start().starts_with(']');
                let text = if empty {
                    extension
                } else {
                    format!("{extension},")
                };
                self.edits.push((at, at, text.into_bytes()));
            }
            Some(_) => {} // not an array: not FHIR; leave it alone
            None => {
                let at = self.offset_of(entry) + 1;
                let empty = entry.get()[1..].trim_start().starts_with('}');
                let member = format!(r#""extension":[{extension}]"#);
                let text = if empty { member } else { format!("{member},") };
                self.edits.push((at, at, text.into_bytes()));
            }
        }
    }

    /// Replaces a value (the entry's resource) with other JSON.
    fn replace(&mut self, value: &RawValue, json: &[u8]) {
        let start = self.offset_of(value);
        self.edits
            .push((start, start + value.get().len(), json.to_vec()));
    }

    /// The edited body, or `None` when nothing changed.
    fn apply(mut self) -> Option<Vec<u8>> {
        if self.edits.is_empty() {
            return None;
        }
        self.edits.sort_by_key(|(start, end, _)| (*start, *end));
        let extra: usize = self.edits.iter().map(|(_, _, text)| text.len()).sum();
        let mut out = Vec::with_capacity(self.body.len() + extra);
        let mut copied = 0;
        for (start, end, text) in &self.edits {
            out.extend_from_slice(&self.body[copied..*start]);
            out.extend_from_slice(text);
            copied = *end;
        }
        out.extend_from_slice(&self.body[copied..]);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::log::{LedgerOptions, SealRequest};

    fn ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(
            dir.path(),
            &LedgerOptions {
                origin: "test.local/inkan".into(),
                key_file: None,
            },
        )
        .unwrap();
        (dir, ledger)
    }

    fn seal(ledger: &Ledger, resource: &str) {
        let head: ResourceHead = serde_json::from_str(resource).unwrap();
        let key = VersionKey {
            resource_type: head.resource_type.unwrap(),
            id: head.id.unwrap(),
            version_id: head.meta.unwrap().version_id.unwrap(),
        };
        ledger
            .seal(vec![SealRequest::Version {
                key,
                bytes: resource.as_bytes().to_vec(),
                format: Format::Json,
                original_digest: None,
                backfilled: false,
            }])
            .unwrap();
    }

    fn annotate_bundle(ledger: &Ledger, body: &str) -> (ReadVerification, Option<Vec<u8>>) {
        verify_answer(
            ledger,
            body.as_bytes(),
            Shape::Bundle,
            VerifyReads::Annotate,
            &ReadRequest::default(),
        )
        .unwrap()
    }

    const P1: &str =
        r#"{"resourceType":"Patient","id":"a","meta":{"versionId":"1"},"gender":"female"}"#;
    const P1_ALTERED: &str =
        r#"{"resourceType":"Patient","id":"a","meta":{"versionId":"1"},"gender":"male"}"#;
    const P2: &str = r#"{"resourceType":"Patient","id":"b","meta":{"versionId":"1"}}"#;

    const A2: &str =
        r#"{"resourceType":"Patient","id":"a","meta":{"versionId":"2"},"gender":"other"}"#;

    /// A read (`vid` None) or vread of Patient/`id`, all seals settled.
    fn request(id: &str, vid: Option<&str>, etag: Option<&str>, subset: bool) -> ReadRequest {
        ReadRequest {
            resource_type: Some("Patient".into()),
            id: Some(id.into()),
            version_id: vid.map(str::to_owned),
            etag_version: etag.map(str::to_owned),
            subset_requested: subset,
            started_at: i64::MAX,
        }
    }

    // Verify-on-read could be talked around by whoever edits the upstream's
    // database: a rollback to an older sealed version read `verified`; a
    // SUBSETTED tag, a removed versionId or a duplicate id forced
    // `unchecked`; nothing was checked against the path or the ETag.
    #[test]
    fn single_resource_outcomes() {
        let (_dir, ledger) = ledger();
        seal(&ledger, P1);
        seal(&ledger, A2);
        let reordered =
            r#"{ "gender":"other", "meta":{"versionId":"2"}, "id":"a", "resourceType":"Patient" }"#;
        let a2_altered = A2.replace("other", "male");
        let subsetted = r#"{"resourceType":"Patient","id":"a","meta":{"versionId":"2","tag":[{"code":"SUBSETTED"}]}}"#;
        let (v, t, us, uc) = ("verified", "tampered", "unsealed", "unchecked");
        #[rustfmt::skip]
        let cases: &[(&str, ReadRequest, &str, &str)] = &[
            ("current version",            request("a", None, None, false),      A2,          v),
            ("members in another order",   request("a", None, Some("2"), false), reordered,   v),
            ("altered content",            request("a", None, None, false),      &a2_altered, t),
            ("rolled back to version 1",   request("a", None, None, false),      P1,          t),
            ("vread of version 1",         request("a", Some("1"), None, false), P1,          v),
            ("vread 2 answered with 1",    request("a", Some("2"), None, false), P1,          t),
            ("ETag names another version", request("a", None, Some("1"), false), A2,          t),
            ("versionId removed",          request("a", None, None, false),      r#"{"resourceType":"Patient","id":"a","gender":"other"}"#, t),
            ("SUBSETTED nobody asked for", request("a", None, None, false),      subsetted,   t),
            ("SUBSETTED asked for",        request("a", None, None, true),       subsetted,   uc),
            ("duplicate id member",        request("a", None, None, false),      r#"{"resourceType":"Patient","id":"b","id":"a","meta":{"versionId":"2"},"gender":"other"}"#, t),
            ("another resource",           request("a", None, None, false),      P2,          t),
            ("never sealed",               request("b", None, None, false),      P2,          us),
            ("B answered with A's bytes",  request("b", None, None, false),      A2,          t),
            ("forged older version id",    request("a", None, None, false),      r#"{"resourceType":"Patient","id":"a","meta":{"versionId":"0"},"gender":"other"}"#, t),
            ("a newer unsealed version",   request("a", None, None, false),      r#"{"resourceType":"Patient","id":"a","meta":{"versionId":"3"},"gender":"x"}"#, us),
            ("never sealed, no version",   request("b", None, None, false),      r#"{"resourceType":"Patient","id":"b"}"#, uc),
        ];
        for (what, read, body, want) in cases {
            let (got, edited) = verify_answer(
                &ledger,
                body.as_bytes(),
                Shape::Resource,
                VerifyReads::Annotate,
                read,
            )
            .unwrap();
            let got = match got {
                ReadVerification { verified: 1, .. } => v,
                ReadVerification { tampered: 1, .. } => t,
                ReadVerification { unsealed: 1, .. } => us,
                ReadVerification { unchecked: 1, .. } => uc,
                other => panic!("{what}: {other:?}"),
            };
            assert_eq!(got, *want, "{what}");
            assert!(edited.is_none(), "a single resource is never edited");
            let blocked = verify_answer(
                &ledger,
                body.as_bytes(),
                Shape::Resource,
                VerifyReads::Block,
                read,
            );
            assert_eq!(
                matches!(blocked, Err(GatewayError::TamperedVersion { .. })),
                *want == t,
                "{what}: withheld in block mode exactly when tampered"
            );
        }
    }

    // A sealed resource that answers 404 was not reported.
    #[test]
    fn a_sealed_resource_answering_404_is_reported() {
        let (_dir, ledger) = ledger();
        seal(&ledger, A2);
        ledger
            .seal(vec![SealRequest::Tombstone {
                key: VersionKey {
                    resource_type: "Patient".into(),
                    id: "gone".into(),
                    version_id: "3".into(),
                },
                backfilled: false,
            }])
            .unwrap();
        #[rustfmt::skip]
        let cases: &[(ReadRequest, bool)] = &[
            (request("a", None, None, false),      true),
            (request("a", Some("2"), None, false), true),
            (request("a", Some("9"), None, false), false),
            (request("b", None, None, false),      false),
            (request("gone", None, None, false),   false),
        ];
        for (read, reported) in cases {
            let found = check_missing(&ledger, read).unwrap();
            assert_eq!(found.is_some(), *reported, "{read:?}");
        }
        // A version sealed after the read started may be missing from it.
        let racing = ReadRequest {
            started_at: 0,
            ..request("a", None, None, false)
        };
        assert!(check_missing(&ledger, &racing).unwrap().is_none());
    }

    #[test]
    fn bundle_entries_are_annotated_without_touching_resources() {
        let (_dir, ledger) = ledger();
        seal(&ledger, P1);
        let body = format!(
            r#"{{"resourceType":"Bundle","type":"searchset","entry":[{{"fullUrl":"x","resource":{P1_ALTERED}}},{{"resource":{P2}, "extension":[{{"url":"other"}}]}},{{}}]}}"#
        );
        let (summary, edited) = annotate_bundle(&ledger, &body);
        assert_eq!(
            summary,
            ReadVerification {
                tampered: 1,
                unsealed: 1,
                ..Default::default()
            }
        );
        let edited = String::from_utf8(edited.unwrap()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&edited).unwrap();
        assert_eq!(value["entry"][0]["extension"][0]["valueCode"], "tampered");
        assert_eq!(value["entry"][1]["extension"][0]["valueCode"], "unsealed");
        assert_eq!(value["entry"][1]["extension"][1]["url"], "other");
        assert!(value["entry"][2].get("extension").is_none());
        assert!(
            edited.contains(P1_ALTERED) && edited.contains(P2),
            "resource bytes unchanged"
        );

        let (_, blocked) = verify_answer(
            &ledger,
            body.as_bytes(),
            Shape::Bundle,
            VerifyReads::Block,
            &ReadRequest::default(),
        )
        .unwrap();
        let blocked: serde_json::Value = serde_json::from_slice(&blocked.unwrap()).unwrap();
        assert_eq!(
            blocked["entry"][0]["resource"]["resourceType"],
            "OperationOutcome"
        );
        assert_eq!(
            blocked["entry"][0]["resource"]["issue"][0]["code"],
            "security"
        );
        assert_eq!(blocked["entry"][1]["resource"]["id"], "b");
    }

    #[test]
    fn a_subsetted_search_entry_nobody_asked_for_is_still_checked() {
        let (_dir, ledger) = ledger();
        seal(&ledger, P1);
        let tagged = r#"{"resourceType":"Patient","id":"a","meta":{"versionId":"1","tag":[{"code":"SUBSETTED"}]},"gender":"male"}"#;
        let body = format!(
            r#"{{"resourceType":"Bundle","type":"searchset","entry":[{{"resource":{tagged}}}]}}"#
        );
        let (summary, _) = annotate_bundle(&ledger, &body);
        assert_eq!(summary.tampered, 1, "{summary:?}");
        let asked = ReadRequest {
            subset_requested: true,
            ..ReadRequest::default()
        };
        let (summary, _) = verify_answer(
            &ledger,
            body.as_bytes(),
            Shape::Bundle,
            VerifyReads::Annotate,
            &asked,
        )
        .unwrap();
        assert_eq!(summary.unchecked, 1, "{summary:?}");
    }

    // A removed versionId or duplicate members in a search entry forced
    // `unchecked` for a sealed resource.
    #[test]
    fn a_sealed_search_entry_without_a_checkable_version_is_tampered() {
        let (_dir, ledger) = ledger();
        seal(&ledger, P1);
        let stripped = r#"{"resourceType":"Patient","id":"a","gender":"male"}"#;
        let duplicated = r#"{"resourceType":"Patient","id":"a","id":"a","meta":{"versionId":"1"},"gender":"male"}"#;
        let unsealed = r#"{"resourceType":"Patient","id":"zz","gender":"male"}"#;
        let body = format!(
            r#"{{"resourceType":"Bundle","type":"searchset","entry":[{{"resource":{stripped}}},{{"resource":{duplicated}}},{{"resource":{unsealed}}}]}}"#
        );
        let (summary, _) = annotate_bundle(&ledger, &body);
        assert_eq!(
            summary,
            ReadVerification {
                tampered: 2,
                unchecked: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn history_deletions_are_compared_with_tombstones() {
        let (_dir, ledger) = ledger();
        let key = VersionKey {
            resource_type: "Patient".into(),
            id: "a".into(),
            version_id: "2".into(),
        };
        ledger
            .seal(vec![SealRequest::Tombstone {
                key,
                backfilled: false,
            }])
            .unwrap();
        let body = r#"{"resourceType":"Bundle","type":"history","entry":[
            {"request":{"method":"DELETE","url":"Patient/a"},"response":{"status":"204","etag":"W/\"2\""}},
            {"request":{"method":"DELETE","url":"Patient/a"},"response":{"status":"204","etag":"W/\"3\""}}]}"#;
        let (summary, _) = annotate_bundle(&ledger, body);
        assert_eq!(
            summary,
            ReadVerification {
                verified: 1,
                unsealed: 1,
                ..Default::default()
            }
        );
    }
}
