//! String-level normalization rules and checks (the product decisions on
//! top of JP Core's character-encoding guide). Each function returns the new
//! string and how many changes it made, so the gateway can report them.
//!
//! No NFC/NFKC is ever applied to a whole value: they rewrite CJK
//! compatibility ideographs used in personal names (U+FA46 → U+6E1A).
//! The half-width kana table below is *generated* from NFKC one character
//! at a time, and dakuten composition uses NFC on one kana + mark pair only.

use std::collections::HashMap;
use std::sync::OnceLock;

use unicode_normalization::UnicodeNormalization;

/// The default mapping-variant folding: Microsoft (CP932) forms to the JIS
/// X 0208 forms ISO-2022-JP and EUC-JP decode to, so text from either
/// origin becomes identical.
pub const DEFAULT_VARIANT_TABLE: &[(char, char)] = &[
    ('\u{FF5E}', '\u{301C}'), // FULLWIDTH TILDE → WAVE DASH
    ('\u{2225}', '\u{2016}'), // PARALLEL TO → DOUBLE VERTICAL LINE
    ('\u{FF0D}', '\u{2212}'), // FULLWIDTH HYPHEN-MINUS → MINUS SIGN
    ('\u{FFE0}', '\u{00A2}'), // FULLWIDTH CENT SIGN → CENT SIGN
    ('\u{FFE1}', '\u{00A3}'), // FULLWIDTH POUND SIGN → POUND SIGN
    ('\u{FFE2}', '\u{00AC}'), // FULLWIDTH NOT SIGN → NOT SIGN
];

/// A mapping-variant table (one shared table per network, as JP Core asks).
#[derive(Debug, Clone)]
pub struct VariantTable {
    map: HashMap<char, char>,
}

impl Default for VariantTable {
    fn default() -> Self {
        VariantTable::new(DEFAULT_VARIANT_TABLE.iter().copied())
    }
}

impl VariantTable {
    pub fn new(pairs: impl IntoIterator<Item = (char, char)>) -> VariantTable {
        VariantTable {
            map: pairs.into_iter().collect(),
        }
    }

    /// Whether [`VariantTable::fold`] would change `s` (cheap: ASCII never).
    pub fn may_fold(&self, s: &str) -> bool {
        !s.is_ascii() && s.chars().any(|c| self.map.contains_key(&c))
    }

    /// Rule 1: folds mapping variants.
    pub fn fold(&self, s: &str) -> (String, usize) {
        let mut count = 0;
        let out = s
            .chars()
            .map(|c| match self.map.get(&c) {
                Some(&to) => {
                    count += 1;
                    to
                }
                None => c,
            })
            .collect();
        (out, count)
    }
}

const HALFWIDTH_VOICED: char = '\u{FF9E}';
const HALFWIDTH_SEMI_VOICED: char = '\u{FF9F}';
const COMBINING_VOICED: char = '\u{3099}';
const COMBINING_SEMI_VOICED: char = '\u{309A}';

/// U+FF61–U+FF9D (half-width punctuation and katakana) → full width, by
/// NFKC of each character alone. (U+FF9E/U+FF9F, the sound marks, are
/// handled by composition.)
fn halfwidth_table() -> &'static HashMap<char, char> {
    static TABLE: OnceLock<HashMap<char, char>> = OnceLock::new();
    TABLE.get_or_init(|| {
        ('\u{FF61}'..='\u{FF9D}')
            .filter_map(|c| {
                let wide: Vec<char> = c.to_string().nfkc().collect();
                match (wide.first().copied(), wide.get(1)) {
                    (Some(w), None) if w != c => Some((c, w)),
                    _ => None,
                }
            })
            .collect()
    })
}

