//! Checkpoints anchored with an RFC 3161 TSA (OpenSSL's, behind the shim):
//! receipts in proof bundles verify offline against the TSA CA; forged and
//! broken answers are refused and reported; a TSA outage (and a gateway
//! crash during it) costs clients nothing and is caught up afterwards.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{anchors_caught_up, json, patient, post_json, wait_anchor_status};
use inkan_e2e::{client, inkan_binary, Gateway, Hfs, TsaShim};

fn config(ledger: &std::path::Path, tsa: &TsaShim) -> String {
    format!(
        "[ledger]\ndir = \"{}\"\norigin = \"e2e.test/inkan\"\ncheckpoint_interval_ms = 100\n\n[anchors.rfc3161]\nurl = \"{}/tsa\"\nca_file = \"{}\"\ntimeout_ms = 2000\ninterval_ms = 300\n",
        ledger.display(),
        tsa.url,
        tsa.ca_file().display()
    )
}

fn wait_status(gateway: &Gateway, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_anchor_status(gateway, "rfc3161", what, || {}, check)
}

#[test]
fn checkpoints_are_time_stamped_and_bundles_verify_against_the_tsa_ca() {
    let hfs = Hfs::start();
    let tsa = TsaShim::start();
    let ledger = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&hfs.url, &config(ledger.path(), &tsa));
    let stack = crate::Stack { gateway, hfs };
    let created = json(post_json(
        &stack,
        "/Patient",
        patient("Stamp", "Hanako").to_string(),
    ));
    let id = created["id"].as_str().unwrap().to_owned();
    wait_status(&stack.gateway, "first stamp", anchors_caught_up);
    let metrics = stack.gateway.metrics();
    assert!(
        metrics.contains("inkan_anchor_lag_checkpoints{backend=\"rfc3161\"} 0"),
        "{metrics}"
    );

    // The proof bundle carries the TSA receipt; `inkan verify` checks it
    // against the TSA CA, refuses it against another CA, and without a CA
    // says it did not check it.
    let bundle = loop {
        let bundle = json(
            client()
                .get(stack.url(&format!("/Patient/{id}/_history/1/$proof")))
                .send()
                .unwrap(),
        );
        if bundle["anchors"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["backend"] == "rfc3161"))
        {
            break bundle;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("bundle.json"), bundle.to_string()).unwrap();
    std::fs::write(work.path().join("resource.json"), created.to_string()).unwrap();
    let key = std::fs::read_to_string(ledger.path().join("log.pub")).unwrap();
    let verify = |ca: Option<&std::path::Path>| {
        let mut command = Command::new(inkan_binary());
        command
            .args(["verify", "--bundle"])
            .arg(work.path().join("bundle.json"))
            .arg("--resource")
            .arg(work.path().join("resource.json"))
            .args(["--log-key", key.trim()]);
        if let Some(ca) = ca {
            command.arg("--tsa-ca").arg(ca);
        }
        let out = command.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = verify(Some(&tsa.ca_file()));
    assert!(
        ok && out.contains("time-stamped at") && out.contains("token checked against the TSA CA"),
        "{out}"
    );
    let (ok, out) = verify(Some(&tsa.dir.path().join("rogue-ca.pem")));
    assert!(!ok && out.contains("does not chain"), "{out}");
    let (ok, out) = verify(None);
    assert!(ok && out.contains("NOT checked"), "{out}");
}

