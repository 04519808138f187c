//! The canonical form of a FHIR JSON resource (docs/canonical-form.md).
//!
//! - object members sorted by their names' UTF-16 code units (RFC 8785 §3.2.3);
//! - no insignificant whitespace;
//! - strings escaped as RFC 8785 does: `"` and `\` escaped, U+0000–U+001F as
//!   `\b \t \n \f \r` or `\u00xx` (lower-case hex), everything else literal
//!   UTF-8 (so `/` and non-ASCII are never escaped);
//! - numbers copied verbatim from the source text (`1.50` stays `1.50`:
//!   FHIR decimals carry precision, so RFC 8785 number rewriting is not used);
//! - `true`, `false`, `null` as is.
//!
//! Rejected: invalid UTF-8, duplicate member names (after unescaping), lone
//! surrogates, nesting deeper than the configured bound, invalid JSON
//! numbers, trailing data. The parser is recursive but the depth bound is
//! checked before each descent, so deep input cannot overflow the stack.

use crate::Error;

/// Default maximum nesting depth. FHIR resources rarely exceed 20; a
/// contained Bundle inside a Parameters may reach 40.
pub const DEFAULT_MAX_DEPTH: usize = 128;

/// Canonicalizes FHIR JSON bytes with the default depth bound.
pub fn canonicalize(input: &[u8]) -> Result<Vec<u8>, Error> {
    canonicalize_with_depth(input, DEFAULT_MAX_DEPTH)
}

/// Canonicalizes FHIR JSON bytes, leaving out the top-level members
/// named in `omit` (an access record's `id` and `meta`), in one pass.
/// Input that is not an object is refused.
pub fn canonicalize_omitting(input: &[u8], omit: &[&str]) -> Result<Vec<u8>, Error> {
    let (value, len) = parse(input, DEFAULT_MAX_DEPTH)?;
    let Value::Object(members) = value else {
        return Err(Error::Canonical {
            offset: 0,
            reason: "expected a JSON object".into(),
        });
    };
    let kept = members
        .into_iter()
        .filter(|(name, _)| !omit.contains(&name.as_str()))
        .collect();
    let mut out = Vec::with_capacity(len);
    Value::Object(kept).write(&mut out);
    Ok(out)
}

/// Canonicalizes FHIR JSON bytes, rejecting nesting deeper than `max_depth`.
pub fn canonicalize_with_depth(input: &[u8], max_depth: usize) -> Result<Vec<u8>, Error> {
    let (value, len) = parse(input, max_depth)?;
    let mut out = Vec::with_capacity(len);
    value.write(&mut out);
    Ok(out)
}

/// Parses and checks the input; the value (members sorted) and the
/// input's length.
fn parse(input: &[u8], max_depth: usize) -> Result<(Value<'_>, usize), Error> {
    let text = std::str::from_utf8(input).map_err(|e| Error::Canonical {
        offset: e.valid_up_to(),
        reason: "invalid UTF-8".into(),
    })?;
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        max_depth,
    };
    parser.skip_ws();
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != parser.bytes.len() {
        return Err(parser.error("trailing data after the JSON value"));
    }
    Ok((value, input.len()))
}

