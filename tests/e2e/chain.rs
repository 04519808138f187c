//! Checkpoints anchored on an EVM chain (ganache): the receipt verifies on
//! chain; a transaction reorganized away before its confirmations is sent
//! again, not lost; an underpriced transaction and a node outage are
//! reported and recovered from, and clients never notice.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{anchors_caught_up, patient, post_json, wait_anchor_status, Stack};
use inkan_e2e::{client, run_inkan, Ganache, Gateway, Hfs};

fn config(
    ledger: &std::path::Path,
    node: &Ganache,
    confirmations: u64,
    max_fee_gwei: u64,
) -> String {
    format!(
        "[ledger]\ndir = \"{}\"\norigin = \"e2e.test/inkan\"\ncheckpoint_interval_ms = 100\n\n[anchors.evm]\nrpc_url = \"{}\"\nchain_id = 1337\nkey_file = \"{}\"\nconfirmations = {confirmations}\ninterval_ms = 300\ntimeout_ms = 1500\nmax_fee_gwei = {max_fee_gwei}\n",
        ledger.display(),
        node.url,
        node.key_file().display()
    )
}

/// Waits until `check` holds for the evm status row, running `meanwhile`
/// on every turn.
fn wait_for(
    gateway: &Gateway,
    what: &str,
    meanwhile: impl FnMut(),
    check: impl Fn(&Value) -> bool,
) -> Value {
    wait_anchor_status(gateway, "evm", what, meanwhile, check)
}

fn verify_on_chain(
    stack: &Stack,
    ledger: &std::path::Path,
    id: &str,
    created: &Value,
    rpc: Option<&str>,
) -> String {
    let bundle: Value = client()
        .get(stack.url(&format!("/Patient/{id}/_history/1/$proof")))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        bundle["anchors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["backend"] == "evm"),
        "{bundle}"
    );
    let work = tempfile::tempdir().unwrap();
    let bundle_file = work.path().join("bundle.json");
    let resource_file = work.path().join("resource.json");
    std::fs::write(&bundle_file, bundle.to_string()).unwrap();
    std::fs::write(&resource_file, created.to_string()).unwrap();
    let key = std::fs::read_to_string(ledger.join("log.pub")).unwrap();
    let mut args: Vec<std::ffi::OsString> = vec![
        "verify".into(),
        "--bundle".into(),
        bundle_file.into(),
        "--resource".into(),
        resource_file.into(),
        "--log-key".into(),
        key.trim().into(),
    ];
    if let Some(rpc) = rpc {
        args.push("--evm-rpc".into());
        args.push(rpc.into());
    }
    run_inkan(args)
}

/// A record written through a gateway anchoring on `node` verifies on
/// chain with `--evm-rpc`, and is reported unchecked without it.
fn anchored_record_verifies_on_chain(node: &Ganache, given: &str) {
    let hfs = Hfs::start();
    let ledger = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&hfs.url, &config(ledger.path(), node, 1, 500));
    let stack = Stack { gateway, hfs };
    let created: Value = post_json(&stack, "/Patient", patient("Chain", given).to_string())
        .json()
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    wait_for(&stack.gateway, "anchored", || {}, anchors_caught_up);
    let out = verify_on_chain(&stack, ledger.path(), &id, &created, Some(&node.url));
    assert!(out.contains("checked on chain"), "{out}");
    let out = verify_on_chain(&stack, ledger.path(), &id, &created, None);
    assert!(out.contains("NOT checked"), "{out}");
}

#[test]
fn checkpoints_are_anchored_on_chain_and_verify_there() {
    anchored_record_verifies_on_chain(&Ganache::start(), "Hanako");
}

#[test]
fn a_chain_without_a_base_fee_gets_legacy_transactions() {
    // Before London there is no base fee: EIP-155 legacy transactions.
    let node = Ganache::start_with(&["--chain.hardfork", "berlin"]);
    let latest = node.rpc("eth_getBlockByNumber", json!(["latest", false]));
    assert!(latest.get("baseFeePerGas").is_none(), "{latest}");
    anchored_record_verifies_on_chain(&node, "Legacy");
}

