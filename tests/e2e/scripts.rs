//! The scripts a newcomer runs stop everything they start: `scripts/demo.sh`
//! after a full run, after a failure with the whole stack up, and with
//! `--keep` after Ctrl-C. Every process the demo starts inherits a marker in
//! its environment; afterwards no process in /proc may carry it, and the
//! demo's work dir must be gone.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inkan_e2e::{hfs_binary, inkan_binary};

const MARKER: &str = "INKAN_SCRIPTS_TEST_MARKER";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Live processes whose environment holds `entry` (`KEY=value`), as
/// "pid: command line". Zombies have no readable environment.
fn processes_with(entry: &str) -> Vec<String> {
    let mut found = Vec::new();
    for proc_entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = proc_entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(proc_entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|kv| kv == entry.as_bytes()) {
            let cmdline = std::fs::read(proc_entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

/// `scripts/demo.sh` running in its own process group (as a shell runs a
/// foreground job), output collected, with a fresh TMPDIR for its work dir.
#[derive(Debug)]
struct Demo {
    child: Child,
    output: Arc<Mutex<String>>,
    marker: String,
    tmp: tempfile::TempDir,
}

impl Demo {
    fn start(args: &[&str], fail_after: Option<&str>) -> Demo {
        use std::os::unix::process::CommandExt;
        let tmp = tempfile::tempdir().unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let value = format!("demo-{}-{nanos}", std::process::id());
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(r#"exec bash "$0" "$@" 2>&1"#)
            .arg(workspace_root().join("scripts/demo.sh"))
            .args(args)
            .env("INKAN_BIN", inkan_binary())
            .env("INKAN_HFS_BIN", hfs_binary())
            .env("TMPDIR", tmp.path())
            .env(MARKER, &value)
            .env_remove("INKAN_DEMO_FAIL_AFTER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0);
        if let Some(step) = fail_after {
            command.env("INKAN_DEMO_FAIL_AFTER", step);
        }
        let mut child = command.spawn().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut out = sink.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
        });
        Demo {
            child,
            output,
            marker: format!("{MARKER}={value}"),
            tmp,
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the output contains `text`; panics if the demo ends first.
    fn wait_for_output(&mut self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.output();
            if out.contains(text) {
                return out;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the demo ended ({status}) before printing {text:?}:\n{out}");
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} after {timeout:?}:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader thread drains what is left of the pipe.
                std::thread::sleep(Duration::from_millis(200));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not end within {timeout:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ctrl-C: SIGINT to the demo's process group, as a terminal sends it.
    fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", "--", &format!("-{}", self.child.id())])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn running(&self) -> Vec<String> {
        processes_with(&self.marker)
    }

    /// Nothing the demo started runs any more, and its work dir is gone.
    fn assert_nothing_left(&self, what: &str) {
        let left = self.running();
        assert!(
            left.is_empty(),
            "{what}: still running:\n{}\n\noutput:\n{}",
            left.join("\n"),
            self.output()
        );
        let work_dirs: Vec<_> = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("tmp."))
            .collect();
        assert!(
            work_dirs.is_empty(),
            "{what}: work dir left: {work_dirs:?}\n{}",
            self.output()
        );
    }
}

impl Drop for Demo {
    /// A failing test leaves nothing behind either.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
            let _ = self.child.wait();
        }
        for process in self.running() {
            if let Some(pid) = process.split(':').next() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }
}

fn is_alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            state != Some(Some('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn demo_runs_to_the_end_and_leaves_nothing_running() {
    let mut demo = Demo::start(&[], None);
    let status = demo.wait(Duration::from_secs(600));
    let out = demo.output();
    assert!(status.success(), "demo failed ({status}):\n{out}");
    assert!(out.contains("Demo complete"), "{out}");
    demo.assert_nothing_left("after the demo");
}

#[test]
fn demo_failing_with_the_stack_up_leaves_nothing_running() {
    let mut demo = Demo::start(&[], Some("inkan"));
    let status = demo.wait(Duration::from_secs(300));
    let out = demo.output();
    assert_eq!(status.code(), Some(1), "{out}");
    // HFS, the TSA and inkan were up when it failed.
    let pids: Vec<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("INKAN_DEMO_FAIL_AFTER=inkan: failing on purpose; running: "))
        .unwrap_or_else(|| panic!("no failure line:\n{out}"))
        .split_whitespace()
        .collect();
    assert_eq!(pids.len(), 3, "{out}");
    for pid in &pids {
        assert!(!is_alive(pid), "pid {pid} still alive:\n{out}");
    }
    demo.assert_nothing_left("after a failing run");
}

#[test]
fn demo_keep_stays_up_until_ctrl_c() {
    let mut demo = Demo::start(&["--keep"], None);
    let out = demo.wait_for_output("press Ctrl-C to stop it", Duration::from_secs(600));
    assert!(out.contains("Demo complete"), "{out}");
    let field = |name: &str| -> String {
        out.lines()
            .find_map(|l| l.trim_start().strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name:?} line:\n{out}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let base = field("FHIR base URL (inkan):");
    let key = field("log verifier key:");
    assert!(!key.is_empty(), "{out}");
    assert!(
        out.contains("curl ") && out.contains("python3 -c") && out.contains("fhirclient"),
        "{out}"
    );

    // The stack answers, and the marker finds what the demo started.
    let response = inkan_e2e::client()
        .get(format!("{base}/metadata"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let running = demo.running().join("\n");
    for server in ["--database-url", "tsa-shim.py serve", "serve --config"] {
        assert!(running.contains(server), "no {server:?} in:\n{running}");
    }

    // The printed command lines work as printed (the Python FHIR client
    // line only where the package is installed).
    let lines: Vec<&str> = out.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_start().starts_with("curl "))
        .unwrap();
    let end = lines
        .iter()
        .position(|l| l.starts_with("Stack up;"))
        .unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let fhirclient = Command::new("python3")
        .args(["-c", "import fhirclient"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let script: String = lines[start..end]
        .iter()
        .filter(|l| fhirclient || !l.contains("fhirclient"))
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    let run = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    let run_out = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{script}\n{run_out}");
    assert!(run_out.contains("201 Created"), "{run_out}");
    assert!(run_out.to_lowercase().contains("inkan-seal:"), "{run_out}");

    demo.interrupt();
    let status = demo.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(130), "{}", demo.output());
    demo.assert_nothing_left("after Ctrl-C");
}
