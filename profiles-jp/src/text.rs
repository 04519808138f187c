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
    /// A table folding the first character of each pair to the second; only
    /// these pairs (the default table is [`DEFAULT_VARIANT_TABLE`]).
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

/// The dash variants rule 3 turns into `-` between two digits (people type
/// ー and － in phone numbers and dates): minus sign, hyphen, non-breaking
/// hyphen, en dash, em dash, horizontal bar, katakana prolonged sound mark
/// (both widths) and full-width hyphen-minus. Other dashes (U+2012 figure
/// dash, 〜, …) are kept.
pub const DIGIT_DASHES: &[char] = &[
    '\u{2212}', '\u{2010}', '\u{2011}', '\u{2013}', '\u{2014}', '\u{2015}', '\u{30FC}', '\u{FF70}',
    '\u{FF0D}',
];

/// Whether [`fold_fullwidth_ascii`] would change `s` (cheap).
pub fn may_fold_ascii(s: &str) -> bool {
    s.starts_with(char::is_whitespace)
        || s.ends_with(char::is_whitespace)
        || (!s.is_ascii()
            && s.chars().any(|c| {
                matches!(c, '\u{FF01}'..='\u{FF5E}' | '\u{3000}') || DIGIT_DASHES.contains(&c)
            }))
}

/// Rule 3: the folding of values that are ASCII by definition (code, id,
/// uri, date, …; phone numbers, postal codes, identifiers of ASCII
/// systems; search values of those types):
///
/// - white space (U+3000 included) trimmed at both ends;
/// - full-width ASCII (U+FF01–U+FF5E) → ASCII, U+3000 → a space;
/// - a [`DIGIT_DASHES`] character between two digits (after folding) → `-`.
///
/// The count is one per character changed, plus one when anything was
/// trimmed. Idempotent.
pub fn fold_fullwidth_ascii(s: &str) -> (String, usize) {
    if !may_fold_ascii(s) {
        return (s.to_owned(), 0);
    }
    let trimmed = s.trim();
    let mut count = usize::from(trimmed.len() != s.len());
    let folded: Vec<char> = trimmed
        .chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            _ => c,
        })
        .collect();
    let mut out = String::with_capacity(trimmed.len());
    for (i, (&c, original)) in folded.iter().zip(trimmed.chars()).enumerate() {
        let between_digits = i > 0
            && folded[i - 1].is_ascii_digit()
            && folded.get(i + 1).is_some_and(char::is_ascii_digit);
        let c = if between_digits && DIGIT_DASHES.contains(&original) {
            '-'
        } else {
            c
        };
        count += usize::from(c != original);
        out.push(c);
    }
    (out, count)
}

