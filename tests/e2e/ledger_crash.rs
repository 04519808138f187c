//! The ledger survives `kill -9` at any moment: every batch the appender
//! reported durable is there after the crash, and fsck finds no defect.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use inkan_e2e::inkan_binary;

fn ledger(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(inkan_binary())
        .args(["ledger", "--dir"])
        .arg(dir)
        .args(["--origin", "crash.test/inkan"])
        .args(args)
        .output()
        .unwrap()
}

fn size(dir: &std::path::Path) -> u64 {
    let stats = String::from_utf8(ledger(dir, &["stats"]).stdout).unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix("leaves:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap()
}

#[test]
fn kill_9_during_heavy_appends_leaves_a_consistent_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = 0u64;
    // Kill at different moments: early, mid-run, later.
    for (round, kill_after) in [
        Duration::from_millis(300),
        Duration::from_millis(900),
        Duration::from_millis(1500),
    ]
    .into_iter()
    .enumerate()
    {
        let mut child = Command::new(inkan_binary())
            .args(["ledger", "--dir"])
            .arg(dir.path())
            .args([
                "--origin",
                "crash.test/inkan",
                "stress",
                "--count",
                "10000000",
                "--batch",
                "500",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = 0u64;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("sealed ") {
                    last = n.trim().parse().unwrap();
                }
            }
            last
        });
        let started = Instant::now();
        while started.elapsed() < kill_after {
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = child.wait();
        let reported = reader.join().unwrap();
        assert!(
            reported > acknowledged,
            "round {round}: the stress run made progress ({reported})"
        );
        acknowledged = reported;

        let after = size(dir.path());
        assert!(
            after >= acknowledged,
            "round {round}: {acknowledged} acknowledged but only {after} leaves survived"
        );
        // A checkpoint after the crash signs the recovered tree, and fsck
        // recomputes everything from the entries.
        let checkpoint = ledger(dir.path(), &["checkpoint"]);
        assert!(
            checkpoint.status.success(),
            "{}",
            String::from_utf8_lossy(&checkpoint.stderr)
        );
        let fsck = ledger(dir.path(), &["fsck"]);
        assert!(
            fsck.status.success(),
            "round {round}: fsck found defects:\n{}",
            String::from_utf8_lossy(&fsck.stdout)
        );
        acknowledged = after;
    }
}
