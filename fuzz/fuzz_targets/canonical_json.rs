//! The canonical form of FHIR JSON: never panics, never overflows the
//! stack, and is idempotent (the canonical form of a canonical form is
//! itself — else a verifier re-canonicalizing would disagree).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(canonical) = ledger::canonical::canonicalize(data) {
        let again = ledger::canonical::canonicalize(&canonical).expect("canonical output parses");
        assert_eq!(again, canonical, "the canonical form is not idempotent");
    }
});
