//! Converts FHIR R4 resources between XML and JSON with fhirbolt's element
//! model, which knows each element's type and cardinality from the R4
//! definitions (XML alone cannot tell an array of one from a single value, or
//! a decimal from a string).
//!
//! Used when the upstream speaks only JSON: XML request bodies become JSON
//! upstream, and JSON responses become XML for clients that asked for XML.

use fhirbolt::element::Element;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode};
use fhirbolt::FhirReleases;

type R4Element = Element<{ FhirReleases::R4 }>;

/// Why a body could not be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionError(pub String);

impl std::fmt::Display for ConversionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn strict() -> Option<DeserializationConfig> {
    Some(DeserializationConfig {
        mode: DeserializationMode::Strict,
    })
}

/// FHIR XML → FHIR JSON.
pub fn xml_to_json(xml: &[u8]) -> Result<Vec<u8>, ConversionError> {
    let element: R4Element = fhirbolt::serde::xml::from_slice(xml, strict())
        .map_err(|e| ConversionError(format!("invalid FHIR XML: {e}")))?;
    fhirbolt::serde::json::to_vec(&element, None)
        .map_err(|e| ConversionError(format!("cannot write FHIR JSON: {e}")))
}

/// FHIR JSON → FHIR XML.
pub fn json_to_xml(json: &[u8]) -> Result<Vec<u8>, ConversionError> {
    let element: R4Element = fhirbolt::serde::json::from_slice(json, strict())
        .map_err(|e| ConversionError(format!("invalid FHIR JSON: {e}")))?;
    // fhirbolt writes the XML declaration itself.
    fhirbolt::serde::xml::to_vec(&element, None)
        .map_err(|e| ConversionError(format!("cannot write FHIR XML: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_xml_json_round_trip_keeps_the_resource() {
        let json = br#"{"resourceType":"Observation","id":"o1","status":"final",
            "code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},
            "valueQuantity":{"value":1.50,"unit":"kg"},
            "subject":{"reference":"Patient/1"}}"#;
        let xml = json_to_xml(json).unwrap();
        let xml_text = String::from_utf8(xml.clone()).unwrap();
        assert!(
            xml_text.contains("<Observation xmlns=\"http://hl7.org/fhir\">"),
            "{xml_text}"
        );
        assert!(xml_text.contains("<value value=\"1.50\"/>"), "{xml_text}");
        assert_eq!(
            xml_text.matches("<?xml").count(),
            1,
            "one XML declaration: {xml_text}"
        );
        let back: serde_json::Value = serde_json::from_slice(&xml_to_json(&xml).unwrap()).unwrap();
        let original: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(back["valueQuantity"]["value"].to_string(), "1.50");
        assert_eq!(back["code"], original["code"]);
        assert_eq!(back["subject"], original["subject"]);
    }

    #[test]
    fn every_r4_example_survives_json_to_xml_and_back() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/r4-examples"
        );
        let Ok(entries) = std::fs::read_dir(dir) else {
            panic!("fixtures missing at {dir}");
        };
        let mut checked = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let json = std::fs::read(&path).unwrap();
            let xml = json_to_xml(&json).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let back = xml_to_json(&xml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let a: serde_json::Value = serde_json::from_slice(&json).unwrap();
            let b: serde_json::Value = serde_json::from_slice(&back).unwrap();
            assert_eq!(normalize(&a), normalize(&b), "{}", path.display());
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} examples found");
    }

    /// Object member order and the XHTML serialisation of the narrative may
    /// differ after a round trip; the data may not.
    fn normalize(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let mut sorted: Vec<_> = map.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(b.0));
                serde_json::Value::Object(
                    sorted
                        .into_iter()
                        .filter(|(k, _)| k.as_str() != "div")
                        .map(|(k, v)| (k.clone(), normalize(v)))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => items.iter().map(normalize).collect(),
            other => other.clone(),
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(xml_to_json(b"<Patient xmlns=\"http://hl7.org/fhir\"><bogus/></Patient>").is_err());
        assert!(xml_to_json(b"not xml").is_err());
        assert!(json_to_xml(b"{\"resourceType\":1}").is_err());
    }
}
