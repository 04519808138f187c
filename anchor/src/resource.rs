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

/// Canonical bytes of a FHIR resource given as JSON or XML.
pub fn canonical_resource(bytes: &[u8], format: Format) -> Result<Vec<u8>, Error> {
    match format {
        Format::Json => canonical::canonicalize(bytes),
        Format::Xml => {
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
