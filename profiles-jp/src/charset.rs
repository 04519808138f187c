//! Decoding request bodies in the charsets Japanese hospital systems send.
//!
//! encoding_rs implements the WHATWG Encoding Standard: its Shift_JIS is
//! Windows-31J (CP932, NEC and IBM extension rows included), its EUC-JP
//! decodes JIS X 0212 (0x8F) and half-width kana (0x8E), and its
//! ISO-2022-JP is the RFC 1468 form SS-MIX2 storage uses.
//!
//! Responses are encoded the other way by [`encode_escaped`], within the
//! repertoire every common strict decoder agrees on, not by encoding_rs's
//! encoders (which write what only WHATWG decoders read back).

use std::sync::OnceLock;

use encoding_rs::{DecoderResult, Encoding, EUC_JP, ISO_2022_JP, SHIFT_JIS, UTF_8};

use crate::{jisx0208, Error};

/// A charset inkan accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpCharset {
    /// UTF-8 (a leading byte-order mark is removed).
    Utf8,
    /// Shift_JIS, decoded as Windows-31J (CP932).
    ShiftJis,
    /// EUC-JP, JIS X 0212 and half-width kana included.
    EucJp,
    /// ISO-2022-JP (RFC 1468).
    Iso2022Jp,
}

impl JpCharset {
    /// Parses a `charset=` label (any case). Shift_JIS labels all mean
    /// Windows-31J, which is what Japanese Windows systems actually send.
    pub fn from_label(label: &str) -> Result<JpCharset, Error> {
        match label.trim().trim_matches('"').to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Ok(JpCharset::Utf8),
            "shift_jis" | "shift-jis" | "sjis" | "x-sjis" | "ms_kanji" | "csshiftjis"
            | "windows-31j" | "cp932" | "ms932" => Ok(JpCharset::ShiftJis),
            "euc-jp" | "eucjp" | "x-euc-jp" | "cseucpkdfmtjapanese" => Ok(JpCharset::EucJp),
            "iso-2022-jp" | "csiso2022jp" => Ok(JpCharset::Iso2022Jp),
            other => Err(Error::UnsupportedCharset(other.to_owned())),
        }
    }

    /// The name used in messages, e.g. `Shift_JIS (Windows-31J)` (not a
    /// `charset=` label).
    pub fn name(self) -> &'static str {
        match self {
            JpCharset::Utf8 => "UTF-8",
            JpCharset::ShiftJis => "Shift_JIS (Windows-31J)",
            JpCharset::EucJp => "EUC-JP",
            JpCharset::Iso2022Jp => "ISO-2022-JP",
        }
    }

    fn encoding(self) -> &'static Encoding {
        match self {
            JpCharset::Utf8 => UTF_8,
            JpCharset::ShiftJis => SHIFT_JIS,
            JpCharset::EucJp => EUC_JP,
            JpCharset::Iso2022Jp => ISO_2022_JP,
        }
    }
}

/// A decoded body and how it was decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The decoded text, without the byte-order mark.
    pub text: String,
    /// The charset it was decoded as.
    pub charset: JpCharset,
    /// True when the charset was detected rather than declared.
    pub detected: bool,
    /// True when a UTF-8 byte-order mark was removed.
    pub bom_stripped: bool,
}

/// Decodes `bytes` strictly as `charset`: the first invalid sequence is an
/// error naming its byte offset; nothing is ever replaced with U+FFFD.
pub fn decode(bytes: &[u8], charset: JpCharset) -> Result<Decoded, Error> {
    let (body, bom_stripped) = match (charset, bytes.strip_prefix(b"\xEF\xBB\xBF")) {
        (JpCharset::Utf8, Some(rest)) => (rest, true),
        _ => (bytes, false),
    };
    let text = decode_strict(body, charset).map_err(|offset| Error::InvalidBytes {
        charset: charset.name(),
        offset: offset + usize::from(bom_stripped) * 3,
    })?;
    Ok(Decoded {
        text,
        charset,
        detected: false,
        bom_stripped,
    })
}

/// Strict decode; `Err(offset)` of the first malformed sequence.
fn decode_strict(bytes: &[u8], charset: JpCharset) -> Result<String, usize> {
    if charset == JpCharset::Utf8 {
        return std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| e.valid_up_to());
    }
    let mut decoder = charset.encoding().new_decoder_without_bom_handling();
    let capacity = decoder
        .max_utf8_buffer_length_without_replacement(bytes.len())
        .unwrap_or(bytes.len() * 3 + 16);
    let mut text = String::with_capacity(capacity);
    let (result, read) = decoder.decode_to_string_without_replacement(bytes, &mut text, true);
    match result {
        DecoderResult::InputEmpty => Ok(text),
        // `read` counts the malformed sequence and the bytes after it that
        // were consumed to recognise it.
        DecoderResult::Malformed(bad, after) => Err(read - usize::from(bad) - usize::from(after)),
        DecoderResult::OutputFull => Err(read),
    }
}

