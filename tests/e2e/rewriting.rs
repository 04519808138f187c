//! URLs that point at the upstream (HFS advertises `http://localhost:8080`,
//! not the address we connect to) come back pointing at the gateway.

use std::time::{Duration, Instant};

use crate::{create, json, patient, Stack};
use inkan_e2e::client;

/// Every string in `value` that looks like an upstream URL.
fn upstream_urls(value: &serde_json::Value, stack: &Stack, found: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s)
            if s.contains("localhost:8080")
                || s.contains(&format!("127.0.0.1:{}", stack.hfs.port)) =>
        {
            found.push(s.clone());
        }
        serde_json::Value::Array(items) => {
            items.iter().for_each(|v| upstream_urls(v, stack, found))
        }
        serde_json::Value::Object(map) => map.values().for_each(|v| upstream_urls(v, stack, found)),
        _ => {}
    }
}

#[test]
fn paging_through_a_multi_page_search_follows_rewritten_links() {
    let stack = Stack::start();
    let http = client();
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            create(&stack, &patient("Nakamura", &format!("P{i}")))["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut url = stack.url("/Patient?family=Nakamura&_count=3");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = json(http.get(&url).send().unwrap());
        pages += 1;
        let mut leaked = Vec::new();
        upstream_urls(&page, &stack, &mut leaked);
        assert!(leaked.is_empty(), "upstream URLs leaked: {leaked:?}");
        for entry in page["entry"].as_array().into_iter().flatten() {
            assert!(
                entry["fullUrl"]
                    .as_str()
                    .unwrap()
                    .starts_with(&stack.gateway.base),
                "{entry}"
            );
            seen.push(entry["resource"]["id"].as_str().unwrap().to_owned());
        }
        let next = page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_owned());
        match next {
            Some(next) => {
                assert!(next.starts_with(&stack.gateway.base), "next link: {next}");
                url = next;
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
}

#[test]
fn capability_statement_names_the_gateway() {
    let stack = Stack::start();
    let capability = crate::get_json(&stack, "/metadata");
    assert_eq!(capability["resourceType"], "CapabilityStatement");
    let mut leaked = Vec::new();
    upstream_urls(&capability, &stack, &mut leaked);
    assert!(leaked.is_empty(), "upstream URLs leaked: {leaked:?}");
}

#[test]
fn bulk_export_kickoff_polling_and_download_go_through_the_gateway() {
    let stack = Stack::start();
    create(&stack, &patient("Kato", "Export"));
    let http = client();
    let kickoff = http
        .get(stack.url("/$export"))
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .send()
        .unwrap();
    assert_eq!(
        kickoff.status(),
        202,
        "{}",
        kickoff.text().unwrap_or_default()
    );
    let status_url = kickoff.headers()["content-location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        status_url.starts_with(&stack.gateway.base),
        "polling URL not rewritten: {status_url}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let manifest = loop {
        let poll = http.get(&status_url).send().unwrap();
        match poll.status().as_u16() {
            202 => {
                assert!(Instant::now() < deadline, "export did not finish");
                std::thread::sleep(Duration::from_millis(250));
            }
            200 => break json(poll),
            other => panic!("poll answered {other}: {}", poll.text().unwrap()),
        }
    };
    let outputs = manifest["output"].as_array().unwrap();
    assert!(!outputs.is_empty(), "{manifest}");
    let mut leaked = Vec::new();
    upstream_urls(&manifest, &stack, &mut leaked);
    assert!(
        leaked.is_empty(),
        "manifest leaks upstream URLs: {leaked:?}"
    );
    let file_url = outputs[0]["url"].as_str().unwrap();
    assert!(file_url.starts_with(&stack.gateway.base), "{file_url}");
    let file = http.get(file_url).send().unwrap();
    assert_eq!(file.status(), 200);
    let ndjson = file.text().unwrap();
    assert!(ndjson.lines().any(|l| l.contains("\"Kato\"")), "{ndjson}");
}
