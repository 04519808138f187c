//! The ledger end to end, in one process: seal, checkpoint, prove, verify
//! offline, and detect every single-bit alteration.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used)]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ledger::bundle::{verify_bundle, ProofBundle};
use ledger::log::{Ledger, LedgerOptions, SealRequest};
use ledger::note::NoteVerifier;
use ledger::resource::Format;
use ledger::store::VersionKey;

fn options() -> LedgerOptions {
    LedgerOptions {
        origin: "test.example.jp/inkan".into(),
        key_file: None,
    }
}

fn key(id: &str, version: &str) -> VersionKey {
    VersionKey {
        resource_type: "Patient".into(),
        id: id.into(),
        version_id: version.into(),
    }
}

fn patient(id: &str, version: &str, family: &str) -> Vec<u8> {
    format!(
        r#"{{"resourceType":"Patient","id":"{id}","meta":{{"versionId":"{version}"}},"name":[{{"family":"{family}"}}],"extension":[{{"url":"http://example.jp/weight","valueDecimal":60.50}}]}}"#
    )
    .into_bytes()
}

fn seal(ledger: &Ledger, id: &str, version: &str, bytes: Vec<u8>) -> u64 {
    ledger
        .seal(vec![SealRequest::Version {
            key: key(id, version),
            bytes,
            format: Format::Json,
            original_digest: None,
            backfilled: false,
        }])
        .unwrap()[0]
        .leaf_index
}

