//! From a resource file or response body (FHIR JSON or XML) to its
//! canonical bytes. XML is first converted to FHIR JSON with fhirbolt (R4),
//! so the digest does not depend on the wire format.

use fhirbolt::element::Element;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode};
use fhirbolt::FhirReleases;

use crate::canonical;
use crate::Error;

/// The wire format of a resource's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// FHIR JSON.
    Json,
    /// FHIR XML (R4), converted to FHIR JSON before canonicalization.
    Xml,
}

impl Format {
    /// Guesses from the first non-whitespace byte: `<` is XML, else JSON.
    pub fn sniff(bytes: &[u8]) -> Format {
        let first = bytes
            .iter()
            .copied()
            .find(|b| !(b.is_ascii_whitespace() || *b == 0xEF || *b == 0xBB || *b == 0xBF));
        if first == Some(b'<') {
            Format::Xml
        } else {
            Format::Json
        }
    }
}

/// An XML document whose declaration names UTF-8 in another spelling
/// (`encoding='utf-8'`, as Python's ElementTree and sekmet-fhir write it;
/// encoding names are case-insensitive) with the declaration saying
/// `UTF-8`, the one spelling fhirbolt's reader accepts. Anything else is
/// returned as it is.
pub fn utf8_declaration_spelled_out(xml: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    let Some(rest) = xml.strip_prefix(b"<?xml") else {
        return Cow::Borrowed(xml);
    };
    let Some(end) = rest.windows(2).position(|w| w == b"?>") else {
        return Cow::Borrowed(xml);
    };
    let declaration = &rest[..end];
    let Some(at) = declaration.windows(9).position(|w| w == b"encoding=") else {
        return Cow::Borrowed(xml);
    };
    let value_start = at + 9;
    let Some(&quote) = declaration.get(value_start) else {
        return Cow::Borrowed(xml);
    };
    if quote != b'"' && quote != b'\'' {
        return Cow::Borrowed(xml);
    }
    let Some(len) = declaration[value_start + 1..]
        .iter()
        .position(|b| *b == quote)
    else {
        return Cow::Borrowed(xml);
    };
    let label = &declaration[value_start + 1..value_start + 1 + len];
    if label == b"UTF-8" || !label.eq_ignore_ascii_case(b"utf-8") {
        return Cow::Borrowed(xml);
    }
    // Offsets in `xml`: 5 for "<?xml".
    let label_start = 5 + value_start + 1;
    let mut fixed = Vec::with_capacity(xml.len());
    fixed.extend_from_slice(&xml[..label_start]);
    fixed.extend_from_slice(b"UTF-8");
    fixed.extend_from_slice(&xml[label_start + len..]);
    Cow::Owned(fixed)
}

/// The deepest element nesting a FHIR XML document may have before any
/// recursive parser sees it. fhirbolt's XML reader recurses once per element
/// with no bound of its own, so ~60,000 nested elements overflow a thread's
/// stack and abort the process. Half the JSON bound
/// ([`canonical::DEFAULT_MAX_DEPTH`]) because a repeated XML element becomes
/// two JSON levels (an array and an object), so every XML document within
/// this bound is within the JSON one after conversion. Real resources stay
/// far below it.
pub const MAX_XML_DEPTH: usize = canonical::DEFAULT_MAX_DEPTH / 2;

/// Checks what fhirbolt's XML reader does not, before it sees a document:
/// that it is UTF-8 (fhirbolt unwraps names and namespaces as UTF-8 and
/// panics on other bytes — found by fuzzing) and, with a flat
/// (non-recursive) scan, that it nests no deeper than `max_depth` elements.
/// Called before every recursive XML parser; other malformed XML is left
/// for the real parser to report.
pub fn check_xml_input(xml: &[u8], max_depth: usize) -> Result<(), Error> {
    use quick_xml::events::Event;
    if let Err(e) = std::str::from_utf8(xml) {
        return Err(Error::Canonical {
            offset: e.valid_up_to(),
            reason: "FHIR XML must be UTF-8 (decode legacy charsets first)".into(),
        });
    }
    let mut reader = quick_xml::Reader::from_reader(xml);
    // The scan only counts; the parser that follows checks names and text.
    reader.config_mut().check_end_names = false;
    let mut buf = Vec::new();
    let mut depth = 0usize;
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(_)) => {
                depth += 1;
                if depth > max_depth {
                    return Err(Error::Canonical {
                        offset: reader.buffer_position() as usize,
                        reason: format!("XML nests deeper than {max_depth} elements"),
                    });
                }
            }
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::Eof) => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                return Err(Error::Canonical {
                    offset: reader.buffer_position() as usize,
                    reason: format!("invalid XML: {e}"),
                })
            }
        }
        buf.clear();
    }
}