/// `base` + combining mark as one precomposed character, if Unicode has one.
fn compose(base: char, mark: char) -> Option<char> {
    let mut composed = [base, mark]
        .iter()
        .collect::<String>()
        .nfc()
        .collect::<Vec<char>>()
        .into_iter();
    match (composed.next(), composed.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

/// Whether [`widen_kana`] would look at anything in `s`.
pub fn may_widen_kana(s: &str) -> bool {
    !s.is_ascii()
        && s.chars().any(|c| {
            matches!(
                c,
                '\u{FF61}'..='\u{FF9F}' | COMBINING_VOICED | COMBINING_SEMI_VOICED
            )
        })
}

/// Whether `s` holds full-width ASCII (rule 3 would change it).
pub fn has_fullwidth_ascii(s: &str) -> bool {
    !s.is_ascii() && s.chars().any(|c| matches!(c, '\u{FF01}'..='\u{FF5E}'))
}

/// Rule 2: half-width katakana and punctuation → full width, composing a
/// following ﾞ/ﾟ (ｶﾞ → ガ, ﾊﾟ → パ, ｳﾞ → ヴ); a lone ﾞ/ﾟ → ゛/゜;
/// full-width kana + U+3099/U+309A → the precomposed kana. Everything else,
/// compatibility ideographs and variation sequences included, stays as sent.
pub fn widen_kana(s: &str) -> (String, usize) {
    let table = halfwidth_table();
    let mut out = String::with_capacity(s.len());
    let mut count = 0;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let (base, widened) = match table.get(&c) {
            Some(&wide) => (wide, true),
            None => (c, false),
        };
        let mark = match chars.peek() {
            Some(&HALFWIDTH_VOICED) | Some(&COMBINING_VOICED) => Some(COMBINING_VOICED),
            Some(&HALFWIDTH_SEMI_VOICED) | Some(&COMBINING_SEMI_VOICED) => {
                Some(COMBINING_SEMI_VOICED)
            }
            _ => None,
        };
        if let Some(composed) = mark.and_then(|m| compose(base, m)) {
            chars.next();
            out.push(composed);
            count += 1;
            continue;
        }
        match c {
            HALFWIDTH_VOICED => {
                out.push('\u{309B}');
                count += 1;
            }
            HALFWIDTH_SEMI_VOICED => {
                out.push('\u{309C}');
                count += 1;
            }
            _ => {
                out.push(base);
                count += usize::from(widened);
            }
        }
    }
    (out, count)
}

/// Rule 4: in `HumanName.text`, ideographic spaces (U+3000) between name
/// parts become one half-width space.
pub fn human_name_text(s: &str) -> (String, usize) {
    let mut out = String::with_capacity(s.len());
    let mut count = 0;
    let mut pending_space = false;
    let mut changed_space = false;
    for c in s.chars() {
        if c == '\u{3000}' || c == ' ' {
            pending_space = true;
            changed_space |= c == '\u{3000}';
            continue;
        }
        if pending_space {
            if !out.is_empty() {
                out.push(' ');
            }
            count += usize::from(changed_space);
            pending_space = false;
            changed_space = false;
        }
        out.push(c);
    }
    if pending_space {
        // Trailing spaces are kept as sent: only spaces *between* parts change.
        let tail: String = s
            .chars()
            .rev()
            .take_while(|c| *c == '\u{3000}' || *c == ' ')
            .collect();
        out.extend(tail.chars().rev());
    }
    (out, count)
}

/// Rule 3 (primitive level): full-width ASCII (U+FF01–U+FF5E) → ASCII, for
/// values that are ASCII by definition (code, id, uri, date, decimal, …).
pub fn fold_fullwidth_ascii(s: &str) -> (String, usize) {
    let mut count = 0;
    let out = s
        .chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => {
                count += 1;
                char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
            }
            _ => c,
        })
        .collect();
    (out, count)
}

/// Dash-like characters a phone number or postal code may carry.
fn is_dash(c: char) -> bool {
    matches!(
        c,
        '-' | '\u{2010}'
            ..='\u{2015}'
                | '\u{2212}'
                | '\u{30FC}'
                | '\u{FF0D}'
                | '\u{FF70}'
                | '\u{301C}'
                | '\u{FF5E}'
    )
}

/// Rule 3 for phone/fax numbers: full-width ASCII folded, dashes between
/// digits → `-`, surrounding whitespace trimmed.
pub fn phone_number(s: &str) -> (String, usize) {
    let (folded, mut count) = fold_fullwidth_ascii(s.trim_matches(|c: char| c.is_whitespace()));
    let chars: Vec<char> = folded.chars().collect();
    let mut out = String::with_capacity(folded.len());
    for (i, &c) in chars.iter().enumerate() {
        let between_digits = i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if c != '-' && is_dash(c) && between_digits {
            out.push('-');
            count += 1;
        } else {
            out.push(c);
        }
    }
    count += usize::from(s.trim() != s);
    (out, count)
}

/// Rule 3 for `Address.postalCode`: seven digits in any width and dash
/// style → `NNN-NNNN`. Anything else is returned folded but otherwise
/// unchanged (a foreign postal code is not forced into the Japanese form).
pub fn postal_code(s: &str) -> (String, usize) {
    let (folded, count) = phone_number(s);
    let digits: String = folded.chars().filter(char::is_ascii_digit).collect();
    let only_digits_and_dashes = folded.chars().all(|c| c.is_ascii_digit() || c == '-');
    if digits.len() == 7 && only_digits_and_dashes {
        let formatted = format!("{}-{}", &digits[..3], &digits[3..]);
        let changed = usize::from(formatted != folded);
        return (formatted, count + changed);
    }
    (folded, count)
}