/// A parsed JSON value that keeps numbers as their source text.
enum Value<'a> {
    Literal(&'static str),
    Number(&'a str),
    String(String),
    Array(Vec<Value<'a>>),
    Object(Vec<(String, Value<'a>)>),
}

impl Value<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::Literal(l) => out.extend_from_slice(l.as_bytes()),
            Value::Number(n) => out.extend_from_slice(n.as_bytes()),
            Value::String(s) => write_string(s, out),
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out);
                }
                out.push(b']');
            }
            Value::Object(members) => {
                out.push(b'{');
                for (i, (name, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_string(name, out);
                    out.push(b':');
                    value.write(out);
                }
                out.push(b'}');
            }
        }
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    // Runs of bytes that need no escape are copied whole: only `"`, `\`
    // and U+0000–U+001F are escaped, and no byte of a multi-byte UTF-8
    // sequence is below 0x80, so copying bytes is copying characters.
    let bytes = s.as_bytes();
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0C => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1F => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run_start..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{:04x}", b).as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        run_start = i + 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

/// Orders member names by UTF-16 code units (RFC 8785), which differs from
/// UTF-8 byte order for characters above U+FFFF versus U+E000–U+FFFF.
fn utf16_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    max_depth: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, reason: &str) -> Error {
        Error::Canonical {
            offset: self.pos,
            reason: reason.into(),
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, Error> {
        match self.bytes.get(self.pos) {
            None => Err(self.error("unexpected end of input")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    fn literal(&mut self, word: &'static str) -> Result<Value<'a>, Error> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(Value::Literal(word))
        } else {
            Err(self.error("invalid literal"))
        }
    }

    fn number(&mut self) -> Result<Value<'a>, Error> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let s = p.pos;
            while let Some(b'0'..=b'9') = p.bytes.get(p.pos) {
                p.pos += 1;
            }
            p.pos - s
        };
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        let int_len = digits(self);
        if int_len == 0 || (int_len > 1 && self.bytes[int_start] == b'0') {
            return Err(self.error("invalid number"));
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if digits(self) == 0 {
                return Err(self.error("invalid number: no digits after '.'"));
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(self.error("invalid number: no exponent digits"));
            }
        }
        Ok(Value::Number(&self.text[start..self.pos]))
    }

    fn string(&mut self) -> Result<String, Error> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(&b) = self.bytes.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.text[start..self.pos]);
            match self.bytes.get(self.pos) {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escaped = match self.bytes.get(self.pos) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{08}',
                        Some(b'f') => '\u{0C}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let c = self.unicode_escape()?;
                            out.push(c);
                            continue;
                        }
                        _ => return Err(self.error("invalid escape")),
                    };
                    self.pos += 1;
                    out.push(escaped);
                }
                Some(_) => return Err(self.error("unescaped control character in string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u16, Error> {
        let hex = self
            .text
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("truncated \\u escape"))?;
        let value = u16::from_str_radix(hex, 16).map_err(|_| self.error("invalid \\u escape"))?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.error("invalid \\u escape"));
        }
        self.pos += 4;
        Ok(value)
    }

    /// After `\u`: one code point, combining a surrogate pair; a lone
    /// surrogate is an error.
    fn unicode_escape(&mut self) -> Result<char, Error> {
        let first = self.hex4()?;
        match first {
            0xD800..=0xDBFF => {
                if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return Err(self.error("lone high surrogate"));
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error("lone high surrogate"));
                }
                let code =
                    0x10000 + ((u32::from(first) - 0xD800) << 10) + (u32::from(second) - 0xDC00);
                char::from_u32(code).ok_or_else(|| self.error("invalid surrogate pair"))
            }
            0xDC00..=0xDFFF => Err(self.error("lone low surrogate")),
            c => char::from_u32(u32::from(c)).ok_or_else(|| self.error("invalid code point")),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value<'a>, Error> {
        if depth > self.max_depth {
            return Err(self.error("nesting deeper than the configured bound"));
        }
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value<'a>, Error> {
        if depth > self.max_depth {
            return Err(self.error("nesting deeper than the configured bound"));
        }
        self.pos += 1;
        let mut members: Vec<(String, Value<'a>)> = Vec::new();
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            if self.bytes.get(self.pos) != Some(&b'"') {
                return Err(self.error("expected a member name"));
            }
            let name = self.string()?;
            self.skip_ws();
            if self.bytes.get(self.pos) != Some(&b':') {
                return Err(self.error("expected ':'"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth)?;
            members.push((name, value));
            self.skip_ws();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
        for (name, value) in members.iter_mut() {
            // Narrative XHTML has its own canonical form (see narrative.rs).
            if name == "div" {
                if let Value::String(div) = value {
                    *div = crate::narrative::canonical_div(div)?;
                }
            }
        }
        members.sort_by(|a, b| utf16_order(&a.0, &b.0));
        if let Some(pair) = members.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::Canonical {
                offset: self.pos,
                reason: format!("duplicate member name {:?}", pair[0].0),
            });
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        String::from_utf8(canonicalize(s.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn canonical_table() {
        #[rustfmt::skip]
        let cases = [
            (r#"{ "b": 1, "a": 2 }"#,                        r#"{"a":2,"b":1}"#),
            (r#"{"value": 1.50}"#,                           r#"{"value":1.50}"#),
            (r#"{"value": 1.0e+3}"#,                         r#"{"value":1.0e+3}"#),
            (r#"{"v": -0}"#,                                 r#"{"v":-0}"#),
            (r#"["\u00e9", "\/", "\u0001", "\t"]"#,         "[\"é\",\"/\",\"\\u0001\",\"\\t\"]"),
            (r#"{"s": "\ud83d\ude00"}"#,                     "{\"s\":\"😀\"}"),
            ("{\"name\": \"山田 太郎\"}",                      "{\"name\":\"山田 太郎\"}"),
            (r#"[true, false, null, {}, []]"#,               r#"[true,false,null,{},[]]"#),
            // UTF-16 order: U+1F600 (D83D…) sorts before U+FF41 (FF41).
            ("{\"\u{ff41}\": 1, \"\u{1f600}\": 2}",          "{\"\u{1f600}\":2,\"\u{ff41}\":1}"),
        ];
        for (input, want) in cases {
            assert_eq!(canon(input), want, "{input}");
        }
    }

    #[test]
    fn rejection_table() {
        #[rustfmt::skip]
        let cases: &[(&[u8], &str)] = &[
            (br#"{"a":1,"a":2}"#,            "duplicate"),
            (br#"{"a":1,"\u0061":2}"#,       "duplicate"),
            (br#"{"s":"\ud800"}"#,           "lone high surrogate"),
            (br#"{"s":"\udc00"}"#,           "lone low surrogate"),
            (b"{\"s\":\"\xff\"}",             "invalid UTF-8"),
            (br#"{"n":01}"#,                 "invalid number"),
            (br#"{"n":1.}"#,                 "invalid number"),
            (br#"{"a":1} x"#,                "trailing data"),
            (b"{\"s\":\"a\nb\"}",             "control character"),
        ];
        for (input, reason) in cases {
            let err = canonicalize(input).unwrap_err().to_string();
            assert!(
                err.contains(reason),
                "{}: {err}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn deep_nesting_is_rejected_without_overflowing_the_stack() {
        let deep = "[".repeat(1_000_000);
        let err = canonicalize(deep.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("nesting"), "{err}");
        let ok = format!("{}{}", "[".repeat(10), "]".repeat(10));
        assert!(canonicalize_with_depth(ok.as_bytes(), 10).is_ok());
        assert!(canonicalize_with_depth(ok.as_bytes(), 9).is_err());
    }
}
