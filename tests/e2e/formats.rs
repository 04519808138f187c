//! XML clients work against a JSON-only upstream through the XML bridge.

use crate::{create, patient, Stack};
use inkan_e2e::client;

const PATIENT_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Patient xmlns="http://hl7.org/fhir">
  <name><family value="Yoshida"/><given value="Hanako"/></name>
  <gender value="female"/>
  <birthDate value="1980-02-03"/>
</Patient>"#;

#[test]
fn xml_create_read_search_and_errors() {
    let stack = Stack::start();
    let http = client();

    // The upstream really is JSON-only: asking it directly for XML fails.
    let direct = http
        .get(format!("{}/metadata", stack.hfs.url))
        .header("Accept", "application/fhir+xml")
        .send()
        .unwrap();
    assert!(
        !direct.status().is_success() || !direct.text().unwrap().starts_with('<'),
        "upstream speaks XML; bridge test is moot"
    );

    // XML create → JSON upstream; XML answer back.
    let response = http
        .post(stack.url("/Patient"))
        .header("Content-Type", "application/fhir+xml")
        .header("Accept", "application/fhir+xml")
        .header("Prefer", "return=representation")
        .body(PATIENT_XML)
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/fhir+xml"));
    let body = response.text().unwrap();
    assert!(body.contains("<family value=\"Yoshida\"/>"), "{body}");
    let id = body
        .split("<id value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();

    // The stored resource has the XML's content (read as JSON).
    let stored = crate::get_json(&stack, &format!("/Patient/{id}"));
    assert_eq!(stored["name"][0]["given"][0], "Hanako");
    assert_eq!(stored["birthDate"], "1980-02-03");

    // _format=xml works too, and search Bundles come back as XML with gateway links.
    let bundle = http
        .get(stack.url("/Patient?family=Yoshida&_format=xml"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        bundle.contains("<Bundle xmlns=\"http://hl7.org/fhir\">"),
        "{bundle}"
    );
    assert!(
        bundle.contains(&format!(
            "<fullUrl value=\"{}/Patient/{id}\"/>",
            stack.gateway.base
        )),
        "{bundle}"
    );
    assert!(!bundle.contains("localhost:8080"), "{bundle}");
    assert!(
        bundle.contains("_format=xml"),
        "paging links keep the client's _format: {bundle}"
    );

    // Upstream errors reach XML clients as XML OperationOutcomes, status unchanged.
    let missing = http
        .get(stack.url("/Patient/no-such-id"))
        .header("Accept", "application/fhir+xml")
        .send()
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body = missing.text().unwrap();
    assert!(
        body.contains("<OperationOutcome xmlns=\"http://hl7.org/fhir\">"),
        "{body}"
    );

    // The CapabilityStatement seen through the gateway lists XML.
    let capability = crate::get_json(&stack, "/metadata");
    let formats: Vec<&str> = capability["format"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert!(formats.iter().any(|f| f.contains("xml")), "{formats:?}");
}

#[test]
fn malformed_xml_is_a_400_outcome_in_xml() {
    let stack = Stack::start();
    let response = client()
        .post(stack.url("/Patient"))
        .header("Content-Type", "application/fhir+xml")
        .header("Accept", "application/fhir+xml")
        .body("<Patient xmlns=\"http://hl7.org/fhir\"><notAnElement value=\"x\"/></Patient>")
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().unwrap();
    assert!(
        body.contains("<OperationOutcome") && body.contains("<code value=\"structure\"/>"),
        "{body}"
    );
}

#[test]
fn json_resource_read_as_xml_has_the_same_content() {
    let stack = Stack::start();
    let created = create(&stack, &patient("Matsumoto", "Kenji"));
    let id = created["id"].as_str().unwrap();
    let xml = client()
        .get(stack.url(&format!("/Patient/{id}")))
        .header("Accept", "application/fhir+xml")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(xml.contains("<family value=\"Matsumoto\"/>"), "{xml}");
    assert_eq!(
        xml.matches("<?xml").count(),
        1,
        "exactly one XML declaration: {xml}"
    );
    assert!(
        xml.contains(&format!(
            "<versionId value=\"{}\"/>",
            created["meta"]["versionId"].as_str().unwrap()
        )),
        "{xml}"
    );
}