/// Rule 3 for phone/fax numbers: [`fold_fullwidth_ascii`] (full-width ASCII
/// folded, dashes between digits → `-`, trimmed).
pub fn phone_number(s: &str) -> (String, usize) {
    fold_fullwidth_ascii(s)
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
            (fold_fullwidth_ascii("２０２４ー０１ー１５"), ("2024-01-15", 10)),
            (phone_number("０３－１２３４－５６７８"), ("03-1234-5678", 6 + 4 + 2)),
            (phone_number(" 03ー1234ー5678 "),        ("03-1234-5678", 3)),
            (phone_number("\u{3000}０３ー１２３４ー５６７８\u{3000}"), ("03-1234-5678", 1 + 10 + 2)),
            (postal_code("１６０００２３"),           ("160-0023", 8)),
            (postal_code("160－0023"),                ("160-0023", 1)),
            (postal_code("160ー0023"),                ("160-0023", 1)),
            (postal_code("160-0023"),                 ("160-0023", 0)),
            (postal_code("SW1A 1AA"),                 ("SW1A 1AA", 0)),
        ];
        for ((got, got_n), (want, want_n)) in cases {
            assert_eq!((got.as_str(), got_n), (want, want_n));
        }
    }

    /// Rule 3, one line per character: U+3000, and each dash variant
    /// between two digits and next to one digit only; then dashes that are
    /// not variants. (input, expected).
    #[test]
    fn rule3_spaces_and_dashes() {
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            // U+3000 IDEOGRAPHIC SPACE: a space inside, trimmed at the ends
            ("\u{3000}123\u{3000}",     "123"),
            ("\u{3000}\u{3000}A B\u{3000}", "A B"),
            ("A\u{3000}B",              "A B"),
            ("1\u{3000}2",              "1 2"),
            (" \u{3000}1 ",             "1"),
            // U+2212 MINUS SIGN
            ("1\u{2212}2",              "1-2"),
            ("1\u{2212}A",              "1\u{2212}A"),
            // U+2010 HYPHEN
            ("1\u{2010}2",              "1-2"),
            ("1\u{2010}A",              "1\u{2010}A"),
            // U+2011 NON-BREAKING HYPHEN
            ("1\u{2011}2",              "1-2"),
            ("1\u{2011}A",              "1\u{2011}A"),
            // U+2013 EN DASH
            ("1\u{2013}2",              "1-2"),
            ("1\u{2013}A",              "1\u{2013}A"),
            // U+2014 EM DASH
            ("1\u{2014}2",              "1-2"),
            ("1\u{2014}A",              "1\u{2014}A"),
            // U+2015 HORIZONTAL BAR
            ("1\u{2015}2",              "1-2"),
            ("1\u{2015}A",              "1\u{2015}A"),
            // U+30FC KATAKANA-HIRAGANA PROLONGED SOUND MARK
            ("1\u{30FC}2",              "1-2"),
            ("1\u{30FC}A",              "1\u{30FC}A"),
            // U+FF70 HALFWIDTH KATAKANA-HIRAGANA PROLONGED SOUND MARK
            ("1\u{FF70}2",              "1-2"),
            ("1\u{FF70}A",              "1\u{FF70}A"),
            // U+FF0D FULLWIDTH HYPHEN-MINUS: full-width ASCII, so `-` anywhere
            ("1\u{FF0D}2",              "1-2"),
            ("1\u{FF0D}A",              "1-A"),
            // digits of either width count; both neighbours must be digits
            ("\u{FF11}\u{30FC}\u{FF12}", "1-2"),
            ("A\u{30FC}1",              "A\u{30FC}1"),
            ("\u{30FC}1",               "\u{30FC}1"),
            ("1\u{30FC}",               "1\u{30FC}"),
            ("1\u{30FC}\u{30FC}2",      "1\u{30FC}\u{30FC}2"),
            ("1 \u{2212} 2",            "1 \u{2212} 2"),
            ("\u{30B5}\u{30FC}\u{30D0}1", "\u{30B5}\u{30FC}\u{30D0}1"),
            // kept: not in the list
            ("1\u{2012}2",              "1\u{2012}2"),  // FIGURE DASH
            ("1\u{301C}2",              "1\u{301C}2"),  // WAVE DASH
            ("1\u{FF5E}2",              "1~2"),         // FULLWIDTH TILDE: full-width ASCII
            ("1\u{2043}2",              "1\u{2043}2"),  // HYPHEN BULLET
            ("1\u{FE63}2",              "1\u{FE63}2"),  // SMALL HYPHEN-MINUS
            ("1\u{FE58}2",              "1\u{FE58}2"),  // SMALL EM DASH
            ("1\u{2E3A}2",              "1\u{2E3A}2"),  // TWO-EM DASH
            ("1\u{00AD}2",              "1\u{00AD}2"),  // SOFT HYPHEN
            ("1\u{2500}2",              "1\u{2500}2"),  // BOX DRAWINGS LIGHT HORIZONTAL
            ("1-2",                     "1-2"),
        ];
        for &(input, want) in cases {
            let (got, n) = fold_fullwidth_ascii(input);
            assert_eq!(got, want, "{input:?}");
            assert_eq!(n > 0, input != want, "count for {input:?}");
            // Idempotent, and the same for every rule-3 field.
            assert_eq!(fold_fullwidth_ascii(&got), (got.clone(), 0), "{input:?}");
            assert_eq!(phone_number(input), (got.clone(), n), "{input:?}");
            // The cheap check never misses a change.
            assert!(may_fold_ascii(input) || n == 0, "{input:?}");
        }
    }

    /// Exactly the listed characters become `-` between two digits: every
    /// other BMP character there folds as full-width ASCII or stays.
    #[test]
    fn rule3_dash_list_is_exact() {
        let mut dashed = Vec::new();
        for c in (0x80..=0xFFFF).filter_map(char::from_u32) {
            let (got, _) = fold_fullwidth_ascii(&format!("1{c}2"));
            if got == "1-2" {
                dashed.push(c);
            } else if matches!(c, '\u{FF01}'..='\u{FF5E}') {
                assert_eq!(
                    got,
                    format!("1{}2", char::from_u32(c as u32 - 0xFEE0).unwrap())
                );
            } else if c == '\u{3000}' {
                assert_eq!(got, "1 2");
            } else {
                assert_eq!(got, format!("1{c}2"), "U+{:04X}", c as u32);
            }
        }
        let mut listed = DIGIT_DASHES.to_vec();
        listed.sort_unstable();
        assert_eq!(dashed, listed);
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
