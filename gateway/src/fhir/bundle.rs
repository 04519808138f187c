//! Reading FHIR JSON resources and Bundles for the versions they hold,
//! without copying resources: which version a resource is, the entries of
//! a history or searchset Bundle (and its `next` link), and the entries of
//! a batch or transaction and of its response.

use ledger::store::VersionKey;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::path::{etag_version, ResourcePath};

/// The fields of a resource that name its version.
#[derive(Debug, Deserialize)]
pub struct ResourceHead {
    #[serde(rename = "resourceType")]
    pub resource_type: Option<String>,
    pub id: Option<String>,
    pub meta: Option<MetaHead>,
}

/// The fields of `meta` that matter for a version.
#[derive(Debug, Deserialize)]
pub struct MetaHead {
    #[serde(rename = "versionId")]
    pub version_id: Option<String>,
    #[serde(default)]
    tag: Vec<TagCoding>,
}

impl MetaHead {
    /// Tagged `SUBSETTED` (`_summary`, `_elements`): not the whole version.
    pub fn subsetted(&self) -> bool {
        self.tag
            .iter()
            .any(|t| t.code.as_deref() == Some("SUBSETTED"))
    }
}

#[derive(Debug, Deserialize)]
struct TagCoding {
    code: Option<String>,
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
    if meta.subsetted() {
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
    request: Option<HistoryRequest>,
    response: Option<HistoryResponse>,
}

/// `entry.request` of a history entry.
#[derive(Deserialize)]
struct HistoryRequest {
    method: Option<String>,
    url: Option<String>,
}

/// `entry.response` of a history entry.
#[derive(Deserialize)]
struct HistoryResponse {
    etag: Option<String>,
}

/// One entry of a Bundle, as slices of the Bundle's bytes.
#[derive(Debug)]
pub struct ScannedEntry<'a> {
    /// The whole entry object.
    pub raw: &'a RawValue,
    /// The entry's own `extension`, if any.
    pub extension: Option<&'a RawValue>,
    /// The entry's `resource`, if any.
    pub resource: Option<&'a RawValue>,
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
    let entries = bundle.entry.into_iter().map(scan_entry).collect();
    Some(ScannedBundle { entries, next })
}

fn scan_entry(raw: &RawValue) -> ScannedEntry<'_> {
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
            deletion_version(request, head.response.as_ref())
        }
        _ => EntryVersion::NotAVersion,
    };
    ScannedEntry {
        raw,
        extension: head.extension,
        resource: head.resource,
        version,
    }
}

/// The version a history entry for a deletion names: the resource from
/// `request.url`, the version from `response.etag`.
fn deletion_version(request: &HistoryRequest, response: Option<&HistoryResponse>) -> EntryVersion {
    let Some(path) = request.url.as_deref().and_then(ResourcePath::parse) else {
        return EntryVersion::NotAVersion;
    };
    let version_id = response
        .and_then(|r| r.etag.as_deref())
        .and_then(etag_version);
    match version_id {
        Some(version_id) => EntryVersion::Deleted(VersionKey {
            resource_type: path.resource_type,
            id: path.id,
            version_id,
        }),
        None => EntryVersion::Unchecked,
    }
}

/// A batch or transaction Bundle as the client sent it.
#[derive(Debug, Deserialize)]
pub struct BatchRequest {
    #[serde(default)]
    pub entry: Vec<BatchRequestEntry>,
}

#[derive(Debug, Deserialize)]
pub struct BatchRequestEntry {
    pub request: BatchEntryRequest,
}

/// `entry.request` of a batch or transaction.
#[derive(Debug, Deserialize)]
pub struct BatchEntryRequest {
    pub method: String,
    pub url: String,
}

/// The server's batch-response or transaction-response Bundle: entries
/// answer the request's entries in order.
#[derive(Debug, Deserialize)]
pub struct BatchResponse<'a> {
    #[serde(borrow, default)]
    pub entry: Vec<BatchResponseEntry<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct BatchResponseEntry<'a> {
    #[serde(borrow)]
    pub resource: Option<&'a RawValue>,
    pub response: BatchEntryResponse,
}

/// `entry.response` of a batch-response or transaction-response.
#[derive(Debug, Deserialize)]
pub struct BatchEntryResponse {
    pub status: String,
    pub location: Option<String>,
    pub etag: Option<String>,
}