#[test]
fn seal_prove_verify_and_detect_every_bit_flip() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), &options()).unwrap();
    for i in 0..20 {
        seal(
            &ledger,
            &format!("p{i}"),
            "1",
            patient(&format!("p{i}"), "1", "Yamada"),
        );
    }
    let target = patient("p7", "2", "山田");
    let index = seal(&ledger, "p7", "2", target.clone());
    assert_eq!(index, 20);
    // Idempotent: sealing the same version again adds no leaf.
    let again = ledger
        .seal(vec![SealRequest::Version {
            key: key("p7", "2"),
            bytes: target.clone(),
            format: Format::Json,
            original_digest: None,
            backfilled: false,
        }])
        .unwrap();
    assert_eq!(again[0].leaf_index, 20);
    assert!(!again[0].newly_sealed);
    ledger
        .seal(vec![SealRequest::Tombstone {
            key: key("p3", "2"),
            backfilled: false,
        }])
        .unwrap();

    let checkpoint = ledger.checkpoint().unwrap().expect("the tree grew");
    assert_eq!(checkpoint.size, 22);
    assert!(
        ledger.checkpoint().unwrap().is_none(),
        "no new checkpoint without growth"
    );

    let log_key =
        NoteVerifier::parse(&std::fs::read_to_string(dir.path().join("log.pub")).unwrap()).unwrap();
    let bundle = ledger.proof_bundle(&key("p7", "2")).unwrap();
    let verified = verify_bundle(&bundle, Some(&target), &log_key).unwrap();
    assert_eq!(verified.leaf_index, 20);
    assert_eq!(
        verified.anchors.len(),
        1,
        "the local anchor receipt is in the bundle"
    );

    // The same resource as pretty-printed JSON verifies: the canonical form
    // ignores whitespace and member order.
    let pretty =
        serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(&target).unwrap())
            .unwrap();
    verify_bundle(&bundle, Some(&pretty), &log_key).unwrap();

    // Every single-bit flip of the resource is detected.
    for bit in 0..target.len() * 8 {
        let mut altered = target.clone();
        altered[bit / 8] ^= 1 << (bit % 8);
        assert!(
            verify_bundle(&bundle, Some(&altered), &log_key).is_err(),
            "resource bit {bit}"
        );
    }
    // ...and of the salt, the leaf, each proof hash and the checkpoint note.
    let flip_b64 = |b64: &str, bit: usize| {
        let mut bytes = B64.decode(b64).unwrap();
        bytes[bit / 8] ^= 1 << (bit % 8);
        B64.encode(bytes)
    };
    for bit in 0..256 {
        let mut b = bundle.clone();
        b.salt = flip_b64(&b.salt, bit);
        let err = verify_bundle(&b, Some(&target), &log_key)
            .unwrap_err()
            .to_string();
        assert!(err.contains("commitment mismatch"), "salt bit {bit}: {err}");
    }
    for bit in 0..35 * 8 {
        let mut b = bundle.clone();
        b.leaf = flip_b64(&b.leaf, bit);
        assert!(
            verify_bundle(&b, Some(&target), &log_key).is_err(),
            "leaf bit {bit}"
        );
    }
    for (i, _) in bundle.inclusion_proof.iter().enumerate() {
        for bit in 0..256 {
            let mut b = bundle.clone();
            b.inclusion_proof[i] = flip_b64(&b.inclusion_proof[i], bit);
            let err = verify_bundle(&b, Some(&target), &log_key)
                .unwrap_err()
                .to_string();
            assert!(err.contains("calculated"), "proof {i} bit {bit}: {err}");
        }
    }
    for bit in 0..bundle.checkpoint.len() * 8 {
        let mut note = bundle.checkpoint.clone().into_bytes();
        note[bit / 8] ^= 1 << (bit % 8);
        let Ok(note) = String::from_utf8(note) else {
            continue;
        };
        let mut b = bundle.clone();
        b.checkpoint = note;
        assert!(
            verify_bundle(&b, Some(&target), &log_key).is_err(),
            "checkpoint bit {bit}"
        );
    }
    // Another log's key does not verify it.
    let other = ledger::note::NoteSigner::generate("test.example.jp/inkan")
        .unwrap()
        .verifier();
    assert!(verify_bundle(&bundle, Some(&target), &other).is_err());

    // The tombstone has a bundle of its own that verifies without a resource.
    let tombstone = ledger.proof_bundle(&key("p3", "2")).unwrap();
    verify_bundle(&tombstone, None, &log_key).unwrap();

    // The tlog-proof text carries the index, the proof and the checkpoint.
    let text = bundle.to_tlog_proof();
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra "));
    assert!(text.contains("\nindex 20\n"));
    assert!(text.ends_with(&bundle.checkpoint));

    // Bundles survive a JSON round trip unchanged.
    let json = serde_json::to_string(&bundle).unwrap();
    assert_eq!(serde_json::from_str::<ProofBundle>(&json).unwrap(), bundle);

    assert_eq!(ledger.fsck().unwrap(), Vec::<String>::new());
}

#[test]
fn reopen_keeps_the_tree_and_fsck_finds_damage() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = Ledger::open(dir.path(), &options()).unwrap();
        for i in 0..300 {
            seal(
                &ledger,
                &format!("r{i}"),
                "1",
                patient(&format!("r{i}"), "1", "Sato"),
            );
        }
        ledger.checkpoint().unwrap().unwrap();
    }
    let ledger = Ledger::open(dir.path(), &options()).unwrap();
    seal(&ledger, "r300", "1", patient("r300", "1", "Sato"));
    let second = ledger.checkpoint().unwrap().unwrap();
    assert_eq!(second.size, 301);
    assert_eq!(ledger.fsck().unwrap(), Vec::<String>::new());
    assert!(
        dir.path().join("tiles/tile/0/000").exists(),
        "full level-0 tile"
    );
    assert!(
        dir.path().join("tiles/tile/0/001.p/45").exists(),
        "partial level-0 tile"
    );
    assert!(
        dir.path().join("tiles/tile/entries/000").exists(),
        "full entry bundle"
    );

    // Damage a published tile: fsck names it.
    let tile = dir.path().join("tiles/tile/0/000");
    let mut bytes = std::fs::read(&tile).unwrap();
    bytes[5] ^= 0x10;
    std::fs::write(&tile, bytes).unwrap();
    let defects = ledger.fsck().unwrap();
    assert!(
        defects.iter().any(|d| d.contains("tile/0/000")),
        "{defects:?}"
    );
}

