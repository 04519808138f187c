//! What a verifier reads from strangers: proof bundles, signed notes and
//! checkpoints, verifier keys. Never panics; a bundle from the fuzzer never
//! verifies against a key it was not signed with.
#![no_main]

use ledger::bundle::{verify_bundle, ProofBundle};
use ledger::note::{Checkpoint, NoteVerifier};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    static KEY: std::sync::OnceLock<NoteVerifier> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        ledger::note::NoteSigner::generate("fuzz.example/inkan")
            .expect("a fresh key")
            .verifier()
    });
    if let Ok(bundle) = serde_json::from_slice::<ProofBundle>(data) {
        assert!(verify_bundle(&bundle, Some(data), key).is_err());
        assert!(verify_bundle(&bundle, None, key).is_err());
        let _ = bundle.to_tlog_proof();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Checkpoint::parse(text);
        assert!(Checkpoint::verify(text, key).is_err());
        assert!(key.verify(text).is_err());
        let _ = NoteVerifier::parse(text);
    }
});
