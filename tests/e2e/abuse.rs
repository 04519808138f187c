//! An HTTP abuse suite against the real binary: each hostile request gets a
//! clear status (or the connection is closed), the gateway stays up, and a
//! normal request is served right after.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use inkan_e2e::{client, Gateway, Hfs};

/// Sends raw bytes on a fresh connection and returns what came back
/// before the server closed it or `wait` passed.
fn raw(gateway: &Gateway, bytes: &[u8], wait: Duration) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    tcp.set_read_timeout(Some(wait)).unwrap();
    let _ = tcp.write_all(bytes);
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status line's code, or 0 when the server closed without answering.
fn status_of(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn still_serves(gateway: &Gateway) {
    let response = client()
        .get(format!("{}/metadata", gateway.base))
        .send()
        .expect("the gateway must still be up");
    assert_eq!(response.status(), 200);
}

#[test]
fn smuggling_dot_segments_and_header_floods_get_clear_answers_and_the_gateway_stays_up() {
    let hfs = Hfs::start();
    let gateway = Gateway::start(&hfs.url, "");
    let flood: String = (0..20_000)
        .map(|i| format!("X-Flood-{i}: {i}\r\n"))
        .collect();
    let long_value = "a".repeat(200_000);
    let request_line = |line: &str| format!("{line}\r\nHost: x\r\n\r\n");
    // (what, request, acceptable answers; 0 = closed without an answer)
    #[rustfmt::skip]
    let cases: Vec<(&str, String, &[u16])> = vec![
        ("CL and TE together",        "POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /fhir/metadata HTTP/1.1\r\nHost: x\r\n\r\n".into(), &[400, 0]),
        ("duplicate Content-Length",  "POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\n{}{}".into(), &[400, 0]),
        ("obs-fold",                  "GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n".into(), &[400, 0]),
        ("bare LF line endings",      "GET /fhir/metadata HTTP/1.1\nHost: x\n\n".into(), &[200, 400, 0]),
        ("dot segments",              request_line("GET /fhir/../-/metrics HTTP/1.1"), &[400]),
        ("encoded dot segments",      request_line("GET /fhir/Patient/%2e%2e/%2e%2e/metadata HTTP/1.1"), &[400]),
        ("';' path parameter",        request_line("GET /fhir/Patient;x=1/1 HTTP/1.1"), &[400]),
        ("absolute-form target",      request_line("GET http://evil.example/fhir/metadata HTTP/1.1"), &[200, 400]),
        ("20,000 headers",            format!("GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n{flood}\r\n"), &[431, 400, 0]),
        ("a 200 KB header value",     format!("GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nX-Long: {long_value}\r\n\r\n"), &[431, 400, 0]),
    ];
    for (what, request, acceptable) in &cases {
        let answer = raw(&gateway, request.as_bytes(), Duration::from_secs(3));
        let status = status_of(&answer);
        // Shown with --nocapture: the answers the closing notes report.
        eprintln!("abuse case {what:?}: {status}");
        assert!(
            acceptable.contains(&status),
            "{what}: answered {status}:\n{}",
            answer.lines().next().unwrap_or("")
        );
        if status == 400 && answer.contains("\r\n\r\n{") {
            assert!(answer.contains("OperationOutcome"), "{what}: {answer}");
        }
        still_serves(&gateway);
    }
    // The gateway never asked the upstream for a path outside the base.
    assert!(
        !hfs.process.log().contains("-/metrics"),
        "a dot-segment path reached the upstream"
    );
}

// Admission permits were taken before the body was read: a few slow bodies
// held them all and everyone else got 503.
#[test]
fn trickled_bodies_hold_no_permit_and_slow_heads_are_cut_off() {
    let hfs = Hfs::start();
    let gateway = Gateway::start(
        &hfs.url,
        "[limits]\nmax_concurrent_requests = 1\nmax_bodies_in_progress = 2\nclient_idle_timeout_ms = 1000\nclient_body_timeout_ms = 5000\n",
    );
    // Two clients trickle a body (declared 1000 bytes, 10 sent).
    let mut tricklers: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut tcp = TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
            tcp.write_all(b"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\nContent-Length: 1000\r\n\r\n{\"resourc")
                .unwrap();
            tcp
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile, normal requests are served, not refused with 503.
    for _ in 0..3 {
        still_serves(&gateway);
    }
    // Bodies have their own bound (2 here): a third body is refused at once
    // instead of adding to the memory the tricklers hold.
    let third = client()
        .post(format!("{}/Patient", gateway.base))
        .header("content-type", "application/fhir+json")
        .body(r#"{"resourceType":"Patient"}"#)
        .send()
        .unwrap();
    assert_eq!(third.status(), 503);
    // A slowloris head (never finished) is closed after the idle timeout.
    let mut slow = TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    slow.write_all(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = slow.read(&mut buf).is_ok();
    assert!(
        closed && started.elapsed() < Duration::from_secs(4),
        "slow head not cut off"
    );
    for trickler in &mut tricklers {
        let _ = trickler.write_all(b"e");
    }
    still_serves(&gateway);
}

// No cap on open connections: a flood of idle connections cost a file
// descriptor and a task each. Past `max_connections` the gateway stops
// accepting until one closes.
#[test]
fn connections_past_the_cap_wait_until_one_closes() {
    let hfs = Hfs::start();
    let gateway = Gateway::start(&hfs.url, "[limits]\nmax_connections = 2\n");
    let first = TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    let _second = TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let waiting = std::thread::spawn({
        let port = gateway.port;
        move || {
            let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
            tcp.write_all(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let started = Instant::now();
            let mut answer = String::new();
            let _ = tcp.read_to_string(&mut answer);
            (started.elapsed(), status_of(&answer))
        }
    });
    std::thread::sleep(Duration::from_millis(1000));
    drop(first);
    let (waited, status) = waiting.join().unwrap();
    assert_eq!(status, 200, "served once a slot was free");
    assert!(
        waited >= Duration::from_millis(700),
        "served while over the cap ({waited:?})"
    );
}

/// HTTP/2 with prior knowledge: a connection and its driver task.
async fn h2_connect(port: u16) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

// An HTTP/2 stream reset dropped the request's future midway and the
// in-flight gauge never came down; a burst of resets must not take the
// gateway down either.
#[test]
fn h2_resets_never_leak_in_flight_counts_and_a_rapid_reset_burst_is_survived() {
    let hfs = Hfs::start();
    // Every sealed write pauses 1.5 s between the upstream's commit and the
    // seal: a reset lands while the request is in the pipeline.
    let gateway = Gateway::start_with_env(
        &hfs.url,
        "[ledger]\ndir = \"ledger\"\nseal_writes = true\n",
        &[("INKAN_FAULT_SEAL_DELAY_MS", "1500")],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let port = gateway.port;
    runtime.block_on(async move {
        let mut send = h2_connect(port).await;
        for _ in 0..3 {
            let request = http::Request::post(format!("http://127.0.0.1:{port}/fhir/Patient"))
                .header("content-type", "application/fhir+json")
                .body(())
                .unwrap();
            send = send.ready().await.unwrap();
            let (_response, mut stream) = send.send_request(request, false).unwrap();
            stream
                .send_data(
                    bytes::Bytes::from_static(br#"{"resourceType":"Patient"}"#),
                    true,
                )
                .unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            stream.send_reset(h2::Reason::CANCEL);
        }
    });
    let in_flight = |metrics: &str| -> String {
        metrics
            .lines()
            .find(|l| l.starts_with("inkan_http_in_flight_requests "))
            .unwrap_or("")
            .to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let gauge = in_flight(&gateway.metrics());
        if gauge == "inkan_http_in_flight_requests 0" {
            break;
        }
        assert!(Instant::now() < deadline, "in-flight gauge stuck: {gauge}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A rapid-reset burst: thousands of streams opened and cancelled.
    runtime.block_on(async move {
        let mut send = h2_connect(port).await;
        for _ in 0..5_000 {
            let request = http::Request::get(format!("http://127.0.0.1:{port}/fhir/metadata"))
                .body(())
                .unwrap();
            send = match send.ready().await {
                Ok(send) => send,
                Err(_) => break, // the gateway may close the connection (GOAWAY)
            };
            match send.send_request(request, true) {
                Ok((_response, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
                Err(_) => break,
            }
        }
    });
    still_serves(&gateway);
}
