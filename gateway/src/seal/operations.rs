//! The FHIR operations the gateway answers itself from the ledger (never
//! forwarded; the pipeline's seal-operations step). Documented as OperationDefinitions in
//! `docs/fhir/` and listed in the rewritten CapabilityStatement.
//!
//! - `GET [base]/{type}/{id}/_history/{vid}/$proof`: the proof bundle of
//!   that version (`inkan-proof-bundle/v1` JSON; the C2SP `tlog-proof` text
//!   when the client accepts `text/plain` or `text/x-tlog-proof`). 404
//!   OperationOutcome when the version is not sealed or no checkpoint
//!   covers it yet.
//! - `GET [base]/{type}/{id}/$proof`: the same for the version the upstream
//!   holds now (read first); `Inkan-Verify` says whether that copy matches.
//! - `POST [base]/$verify` (or `[base]/{type}/$verify`) with a resource
//!   (JSON or XML, with `meta.versionId`) in the body: a `Parameters`
//!   answer saying whether that exact version is sealed and unaltered
//!   (`result` = `verified`, `tampered` or `unsealed`). 200 whatever the
//!   result once the caller may read the version; 400 when the body is
//!   not a versioned resource.
//! - `GET [base]/OperationDefinition/inkan-proof` and `…/inkan-verify`:
//!   the definitions themselves.
//!
//! Bound to the caller: `$proof` releases a bundle (salt included, as
//! sensitive as the record) only after the upstream, asked with the
//! caller's own `Authorization` — never the gateway's upstream token —
//! answered a read of exactly that version with 2xx, and those bytes match
//! the seal. Otherwise the upstream's 401/403 (404 for any other refusal)
//! as an OperationOutcome; an altered copy is withheld (502). `$verify`
//! makes the same read first (so it is no oracle for guesses about
//! records the caller may not see) and is limited per caller
//! (`limits.verify_requests_per_minute`, then 429).
//!
//! Only when the ledger is open (`ledger.seal_writes`); otherwise these
//! paths are forwarded like any other.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, Method, Response, StatusCode};

use ledger::log::{Ledger, VersionCheck};
use ledger::resource::Format;
use ledger::store::VersionKey;

use super::verify_read::INKAN_VERIFY;
use super::{blocking, Sealer};
use crate::body::{self, ResponseBody};
use crate::error::GatewayError;
use crate::fhir::bundle::{resource_version, EntryVersion};
use crate::fhir::format::{Wanted, WireFormat};
use crate::fhir::path::{is_resource_type, segments, version_path};
use crate::fhir::xml_bridge;
use crate::upstream::UpstreamReader;

pub const PROOF_DEFINITION: &str =
    include_str!("../../../docs/fhir/OperationDefinition-inkan-proof.json");
pub const VERIFY_DEFINITION: &str =
    include_str!("../../../docs/fhir/OperationDefinition-inkan-verify.json");

/// Canonical URLs, as listed in the CapabilityStatement.
pub const PROOF_CANONICAL: &str = "https://inkan.dev/fhir/OperationDefinition/inkan-proof";
pub const VERIFY_CANONICAL: &str = "https://inkan.dev/fhir/OperationDefinition/inkan-verify";

/// A request the gateway answers from the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealOperation {
    /// `$proof` of one version.
    ProofOfVersion(VersionKey),
    /// `$proof` of the upstream's current version of a resource.
    ProofOfCurrent { resource_type: String, id: String },
    /// `$verify` with a resource in the body.
    Verify,
    /// One of the OperationDefinitions.
    Definition(&'static str),
}

/// Recognises a seal operation from the method and the path after the
/// FHIR base. `None`: not one of ours, forward it.
pub fn classify(method: &Method, fhir_path: &str) -> Option<SealOperation> {
    let is_type = |s: &str| is_resource_type(s);
    match (method, segments(fhir_path).as_slice()) {
        (&Method::GET, [t, id, "_history", vid, "$proof"]) if is_type(t) => {
            Some(SealOperation::ProofOfVersion(VersionKey {
                resource_type: (*t).to_owned(),
                id: (*id).to_owned(),
                version_id: (*vid).to_owned(),
            }))
        }
        (&Method::GET, [t, id, "$proof"]) if is_type(t) => Some(SealOperation::ProofOfCurrent {
            resource_type: (*t).to_owned(),
            id: (*id).to_owned(),
        }),
        (&Method::POST, ["$verify"]) => Some(SealOperation::Verify),
        (&Method::POST, [t, "$verify"]) if is_type(t) => Some(SealOperation::Verify),
        (&Method::GET, ["OperationDefinition", "inkan-proof"]) => {
            Some(SealOperation::Definition(PROOF_DEFINITION))
        }
        (&Method::GET, ["OperationDefinition", "inkan-verify"]) => {
            Some(SealOperation::Definition(VERIFY_DEFINITION))
        }
        _ => None,
    }
}