/// Why a resource is not the version it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityMismatch {
    /// The bytes are not JSON.
    #[error("resource is not JSON: {0}")]
    NotJson(String),
    /// A field names another resource or version.
    #[error("the resource's {field} is {found:?}, not {expected:?}")]
    Other {
        /// `resourceType`, `id` or `meta.versionId`.
        field: &'static str,
        /// What the resource says.
        found: String,
        /// What it should say.
        expected: String,
    },
    /// A field is missing.
    #[error("the resource has no {field} (expected {expected:?})")]
    Missing {
        /// `resourceType`, `id` or `meta.versionId`.
        field: &'static str,
        /// What it should say.
        expected: String,
    },
}

/// Checks that a resource in canonical form (JSON, so XML is held to it
/// too) names exactly this version: `resourceType`, `id` and
/// `meta.versionId` present and equal. Without it a resource stripped of
/// its version id would verify against any bundle of the same content, and
/// a file sealed under the wrong key would never verify. Pure.
pub fn check_identity(
    canonical: &[u8],
    resource_type: &str,
    id: &str,
    version_id: &str,
) -> Result<(), IdentityMismatch> {
    let value: serde_json::Value =
        serde_json::from_slice(canonical).map_err(|e| IdentityMismatch::NotJson(e.to_string()))?;
    let pairs = [
        (
            "resourceType",
            value["resourceType"].as_str(),
            resource_type,
        ),
        ("id", value["id"].as_str(), id),
        (
            "meta.versionId",
            value["meta"]["versionId"].as_str(),
            version_id,
        ),
    ];
    for (field, found, expected) in pairs {
        match found {
            Some(found) if found == expected => {}
            Some(found) => {
                return Err(IdentityMismatch::Other {
                    field,
                    found: found.to_owned(),
                    expected: expected.to_owned(),
                })
            }
            None => {
                return Err(IdentityMismatch::Missing {
                    field,
                    expected: expected.to_owned(),
                })
            }
        }
    }
    Ok(())
}

/// Canonical bytes of a FHIR resource given as JSON or XML.
pub fn canonical_resource(bytes: &[u8], format: Format) -> Result<Vec<u8>, Error> {
    match format {
        Format::Json => canonical::canonicalize(bytes),
        Format::Xml => {
            check_xml_input(bytes, MAX_XML_DEPTH)?;
            let element: Element<{ FhirReleases::R4 }> = fhirbolt::serde::xml::from_slice(
                &utf8_declaration_spelled_out(bytes),
                Some(DeserializationConfig {
                    mode: DeserializationMode::Strict,
                }),
            )
            .map_err(|e| Error::Canonical {
                offset: 0,
                reason: format!("invalid FHIR XML: {e}"),
            })?;
            let json =
                fhirbolt::serde::json::to_vec(&element, None).map_err(|e| Error::Canonical {
                    offset: 0,
                    reason: format!("cannot convert FHIR XML to JSON: {e}"),
                })?;
            canonical::canonicalize(&json)
        }
    }
}

/// Canonical bytes of an access record (an AuditEvent the gateway wrote):
/// the canonical form of the resource without its top-level `id` and
/// `meta`, which the audit repository assigns (many servers give every
/// created AuditEvent an id of their own, and fill in `versionId` and
/// `lastUpdated`). The ledger binds the repository's id to the record
/// when it is delivered. Pure.
pub fn canonical_access_record(bytes: &[u8], format: Format) -> Result<Vec<u8>, Error> {
    const OWNED_BY_THE_REPOSITORY: &[&str] = &["id", "meta"];
    match format {
        Format::Json => canonical::canonicalize_omitting(bytes, OWNED_BY_THE_REPOSITORY),
        Format::Xml => canonical::canonicalize_omitting(
            &canonical_resource(bytes, format)?,
            OWNED_BY_THE_REPOSITORY,
        ),
    }
}

#[cfg(test)]
mod access_record_tests {
    use super::*;

    #[test]
    fn the_repositorys_meta_does_not_change_an_access_records_canonical_form() {
        let sent =
            br#"{"resourceType":"AuditEvent","id":"a","recorded":"2026-12-02T00:00:00Z","x":1.50}"#;
        let stored = br#"{"meta":{"versionId":"1","lastUpdated":"2026-12-02T00:00:01Z"},"resourceType":"AuditEvent","id":"server-7","recorded":"2026-12-02T00:00:00Z","x":1.50}"#;
        let edited = br#"{"meta":{"versionId":"1"},"resourceType":"AuditEvent","id":"a","recorded":"2026-12-02T00:00:09Z","x":1.50}"#;
        let sent = canonical_access_record(sent, Format::Json).unwrap();
        assert_eq!(canonical_access_record(stored, Format::Json).unwrap(), sent);
        assert_ne!(canonical_access_record(edited, Format::Json).unwrap(), sent);
        assert_eq!(
            sent,
            br#"{"recorded":"2026-12-02T00:00:00Z","resourceType":"AuditEvent","x":1.50}"#
        );
    }
}

