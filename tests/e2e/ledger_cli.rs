//! The ledger command line: seal, checkpoint, proof, verify and find, as an
//! operator and an outside verifier would use them.

use std::process::Command;

use inkan_e2e::inkan_binary;

fn inkan(args: &[&str]) -> (bool, String) {
    let out = Command::new(inkan_binary()).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn seal_prove_verify_and_find_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ledger_dir = d.join("ledger");
    let ledger_dir = ledger_dir.to_str().unwrap();
    let json = r#"{"resourceType":"Patient","id":"123","meta":{"versionId":"2"},"name":[{"family":"山田","given":["太郎"]}],"birthDate":"1970-01-01"}"#;
    let xml = r#"<Patient xmlns="http://hl7.org/fhir"><id value="123"/><meta><versionId value="2"/></meta><name><family value="山田"/><given value="太郎"/></name><birthDate value="1970-01-01"/></Patient>"#;
    std::fs::write(d.join("p.json"), json).unwrap();
    std::fs::write(d.join("p.xml"), xml).unwrap();
    let base = ["ledger", "--dir", ledger_dir, "--origin", "cli.test/inkan"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |extra: &[&str]| {
        let args = with(extra);
        inkan(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let p_json = d.join("p.json");
    // `inkan ledger seal` of Patient/123 at `version` from `file`.
    let seal = |version: &str, file: &std::path::Path| {
        run(&[
            "seal",
            "--type",
            "Patient",
            "--id",
            "123",
            "--version",
            version,
            "--resource",
            file.to_str().unwrap(),
        ])
    };
    let seal_p_json = || seal("2", &p_json);
    let (ok, out) = seal_p_json();
    assert!(ok && out.starts_with("leaf 0 commitment "), "{out}");
    let (ok, again) = seal_p_json();
    assert!(ok && again.contains("(already sealed)"), "{again}");
    // A file that names another version than --version could never be
    // verified: refused, nothing sealed.
    let (ok, refused) = seal("3", &p_json);
    assert!(
        !ok && refused.contains("meta.versionId is \"2\""),
        "{refused}"
    );
    // The same key with other content is a conflict, not "already sealed".
    let altered = d.join("altered.json");
    std::fs::write(&altered, json.replace("1970-01-01", "1970-01-02")).unwrap();
    let (ok, conflict) = seal("2", &altered);
    assert!(!ok && conflict.contains("different content"), "{conflict}");
    let (ok, note) = run(&["checkpoint"]);
    assert!(ok && note.starts_with("cli.test/inkan\n1\n"), "{note}");

    // Find by the XML form of the same version: the content digest is format-independent.
    let (ok, found) = run(&["find", "--resource", d.join("p.xml").to_str().unwrap()]);
    assert!(
        ok && found.contains("Patient/123/_history/2  leaf 0"),
        "{found}"
    );
    let (ok, missing) = run(&["find", "--digest", &"00".repeat(32)]);
    assert!(!ok && missing.contains("no sealed version"), "{missing}");

    let (ok, bundle) = run(&[
        "proof",
        "--type",
        "Patient",
        "--id",
        "123",
        "--version",
        "2",
    ]);
    assert!(ok, "{bundle}");
    std::fs::write(d.join("proof.json"), &bundle).unwrap();
    let (ok, tlog) = run(&[
        "proof",
        "--type",
        "Patient",
        "--id",
        "123",
        "--version",
        "2",
        "--format",
        "tlog-proof",
    ]);
    assert!(ok && tlog.starts_with("c2sp.org/tlog-proof@v1\n"), "{tlog}");
    let (ok, key) = run(&["key"]);
    assert!(ok);
    let key = key.trim().to_owned();

    let verify = |resource: &str| {
        inkan(&[
            "verify",
            "--bundle",
            d.join("proof.json").to_str().unwrap(),
            "--resource",
            d.join(resource).to_str().unwrap(),
            "--log-key",
            &key,
        ])
    };
    let (ok, out) = verify("p.json");
    assert!(ok && out.starts_with("VERIFIED"), "{out}");
    let (ok, out) = verify("p.xml");
    assert!(ok && out.starts_with("VERIFIED"), "{out}");
    std::fs::write(d.join("altered.json"), json.replace("1970", "1971")).unwrap();
    let (ok, out) = verify("altered.json");
    assert!(
        !ok && out.contains("NOT VERIFIED: proof bundle rejected: commitment mismatch"),
        "{out}"
    );
    std::fs::write(d.join("other.json"), json.replace("\"123\"", "\"124\"")).unwrap();
    let (ok, out) = verify("other.json");
    assert!(!ok && out.contains("id is \"124\", not \"123\""), "{out}");

    let (ok, out) = run(&["fsck"]);
    assert!(ok && out.starts_with("ok: 1 leaves"), "{out}");
}
