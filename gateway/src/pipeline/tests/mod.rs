//! Unit tests of the steps' pure parts, and the pipeline in process
//! against a small upstream started inside the test ([`in_process`]).

mod in_process;

use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request};

use super::facts::{Outgoing, RequestFacts, ResponsePlan};
use super::forward::replace_format_param;
use super::observe::query_names;
use super::route::check_path_segments;
use super::{Connection, Gateway};
use crate::config::Config;
use crate::fhir::format::Wanted;
use crate::fhir::interaction::Interaction;
use crate::japanese::TextReport;

#[test]
fn paths_that_could_resolve_elsewhere_upstream_are_refused() {
    #[rustfmt::skip]
    let cases: &[(&str, bool)] = &[
        ("/fhir/Patient/1",                    true),
        ("/fhir/Patient/1/_history/2",          true),
        ("/fhir/",                              true),
        ("/fhir/Patient/$proof",                true),
        ("/fhir/../-/metrics",                  false),
        ("/fhir/Patient/..",                    false),
        ("/fhir/Patient/./1",                   false),
        ("/fhir/Patient/%2e%2e/secret",         false),
        ("/fhir/Patient/%2E./secret",           false),
        ("/fhir/Patient;jsessionid=1/1",        false),
        ("/fhir/Patient/1%2f..%2fsecret",       false),
        ("/fhir/Patient/1%5c..",                false),
        ("/fhir//Patient/1",                    false),
        ("/fhir/Patient/a%00b",                 false),
    ];
    for (path, allowed) in cases {
        assert_eq!(check_path_segments(path).is_ok(), *allowed, "{path}");
    }
}

#[test]
fn format_param_is_replaced_everywhere() {
    assert_eq!(
        replace_format_param("a=1&_format=xml&b=2", "json"),
        "a=1&_format=json&b=2"
    );
    assert_eq!(replace_format_param("a=1", "json"), "a=1");
    assert_eq!(
        replace_format_param("_format=json", "application/fhir+xml"),
        "_format=application%2Ffhir%2Bxml"
    );
}

#[test]
fn logs_carry_query_names_not_values() {
    assert_eq!(
        query_names(Some("name=%E5%B1%B1%E7%94%B0&birthdate=1970")),
        "name,birthdate"
    );
    assert_eq!(query_names(None), "");
}

#[test]
fn search_parameter_types_come_from_the_upstream_else_from_r4() {
    let gateway = gateway(|_| {});
    // The upstream declared nothing: the R4 definitions answer.
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("/Patient", "family", Some("string")),
        ("/Patient/_search", "birthdate", Some("date")),
        ("/Observation", "code", Some("token")),
        ("/Observation", "subject", Some("reference")),
        ("/Patient", "_lastUpdated", Some("date")),
        ("/Patient", "no-such-parameter", None),
    ];
    for (path, name, expected) in cases {
        assert_eq!(
            gateway.search_param_type(path, name).as_deref(),
            *expected,
            "{path} {name}"
        );
    }
    // What the upstream declares wins.
    gateway.learn_search_param_types(&serde_json::json!({"rest": [{"resource": [
        {"type": "Patient", "searchParam": [{"name": "family", "type": "token"}]}
    ]}]}));
    assert_eq!(
        gateway.search_param_type("/Patient", "family").as_deref(),
        Some("token")
    );
}

fn gateway(extra: impl FnOnce(&mut Config)) -> Gateway {
    let mut config = Config::default();
    config.upstream.url = "http://127.0.0.1:9/fhir".into();
    // No ledger: these tests need none.
    config.ledger.seal_writes = false;
    extra(&mut config);
    Gateway::new(config).unwrap()
}

fn facts(bridge: bool) -> RequestFacts {
    RequestFacts {
        request_id: "rid-1".into(),
        started: Instant::now(),
        started_unix: 0,
        conn: Connection {
            peer: "192.0.2.1:4000".parse().unwrap(),
            tls: false,
            certificate_subject: None,
        },
        method: Method::GET,
        fhir_path: "/Patient".into(),
        query: None,
        interaction: Interaction::SearchType,
        wanted: if bridge { Wanted::Xml } else { Wanted::Json },
        client_format_param: None,
        public_base: "http://gw/fhir".into(),
        client_accept_encoding: http::HeaderMap::new(),
    }
}

fn plan(bridge: bool) -> ResponsePlan {
    ResponsePlan {
        bridge_response: bridge,
        ..ResponsePlan::default()
    }
}

fn outgoing(query: Option<&str>) -> Outgoing {
    Outgoing {
        body: Bytes::new(),
        content_type: None,
        query: query.map(str::to_owned),
        text_report: TextReport::default(),
    }
}

fn parts(headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = Request::get("http://gw/fhir/Patient");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

#[test]
fn authorization_passes_through_by_default_and_multi_values_survive() {
    let gw = gateway(|_| {});
    let request = gw
        .upstream_request(
            parts(&[
                ("authorization", "Bearer client-token"),
                ("if-match", "W/\"1\""),
                ("if-match", "W/\"2\""),
                ("connection", "close"),
                ("te", "trailers"),
            ]),
            &outgoing(Some("name=a&_count=2")),
            &facts(false),
            &plan(false),
        )
        .unwrap();
    assert_eq!(
        request.uri(),
        "http://127.0.0.1:9/fhir/Patient?name=a&_count=2"
    );
    assert_eq!(request.headers()["authorization"], "Bearer client-token");
    assert_eq!(request.headers().get_all("if-match").iter().count(), 2);
    assert!(request.headers().get("connection").is_none());
    assert!(request.headers().get("te").is_none());
    assert_eq!(request.headers()["x-forwarded-for"], "192.0.2.1");
    assert_eq!(request.headers()["x-request-id"], "rid-1");
}

#[test]
fn gateway_token_replaces_the_client_authorization() {
    let temp = tempfile::tempdir().unwrap();
    let token = temp.path().join("token");
    std::fs::write(&token, "gateway-secret\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let gw = gateway(|c| c.upstream.bearer_token_file = Some(token.clone()));
    let request = gw
        .upstream_request(
            parts(&[("authorization", "Bearer client-token")]),
            &outgoing(None),
            &facts(false),
            &plan(false),
        )
        .unwrap();
    assert_eq!(request.headers()["authorization"], "Bearer gateway-secret");
}

#[test]
fn bridged_requests_ask_the_upstream_for_json() {
    let gw = gateway(|_| {});
    let request = gw
        .upstream_request(
            parts(&[("accept", "application/fhir+xml")]),
            &outgoing(Some("name=a&_format=xml")),
            &facts(true),
            &plan(true),
        )
        .unwrap();
    assert_eq!(
        request.uri(),
        "http://127.0.0.1:9/fhir/Patient?name=a&_format=json"
    );
    assert_eq!(request.headers()["accept"], "application/fhir+json");
}
