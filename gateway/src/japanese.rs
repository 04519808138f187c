//! Steps 10 and 11 (request body, search values): Japanese charsets and text normalization of request
//! bodies (JP Core). The rules themselves live in `profiles-jp`; this file
//! decides when they run and turns their findings into HTTP answers.
//!
//! When it runs: on a FHIR JSON or XML request body, after it was read and
//! before it is validated or bridged. What it may change: the body's
//! charset (to UTF-8: the upstream only ever sees UTF-8), and in
//! `jp-default` mode the strings of a JSON resource, by datatype. Results:
//! the body to forward and a [`TextReport`] (the `Inkan-Text` response
//! header and metrics); or a 400 (bytes invalid in their charset, with the
//! byte offset; a control character, with the element path), a 415 (an
//! unknown charset, or an undeclared one that cannot be detected with
//! confidence) or a 422 (a private-use character, with the element path).

use std::collections::HashMap;

use bytes::Bytes;
use profiles_jp::charset::{self, JpCharset};
use profiles_jp::resource::{self, Changes, PrivateUsePolicy, Rules, Violation};
use profiles_jp::text::VariantTable;

use crate::config::{JapaneseConfig, JapaneseMode, JpCoreMode, PrivateUseMode};
use crate::error::{ConfigError, GatewayError};

/// Response header of `jpcore = "warn"`: how many JP Core findings and
/// where, e.g. `findings=1; at=Patient.address[0].postalCode`.
pub const INKAN_JP_CORE: &str = "inkan-jp-core";

/// Response header summarising what the gateway changed in the request
/// body, e.g. `charset=Shift_JIS (Windows-31J); kana-widened=3`.
pub const INKAN_TEXT: &str = "inkan-text";

/// The Japanese text step, configured.
#[derive(Debug)]
pub struct Japanese {
    pub mode: JapaneseMode,
    pub jpcore: JpCoreMode,
    default_charset: Option<JpCharset>,
    rules: Rules,
}

/// The charset a body was decoded from and whether it was detected (not
/// declared); `None` when it was UTF-8 already.
pub type DecodedFrom = Option<(&'static str, bool)>;

/// What steps 10 and 11 did to the text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TextReport {
    /// The charset decoded from, when not UTF-8; `detected` when undeclared.
    pub decoded_from: DecodedFrom,
    pub changes: Changes,
    /// JP Core findings (`jpcore = "warn"`).
    pub jpcore_findings: Vec<profiles_jp::jpcore::Finding>,
}

impl TextReport {
    /// The `Inkan-JP-Core` header value; `None` without findings.
    pub fn jpcore_header_value(&self) -> Option<String> {
        if self.jpcore_findings.is_empty() {
            return None;
        }
        let at: Vec<&str> = self
            .jpcore_findings
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        Some(format!("findings={}; at={}", at.len(), at.join(",")))
    }

    /// Adds what another part of the request (its query) changed.
    pub fn merge(&mut self, other: &TextReport) {
        if other.decoded_from.is_some() {
            self.decoded_from = other.decoded_from;
        }
        self.changes.add(&other.changes);
    }

