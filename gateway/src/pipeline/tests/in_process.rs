//! The whole pipeline in process, in milliseconds: [`Gateway::handle`]
//! against a small upstream started inside the test (a hyper server on
//! 127.0.0.1 that answers what each test scripts and records what it
//! received). The e2e tests against real servers stay the reference; these
//! pin the steps' contracts where a real server cannot be made to misbehave
//! on cue.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::super::{Connection, Gateway};
use crate::config::{Config, XmlMode};

/// What the scripted upstream answers: status, headers, body.
type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>);

/// An upstream inside the test process.
struct ScriptedUpstream {
    base: String,
    /// (method, path and query, headers) of every request received.
    received: Arc<Mutex<Vec<(String, String, http::HeaderMap)>>>,
}

impl ScriptedUpstream {
    /// Serves `answer(method, path_and_query, body)` on a free port.
    async fn start(answer: impl Fn(&str, &str, &[u8]) -> Answer + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/fhir", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let log = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (answer, log) = (answer.clone(), log.clone());
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (answer, log) = (answer.clone(), log.clone());
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let target = parts.uri.path_and_query().unwrap().to_string();
                            log.lock().unwrap().push((
                                parts.method.to_string(),
                                target.clone(),
                                parts.headers,
                            ));
                            let (status, headers, bytes) =
                                answer(parts.method.as_str(), &target, &body);
                            let mut response = Response::new(Full::new(Bytes::from(bytes)));
                            *response.status_mut() = StatusCode::from_u16(status).unwrap();
                            for (name, value) in headers {
                                response.headers_mut().insert(name, value.parse().unwrap());
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
                );
            }
        });
        ScriptedUpstream { base, received }
    }

    fn paths(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(m, p, _)| format!("{m} {p}"))
            .collect()
    }
}

fn gateway(
    upstream: &ScriptedUpstream,
    ledger: Option<&std::path::Path>,
    extra: impl FnOnce(&mut Config),
) -> Arc<Gateway> {
    let mut config = Config::default();
    config.upstream.url = upstream.base.clone();
    // The scripted upstream has no CapabilityStatement to probe.
    config.upstream.xml = XmlMode::Native;
    match ledger {
        Some(dir) => {
            config.ledger.dir = dir.to_owned();
            config.ledger.checkpoint_interval_ms = 50;
        }
        None => config.ledger.seal_writes = false,
    }
    extra(&mut config);
    Arc::new(Gateway::new(config).unwrap())
}