/// Decodes a body whose charset was not declared: UTF-8 when it is valid
/// UTF-8, otherwise the Japanese charset the detector (chardetng, with the
/// `.jp` top-level domain as context) is confident of and that decodes
/// without error. Anything less is [`Error::Undetectable`].
pub fn decode_undeclared(bytes: &[u8]) -> Result<Decoded, Error> {
    // ISO-2022-JP is 7-bit, so it is also valid UTF-8: its escape
    // sequences decide first. (JSON and XML never carry a raw ESC.)
    if bytes.is_ascii() && has_iso_2022_jp_escape(bytes) {
        if let Ok(mut decoded) = decode(bytes, JpCharset::Iso2022Jp) {
            decoded.detected = true;
            return Ok(decoded);
        }
    }
    if let Ok(decoded) = decode(bytes, JpCharset::Utf8) {
        return Ok(decoded);
    }
    let mut detector = chardetng::EncodingDetector::new();
    detector.feed(bytes, true);
    let (guess, confident) = detector.guess_assess(Some(b"jp"), false);
    let charset = if guess == SHIFT_JIS {
        JpCharset::ShiftJis
    } else if guess == EUC_JP {
        JpCharset::EucJp
    } else {
        return Err(Error::Undetectable);
    };
    if !confident {
        return Err(Error::Undetectable);
    }
    let mut decoded = decode(bytes, charset).map_err(|_| Error::Undetectable)?;
    decoded.detected = true;
    Ok(decoded)
}

fn has_iso_2022_jp_escape(bytes: &[u8]) -> bool {
    bytes
        .windows(3)
        .any(|w| w == b"\x1b$B" || w == b"\x1b$@" || w == b"\x1b(J")
}

/// How a character the target charset lacks is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// JSON: `\uXXXX` (a surrogate pair beyond the BMP). Only valid where
    /// such characters can occur, i.e. inside JSON strings: outside them
    /// FHIR JSON is ASCII.
    Json,
    /// XML: a numeric character reference `&#xHHHH;` (text and attribute
    /// values, the only places non-ASCII occurs).
    Xml,
}

