//! Content codings, as real clients use them: Python `requests` and Node's
//! fetch send `Accept-Encoding: gzip, deflate` by default and HFS
//! compresses its answers. Before the gateway decoded them, such a client
//! got upstream paging links, `unchecked` reads and a 502 for XML. (Paging
//! with gzip is tested in upstreams.rs, against both servers.)
//!
//! The test client here sends the header itself and decodes by hand, so
//! every assertion sees exactly what went over the wire.

use std::io::{Read, Write};

use crate::{assert_outcome, create, patient, Stack};
use inkan_e2e::client;

const GZIP_CLIENT: &str = "gzip, deflate";

/// The body as the client reads it: decoded per `Content-Encoding`.
fn decoded_body(response: reqwest::blocking::Response) -> (Option<String>, Vec<u8>) {
    let coding = response
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    let raw = response.bytes().unwrap().to_vec();
    let mut plain = Vec::new();
    match coding.as_deref() {
        None => plain = raw,
        Some("gzip") => {
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut plain)
                .unwrap();
        }
        Some("deflate") => {
            flate2::read::ZlibDecoder::new(&raw[..])
                .read_to_end(&mut plain)
                .unwrap();
        }
        Some("br") => {
            brotli::Decompressor::new(&raw[..], 4096)
                .read_to_end(&mut plain)
                .unwrap();
        }
        Some(other) => panic!("unexpected Content-Encoding {other}"),
    }
    (coding, plain)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn header(response: &reqwest::blocking::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[test]
fn a_gzip_client_reads_verified_versions() {
    let stack = Stack::start();
    let created = create(&stack, &patient("Gzip", "Verified"));
    let id = created["id"].as_str().unwrap();
    let response = client()
        .get(stack.url(&format!("/Patient/{id}")))
        .header("Accept-Encoding", GZIP_CLIENT)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "inkan-verify").as_deref(),
        Some("verified=1, tampered=0, unsealed=0, unchecked=0"),
        "a compressed read is checked like any other"
    );
    assert_eq!(
        header(&response, "content-encoding").as_deref(),
        Some("gzip")
    );
    let relayed = response.bytes().unwrap();
    // Nothing needed changing (no upstream URL in it, verification adds
    // only a header): the client gets the upstream's own compressed bytes,
    // not a second compression.
    let direct = client()
        .get(format!("{}/Patient/{id}", stack.hfs.url))
        .header("Accept-Encoding", GZIP_CLIENT)
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(relayed, direct, "the upstream's gzip bytes, relayed");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&relayed[..])
        .read_to_end(&mut plain)
        .unwrap();
    let read: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(read["id"], created["id"]);
}

#[test]
fn xml_reads_work_compressed_and_uncompressed_and_metadata_converts() {
    let stack = Stack::start();
    let created = create(&stack, &patient("Xml", "Gzip"));
    let id = created["id"].as_str().unwrap();
    for accept_encoding in [None, Some(GZIP_CLIENT), Some("br")] {
        let mut request = client()
            .get(stack.url(&format!("/Patient/{id}")))
            .header("Accept", "application/fhir+xml");
        if let Some(value) = accept_encoding {
            request = request.header("Accept-Encoding", value);
        }
        let response = request.send().unwrap();
        assert_eq!(response.status(), 200, "{accept_encoding:?}");
        assert!(header(&response, "content-type")
            .unwrap()
            .starts_with("application/fhir+xml"));
        assert_eq!(
            header(&response, "inkan-verify").as_deref(),
            Some("verified=1, tampered=0, unsealed=0, unchecked=0")
        );
        let (_, body) = decoded_body(response);
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("<Patient"), "{accept_encoding:?}: {text}");
        assert!(text.contains("<family value=\"Xml\"/>"), "{text}");
    }
    // HFS's CapabilityStatement has JSON nulls; it used to be a 502 as XML.
    for accept_encoding in [None, Some(GZIP_CLIENT)] {
        let mut request = client().get(stack.url("/metadata?_format=xml"));
        if let Some(value) = accept_encoding {
            request = request.header("Accept-Encoding", value);
        }
        let response = request.send().unwrap();
        assert_eq!(
            response.status(),
            200,
            "metadata as XML, {accept_encoding:?}"
        );
        let (_, body) = decoded_body(response);
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("<CapabilityStatement"), "{text}");
        assert!(
            text.contains("application/fhir+xml"),
            "the bridge's formats are listed"
        );
    }
}

#[test]
fn compressed_request_bodies_are_decoded_normalized_and_sealed() {
    let stack = Stack::start();
    let body = serde_json::json!({
        "resourceType": "Patient",
        // Half-width kana: normalized only if the gateway saw the text.
        "name": [{"family": "ﾔﾏﾀﾞ", "given": ["ﾀﾛｳ"]}],
        "birthDate": "1970-01-01"
    })
    .to_string();
    let gzipped = gzip(body.as_bytes());
    let response = client()
        .post(stack.url("/Patient"))
        .header("Content-Type", "application/fhir+json")
        .header("Content-Encoding", "gzip")
        .header("Prefer", "return=representation")
        .body(gzipped)
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    assert!(header(&response, "inkan-seal")
        .unwrap()
        .starts_with("sealed"));
    let stored: serde_json::Value = serde_json::from_slice(&decoded_body(response).1).unwrap();
    assert_eq!(stored["name"][0]["family"], "ヤマダ");
    // An XML body, compressed, through the XML bridge.
    let xml =
        r#"<Patient xmlns="http://hl7.org/fhir"><name><family value="Brotli"/></name></Patient>"#;
    let mut compressed = Vec::new();
    brotli::CompressorWriter::new(&mut compressed, 4096, 5, 20)
        .write_all(xml.as_bytes())
        .unwrap();
    let response = client()
        .post(stack.url("/Patient"))
        .header("Content-Type", "application/fhir+xml")
        .header("Content-Encoding", "br")
        .body(compressed)
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    assert!(header(&response, "inkan-seal")
        .unwrap()
        .starts_with("sealed"));
}

#[test]
fn compressed_request_bodies_that_cannot_be_read_get_an_operation_outcome() {
    let stack = Stack::start_with("[limits]\nmax_request_body_bytes = 1048576\n");
    let post = |coding: &str, body: Vec<u8>| {
        client()
            .post(stack.url("/Patient"))
            .header("Content-Type", "application/fhir+json")
            .header("Content-Encoding", coding)
            .body(body)
            .send()
            .unwrap()
    };
    // 64 MiB of spaces inside a JSON string compress to ~64 KiB: under the
    // 1 MiB limit on the wire, 64× over it decoded.
    let mut bomb = b"{\"resourceType\":\"Patient\",\"id\":\"".to_vec();
    bomb.resize(64 << 20, b' ');
    let response = post("gzip", gzip(&bomb));
    assert_eq!(response.status(), 413, "a decompression bomb");
    assert_outcome(&crate::json(response), "too-long");
    let response = post("zstd", b"whatever".to_vec());
    assert_eq!(response.status(), 415, "an unknown coding");
    let response = post("gzip", b"{\"resourceType\":\"Patient\"}".to_vec());
    assert_eq!(response.status(), 400, "not gzip at all");
    // Still serving.
    let response = post("identity", b"{\"resourceType\":\"Patient\"}".to_vec());
    assert_eq!(response.status(), 201);
}
