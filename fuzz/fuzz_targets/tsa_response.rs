//! RFC 3161 responses and tokens (DER, CMS, X.509) as a TSA — or whoever
//! answers in its name — sends them. Never panics; nothing the fuzzer makes
//! is accepted for a note it never saw. The trust anchors come from
//! scripts/fuzz.sh (`INKAN_FUZZ_TSA_CA`, made by scripts/tsa-shim.py).
#![no_main]

use ledger::tsa::{accept_response, verify_token, TrustAnchors};

const NOTE: &str = "fuzz.example/inkan\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u{2014} fuzz.example/inkan AAAA\n";

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    static TRUST: std::sync::OnceLock<TrustAnchors> = std::sync::OnceLock::new();
    let trust = TRUST.get_or_init(|| {
        let path = std::env::var("INKAN_FUZZ_TSA_CA").expect("run through scripts/fuzz.sh");
        TrustAnchors::from_pem(&std::fs::read(path).expect("the TSA CA file")).expect("a CA")
    });
    // The note's imprint is one the fuzzer cannot produce a signature for.
    let _ = accept_response(data, NOTE, 1, None, trust);
    let _ = verify_token(data, NOTE, Some("1.2.3.4"), trust);
});