/// Encodes UTF-8 `text` in `charset`; every character the charset cannot
/// represent *exactly* is written as an escape, so decoding and parsing
/// gives back exactly the original text with any strict decoder of the
/// charset, not only ours.
///
/// The repertoire is the same in the three legacy charsets: ASCII and the
/// JIS X 0208 characters on whose bytes every decoder agrees — Python's
/// `shift_jis`, `cp932`, `euc_jp` and `iso2022_jp` codecs, iconv, nkf
/// (the table `scripts/gen-jisx0208.py` generates into `src/jisx0208.rs`)
/// and encoding_rs (the WHATWG decoders, checked when the table is first
/// used). Everything else is escaped: JIS X 0212, the NEC and IBM extension
/// rows, half-width kana (nkf widens them by default; ISO-2022-JP has
/// none), ¥ and ‾ (JIS X 0201 Roman), and the nine cells the decoders read
/// differently: 〜 ‖ − ¢ £ ¬ (cp932 and encoding_rs, whose WHATWG tables
/// follow Microsoft's in all three charsets, read ～ ∥ － ￠ ￡ ￢) and ￣ ― ￥
/// (nkf reads ‾ — ¥).
///
/// ASCII is written as is, with three exceptions: in ISO-2022-JP, ESC, SO
/// and SI (they would switch sets); in Shift_JIS XML, `\` and `~` (iconv's
/// SHIFT_JIS reads 0x5C and 0x7E as ¥ and ‾, JIS X 0201 Roman). JSON cannot
/// avoid 0x5C — its escapes are written with it — so a Shift_JIS JSON body
/// needs a decoder that reads 0x5C as `\`: every one here but `iconv -f
/// SHIFT_JIS` (`iconv -f CP932` does).
pub fn encode_escaped(text: &str, charset: JpCharset, escape: Escape) -> Vec<u8> {
    if charset == JpCharset::Utf8 {
        return text.as_bytes().to_vec();
    }
    let mut out = Vec::with_capacity(text.len() + 16);
    // ISO-2022-JP: whether the JIS X 0208 set is switched in.
    let mut in_jis = false;
    fn ascii(out: &mut Vec<u8>, in_jis: &mut bool, bytes: &[u8]) {
        if std::mem::take(in_jis) {
            out.extend_from_slice(b"\x1b(B");
        }
        out.extend_from_slice(bytes);
    }
    for c in text.chars() {
        if c.is_ascii() && !ascii_escaped(c, charset, escape) {
            ascii(&mut out, &mut in_jis, &[c as u8]);
            continue;
        }
        if let Some((row, cell)) = jis_x_0208_cell(c, charset) {
            match charset {
                JpCharset::ShiftJis => out.extend_from_slice(&shift_jis_bytes(row, cell)),
                JpCharset::EucJp => out.extend_from_slice(&[0xA0 + row, 0xA0 + cell]),
                JpCharset::Iso2022Jp => {
                    if !std::mem::replace(&mut in_jis, true) {
                        out.extend_from_slice(b"\x1b$B");
                    }
                    out.extend_from_slice(&[0x20 + row, 0x20 + cell]);
                }
                // Returned above.
                JpCharset::Utf8 => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
            continue;
        }
        let escaped = match escape {
            Escape::Json => {
                let mut units = [0u16; 2];
                c.encode_utf16(&mut units)
                    .iter()
                    .map(|u| format!("\\u{u:04x}"))
                    .collect::<String>()
            }
            Escape::Xml => format!("&#x{:X};", c as u32),
        };
        ascii(&mut out, &mut in_jis, escaped.as_bytes());
    }
    // ISO-2022-JP ends in ASCII.
    ascii(&mut out, &mut in_jis, b"");
    out
}

/// The ASCII characters written as escapes (see [`encode_escaped`]).
fn ascii_escaped(c: char, charset: JpCharset, escape: Escape) -> bool {
    match (charset, escape) {
        (JpCharset::Iso2022Jp, _) => matches!(c, '\x1b' | '\x0e' | '\x0f'),
        (JpCharset::ShiftJis, Escape::Xml) => matches!(c, '\\' | '~'),
        _ => false,
    }
}

/// The JIS X 0208 row and cell `c` is written with in `charset`, when every
/// decoder reads them back as `c`.
fn jis_x_0208_cell(c: char, charset: JpCharset) -> Option<(u8, u8)> {
    let code_point = u16::try_from(u32::from(c)).ok()?;
    let at = jisx0208::JIS_X_0208
        .binary_search_by_key(&code_point, |&(cp, ..)| cp)
        .ok()?;
    let (_, row, cell, _) = jisx0208::JIS_X_0208[at];
    (repertoire()[at] & charset_bit(charset) != 0).then_some((row, cell))
}

fn charset_bit(charset: JpCharset) -> u8 {
    match charset {
        JpCharset::ShiftJis => jisx0208::SHIFT_JIS,
        JpCharset::EucJp => jisx0208::EUC_JP,
        JpCharset::Iso2022Jp => jisx0208::ISO_2022_JP,
        JpCharset::Utf8 => 0,
    }
}

/// Row and cell (1–94 each) in Shift_JIS.
fn shift_jis_bytes(row: u8, cell: u8) -> [u8; 2] {
    let lead = ((row - 1) >> 1) + if row <= 62 { 0x81 } else { 0xC1 };
    let trail = match (row % 2, cell) {
        (1, ..=63) => cell + 0x3F,
        (1, _) => cell + 0x40,
        _ => cell + 0x9E,
    };
    [lead, trail]
}

/// A JIS X 0208 cell as `charset` writes it alone (ISO-2022-JP: switched
/// in and back out).
fn cell_bytes(row: u8, cell: u8, charset: JpCharset) -> Vec<u8> {
    match charset {
        JpCharset::ShiftJis => shift_jis_bytes(row, cell).to_vec(),
        JpCharset::EucJp => vec![0xA0 + row, 0xA0 + cell],
        JpCharset::Iso2022Jp => {
            let mut bytes = b"\x1b$B".to_vec();
            bytes.extend_from_slice(&[0x20 + row, 0x20 + cell]);
            bytes.extend_from_slice(b"\x1b(B");
            bytes
        }
        JpCharset::Utf8 => Vec::new(),
    }
}

/// The generated table's charset bits, each kept only where encoding_rs
/// (the WHATWG decoders) also reads the cell as the table's code point.
fn repertoire() -> &'static [u8] {
    static BITS: OnceLock<Vec<u8>> = OnceLock::new();
    BITS.get_or_init(|| {
        jisx0208::JIS_X_0208
            .iter()
            .map(|&(code_point, row, cell, bits)| {
                let expected = char::from_u32(code_point.into()).map(String::from);
                [JpCharset::ShiftJis, JpCharset::EucJp, JpCharset::Iso2022Jp]
                    .into_iter()
                    .filter(|&charset| {
                        bits & charset_bit(charset) != 0
                            && decode_strict(&cell_bytes(row, cell, charset), charset).ok()
                                == expected
                    })
                    .map(charset_bit)
                    .fold(0, |a, b| a | b)
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(text: &str, charset: JpCharset) -> Vec<u8> {
        let (bytes, _, unmappable) = charset.encoding().encode(text);
        assert!(!unmappable, "{text} not representable in {charset:?}");
        bytes.into_owned()
    }

    #[test]
    fn decoding_table() {
        #[rustfmt::skip]
        let cases: &[(&str, JpCharset)] = &[
            ("山田 太郎",                 JpCharset::ShiftJis),
            ("髙橋 﨑",                   JpCharset::ShiftJis),   // IBM extension rows
            ("①㈱～",                     JpCharset::ShiftJis),   // NEC row 13, U+FF5E
            ("ﾔﾏﾀﾞ ﾀﾛｳ",                  JpCharset::ShiftJis),   // half-width kana
            ("山田 太郎",                 JpCharset::EucJp),
            ("ﾔﾏﾀﾞ",                      JpCharset::EucJp),      // 0x8E half-width kana
            ("山田 太郎 ヤマダ",           JpCharset::Iso2022Jp),
        ];
        for (text, charset) in cases {
            let bytes = encode(text, *charset);
            let decoded = decode(&bytes, *charset).unwrap();
            assert_eq!(decoded.text, *text, "{charset:?}");
        }
    }

    #[test]
    fn euc_jp_decodes_jis_x_0212() {
        // 0x8F 0xB0 0xA1 is JIS X 0212 row 16 cell 1, U+4E02 (encoders
        // rarely produce it, so the bytes are spelled out).
        assert_eq!(
            decode(b"\x8f\xb0\xa1", JpCharset::EucJp).unwrap().text,
            "\u{4E02}"
        );
    }

    #[test]
    fn invalid_bytes_name_their_offset() {
        #[rustfmt::skip]
        let cases: &[(&[u8], JpCharset, usize)] = &[
            (b"abc\x81",                 JpCharset::ShiftJis, 3),  // truncated lead byte
            (b"ab\x82\x20cd",            JpCharset::ShiftJis, 2),  // lead byte + invalid trail
            (b"\xa4\xa2\xff",            JpCharset::EucJp,    2),
            (b"ok\xe3\x81",              JpCharset::Utf8,     2),
            (b"\xEF\xBB\xBFok\xff",      JpCharset::Utf8,     5),  // offset counts the BOM
            (b"\x1b$B\x7f\x7f",          JpCharset::Iso2022Jp, 3),
        ];
        for (bytes, charset, offset) in cases {
            match decode(bytes, *charset) {
                Err(Error::InvalidBytes { offset: got, .. }) => {
                    assert_eq!(got, *offset, "{bytes:?} as {charset:?}")
                }
                other => panic!("{bytes:?} as {charset:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn bom_is_stripped_and_reported() {
        let decoded = decode(b"\xEF\xBB\xBF{}", JpCharset::Utf8).unwrap();
        assert_eq!(decoded.text, "{}");
        assert!(decoded.bom_stripped);
    }

    #[test]
    fn labels() {
        for label in ["Shift_JIS", "windows-31j", "CP932", "\"sjis\""] {
            assert_eq!(
                JpCharset::from_label(label).unwrap(),
                JpCharset::ShiftJis,
                "{label}"
            );
        }
        assert_eq!(JpCharset::from_label("EUC-JP").unwrap(), JpCharset::EucJp);
        assert_eq!(
            JpCharset::from_label("iso-2022-jp").unwrap(),
            JpCharset::Iso2022Jp
        );
        assert!(JpCharset::from_label("koi8-r").is_err());
    }

    #[test]
    fn undeclared_bodies_are_detected_or_rejected() {
        let text = r#"{"resourceType":"Patient","name":[{"text":"山田 太郎","family":"山田","given":["太郎"]}],"address":[{"text":"東京都新宿区西新宿二丁目"}]}"#;
        for charset in [JpCharset::ShiftJis, JpCharset::EucJp, JpCharset::Iso2022Jp] {
            let decoded = decode_undeclared(&encode(text, charset)).unwrap();
            assert_eq!(decoded.text, text, "{charset:?}");
            assert_eq!(decoded.charset, charset);
            assert!(decoded.detected);
        }
        let utf8 = decode_undeclared(text.as_bytes()).unwrap();
        assert!(!utf8.detected);
        // Random high bytes are neither UTF-8 nor confidently Japanese.
        assert_eq!(
            decode_undeclared(b"\xff\xfe\xfd\xfc\x80\x80\x80"),
            Err(Error::Undetectable)
        );
    }

    #[test]
    fn any_text_survives_escaped_encoding_in_every_charset() {
        use rand::{Rng, SeedableRng};
        // Code points from the ranges FHIR text draws on: ASCII, kana of
        // both widths, JIS kanji, compatibility ideographs, the CP932
        // variants, symbols, private use, emoji, and variation selectors.
        const RANGES: &[(u32, u32)] = &[
            (0x20, 0x7E),
            (0xA0, 0xFF),
            (0x3000, 0x30FF),
            (0xFF61, 0xFF9F),
            (0x4E00, 0x9FFF),
            (0xF900, 0xFAFF),
            (0xFF01, 0xFF5E),
            (0x2010, 0x2312),
            (0xE000, 0xE0FF),
            (0x1F600, 0x1F64F),
            (0xE0100, 0xE01EF),
            (0x20000, 0x2A6DF),
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
        for case in 0..2_000 {
            let len = rng.gen_range(0..40);
            let text: String = (0..len)
                .filter_map(|_| {
                    let (lo, hi) = RANGES[rng.gen_range(0..RANGES.len())];
                    char::from_u32(rng.gen_range(lo..=hi))
                })
                .filter(|c| *c != '"' && *c != '\\' && *c != '<' && *c != '&')
                .collect();
            let json = serde_json::json!({ "resourceType": "Patient", "text": text }).to_string();
            let xml = format!("<Patient><text value=\"{text}\"/></Patient>");
            for charset in [
                JpCharset::ShiftJis,
                JpCharset::EucJp,
                JpCharset::Iso2022Jp,
                JpCharset::Utf8,
            ] {
                let bytes = encode_escaped(&json, charset, Escape::Json);
                let decoded = decode(&bytes, charset)
                    .unwrap_or_else(|e| panic!("case {case} {charset:?}: {e}"));
                let parsed: serde_json::Value = serde_json::from_str(&decoded.text).unwrap();
                assert_eq!(parsed["text"], text.as_str(), "case {case} {charset:?}");

                let bytes = encode_escaped(&xml, charset, Escape::Xml);
                let decoded = decode(&bytes, charset).unwrap();
                assert_eq!(unescape_xml(&decoded.text), xml, "case {case} {charset:?}");
            }
        }
    }

    /// The generated table is JIS X 0208 (6,879 characters), and each
    /// charset writes all of it but the nine cells the decoders read
    /// differently: 〜 ‖ − ¢ £ ¬, which cp932 and encoding_rs (WHATWG, in
    /// all three charsets) read as ～ ∥ － ￠ ￡ ￢, and ￣ ― ￥, which nkf
    /// reads as ‾ — ¥.
    #[test]
    fn repertoire_is_jis_x_0208_minus_the_disagreements() {
        assert_eq!(jisx0208::JIS_X_0208.len(), 6879);
        let written = |charset| {
            ('\u{80}'..='\u{FFFF}')
                .filter(|&c| jis_x_0208_cell(c, charset).is_some())
                .collect::<String>()
        };
        let all: String = jisx0208::JIS_X_0208
            .iter()
            .filter_map(|&(cp, ..)| char::from_u32(cp.into()))
            .collect();
        let missing = |charset| -> String {
            let written = written(charset);
            all.chars().filter(|&c| !written.contains(c)).collect()
        };
        #[rustfmt::skip]
        let cases = [
            (JpCharset::ShiftJis,  "¢£¬―‖−〜￣￥"),
            (JpCharset::EucJp,     "¢£¬―‖−〜￣￥"),
            (JpCharset::Iso2022Jp, "¢£¬―‖−〜￣￥"),
        ];
        for (charset, want) in cases {
            assert_eq!(missing(charset), want, "{charset:?}");
        }
        // Every written character is its cell's two bytes, and decodes back
        // with our decoder.
        for charset in [JpCharset::ShiftJis, JpCharset::EucJp, JpCharset::Iso2022Jp] {
            for c in written(charset).chars() {
                let bytes = encode_escaped(&c.to_string(), charset, Escape::Json);
                assert_eq!(decode(&bytes, charset).unwrap().text, c.to_string());
                // Two bytes (ISO-2022-JP: switched in and out), not an escape.
                let len = if charset == JpCharset::Iso2022Jp {
                    8
                } else {
                    2
                };
                assert_eq!(bytes.len(), len, "{c} in {charset:?}");
            }
        }
    }

    /// Numeric character references back to characters (test helper).
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
}
