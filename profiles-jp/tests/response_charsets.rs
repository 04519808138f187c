//! Responses in a legacy charset, cross-checked against the decoders
//! clients actually use: every BMP code point (and a few beyond), written
//! into a FHIR JSON and a FHIR XML body, encoded by `encode_escaped` in each
//! charset, must decode without error under Python's strict codecs, iconv
//! and nkf (and our own decoder), and give back exactly the original text
//! once the escapes are undone (a JSON parse; numeric character references).

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use profiles_jp::charset::{decode, encode_escaped, Escape, JpCharset};

/// Every Unicode scalar value of the BMP (JIS X 0208 and 0212, the NEC and
/// IBM extension rows, half-width kana, U+2212, ¥, ‾, 〜 and ～, private
/// use, controls — everything), then some beyond it.
fn sample() -> Vec<char> {
    let mut chars: Vec<char> = (0..=0xFFFF).filter_map(char::from_u32).collect();
    chars.extend(
        [
            0x1F600, 0x20000, 0x20B9F, 0x2A6D6, 0xE0100, 0xF0000, 0x10FFFD,
        ]
        .into_iter()
        .filter_map(char::from_u32),
    );
    chars
}

/// The sample as JSON strings of 64 characters (serde_json escapes what
/// JSON requires: controls, `"` and `\`).
fn json_body() -> (String, Vec<String>) {
    let strings: Vec<String> = sample()
        .chunks(64)
        .map(|chunk| chunk.iter().collect())
        .collect();
    let body = serde_json::json!({"resourceType": "Basic", "text": strings}).to_string();
    (body, strings)
}

/// The sample as XML attribute values.
fn xml_body() -> String {
    let mut body = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Basic xmlns=\"http://hl7.org/fhir\">\n",
    );
    for chunk in sample().chunks(64) {
        body.push_str("<text value=\"");
        for &c in chunk {
            match c {
                '&' => body.push_str("&amp;"),
                '<' => body.push_str("&lt;"),
                '>' => body.push_str("&gt;"),
                '"' => body.push_str("&quot;"),
                _ => body.push(c),
            }
        }
        body.push_str("\"/>\n");
    }
    body.push_str("</Basic>\n");
    body
}

/// Numeric character references (the only escapes `encode_escaped` writes
/// in XML) back to characters.
fn unescape_xml(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("&#x") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find(';').unwrap() + at;
        let code = u32::from_str_radix(&rest[at + 3..end], 16).unwrap();
        out.push(char::from_u32(code).unwrap());
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Where `got` first differs from `want`, for a failure message.
fn first_difference(got: &str, want: &str) -> String {
    let at = got
        .chars()
        .zip(want.chars())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| got.chars().count().min(want.chars().count()));
    let show = |s: &str| -> String {
        s.chars()
            .skip(at)
            .take(4)
            .map(|c| format!("U+{:04X} ", c as u32))
            .collect()
    };
    format!("at char {at}, got {}for {}", show(got), show(want))
}

/// Runs a program with `input` on stdin; its stdout as UTF-8. A missing
/// program or a decoding error fails the test: an oracle that skips proves
/// nothing.
fn pipe(program: &str, args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program} is an oracle here ({e}); scripts/test.sh installs it")
        });
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Write from a thread: the decoder's output may fill the pipe first.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Python's codec `codec`, strict (the default error handler).
const PYTHON_DECODE: &str =
    "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read().decode(sys.argv[1]).encode('utf-8'))";

/// A decoder: a name for messages and a function from bytes to text.
type Decoder = (String, Box<dyn Fn(&[u8]) -> String>);

fn python(codec: &'static str) -> Decoder {
    (
        format!("Python {codec}"),
        Box::new(move |bytes| pipe("python3", &["-c", PYTHON_DECODE, codec], bytes)),
    )
}

fn iconv(charset: &'static str) -> Decoder {
    (
        format!("iconv -f {charset}"),
        Box::new(move |bytes| pipe("iconv", &["-f", charset, "-t", "UTF-8"], bytes)),
    )
}

/// nkf with its defaults (half-width kana widened: there must be none),
/// writing UTF-8; `-m0` turns off its MIME decoding of `=?…?=` words,
/// which it applies to any input and is not part of the charset.
fn nkf(input: &'static str) -> Decoder {
    (
        format!("nkf {input}"),
        Box::new(move |bytes| pipe("nkf", &[input, "-w", "-m0"], bytes)),
    )
}

fn ours(charset: JpCharset) -> Decoder {
    (
        "profiles-jp (encoding_rs)".to_owned(),
        Box::new(move |bytes| decode(bytes, charset).unwrap().text),
    )
}

/// The decoders of each charset, and whether they read JSON (iconv's
/// SHIFT_JIS reads 0x5C as ¥, so no JSON with a backslash survives it).
fn decoders(charset: JpCharset) -> Vec<(Decoder, bool)> {
    match charset {
        JpCharset::ShiftJis => vec![
            (python("shift_jis"), true),
            (python("cp932"), true),
            (iconv("CP932"), true),
            (iconv("SHIFT_JIS"), false),
            (nkf("-S"), true),
            (nkf("--ic=CP932"), true),
            (ours(charset), true),
        ],
        JpCharset::EucJp => vec![
            (python("euc_jp"), true),
            (iconv("EUC-JP"), true),
            (nkf("-E"), true),
            (ours(charset), true),
        ],
        JpCharset::Iso2022Jp => vec![
            (python("iso2022_jp"), true),
            (iconv("ISO-2022-JP"), true),
            (nkf("-J"), true),
            (ours(charset), true),
        ],
        JpCharset::Utf8 => Vec::new(),
    }
}