/// Rule 5: the first private-use code point (外字): U+E000–U+F8FF or planes
/// 15–16. Returns its char index and the code point.
pub fn find_private_use(s: &str) -> Option<(usize, char)> {
    s.chars()
        .enumerate()
        .find(|(_, c)| matches!(*c as u32, 0xE000..=0xF8FF | 0xF0000..=0x10FFFD))
}

/// Rule 6: the first C0 control character other than TAB, LF and CR.
pub fn find_control(s: &str) -> Option<(usize, char)> {
    s.chars()
        .enumerate()
        .find(|(_, c)| (*c as u32) < 0x20 && !matches!(*c, '\t' | '\n' | '\r'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule1_variant_folding() {
        #[rustfmt::skip]
        let cases = [
            ("１０～２０",     "１０〜２０", 1),
            ("Ａ∥Ｂ",         "Ａ‖Ｂ",       1),
            ("－￠￡￢",       "−¢£¬",        4),
            ("山田〜",         "山田〜",       0),
        ];
        let table = VariantTable::default();
        for (input, want, n) in cases {
            assert_eq!(table.fold(input), (want.to_owned(), n), "{input}");
        }
    }

    #[test]
    fn rule2_kana_widening() {
        #[rustfmt::skip]
        let cases = [
            ("ﾔﾏﾀﾞ ﾀﾛｳ",          "ヤマダ タロウ",  6),
            ("ｶﾞ ﾊﾟ ｳﾞ",           "ガ パ ヴ",       3),
            ("｡｢｣､･ｰ",             "。「」、・ー",    6),
            ("ﾞ",                  "゛",             1),
            ("ﾟ",                  "゜",             1),
            ("ｱﾞ",                 "ア゛",           2),   // no precomposed form: mark stays, widened
            ("カ\u{3099}",         "ガ",             1),   // decomposed kana composed
            ("ハ\u{309A}",         "パ",             1),
            ("髙﨑 ①㈱",           "髙﨑 ①㈱",       0),   // compatibility characters stay
            ("\u{FA46}",           "\u{FA46}",       0),   // no NFC on values
            ("葛\u{E0100}",        "葛\u{E0100}",    0),   // ideographic variation sequence
            ("ヤマダ",             "ヤマダ",          0),
        ];
        for (input, want, n) in cases {
            assert_eq!(widen_kana(input), (want.to_owned(), n), "{input}");
        }
    }

    #[test]
    fn rule3_ascii_by_definition() {
        #[rustfmt::skip]
        let cases = [
            (fold_fullwidth_ascii("１２３ＡＢＣ"),    ("123ABC", 6)),
            (fold_fullwidth_ascii("abc"),             ("abc", 0)),
            (phone_number("０３－１２３４－５６７８"), ("03-1234-5678", 6 + 4 + 2)),
            (phone_number(" 03ー1234ー5678 "),        ("03-1234-5678", 3)),
            (postal_code("１６０００２３"),           ("160-0023", 8)),
            (postal_code("160－0023"),                ("160-0023", 1)),
            (postal_code("160-0023"),                 ("160-0023", 0)),
            (postal_code("SW1A 1AA"),                 ("SW1A 1AA", 0)),
        ];
        for ((got, got_n), (want, want_n)) in cases {
            assert_eq!((got.as_str(), got_n), (want, want_n));
        }
    }

    #[test]
    fn rule4_human_name_text() {
        #[rustfmt::skip]
        let cases = [
            ("山田\u{3000}太郎",          "山田 太郎",   1),
            ("山田\u{3000}\u{3000}太郎",  "山田 太郎",   1),
            ("山田 太郎",                 "山田 太郎",   0),
            ("YAMADA\u{3000}Taro",        "YAMADA Taro", 1),
        ];
        for (input, want, n) in cases {
            assert_eq!(human_name_text(input), (want.to_owned(), n), "{input:?}");
        }
    }

    #[test]
    fn rules5_and_6_checks() {
        assert_eq!(find_private_use("山\u{E000}田"), Some((1, '\u{E000}')));
        assert_eq!(find_private_use("\u{F0000}"), Some((0, '\u{F0000}')));
        assert_eq!(find_private_use("山田 髙橋"), None);
        assert_eq!(find_control("a\u{0007}b"), Some((1, '\u{0007}')));
        assert_eq!(find_control("a\tb\r\nc"), None);
    }

    #[test]
    fn generated_table_covers_every_halfwidth_katakana() {
        let table = halfwidth_table();
        // U+FF61..U+FF9D is 61 characters, all of which NFKC widens.
        assert_eq!(table.len(), 0xFF9D - 0xFF61 + 1);
        assert_eq!(table[&'\u{FF76}'], 'カ');
        assert_eq!(table[&'\u{FF70}'], 'ー');
    }
}
