//! Who looked at what (issue 13): bearer tokens from a real OpenID
//! provider, SMART scopes, and one BALP AuditEvent per request, sealed
//! before the answer leaves and delivered to the audit repository. The
//! clinical upstream is HFS; the audit repository is sekmet-fhir (HFS
//! 0.2.7 serves AuditEvents read-only: it refuses to create them).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use inkan_e2e::{client, inkan_binary, Gateway, Hfs, OpenIdProvider, Sekmet, Upstream};

const RESOURCE: &str = "https://fhir.example-hospital.test/fhir";

fn ledger_and_audit(ledger: &Path, repository: &str) -> String {
    format!(
        "[ledger]\ndir = \"{}\"\norigin = \"e2e.test/inkan\"\ncheckpoint_interval_ms = 100\n[audit]\nenabled = true\ndelivery_interval_ms = 100\nrepository_url = \"{repository}\"\n",
        ledger.display()
    )
}

fn jwt_auth(issuer: &str) -> String {
    format!("[auth]\nmode = \"jwt\"\nissuer = \"{issuer}\"\naudience = [\"{RESOURCE}\"]\n")
}

fn token(op: &OpenIdProvider, scope: &str) -> String {
    let (status, answer) = op.client_credentials(scope);
    assert_eq!(status, 200, "{answer}");
    answer["access_token"].as_str().unwrap().to_owned()
}

