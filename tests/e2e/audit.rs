//! Versions altered, deleted and inserted directly in the upstream's
//! database are found by verify-on-read and by `inkan audit`; nothing
//! untouched is reported; `inkan backfill` seals what the ledger lacks.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::{create, json, patient, Stack};
use inkan_e2e::hfs_db;
use inkan_e2e::{client, inkan_binary, Gateway};

fn ledger_toml(dir: &Path, verify_reads: &str) -> String {
    format!(
        "[ledger]\ndir = \"{}\"\norigin = \"e2e.test/inkan\"\ncheckpoint_interval_ms = 100\nseal_writes = true\nverify_reads = \"{verify_reads}\"\n",
        dir.display()
    )
}

fn update(stack: &Stack, mut resource: Value, gender: &str) -> Value {
    resource["gender"] = json!(gender);
    let id = resource["id"].as_str().unwrap().to_owned();
    let response = client()
        .put(stack.url(&format!("/Patient/{id}")))
        .header("Content-Type", "application/fhir+json")
        .header("Prefer", "return=representation")
        .body(resource.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    json(response)
}

fn verify_header(response: &reqwest::blocking::Response) -> String {
    response
        .headers()
        .get("inkan-verify")
        .expect("Inkan-Verify header")
        .to_str()
        .unwrap()
        .to_owned()
}

/// Runs `inkan audit` (or `backfill`) with the gateway's own config file,
/// as an operator would; returns (exit code, stdout, report).
fn run_sweep(stack: &Stack, ledger: &Path, command: &str, extra: &[&str]) -> (i32, String, Value) {
    let report = ledger.join(format!("{command}-report.json"));
    let mut cmd = Command::new(inkan_binary());
    cmd.arg(command)
        .arg("--config")
        .arg(stack.gateway.dir.path().join("inkan.toml"))
        .args(["--page-size", "3", "--no-progress"])
        .args(extra);
    if command == "audit" {
        cmd.arg("--report").arg(&report);
    }
    let output = cmd.output().unwrap();
    // stdout (the summary) then stderr (resume and pause notices).
    let stdout = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.code() != Some(2),
        "{command} failed: {stdout}"
    );
    let report = std::fs::read_to_string(&report)
        .ok()
        .map(|text| serde_json::from_str(&text).unwrap())
        .unwrap_or(Value::Null);
    (output.status.code().unwrap(), stdout, report)
}

fn references(report: &Value, list: &str) -> Vec<String> {
    let mut refs: Vec<String> = report[list]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| list != "unsealed" || f["resource_has_seals"] == true)
        .map(|f| f["reference"].as_str().unwrap().to_owned())
        .collect();
    refs.sort();
    refs
}

