//! Regenerates docs/vectors/canonical.json: canonical-form and commitment
//! vectors for other implementations. Run after a deliberate format change:
//!   cargo run -p inkan-ledger --example canonical_vectors > docs/vectors/canonical.json
//! The `doc_vectors` test fails whenever the implementation drifts from it.

use ledger::leaf;
use ledger::resource::{canonical_resource, Format};
use sha2::Digest;

fn main() {
    // A fixed, published salt (0x00, 0x01, … 0x1f) so the commitments are
    // reproducible; real leaves use fresh random salts.
    let salt: leaf::Salt = std::array::from_fn(|i| i as u8);
    let inputs: Vec<(&str, Format, &str)> = vec![
        ("member order and whitespace", Format::Json, "{ \"resourceType\" : \"Patient\", \"id\" : \"1\", \"active\" : true }"),
        ("decimals copied verbatim", Format::Json, r#"{"resourceType":"Observation","id":"o1","valueQuantity":{"value":1.50,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}}"#),
        ("escapes and UTF-16 member order", Format::Json, "{\"resourceType\":\"Basic\",\"id\":\"e\",\"extension\":[{\"url\":\"http://example.jp/x\",\"valueString\":\"\\u5c71\\u7530\\t\\\"q\\\" \\/ \\u0001 \\ud83d\\ude00\"}],\"\u{ff41}\":1,\"\u{1f600}\":2}"),
        ("narrative XHTML", Format::Json, "{\"resourceType\":\"Patient\",\"id\":\"n\",\"text\":{\"status\":\"generated\",\"div\":\"<div xmlns=\\\"http://www.w3.org/1999/xhtml\\\">\\n  <p>山田 <b>太郎</b> (\\\"Taro\\\")</p>\\n</div>\"}}"),
        ("the same narrative as FHIR XML", Format::Xml, "<Patient xmlns=\"http://hl7.org/fhir\"><id value=\"n\"/><text><status value=\"generated\"/><div xmlns=\"http://www.w3.org/1999/xhtml\"><p>山田 <b>太郎</b> (&quot;Taro&quot;)</p></div></text></Patient>"),
    ];
    let mut vectors = Vec::new();
    for (name, format, input) in inputs {
        let canonical =
            canonical_resource(input.as_bytes(), format).expect("vector input is valid");
        vectors.push(serde_json::json!({
            "name": name,
            "format": if format == Format::Json { "json" } else { "xml" },
            "input": input,
            "canonical": String::from_utf8(canonical.clone()).expect("canonical form is UTF-8"),
            "contentDigest": hex::encode(sha2::Sha256::digest(&canonical)),
            "salt": hex::encode(salt),
            "commitment": hex::encode(leaf::commitment(&salt, &canonical)),
        }));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({"vectors": vectors}))
            .expect("serializable")
    );
}