#[test]
fn an_access_record_is_queued_with_its_leaf_proves_as_stored_and_an_edit_is_tampering() {
    use ledger::log::{access_record_key, VersionCheck};
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), &options()).unwrap();
    seal(&ledger, "p1", "1", patient("p1", "1", "Yamada"));
    let event = br#"{"resourceType":"AuditEvent","id":"ae-1","recorded":"2026-12-02T01:02:03.456Z","outcome":"0"}"#;
    let sealed = ledger
        .seal(vec![SealRequest::Access {
            key: access_record_key("ae-1"),
            event: event.to_vec(),
        }])
        .unwrap();
    assert_eq!(sealed[0].leaf_index, 1);

    // Queued in the same commit, until delivered.
    let due = ledger.due_deliveries(10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].leaf_index, due[0].attempts), (1, 0));
    assert_eq!(due[0].body, event.to_vec());
    ledger.store().record_attempts(&[1]).unwrap();
    ledger
        .store()
        .defer_deliveries(&[1], i64::MAX, "repository down")
        .unwrap();
    assert!(ledger.due_deliveries(10).unwrap().is_empty(), "deferred");
    assert_eq!(
        ledger.store().queued_deliveries().unwrap(),
        [1],
        "still queued"
    );
    assert_eq!(ledger.store().delivery_backlog().unwrap().0, 1);
    // The repository stored it under an id of its own.
    ledger
        .store()
        .mark_delivered(&[(1, Some("server-7".into()))])
        .unwrap();
    assert_eq!(ledger.store().delivery_backlog().unwrap().0, 0);

    // The repository adds its id and meta; the record still verifies,
    // found by the repository's id, offline too.
    let stored = br#"{"resourceType":"AuditEvent","id":"server-7","meta":{"versionId":"1","lastUpdated":"2026-12-02T01:02:04Z"},"recorded":"2026-12-02T01:02:03.456Z","outcome":"0"}"#;
    let key = access_record_key("server-7");
    assert!(ledger.find(&access_record_key("nobody")).unwrap().is_none());
    assert!(matches!(
        ledger.check_version(&key, stored, Format::Json).unwrap(),
        VersionCheck::Verified { leaf_index: 1, .. }
    ));
    let edited = String::from_utf8(stored.to_vec())
        .unwrap()
        .replace(r#""outcome":"0""#, r#""outcome":"4""#);
    assert!(matches!(
        ledger
            .check_version(&key, edited.as_bytes(), Format::Json)
            .unwrap(),
        VersionCheck::Tampered { leaf_index: 1, .. }
    ));
    ledger.checkpoint().unwrap().unwrap();
    let bundle = ledger.proof_bundle(&key).unwrap();
    assert_eq!(bundle.kind, "access");
    let verifier = ledger.verifier();
    verify_bundle(&bundle, Some(stored), &verifier).unwrap();
    let refused = verify_bundle(&bundle, Some(edited.as_bytes()), &verifier).unwrap_err();
    assert!(
        refused.to_string().contains("commitment mismatch"),
        "{refused}"
    );
    // The same bytes sealed as an ordinary version do not verify as the
    // access record (domain separation).
    let other = stored.to_vec();
    let mut as_version = bundle.clone();
    as_version.kind = "version".into();
    assert!(verify_bundle(&as_version, Some(&other), &verifier).is_err());
    assert_eq!(ledger.fsck().unwrap(), Vec::<String>::new());
}

