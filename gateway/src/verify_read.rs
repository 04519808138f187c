//! Step 8b of the pipeline: verify-on-read.
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

use anchor::ledger::{Ledger, VersionCheck};
use anchor::resource::Format;
use anchor::store::VersionKey;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::VerifyReads;
use crate::error::GatewayError;

/// Response header with the counts, e.g.
/// `verified=3, tampered=0, unsealed=1, unchecked=0`.
pub const INKAN_VERIFY: &str = "inkan-verify";

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
            VersionCheck::Verified { .. } => self.verified += 1,
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

/// The fields of a resource that name its version.
#[derive(Deserialize)]
struct ResourceHead {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    id: Option<String>,
    meta: Option<MetaHead>,
}

#[derive(Deserialize)]
struct MetaHead {
    #[serde(rename = "versionId")]
    version_id: Option<String>,
    #[serde(default)]
    tag: Vec<Coding>,
}

#[derive(Deserialize)]
struct Coding {
    code: Option<String>,
}

#[derive(Deserialize)]
struct BundleHead<'a> {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    #[serde(borrow, default)]
    entry: Vec<&'a RawValue>,
    #[serde(default)]
    link: Vec<BundleLink>,
}

#[derive(Deserialize)]
struct BundleLink {
    relation: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct EntryHead<'a> {
    #[serde(borrow)]
    resource: Option<&'a RawValue>,
    #[serde(borrow)]
    extension: Option<&'a RawValue>,
    request: Option<EntryRequest>,
    response: Option<EntryResponse>,
}

#[derive(Deserialize)]
struct EntryRequest {
    method: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct EntryResponse {
    etag: Option<String>,
}

/// Which version a resource or Bundle entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryVersion {
    /// A resource with type, id and `meta.versionId`.
    Stored(VersionKey),
    /// A history entry for a deletion (`request.method` DELETE, version
    /// from `response.etag`).
    Deleted(VersionKey),
    /// A resource that cannot be compared with a seal: subsetted
    /// (`_summary`, `_elements`), or without a version id.
    Unchecked,
    /// Not a version: an OperationOutcome in a searchset, an empty entry.
    NotAVersion,
}

/// One entry of a Bundle, as slices of the Bundle's bytes.
#[derive(Debug)]
pub struct ScannedEntry<'a> {
    raw: &'a RawValue,
    extension: Option<&'a RawValue>,
    resource: Option<&'a RawValue>,
    pub version: EntryVersion,
}

impl<'a> ScannedEntry<'a> {
    /// The entry's resource, byte for byte as in the Bundle.
    pub fn resource_bytes(&self) -> Option<&'a [u8]> {
        self.resource.map(|r| r.get().as_bytes())
    }
}

/// A Bundle's entries and its `next` link.
#[derive(Debug)]
pub struct ScannedBundle<'a> {
    pub entries: Vec<ScannedEntry<'a>>,
    pub next: Option<String>,
}

/// Reads the entries of a FHIR JSON Bundle without copying resources.
/// `None` when `body` is not a Bundle.
pub fn scan_bundle(body: &[u8]) -> Option<ScannedBundle<'_>> {
    let bundle = serde_json::from_slice::<BundleHead>(body).ok()?;
    if bundle.resource_type.as_deref() != Some("Bundle") {
        return None;
    }
    let next = bundle
        .link
        .into_iter()
        .find(|l| l.relation.as_deref() == Some("next"))
        .and_then(|l| l.url);
    let entries = bundle
        .entry
        .into_iter()
        .map(|raw| {
            let Ok(head) = serde_json::from_str::<EntryHead>(raw.get()) else {
                return ScannedEntry {
                    raw,
                    extension: None,
                    resource: None,
                    version: EntryVersion::NotAVersion,
                };
            };
            let version = match (head.resource, &head.request) {
                (Some(resource), _) => resource_version(resource.get().as_bytes()),
                (None, Some(request)) if request.method.as_deref() == Some("DELETE") => {
                    deleted_version(request, head.response.as_ref())
                }
                _ => EntryVersion::NotAVersion,
            };
            ScannedEntry {
                raw,
                extension: head.extension,
                resource: head.resource,
                version,
            }
        })
        .collect();
    Some(ScannedBundle { entries, next })
}

/// Compares one version found in a response with the ledger.
pub fn check_entry(
    ledger: &Ledger,
    version: &EntryVersion,
    resource: Option<&[u8]>,
) -> Result<Option<VersionCheck>, anchor::Error> {
    match (version, resource) {
        (EntryVersion::Stored(key), Some(bytes)) => {
            ledger.check_version(key, bytes, Format::Json).map(Some)
        }
        (EntryVersion::Deleted(key), _) => ledger.check_deletion(key).map(Some),
        _ => Ok(None),
    }
}