/// What an operation needs to know about its request.
#[derive(Debug, Clone, Copy)]
pub struct OperationRequest<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub wanted: Wanted,
    /// The client's address, for the per-caller limit when it sent no
    /// credentials.
    pub peer: std::net::IpAddr,
}

/// Answers a seal operation from the ledger, bound to the caller (see the
/// module documentation). `upstream` is read with the caller's own
/// `Authorization`, never the gateway's upstream token: the upstream
/// decides whether *this caller* may read the version before anything
/// about its seal (the salt above all) is released.
pub async fn answer(
    sealer: &Sealer,
    upstream: &UpstreamReader,
    limiter: &RateLimiter,
    operation: SealOperation,
    request: OperationRequest<'_>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let caller = request.headers.get(AUTHORIZATION);
    let as_caller = upstream.with_authorization(caller);
    let ledger = sealer.ledger();
    match operation {
        SealOperation::ProofOfVersion(key) => {
            let check = caller_check(ledger, &as_caller, &key).await?;
            let mut response = blocking(|| proof_response(ledger, &key, request.headers))?;
            mark_check(&mut response, &check);
            Ok(response)
        }
        SealOperation::ProofOfCurrent { resource_type, id } => {
            let answer = read_as_caller(&as_caller, &format!("/{resource_type}/{id}")).await?;
            let current = caller_may_read(&answer)?;
            let EntryVersion::Stored(key) = resource_version(&current) else {
                return Err(GatewayError::NoProof {
                    detail: "the upstream's copy has no meta.versionId".into(),
                });
            };
            if key.resource_type != resource_type || key.id != id {
                return Err(GatewayError::NoProof {
                    detail: "the upstream answered with another resource".into(),
                });
            }
            let check = require_verified(
                &key,
                blocking(|| ledger.check_version(&key, &current, Format::Json)),
            )?;
            let mut response = blocking(|| proof_response(ledger, &key, request.headers))?;
            mark_check(&mut response, &check);
            Ok(response)
        }
        SealOperation::Verify => {
            if !limiter.admit(caller_key(caller, request.peer)) {
                return Err(GatewayError::RateLimited);
            }
            let (json, key) = posted_version(request.body)?;
            // Only about versions the caller may read: the same check as
            // `$proof`, without which `$verify` is an oracle for guesses.
            let answer = read_as_caller(&as_caller, &version_path(&key)).await?;
            if answer.0 != StatusCode::GONE {
                caller_may_read(&answer)?;
            }
            blocking(|| verify_posted_resource(ledger, &json, &key, request.wanted))
        }
        SealOperation::Definition(definition) => definition_response(definition, request.wanted),
    }
}

/// GETs `fhir_path` from the upstream as the caller and returns whatever
/// it answered; 502 when no complete answer came (the reason is logged,
/// not sent).
async fn read_as_caller(
    as_caller: &UpstreamReader,
    fhir_path: &str,
) -> Result<(StatusCode, HeaderMap, Bytes), GatewayError> {
    as_caller.get_answer(fhir_path).await.map_err(|error| {
        tracing::warn!(%error, "a seal operation's read as the caller failed");
        GatewayError::UpstreamProtocol
    })
}

/// Asks the upstream, as the caller, for version `key` and checks that
/// what it returns is what was sealed. A sealed deletion counts when the
/// upstream answers 410 Gone.
async fn caller_check(
    ledger: &Ledger,
    as_caller: &UpstreamReader,
    key: &VersionKey,
) -> Result<VersionCheck, GatewayError> {
    let answer = read_as_caller(as_caller, &version_path(key)).await?;
    if answer.0 == StatusCode::GONE {
        return require_verified(key, blocking(|| ledger.check_deletion(key)));
    }
    let bytes = caller_may_read(&answer)?;
    require_verified(
        key,
        blocking(|| ledger.check_version(key, &bytes, Format::Json)),
    )
}