#[test]
fn xml_and_json_of_one_version_share_a_commitment() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), &options()).unwrap();
    let json = br#"{"resourceType":"Patient","id":"x1","meta":{"versionId":"1"},"active":true,"name":[{"family":"Ito","given":["Aki"]}]}"#.to_vec();
    let xml = br#"<Patient xmlns="http://hl7.org/fhir"><id value="x1"/><meta><versionId value="1"/></meta><active value="true"/><name><family value="Ito"/><given value="Aki"/></name></Patient>"#.to_vec();
    seal(&ledger, "x1", "1", json.clone());
    ledger.checkpoint().unwrap();
    let log_key = ledger.verifier();
    let bundle = ledger.proof_bundle(&key("x1", "1")).unwrap();
    verify_bundle(&bundle, Some(&json), &log_key).unwrap();
    verify_bundle(&bundle, Some(&xml), &log_key).unwrap();
}

/// A backend that persists the first anchor and then reports failure (the
/// "failed but persisted" fault), then fails outright once, then works.
#[derive(Debug, Default)]
struct FlakyBackend {
    anchored: std::sync::Mutex<Vec<u64>>,
    calls: std::sync::atomic::AtomicUsize,
}

impl ledger::backends::AnchorBackend for FlakyBackend {
    fn name(&self) -> &str {
        "flaky"
    }

    fn anchor(
        &self,
        checkpoint: &ledger::store::StoredCheckpoint,
    ) -> Result<String, ledger::Error> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut anchored = self.anchored.lock().unwrap();
        // Idempotent: a checkpoint already anchored is not anchored again.
        if !anchored.contains(&checkpoint.size) {
            anchored.push(checkpoint.size);
        }
        match call {
            0 => Err(ledger::Error::Store(
                "connection reset after the anchor was persisted".into(),
            )),
            1 => Err(ledger::Error::Store("backend down".into())),
            _ => Ok(format!("{{\"size\":{}}}", checkpoint.size)),
        }
    }
}

#[test]
fn a_failing_backend_never_loses_a_checkpoint_and_is_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), &options()).unwrap();
    let flaky = std::sync::Arc::new(FlakyBackend::default());
    #[derive(Debug)]
    struct Shared(std::sync::Arc<FlakyBackend>);
    impl ledger::backends::AnchorBackend for Shared {
        fn name(&self) -> &str {
            self.0.name()
        }
        fn anchor(&self, c: &ledger::store::StoredCheckpoint) -> Result<String, ledger::Error> {
            self.0.anchor(c)
        }
    }
    ledger.add_backend(Box::new(Shared(flaky.clone())));
    seal(&ledger, "a", "1", patient("a", "1", "Abe"));

    // The backend fails: the checkpoint is still signed and stored, and the
    // local backend's receipt is kept.
    assert!(ledger.checkpoint().is_err());
    let latest = ledger
        .store()
        .latest_checkpoint()
        .unwrap()
        .expect("checkpoint stored despite the failure");
    assert_eq!(latest.size, 1);
    let receipts = ledger.store().receipts(1).unwrap();
    assert_eq!(
        receipts.iter().map(|(b, _)| b.as_str()).collect::<Vec<_>>(),
        vec!["local"]
    );

    // More appends while it is down; the next checkpoint covers them all.
    seal(&ledger, "b", "1", patient("b", "1", "Abe"));
    assert!(ledger.checkpoint().is_err());
    // Back up: the latest checkpoint is anchored, once.
    ledger.anchor_pending().unwrap();
    let receipts = ledger.store().receipts(2).unwrap();
    assert!(
        receipts
            .iter()
            .any(|(b, r)| b == "flaky" && r == "{\"size\":2}"),
        "{receipts:?}"
    );
    assert_eq!(
        *flaky.anchored.lock().unwrap(),
        vec![1, 2],
        "each checkpoint anchored once"
    );
    // Nothing pending: no further call.
    let calls = flaky.calls.load(std::sync::atomic::Ordering::SeqCst);
    ledger.anchor_pending().unwrap();
    assert_eq!(flaky.calls.load(std::sync::atomic::Ordering::SeqCst), calls);
}

