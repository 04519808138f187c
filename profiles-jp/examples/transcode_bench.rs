//! Decode + normalize + re-serialize throughput on a large Shift_JIS
//! transaction Bundle (used by bench/japanese.sh).
//!
//!   transcode_bench OUT.sjis [megabytes, default 10]
//!
//! Builds the Bundle from JP Core-shaped Patients with half-width kana,
//! CP932 wave dashes and full-width digits, writes it to OUT.sjis (for
//! iconv and nkf to read), then times the full path three times and prints
//! `bytes seconds` of the best run.

// A benchmark reports failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use profiles_jp::charset::{decode, JpCharset};
use profiles_jp::resource::{normalize, Rules};

fn main() {
    let mut args = std::env::args().skip(1);
    let out = args.next().expect("usage: transcode_bench OUT.sjis [MB]");
    let megabytes: usize = args.next().map_or(10, |m| m.parse().unwrap());
    let mut entries = Vec::new();
    let mut size = 0;
    let mut i = 0;
    while size < megabytes * 1_000_000 {
        let entry = serde_json::json!({
            "fullUrl": format!("urn:uuid:00000000-0000-4000-8000-{i:012}"),
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.11311234567", "value": format!("{i:08}")}],
                "name": [
                    {"use": "official", "text": "山田\u{3000}太郎", "family": "山田", "given": ["太郎"]},
                    {"use": "official", "text": "ﾔﾏﾀﾞ ﾀﾛｳ", "family": "ﾔﾏﾀﾞ", "given": ["ﾀﾛｳ"]}
                ],
                "telecom": [{"system": "phone", "value": "０３ー１２３４ー５６７８"}],
                "gender": "male",
                "birthDate": "1970-01-01",
                "address": [{"text": "東京都新宿区西新宿２－８－１ 都庁第一本庁舎1\u{FF5E}2階", "postalCode": "１６３８００１"}]
            },
            "request": {"method": "POST", "url": "Patient"}
        });
        size += entry.to_string().len();
        entries.push(entry);
        i += 1;
    }
    let bundle =
        serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
            .to_string();
    let (sjis, _, unmappable) = encoding_rs::SHIFT_JIS.encode(&bundle);
    assert!(!unmappable);
    std::fs::write(&out, &sjis).unwrap();

    let rules = Rules::default();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let decoded = decode(&sjis, JpCharset::ShiftJis).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&decoded.text).unwrap();
        let changes = normalize(&mut value, &rules).unwrap();
        let json = serde_json::to_vec(&value).unwrap();
        assert!(changes.total() > 0 && !json.is_empty());
        best = best.min(started.elapsed().as_secs_f64());
    }
    // Where the time goes (stderr): each stage alone, best of 3.
    let stage = |f: &dyn Fn()| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    let decoded = decode(&sjis, JpCharset::ShiftJis).unwrap().text;
    let value: serde_json::Value = serde_json::from_str(&decoded).unwrap();
    eprintln!(
        "decode {:.4} s, parse {:.4} s, normalize {:.4} s, serialize {:.4} s",
        stage(&|| {
            decode(&sjis, JpCharset::ShiftJis).unwrap();
        }),
        stage(&|| {
            serde_json::from_str::<serde_json::Value>(&decoded).unwrap();
        }),
        stage(&|| {
            let mut v = value.clone();
            normalize(&mut v, &rules).unwrap();
        }),
        stage(&|| {
            serde_json::to_vec(&value).unwrap();
        }),
    );
    println!("{} {best:.4}", sjis.len());
}