fn request_id(response: &reqwest::blocking::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The AuditEvents in the repository whose X-Request-Id entity is
/// `request_id`, waiting up to `timeout` for `expected` of them.
fn delivered_events(
    repository: &str,
    request_id: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let events = all_events(repository)
            .into_iter()
            .filter(|e| request_id_of(e).as_deref() == Some(request_id))
            .collect::<Vec<_>>();
        if events.len() >= expected || Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn all_events(repository: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut url = format!("{repository}/AuditEvent?_count=500");
    loop {
        let page: Value = client().get(&url).send().unwrap().json().unwrap();
        for entry in page["entry"].as_array().into_iter().flatten() {
            events.push(entry["resource"].clone());
        }
        let next = page["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str());
        match next {
            Some(next) => url = next.to_owned(),
            None => return events,
        }
    }
}

fn request_id_of(event: &Value) -> Option<String> {
    event["entity"]
        .as_array()?
        .iter()
        .find(|e| e["type"]["code"] == "XrequestId")
        .and_then(|e| e["what"]["identifier"]["value"].as_str())
        .map(str::to_owned)
}

#[test]
fn a_token_holders_read_gets_one_balp_audit_event_that_is_delivered_sealed_and_provable() {
    let op = OpenIdProvider::start(RESOURCE);
    let hfs = Hfs::start();
    let repository = Upstream::Sekmet(Sekmet::start());
    let ledger = tempfile::tempdir().unwrap();
    let config = format!(
        "{}{}",
        ledger_and_audit(ledger.path(), repository.url()),
        jwt_auth(&op.issuer)
    );
    let gateway = Gateway::start(&hfs.url, &config);
    let http = client();
    let writer = token(&op, "system/*.cruds");
    let created = http
        .post(format!("{}/Patient", gateway.base))
        .bearer_auth(&writer)
        .header("Content-Type", "application/fhir+json")
        .body(crate::patient("Audit", "Hanako").to_string())
        .send()
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().unwrap());
    let id = created.headers()["location"]
        .to_str()
        .unwrap()
        .split("/Patient/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();

    // A reader with a patient-read scope reads the Patient.
    let reader = token(&op, "system/Patient.rs");
    let read = http
        .get(format!("{}/Patient/{id}", gateway.base))
        .bearer_auth(&reader)
        .send()
        .unwrap();
    assert_eq!(read.status(), 200);
    let read_id = request_id(&read);
    let events = delivered_events(repository.url(), &read_id, 1, Duration::from_secs(15));
    assert_eq!(events.len(), 1, "exactly one AuditEvent for the read");
    let event = &events[0];
    assert_eq!(
        event["meta"]["profile"][0],
        "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientRead"
    );
    assert_eq!(event["subtype"][0]["code"], "read");
    assert_eq!(event["action"], "R");
    assert_eq!(event["outcome"], "0");
    let agents = event["agent"].as_array().unwrap();
    let client_agent = agents
        .iter()
        .find(|a| a["who"]["identifier"]["value"] == OpenIdProvider::CLIENT.0)
        .unwrap_or_else(|| panic!("the client agent names the token's client_id: {event}"));
    assert_eq!(
        client_agent["who"]["identifier"]["system"],
        op.issuer.as_str()
    );
    assert!(
        client_agent.get("extension").is_none(),
        "verified claims: {event}"
    );
    assert!(
        agents
            .iter()
            .any(|a| a["who"]["display"] == "e2e.test/inkan"),
        "the gateway: {event}"
    );
    let entities = event["entity"].as_array().unwrap();
    assert!(entities
        .iter()
        .any(|e| e["what"]["reference"] == format!("Patient/{id}") && e["role"]["code"] == "4"));
    assert!(entities
        .iter()
        .any(|e| e["what"]["reference"] == format!("Patient/{id}") && e["role"]["code"] == "1"));

    // The record as the repository stores it (with its own id and meta).
    let event_id = event["id"].as_str().unwrap().to_owned();
    let stored = http
        .get(format!("{}/AuditEvent/{event_id}", repository.url()))
        .header("Accept", "application/fhir+json")
        .send()
        .unwrap()
        .text()
        .unwrap();
    // `$proof` through the gateway, like for any resource: the caller's
    // right to read the record is asked of the audit repository, which
    // holds it. The bundle verifies offline with the log key.
    let auditor = token(&op, "system/*.rs");
    let proof_url = format!("{}/AuditEvent/{event_id}/_history/1/$proof", gateway.base);
    let deadline = Instant::now() + Duration::from_secs(10);
    let bundle = loop {
        let response = http.get(&proof_url).bearer_auth(&auditor).send().unwrap();
        let status = response.status();
        let text = response.text().unwrap();
        if status == 200 {
            break text;
        }
        assert!(Instant::now() < deadline, "no proof: {status} {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let parsed: Value = serde_json::from_str(&bundle).unwrap();
    assert_eq!(parsed["kind"], "access");
    assert_eq!(parsed["resource"]["id"], event_id.as_str());
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("bundle.json"), &bundle).unwrap();
    std::fs::write(work.path().join("event.json"), &stored).unwrap();
    let key = std::fs::read_to_string(ledger.path().join("log.pub")).unwrap();
    let verify = Command::new(inkan_binary())
        .args(["verify", "--bundle"])
        .arg(work.path().join("bundle.json"))
        .arg("--resource")
        .arg(work.path().join("event.json"))
        .args(["--log-key", key.trim()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // A token without the scope is refused, and the refusal is recorded.
    let refused = http
        .get(format!("{}/Observation?patient={id}", gateway.base))
        .bearer_auth(&reader)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 403);
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    let refused_id = request_id(&refused);
    let outcome: Value = refused.json().unwrap();
    assert_eq!(outcome["issue"][0]["code"], "forbidden");
    let events = delivered_events(repository.url(), &refused_id, 1, Duration::from_secs(15));
    assert_eq!(events.len(), 1, "the refusal has its own AuditEvent");
    assert_eq!(events[0]["outcome"], "4");
    assert_eq!(events[0]["action"], "E");
    assert!(events[0]["outcomeDesc"]
        .as_str()
        .unwrap()
        .starts_with("HTTP 403"));

    // An access record edited in the repository's database is found by
    // the audit, like any tampered version.
    repository.alter_version("AuditEvent", &event_id, "1", &read_id, "someone-else");
    let report = ledger.path().join("audit-report.json");
    let audit = Command::new(inkan_binary())
        .arg("audit")
        .arg("--config")
        .arg(gateway.dir.path().join("inkan.toml"))
        .args(["--upstream", repository.url(), "--type", "AuditEvent"])
        .args(["--no-progress", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&audit.stdout);
    assert!(
        !audit.status.success(),
        "the audit fails on an edited access record: {stdout}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let tampered: Vec<&str> = report["tampered"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["reference"].as_str())
        .collect();
    assert_eq!(
        tampered,
        [format!("AuditEvent/{event_id}/_history/1")],
        "{stdout}"
    );
}

/// Hand-made tokens for what a provider would never issue: each refused
/// with 401, `WWW-Authenticate: Bearer error="invalid_token"` and an
/// OperationOutcome, and each refusal recorded.
#[test]
fn forged_expired_and_misdirected_tokens_are_refused_with_401() {
    use p256::ecdsa::signature::Signer;

    let hfs = Hfs::start();
    let repository = Sekmet::start();
    let work = tempfile::tempdir().unwrap();
    let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": "test-ec", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    });
    let jwks = work.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [jwk.clone()]}).to_string()).unwrap();
    let issuer = "https://issuer.example-hospital.test";
    let config = format!(
        "{}[auth]\nmode = \"jwt\"\nissuer = \"{issuer}\"\naudience = [\"{RESOURCE}\"]\njwks_file = \"{}\"\nleeway_seconds = 5\n",
        ledger_and_audit(&work.path().join("ledger"), &repository.url),
        jwks.display()
    );
    let gateway = Gateway::start(&hfs.url, &config);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |overrides: Value| {
        let mut claims = json!({
            "iss": issuer, "aud": RESOURCE, "exp": now + 300, "iat": now,
            "sub": "dr-sato", "client_id": "ward-app", "scope": "system/*.rs",
        });
        for (k, v) in overrides.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let encode = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let sign_es256 = |header: Value, claims: Value, with: &p256::ecdsa::SigningKey| {
        let input = format!("{}.{}", encode(&header), encode(&claims));
        let signature: p256::ecdsa::Signature = with.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    };
    let header = json!({"alg": "ES256", "kid": "test-ec", "typ": "at+jwt"});
    let good = sign_es256(header.clone(), claims(json!({})), &key);
    let other_key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let hs256 = {
        // HS256 keyed with the public key's JWK text: the confusion attack.
        let input = format!(
            "{}.{}",
            encode(&json!({"alg": "HS256", "kid": "test-ec"})),
            encode(&claims(json!({})))
        );
        let mac = hmac_sha256(jwk.to_string().as_bytes(), input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac))
    };
    let mut flipped = good.clone().into_bytes();
    let last = flipped.len() - 3;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            sign_es256(header.clone(), claims(json!({"exp": now - 120})), &key),
        ),
        (
            "not yet valid",
            sign_es256(header.clone(), claims(json!({"nbf": now + 120})), &key),
        ),
        (
            "wrong audience",
            sign_es256(
                header.clone(),
                claims(json!({"aud": "https://other.test/fhir"})),
                &key,
            ),
        ),
        (
            "wrong issuer",
            sign_es256(
                header.clone(),
                claims(json!({"iss": "https://evil.test"})),
                &key,
            ),
        ),
        ("bad signature", String::from_utf8(flipped).unwrap()),
        (
            "signed by another key",
            sign_es256(header.clone(), claims(json!({})), &other_key),
        ),
        (
            "unknown kid",
            sign_es256(
                json!({"alg": "ES256", "kid": "nobody"}),
                claims(json!({})),
                &other_key,
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                encode(&json!({"alg": "none"})),
                encode(&claims(json!({})))
            ),
        ),
        ("HS256 with the public key", hs256),
        ("not a JWT", "abc.def".to_owned()),
    ];
    let http = client();
    for (what, token) in &cases {
        let response = http
            .get(format!("{}/Patient", gateway.base))
            .bearer_auth(token)
            .send()
            .unwrap();
        assert_eq!(response.status(), 401, "{what}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        let outcome: Value = response.json().unwrap();
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{what}");
        assert_eq!(outcome["issue"][0]["code"], "login", "{what}");
    }
    // No token at all: 401 without an error code (RFC 6750 §3.1).
    let bare = http
        .get(format!("{}/Patient", gateway.base))
        .send()
        .unwrap();
    assert_eq!(bare.status(), 401);
    assert_eq!(bare.headers()["www-authenticate"], "Bearer realm=\"inkan\"");
    // The CapabilityStatement needs none (clients read it first).
    let metadata = http
        .get(format!("{}/metadata", gateway.base))
        .send()
        .unwrap();
    assert_eq!(metadata.status(), 200);
    // The well-formed token passes.
    let ok = http
        .get(format!("{}/Patient", gateway.base))
        .bearer_auth(&good)
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200, "{}", gateway.process.log());
    // Every one of those requests has its access record.
    let expected = cases.len() + 3;
    let deadline = Instant::now() + Duration::from_secs(15);
    while all_events(&repository.url).len() < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = all_events(&repository.url);
    assert_eq!(events.len(), expected);
    let refused = events.iter().filter(|e| e["outcome"] == "4").count();
    assert_eq!(refused, cases.len() + 1);
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    block[..key.len().min(64)].copy_from_slice(&key[..key.len().min(64)]);
    if key.len() > 64 {
        block = [0u8; 64];
        block[..32].copy_from_slice(&Sha256::digest(key));
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The audit repository down for a while under load: no client sees an
/// error, and every event arrives once it is back. Then `kill -9` under
/// load: every answered request's event is delivered after the restart.
#[test]
fn access_records_survive_a_repository_outage_and_a_killed_gateway() {
    let hfs = Hfs::start();
    let mut repository = Sekmet::start();
    let ledger = tempfile::tempdir().unwrap();
    let config = ledger_and_audit(ledger.path(), &repository.url);
    let gateway = Gateway::start(&hfs.url, &config);
    let created = client()
        .post(format!("{}/Patient", gateway.base))
        .header("Content-Type", "application/fhir+json")
        .body(crate::patient("Outage", "Taro").to_string())
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);

    repository.stop();
    let answered = read_in_parallel(&gateway.base, 4, 25);
    assert_eq!(
        answered.len(),
        100,
        "no client error while the repository is down"
    );
    let repository = repository.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    let delivered = loop {
        let ids: std::collections::HashSet<String> = all_events(&repository.url)
            .iter()
            .filter_map(request_id_of)
            .collect();
        if answered.iter().all(|id| ids.contains(id)) || Instant::now() > deadline {
            break ids;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let missing: Vec<&String> = answered
        .iter()
        .filter(|id| !delivered.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events not delivered after the outage",
        missing.len()
    );

    // kill -9 while requests are in flight.
    let base = gateway.base.clone();
    let load = std::thread::spawn(move || read_in_parallel(&base, 4, 50));
    std::thread::sleep(Duration::from_millis(300));
    gateway.process.signal("KILL");
    let answered = load.join().unwrap();
    assert!(
        !answered.is_empty(),
        "some reads were answered before the kill"
    );
    let _restarted = Gateway::start(&hfs.url, &config);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids: std::collections::HashSet<String> = all_events(&repository.url)
            .iter()
            .filter_map(request_id_of)
            .collect();
        let missing = answered.iter().filter(|id| !ids.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} answered requests have no delivered AuditEvent"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `threads` × `each` reads of the Patient search; the request ids of
/// the answered ones (any other status fails the test; a refused
/// connection after a kill ends that thread).
fn read_in_parallel(base: &str, threads: usize, each: usize) -> Vec<String> {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let base = base.to_owned();
            std::thread::spawn(move || {
                let http = client();
                let mut ids = Vec::new();
                for _ in 0..each {
                    let Ok(response) = http.get(format!("{base}/Patient?_count=5")).send() else {
                        break;
                    };
                    if response.status() != 200 {
                        break;
                    }
                    let id = request_id(&response);
                    // Only a complete answer counts as answered.
                    if response.bytes().is_ok() {
                        ids.push(id);
                    }
                }
                ids
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

#[test]
fn passthrough_records_token_claims_as_unverified() {
    let hfs = Hfs::start();
    let repository = Sekmet::start();
    let ledger = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&hfs.url, &ledger_and_audit(ledger.path(), &repository.url));
    let claims = URL_SAFE_NO_PAD.encode(
        json!({"sub": "dr-sato", "client_id": "ward-app", "iss": "https://id.test"}).to_string(),
    );
    let token = format!(
        "{}.{claims}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#)
    );
    let response = client()
        .get(format!("{}/Patient", gateway.base))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "passthrough: the upstream decides");
    let events = delivered_events(
        &repository.url,
        &request_id(&response),
        1,
        Duration::from_secs(15),
    );
    assert_eq!(events.len(), 1);
    let user = events[0]["agent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["requestor"] == true)
        .cloned()
        .expect("the user agent");
    assert_eq!(user["who"]["identifier"]["value"], "dr-sato");
    assert_eq!(
        user["extension"][0]["url"],
        "urn:inkan:audit:claims-unverified"
    );
    assert_eq!(user["extension"][0]["valueBoolean"], true);
}

/// A SMART standalone patient launch against the provider: the
/// authorization code flow with PKCE for the patient app, logged in as
/// `patient` (the provider's login_hint), redirects and cookies followed
/// by hand as a browser would. Returns the access token.
fn patient_launch(op: &OpenIdProvider, patient: &str, scope: &str) -> String {
    use sha2::{Digest, Sha256};
    const REDIRECT: &str = "http://127.0.0.1/callback";
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mut url = reqwest::Url::parse(&format!("{}/auth", op.issuer)).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", "inkan-patient-app")
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", &format!("openid {scope}"))
        .append_pair("resource", RESOURCE)
        .append_pair("login_hint", patient)
        .append_pair("state", "launch-1")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let mut cookies: std::collections::BTreeMap<String, String> = Default::default();
    let mut next = url.to_string();
    let code = 'follow: {
        for _ in 0..12 {
            let cookie_header = cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            let response = http
                .get(&next)
                .header("Cookie", cookie_header)
                .send()
                .unwrap();
            for set in response.headers().get_all("set-cookie") {
                let pair = set.to_str().unwrap().split(';').next().unwrap();
                if let Some((name, value)) = pair.split_once('=') {
                    cookies.insert(name.to_owned(), value.to_owned());
                }
            }
            assert!(
                response.status().is_redirection(),
                "{}: {}",
                response.status(),
                response.text().unwrap()
            );
            let location = response.headers()["location"].to_str().unwrap().to_owned();
            let location = match location.starts_with('/') {
                true => format!("{}{location}", op.issuer),
                false => location,
            };
            if location.starts_with(REDIRECT) {
                let url = reqwest::Url::parse(&location).unwrap();
                let code = url.query_pairs().find(|(k, _)| k == "code");
                break 'follow code
                    .unwrap_or_else(|| panic!("no code in {location}"))
                    .1
                    .into_owned();
            }
            next = location;
        }
        panic!(
            "the authorization flow did not reach the redirect URI:\n{}",
            op.process.log()
        );
    };
    let answer: Value = http
        .post(format!("{}/token", op.issuer))
        .basic_auth("inkan-patient-app", Some("inkan-patient-app-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"))
        .to_owned()
}

fn create_as(base: &str, token: &str, resource: &Value) -> String {
    let response = client()
        .post(format!(
            "{base}/{}",
            resource["resourceType"].as_str().unwrap()
        ))
        .bearer_auth(token)
        .header("Content-Type", "application/fhir+json")
        .body(resource.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().unwrap());
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let tail = location
        .rsplit_once(&format!("/{}/", resource["resourceType"].as_str().unwrap()))
        .unwrap()
        .1;
    tail.split('/').next().unwrap().to_owned()
}

/// A patient's own app (authorization code, patient context) sees that
/// patient's records and nobody else's; its reads are recorded under the
/// patient with the user from the token.
#[test]
fn a_patient_launch_token_sees_only_its_patients_compartment() {
    let op = OpenIdProvider::start(RESOURCE);
    let hfs = Hfs::start();
    let repository = Sekmet::start();
    let ledger = tempfile::tempdir().unwrap();
    let config = format!(
        "{}{}",
        ledger_and_audit(ledger.path(), &repository.url),
        jwt_auth(&op.issuer)
    );
    let gateway = Gateway::start(&hfs.url, &config);
    let system = token(&op, "system/*.cruds");
    let me = create_as(&gateway.base, &system, &crate::patient("Self", "Hanako"));
    let other = create_as(&gateway.base, &system, &crate::patient("Other", "Taro"));
    let observation = |patient: &str, value: u32| {
        json!({
            "resourceType": "Observation", "status": "final",
            "code": {"text": "body weight"},
            "subject": {"reference": format!("Patient/{patient}")},
            "valueQuantity": {"value": value, "unit": "kg"},
        })
    };
    let mine = create_as(&gateway.base, &system, &observation(&me, 50));
    let theirs = create_as(&gateway.base, &system, &observation(&other, 70));

    let app = patient_launch(&op, &me, "patient/Patient.rs patient/Observation.rs");
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(app.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["patient"], me.as_str(), "{claims}");
    assert_eq!(claims["fhirUser"], format!("Patient/{me}"));
    let get = |path: &str| {
        client()
            .get(format!("{}{path}", gateway.base))
            .bearer_auth(&app)
            .send()
            .unwrap()
    };
    assert_eq!(get(&format!("/Patient/{me}")).status(), 200);
    assert_eq!(get(&format!("/Observation/{mine}")).status(), 200);
    for refused in [
        format!("/Patient/{other}"),
        format!("/Observation/{theirs}"),
        format!("/Observation?patient={other}"),
        "/Observation?subject:Patient.name=Other".to_owned(),
        "/Condition?code=x".to_owned(),
        "/".to_owned(),
        format!("/Observation/{mine}?_elements=valueQuantity"),
    ] {
        let response = get(&refused);
        assert_eq!(response.status(), 403, "{refused}");
    }
    // Writes that cannot be checked before they happen are refused, and
    // the record is still there.
    let delete = client()
        .delete(format!("{}/Observation/{mine}", gateway.base))
        .bearer_auth(&app)
        .send()
        .unwrap();
    assert_eq!(delete.status(), 403);
    assert_eq!(get(&format!("/Observation/{mine}")).status(), 200);
    // An unpinned search is pinned to the patient: only their weight.
    let search: Value = get("/Observation").json().unwrap();
    let subjects: Vec<&str> = search["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["subject"]["reference"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, [format!("Patient/{me}")], "{search}");
    let patients: Value = get("/Patient").json().unwrap();
    assert_eq!(patients["entry"].as_array().unwrap().len(), 1, "{patients}");

    // The read of their own record names them as user and patient.
    let read = get(&format!("/Observation/{mine}"));
    let events = delivered_events(
        &repository.url,
        &request_id(&read),
        1,
        Duration::from_secs(15),
    );
    assert_eq!(events.len(), 1);
    let event = &events[0];
    let user = event["agent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["requestor"] == true)
        .cloned()
        .unwrap();
    assert_eq!(user["who"]["reference"], format!("Patient/{me}"));
    assert_eq!(user["who"]["identifier"]["value"], me.as_str());
    let patient_entity = event["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["role"]["code"] == "1")
        .cloned()
        .unwrap();
    assert_eq!(patient_entity["what"]["reference"], format!("Patient/{me}"));
}