    /// The `Inkan-Text` header value; `None` when nothing changed.
    pub fn header_value(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some((charset, detected)) = self.decoded_from {
            parts.push(format!(
                "charset={charset}{}",
                if detected { " (detected)" } else { "" }
            ));
        }
        for (rule, n) in self.changes.nonzero() {
            parts.push(format!("{rule}={n}"));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

impl Japanese {
    pub fn from_config(config: &JapaneseConfig) -> Result<Japanese, ConfigError> {
        let default_charset = config
            .default_charset
            .as_deref()
            .map(JpCharset::from_label)
            .transpose()
            .map_err(|e| ConfigError::Invalid(format!("japanese.default_charset: {e}")))?;
        let private_use = match config.private_use {
            PrivateUseMode::Reject => PrivateUsePolicy::Reject,
            PrivateUseMode::Allow => PrivateUsePolicy::Allow,
            PrivateUseMode::Map => PrivateUsePolicy::Map(load_private_use_map(config)?),
        };
        let variants = match &config.variant_table {
            None => VariantTable::default(),
            Some(pairs) => VariantTable::new(
                pairs
                    .iter()
                    .map(|[from, to]| single_char(from).zip(single_char(to)).ok_or_else(|| {
                        ConfigError::Invalid(format!(
                            "japanese.variant_table: [{from:?}, {to:?}] must be two single characters"
                        ))
                    }))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Japanese {
            mode: config.mode,
            jpcore: config.jpcore,
            default_charset,
            rules: Rules {
                variants,
                private_use,
                ascii_identifier_systems: config.ascii_identifier_systems.clone(),
            },
        })
    }

    /// The body as UTF-8: decoded from its declared charset, or (none
    /// declared, not UTF-8) from the configured default or a confidently
    /// detected Japanese charset. `None` in the report when it already was
    /// UTF-8. Never forwards U+FFFD mojibake: invalid bytes are a 400.
    pub fn decode(
        &self,
        body: Bytes,
        declared: Option<&str>,
    ) -> Result<(Bytes, DecodedFrom), GatewayError> {
        // No charset parameter: an XML declaration may still name one.
        let declared = declared.or_else(|| xml_declared_encoding(&body));
        let declared = declared
            .map(JpCharset::from_label)
            .transpose()
            .map_err(|e| GatewayError::UnsupportedMediaType {
                detail: e.to_string(),
            })?;
        let is_utf8 = matches!(declared, None | Some(JpCharset::Utf8))
            && std::str::from_utf8(&body).is_ok()
            && !body.starts_with(b"\xEF\xBB\xBF");
        if is_utf8 && !(declared.is_none() && has_iso_2022_jp_escape(&body)) {
            return Ok((body, None));
        }
        if self.mode == JapaneseMode::Off {
            return Err(GatewayError::UnsupportedMediaType {
                detail: "the body is not UTF-8 and Japanese transcoding is off (japanese.mode); send UTF-8".into(),
            });
        }
        let decoded = match (declared, self.default_charset) {
            (Some(charset), _) | (None, Some(charset)) => charset::decode(&body, charset),
            (None, None) => charset::decode_undeclared(&body),
        }
        .map_err(|e| match e {
            profiles_jp::Error::InvalidBytes { .. } => GatewayError::InvalidText {
                detail: e.to_string(),
            },
            other => GatewayError::UnsupportedMediaType {
                detail: other.to_string(),
            },
        })?;
        let note = (decoded.charset != JpCharset::Utf8)
            .then_some((decoded.charset.name(), decoded.detected));
        Ok((Bytes::from(fix_xml_declaration(decoded.text)), note))
    }

    /// Whether request bodies are looked into at all (normalization in
    /// `jp-default` mode, or JP Core checks).
    pub fn inspects_bodies(&self) -> bool {
        self.mode == JapaneseMode::JpDefault || self.jpcore != JpCoreMode::Off
    }

    /// Checks that the body is JSON (400 otherwise), normalizes a FHIR
    /// JSON resource (in `jp-default` mode) and runs the JP Core checks on
    /// the result (unless `jpcore = "off"`). The body is parsed once: into
    /// a tree when a rule or check needs one, else only validated. It is
    /// re-serialized only when a rule changed something. Findings are
    /// returned for `warn`, and are a 422 for `strict`.
    pub fn process_json(
        &self,
        body: Bytes,
    ) -> Result<(Bytes, Changes, Vec<profiles_jp::jpcore::Finding>), GatewayError> {
        let not_json = |e: serde_json::Error| GatewayError::MalformedRequest {
            detail: format!("the body is not valid JSON: {e}"),
        };
        let normalize = self.mode == JapaneseMode::JpDefault;
        if body.is_empty() {
            return Ok((body, Changes::default(), Vec::new()));
        }
        if !normalize && self.jpcore == JpCoreMode::Off {
            serde_json::from_slice::<serde::de::IgnoredAny>(&body).map_err(not_json)?;
            return Ok((body, Changes::default(), Vec::new()));
        }
        let mut value: serde_json::Value = serde_json::from_slice(&body).map_err(not_json)?;
        if !value.is_object() {
            return Ok((body, Changes::default(), Vec::new()));
        }
        let changes = if normalize {
            resource::normalize(&mut value, &self.rules).map_err(|v| match v {
                Violation::PrivateUse { .. } => GatewayError::PrivateUseCharacter {
                    detail: v.to_string(),
                },
                other => GatewayError::InvalidText {
                    detail: other.to_string(),
                },
            })?
        } else {
            Changes::default()
        };
        let findings = match self.jpcore {
            JpCoreMode::Off => Vec::new(),
            _ => profiles_jp::jpcore::check(&value),
        };
        if self.jpcore == JpCoreMode::Strict && !findings.is_empty() {
            return Err(GatewayError::JpCoreViolations {
                findings: findings.into_iter().map(|f| (f.path, f.message)).collect(),
            });
        }
        if changes.total() == 0 {
            return Ok((body, changes, findings));
        }
        let json = serde_json::to_vec(&value).map_err(|e| GatewayError::MalformedRequest {
            detail: e.to_string(),
        })?;
        Ok((Bytes::from(json), changes, findings))
    }

    /// Rule 7: search values get the normalization of their parameter's
    /// type (`param_type` says it, from the upstream's CapabilityStatement),
    /// after values percent-encoded in a legacy charset are decoded (with
    /// `default_charset`; too short to detect, so 400 without it) and
    /// re-encoded as UTF-8. Returns the new query when anything changed. Pairs that need
    /// nothing are kept byte for byte.
    pub fn normalize_query(
        &self,
        query: &str,
        param_type: impl Fn(&str) -> Option<String>,
        report: &mut TextReport,
    ) -> Result<Option<String>, GatewayError> {
        self.normalize_pairs(query, self.default_charset, param_type, report)
    }

    /// A `POST [base]/[type]/_search` form body
    /// (`application/x-www-form-urlencoded`), normalized like a query
    /// string. Values percent-encoded in a legacy charset are decoded with
    /// the form's declared `charset` (else `default_charset`). Returns the
    /// new body when anything changed.
    pub fn normalize_form(
        &self,
        body: &[u8],
        declared_charset: Option<&str>,
        param_type: impl Fn(&str) -> Option<String>,
        report: &mut TextReport,
    ) -> Result<Option<String>, GatewayError> {
        if self.mode == JapaneseMode::Off {
            return Ok(None);
        }
        // Percent-encoded ASCII (RFC 1866), or, from lax clients, raw
        // UTF-8, which decodes the same way.
        let form = std::str::from_utf8(body).map_err(|_| GatewayError::InvalidText {
            detail: "an application/x-www-form-urlencoded body must be percent-encoded (or UTF-8)"
                .into(),
        })?;
        let charset = match declared_charset {
            Some(label) if !label.eq_ignore_ascii_case("utf-8") => {
                Some(JpCharset::from_label(label).map_err(|e| {
                    GatewayError::UnsupportedMediaType {
                        detail: format!("form charset: {e}"),
                    }
                })?)
            }
            Some(_) => None,
            None => self.default_charset,
        };
        self.normalize_pairs(
            form.trim_end_matches(['\r', '\n']),
            charset,
            param_type,
            report,
        )
    }

    fn normalize_pairs(
        &self,
        query: &str,
        legacy_charset: Option<JpCharset>,
        param_type: impl Fn(&str) -> Option<String>,
        report: &mut TextReport,
    ) -> Result<Option<String>, GatewayError> {
        if self.mode == JapaneseMode::Off {
            return Ok(None);
        }
        let mut changed = false;
        let mut pairs = Vec::new();
        for pair in query.split('&') {
            let Some((name, raw)) = pair.split_once('=') else {
                pairs.push(pair.to_owned());
                continue;
            };
            let bytes: Vec<u8> =
                percent_encoding::percent_decode_str(&raw.replace('+', " ")).collect();
            let (mut value, decoded_from) = match String::from_utf8(bytes) {
                Ok(text) => (text, None),
                Err(e) => {
                    // A few bytes of a search value cannot be detected
                    // reliably (ﾔﾏﾀﾞ in Shift_JIS is valid EUC-JP for
                    // other kanji): only a configured charset is used.
                    let charset = legacy_charset.ok_or_else(|| GatewayError::InvalidText {
                        detail: format!(
                            "search parameter {name} is not UTF-8; send UTF-8, or configure japanese.default_charset for this client"
                        ),
                    })?;
                    let bytes = e.into_bytes();
                    let decoded = charset::decode(&bytes, charset).map_err(|e| {
                        GatewayError::InvalidText {
                            detail: format!("search parameter {name}: {e}"),
                        }
                    })?;
                    (
                        decoded.text,
                        Some((decoded.charset.name(), decoded.detected)),
                    )
                }
            };
            if decoded_from.is_some() {
                report.decoded_from = decoded_from;
            }
            let base_name = name.split(':').next().unwrap_or(name);
            let kind = param_type(base_name);
            let mut value_changed = decoded_from.is_some();
            if self.mode == JapaneseMode::JpDefault {
                if let Some(kind) = kind.as_deref() {
                    let (normalized, changes) = self.normalize_search_value(kind, &value);
                    if changes.total() > 0 {
                        value = normalized;
                        value_changed = true;
                        report.changes.add(&changes);
                    }
                }
            }
            if value_changed {
                changed = true;
                let encoded = percent_encoding::utf8_percent_encode(
                    &value,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                pairs.push(format!("{name}={encoded}"));
            } else {
                pairs.push(pair.to_owned());
            }
        }
        Ok(changed.then(|| pairs.join("&")))
    }

    /// One search value, normalized as stored values of its type are.
    fn normalize_search_value(&self, kind: &str, value: &str) -> (String, Changes) {
        let mut changes = Changes::default();
        let mut current = value.to_owned();
        let mut step = |counter: &mut usize, rule: &dyn Fn(&str) -> (String, usize)| {
            let (new, n) = rule(&current);
            if n > 0 {
                current = new;
                *counter += n;
            }
        };
        match kind {
            "string" => {
                let variants = &self.rules.variants;
                step(&mut changes.variants_folded, &|x| variants.fold(x));
                step(&mut changes.kana_widened, &profiles_jp::text::widen_kana);
            }
            // `system|code`: the code is folded only for ASCII systems, as
            // the stored Identifier.value is (Coverage member ids are not).
            "token" => {
                if let Some((system, _)) = value.split_once('|') {
                    if self.rules.is_ascii_system(system) {
                        step(
                            &mut changes.ascii_folded,
                            &profiles_jp::text::fold_fullwidth_ascii,
                        );
                    }
                }
            }
            "date" | "number" | "quantity" | "uri" | "reference" => {
                step(
                    &mut changes.ascii_folded,
                    &profiles_jp::text::fold_fullwidth_ascii,
                );
            }
            _ => {}
        }
        (current, changes)
    }

    /// The legacy charset the client wants responses in: `Accept-Charset`
    /// (highest q first), or a `charset=` parameter in `Accept`. `None`
    /// for UTF-8, no preference, or mode `off`.
    pub fn wanted_charset(&self, headers: &http::HeaderMap) -> Option<JpCharset> {
        if self.mode == JapaneseMode::Off {
            return None;
        }
        let mut best: Option<(f32, JpCharset)> = None;
        for value in headers.get_all(http::header::ACCEPT_CHARSET) {
            for item in value.to_str().unwrap_or("").split(',') {
                let mut params = item.split(';');
                let Ok(charset) = JpCharset::from_label(params.next().unwrap_or("")) else {
                    continue;
                };
                let q = params
                    .find_map(|p| p.trim().strip_prefix("q=")?.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
                    best = Some((q, charset));
                }
            }
        }
        let from_accept = || {
            headers
                .get_all(http::header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split([',', ';']))
                .find_map(|p| JpCharset::from_label(p.trim().strip_prefix("charset=")?).ok())
        };
        best.map(|(_, c)| c)
            .or_else(from_accept)
            .filter(|c| *c != JpCharset::Utf8)
    }

    /// Encodes a final FHIR JSON or XML response body in `charset`, with
    /// escapes for what it cannot represent exactly (profiles-jp).
    pub fn encode_response(body: &[u8], xml: bool, charset: JpCharset) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(body).ok()?;
        if xml {
            // The declaration in any spelling (`encoding='utf-8'` from
            // some upstreams) must name the charset the bytes are now in.
            let spelled = ledger::resource::utf8_declaration_spelled_out(text.as_bytes());
            let text = std::str::from_utf8(&spelled).ok()?;
            let label = charset_label(charset);
            let text = text
                .replacen("encoding=\"UTF-8\"", &format!("encoding=\"{label}\""), 1)
                .replacen("encoding='UTF-8'", &format!("encoding='{label}'"), 1);
            Some(charset::encode_escaped(
                &text,
                charset,
                charset::Escape::Xml,
            ))
        } else {
            Some(charset::encode_escaped(
                text,
                charset,
                charset::Escape::Json,
            ))
        }
    }

    /// What the CapabilityStatement declares: an extension listing the
    /// accepted charsets and the conversions in force (JP Core asks that
    /// server-side conversion be declared).
    pub fn capability_extension(&self) -> Option<serde_json::Value> {
        if self.mode == JapaneseMode::Off {
            return None;
        }
        let mut parts = Vec::new();
        for charset in ["UTF-8", "Shift_JIS", "EUC-JP", "ISO-2022-JP"] {
            parts.push(serde_json::json!({"url": "acceptedCharset", "valueCode": charset}));
        }
        if self.mode == JapaneseMode::JpDefault {
            for conversion in [
                "variant-folding",
                "halfwidth-kana-widening",
                "ascii-folding-by-datatype",
                "human-name-text-spacing",
            ] {
                parts.push(serde_json::json!({"url": "conversion", "valueCode": conversion}));
            }
            let private_use = match self.rules.private_use {
                PrivateUsePolicy::Reject => "reject",
                PrivateUsePolicy::Allow => "allow",
                PrivateUsePolicy::Map(_) => "map",
            };
            parts.push(serde_json::json!({"url": "privateUse", "valueCode": private_use}));
        }
        Some(serde_json::json!({
            "url": CAPABILITY_EXTENSION_URL,
            "extension": parts,
        }))
    }
}

/// The CapabilityStatement extension declaring charsets and conversions.
pub const CAPABILITY_EXTENSION_URL: &str =
    "https://inkan.dev/fhir/StructureDefinition/japanese-text-handling";

/// Adds the declaration to a CapabilityStatement; returns whether it changed.
pub fn advertise(capability: &mut serde_json::Value, extension: serde_json::Value) -> bool {
    let Some(object) = capability.as_object_mut() else {
        return false;
    };
    let extensions = object
        .entry("extension")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    let Some(list) = extensions.as_array_mut() else {
        return false;
    };
    if list.iter().any(|e| e["url"] == CAPABILITY_EXTENSION_URL) {
        return false;
    }
    list.push(extension);
    true
}

/// The IANA label written in `Content-Type` and XML declarations.
pub fn charset_label(charset: JpCharset) -> &'static str {
    match charset {
        JpCharset::Utf8 => "UTF-8",
        JpCharset::ShiftJis => "Shift_JIS",
        JpCharset::EucJp => "EUC-JP",
        JpCharset::Iso2022Jp => "ISO-2022-JP",
    }
}

fn single_char(s: &str) -> Option<char> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

fn load_private_use_map(config: &JapaneseConfig) -> Result<HashMap<char, String>, ConfigError> {
    let path = config.private_use_map_file.as_ref().ok_or_else(|| {
        ConfigError::Invalid(
            "japanese.private_use = \"map\" needs japanese.private_use_map_file".into(),
        )
    })?;
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let table: HashMap<String, String> = toml::from_str(&text)
        .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?;
    table
        .into_iter()
        .map(|(code_point, replacement)| {
            let parsed = code_point
                .strip_prefix("U+")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .and_then(char::from_u32);
            parsed.map(|c| (c, replacement)).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "{}: {code_point:?} is not a code point like \"U+E000\"",
                    path.display()
                ))
            })
        })
        .collect()
}