#[test]
fn reorganized_underpriced_and_unreachable_anchors_are_recovered() {
    let hfs = Hfs::start();
    let node = Ganache::start();
    let ledger = tempfile::tempdir().unwrap();

    // Underpriced: a fee cap below the chain's base fee is refused by the
    // node, reported, and nothing is anchored; with a sane cap it works.
    let cheap = Gateway::start(&hfs.url, &config(ledger.path(), &node, 3, 0));
    let response = client()
        .post(format!("{}/Patient", cheap.base))
        .header("Content-Type", "application/fhir+json")
        .body(patient("Chain", "Cheap").to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    let row = wait_for(
        &cheap,
        "underpriced",
        || {},
        |row| row["lastError"].is_string(),
    );
    assert!(row["lastAnchored"].is_null(), "{row}");
    drop(cheap);

    // A reorganization: the anchoring transaction is mined, then the chain
    // is reverted to before it (ganache evm_revert) before it has its three
    // confirmations. The gateway notices and sends it again.
    let snapshot = node.rpc("evm_snapshot", json!([]));
    let gateway = Gateway::start(&hfs.url, &config(ledger.path(), &node, 3, 500));
    let mut stack = Stack { gateway, hfs };
    wait_for(
        &stack.gateway,
        "mined, waiting for confirmations",
        || {},
        |row| {
            row["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("confirmations"))
        },
    );
    assert_eq!(node.rpc("evm_revert", json!([snapshot])), json!(true));
    wait_for(
        &stack.gateway,
        "re-submitted and confirmed",
        || {
            node.rpc("evm_mine", json!([]));
        },
        anchors_caught_up,
    );
    assert!(
        stack.gateway.process.log().contains("re-submitting"),
        "{}",
        stack.gateway.process.log()
    );

    // The node goes down: writes go on; when it is back the latest
    // checkpoint is anchored.
    let mut node = node;
    node.stop();
    let started = Instant::now();
    for i in 0..10 {
        let response = post_json(
            &stack,
            "/Patient",
            patient("Chain", &format!("Down{i}")).to_string(),
        );
        assert_eq!(response.status(), 201);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "writes waited for the chain"
    );
    wait_for(
        &stack.gateway,
        "outage reported",
        || {},
        |row| row["lagCheckpoints"].as_u64() >= Some(1) && row["failures"].as_u64() >= Some(1),
    );
    let node = node.restart();
    let row = wait_for(
        &stack.gateway,
        "caught up after the outage",
        || {
            node.rpc("evm_mine", json!([]));
        },
        anchors_caught_up,
    );
    assert_eq!(row["failures"], 0);
    stack.hfs.stop();
}

#[test]
fn both_backends_down_under_write_load_then_both_catch_up() {
    let hfs = Hfs::start();
    let mut node = Ganache::start();
    let mut tsa = inkan_e2e::TsaShim::start();
    let ledger = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}\n[anchors.rfc3161]\nurl = \"{}\"\nca_file = \"{}\"\ntimeout_ms = 1000\ninterval_ms = 300\n",
        config(ledger.path(), &node, 1, 500),
        tsa.url,
        tsa.ca_file().display()
    );
    let gateway = Gateway::start(&hfs.url, &toml);
    let stack = Stack { gateway, hfs };
    post_json(&stack, "/Patient", patient("Both", "Before").to_string());
    for backend in ["evm", "rfc3161"] {
        wait_anchor_status(
            &stack.gateway,
            backend,
            "anchored",
            || {},
            anchors_caught_up,
        );
    }

    // Both down; writes keep coming, none fails.
    node.stop();
    tsa.stop();
    let started = Instant::now();
    let mut errors = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let response = post_json(&stack, "/Patient", patient("Both", "During").to_string());
        errors += usize::from(response.status() != 201);
    }
    assert_eq!(errors, 0, "client errors during the anchor outage");
    let mut outage_checkpoints = Vec::new();
    for backend in ["evm", "rfc3161"] {
        let row = wait_anchor_status(
            &stack.gateway,
            backend,
            "outage seen",
            || {},
            |row| row["lagCheckpoints"].as_u64() >= Some(1) && row["failures"].as_u64() >= Some(1),
        );
        outage_checkpoints.push(row["latestCheckpoint"].as_u64().unwrap());
    }

    // Both back: the latest checkpoint, which covers every one signed
    // during the outage, is anchored by each.
    let node = node.restart();
    let _tsa = tsa.restart();
    for (backend, during) in ["evm", "rfc3161"].into_iter().zip(outage_checkpoints) {
        let row = wait_anchor_status(
            &stack.gateway,
            backend,
            "caught up",
            || {
                node.rpc("evm_mine", json!([]));
            },
            anchors_caught_up,
        );
        assert!(
            row["lastAnchored"].as_u64().unwrap() >= during,
            "{backend}: {row}"
        );
    }
}

#[test]
fn a_transaction_stuck_unmined_is_replaced_not_left_blocking_the_nonce() {
    let hfs = Hfs::start();
    let node = Ganache::start();
    let ledger = tempfile::tempdir().unwrap();
    // Mining stops: the anchoring transaction sits in the mempool.
    assert_eq!(node.rpc("miner_stop", json!([])), json!(true));
    let gateway = Gateway::start(&hfs.url, &config(ledger.path(), &node, 1, 500));
    let stack = Stack { gateway, hfs };
    post_json(&stack, "/Patient", patient("Chain", "Stuck").to_string());
    wait_for(
        &stack.gateway,
        "waiting for mining",
        || {},
        |row| {
            row["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("not mined yet"))
        },
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stack
        .gateway
        .process
        .log()
        .contains("replacing it with higher fees")
    {
        assert!(Instant::now() < deadline, "{}", stack.gateway.process.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Mining resumes: the replacement (same nonce) is mined and nothing
    // is left pending behind it.
    assert_eq!(node.rpc("miner_start", json!([])), json!(true));
    wait_for(
        &stack.gateway,
        "anchored after the replacement",
        || {},
        anchors_caught_up,
    );
    let pool = node.rpc("txpool_content", json!([]));
    let pending = pool["pending"]
        .as_object()
        .map_or(0, |accounts| accounts.len());
    assert_eq!(pending, 0, "transactions left stuck: {pool}");
}
