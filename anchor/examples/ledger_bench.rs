//! Ledger benchmarks (bench/ledger.sh runs this in release mode):
//!
//! - `appends SECONDS WRITERS BATCH`: durable appends per second with WRITERS
//!   threads each sealing BATCH versions per call, for SECONDS; then the
//!   append→signed-checkpoint latency with a 100 ms checkpointer.
//! - `canonical DIR`: canonicalize + commit throughput over the JSON files in DIR.
//! - `proofs LEAVES`: inclusion proof generation and verification per second
//!   in a tree of LEAVES leaves.
//!
//! Prints `key=value` lines for the script to tabulate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::log::{Ledger, LedgerOptions, SealRequest};
use ledger::merkle::{self, MemoryTree};
use ledger::resource::Format;
use ledger::store::VersionKey;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("appends") => appends(
            args[2].parse().expect("seconds"),
            args[3].parse().expect("writers"),
            args[4].parse().expect("batch"),
            args.get(5).map(std::path::PathBuf::from),
        ),
        Some("canonical") => canonical(&args[2]),
        Some("proofs") => proofs(args[2].parse().expect("leaves")),
        _ => eprintln!(
            "usage: ledger_bench appends SECS WRITERS BATCH [DIR] | canonical DIR | proofs LEAVES"
        ),
    }
}

fn request(n: u64) -> SealRequest {
    let id = format!("bench-{n}");
    let body = format!(
        r#"{{"resourceType":"Observation","id":"{id}","meta":{{"versionId":"1","lastUpdated":"2026-01-01T00:00:00Z"}},"status":"final","code":{{"coding":[{{"system":"http://loinc.org","code":"29463-7"}}]}},"subject":{{"reference":"Patient/{n}"}},"valueQuantity":{{"value":60.5,"unit":"kg"}}}}"#
    );
    SealRequest::Version {
        key: VersionKey {
            resource_type: "Observation".into(),
            id,
            version_id: "1".into(),
        },
        bytes: body.into_bytes(),
        format: Format::Json,
        original_digest: None,
        backfilled: false,
    }
}

fn appends(seconds: u64, writers: u64, batch: u64, dir: Option<std::path::PathBuf>) {
    let tmp = tempdir_or(dir);
    let ledger = Arc::new(
        Ledger::open(
            &tmp,
            &LedgerOptions {
                origin: "bench.inkan/ledger".into(),
                key_file: None,
            },
        )
        .expect("open ledger"),
    );
    let counter = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Checkpointer every 100 ms, recording how long appended leaves waited
    // for their first signed checkpoint.
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let pending = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::<(
        u64,
        Instant,
    )>::new()));
    let checkpointer = {
        let (ledger, stop, latencies, pending) = (
            ledger.clone(),
            stop.clone(),
            latencies.clone(),
            pending.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if let Ok(Some(cp)) = ledger.checkpoint() {
                    let now = Instant::now();
                    let mut pending = pending.lock().expect("lock");
                    let mut lat = latencies.lock().expect("lock");
                    while pending.front().is_some_and(|(end, _)| *end <= cp.size) {
                        let (_, at) = pending.pop_front().expect("front");
                        lat.push(now.duration_since(at).as_secs_f64() * 1000.0);
                    }
                }
            }
        })
    };
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (ledger, counter, stop, pending) = (
                ledger.clone(),
                counter.clone(),
                stop.clone(),
                pending.clone(),
            );
            std::thread::spawn(move || {
                let mut n = w << 40;
                while !stop.load(Ordering::Relaxed) {
                    let requests: Vec<_> = (0..batch).map(|i| request(n + i)).collect();
                    n += batch;
                    let receipts = ledger.seal(requests).expect("seal");
                    let max = receipts.iter().map(|r| r.leaf_index).max().unwrap_or(0);
                    pending
                        .lock()
                        .expect("lock")
                        .push_back((max + 1, Instant::now()));
                    counter.fetch_add(batch, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("writer");
    }
    let elapsed = started.elapsed().as_secs_f64();
    checkpointer.join().expect("checkpointer");
    let total = counter.load(Ordering::Relaxed);
    let mut lat = latencies.lock().expect("lock").clone();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let bytes = ledger::log::disk_usage(&tmp);
    println!("leaves={total}");
    println!("seconds={elapsed:.1}");
    println!("leaves_per_second={:.0}", total as f64 / elapsed);
    println!("checkpoint_latency_p50_ms={:.0}", pct(0.5));
    println!("checkpoint_latency_p99_ms={:.0}", pct(0.99));
    println!("bytes_on_disk={bytes}");
    println!("bytes_per_leaf={:.1}", bytes as f64 / total.max(1) as f64);
    let _ = std::fs::remove_dir_all(&tmp);
}

fn canonical(dir: &str) {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            files.push(std::fs::read(path).expect("read"));
        }
    }
    let bytes: usize = files.iter().map(Vec::len).sum();
    let salt = ledger::leaf::fresh_salt();
    let started = Instant::now();
    let mut rounds = 0u64;
    while started.elapsed() < Duration::from_secs(5) {
        for file in &files {
            let canonical = ledger::canonical::canonicalize(file).expect("canonical");
            std::hint::black_box(ledger::leaf::commitment(&salt, &canonical));
        }
        rounds += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("files={}", files.len());
    println!("corpus_bytes={bytes}");
    println!(
        "canonical_commit_mb_per_s={:.1}",
        (bytes as f64 * rounds as f64) / secs / 1e6
    );
}

fn proofs(leaves: u64) {
    let mut tree = MemoryTree::new();
    let build = Instant::now();
    for i in 0..leaves {
        tree.push(merkle::leaf_hash(&i.to_be_bytes()));
    }
    println!("tree_build_seconds={:.1}", build.elapsed().as_secs_f64());
    let root = tree.root(leaves).expect("root");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % leaves
    };
    let n = 100_000;
    let indexes: Vec<u64> = (0..n).map(|_| next()).collect();
    let started = Instant::now();
    let proofs: Vec<_> = indexes
        .iter()
        .map(|&i| tree.inclusion_proof(i, leaves).expect("proof"))
        .collect();
    let gen = n as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for (&i, proof) in indexes.iter().zip(&proofs) {
        merkle::verify_inclusion(
            i,
            leaves,
            &merkle::leaf_hash(&i.to_be_bytes()),
            proof,
            &root,
        )
        .expect("verify");
    }
    let ver = n as f64 / started.elapsed().as_secs_f64();
    println!("leaves={leaves}");
    println!("proofs_generated_per_second={gen:.0}");
    println!("proofs_verified_per_second={ver:.0}");
}

fn tempdir_or(dir: Option<std::path::PathBuf>) -> std::path::PathBuf {
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("inkan-ledger-bench-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
