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
    // fhirbolt's reader recurses per element without a bound, and panics
    // on names that are not UTF-8: check first.
    ledger::resource::check_xml_input(xml, ledger::resource::MAX_XML_DEPTH)
        .map_err(|e| ConversionError(format!("invalid FHIR XML: {e}")))?;
    let xml = ledger::resource::utf8_declaration_spelled_out(xml);
    let element: R4Element = fhirbolt::serde::xml::from_slice(&xml, strict())
        .map_err(|e| ConversionError(format!("invalid FHIR XML: {e}")))?;
    fhirbolt::serde::json::to_vec(&element, None)
        .map_err(|e| ConversionError(format!("cannot write FHIR JSON: {e}")))
}

/// FHIR JSON → FHIR XML.
pub fn json_to_xml(json: &[u8]) -> Result<Vec<u8>, ConversionError> {
    let element: R4Element = fhirbolt::serde::json::from_slice(json, strict())
        .map_err(|e| ConversionError(format!("invalid FHIR JSON: {e}")))?;
    // fhirbolt writes the XML declaration itself.
    let xml = fhirbolt::serde::xml::to_vec(&element, None)
        .map_err(|e| ConversionError(format!("cannot write FHIR XML: {e}")))?;
    // The guarantee: what goes out reads back as FHIR XML. fhirbolt copies
    // a JSON narrative into the XML as it is, so a malformed `div`, one
    // outside XHTML or text beside it would make a document FHIR readers
    // refuse (all found by fuzzing). Rather than copy each of the reader's
    // rules here, the answer is read back once, bounded like any XML.
    xml_to_json(&xml).map_err(|e| {
        ConversionError(format!(
            "the narrative is not well-formed XHTML that FHIR XML allows: {e}"
        ))
    })?;
    Ok(xml)
}

/// FHIR JSON → FHIR XML for answers from the upstream, leniently: JSON
/// that breaks FHIR's rules in ways that lose nothing (a `null` member, an
/// empty array or object — HFS's CapabilityStatement has them) is repaired
/// by dropping those members and converted. Returns the XML and the paths
/// of what was dropped (names and indexes only, never values), so the
/// caller can log them. Anything else is still an error.
pub fn json_to_xml_lenient(json: &[u8]) -> Result<(Vec<u8>, Vec<String>), ConversionError> {
    let strict_error = match json_to_xml(json) {
        Ok(xml) => return Ok((xml, Vec::new())),
        Err(error) => error,
    };
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(json) else {
        return Err(strict_error);
    };
    let mut dropped = Vec::new();
    drop_empty_members(&mut value, &mut String::new(), &mut dropped);
    let reordered = resource_type_first(&mut value);
    if dropped.is_empty() && !reordered {
        return Err(strict_error);
    }
    let repaired = serde_json::to_vec(&value).map_err(|e| ConversionError(e.to_string()))?;
    json_to_xml(&repaired).map(|xml| (xml, dropped))
}

/// Logs, once per process for each distinct set, the members a lenient
/// conversion dropped: an upstream quirk to know about, not to repeat on
/// every `metadata` read. Paths only; values never reach the log.
pub fn log_dropped_once(dropped: &[String]) {
    static SEEN: std::sync::Mutex<Vec<Vec<String>>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.iter().any(|s| s.as_slice() == dropped) || seen.len() > 64 {
        return;
    }
    seen.push(dropped.to_vec());
    tracing::warn!(
        dropped = %dropped.join(", "),
        "the upstream's JSON had null or empty members that FHIR does not allow; dropped them to write FHIR XML"
    );
}

