//! Writes through the gateway are sealed as the upstream stored them, and
//! a person outside the hospital can verify them offline.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{get_json, patient, post_json, Stack};
use inkan_e2e::{client, inkan_binary};

fn header(response: &reqwest::blocking::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn create_update_and_patch_are_sealed_and_verify_offline() {
    let ledger_dir = tempfile::tempdir().unwrap();
    let stack = Stack::start_with(&format!(
        "[ledger]\ndir = \"{}\"\norigin = \"e2e.test/inkan\"\ncheckpoint_interval_ms = 100\nseal_writes = true\n",
        ledger_dir.path().display()
    ));
    let http = client();

    // create → leaf 0, with the documented headers.
    let sent = patient("Seal", "Hanako").to_string();
    let response = post_json(&stack, "/Patient", sent.clone());
    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "inkan-seal"), "sealed");
    assert_eq!(header(&response, "inkan-leaf-index"), "0");
    assert_eq!(header(&response, "inkan-commitment").len(), 64);
    let repr_digest = header(&response, "repr-digest");
    let body = response.bytes().unwrap();
    {
        use base64::Engine;
        use sha2::Digest;
        let expected =
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body));
        assert_eq!(
            repr_digest,
            format!("sha-256=:{expected}:"),
            "Repr-Digest covers the body sent"
        );
    }
    let created: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    // update → leaf 1; JSON Patch → leaf 2.
    let mut updated = patient("Seal", "Hanako");
    updated["id"] = json!(id);
    updated["gender"] = json!("other");
    let response = http
        .put(stack.url(&format!("/Patient/{id}")))
        .header("Content-Type", "application/fhir+json")
        .body(updated.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "inkan-leaf-index"), "1");
    let response = http
        .patch(stack.url(&format!("/Patient/{id}")))
        .header("Content-Type", "application/json-patch+json")
        .body(r#"[{"op":"replace","path":"/gender","value":"female"}]"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "inkan-leaf-index"), "2");

    // Reads are not writes: no seal headers.
    let read = http
        .get(stack.url(&format!("/Patient/{id}")))
        .send()
        .unwrap();
    assert!(read.headers().get("inkan-seal").is_none());

    // A delete is sealed as a tombstone (leaf 3) for the version the
    // upstream's history gives it.
    let response = http
        .delete(stack.url(&format!("/Patient/{id}")))
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(header(&response, "inkan-seal"), "sealed");
    assert_eq!(header(&response, "inkan-leaf-index"), "3");

    // The checkpointer publishes a signed checkpoint covering the 4 leaves,
    // served read-only in the tlog-tiles layout.
    let deadline = Instant::now() + Duration::from_secs(10);
    let checkpoint = loop {
        let text = http
            .get(format!("{}/-/log/checkpoint", stack.gateway.origin))
            .send()
            .unwrap()
            .text()
            .unwrap();
        if text.starts_with("e2e.test/inkan\n4\n") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint of size 4: {text}\n{}",
            stack.gateway.process.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        checkpoint.contains("\n\n\u{2014} e2e.test/inkan "),
        "{checkpoint}"
    );
    let tile = http
        .get(format!("{}/-/log/tile/0/000.p/4", stack.gateway.origin))
        .send()
        .unwrap();
    assert_eq!(tile.status(), 200);
    assert_eq!(tile.bytes().unwrap().len(), 4 * 32, "four leaf hashes");
    let escape = http
        .get(format!("{}/-/log/tile/../../log.key", stack.gateway.origin))
        .send()
        .unwrap();
    assert_ne!(escape.status(), 200, "the signing key is never served");
    let missing = http
        .get(format!("{}/-/log/tile/0/999", stack.gateway.origin))
        .send()
        .unwrap();
    assert_eq!(missing.status(), 404);
    crate::assert_outcome(&crate::json(missing), "not-found");

    // Offline: proof bundle from the ledger, the version as read through
    // the gateway, and only the log's public key.
    let version2 = get_json(&stack, &format!("/Patient/{id}/_history/2"));
    let dir = ledger_dir.path().to_str().unwrap();
    let ledger = |args: &[&str]| {
        let base = ["ledger", "--dir", dir, "--origin", "e2e.test/inkan"];
        inkan_e2e::run_inkan(base.iter().chain(args))
    };
    let bundle = ledger(&["proof", "--type", "Patient", "--id", &id, "--version", "2"]);
    let key = ledger(&["key"]);
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("bundle.json"), bundle).unwrap();
    std::fs::write(work.path().join("v2.json"), version2.to_string()).unwrap();
    let verify = Command::new(inkan_binary())
        .args(["verify", "--bundle"])
        .arg(work.path().join("bundle.json"))
        .arg("--resource")
        .arg(work.path().join("v2.json"))
        .args(["--log-key", key.trim()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success() && out.contains("leaf 1"), "{out}");

    // The deletion's tombstone verifies without any resource file.
    let tombstone = ledger(&["proof", "--type", "Patient", "--id", &id, "--version", "4"]);
    std::fs::write(work.path().join("tombstone.json"), tombstone).unwrap();
    let verify = Command::new(inkan_binary())
        .args(["verify", "--bundle"])
        .arg(work.path().join("tombstone.json"))
        .args(["--log-key", key.trim()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && out.contains("_history/4 is leaf 3"),
        "{out}"
    );
}

#[test]
fn a_write_the_upstream_refuses_is_not_sealed() {
    let ledger_dir = tempfile::tempdir().unwrap();
    let stack = Stack::start_with(&format!(
        "[ledger]\ndir = \"{}\"\nseal_writes = true\n",
        ledger_dir.path().display()
    ));
    // The upstream rejects it (an Observation posted to /Patient): its
    // answer is relayed as is, and nothing is sealed.
    let response = post_json(
        &stack,
        "/Patient",
        r#"{"resourceType":"Observation","status":"final"}"#.to_owned(),
    );
    assert!(response.status().is_client_error(), "{}", response.status());
    assert!(response.headers().get("inkan-seal").is_none());
    let stats = Command::new(inkan_binary())
        .args(["ledger", "--dir"])
        .arg(ledger_dir.path())
        .arg("stats")
        .output()
        .unwrap();
    let stats = String::from_utf8(stats.stdout).unwrap();
    assert!(stats.contains("leaves:          0"), "{stats}");
}

#[test]
fn proof_and_verify_operations_answer_from_the_ledger() {
    let ledger_dir = tempfile::tempdir().unwrap();
    let stack = Stack::start_with(&format!(
        "[ledger]\ndir = \"{}\"\norigin = \"e2e.test/inkan\"\ncheckpoint_interval_ms = 100\nseal_writes = true\n",
        ledger_dir.path().display()
    ));
    let http = client();
    let created: serde_json::Value = crate::json(post_json(
        &stack,
        "/Patient",
        patient("Proof", "Op").to_string(),
    ));
    let id = created["id"].as_str().unwrap().to_owned();

    // The CapabilityStatement lists both operations; their definitions are served.
    let capability = get_json(&stack, "/metadata");
    let operations: Vec<&str> = capability["rest"][0]["operation"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|op| op["definition"].as_str())
        .collect();
    for canonical in [
        "https://inkan.dev/fhir/OperationDefinition/inkan-proof",
        "https://inkan.dev/fhir/OperationDefinition/inkan-verify",
    ] {
        assert!(operations.contains(&canonical), "{operations:?}");
    }
    let definition = get_json(&stack, "/OperationDefinition/inkan-verify");
    assert_eq!(definition["resourceType"], "OperationDefinition");

    // $proof on the version (once a checkpoint covers it), as JSON and as
    // tlog-proof text; on the resource, with the current copy verified.
    let proof_url = stack.url(&format!("/Patient/{id}/_history/1/$proof"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let bundle = loop {
        let response = http.get(&proof_url).send().unwrap();
        if response.status() == 200 {
            break crate::json(response);
        }
        assert_eq!(response.status(), 404, "before the first checkpoint");
        assert!(
            Instant::now() < deadline,
            "no checkpoint covers the version"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(bundle["format"], "inkan-proof-bundle/v1");
    assert_eq!(bundle["leafIndex"], 0);
    let text = http
        .get(&proof_url)
        .header("Accept", "text/plain")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\n"), "{text}");
    let current = http
        .get(stack.url(&format!("/Patient/{id}/$proof")))
        .send()
        .unwrap();
    assert_eq!(current.status(), 200);
    assert_eq!(header(&current, "inkan-verify"), "verified");
    let unknown = http
        .get(stack.url("/Patient/no-such-id/_history/1/$proof"))
        .send()
        .unwrap();
    assert_eq!(unknown.status(), 404);
    crate::assert_outcome(&crate::json(unknown), "not-found");

    // $verify: the version as read verifies, in JSON and in XML; a changed
    // copy is tampered; an unknown version is unsealed; a body without a
    // version is a 400.
    let read = get_json(&stack, &format!("/Patient/{id}"));
    let verify = |body: String, content_type: &str| {
        http.post(stack.url("/Patient/$verify"))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .unwrap()
    };
    let result = |response: reqwest::blocking::Response| {
        assert_eq!(response.status(), 200);
        let parameters = crate::json(response);
        parameters["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "result")
            .unwrap()["valueCode"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        result(verify(read.to_string(), "application/fhir+json")),
        "verified"
    );
    let xml = http
        .get(stack.url(&format!("/Patient/{id}?_format=xml")))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(result(verify(xml, "application/fhir+xml")), "verified");
    let mut altered = read.clone();
    altered["gender"] = json!("male");
    assert_eq!(
        result(verify(altered.to_string(), "application/fhir+json")),
        "tampered"
    );
    // A version written around the gateway (straight to the upstream) is
    // readable but unsealed; one the upstream does not have is a 404: the
    // caller may only ask about what it may read.
    let around = http
        .post(format!("{}/Patient", stack.hfs.url))
        .header("Content-Type", "application/fhir+json")
        .body(patient("Ura", "Guchi").to_string())
        .send()
        .unwrap();
    assert_eq!(around.status(), 201);
    assert_eq!(
        result(verify(
            crate::json(around).to_string(),
            "application/fhir+json"
        )),
        "unsealed"
    );
    let mut other = read.clone();
    other["id"] = json!("someone-else");
    let missing = verify(other.to_string(), "application/fhir+json");
    assert_eq!(missing.status(), 404);
    crate::assert_outcome(&crate::json(missing), "not-found");
    let bad = verify(
        patient("No", "Version").to_string(),
        "application/fhir+json",
    );
    assert_eq!(bad.status(), 400);
    crate::assert_outcome(&crate::json(bad), "structure");
}

#[test]
fn transactions_batches_conditional_deletes_and_minimal_writes_are_sealed() {
    let ledger_dir = tempfile::tempdir().unwrap();
    let stack = Stack::start_with(&format!(
        "[ledger]\ndir = \"{}\"\nseal_writes = true\n",
        ledger_dir.path().display()
    ));
    let http = client();
    let post_bundle = |bundle: serde_json::Value| {
        http.post(stack.gateway.base.clone())
            .header("Content-Type", "application/fhir+json")
            .body(bundle.to_string())
            .send()
            .unwrap()
    };

    // A transaction: two entries, the Observation pointing at the Patient
    // by urn:uuid. Both versions are sealed, in entry order.
    let transaction = post_bundle(json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:6c1f0c2e-0000-4000-8000-000000000001",
             "resource": patient("Tx", "Taro"),
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "体温"},
                          "subject": {"reference": "urn:uuid:6c1f0c2e-0000-4000-8000-000000000001"}},
             "request": {"method": "POST", "url": "Observation"}}
        ]
    }));
    assert_eq!(transaction.status(), 200);
    assert_eq!(header(&transaction, "inkan-seal"), "sealed");
    assert_eq!(header(&transaction, "inkan-leaf-index"), "0, 1");
    let search = http.get(stack.url("/Observation")).send().unwrap();
    assert_eq!(
        header(&search, "inkan-verify"),
        "verified=1, tampered=0, unsealed=0, unchecked=0"
    );

    // A batch: a create and a read. Only the create is a version.
    let batch = post_bundle(json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": [
            {"resource": patient("Batch", "Jiro"), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Observation"}}
        ]
    }));
    assert_eq!(batch.status(), 200);
    assert_eq!(header(&batch, "inkan-leaf-index"), "2");

    // return=minimal: the client gets no body, as asked; the version is
    // still sealed (read back).
    let minimal = http
        .post(stack.url("/Patient"))
        .header("Content-Type", "application/fhir+json")
        .header("Prefer", "return=minimal")
        .body(patient("CondDel", "Saburo").to_string())
        .send()
        .unwrap();
    assert_eq!(minimal.status(), 201);
    assert_eq!(header(&minimal, "inkan-leaf-index"), "3");
    assert!(minimal.bytes().unwrap().is_empty(), "minimal means no body");

    // A conditional delete: the tombstone of the resource it matched.
    let deleted = http
        .delete(stack.url("/Patient?family=CondDel"))
        .send()
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    assert_eq!(header(&deleted, "inkan-seal"), "sealed");
    assert_eq!(header(&deleted, "inkan-leaf-index"), "4");

    // Nothing written through the gateway is missing from the ledger.
    let audit = Command::new(inkan_binary())
        .arg("audit")
        .arg("--config")
        .arg(stack.gateway.dir.path().join("inkan.toml"))
        .args([
            "--type",
            "Patient",
            "--type",
            "Observation",
            "--no-progress",
        ])
        .arg("--report")
        .arg(ledger_dir.path().join("report.json"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    assert!(
        out.contains("verified         5") && out.contains("unsealed         0"),
        "{out}"
    );
}
