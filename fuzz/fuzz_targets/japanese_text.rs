//! Legacy charset decoding and Japanese normalization, as a request body
//! goes through them: the first byte picks the declared charset (or none),
//! the rest is the body. Never panics; what comes out is UTF-8 JSON.
#![no_main]

use inkan::config::JapaneseConfig;
use inkan::japanese::Japanese;

const LABELS: [Option<&str>; 5] = [
    None,
    Some("Shift_JIS"),
    Some("EUC-JP"),
    Some("ISO-2022-JP"),
    Some("windows-31j"),
];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    static JAPANESE: std::sync::OnceLock<Japanese> = std::sync::OnceLock::new();
    let japanese = JAPANESE.get_or_init(|| {
        Japanese::from_config(&JapaneseConfig::default()).expect("the default configuration")
    });
    let label = LABELS[usize::from(selector) % LABELS.len()];
    let Ok((decoded, _)) = japanese.decode(bytes::Bytes::copy_from_slice(body), label) else {
        return;
    };
    assert!(
        std::str::from_utf8(&decoded).is_ok(),
        "decoding produced invalid UTF-8"
    );
    if let Ok((normalized, _, _)) = japanese.process_json(decoded) {
        serde_json::from_slice::<serde_json::Value>(&normalized)
            .expect("normalization writes valid JSON");
    }
    for charset in ["Shift_JIS", "EUC-JP", "ISO-2022-JP"] {
        let Ok(charset) = profiles_jp::charset::JpCharset::from_label(charset) else {
            continue;
        };
        let _ = profiles_jp::charset::decode(body, charset);
    }
});
