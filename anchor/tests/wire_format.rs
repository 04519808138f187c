//! The digest does not depend on the wire format: every R4 example, written
//! as FHIR XML, canonicalizes to the same bytes as its JSON form.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used)]

use fhirbolt::element::Element;
use fhirbolt::FhirReleases;
use ledger::resource::{canonical_resource, Format};

fn to_xml(json: &[u8]) -> Vec<u8> {
    let element: Element<{ FhirReleases::R4 }> =
        fhirbolt::serde::json::from_slice(json, None).unwrap();
    fhirbolt::serde::xml::to_vec(&element, None).unwrap()
}

#[test]
fn json_and_xml_forms_of_every_r4_example_have_one_canonical_form() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/r4-examples");
    let mut checked = 0;
    let mut differing = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let json = std::fs::read(&path).unwrap();
        let from_json = canonical_resource(&json, Format::Json).unwrap();
        let xml = to_xml(&json);
        assert_eq!(Format::sniff(&xml), Format::Xml);
        let from_xml = canonical_resource(&xml, Format::Xml).unwrap();
        if from_json != from_xml {
            differing.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
        checked += 1;
    }
    assert!(checked >= 30);
    assert!(
        differing.is_empty(),
        "{} of {checked} differ: {differing:?}",
        differing.len()
    );
}
