//! The canonical form of FHIR XML (fhirbolt behind the nesting bound):
//! never panics or overflows the stack; its output is canonical JSON.
#![no_main]

use ledger::resource::{canonical_resource, Format};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(canonical) = canonical_resource(data, Format::Xml) {
        let again = ledger::canonical::canonicalize(&canonical).expect("canonical output parses");
        assert_eq!(again, canonical);
    }
});