#[test]
fn tampering_in_the_upstream_database_is_found_by_reads_and_by_the_audit() {
    let ledger = tempfile::tempdir().unwrap();
    let mut stack = Stack::start_with(&ledger_toml(ledger.path(), "annotate"));
    let database = stack.hfs.database.clone();

    // Written through inkan: A v1 v2, B v1 v2, C v1, D v1 (untouched).
    let a1 = create(&stack, &patient("Altered", "A"));
    let a = a1["id"].as_str().unwrap().to_owned();
    update(&stack, a1, "male");
    let b1 = create(&stack, &patient("Deleted", "B"));
    let b = b1["id"].as_str().unwrap().to_owned();
    update(&stack, b1, "male");
    let c1 = create(&stack, &patient("Inserted", "C"));
    let c = c1["id"].as_str().unwrap().to_owned();
    let d1 = create(&stack, &patient("Untouched", "D"));
    let d = d1["id"].as_str().unwrap().to_owned();

    // Before any tampering, reads verify.
    let read = client()
        .get(stack.url(&format!("/Patient/{d}")))
        .send()
        .unwrap();
    assert_eq!(
        verify_header(&read),
        "verified=1, tampered=0, unsealed=0, unchecked=0"
    );

    // Behind the gateway's back: change a value in A v1, delete B v1,
    // insert a C v2.
    hfs_db::alter_version(&database, "Patient", &a, "1", "Altered", "Alterer");
    hfs_db::delete_version(&database, "Patient", &b, "1");
    let c1_data = hfs_db::version_data(&database, "Patient", &c, "1");
    let inserted = hfs_db::insert_version(
        &database,
        "Patient",
        &c,
        &c1_data.replace("female", "other"),
    );
    assert_eq!(inserted, "2");

    // Verify-on-read, annotate mode: the altered vread is flagged, the
    // current version of A (untouched v2) still verifies.
    let vread = client()
        .get(stack.url(&format!("/Patient/{a}/_history/1")))
        .send()
        .unwrap();
    assert_eq!(vread.status(), 200, "annotate never withholds");
    assert_eq!(
        verify_header(&vread),
        "verified=0, tampered=1, unsealed=0, unchecked=0"
    );
    let read = client()
        .get(stack.url(&format!("/Patient/{a}")))
        .send()
        .unwrap();
    assert!(verify_header(&read).starts_with("verified=1, tampered=0"));
    // History of C: the inserted version is unsealed, v1 verifies; each
    // entry says so in the documented extension, outside the resource.
    let history = client()
        .get(stack.url(&format!("/Patient/{c}/_history")))
        .send()
        .unwrap();
    assert_eq!(
        verify_header(&history),
        "verified=1, tampered=0, unsealed=1, unchecked=0"
    );
    let history = json(history);
    for entry in history["entry"].as_array().unwrap() {
        let expected = match entry["resource"]["meta"]["versionId"].as_str().unwrap() {
            "1" => "verified",
            _ => "unsealed",
        };
        assert_eq!(
            entry["extension"][0]["url"],
            "https://inkan.dev/fhir/StructureDefinition/seal-verification"
        );
        assert_eq!(entry["extension"][0]["valueCode"], expected, "{entry}");
        assert!(entry["resource"].get("extension").is_none());
    }
    // Search: four current versions; A v2, B v2, D v1 verify, C v2 is unsealed.
    let search = client()
        .get(stack.url("/Patient?_count=50"))
        .send()
        .unwrap();
    assert_eq!(
        verify_header(&search),
        "verified=3, tampered=0, unsealed=1, unchecked=0"
    );

    // The audit finds exactly the three alterations.
    let (code, stdout, report) = run_sweep(&stack, ledger.path(), "audit", &[]);
    assert_eq!(
        code, 1,
        "tampered and missing versions fail the audit:\n{stdout}"
    );
    assert_eq!(
        references(&report, "tampered"),
        vec![format!("Patient/{a}/_history/1")]
    );
    assert_eq!(
        references(&report, "missing"),
        vec![format!("Patient/{b}/_history/1")]
    );
    assert_eq!(
        references(&report, "unsealed"),
        vec![format!("Patient/{c}/_history/2")]
    );
    assert_eq!(report["counts"]["verified"], 4, "A2, B2, C1, D1:\n{stdout}");
    assert!(
        stdout.contains(&format!("Patient/{a}/_history/1 (leaf 0)")),
        "{stdout}"
    );

    // Block mode: the altered vread is withheld with a 502 OperationOutcome.
    stack.gateway.process.kill();
    let blocking = Gateway::start(&stack.hfs.url, &ledger_toml(ledger.path(), "block"));
    let vread = client()
        .get(format!("{}/Patient/{a}/_history/1", blocking.base))
        .send()
        .unwrap();
    assert_eq!(vread.status(), 502);
    let outcome = json(vread);
    assert_eq!(outcome["issue"][0]["code"], "security", "{outcome}");
    let history = json(
        client()
            .get(format!("{}/Patient/{a}/_history", blocking.base))
            .send()
            .unwrap(),
    );
    let kinds: Vec<&str> = history["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "OperationOutcome").count(),
        1
    );
    assert_eq!(kinds.iter().filter(|k| **k == "Patient").count(), 1);
    drop(blocking);

    // Backfill seals the inserted version as first seen; the audit then
    // reports no unsealed Patient, and still the tampering.
    let (code, stdout, _) = run_sweep(&stack, ledger.path(), "backfill", &["--type", "Patient"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("sealed (backfilled): 1"), "{stdout}");
    let (code, stdout, report) = run_sweep(&stack, ledger.path(), "audit", &["--type", "Patient"]);
    assert_eq!(code, 1);
    assert_eq!(report["counts"]["unsealed"], 0, "{stdout}");
    assert_eq!(report["counts"]["tampered"], 1, "{stdout}");
    assert_eq!(report["counts"]["missing"], 1, "{stdout}");

    // A backfilled version verifies, marked as sealed when first seen (its
    // seal proves the content since then, not since the write).
    let after = Gateway::start(&stack.hfs.url, &ledger_toml(ledger.path(), "annotate"));
    let read = client()
        .get(format!("{}/Patient/{c}", after.base))
        .send()
        .unwrap();
    assert_eq!(
        verify_header(&read),
        "verified=1, tampered=0, unsealed=0, unchecked=0"
    );
    assert_eq!(read.headers()["inkan-verify-backfilled"], "1");
    let untouched = client()
        .get(format!("{}/Patient/{d}", after.base))
        .send()
        .unwrap();
    assert!(untouched.headers().get("inkan-verify-backfilled").is_none());
    drop(after);
    stack.hfs.stop();
}

#[test]
fn an_untouched_upstream_passes_the_audit() {
    let ledger = tempfile::tempdir().unwrap();
    let stack = Stack::start_with(&ledger_toml(ledger.path(), "annotate"));
    for i in 0..7 {
        let created = create(&stack, &patient("Clean", &format!("N{i}")));
        if i % 2 == 0 {
            update(&stack, created, "male");
        }
    }
    let id = create(&stack, &patient("Gone", "X"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = client()
        .delete(stack.url(&format!("/Patient/{id}")))
        .send()
        .unwrap();
    assert!(deleted.status().is_success());
    // Paused after two pages of three, then resumed: the same result as
    // one run (nothing counted twice, nothing skipped).
    let (code, _, _) = run_sweep(
        &stack,
        ledger.path(),
        "audit",
        &["--type", "Patient", "--max-pages", "2"],
    );
    assert_eq!(code, 3, "paused");
    let (code, stdout, report) = run_sweep(&stack, ledger.path(), "audit", &["--type", "Patient"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("resuming the sweep"), "{stdout}");
    // 7 creates + 4 updates + 1 create + 1 tombstone, over pages of 3.
    assert_eq!(report["counts"]["verified"], 13, "{stdout}");
    assert_eq!(report["counts"]["tampered"], 0);
    assert_eq!(report["counts"]["missing"], 0);
    assert_eq!(report["counts"]["unsealed"], 0);
}
