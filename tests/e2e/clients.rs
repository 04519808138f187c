//! The FHIR client libraries integration teams actually use, with their
//! own defaults (every one of them sends `Accept-Encoding: gzip, deflate`),
//! driving the gateway in front of each real upstream: fhirpy 2.3.1 and
//! fhirclient 4.4.0 (Python, on requests) and fhir-kit-client 2.0.3
//! (Node.js, on fetch). Installed pinned by scripts/install-clients.sh; the
//! scenario scripts are tests/clients/*; each prints one JSON report that
//! the assertions here read.
//!
//! Scenario: create, read, update with If-Match (and a stale one), a paged
//! search followed with the library's own paging to the end, a transaction
//! with `urn:uuid` references posted to `[base]/`, history, delete, and XML
//! reads.

use std::path::PathBuf;
use std::process::Command;

use inkan_e2e::{Gateway, Upstream, UpstreamKind};
use serde_json::Value;

#[derive(Debug, Clone, Copy)]
enum Library {
    Fhirpy,
    Fhirclient,
    FhirKitClient,
}

/// `KEY=path` lines of scripts/install-clients.sh (cached: instant once
/// installed), unless scripts/test.sh already exported them.
fn client_env(key: &str) -> String {
    if let Ok(value) = std::env::var(key) {
        return value;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/install-clients.sh"))
        .output()
        .expect("scripts/install-clients.sh runs");
    assert!(
        out.status.success(),
        "scripts/install-clients.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")).map(str::to_owned))
        .unwrap_or_else(|| panic!("scripts/install-clients.sh printed no {key}"))
}

fn run(library: Library, base: &str) -> Value {
    let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients");
    let mut command = match library {
        Library::Fhirpy | Library::Fhirclient => {
            let mut command = Command::new(client_env("INKAN_CLIENT_PYTHON"));
            command
                .arg(scripts.join("python_client.py"))
                .arg(base)
                .arg("--lib")
                .arg(match library {
                    Library::Fhirpy => "fhirpy",
                    _ => "fhirclient",
                });
            command
        }
        Library::FhirKitClient => {
            let mut command = Command::new(client_env("INKAN_CLIENT_NODE"));
            command
                .arg(scripts.join("node_client.mjs"))
                .arg(base)
                .arg("--node-modules")
                .arg(client_env("INKAN_CLIENT_NODE_MODULES"));
            command
        }
    };
    let out = command.output().expect("the client script runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{library:?}: no JSON report ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && report["errors"].as_array().is_some_and(Vec::is_empty),
        "{library:?}: {}\n{}",
        report["errors"],
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

fn drives_the_gateway(library: Library, kind: UpstreamKind) {
    let upstream = Upstream::start(kind);
    let gateway = Gateway::start(upstream.url(), "");
    let base = gateway.base.as_str();
    let report = run(library, base);
    let context = format!("{library:?} via {kind:?}");
    let text = report.to_string();
    assert!(
        !upstream.leaks_into(&text),
        "{context}: an upstream URL reached the client library"
    );

    // The library's defaults, as it sent them.
    let accept_encoding = report["request_accept_encoding"].as_str().unwrap_or("");
    assert!(
        accept_encoding.contains("gzip"),
        "{context}: {accept_encoding}"
    );
    if upstream.quirks().compresses {
        assert_eq!(
            report["read_headers"]["content-encoding"], "gzip",
            "{context}: the client asked for gzip and the upstream compresses"
        );
    }

    // Sealed on the way in, verified on the way out.
    assert_eq!(report["create_status"], 201, "{context}");
    assert!(
        report["create_headers"]["inkan-seal"]
            .as_str()
            .is_some_and(|s| s.starts_with("sealed")),
        "{context}: {}",
        report["create_headers"]
    );
    assert!(
        report["location"].as_str().unwrap().starts_with(base),
        "{context}"
    );
    assert_eq!(report["read_status"], 200, "{context}");
    assert_eq!(
        report["read_headers"]["inkan-verify"], "verified=1, tampered=0, unsealed=0, unchecked=0",
        "{context}"
    );
    assert_eq!(report["read_family"], "山田", "{context}");

    assert_eq!(report["update_status"], 200, "{context}");
    assert_eq!(report["stale_update_status"], 412, "{context}");

    // Paging with the library's own helper, to the end.
    let next_links = report["next_links"].as_array().unwrap();
    assert!(!next_links.is_empty(), "{context}: no paging happened");
    assert!(
        next_links
            .iter()
            .all(|l| l.as_str().unwrap().starts_with(base)),
        "{context}: {next_links:?}"
    );
    assert_eq!(report["total_seen"], report["search_created"], "{context}");
    for page in report["search_headers"].as_array().unwrap() {
        let verify = page["inkan-verify"].as_str().unwrap_or("");
        assert!(
            verify.contains("tampered=0") && verify.contains("unchecked=0"),
            "{context}: {verify}"
        );
    }

    // A transaction to `[base]/`, references resolved, both entries sealed.
    assert!(
        report["transaction_url"]
            .as_str()
            .unwrap()
            .ends_with("/fhir/"),
        "{context}: {}",
        report["transaction_url"]
    );
    assert_eq!(report["transaction_status"], 200, "{context}");
    assert!(
        report["transaction_headers"]["inkan-seal"]
            .as_str()
            .is_some_and(|s| s.starts_with("sealed")),
        "{context}"
    );
    assert_eq!(report["observation_subject_matches"], true, "{context}");

    assert_eq!(report["history_count"], 2, "{context}");
    assert_eq!(report["deleted_status"], 410, "{context}");

    // XML, as the library fetches it raw.
    assert_eq!(report["xml_read_status"], 200, "{context}");
    assert!(
        report["xml_read_headers"]["content-type"]
            .as_str()
            .is_some_and(|ct| ct.starts_with("application/fhir+xml")),
        "{context}"
    );
    assert_eq!(report["xml_read_has_family"], true, "{context}");
    assert_eq!(
        report["xml_read_headers"]["inkan-verify"],
        "verified=1, tampered=0, unsealed=0, unchecked=0",
        "{context}"
    );
}

macro_rules! every_library_on_every_upstream {
    ($($test:ident: $library:ident on $kind:ident),* $(,)?) => {
        $(#[test] fn $test() { drives_the_gateway(Library::$library, UpstreamKind::$kind) })*
    };
}

every_library_on_every_upstream!(
    fhirpy_on_hfs: Fhirpy on Hfs,
    fhirpy_on_sekmet: Fhirpy on Sekmet,
    fhirclient_on_hfs: Fhirclient on Hfs,
    fhirclient_on_sekmet: Fhirclient on Sekmet,
    fhir_kit_client_on_hfs: FhirKitClient on Hfs,
    fhir_kit_client_on_sekmet: FhirKitClient on Sekmet,
);
