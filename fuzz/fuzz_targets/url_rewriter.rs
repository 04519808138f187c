//! The one-pass URL rewriter over upstream JSON and XML answers: never
//! panics, and valid JSON stays valid JSON (it edits strings only).
#![no_main]

use inkan::fhir::rewrite::{BaseUrl, Rewriter};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    static REWRITER: std::sync::OnceLock<Rewriter> = std::sync::OnceLock::new();
    let rewriter = REWRITER.get_or_init(|| {
        Rewriter::new([
            BaseUrl::parse("http://upstream.example:8080/fhir").expect("a base"),
            BaseUrl::parse("http://localhost:8080").expect("a base"),
        ])
    });
    let public = "https://gateway.example/fhir";
    if let Some(rewritten) = rewriter.rewrite_json(data, public) {
        if serde_json::from_slice::<serde_json::Value>(data).is_ok() {
            serde_json::from_slice::<serde_json::Value>(&rewritten)
                .expect("rewriting valid JSON keeps it valid");
        }
    }
    let _ = rewriter.rewrite_xml(data, public);
});