#[test]
fn the_checkpointer_signs_when_the_tree_grows() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = std::sync::Arc::new(Ledger::open(dir.path(), &options()).unwrap());
    let checkpointer = ledger.spawn_checkpointer(std::time::Duration::from_millis(50));
    seal(&ledger, "c", "1", patient("c", "1", "Chiba"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ledger.store().latest_checkpoint().unwrap().map(|c| c.size) != Some(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint within 5 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(checkpointer);
    assert_eq!(
        ledger.store().checkpoints().unwrap().len(),
        1,
        "no checkpoint without growth"
    );
}

#[test]
fn concurrent_seals_and_checkpoints_never_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = std::sync::Arc::new(Ledger::open(dir.path(), &options()).unwrap());
    let checkpointer = ledger.spawn_checkpointer(std::time::Duration::from_millis(1));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                for i in 0..150 {
                    let id = format!("w{w}-{i}");
                    ledger
                        .seal(vec![SealRequest::Version {
                            key: key(&id, "1"),
                            bytes: patient(&id, "1", "Mori"),
                            format: Format::Json,
                            original_digest: None,
                            backfilled: false,
                        }])
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    drop(checkpointer);
    ledger.checkpoint().unwrap();
    assert_eq!(ledger.store().size().unwrap(), 600);
    assert!(
        ledger.store().checkpoints().unwrap().len() > 1,
        "checkpoints were signed while appending"
    );
    assert_eq!(ledger.fsck().unwrap(), Vec::<String>::new());
}

#[test]
fn intents_survive_reopening_until_closed() {
    use ledger::store::{IntentJournal, SqliteStore};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let (kept, failed) = {
        let store = SqliteStore::open(&path).unwrap();
        let kept = store.open_intent(1_000, r#"{"path":"/Patient"}"#).unwrap();
        let closed = store.open_intent(2_000, "{}").unwrap();
        let failed = store.open_intent(3_000, "{}").unwrap();
        store.close_intent(closed).unwrap();
        store.fail_intent(failed, "read-back answered 500").unwrap();
        // Closing and failing are fire-and-forget: the next job that waits
        // for its commit (this open) flushes them.
        let _ = store.open_intent(4_000, "{}").unwrap();
        (kept, failed)
    };
    let store = SqliteStore::open(&path).unwrap();
    let open = store.open_intents().unwrap();
    let ids: Vec<u64> = open.iter().map(|i| i.intent_id).collect();
    assert_eq!(ids.len(), 3, "{open:?}");
    assert_eq!(&ids[..2], &[kept, failed]);
    assert_eq!(open[0].description, r#"{"path":"/Patient"}"#);
    assert_eq!(open[0].opened_at_ms, 1_000);
    assert_eq!(
        open[1].last_error.as_deref(),
        Some("read-back answered 500")
    );
}

// Two `inkan serve` on one directory raced for checkpoints, EVM nonces and
// intents. Now the second writer stops at open; readers still open.
#[test]
fn a_second_writer_on_one_directory_is_refused_and_readers_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Ledger::open(dir.path(), &options()).unwrap();
    let second = Ledger::open(dir.path(), &options())
        .unwrap_err()
        .to_string();
    assert!(second.contains("another process is writing"), "{second}");
    let reader = Ledger::open_reader(dir.path(), &options()).unwrap();
    seal(&writer, "a", "1", patient("a", "1", "Yamada"));
    assert!(reader
        .seal(vec![SealRequest::Tombstone {
            key: key("a", "2"),
            backfilled: false
        }])
        .is_err());
    assert!(reader.checkpoint().is_err());
    drop(writer);
    assert!(Ledger::open(dir.path(), &options()).is_ok());
}

// Re-sealing a version key with different content reported `sealed`.
#[test]
fn resealing_a_key_with_other_content_is_a_conflict_and_the_first_seal_stands() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), &options()).unwrap();
    let first = seal(&ledger, "a", "1", patient("a", "1", "Yamada"));
    let request = |family: &str| SealRequest::Version {
        key: key("a", "1"),
        bytes: patient("a", "1", family),
        format: Format::Json,
        original_digest: None,
        backfilled: false,
    };
    let same = &ledger.seal(vec![request("Yamada")]).unwrap()[0];
    assert!(!same.newly_sealed && !same.conflict && same.leaf_index == first);
    let other = &ledger.seal(vec![request("Tanaka")]).unwrap()[0];
    assert!(!other.newly_sealed && other.conflict && other.leaf_index == first);
    let deletion = &ledger
        .seal(vec![SealRequest::Tombstone {
            key: key("a", "1"),
            backfilled: false,
        }])
        .unwrap()[0];
    assert!(deletion.conflict, "a deletion of a sealed version's key");
    assert!(ledger
        .check_version(&key("a", "1"), &patient("a", "1", "Yamada"), Format::Json)
        .is_ok_and(|c| c.as_str() == "verified"));
}