/// Verifies the versions in `body` (upstream FHIR JSON). Returns the
/// counts and, when entries were annotated or replaced, the new body.
pub fn verify_response(
    ledger: &Ledger,
    body: &[u8],
    shape: Shape,
    policy: VerifyReads,
) -> Result<(ReadVerification, Option<Vec<u8>>), GatewayError> {
    let mut summary = ReadVerification::default();
    match shape {
        Shape::Resource => {
            let version = resource_version(body);
            if version == EntryVersion::Unchecked {
                summary.unchecked += 1;
            }
            if let Some(check) = check_entry(ledger, &version, Some(body)).map_err(ledger_error)? {
                summary.count(&check);
                if let (
                    EntryVersion::Stored(key),
                    VersionCheck::Tampered { leaf_index, reason },
                    VerifyReads::Block,
                ) = (&version, &check, policy)
                {
                    return Err(GatewayError::TamperedVersion {
                        reference: key.to_string(),
                        leaf_index: *leaf_index,
                        reason: reason.clone(),
                    });
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
                if entry.version == EntryVersion::Unchecked {
                    summary.unchecked += 1;
                }
                let Some(check) = check_entry(ledger, &entry.version, entry.resource_bytes())
                    .map_err(ledger_error)?
                else {
                    continue;
                };
                summary.count(&check);
                splices.annotate(entry.raw, entry.extension, check.as_str());
                if let (
                    EntryVersion::Stored(key),
                    VersionCheck::Tampered { leaf_index, reason },
                    VerifyReads::Block,
                    Some(resource),
                ) = (&entry.version, &check, policy, entry.resource)
                {
                    let error = GatewayError::TamperedVersion {
                        reference: key.to_string(),
                        leaf_index: *leaf_index,
                        reason: reason.clone(),
                    };
                    let outcome =
                        crate::fhir::outcome::render(&error, crate::fhir::format::WireFormat::Json);
                    splices.replace(resource, &outcome);
                }
            }
            Ok((summary, splices.apply()))
        }
    }
}

/// Which version a resource's bytes are.
pub fn resource_version(bytes: &[u8]) -> EntryVersion {
    let Ok(head) = serde_json::from_slice::<ResourceHead>(bytes) else {
        return EntryVersion::Unchecked;
    };
    let (Some(resource_type), Some(id)) = (head.resource_type, head.id) else {
        return EntryVersion::NotAVersion;
    };
    if resource_type == "OperationOutcome" {
        return EntryVersion::NotAVersion;
    }
    let Some(meta) = head.meta else {
        return EntryVersion::Unchecked;
    };
    if meta
        .tag
        .iter()
        .any(|t| t.code.as_deref() == Some("SUBSETTED"))
    {
        return EntryVersion::Unchecked;
    }
    match meta.version_id {
        Some(version_id) => EntryVersion::Stored(VersionKey {
            resource_type,
            id,
            version_id,
        }),
        None => EntryVersion::Unchecked,
    }
}

/// The version a history entry for a deletion names.
fn deleted_version(request: &EntryRequest, response: Option<&EntryResponse>) -> EntryVersion {
    let url = request.url.as_deref().unwrap_or("");
    let path = url.split(['?', '#']).next().unwrap_or("");
    let mut segments = path.rsplit('/');
    let (Some(id), Some(resource_type)) = (segments.next(), segments.next()) else {
        return EntryVersion::NotAVersion;
    };
    let version_id = response
        .and_then(|r| r.etag.as_deref())
        .and_then(crate::seal::etag_version);
    match version_id {
        Some(version_id) => EntryVersion::Deleted(VersionKey {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            version_id,
        }),
        None => EntryVersion::Unchecked,
    }
}

fn ledger_error(error: anchor::Error) -> GatewayError {
    GatewayError::Ledger {
        detail: error.to_string(),
    }
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
    use anchor::ledger::{LedgerOptions, SealRequest};

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
        verify_response(
            ledger,
            body.as_bytes(),
            Shape::Bundle,
            VerifyReads::Annotate,
        )
        .unwrap()
    }

    const P1: &str =
        r#"{"resourceType":"Patient","id":"a","meta":{"versionId":"1"},"gender":"female"}"#;
    const P1_ALTERED: &str =
        r#"{"resourceType":"Patient","id":"a","meta":{"versionId":"1"},"gender":"male"}"#;
    const P2: &str = r#"{"resourceType":"Patient","id":"b","meta":{"versionId":"1"}}"#;

    #[test]
    fn single_resource_outcomes() {
        let (_dir, ledger) = ledger();
        seal(&ledger, P1);
        let reordered = r#"{ "gender":"female", "meta":{"versionId":"1"}, "id":"a", "resourceType":"Patient" }"#;
        #[rustfmt::skip]
        let cases: &[(&str, ReadVerification)] = &[
            (P1,         ReadVerification { verified: 1, ..Default::default() }),
            (reordered,  ReadVerification { verified: 1, ..Default::default() }),
            (P1_ALTERED, ReadVerification { tampered: 1, ..Default::default() }),
            (P2,         ReadVerification { unsealed: 1, ..Default::default() }),
            (r#"{"resourceType":"Patient","id":"a","meta":{"versionId":"1","tag":[{"code":"SUBSETTED"}]}}"#,
                         ReadVerification { unchecked: 1, ..Default::default() }),
        ];
        for (body, want) in cases {
            let (got, edited) = verify_response(
                &ledger,
                body.as_bytes(),
                Shape::Resource,
                VerifyReads::Annotate,
            )
            .unwrap();
            assert_eq!(got, *want, "{body}");
            assert!(edited.is_none(), "a single resource is never edited");
        }
        let blocked = verify_response(
            &ledger,
            P1_ALTERED.as_bytes(),
            Shape::Resource,
            VerifyReads::Block,
        );
        assert!(matches!(
            blocked,
            Err(GatewayError::TamperedVersion { leaf_index: 0, .. })
        ));
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

        let (_, blocked) =
            verify_response(&ledger, body.as_bytes(), Shape::Bundle, VerifyReads::Block).unwrap();
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