async fn send(
    gateway: &Arc<Gateway>,
    request: http::request::Builder,
    body: &str,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let conn = Connection {
        peer: "127.0.0.1:50000".parse().unwrap(),
        tls: false,
        certificate_subject: None,
    };
    let response = gateway.clone().handle(request, conn).await;
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

fn get(path: &str) -> http::request::Builder {
    Request::get(format!("http://gw.test{path}")).header("host", "gw.test")
}

const PATIENT_V1: &str =
    r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"1"},"name":[{"family":"山田"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_is_relayed_with_upstream_urls_made_public() {
    let upstream = ScriptedUpstream::start(|_, _, _| {
        let base = "http://upstream.internal/fhir";
        let body = format!(r#"{{"resourceType":"Bundle","type":"searchset","link":[{{"relation":"self","url":"{base}/Patient?name=a"}}],"entry":[]}}"#);
        (200, vec![("content-type", "application/fhir+json".into())], body.into_bytes())
    })
    .await;
    let gw = gateway(&upstream, None, |c| {
        c.upstream.also_known_as = vec!["http://upstream.internal/fhir".into()]
    });
    let (status, headers, body) = send(
        &gw,
        get("/fhir/Patient?name=a").header("x-request-id", "rid-7"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-request-id"], "rid-7");
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        value["link"][0]["url"],
        "http://gw.test/fhir/Patient?name=a"
    );
    assert_eq!(upstream.paths(), ["GET /fhir/Patient?name=a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_base_and_dot_segments_never_reach_the_upstream() {
    let upstream = ScriptedUpstream::start(|_, _, _| (200, vec![], Vec::new())).await;
    let gw = gateway(&upstream, None, |_| {});
    let (status, _, body) = send(&gw, get("/elsewhere/Patient"), "").await;
    assert_eq!(status, 404);
    assert!(std::str::from_utf8(&body)
        .unwrap()
        .contains("OperationOutcome"));
    let (status, _, _) = send(&gw, get("/fhir/Patient/%2e%2e/secret"), "").await;
    assert_eq!(status, 400);
    assert!(upstream.paths().is_empty(), "{:?}", upstream.paths());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_answer_is_decoded_rewritten_and_encoded_again() {
    let upstream = ScriptedUpstream::start(|_, _, _| {
        let padding = "x".repeat(2000);
        let plain = format!(r#"{{"resourceType":"Patient","id":"p1","managingOrganization":{{"reference":"http://upstream.internal/fhir/Organization/1"}},"note":"{padding}"}}"#);
        let gzip = crate::coding::encode(crate::coding::Coding::Gzip, plain.as_bytes());
        let headers = vec![
            ("content-type", "application/fhir+json".into()),
            ("content-encoding", "gzip".into()),
        ];
        (200, headers, gzip)
    })
    .await;
    let gw = gateway(&upstream, None, |c| {
        c.upstream.also_known_as = vec!["http://upstream.internal/fhir".into()];
    });
    let request = get("/fhir/Patient/p1").header("accept-encoding", "gzip");
    let (status, headers, body) = send(&gw, request, "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-encoding"], "gzip");
    let plain = crate::coding::decode(crate::coding::Coding::Gzip, &body, 1 << 20).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(
        value["managingOrganization"]["reference"], "http://gw.test/fhir/Organization/1",
        "the compressed answer was looked into and rewritten"
    );
}

/// An upstream that stores what is created and can be made to alter it.
fn storing_upstream(
    stored: Arc<Mutex<String>>,
) -> impl Fn(&str, &str, &[u8]) -> Answer + Send + Sync + 'static {
    move |method, path, body| {
        let json = vec![("content-type", "application/fhir+json".into())];
        match (method, path) {
            ("POST", "/fhir/Patient") if body.starts_with(b"{") => {
                let mut headers = json;
                headers.push((
                    "location",
                    "http://upstream.internal/fhir/Patient/p1/_history/1".into(),
                ));
                headers.push(("etag", "W/\"1\"".into()));
                (201, headers, stored.lock().unwrap().clone().into_bytes())
            }
            ("POST", "/fhir/Patient") => (
                400,
                json,
                br#"{"resourceType":"OperationOutcome","issue":[]}"#.to_vec(),
            ),
            ("GET", p) if p.starts_with("/fhir/Patient/p1") => {
                let mut headers = json;
                headers.push(("etag", "W/\"1\"".into()));
                (200, headers, stored.lock().unwrap().clone().into_bytes())
            }
            _ => (
                404,
                json,
                br#"{"resourceType":"OperationOutcome","issue":[]}"#.to_vec(),
            ),
        }
    }
}

/// Whether every journal entry is closed within two seconds (closing is
/// applied in the appender's next group commit).
async fn journal_settles(gateway: &Gateway) -> bool {
    let store = gateway.sealer().unwrap().ledger().store();
    for _ in 0..200 {
        if store.open_intents().unwrap().is_empty() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_create_verifies_on_read_until_the_upstream_alters_it() {
    let stored = Arc::new(Mutex::new(PATIENT_V1.to_owned()));
    let upstream = ScriptedUpstream::start(storing_upstream(stored.clone())).await;
    let ledger = tempfile::tempdir().unwrap();
    let gw = gateway(&upstream, Some(ledger.path()), |c| {
        c.upstream.also_known_as = vec!["http://upstream.internal/fhir".into()];
    });
    let create = Request::post("http://gw.test/fhir/Patient")
        .header("host", "gw.test")
        .header("content-type", "application/fhir+json");
    let (status, headers, _) = send(&gw, create, r#"{"resourceType":"Patient"}"#).await;
    assert_eq!(status, 201);
    assert_eq!(headers["inkan-seal"], "sealed");
    assert_eq!(headers["inkan-leaf-index"], "0");
    assert!(headers.contains_key("repr-digest"));
    assert_eq!(
        headers["location"],
        "http://gw.test/fhir/Patient/p1/_history/1"
    );

    let (_, headers, _) = send(&gw, get("/fhir/Patient/p1"), "").await;
    assert_eq!(
        headers["inkan-verify"],
        "verified=1, tampered=0, unsealed=0, unchecked=0"
    );

    // An insider edits the stored row behind the gateway.
    *stored.lock().unwrap() = PATIENT_V1.replace("山田", "田中");
    let (_, headers, _) = send(&gw, get("/fhir/Patient/p1"), "").await;
    assert_eq!(
        headers["inkan-verify"],
        "verified=0, tampered=1, unsealed=0, unchecked=0"
    );
    let open = gw
        .sealer()
        .unwrap()
        .ledger()
        .store()
        .open_intents()
        .unwrap();
    assert!(open.is_empty(), "the journal entry was closed: {open:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_is_not_sealed_and_leaves_no_open_intent() {
    let upstream = ScriptedUpstream::start(storing_upstream(Arc::default())).await;
    let ledger = tempfile::tempdir().unwrap();
    let gw = gateway(&upstream, Some(ledger.path()), |_| {});
    let create = Request::post("http://gw.test/fhir/Patient")
        .header("host", "gw.test")
        .header("content-type", "application/x-www-form-urlencoded");
    let (status, headers, _) = send(&gw, create, "a=1").await;
    assert_eq!(status, 400);
    assert!(headers.get("inkan-seal").is_none());
    assert!(
        journal_settles(&gw).await,
        "the journal entry of a refused write is closed"
    );
    assert_eq!(gw.sealer().unwrap().ledger().store().size().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_xml_bridge_answers_xml_from_a_json_upstream() {
    let upstream = ScriptedUpstream::start(|_, _, _| {
        (
            200,
            vec![("content-type", "application/fhir+json".into())],
            PATIENT_V1.as_bytes().to_vec(),
        )
    })
    .await;
    let gw = gateway(&upstream, None, |c| c.upstream.xml = XmlMode::Bridge);
    let (status, headers, body) = send(
        &gw,
        get("/fhir/Patient/p1").header("accept", "application/fhir+xml"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/fhir+xml"));
    let xml = String::from_utf8(body.to_vec()).unwrap();
    assert!(xml.contains(r#"<family value="山田"/>"#), "{xml}");
    let received = upstream.received.lock().unwrap();
    assert_eq!(
        received[0].2["accept"], "application/fhir+json",
        "the upstream is asked for JSON"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_concurrency_limit_the_answer_is_503_with_retry_after() {
    let upstream = ScriptedUpstream::start(|_, _, _| (200, vec![], Vec::new())).await;
    let gw = gateway(&upstream, None, |c| c.limits.max_concurrent_requests = 0);
    let (status, headers, _) = send(&gw, get("/fhir/metadata"), "").await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");
    assert!(upstream.paths().is_empty());
}

/// The audit repository refuses one event (here: the one whose request id
/// says "poison"): the other events of its batch are still delivered, one
/// per transaction, and only the refused one waits in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_repository_refuses_does_not_hold_back_its_batch() {
    let upstream = ScriptedUpstream::start(|method, _, body| {
        if method == "GET" {
            let patient = PATIENT_V1.as_bytes().to_vec();
            return (200, vec![("content-type", "application/fhir+json".into())], patient);
        }
        let text = String::from_utf8_lossy(body);
        if text.contains("poison") {
            return (400, vec![], b"{}".to_vec());
        }
        let bundle: serde_json::Value = serde_json::from_slice(body).unwrap();
        let entries: Vec<serde_json::Value> = (0..bundle["entry"].as_array().unwrap().len())
            .map(|i| serde_json::json!({"response": {"status": "201", "location": format!("AuditEvent/r{i}-{}/_history/1", text.len())}}))
            .collect();
        let answer = serde_json::json!({"resourceType": "Bundle", "type": "transaction-response", "entry": entries});
        (200, vec![("content-type", "application/fhir+json".into())], answer.to_string().into_bytes())
    })
    .await;
    let ledger = tempfile::tempdir().unwrap();
    let gw = gateway(&upstream, Some(ledger.path()), |c| {
        c.audit.enabled = true;
        c.ledger.verify_reads = crate::config::VerifyReads::Off;
    });
    for request_id in ["rid-a", "rid-poison", "rid-b"] {
        let (status, _, _) = send(
            &gw,
            get("/fhir/Patient/p1").header("x-request-id", request_id),
            "",
        )
        .await;
        assert_eq!(status, 200);
    }
    let sealer = gw.sealer().unwrap();
    let repository = gw.audit_repository().unwrap();
    let round = crate::audit::deliver::deliver_round(sealer, repository, 10)
        .await
        .unwrap();
    assert_eq!((round.delivered, round.deferred), (2, 1));
    let posts = upstream
        .paths()
        .iter()
        .filter(|p| p.starts_with("POST"))
        .count();
    assert_eq!(posts, 4, "the batch of three, then each alone");
    let backlog = sealer.ledger().store().delivery_backlog().unwrap().0;
    assert_eq!(backlog, 1, "only the refused event waits");
}
