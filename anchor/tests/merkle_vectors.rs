//! Known-answer vectors from transparency-dev/merkle (fixtures/
//! merkle-testdata): every case must verify or be rejected exactly as the
//! vector says.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use ledger::merkle::{verify_consistency, verify_inclusion, Hash};

fn fixtures(kind: &str) -> Vec<(String, serde_json::Value)> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/merkle-testdata/");
    let mut cases = Vec::new();
    let mut pending = vec![std::path::PathBuf::from(format!("{root}{kind}"))];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("merkle fixtures missing") {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).unwrap();
                cases.push((
                    path.display().to_string(),
                    serde_json::from_str(&text).unwrap(),
                ));
            }
        }
    }
    cases
}

fn bytes(v: &serde_json::Value) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str()?)
        .ok()
}

/// A base64 proof hash; `None` when it is not 32 bytes (a malformed proof).
fn hash(v: &serde_json::Value) -> Option<Hash> {
    bytes(v)?.try_into().ok()
}

fn hashes(v: &serde_json::Value) -> Option<Vec<Hash>> {
    v.as_array()
        .map_or(Some(Vec::new()), |items| items.iter().map(hash).collect())
}

#[test]
fn inclusion_vectors() {
    let cases = fixtures("inclusion");
    assert!(cases.len() > 50, "only {} inclusion vectors", cases.len());
    for (name, case) in cases {
        let want_err = case["wantErr"].as_bool().unwrap();
        let result = (|| {
            let index = case["leafIdx"].as_u64().ok_or("index")?;
            let size = case["treeSize"].as_u64().ok_or("size")?;
            let leaf = bytes(&case["leafHash"]).ok_or("leaf hash")?;
            let root = bytes(&case["root"]).ok_or("root")?;
            let proof = hashes(&case["proof"]).ok_or("proof hash length")?;
            verify_inclusion(index, size, &leaf, &proof, &root).map_err(|_| "rejected")
        })();
        assert_eq!(result.is_err(), want_err, "{name}: {result:?}");
    }
}

#[test]
fn consistency_vectors() {
    let cases = fixtures("consistency");
    assert!(cases.len() > 50, "only {} consistency vectors", cases.len());
    for (name, case) in cases {
        let want_err = case["wantErr"].as_bool().unwrap();
        let result = (|| {
            let size1 = case["size1"].as_u64().ok_or("size1")?;
            let size2 = case["size2"].as_u64().ok_or("size2")?;
            let root1 = bytes(&case["root1"]).ok_or("root1")?;
            let root2 = bytes(&case["root2"]).ok_or("root2")?;
            let proof = hashes(&case["proof"]).ok_or("proof hash length")?;
            verify_consistency(size1, size2, &root1, &root2, &proof).map_err(|_| "rejected")
        })();
        assert_eq!(result.is_err(), want_err, "{name}: {result:?}");
    }
}
