//! Decoding cross-checked against an independent implementation: Python's
//! `cp932`, `euc_jp` and `iso2022_jp` codecs encode the Japanese text of the
//! JP Core examples, and our decoder must give the same text back — equal
//! after mapping-variant folding, which is exactly where the two mapping
//! traditions (Microsoft vs JIS, e.g. 0xA1C1 → U+FF5E or U+301C) differ.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use profiles_jp::charset::{decode, JpCharset};
use profiles_jp::text::VariantTable;

/// Every string value in the JP Core example resources, plus characters
/// from the NEC and IBM extension rows.
fn corpus() -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/jp-core/json");
    let mut text = String::from("①②⑳Ⅰ㈱㍉髙﨑德ﾔﾏﾀﾞﾀﾛｳ～∥－￠￡￢");
    fn walk(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::String(s) if !s.is_ascii() => {
                out.push_str(s);
                out.push('\n');
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            serde_json::Value::Object(map) => map.values().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    for entry in std::fs::read_dir(dir).expect("jp-core fixtures") {
        let path = entry.unwrap().path();
        let value: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        walk(&value, &mut text);
    }
    text
}

const ORACLE: &str = r#"
import sys, json
text = sys.stdin.read()
out = {}
for codec in ("cp932", "euc_jp", "iso2022_jp"):
    # The lines the codec can represent: [text, bytes as hex] pairs.
    pairs = []
    for line in text.split("\n"):
        try:
            pairs.append([line, line.encode(codec).hex()])
        except UnicodeEncodeError:
            pass
    out[codec] = pairs
print(json.dumps(out))
"#;

#[test]
fn python_codecs_and_our_decoder_agree() {
    let corpus = corpus();
    let mut child = Command::new("python3")
        .args(["-c", ORACLE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is the oracle");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(corpus.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let encoded: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let table = VariantTable::default();
    for (codec, charset) in [
        ("cp932", JpCharset::ShiftJis),
        ("euc_jp", JpCharset::EucJp),
        ("iso2022_jp", JpCharset::Iso2022Jp),
    ] {
        let pairs = encoded[codec].as_array().unwrap();
        assert!(
            pairs.len() > 50,
            "{codec}: only {} lines encodable",
            pairs.len()
        );
        for pair in pairs {
            let (text, hex) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
            let ours = decode(&hex_decode(hex), charset).unwrap_or_else(|e| panic!("{codec}: {e}"));
            assert_eq!(table.fold(&ours.text).0, table.fold(text).0, "{codec}");
        }
    }
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Runs a program with `input` on stdin; its stdout. Missing programs fail
/// the test loudly: an oracle test that skips proves nothing.
fn pipe(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program} is an oracle here ({e}); scripts/test.sh installs it")
        });
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{program} failed");
    output.stdout
}

#[test]
fn nkf_and_our_decoder_agree_on_shift_jis_and_euc_jp() {
    // The corpus lines every codec here can represent, encoded by encoding_rs
    // (Windows-31J), decoded by nkf (-x keeps half-width kana as they are).
    let table = VariantTable::default();
    let corpus = corpus();
    let lines: Vec<&str> = corpus
        .lines()
        .filter(|line| {
            let (_, _, unmappable) = encoding_rs::EUC_JP.encode(line);
            !unmappable
        })
        .collect();
    assert!(lines.len() > 50, "{}", lines.len());
    let text = lines.join("\n");
    for (charset, flag, encoding) in [
        (JpCharset::ShiftJis, "-S", encoding_rs::SHIFT_JIS),
        (JpCharset::EucJp, "-E", encoding_rs::EUC_JP),
    ] {
        let bytes = encoding.encode(&text).0.into_owned();
        let by_nkf = String::from_utf8(pipe("nkf", &[flag, "-w", "-x"], &bytes)).unwrap();
        let ours = decode(&bytes, charset).unwrap().text;
        for (theirs, mine) in by_nkf.lines().zip(ours.lines()) {
            assert_eq!(table.fold(mine).0, table.fold(theirs).0, "nkf {flag}");
        }
        assert_eq!(by_nkf.lines().count(), ours.lines().count());
    }
}

#[test]
fn jaconv_and_our_kana_widening_agree() {
    // Every half-width katakana alone and followed by each sound mark; the
    // cases where jaconv leaves a mark half-width (it has no precomposed
    // kana, or the mark stands alone) are our documented product decision
    // (a lone mark becomes ゛/゜) and are compared on the kana only.
    let mut cases: Vec<String> = Vec::new();
    for c in '\u{FF61}'..='\u{FF9D}' {
        cases.push(c.to_string());
        cases.push(format!("{c}\u{FF9E}"));
        cases.push(format!("{c}\u{FF9F}"));
    }
    let input = cases.join("\n");
    let script = "import sys, jaconv; sys.stdout.write(jaconv.h2z(sys.stdin.read(), kana=True, ascii=False, digit=False))";
    let theirs = String::from_utf8(pipe("python3", &["-c", script], input.as_bytes())).unwrap();
    let mut compared = 0;
    for (case, expected) in cases.iter().zip(theirs.split('\n')) {
        let (ours, _) = profiles_jp::text::widen_kana(case);
        if expected.contains(['\u{FF9E}', '\u{FF9F}']) {
            // jaconv kept the mark (ｦﾞ → ヲﾞ where we compose ヺ, or a
            // lone mark): the kana it widened must lead ours, decomposed.
            use unicode_normalization::UnicodeNormalization;
            let kana: String = expected
                .chars()
                .filter(|c| !matches!(c, '\u{FF9E}' | '\u{FF9F}'))
                .collect();
            let decomposed: String = ours.nfd().collect();
            assert!(
                decomposed.starts_with(&kana),
                "{case:?}: ours {ours:?}, jaconv {expected:?}"
            );
            continue;
        }
        assert_eq!(ours, expected, "{case:?}");
        compared += 1;
    }
    assert!(compared >= 80, "only {compared} cases compared exactly");
}