// The ledger database holds every salt: owner only, and so is its folder.
#[cfg(unix)]
#[test]
fn the_ledger_database_and_folder_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("ledger");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ledger = Ledger::open(&dir, &options()).unwrap();
    seal(&ledger, "a", "1", patient("a", "1", "Yamada"));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("ledger.sqlite")), 0o600);
    assert_eq!(mode(&dir.join("log.key")), 0o600);
    drop(ledger);
    // A signing key others can read is refused at open.
    std::fs::set_permissions(dir.join("log.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = Ledger::open(&dir, &options()).unwrap_err().to_string();
    assert!(error.contains("chmod 600"), "{error}");
}

// Tiles were written after the checkpoint row that covers them, and a full
// tile already on disk was never rewritten: a crash in between left torn
// tiles served `immutable` for a year. A torn full tile in the range a
// checkpoint publishes is now written again.
#[test]
fn a_torn_tile_left_by_a_crash_before_the_checkpoint_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), &options()).unwrap();
    for i in 0..300 {
        let id = format!("p{i}");
        seal(&ledger, &id, "1", patient(&id, "1", "Yamada"));
    }
    // The crash: the first full tiles half written, no checkpoint row.
    let tiles = ledger.tiles_dir();
    for torn in ["tile/0/000", "tile/entries/000"] {
        let path = tiles.join(torn);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, [0u8; 100]).unwrap();
    }
    ledger.checkpoint().unwrap().unwrap();
    let defects = ledger.fsck().unwrap();
    assert!(defects.is_empty(), "{defects:?}");
}

// `inkan verify` printed VERIFIED for a resource with no meta.versionId
// against a bundle for version 1 (and never checked XML's identity).
#[test]
fn a_resource_must_name_the_bundles_type_id_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), &options()).unwrap();
    let unversioned = br#"{"resourceType":"Patient","id":"x1","active":true}"#.to_vec();
    seal(&ledger, "x1", "1", unversioned.clone());
    let versioned = patient("x2", "1", "Ito");
    seal(&ledger, "x2", "1", versioned.clone());
    ledger.checkpoint().unwrap();
    let log_key = ledger.verifier();
    let bundle = ledger.proof_bundle(&key("x1", "1")).unwrap();
    let error = verify_bundle(&bundle, Some(&unversioned), &log_key)
        .unwrap_err()
        .to_string();
    assert!(error.contains("no meta.versionId"), "{error}");
    // XML naming another id is refused by name, before the commitment.
    let bundle = ledger.proof_bundle(&key("x2", "1")).unwrap();
    let xml = br#"<Patient xmlns="http://hl7.org/fhir"><id value="x3"/><meta><versionId value="1"/></meta></Patient>"#;
    let error = verify_bundle(&bundle, Some(xml), &log_key)
        .unwrap_err()
        .to_string();
    assert!(error.contains("id is \"x3\""), "{error}");
    verify_bundle(&bundle, Some(&versioned), &log_key).unwrap();
}