/// `$proof`: the bundle of `key`, as JSON or as tlog-proof text.
pub fn proof_response(
    ledger: &Ledger,
    key: &VersionKey,
    request_headers: &HeaderMap,
) -> Result<Response<ResponseBody>, GatewayError> {
    let bundle = ledger.proof_bundle(key).map_err(|error| match error {
        ledger::Error::NotFound(detail) => GatewayError::NoProof { detail },
        other => GatewayError::ledger(other),
    })?;
    let wants_text = request_headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .any(|v| v == "text/plain" || v == "text/x-tlog-proof");
    let (body, content_type) = if wants_text {
        (
            bundle.to_tlog_proof().into_bytes(),
            "text/plain; charset=utf-8",
        )
    } else {
        // A bundle is plain data: serializing it cannot fail.
        let json = serde_json::to_vec_pretty(&bundle).unwrap_or_default();
        (json, "application/json")
    };
    Ok(plain_response(StatusCode::OK, content_type, body))
}

/// What the upstream answered the caller's own read: the body when it
/// let the caller read it (2xx); its 401, 403 or 404 otherwise (any other
/// refusal counts as 404: the caller learns nothing more than "not for
/// you"); a 5xx is the upstream failing, not a refusal.
pub fn caller_may_read(answer: &(StatusCode, HeaderMap, Bytes)) -> Result<Bytes, GatewayError> {
    let (status, _, body) = answer;
    if status.is_success() {
        return Ok(body.clone());
    }
    if status.is_server_error() {
        return Err(GatewayError::UpstreamProtocol);
    }
    Err(GatewayError::CallerMayNotRead {
        status: match status.as_u16() {
            401 => 401,
            403 => 403,
            _ => 404,
        },
    })
}

/// A seal is released only for a copy that matches it: unsealed → 404
/// `NoProof`, altered → the tampered error (502, withheld).
pub fn require_verified(
    key: &VersionKey,
    check: Result<VersionCheck, ledger::Error>,
) -> Result<VersionCheck, GatewayError> {
    match check {
        Ok(check @ VersionCheck::Verified { .. }) => Ok(check),
        Ok(VersionCheck::Unsealed) => Err(GatewayError::NoProof {
            detail: format!("{key} is not sealed"),
        }),
        Ok(VersionCheck::Tampered { leaf_index, reason }) => Err(GatewayError::TamperedVersion {
            reference: key.to_string(),
            leaf_index,
            reason,
        }),
        Err(error) => Err(GatewayError::ledger(error)),
    }
}

/// Adds `Inkan-Verify` (how the caller's copy compared) to an answer, and
/// `Inkan-Sealed-By: backfill` for a version sealed when first seen.
pub fn mark_check(response: &mut Response<ResponseBody>, check: &VersionCheck) {
    if let Ok(v) = HeaderValue::from_str(check.as_str()) {
        response.headers_mut().insert(INKAN_VERIFY, v);
    }
    if let VersionCheck::Verified {
        backfilled: true, ..
    } = check
    {
        response
            .headers_mut()
            .insert("inkan-sealed-by", HeaderValue::from_static("backfill"));
    }
}

/// The version a `$verify` body names (JSON or XML), or 400, with the
/// body as FHIR JSON (converted once, when it is XML).
pub fn posted_version(body: &[u8]) -> Result<(Cow<'_, [u8]>, VersionKey), GatewayError> {
    let json = match Format::sniff(body) {
        Format::Json => Cow::Borrowed(body),
        Format::Xml => Cow::Owned(xml_bridge::xml_to_json(body).map_err(|e| {
            GatewayError::MalformedRequest {
                detail: e.to_string(),
            }
        })?),
    };
    match resource_version(&json) {
        EntryVersion::Stored(key) => Ok((json, key)),
        _ => Err(GatewayError::MalformedRequest {
            detail: "$verify needs a resource with resourceType, id and meta.versionId in the body"
                .into(),
        }),
    }
}

/// Who is asking, for per-caller limits: the SHA-256 of the
/// `Authorization` value when there is one, else the client's address.
pub fn caller_key(authorization: Option<&HeaderValue>, peer: std::net::IpAddr) -> [u8; 32] {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    match authorization {
        Some(value) => {
            hasher.update(b"authorization\0");
            hasher.update(value.as_bytes());
        }
        None => {
            hasher.update(b"address\0");
            hasher.update(peer.to_string().as_bytes());
        }
    }
    hasher.finalize().into()
}

/// A fixed-window limit per caller: at most `limit` requests per minute.
/// At most `MAX_CALLERS` callers are tracked; past that, windows of earlier
/// minutes are dropped and, if the current minute alone fills the table,
/// new callers are refused until it turns.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    windows: std::sync::Mutex<std::collections::HashMap<[u8; 32], (u64, u32)>>,
}

const MAX_CALLERS: usize = 65_536;

