//! kill -9 under a write load: every write a client saw acknowledged has a
//! ledger entry after the restart, and the intent journal completes the
//! seals of writes the upstream committed but the gateway never sealed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::patient;
use inkan_e2e::{client, Gateway, Hfs};

fn ledger_toml(dir: &std::path::Path) -> String {
    format!(
        "[ledger]\ndir = \"{}\"\ncheckpoint_interval_ms = 200\nseal_writes = true\n",
        dir.display()
    )
}

#[test]
fn acknowledged_writes_survive_kill_9_and_recovery_seals_the_rest() {
    let ledger = tempfile::tempdir().unwrap();
    let hfs = Hfs::start();
    // A pause between the upstream's commit and the seal, so the kill
    // lands while writes are committed upstream but not yet sealed.
    let gateway = Gateway::start_with_env(
        &hfs.url,
        &ledger_toml(ledger.path()),
        &[("INKAN_FAULT_SEAL_DELAY_MS", "150")],
    );
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|n| {
            let url = format!("{}/Patient", gateway.base);
            let acknowledged = acknowledged.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let http = client();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let sent = http
                        .post(&url)
                        .header("Content-Type", "application/fhir+json")
                        .body(patient("Crash", &format!("W{n}N{i}")).to_string())
                        .send();
                    let Ok(response) = sent else { continue };
                    let sealed = response
                        .headers()
                        .get("inkan-seal")
                        .is_some_and(|v| v == "sealed");
                    if response.status() == 201 && sealed {
                        let body: serde_json::Value = response.json().unwrap();
                        acknowledged
                            .lock()
                            .unwrap()
                            .push(body["id"].as_str().unwrap().to_owned());
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    gateway.process.signal("KILL");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 8,
        "the load ran: {}",
        acknowledged.len()
    );

    // Upstream: everything committed, acknowledged or not.
    let upstream: serde_json::Value = client()
        .get(format!("{}/Patient?family=Crash&_count=1000", hfs.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let committed = upstream["entry"].as_array().unwrap().len();
    assert!(
        committed > acknowledged.len(),
        "some writes were committed upstream but not acknowledged when the gateway died ({committed} vs {})",
        acknowledged.len()
    );

    // Restart without the fault: recovery seals what the journal says is open.
    let restarted = Gateway::start(&hfs.url, &ledger_toml(ledger.path()));
    let search_url = format!("{}/Patient?family=Crash&_count=1000", restarted.base);
    let deadline = Instant::now() + Duration::from_secs(30);
    let bundle = loop {
        let response = client().get(&search_url).send().unwrap();
        let verify = response.headers()["inkan-verify"]
            .to_str()
            .unwrap()
            .to_owned();
        if verify == format!("verified={committed}, tampered=0, unsealed=0, unchecked=0") {
            break response.json::<serde_json::Value>().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "recovery did not seal everything: {verify}\n{}",
            restarted.process.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Every acknowledged write is among the verified versions.
    let verified: Vec<&str> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["extension"][0]["valueCode"] == "verified")
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    for id in &acknowledged {
        assert!(
            verified.contains(&id.as_str()),
            "acknowledged {id} not sealed"
        );
    }
    assert!(
        restarted
            .process
            .log()
            .contains("completed seals of writes the request path did not finish"),
        "{}",
        restarted.process.log()
    );
}