#[cfg(test)]
mod depth_tests {
    use super::*;

    fn nested(depth: usize) -> Vec<u8> {
        let mut xml = String::from(r#"<Patient xmlns="http://hl7.org/fhir">"#);
        for _ in 1..depth {
            xml.push_str(r#"<extension url="x">"#);
        }
        for _ in 1..depth {
            xml.push_str("</extension>");
        }
        xml.push_str("</Patient>");
        xml.into_bytes()
    }

    #[test]
    fn the_bound_counts_open_elements() {
        assert!(check_xml_input(&nested(10), 10).is_ok());
        assert!(check_xml_input(&nested(11), 10).is_err());
        // Empty elements and siblings do not add depth.
        let flat = "<a><b/><b/><c></c><c></c></a>";
        assert!(check_xml_input(flat.as_bytes(), 2).is_ok());
    }

    // Regression: 60,000 nested elements overflowed a worker thread's stack
    // in fhirbolt's recursive reader and aborted the whole gateway. Run on
    // a thread with a tokio worker's default stack (2 MiB).
    #[test]
    fn sixty_thousand_nested_elements_are_refused_not_a_stack_overflow() {
        let deep = nested(60_000);
        let answer = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || canonical_resource(&deep, Format::Xml).map(|_| ()))
            .unwrap()
            .join()
            .expect("the parser thread must not crash");
        let err = answer.unwrap_err().to_string();
        assert!(err.contains("deeper than 64"), "{err}");
    }

    // Found by fuzzing (canonical_xml): bytes that are not UTF-8 inside the
    // root's xmlns made fhirbolt's reader panic (an unwrap of from_utf8).
    #[test]
    fn invalid_utf8_in_an_xml_namespace_is_refused_not_a_panic() {
        let mut xml = br#"<?xml version="1.0" encoding="UTF-8"?><Patient xmlns="http"#.to_vec();
        xml.extend_from_slice(&[0xff; 7]);
        xml.extend_from_slice(br#"3rg/fhir"><id value="p1"/></Patient>"#);
        let answer = std::panic::catch_unwind(|| canonical_resource(&xml, Format::Xml));
        let error = answer.expect("no panic").unwrap_err().to_string();
        assert!(error.contains("UTF-8"), "{error}");
    }

    // Nesting right at the bound still parses on a worker-sized stack.
    #[test]
    fn nesting_at_the_bound_parses_on_a_worker_stack() {
        let at_bound = nested(MAX_XML_DEPTH);
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || canonical_resource(&at_bound, Format::Xml).map(|_| ()))
            .unwrap()
            .join()
            .expect("the parser thread must not crash")
            .unwrap();
    }
}

#[cfg(test)]
mod declaration_tests {
    use super::utf8_declaration_spelled_out as fix;

    #[test]
    fn utf8_declarations_in_any_spelling() {
        let cases: &[(&str, &str)] = &[
            (
                "<?xml version='1.0' encoding='utf-8'?><a/>",
                "<?xml version='1.0' encoding='UTF-8'?><a/>",
            ),
            (
                "<?xml version=\"1.0\" encoding=\"Utf-8\"?><a/>",
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a/>",
            ),
            (
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a/>",
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a/>",
            ),
            (
                "<?xml version=\"1.0\" encoding=\"Shift_JIS\"?><a/>",
                "<?xml version=\"1.0\" encoding=\"Shift_JIS\"?><a/>",
            ),
            ("<?xml version=\"1.0\"?><a/>", "<?xml version=\"1.0\"?><a/>"),
            ("<a/>", "<a/>"),
            ("<?xml encoding='utf-8", "<?xml encoding='utf-8"),
        ];
        for (input, expected) in cases {
            assert_eq!(&*fix(input.as_bytes()), expected.as_bytes(), "{input}");
        }
    }

    #[test]
    fn a_lowercase_utf8_declaration_canonicalizes_like_uppercase() {
        let body = r#"<Patient xmlns="http://hl7.org/fhir"><id value="p"/><gender value="male"/></Patient>"#;
        let upper = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>{body}");
        let lower = format!("<?xml version='1.0' encoding='utf-8'?>{body}");
        let canonical =
            |x: &str| super::canonical_resource(x.as_bytes(), super::Format::Xml).unwrap();
        assert_eq!(canonical(&lower), canonical(&upper));
    }
}