/// A store that commits and then reports a failure: the acknowledgement of
/// a durable commit lost on the way back (a network store's timeout after
/// COMMIT, a crash between fsync and reply). Everything else is the
/// embedded store's.
mod failed_but_persisted {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use ledger::leaf::LEAF_LEN;
    use ledger::merkle::Hash;
    use ledger::store::{
        AnchorHealth, AnchorState, Appended, CheckpointStore, Delivery, DeliveryQueue, IndexRecord,
        Intent, IntentJournal, LeafLog, NewEntry, SqliteStore, StoredCheckpoint, VersionIndex,
        VersionKey,
    };
    use ledger::Error;

    use super::*;

    #[derive(Debug)]
    struct LostAcknowledgements {
        inner: SqliteStore,
        /// How many of the next appends commit and then fail.
        lose_next: Arc<AtomicU32>,
    }

    impl LeafLog for LostAcknowledgements {
        fn append(&self, entries: Vec<NewEntry>) -> Result<Vec<Appended>, Error> {
            let appended = self.inner.append(entries)?;
            let lose = self
                .lose_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            match lose {
                true => Err(Error::Store(
                    "injected: committed, acknowledgement lost".into(),
                )),
                false => Ok(appended),
            }
        }
        fn size(&self) -> Result<u64, Error> {
            self.inner.size()
        }
        fn leaves(&self, start: u64, end: u64) -> Result<Vec<[u8; LEAF_LEN]>, Error> {
            self.inner.leaves(start, end)
        }
    }

    impl VersionIndex for LostAcknowledgements {
        fn find_version(&self, key: &VersionKey) -> Result<Option<IndexRecord>, Error> {
            self.inner.find_version(key)
        }
        fn find_by_content_digest(&self, digest: &Hash) -> Result<Vec<IndexRecord>, Error> {
            self.inner.find_by_content_digest(digest)
        }
        fn find_by_leaf_index(&self, index: u64) -> Result<Option<IndexRecord>, Error> {
            self.inner.find_by_leaf_index(index)
        }
        fn count_resource_versions(&self, resource_type: &str, id: &str) -> Result<u64, Error> {
            self.inner.count_resource_versions(resource_type, id)
        }
        fn newest_sealed(
            &self,
            resource_type: &str,
            id: &str,
        ) -> Result<Option<IndexRecord>, Error> {
            self.inner.newest_sealed(resource_type, id)
        }
        fn records(&self, start: u64, end: u64) -> Result<Vec<IndexRecord>, Error> {
            self.inner.records(start, end)
        }
    }

    impl IntentJournal for LostAcknowledgements {
        fn open_intent(&self, opened_at_ms: i64, description: &str) -> Result<u64, Error> {
            self.inner.open_intent(opened_at_ms, description)
        }
        fn close_intent(&self, intent_id: u64) -> Result<(), Error> {
            self.inner.close_intent(intent_id)
        }
        fn fail_intent(&self, intent_id: u64, reason: &str) -> Result<(), Error> {
            self.inner.fail_intent(intent_id, reason)
        }
        fn open_intents(&self) -> Result<Vec<Intent>, Error> {
            self.inner.open_intents()
        }
    }

    impl DeliveryQueue for LostAcknowledgements {
        fn due_deliveries(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>, Error> {
            self.inner.due_deliveries(now_ms, limit)
        }
        fn record_attempts(&self, leaf_indexes: &[u64]) -> Result<(), Error> {
            self.inner.record_attempts(leaf_indexes)
        }
        fn mark_delivered(&self, delivered: &[(u64, Option<String>)]) -> Result<(), Error> {
            self.inner.mark_delivered(delivered)
        }
        fn defer_deliveries(
            &self,
            leaf_indexes: &[u64],
            next: i64,
            error: &str,
        ) -> Result<(), Error> {
            self.inner.defer_deliveries(leaf_indexes, next, error)
        }
        fn delivery_backlog(&self) -> Result<(u64, Option<i64>), Error> {
            self.inner.delivery_backlog()
        }
        fn queued_deliveries(&self) -> Result<Vec<u64>, Error> {
            self.inner.queued_deliveries()
        }
    }

