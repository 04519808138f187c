//! Health and metrics endpoints under the admin prefix `/-/`.

use crate::Stack;
use inkan_e2e::client;

#[test]
fn livez_readyz_and_metrics() {
    let mut stack = Stack::start();
    let http = client();
    assert_eq!(
        http.get(format!("{}/-/livez", stack.gateway.origin))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{}/-/readyz", stack.gateway.origin))
            .send()
            .unwrap()
            .status(),
        200
    );
    http.get(stack.url("/metadata")).send().unwrap();
    http.get(stack.url("/Patient/missing")).send().unwrap();
    let metrics = stack.gateway.metrics();
    assert!(
        metrics.contains(r#"inkan_http_requests_total{interaction="capabilities",status="200"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"inkan_http_requests_total{interaction="read",status="404"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("inkan_http_request_duration_seconds_bucket"),
        "{metrics}"
    );

    // Admin endpoints are read-only: 405 with Allow, as an OperationOutcome.
    let response = http
        .post(format!("{}/-/metrics", stack.gateway.origin))
        .send()
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    crate::assert_outcome(&crate::json(response), "not-supported");

    stack.hfs.stop();
    let response = http
        .get(format!("{}/-/readyz", stack.gateway.origin))
        .send()
        .unwrap();
    assert_eq!(response.status(), 503, "not ready without an upstream");
    assert_eq!(
        http.get(format!("{}/-/livez", stack.gateway.origin))
            .send()
            .unwrap()
            .status(),
        200
    );
}