const LEGACY: [JpCharset; 3] = [JpCharset::ShiftJis, JpCharset::EucJp, JpCharset::Iso2022Jp];

#[test]
fn every_bmp_character_survives_every_decoder_in_json() {
    let (body, strings) = json_body();
    for charset in LEGACY {
        let bytes = encode_escaped(&body, charset, Escape::Json);
        for ((name, decoder), reads_json) in decoders(charset) {
            if !reads_json {
                continue;
            }
            let text = decoder(&bytes);
            let parsed: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{charset:?} by {name}: not JSON ({e})"));
            let got = parsed["text"].as_array().unwrap();
            assert_eq!(got.len(), strings.len(), "{charset:?} by {name}");
            for (got, want) in got.iter().zip(&strings) {
                let got = got.as_str().unwrap();
                if got != want {
                    panic!("{charset:?} by {name}: {}", first_difference(got, want));
                }
            }
        }
    }
}

#[test]
fn every_bmp_character_survives_every_decoder_in_xml() {
    let body = xml_body();
    for charset in LEGACY {
        let bytes = encode_escaped(&body, charset, Escape::Xml);
        for ((name, decoder), _) in decoders(charset) {
            let text = unescape_xml(&decoder(&bytes));
            if text != body {
                panic!("{charset:?} by {name}: {}", first_difference(&text, &body));
            }
        }
    }
}

/// What the repertoire is, from the outside: JIS X 0208 is written as
/// bytes, everything else escaped, the same way in the three charsets
/// (Shift_JIS also escapes the cells cp932 reads differently).
#[test]
fn what_is_written_and_what_is_escaped() {
    #[rustfmt::skip]
    let cases: &[(&str, JpCharset, &[u8])] = &[
        ("山田",       JpCharset::ShiftJis,  b"\x8e\x52\x93\x63"),
        ("山田",       JpCharset::EucJp,     b"\xbb\xb3\xc5\xc4"),
        ("山田",       JpCharset::Iso2022Jp, b"\x1b$B;3ED\x1b(B"),
        ("〜",         JpCharset::ShiftJis,  b"\\u301c"),        // 1-33: cp932 reads U+FF5E
        ("〜",         JpCharset::EucJp,     b"\\u301c"),        // and so does encoding_rs (WHATWG)
        ("〜",         JpCharset::Iso2022Jp, b"\\u301c"),
        ("～",         JpCharset::ShiftJis,  b"\\uff5e"),        // and shift_jis, euc_jp U+301C
        ("−",          JpCharset::EucJp,     b"\\u2212"),
        ("－",         JpCharset::EucJp,     b"\\uff0d"),
        ("＼",         JpCharset::EucJp,     b"\xa1\xc0"),       // 1-32: every decoder reads U+FF3C
        ("￥",         JpCharset::EucJp,     b"\\uffe5"),        // nkf reads 1-79 as U+00A5
        ("¥‾",         JpCharset::ShiftJis,  b"\\u00a5\\u203e"), // JIS X 0201 Roman
        ("ｱ",          JpCharset::ShiftJis,  b"\\uff71"),        // half-width kana
        ("ｱ",          JpCharset::EucJp,     b"\\uff71"),
        ("ｱ",          JpCharset::Iso2022Jp, b"\\uff71"),
        ("①",          JpCharset::ShiftJis,  b"\\u2460"),        // NEC row 13
        ("髙",         JpCharset::ShiftJis,  b"\\u9ad9"),        // IBM extension
        ("丂",         JpCharset::EucJp,     b"\\u4e02"),        // JIS X 0212
        ("😀",         JpCharset::EucJp,     b"\\ud83d\\ude00"),
        ("a山b",       JpCharset::Iso2022Jp, b"a\x1b$B;3\x1b(Bb"),
        ("山ｱ山",      JpCharset::Iso2022Jp, b"\x1b$B;3\x1b(B\\uff71\x1b$B;3\x1b(B"),
        ("\\~",        JpCharset::ShiftJis,  b"\\~"),            // JSON: 0x5C is unavoidable
        ("\u{1b}",     JpCharset::Iso2022Jp, b"\\u001b"),
    ];
    for &(text, charset, want) in cases {
        assert_eq!(
            encode_escaped(text, charset, Escape::Json),
            want,
            "{text:?} in {charset:?}"
        );
    }
    #[rustfmt::skip]
    let xml: &[(&str, JpCharset, &[u8])] = &[
        ("〜①",        JpCharset::ShiftJis,  b"&#x301C;&#x2460;"),
        ("\\~",        JpCharset::ShiftJis,  b"&#x5C;&#x7E;"),   // iconv SHIFT_JIS: ¥ and ‾
        ("\\~",        JpCharset::EucJp,     b"\\~"),
        ("𠮟",         JpCharset::Iso2022Jp, b"&#x20B9F;"),
    ];
    for &(text, charset, want) in xml {
        assert_eq!(
            encode_escaped(text, charset, Escape::Xml),
            want,
            "{text:?} in {charset:?}"
        );
    }
}

/// Why a Shift_JIS JSON body is not checked with `iconv -f SHIFT_JIS`: it
/// decodes JIS X 0201 Roman, where 0x5C is ¥ — and JSON escapes are
/// written with 0x5C. `iconv -f CP932` (Windows-31J) reads a backslash.
#[test]
fn iconv_shift_jis_reads_the_backslash_byte_as_yen() {
    let (name, shift_jis) = iconv("SHIFT_JIS");
    assert_eq!(shift_jis(b"\\~"), "\u{A5}\u{203E}", "{name}");
    let (name, cp932) = iconv("CP932");
    assert_eq!(cp932(b"\\~"), "\\~", "{name}");
}
