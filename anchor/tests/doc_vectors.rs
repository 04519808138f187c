//! The published vectors in docs/vectors/canonical.json still hold.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used)]

use ledger::leaf;
use ledger::resource::{canonical_resource, Format};

#[test]
fn published_canonical_vectors_hold() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/vectors/canonical.json"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 5);
    for v in vectors {
        let format = if v["format"] == "xml" {
            Format::Xml
        } else {
            Format::Json
        };
        let canonical =
            canonical_resource(v["input"].as_str().unwrap().as_bytes(), format).unwrap();
        assert_eq!(
            std::str::from_utf8(&canonical).unwrap(),
            v["canonical"].as_str().unwrap(),
            "{}",
            v["name"]
        );
        let salt: leaf::Salt = hex::decode(v["salt"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(
            hex::encode(leaf::commitment(&salt, &canonical)),
            v["commitment"].as_str().unwrap(),
            "{}",
            v["name"]
        );
    }
    // The JSON and XML narrative vectors are one resource: one commitment.
    assert_eq!(vectors[3]["commitment"], vectors[4]["commitment"]);
}
