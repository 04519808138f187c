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
    assert_eq!(stack.gateway.admin_get("/-/readyz").status(), 200);
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
        .bearer_auth(inkan_e2e::ADMIN_TOKEN)
        .send()
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    crate::assert_outcome(&crate::json(response), "not-supported");

    stack.hfs.stop();
    let response = stack.gateway.admin_get("/-/readyz");
    assert_eq!(response.status(), 503, "not ready without an upstream");
    assert_eq!(
        http.get(format!("{}/-/livez", stack.gateway.origin))
            .send()
            .unwrap()
            .status(),
        200
    );
}

// `/-/metrics` and `/-/readyz` answered anyone. Now they need the admin
// token; `/-/livez` and the published log stay open.
#[test]
fn metrics_and_readyz_need_the_admin_token_livez_and_the_log_do_not() {
    let stack = crate::Stack::start_with(
        "[ledger]\ndir = \"ledger\"\norigin = \"e2e.test/inkan\"\ncheckpoint_interval_ms = 100\nseal_writes = true\n",
    );
    crate::create(&stack, &crate::patient("Kanri", "Taro"));
    let http = client();
    for path in ["/-/metrics", "/-/readyz"] {
        let url = format!("{}{path}", stack.gateway.origin);
        let anonymous = http.get(&url).send().unwrap();
        assert_eq!(anonymous.status(), 401, "{path}");
        assert!(anonymous.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        crate::assert_outcome(&crate::json(anonymous), "security");
        let wrong = http.get(&url).bearer_auth("not-the-token").send().unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
        assert_eq!(stack.gateway.admin_get(path).status(), 200, "{path}");
    }
    assert_eq!(
        http.get(format!("{}/-/livez", stack.gateway.origin))
            .send()
            .unwrap()
            .status(),
        200
    );
    // The checkpoint is public (it reveals no health data).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let checkpoint = http
            .get(format!("{}/-/log/checkpoint", stack.gateway.origin))
            .send()
            .unwrap();
        if checkpoint.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint published"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