/// ISO-2022-JP is 7-bit and so also valid UTF-8: an escape sequence in an
/// undeclared body means it is ISO-2022-JP (JSON and XML never carry ESC).
fn has_iso_2022_jp_escape(body: &[u8]) -> bool {
    memchr::memchr(0x1B, body).is_some()
}

/// The `encoding` an XML declaration names (`<?xml … encoding="EUC-JP"?>`).
fn xml_declared_encoding(body: &[u8]) -> Option<&str> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    let head = body.get(start..)?;
    if !head.starts_with(b"<?xml") {
        return None;
    }
    let end = head.windows(2).position(|w| w == b"?>")?;
    let declaration = std::str::from_utf8(&head[..end]).ok()?;
    let value = declaration.split("encoding=").nth(1)?;
    let quote = value.chars().next()?;
    value[1..].split(quote).next()
}

/// A decoded XML document still declares its old encoding; it is UTF-8 now.
fn fix_xml_declaration(text: String) -> String {
    let trimmed = text.trim_start();
    if !trimmed.starts_with("<?xml") {
        return text;
    }
    let Some(end) = text.find("?>") else {
        return text;
    };
    let declaration = &text[..end];
    let Some(at) = declaration.find("encoding=") else {
        return text;
    };
    let quote_at = at + "encoding=".len();
    let Some(quote) = declaration[quote_at..].chars().next() else {
        return text;
    };
    let Some(close) = declaration[quote_at + 1..].find(quote) else {
        return text;
    };
    format!(
        "{}encoding={quote}UTF-8{quote}{}",
        &text[..at],
        &text[quote_at + 1 + close + 1..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn japanese() -> Japanese {
        Japanese::from_config(&JapaneseConfig::default()).unwrap()
    }

    #[test]
    fn decoding_table() {
        let sjis = encoding_rs::SHIFT_JIS
            .encode("{\"family\":\"山田\"}")
            .0
            .into_owned();
        #[rustfmt::skip]
        type Case<'a> = (Vec<u8>, Option<&'a str>, Result<(&'a str, DecodedFrom), u16>);
        let cases: Vec<Case> = vec![
            (b"{}".to_vec(), None, Ok(("{}", None))),
            (
                sjis.clone(),
                Some("Shift_JIS"),
                Ok((
                    "{\"family\":\"山田\"}",
                    Some(("Shift_JIS (Windows-31J)", false)),
                )),
            ),
            (
                sjis.clone(),
                Some("cp932"),
                Ok((
                    "{\"family\":\"山田\"}",
                    Some(("Shift_JIS (Windows-31J)", false)),
                )),
            ),
            (b"{\"a\":\"\x82\"}".to_vec(), Some("Shift_JIS"), Err(400)),
            (b"{}".to_vec(), Some("koi8-r"), Err(415)),
        ];
        for (body, declared, want) in cases {
            let got = japanese().decode(Bytes::from(body.clone()), declared);
            match (got, want) {
                (Ok((text, note)), Ok((want_text, want_note))) => {
                    assert_eq!(std::str::from_utf8(&text).unwrap(), want_text);
                    assert_eq!(note, want_note, "{declared:?}");
                }
                (Err(e), Err(status)) => assert_eq!(e.status().as_u16(), status, "{e}"),
                (got, want) => panic!("{declared:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn malformed_json_is_400_whether_or_not_a_tree_is_built() {
        let plain = Japanese::from_config(&JapaneseConfig {
            mode: JapaneseMode::TranscodeOnly,
            jpcore: JpCoreMode::Off,
            ..JapaneseConfig::default()
        })
        .unwrap();
        for japanese in [japanese(), plain] {
            let error = japanese
                .process_json(Bytes::from_static(b"{\"resourceType\": oops"))
                .unwrap_err();
            assert_eq!(error.status().as_u16(), 400, "{error}");
            assert!(error.to_string().contains("not valid JSON"), "{error}");
        }
    }

    #[test]
    fn invalid_bytes_name_the_offset() {
        let error = japanese()
            .decode(Bytes::from_static(b"{\"a\":\"\x82\"}"), Some("Shift_JIS"))
            .unwrap_err();
        assert!(error.to_string().contains("offset 6"), "{error}");
    }

    #[test]
    fn xml_declaration_names_the_charset_when_the_header_does_not() {
        let xml = encoding_rs::EUC_JP
            .encode("<?xml version=\"1.0\" encoding=\"EUC-JP\"?><Patient xmlns=\"http://hl7.org/fhir\"><name><family value=\"鈴木\"/></name></Patient>")
            .0
            .into_owned();
        assert_eq!(xml_declared_encoding(&xml), Some("EUC-JP"));
        let (text, note) = japanese().decode(Bytes::from(xml), None).unwrap();
        assert_eq!(note, Some(("EUC-JP", false)));
        let text = std::str::from_utf8(&text).unwrap();
        assert!(
            text.contains("encoding=\"UTF-8\"") && text.contains("鈴木"),
            "{text}"
        );
        assert_eq!(xml_declared_encoding(b"{\"a\":1}"), None);
    }

    #[test]
    fn xml_declaration_says_utf8_after_decoding() {
        assert_eq!(
            fix_xml_declaration("<?xml version=\"1.0\" encoding=\"Shift_JIS\"?><a/>".into()),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><a/>"
        );
        assert_eq!(fix_xml_declaration("<a/>".into()), "<a/>");
    }

    #[test]
    fn search_values_table() {
        let types = |name: &str| match name {
            "family" => Some("string".to_owned()),
            "birthdate" => Some("date".to_owned()),
            "identifier" => Some("token".to_owned()),
            _ => None,
        };
        // Shift_JIS "ﾔﾏﾀﾞ" percent-encoded, as a legacy client sends it.
        let sjis: String = encoding_rs::SHIFT_JIS
            .encode("ﾔﾏﾀﾞ")
            .0
            .iter()
            .map(|b| format!("%{b:02X}"))
            .collect();
        #[rustfmt::skip]
        let cases: Vec<(String, Option<&str>)> = vec![
            ("family=%EF%BE%94%EF%BE%8F%EF%BE%80%EF%BE%9E&_count=5".into(), Some("family=%E3%83%A4%E3%83%9E%E3%83%80&_count=5")),
            (format!("family={sjis}"),                                  Some("family=%E3%83%A4%E3%83%9E%E3%83%80")),
            ("birthdate=%EF%BC%91%EF%BC%99%EF%BC%97%EF%BC%90".into(),  Some("birthdate=1970")),
            ("family:exact=%E5%B1%B1%E7%94%B0&_sort=name".into(),       None),
            ("identifier=x%7C%EF%BC%91".into(),                         None),
            ("identifier=urn%3Aoid%3A1.2.392.100495.20.3.51.1%7C%EF%BC%91".into(), Some("identifier=urn%3Aoid%3A1%2E2%2E392%2E100495%2E20%2E3%2E51%2E1%7C1")),
        ];
        let shift_jis_client = Japanese::from_config(&JapaneseConfig {
            default_charset: Some("Shift_JIS".into()),
            ..JapaneseConfig::default()
        })
        .unwrap();
        for (query, want) in cases {
            let mut report = TextReport::default();
            let got = shift_jis_client
                .normalize_query(&query, types, &mut report)
                .unwrap();
            assert_eq!(got.as_deref(), want, "{query}");
        }
        let mut report = TextReport::default();
        let refused = japanese().normalize_query(&format!("family={sjis}"), types, &mut report);
        assert_eq!(refused.unwrap_err().status().as_u16(), 400, "no guessing");
    }

    #[test]
    fn report_header() {
        let report = TextReport {
            decoded_from: Some(("EUC-JP", true)),
            changes: Changes {
                kana_widened: 3,
                ..Changes::default()
            },
            jpcore_findings: Vec::new(),
        };
        assert_eq!(
            report.header_value().unwrap(),
            "charset=EUC-JP (detected); kana-widened=3"
        );
        assert_eq!(TextReport::default().header_value(), None);
    }
}
