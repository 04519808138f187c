//! End-to-end tests: real Helios FHIR Server, real `inkan` binary, real HTTP.
//! One test binary; modules named by purpose (ripgrep style).

// Tests report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod abuse;
mod access;
mod admin;
mod anchors;
mod audit;
mod chain;
mod clients;
mod compression;
mod errors;
mod formats;
mod identity;
mod japanese;
mod ledger_cli;
mod ledger_crash;
mod passthrough;
mod postgres;
mod rewriting;
mod scripts;
mod seal_crash;
mod sealing;
mod security;
mod transport;
mod upstreams;

use inkan_e2e::{Gateway, Hfs};
use serde_json::Value;

/// A fresh upstream and a gateway in front of it.
#[derive(Debug)]
pub struct Stack {
    pub gateway: Gateway,
    pub hfs: Hfs,
}

impl Stack {
    pub fn start() -> Stack {
        Stack::start_with("")
    }

    pub fn start_with(extra_toml: &str) -> Stack {
        let hfs = Hfs::start();
        let gateway = Gateway::start(&hfs.url, extra_toml);
        Stack { gateway, hfs }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.base)
    }
}

pub fn json(response: reqwest::blocking::Response) -> Value {
    let text = response.text().unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

pub fn patient(family: &str, given: &str) -> Value {
    serde_json::json!({
        "resourceType": "Patient",
        "name": [{"family": family, "given": [given]}],
        "gender": "female",
        "birthDate": "1970-01-01"
    })
}

/// GETs `path` under the gateway's base and parses the JSON answer.
pub fn get_json(stack: &Stack, path: &str) -> Value {
    json(inkan_e2e::client().get(stack.url(path)).send().unwrap())
}

/// POSTs FHIR JSON to `path` under the gateway's base.
pub fn post_json(stack: &Stack, path: &str, body: String) -> reqwest::blocking::Response {
    inkan_e2e::client()
        .post(stack.url(path))
        .header("Content-Type", "application/fhir+json")
        .body(body)
        .send()
        .unwrap()
}

/// Creates a resource through the gateway and returns it as stored.
pub fn create(stack: &Stack, resource: &Value) -> Value {
    let kind = resource["resourceType"].as_str().unwrap();
    let response = inkan_e2e::client()
        .post(stack.url(&format!("/{kind}")))
        .header("Content-Type", "application/fhir+json")
        .header("Prefer", "return=representation")
        .body(resource.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 201, "create {kind}");
    json(response)
}

/// Asserts an OperationOutcome body with the given issue code.
pub fn assert_outcome(body: &Value, code: &str) {
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    assert_eq!(body["issue"][0]["code"], code, "{body}");
}

/// One backend's row of `inkan anchors status --json` for `gateway`.
pub fn anchor_status(gateway: &Gateway, backend: &str) -> Value {
    let config = gateway.dir.path().join("inkan.toml");
    let out = inkan_e2e::run_inkan([
        "anchors".as_ref(),
        "status".as_ref(),
        "--json".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    let rows: Value = serde_json::from_str(&out).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["backend"] == backend)
        .cloned()
        .unwrap_or_else(|| panic!("no {backend} row in {rows}"))
}

/// Waits (up to a minute) until `check` holds for `backend`'s status row,
/// running `meanwhile` on every turn (e.g. mining a block).
pub fn wait_anchor_status(
    gateway: &Gateway,
    backend: &str,
    what: &str,
    mut meanwhile: impl FnMut(),
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let row = anchor_status(gateway, backend);
        if check(&row) {
            return row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {row}\n{}",
            gateway.process.log()
        );
        meanwhile();
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The backend holds a receipt for the latest checkpoint.
pub fn anchors_caught_up(row: &Value) -> bool {
    row["lagCheckpoints"] == 0 && row["lastAnchored"].is_u64()
}