/// Moves `resourceType` to the front of every resource object (contained
/// and Bundle entry resources too). JSON member order carries no meaning,
/// but fhirbolt's reader needs `resourceType` first, and some clients send
/// members sorted alphabetically (Python's fhirclient does; HFS stores and
/// returns them so). Returns whether anything moved.
fn resource_type_first(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    let mut moved = false;
    match value {
        Value::Object(members) => {
            for member in members.values_mut() {
                moved |= resource_type_first(member);
            }
            let first_is_type = members.keys().next().is_some_and(|k| k == "resourceType");
            if !first_is_type {
                if let Some(resource_type) = members.shift_remove("resourceType") {
                    let rest = std::mem::take(members);
                    members.insert("resourceType".into(), resource_type);
                    members.extend(rest);
                    moved = true;
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                moved |= resource_type_first(item);
            }
        }
        _ => {}
    }
    moved
}

/// Removes `null` members, empty arrays, empty objects and arrays of only
/// `null`s, innermost first, recording each removed member's path. A
/// `null` *inside* an array with values stays: FHIR JSON uses it to pair a
/// primitive array with its `_name` extension array.
fn drop_empty_members(value: &mut serde_json::Value, path: &mut String, dropped: &mut Vec<String>) {
    use serde_json::Value;
    match value {
        Value::Object(members) => {
            let names: Vec<String> = members.keys().cloned().collect();
            for name in names {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&name);
                if let Some(member) = members.get_mut(&name) {
                    drop_empty_members(member, path, dropped);
                    let empty = match member {
                        Value::Null => true,
                        Value::Array(items) => items.iter().all(Value::is_null),
                        Value::Object(inner) => inner.is_empty(),
                        _ => false,
                    };
                    if empty {
                        members.shift_remove(&name);
                        dropped.push(path.clone());
                    }
                }
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            let mut index = 0;
            items.retain_mut(|item| {
                let len = path.len();
                path.push_str(&format!("[{index}]"));
                index += 1;
                drop_empty_members(item, path, dropped);
                // An element the repair emptied goes (an empty object is not
                // FHIR, and only primitive arrays may hold null).
                let emptied = matches!(item, Value::Object(inner) if inner.is_empty());
                if emptied {
                    dropped.push(path.clone());
                }
                path.truncate(len);
                !emptied
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `work` on a thread with a tokio worker's default stack (2 MiB),
    /// where the gateway runs these conversions.
    fn on_a_worker_stack<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(work)
            .unwrap()
            .join()
            .expect("the conversion must not crash its thread")
    }

    fn nested_extensions(depth: usize, xml: bool) -> Vec<u8> {
        let (open, close, start, end) = if xml {
            (
                r#"<extension url="x">"#,
                "</extension>",
                r#"<Patient xmlns="http://hl7.org/fhir">"#,
                "</Patient>",
            )
        } else {
            (
                r#"{"url":"x","extension":["#,
                "]}",
                r#"{"resourceType":"Patient","extension":["#,
                "]}",
            )
        };
        let mut doc = String::from(start);
        for _ in 0..depth {
            doc.push_str(open);
        }
        if !xml {
            doc.push_str(r#"{"url":"x","valueString":"a"}"#);
        }
        for _ in 0..depth {
            doc.push_str(close);
        }
        doc.push_str(end);
        doc.into_bytes()
    }

    // Regression: a bridged XML create with ~60,000 nested elements
    // overflowed the worker's stack and aborted the gateway.
    #[test]
    fn deeply_nested_xml_is_refused_before_fhirbolt_sees_it() {
        let error =
            on_a_worker_stack(|| xml_to_json(&nested_extensions(60_000, true))).unwrap_err();
        assert!(error.0.contains("deeper than"), "{error}");
        let within = on_a_worker_stack(|| xml_to_json(&nested_extensions(30, true)));
        assert!(within.is_ok(), "{within:?}");
    }

    // Found by fuzzing (xml_bridge): a narrative `div` that is not
    // well-formed XML was copied into the XML answer as it was, making the
    // whole document malformed for the client.
    #[test]
    fn a_malformed_narrative_is_refused_not_written_into_the_xml() {
        let json = include_bytes!("../../../fixtures/fuzz/xml_bridge-malformed-narrative.json");
        let error = json_to_xml(json).unwrap_err();
        assert!(error.0.contains("not well-formed"), "{error}");
        let other_namespace = br#"{"resourceType":"Patient","id":"p","text":{"status":"generated",
            "div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><p xmlns=\"grid\">x</p></div>"}}"#;
        assert!(json_to_xml(other_namespace).is_err());
        // Found by fuzzing too: a div whose xmlns attribute is misspelt
        // inherits FHIR's namespace.
        let no_xhtml = br#"{"resourceType":"Patient","id":"p","text":{"status":"generated",
            "div":"<div xmlnsxmlns=\"http://www.w3.org/1999/xhtml\"><p>x</p></div>"}}"#;
        assert!(json_to_xml(no_xhtml).is_err());
        let text_beside = br#"{"resourceType":"Patient","id":"p","text":{"status":"generated",
            "div":"receivedTime<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>x</p></div>"}}"#;
        assert!(json_to_xml(text_beside).is_err());
        let fine = br#"{"resourceType":"Patient","id":"p","text":{"status":"generated",
            "div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><p a=\"1\">x</p></div>"}}"#;
        assert!(json_to_xml(fine).is_ok());
    }

    // JSON from the upstream is bounded by serde_json's 128 levels; the
    // deepest JSON it admits must still convert (or fail) without a crash.
    #[test]
    fn json_at_serde_jsons_bound_converts_on_a_worker_stack() {
        let deepest = nested_extensions(62, false);
        assert!(on_a_worker_stack(move || json_to_xml(&deepest)).is_ok());
        // A narrative is a JSON string (no serde bound): deep XHTML inside it
        // is bounded when the written XML is read back.
        let deep_div = format!(
            r#"{{"resourceType":"Patient","id":"p","text":{{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">{}{}</div>"}}}}"#,
            "<b>".repeat(5_000),
            "</b>".repeat(5_000)
        );
        assert!(on_a_worker_stack(move || json_to_xml(deep_div.as_bytes())).is_err());
        let too_deep = nested_extensions(70_000, false);
        assert!(on_a_worker_stack(move || json_to_xml_lenient(&too_deep)).is_err());
    }

    #[test]
    fn null_members_and_empty_arrays_from_the_upstream_are_dropped_not_fatal() {
        // The shape of HFS 0.2.7's CapabilityStatement.
        let json = br#"{"resourceType":"CapabilityStatement","status":"active","date":"2026-01-01",
            "kind":"instance","fhirVersion":"4.0.1","format":["json"],"publisher":null,
            "implementation":{"description":"HFS","url":"http://localhost:8080"},
            "rest":[{"mode":"server","security":null,"resource":[{"type":"Patient",
            "interaction":[{"code":"read"}],"searchParam":[]}]}]}"#;
        assert!(json_to_xml(json).is_err(), "strict conversion refuses it");
        let (xml, dropped) = json_to_xml_lenient(json).unwrap();
        let xml = String::from_utf8(xml).unwrap();
        assert!(xml.contains("<CapabilityStatement"), "{xml}");
        assert!(
            xml.contains(r#"<url value="http://localhost:8080"/>"#),
            "{xml}"
        );
        assert_eq!(
            dropped,
            [
                "publisher",
                "rest[0].security",
                "rest[0].resource[0].searchParam"
            ]
        );
    }

    #[test]
    fn resource_type_need_not_come_first() {
        // As Python's fhirclient sends it (keys sorted), with a contained
        // resource sorted the same way.
        let json = br#"{"birthDate":"1970-01-01","contained":[{"id":"o","name":"Org","resourceType":"Organization"}],
            "gender":"female","id":"p1","resourceType":"Patient"}"#;
        let (xml, dropped) = json_to_xml_lenient(json).unwrap();
        let xml = String::from_utf8(xml).unwrap();
        assert!(dropped.is_empty());
        assert!(
            xml.contains("<Patient xmlns=\"http://hl7.org/fhir\">"),
            "{xml}"
        );
        assert!(xml.contains("<Organization>"), "{xml}");
        assert!(xml.contains("<birthDate value=\"1970-01-01\"/>"), "{xml}");
    }

    #[test]
    fn lenient_conversion_still_refuses_what_is_not_fhir() {
        for json in [&br#"{"active":true}"#[..], b"[1,2]", b"not json"] {
            assert!(
                json_to_xml_lenient(json).is_err(),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }

    #[test]
    fn an_array_element_emptied_by_the_repair_is_dropped_too() {
        let json = br#"{"resourceType":"CapabilityStatement","status":"active","date":"2026-01-01",
            "kind":"instance","fhirVersion":"4.0.1","format":["json"],
            "rest":[{"mode":"server","resource":[{"type":"Patient",
            "interaction":[{"code":null},{"code":"read"}]}]}]}"#;
        let (xml, dropped) = json_to_xml_lenient(json).unwrap();
        let xml = String::from_utf8(xml).unwrap();
        assert!(xml.contains("<code value=\"read\"/>"), "{xml}");
        assert_eq!(
            dropped,
            [
                "rest[0].resource[0].interaction[0].code",
                "rest[0].resource[0].interaction[0]"
            ]
        );
    }

    #[test]
    fn a_null_paired_with_an_extension_array_is_kept() {
        let mut value: serde_json::Value =
            serde_json::from_str(r#"{"given":["Taro",null],"_given":[null,{"id":"x"}],"a":null}"#)
                .unwrap();
        let mut dropped = Vec::new();
        drop_empty_members(&mut value, &mut String::new(), &mut dropped);
        assert_eq!(dropped, ["a"]);
        assert_eq!(value["given"][1], serde_json::Value::Null);
    }

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
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/r4-examples");
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