impl RateLimiter {
    pub fn per_minute(limit: u32) -> RateLimiter {
        RateLimiter {
            limit,
            windows: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Counts one request from `caller`; false when over the limit.
    pub fn admit(&self, caller: [u8; 32]) -> bool {
        self.admit_at(caller, ledger::clock::unix_seconds().max(0) as u64 / 60)
    }

    fn admit_at(&self, caller: [u8; 32], minute: u64) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_CALLERS && !windows.contains_key(&caller) {
            // Forget finished minutes; if this minute alone fills the table,
            // refuse newcomers (a flood of made-up callers must not buy
            // everyone a fresh window).
            windows.retain(|_, (seen, _)| *seen == minute);
            if windows.len() >= MAX_CALLERS {
                return false;
            }
        }
        let window = windows.entry(caller).or_insert((minute, 0));
        if window.0 != minute {
            *window = (minute, 0);
        }
        window.1 = window.1.saturating_add(1);
        window.1 <= self.limit
    }
}

/// `$verify`: compares the posted resource (as FHIR JSON, with the key
/// [`posted_version`] read from it) with its seal.
pub fn verify_posted_resource(
    ledger: &Ledger,
    json: &[u8],
    key: &VersionKey,
    wanted: Wanted,
) -> Result<Response<ResponseBody>, GatewayError> {
    let check = ledger
        .check_version(key, json, Format::Json)
        .map_err(|e| match e {
            ledger::Error::Canonical { .. } => GatewayError::MalformedRequest {
                detail: format!("the body is not a FHIR resource: {e}"),
            },
            other => GatewayError::ledger(other),
        })?;
    let parameters = verification_parameters(key, &check);
    let json = serde_json::to_vec(&parameters).unwrap_or_default();
    let mut response = fhir_response(json, wanted)?;
    if let Ok(v) = HeaderValue::from_str(check.as_str()) {
        response.headers_mut().insert(INKAN_VERIFY, v);
    }
    Ok(response)
}

/// The `Parameters` a `$verify` answers with.
fn verification_parameters(key: &VersionKey, check: &VersionCheck) -> serde_json::Value {
    let reference = key.to_string();
    let (message, leaf_index) = match check {
        VersionCheck::Verified {
            leaf_index,
            backfilled: false,
        } => (
            "this exact version is sealed and unaltered".to_owned(),
            Some(*leaf_index),
        ),
        VersionCheck::Verified {
            leaf_index,
            backfilled: true,
        } => (
            "this exact version is sealed and unaltered since it was first seen (sealed by recovery or backfill, not when written)".to_owned(),
            Some(*leaf_index),
        ),
        VersionCheck::Tampered { leaf_index, reason } => (
            format!("this version is sealed, but {reason}"),
            Some(*leaf_index),
        ),
        VersionCheck::Unsealed => ("the ledger has no seal for this version".to_owned(), None),
    };
    let mut parameter = vec![
        serde_json::json!({"name": "result", "valueCode": check.as_str()}),
        serde_json::json!({"name": "sealed", "valueBoolean": leaf_index.is_some()}),
        serde_json::json!({"name": "unaltered", "valueBoolean": matches!(check, VersionCheck::Verified { .. })}),
        serde_json::json!({"name": "reference", "valueString": reference}),
        serde_json::json!({"name": "backfilled", "valueBoolean": matches!(check, VersionCheck::Verified { backfilled: true, .. })}),
        serde_json::json!({"name": "message", "valueString": message}),
    ];
    if let Some(index) = leaf_index {
        // unsignedInt stops at 2^31-1; larger logs get the index as a string.
        parameter.push(match i32::try_from(index) {
            Ok(small) => serde_json::json!({"name": "leafIndex", "valueUnsignedInt": small}),
            Err(_) => serde_json::json!({"name": "leafIndex", "valueString": index.to_string()}),
        });
    }
    serde_json::json!({"resourceType": "Parameters", "parameter": parameter})
}

/// An OperationDefinition, in the format the client wants.
pub fn definition_response(
    definition: &'static str,
    wanted: Wanted,
) -> Result<Response<ResponseBody>, GatewayError> {
    fhir_response(definition.as_bytes().to_vec(), wanted)
}

/// A FHIR JSON body as the client wants it (JSON, or XML).
fn fhir_response(json: Vec<u8>, wanted: Wanted) -> Result<Response<ResponseBody>, GatewayError> {
    match wanted.outcome_format() {
        WireFormat::Xml => {
            let xml =
                xml_bridge::json_to_xml(&json).map_err(|e| GatewayError::ResponseConversion {
                    target: "FHIR XML",
                    reason: e.to_string(),
                })?;
            Ok(plain_response(
                StatusCode::OK,
                WireFormat::Xml.fhir_media_type(),
                xml,
            ))
        }
        _ => Ok(plain_response(
            StatusCode::OK,
            WireFormat::Json.fhir_media_type(),
            json,
        )),
    }
}

fn plain_response(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<ResponseBody> {
    let mut response = Response::new(body::full(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Adds the seal operations to a CapabilityStatement (JSON value): each
/// `rest` entry lists `proof` and `verify`. Returns whether it changed.
pub fn advertise(capability: &mut serde_json::Value) -> bool {
    let Some(rests) = capability["rest"].as_array_mut() else {
        return false;
    };
    let mut changed = false;
    for rest in rests {
        if !rest["operation"].is_array() {
            rest["operation"] = serde_json::Value::Array(Vec::new());
        }
        if let Some(operations) = rest["operation"].as_array_mut() {
            for (name, canonical) in [("proof", PROOF_CANONICAL), ("verify", VERIFY_CANONICAL)] {
                if !operations.iter().any(|op| op["definition"] == canonical) {
                    operations.push(serde_json::json!({"name": name, "definition": canonical}));
                    changed = true;
                }
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_counts_per_caller_and_per_minute() {
        let limiter = RateLimiter::per_minute(2);
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let answers: Vec<bool> = [(a, 0), (a, 0), (a, 0), (b, 0), (a, 1)]
            .iter()
            .map(|(caller, minute)| limiter.admit_at(*caller, *minute))
            .collect();
        assert_eq!(answers, [true, true, false, true, true]);
    }

    #[test]
    fn only_2xx_lets_the_caller_read_and_refusals_are_relayed() {
        let answer = |status: u16| {
            (
                StatusCode::from_u16(status).unwrap(),
                HeaderMap::new(),
                Bytes::from_static(b"{}"),
            )
        };
        let cases: &[(u16, Option<u16>)] = &[
            (200, None),
            (401, Some(401)),
            (403, Some(403)),
            (404, Some(404)),
            (410, Some(404)),
            (400, Some(404)),
            (500, Some(502)),
        ];
        for (status, refused) in cases {
            let result = caller_may_read(&answer(*status));
            assert_eq!(
                result.err().map(|e| e.status().as_u16()),
                *refused,
                "{status}"
            );
        }
    }

    #[test]
    fn classification_table() {
        let key = |t: &str, i: &str, v: &str| VersionKey {
            resource_type: t.into(),
            id: i.into(),
            version_id: v.into(),
        };
        #[rustfmt::skip]
        let cases: Vec<(Method, &str, Option<SealOperation>)> = vec![
            (Method::GET,  "/Patient/1/_history/2/$proof", Some(SealOperation::ProofOfVersion(key("Patient", "1", "2")))),
            (Method::GET,  "/Patient/1/$proof",            Some(SealOperation::ProofOfCurrent { resource_type: "Patient".into(), id: "1".into() })),
            (Method::POST, "/$verify",                     Some(SealOperation::Verify)),
            (Method::POST, "/Patient/$verify",             Some(SealOperation::Verify)),
            (Method::GET,  "/OperationDefinition/inkan-proof", Some(SealOperation::Definition(PROOF_DEFINITION))),
            (Method::POST, "/Patient/1/_history/2/$proof", None),
            (Method::GET,  "/Patient/1/$everything",       None),
            (Method::GET,  "/Patient/$proof",              None),
            (Method::GET,  "/OperationDefinition/other",   None),
        ];
        for (method, path, want) in cases {
            assert_eq!(classify(&method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn definitions_are_operation_definitions_with_their_canonical_urls() {
        for (text, canonical, code) in [
            (PROOF_DEFINITION, PROOF_CANONICAL, "proof"),
            (VERIFY_DEFINITION, VERIFY_CANONICAL, "verify"),
        ] {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(value["resourceType"], "OperationDefinition");
            assert_eq!(value["url"], canonical);
            assert_eq!(value["code"], code);
            // The XML bridge can render it: it is valid R4.
            xml_bridge::json_to_xml(text.as_bytes()).unwrap();
        }
    }

    #[test]
    fn capability_statement_lists_both_operations_once() {
        let mut capability = serde_json::json!({"resourceType": "CapabilityStatement", "rest": [{"mode": "server"}]});
        assert!(advertise(&mut capability));
        assert!(!advertise(&mut capability), "idempotent");
        let names: Vec<&str> = capability["rest"][0]["operation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|op| op["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["proof", "verify"]);
    }
}
