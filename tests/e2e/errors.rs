//! Every error the gateway itself produces is an OperationOutcome with the
//! right status, in the client's format.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::{assert_outcome, json, patient, Stack};
use inkan_e2e::client;

#[test]
fn upstream_stopped_mid_test_is_502_and_recovers() {
    let mut stack = Stack::start();
    let http = client();
    assert_eq!(
        http.get(stack.url("/metadata")).send().unwrap().status(),
        200
    );
    stack.hfs.stop();
    let response = http.get(stack.url("/Patient")).send().unwrap();
    assert_eq!(response.status(), 502);
    assert_outcome(&json(response), "transient");
    // XML clients get the XML form.
    let response = http
        .get(stack.url("/Patient"))
        .header("Accept", "application/fhir+xml")
        .send()
        .unwrap();
    assert_eq!(response.status(), 502);
    assert!(response
        .text()
        .unwrap()
        .contains("<code value=\"transient\"/>"));
    // A POST is never retried and gets the same clean answer.
    let response = crate::post_json(&stack, "/Patient", patient("Down", "Upstream").to_string());
    assert_eq!(response.status(), 502);

    let Stack { gateway, hfs } = stack;
    let _hfs = hfs.restart();
    assert_eq!(
        http.get(format!("{}/metadata", gateway.base))
            .send()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn frozen_upstream_is_504_after_the_response_timeout() {
    let hfs = inkan_e2e::Hfs::start();
    let gateway = inkan_e2e::Gateway::start_with_upstream_table(
        &hfs.url,
        "",
        "response_timeout_ms = 700\nidempotent_connect_retries = 0\n",
    );
    // A stopped (SIGSTOP) server accepts connections but never answers.
    hfs.process.signal("STOP");
    let started = Instant::now();
    let response = client()
        .get(format!("{}/Patient", gateway.base))
        .send()
        .unwrap();
    hfs.process.signal("CONT");
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_outcome(&json(response), "timeout");
}

#[test]
fn body_over_the_limit_is_413() {
    let stack = Stack::start_with("[limits]\nmax_request_body_bytes = 1024\n");
    let big = patient(&"x".repeat(4096), "Big").to_string();
    let response = crate::post_json(&stack, "/Patient", big);
    assert_eq!(response.status(), 413);
    assert_outcome(&json(response), "too-long");
}

#[test]
fn chunked_body_over_the_limit_is_413() {
    let stack = Stack::start_with("[limits]\nmax_request_body_bytes = 1024\n");
    let mut tcp = TcpStream::connect(("127.0.0.1", stack.gateway.port)).unwrap();
    let chunk = "y".repeat(800);
    let request = format!(
        "POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    tcp.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = tcp.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("OperationOutcome"), "{answer}");
}

#[test]
fn malformed_json_is_400_and_bad_charset_is_415() {
    let stack = Stack::start();
    let http = client();
    let response = crate::post_json(
        &stack,
        "/Patient",
        "{\"resourceType\": \"Patient\",".to_owned(),
    );
    assert_eq!(response.status(), 400);
    assert_outcome(&json(response), "structure");

    let response = http
        .post(stack.url("/Patient"))
        .header("Content-Type", "application/fhir+json; charset=koi8-r")
        .body(patient("Charset", "Bad").to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 415);
    assert_outcome(&json(response), "not-supported");
}

#[test]
fn paths_outside_the_base_are_404_outcomes() {
    let stack = Stack::start();
    for path in ["/", "/Patient", "/fhirx/Patient", "/-/nothing"] {
        let response = client()
            .get(format!("{}{path}", stack.gateway.origin))
            .send()
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert_outcome(&json(response), "not-found");
    }
}

#[test]
fn slow_body_is_cut_off_with_408() {
    let stack = Stack::start_with("[limits]\nclient_body_timeout_ms = 800\n");
    let mut tcp = TcpStream::connect(("127.0.0.1", stack.gateway.port)).unwrap();
    tcp.write_all(b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\nContent-Length: 100\r\n\r\n{\"resourceType\"")
        .unwrap();
    // ...and never send the rest.
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"timeout\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn slow_request_head_and_idle_connections_are_closed() {
    let stack = Stack::start_with("[limits]\nclient_idle_timeout_ms = 800\n");
    // A client that starts a request head and stalls.
    let mut stalled = TcpStream::connect(("127.0.0.1", stack.gateway.port)).unwrap();
    stalled
        .write_all(b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    // A client that connects and says nothing.
    let mut idle = TcpStream::connect(("127.0.0.1", stack.gateway.port)).unwrap();
    for tcp in [&mut stalled, &mut idle] {
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        let result = tcp.read_to_end(&mut rest);
        assert!(
            result.is_ok() || started.elapsed() < Duration::from_secs(9),
            "connection not closed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn overload_is_503_with_retry_after() {
    let hfs = inkan_e2e::Hfs::start();
    let gateway = inkan_e2e::Gateway::start_with_upstream_table(
        &hfs.url,
        "[limits]\nmax_concurrent_requests = 1\n",
        "response_timeout_ms = 5000\n",
    );
    // Freeze the upstream so one request holds the only permit.
    hfs.process.signal("STOP");
    let base = gateway.base.clone();
    let holder = std::thread::spawn(move || {
        client()
            .get(format!("{base}/Patient"))
            .send()
            .map(|r| r.status().as_u16())
    });
    std::thread::sleep(Duration::from_millis(500));
    let response = client()
        .get(format!("{}/Patient", gateway.base))
        .send()
        .unwrap();
    hfs.process.signal("CONT");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_outcome(&json(response), "throttled");
    assert_eq!(holder.join().unwrap().unwrap(), 200);
}
