//! Every JP Core example resource passes the default rules (no private-use
//! or control characters; normalization is idempotent, so stored JP Core
//! data is stable) and, once normalized, the JP Core checks.

// Tests report failures by panicking.
#![allow(clippy::unwrap_used)]

use profiles_jp::resource::{normalize, Rules};

#[test]
fn jp_core_examples_normalize_cleanly_and_idempotently() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/jp-core/json");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let mut resource: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if resource.get("resourceType").is_none() {
            continue;
        }
        normalize(&mut resource, &Rules::default())
            .unwrap_or_else(|v| panic!("{}: {v}", path.display()));
        let again = normalize(&mut resource, &Rules::default()).unwrap();
        assert_eq!(again.total(), 0, "{}: not idempotent", path.display());
        // And they pass the JP Core checks (strict mode accepts them).
        let findings = profiles_jp::jpcore::check(&resource);
        assert!(findings.is_empty(), "{}: {findings:?}", path.display());
        seen += 1;
    }
    assert!(
        seen >= 10,
        "found only {seen} JP Core examples in {}",
        dir.display()
    );
}
