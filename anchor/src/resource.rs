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
    Json,
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

/// Canonical bytes of a FHIR resource given as JSON or XML.
pub fn canonical_resource(bytes: &[u8], format: Format) -> Result<Vec<u8>, Error> {
    match format {
        Format::Json => canonical::canonicalize(bytes),
        Format::Xml => {
            let element: Element<{ FhirReleases::R4 }> = fhirbolt::serde::xml::from_slice(
                bytes,
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