#[test]
fn bad_tsa_answers_are_refused_and_an_outage_is_caught_up_after_a_crash() {
    let hfs = Hfs::start();
    let mut tsa = TsaShim::start();
    let ledger = tempfile::tempdir().unwrap();
    let toml = config(ledger.path(), &tsa);
    let gateway = Gateway::start(&hfs.url, &toml);
    let stack = crate::Stack { gateway, hfs };
    post_json(&stack, "/Patient", patient("Anchor", "0").to_string());
    wait_status(&stack.gateway, "first stamp", anchors_caught_up);

    // Every kind of bad answer is refused (never a receipt) and reported,
    // while writes go on without errors.
    #[rustfmt::skip]
    let faults = [
        ("garbage",       "not a TimeStampResp"),
        ("rejection",     "refused"),
        ("wrong-imprint", "another imprint"),
        ("foreign",       "does not chain"),
        ("http-error",    "500"),
    ];
    for (i, (mode, reason)) in faults.iter().enumerate() {
        tsa.set_mode(mode);
        let response = post_json(
            &stack,
            "/Patient",
            patient("Anchor", &format!("F{i}")).to_string(),
        );
        assert_eq!(response.status(), 201, "clients never see anchor trouble");
        let row = wait_status(&stack.gateway, mode, |row| {
            row["lastError"]
                .as_str()
                .is_some_and(|e| e.contains(reason))
        });
        assert!(
            row["lagCheckpoints"].as_u64().unwrap() >= 1,
            "{mode}: nothing anchored: {row}"
        );
    }
    tsa.set_mode("ok");
    wait_status(&stack.gateway, "recovered after faults", anchors_caught_up);

    // An outage: the TSA is down, writes continue, the gateway crashes
    // (kill -9) with checkpoints still unstamped, the TSA returns, the
    // gateway restarts: the latest checkpoint — covering all the ones made
    // during the outage — is stamped.
    tsa.stop();
    let started = Instant::now();
    for i in 0..20 {
        let response = post_json(
            &stack,
            "/Patient",
            patient("Outage", &format!("O{i}")).to_string(),
        );
        assert_eq!(response.status(), 201);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "writes were held up by the TSA outage: {:?}",
        started.elapsed()
    );
    let row = wait_status(&stack.gateway, "outage visible", |row| {
        row["lagCheckpoints"].as_u64().unwrap_or(0) >= 1
            && row["failures"].as_u64().unwrap_or(0) >= 1
    });
    let lagging_at = row["latestCheckpoint"].as_u64().unwrap();
    stack.gateway.process.signal("KILL");
    let tsa = tsa.restart();
    let restarted = Gateway::start(&stack.hfs.url, &config(ledger.path(), &tsa));
    let row = wait_status(&restarted, "caught up after the outage", anchors_caught_up);
    assert!(row["lastAnchored"].as_u64().unwrap() >= lagging_at, "{row}");
    assert_eq!(row["failures"], 0);
}

#[test]
fn a_tsa_that_requires_a_client_certificate_over_https() {
    let hfs = Hfs::start();
    let tsa = TsaShim::start_tls();
    let dir = tsa.dir.path();
    let ledgers = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let https = |ledger: &std::path::Path, client: &str| {
        format!(
            "{}https_ca_file = \"{}\"\n{client}",
            config(ledger, &tsa),
            dir.join("ca.pem").display()
        )
    };
    // Without the client certificate the handshake fails: reported, never a receipt.
    let without = Gateway::start(&hfs.url, &https(ledgers[0].path(), ""));
    post_json_to(&without, patient("Tls", "Without"));
    let row = wait_status(&without, "refused without a certificate", |row| {
        row["lastError"].is_string()
    });
    assert!(row["lastAnchored"].is_null(), "{row}");
    drop(without);
    // With it, the checkpoint is stamped.
    let with = Gateway::start(
        &hfs.url,
        &https(
            ledgers[1].path(),
            &format!(
                "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
                dir.join("https-client.pem").display(),
                dir.join("https-client.key").display()
            ),
        ),
    );
    post_json_to(&with, patient("Tls", "With"));
    wait_status(
        &with,
        "stamped over HTTPS with a client certificate",
        anchors_caught_up,
    );
}

fn post_json_to(gateway: &Gateway, resource: Value) {
    let response = client()
        .post(format!("{}/Patient", gateway.base))
        .header("Content-Type", "application/fhir+json")
        .body(resource.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
}
