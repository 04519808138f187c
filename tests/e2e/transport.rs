//! HTTP/2, TLS, headers and graceful shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::{json, patient, Stack};
use inkan_e2e::client;

#[test]
fn http2_prior_knowledge_works() {
    let stack = Stack::start();
    let h2 = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(stack.url("/metadata")).send().unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(json(response)["resourceType"], "CapabilityStatement");
}

#[test]
fn request_id_is_generated_or_echoed_and_headers_pass() {
    let stack = Stack::start();
    let http = client();
    let response = http.get(stack.url("/metadata")).send().unwrap();
    let generated = response.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    let response = http
        .get(stack.url("/metadata"))
        .header("X-Request-Id", "ward-7-req-42")
        .send()
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "ward-7-req-42");
    assert!(
        stack.gateway.process.log().contains("ward-7-req-42"),
        "request id is logged"
    );

    // ETag and Last-Modified from the upstream reach the client.
    let created = crate::create(&stack, &patient("Header", "Test"));
    let response = http
        .get(stack.url(&format!("/Patient/{}", created["id"].as_str().unwrap())))
        .send()
        .unwrap();
    assert!(response.headers().contains_key("etag"));
    assert!(response.headers().contains_key("last-modified"));
}

#[test]
fn logs_carry_no_query_values() {
    let stack = Stack::start();
    client()
        .get(stack.url("/Patient?family=%E5%B1%B1%E7%94%B0&birthdate=1970-01-01"))
        .send()
        .unwrap();
    let log = stack.gateway.process.log();
    assert!(
        log.contains("family,birthdate"),
        "query names are logged: {log}"
    );
    assert!(
        !log.contains("%E5%B1%B1") && !log.contains("山田") && !log.contains("1970-01-01"),
        "{log}"
    );
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests() {
    let mut stack = Stack::start();
    // Start a request and hold it in flight by sending its body slowly.
    let body = patient("Shutdown", "InFlight").to_string();
    let mut tcp = TcpStream::connect(("127.0.0.1", stack.gateway.port)).unwrap();
    write!(
        tcp,
        "POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    tcp.write_all(&body.as_bytes()[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stack.gateway.process.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    // New connections are refused once the listener is closed.
    assert!(
        client().get(stack.url("/metadata")).send().is_err(),
        "still accepting after SIGTERM"
    );
    tcp.write_all(&body.as_bytes()[10..]).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 201"),
        "in-flight request completed: {answer}"
    );
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    let content_length: usize = answer
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    assert_eq!(body.len(), content_length, "response not truncated");
    let status = stack
        .gateway
        .process
        .wait_exit(Duration::from_secs(10))
        .expect("gateway exited");
    assert!(status.success(), "{status:?}");
}

#[test]
fn tls_listener_with_required_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // A test CA, a server certificate for 127.0.0.1 and a client certificate.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=inkan test CA",
    ]);
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(
        d.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    for who in ["server", "client"] {
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{who}.key"),
            "-out",
            &format!("{who}.csr"),
            "-subj",
            &format!("/CN={who}"),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{who}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{who}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{who}.ext"),
        ]);
    }
    let hfs = inkan_e2e::Hfs::start();
    // Access records on: the certificate's subject names the client.
    let repository = inkan_e2e::Sekmet::start();
    let tls = format!(
        "[audit]\nenabled = true\ndelivery_interval_ms = 100\nrepository_url = \"{1}\"\n[tls]\ncert_file = \"{0}/server.pem\"\nkey_file = \"{0}/server.key\"\nclient_ca_file = \"{0}/ca.pem\"\n",
        d.display(),
        repository.url
    );
    let gateway = inkan_e2e::Gateway::start_tls(&hfs.url, &tls);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(d.join("ca.pem")).unwrap()).unwrap();
    let mut identity_pem = std::fs::read(d.join("client.pem")).unwrap();
    identity_pem.extend(std::fs::read(d.join("client.key")).unwrap());
    let identity = reqwest::Identity::from_pem(&identity_pem).unwrap();
    let url = format!("https://127.0.0.1:{}/fhir/metadata", gateway.port);

    let with_cert = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca.clone())
        .identity(identity)
        .build()
        .unwrap();
    let response = with_cert.get(&url).send().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.version(),
        reqwest::Version::HTTP_2,
        "ALPN negotiates h2"
    );

    let without_cert = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    assert!(
        without_cert.get(&url).send().is_err(),
        "a client without a certificate is refused"
    );

    // The access record of the request names the certificate's subject.
    let read = with_cert
        .get(format!("https://127.0.0.1:{}/fhir/Patient", gateway.port))
        .send()
        .unwrap();
    assert_eq!(read.status(), 200);
    let request_id = read.headers()["x-request-id"].to_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let event = loop {
        let page: serde_json::Value = inkan_e2e::client()
            .get(format!("{}/AuditEvent?_count=100", repository.url))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let found = page["entry"].as_array().into_iter().flatten().find(|e| {
            e["resource"]["entity"][0]["what"]["identifier"]["value"] == request_id.as_str()
        });
        if let Some(entry) = found {
            break entry["resource"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access record for {request_id}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let client_agent = &event["agent"][0];
    assert_eq!(
        client_agent["who"]["identifier"]["value"], "CN=client",
        "{event}"
    );
    assert_eq!(
        client_agent["who"]["identifier"]["system"],
        "urn:ietf:rfc:5280:subject"
    );
}