    impl CheckpointStore for LostAcknowledgements {
        fn store_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), Error> {
            self.inner.store_checkpoint(checkpoint)
        }
        fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, Error> {
            self.inner.latest_checkpoint()
        }
        fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, Error> {
            self.inner.checkpoints()
        }
        fn checkpoint_covering(&self, size: u64) -> Result<Option<StoredCheckpoint>, Error> {
            self.inner.checkpoint_covering(size)
        }
        fn checkpoints_after(&self, size: u64) -> Result<(u64, Option<u64>), Error> {
            self.inner.checkpoints_after(size)
        }
        fn checkpoint_time(&self, size: u64) -> Result<Option<i64>, Error> {
            self.inner.checkpoint_time(size)
        }
    }

    impl AnchorState for LostAcknowledgements {
        fn store_receipt(&self, size: u64, backend: &str, receipt: &str) -> Result<(), Error> {
            self.inner.store_receipt(size, backend, receipt)
        }
        fn receipts(&self, size: u64) -> Result<Vec<(String, String)>, Error> {
            self.inner.receipts(size)
        }
        fn last_anchored(&self, backend: &str) -> Result<Option<u64>, Error> {
            self.inner.last_anchored(backend)
        }
        fn record_anchor_failure(&self, backend: &str, error: &str) -> Result<(), Error> {
            self.inner.record_anchor_failure(backend, error)
        }
        fn anchor_health(&self) -> Result<Vec<AnchorHealth>, Error> {
            self.inner.anchor_health()
        }
    }

    fn version(id: &str) -> SealRequest {
        SealRequest::Version {
            key: key(id, "1"),
            bytes: patient(id, "1", "Yamada"),
            format: Format::Json,
            original_digest: None,
            backfilled: false,
        }
    }

    #[test]
    fn a_seal_that_failed_but_persisted_is_retried_into_the_same_leaf_and_proves() {
        let dir = tempfile::tempdir().unwrap();
        let lose_next = Arc::new(AtomicU32::new(0));
        let store = LostAcknowledgements {
            inner: SqliteStore::open(&dir.path().join("faulty.sqlite")).unwrap(),
            lose_next: lose_next.clone(),
        };
        let ledger = Ledger::builder(dir.path(), &options())
            .store(Box::new(store))
            .open()
            .unwrap();
        ledger.seal(vec![version("a")]).unwrap();

        lose_next.store(1, Ordering::SeqCst);
        assert!(
            ledger.seal(vec![version("b")]).is_err(),
            "the caller hears of a failure"
        );
        // The caller retries, as the gateway's recovery does: the same leaf,
        // not a second one.
        let retried = ledger.seal(vec![version("b")]).unwrap();
        assert_eq!(retried[0].leaf_index, 1);
        assert!(!retried[0].newly_sealed);
        let after = ledger.seal(vec![version("c")]).unwrap();
        assert_eq!(after[0].leaf_index, 2, "no gap, no duplicate");

        // The tree the checkpoint signs includes the persisted leaf, and
        // every version proves against it.
        let checkpoint = ledger.checkpoint().unwrap().expect("the tree grew");
        assert_eq!(checkpoint.size, 3);
        let log_key = ledger.verifier();
        for id in ["a", "b", "c"] {
            let bundle = ledger.proof_bundle(&key(id, "1")).unwrap();
            verify_bundle(&bundle, Some(&patient(id, "1", "Yamada")), &log_key).unwrap();
        }
    }
}
