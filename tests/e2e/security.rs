//! A hostile network: seal operations bound to what the caller may read,
//! checked against an upstream that really enforces authorization (nginx
//! in front of HFS, admitting bearer tokens per path).

use std::time::{Duration, Instant};

use inkan_e2e::{client, write_private, AuthzNginx, Gateway, Hfs};
use serde_json::Value;

const LEDGER: &str = "[ledger]\ndir = \"ledger\"\norigin = \"e2e.test/inkan\"\ncheckpoint_interval_ms = 100\nseal_writes = true\n[limits]\nverify_requests_per_minute = 5\n";

/// Who may read what: `reader-a` all of Patient/authz-a, `reader-a-v1`
/// only its first version. `writer` may do anything.
const RULES: &[(&str, &str)] = &[
    ("reader-a", "/Patient/authz-a(/_history/[0-9]+)?$"),
    ("reader-a-v1", "/Patient/authz-a/_history/1$"),
];

fn put(gateway: &Gateway, id: &str, family: &str, token: Option<&str>) {
    let body =
        serde_json::json!({"resourceType": "Patient", "id": id, "name": [{"family": family}]});
    let mut request = client()
        .put(format!("{}/Patient/{id}", gateway.base))
        .header("content-type", "application/fhir+json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(response.headers()["inkan-seal"], "sealed");
}

fn get(gateway: &Gateway, path: &str, token: Option<&str>) -> reqwest::blocking::Response {
    let mut request = client().get(format!("{}{path}", gateway.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().unwrap()
}

fn verify(gateway: &Gateway, resource: &Value, token: Option<&str>) -> reqwest::blocking::Response {
    let mut request = client()
        .post(format!("{}/$verify", gateway.base))
        .header("content-type", "application/fhir+json")
        .body(resource.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().unwrap()
}

/// Waits until a checkpoint covers what was written (the writer's `$proof`
/// of `path` answers 200).
fn wait_for_proof(gateway: &Gateway, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(gateway, path, Some("writer")).status() != 200 {
        assert!(Instant::now() < deadline, "no proof for {path}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// `$proof` answered anyone, salt included, and `$verify` was an unlimited
// oracle. Now the upstream, asked with the caller's own credentials,
// decides; its 401/403/404 is relayed and nothing of the seal leaks.
#[test]
fn proof_and_verify_answer_only_callers_the_upstream_lets_read_that_version() {
    let hfs = Hfs::start();
    let nginx = AuthzNginx::start(&hfs.url, RULES);
    let gateway = Gateway::start(&nginx.url, LEDGER);
    put(&gateway, "authz-a", "Yamada", Some("writer"));
    put(&gateway, "authz-a", "Tanaka", Some("writer"));
    put(&gateway, "authz-b", "Suzuki", Some("writer"));
    wait_for_proof(&gateway, "/Patient/authz-a/_history/2/$proof");
    wait_for_proof(&gateway, "/Patient/authz-b/_history/1/$proof");

    let v1 = "/Patient/authz-a/_history/1/$proof";
    let v2 = "/Patient/authz-a/_history/2/$proof";
    let current = "/Patient/authz-a/$proof";
    let other = "/Patient/authz-b/_history/1/$proof";
    #[rustfmt::skip]
    let cases: &[(Option<&str>, &str, u16)] = &[
        (None,                v1,      401),
        (Some("stranger"),    v1,      403),
        (Some("reader-a"),    v1,      200),
        (Some("reader-a"),    v2,      200),
        (Some("reader-a"),    current, 200),
        (Some("reader-a"),    other,   403),
        (Some("reader-a-v1"), v1,      200),
        (Some("reader-a-v1"), v2,      403),
        (Some("reader-a-v1"), current, 403),
    ];
    for (token, path, expected) in cases {
        let response = get(&gateway, path, *token);
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        assert_eq!(status, *expected, "{token:?} {path}: {text}");
        if *expected == 200 {
            assert!(text.contains("\"salt\""), "{text}");
        } else {
            assert!(!text.contains("salt"), "{token:?} {path}: {text}");
            let outcome: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(outcome["resourceType"], "OperationOutcome", "{text}");
        }
    }

    // `$verify` only about versions the caller may read.
    let version = |n: u32| -> Value {
        crate::json(get(
            &gateway,
            &format!("/Patient/authz-a/_history/{n}"),
            Some("writer"),
        ))
    };
    let (first, second) = (version(1), version(2));
    assert_eq!(verify(&gateway, &first, None).status(), 401);
    assert_eq!(verify(&gateway, &second, Some("reader-a-v1")).status(), 403);
    let allowed = verify(&gateway, &first, Some("reader-a-v1"));
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["inkan-verify"], "verified");

    // ... and rate-limited per caller (5 a minute in this configuration).
    let statuses: Vec<u16> = (0..6)
        .map(|_| verify(&gateway, &first, Some("reader-a")).status().as_u16())
        .collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429], "{statuses:?}");
}

// With a gateway token configured for the upstream, the seal operations
// must still not be decided with it: an anonymous caller gets the
// upstream's 401, though the gateway's own token could read everything.
#[test]
fn proof_is_never_decided_with_the_gateways_own_upstream_token() {
    let hfs = Hfs::start();
    let nginx = AuthzNginx::start(&hfs.url, RULES);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("upstream.token");
    write_private(&token_file, b"writer\n");
    let gateway = Gateway::start_with_upstream_table(
        &nginx.url,
        LEDGER,
        &format!("bearer_token_file = \"{}\"\n", token_file.display()),
    );
    // The write goes upstream with the gateway's token.
    put(&gateway, "authz-a", "Yamada", None);
    let path = "/Patient/authz-a/_history/1/$proof";
    wait_for_proof(&gateway, path);
    assert_eq!(get(&gateway, path, None).status(), 401);
    assert_eq!(get(&gateway, path, Some("reader-a")).status(), 200);
}

// Whoever edits the upstream's database could talk verify-on-read around:
// a row rolled back to an older *sealed* version read `verified`, and a
// sealed resource erased from the database was a plain 404. In `annotate`
// both are reported; in `block` both are withheld.
#[test]
fn a_rollback_to_an_older_sealed_version_and_an_erased_record_are_caught() {
    for block in [false, true] {
        let hfs = Hfs::start();
        let mode = if block { "block" } else { "annotate" };
        let config = format!(
            "[ledger]\ndir = \"ledger\"\norigin = \"e2e.test/inkan\"\nseal_writes = true\nverify_reads = \"{mode}\"\n"
        );
        let gateway = Gateway::start(&hfs.url, &config);
        put(&gateway, "roll", "Yamada", None);
        put(&gateway, "roll", "Tanaka", None);
        put(&gateway, "erased", "Suzuki", None);
        // Seals settle (a read racing its own write is not a rollback).
        std::thread::sleep(Duration::from_millis(1100));
        let current = get(&gateway, "/Patient/roll", None);
        assert_eq!(
            current.headers()["inkan-verify"],
            "verified=1, tampered=0, unsealed=0, unchecked=0"
        );

        inkan_e2e::hfs_db::roll_back(&hfs.database, "Patient", "roll", "1");
        inkan_e2e::hfs_db::erase_resource(&hfs.database, "Patient", "erased");
        for path in ["/Patient/roll", "/Patient/erased"] {
            let response = get(&gateway, path, None);
            if block {
                assert_eq!(response.status(), 502, "{path}");
                crate::assert_outcome(&crate::json(response), "security");
            } else {
                assert!(
                    response.headers()["inkan-verify"]
                        .to_str()
                        .unwrap()
                        .contains("tampered=1"),
                    "{path}: {:?}",
                    response.headers().get("inkan-verify")
                );
            }
        }
    }
}
