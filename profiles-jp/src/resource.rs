//! Field-aware normalization of a FHIR R4 resource (JSON): each string is
//! treated by its element's datatype, looked up in the generated R4 type
//! table ([`crate::r4_types`]), never guessed from key names alone.
//!
//! | datatype | rules |
//! |---|---|
//! | string, markdown, xhtml | 1 variant folding, 2 kana widening |
//! | code, id, uri, url, canonical, oid, uuid, date, dateTime, instant, time | 3 full-width ASCII and U+3000 → ASCII, dashes between digits → `-`, trimmed ([`text::fold_fullwidth_ascii`]) |
//! | `ContactPoint.value` of a phone or fax | 3 as above (before 1 and 2) |
//! | `Address.postalCode` | 3 as above, then seven digits as `NNN-NNNN` |
//! | `Identifier.value` of a system configured as ASCII | 3 as above (before 1 and 2) |
//! | `HumanName.text` | 4 U+3000 between parts → one space (after 1 and 2) |
//! | every string | 5 private-use code points (reject / allow / map), 6 C0 controls rejected |
//!
//! Coverage member identifiers (保険者番号:記号:番号:枝番) and names are
//! never folded to ASCII: their systems are not in the ASCII list.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::text::{self, VariantTable};

/// What to do with private-use code points (外字).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PrivateUsePolicy {
    /// Refuse the resource (422), naming the element and the code point.
    #[default]
    Reject,
    /// Keep them as sent.
    Allow,
    /// Replace with the site's table (PUA → Unicode, IVS allowed); code
    /// points not in the table are refused.
    Map(HashMap<char, String>),
}

/// The rules in force.
#[derive(Debug, Clone)]
pub struct Rules {
    pub variants: VariantTable,
    pub private_use: PrivateUsePolicy,
    /// `Identifier.system` values (exact, or prefixes ending in `.`, `:` or
    /// `/`) whose values are ASCII by definition.
    pub ascii_identifier_systems: Vec<String>,
}

/// JP Core's patient-ID OID prefix, the medical-institution code and the
/// insurer number systems: ASCII digits by definition.
pub const DEFAULT_ASCII_IDENTIFIER_SYSTEMS: &[&str] = &[
    "urn:oid:1.2.392.100495.20.3.51.",
    "http://jpfhir.jp/fhir/core/IdSystem/insurance-medical-institution-no",
    "urn:oid:1.2.392.100495.20.3.61",
];

impl Rules {
    /// Whether `system` is configured as ASCII: an exact entry, or under
    /// an entry ending in `.`, `:` or `/`.
    pub fn is_ascii_system(&self, system: &str) -> bool {
        self.ascii_identifier_systems.iter().any(|listed| {
            system == listed
                || (listed.ends_with(['.', ':', '/']) && system.starts_with(listed.as_str()))
        })
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            variants: VariantTable::default(),
            private_use: PrivateUsePolicy::Reject,
            ascii_identifier_systems: DEFAULT_ASCII_IDENTIFIER_SYSTEMS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}

/// How many changes each rule made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    pub variants_folded: usize,
    pub kana_widened: usize,
    pub ascii_folded: usize,
    pub name_spaces: usize,
    pub private_use_mapped: usize,
}

impl Changes {
    pub fn total(&self) -> usize {
        self.variants_folded
            + self.kana_widened
            + self.ascii_folded
            + self.name_spaces
            + self.private_use_mapped
    }

    /// Adds the counts of `more`.
    pub fn add(&mut self, more: &Changes) {
        self.variants_folded += more.variants_folded;
        self.kana_widened += more.kana_widened;
        self.ascii_folded += more.ascii_folded;
        self.name_spaces += more.name_spaces;
        self.private_use_mapped += more.private_use_mapped;
    }

    /// `(name, count)` for every rule that changed something, for headers
    /// and metrics.
    pub fn nonzero(&self) -> Vec<(&'static str, usize)> {
        [
            ("variants-folded", self.variants_folded),
            ("kana-widened", self.kana_widened),
            ("ascii-folded", self.ascii_folded),
            ("name-spaces", self.name_spaces),
            ("private-use-mapped", self.private_use_mapped),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }
}

/// Why a resource cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// Rule 5 (policy `reject`, or `map` without an entry).
    #[error("{path} contains the private-use character U+{:04X} (外字); send a standard character or ask the site to map it", *.code_point as u32)]
    PrivateUse { path: String, code_point: char },
    /// Rule 6.
    #[error("{path} contains the control character U+{:04X}", *.code_point as u32)]
    Control { path: String, code_point: char },
}

/// Normalizes `resource` in place. The resource type comes from its
/// `resourceType`; unknown types and members are left alone (checks 5 and
/// 6 still apply to every string).
pub fn normalize(resource: &mut Value, rules: &Rules) -> Result<Changes, Violation> {
    let mut changes = Changes::default();
    let resource_type = resource["resourceType"]
        .as_str()
        .unwrap_or("Resource")
        .to_owned();
    let mut walker = Walker {
        rules,
        changes: &mut changes,
    };
    walker.value(resource, &resource_type, None, &mut resource_type.clone())?;
    Ok(changes)
}

/// The datatype of `member` in `parent` (a type or backbone element name).
fn member_type(parent: &str, member: &str) -> Option<&'static str> {
    let table = crate::r4_types::MEMBERS;
    table
        .binary_search_by(|(t, m, _)| {
            (t.as_bytes(), m.as_bytes()).cmp(&(parent.as_bytes(), member.as_bytes()))
        })
        .ok()
        .map(|i| table[i].2)
}

struct Walker<'a> {
    rules: &'a Rules,
    changes: &'a mut Changes,
}

impl Walker<'_> {
    /// `value` has datatype `fhir_type`; `parent` is the object holding it
    /// (for the context rules); `path` is its FHIRPath-like location.
    fn value(
        &mut self,
        value: &mut Value,
        fhir_type: &str,
        parent: Option<&Context<'_>>,
        path: &mut String,
    ) -> Result<(), Violation> {
        match value {
            Value::Object(object) => {
                let object_type = if fhir_type == "Resource" {
                    object
                        .get("resourceType")
                        .and_then(Value::as_str)
                        .unwrap_or("Resource")
                        .to_owned()
                } else {
                    fhir_type.to_owned()
                };
                self.object(object, &object_type, path)
            }
            Value::Array(items) => {
                let len = path.len();
                for (i, item) in items.iter_mut().enumerate() {
                    use std::fmt::Write;
                    let _ = write!(path, "[{i}]");
                    self.value(item, fhir_type, parent, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Value::String(s) => {
                if let Some(new) = self.string(s, fhir_type, parent, path)? {
                    *s = new;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn object(
        &mut self,
        object: &mut Map<String, Value>,
        object_type: &str,
        path: &mut String,
    ) -> Result<(), Violation> {
        // Context rules read a sibling (ContactPoint.system,
        // Identifier.system): take it before mutating.
        let context = Context::of(object, object_type);
        for (key, child) in object.iter_mut() {
            if key == "resourceType" {
                continue;
            }
            let member = key.strip_prefix('_').unwrap_or(key);
            // `_family` holds the primitive's id/extension: an Element.
            let fhir_type = if key.starts_with('_') {
                "Element"
            } else {
                member_type(object_type, member).unwrap_or("unknown")
            };
            let len = path.len();
            path.push('.');
            path.push_str(member);
            self.value(child, fhir_type, Some(&context), path)?;
            path.truncate(len);
        }
        Ok(())
    }

    /// Returns the new string when a rule changed it.
    fn string(
        &mut self,
        s: &str,
        fhir_type: &str,
        parent: Option<&Context<'_>>,
        path: &str,
    ) -> Result<Option<String>, Violation> {
        if let Some((_, code_point)) = text::find_control(s) {
            return Err(Violation::Control {
                path: path.to_owned(),
                code_point,
            });
        }
        let mut current: Option<String> = None;
        let apply = |current: &mut Option<String>, rule: &dyn Fn(&str) -> (String, usize)| {
            let (new, n) = rule(current.as_deref().unwrap_or(s));
            if n > 0 {
                *current = Some(new);
            }
            n
        };
        if text::find_private_use(s).is_some() {
            match &self.rules.private_use {
                PrivateUsePolicy::Allow => {}
                PrivateUsePolicy::Reject => {
                    return Err(private_use(s, path));
                }
                PrivateUsePolicy::Map(table) => {
                    let mut mapped = String::with_capacity(s.len());
                    for c in s.chars() {
                        if text::find_private_use(c.encode_utf8(&mut [0; 4])).is_some() {
                            match table.get(&c) {
                                Some(to) => {
                                    mapped.push_str(to);
                                    self.changes.private_use_mapped += 1;
                                }
                                None => return Err(private_use(s, path)),
                            }
                        } else {
                            mapped.push(c);
                        }
                    }
                    current = Some(mapped);
                }
            }
        }
        let member = path.rsplit('.').next().unwrap_or("");
        let member = member.split('[').next().unwrap_or(member);
        match fhir_type {
            "string" | "markdown" | "xhtml" => {
                let no_context = Context::default();
                let context = parent.unwrap_or(&no_context);
                // Rule 3 first in the strings that are ASCII by definition,
                // so they fold exactly as a search value of theirs does
                // (rule 1 would turn － into −, which is kept outside digits).
                let ascii_rule: Option<StringRule> = if member == "value" && context.is_phone() {
                    Some(text::phone_number)
                } else if member == "postalCode" && context.typed == "Address" {
                    Some(text::postal_code)
                } else if member == "value"
                    && context.typed == "Identifier"
                    && context
                        .system
                        .as_deref()
                        .is_some_and(|system| self.rules.is_ascii_system(system))
                {
                    Some(text::fold_fullwidth_ascii)
                } else {
                    None
                };
                if let Some(rule) = ascii_rule {
                    self.changes.ascii_folded += apply(&mut current, &rule);
                }
                let variants = &self.rules.variants;
                // The cheap checks spare an allocation for the (usual)
                // strings no rule touches.
                if variants.may_fold(current.as_deref().unwrap_or(s)) {
                    self.changes.variants_folded += apply(&mut current, &|x| variants.fold(x));
                }
                if text::may_widen_kana(current.as_deref().unwrap_or(s)) {
                    self.changes.kana_widened += apply(&mut current, &text::widen_kana);
                }
                if member == "text" && context.typed == "HumanName" {
                    self.changes.name_spaces += apply(&mut current, &text::human_name_text);
                }
            }
            "code" | "id" | "uri" | "url" | "canonical" | "oid" | "uuid" | "date" | "dateTime"
            | "instant" | "time"
                if text::may_fold_ascii(current.as_deref().unwrap_or(s)) =>
            {
                self.changes.ascii_folded += apply(&mut current, &text::fold_fullwidth_ascii);
            }
            _ => {}
        }
        Ok(current)
    }
}

/// A string rule of [`text`]: the new string and how many changes it made.
type StringRule = fn(&str) -> (String, usize);

fn private_use(s: &str, path: &str) -> Violation {
    let code_point = text::find_private_use(s).map_or('\u{E000}', |(_, c)| c);
    Violation::PrivateUse {
        path: path.to_owned(),
        code_point,
    }
}

/// What the context rules need to know about the object holding a string.
#[derive(Debug, Default, Clone)]
struct Context<'a> {
    /// The object's datatype.
    typed: &'a str,
    /// Its `system` member (ContactPoint, Identifier).
    system: Option<String>,
}

impl<'a> Context<'a> {
    fn of(object: &Map<String, Value>, typed: &'a str) -> Context<'a> {
        Context {
            typed,
            system: object
                .get("system")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }

    fn is_phone(&self) -> bool {
        self.typed == "ContactPoint" && matches!(self.system.as_deref(), Some("phone" | "fax"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn member_types_come_from_the_r4_table() {
        #[rustfmt::skip]
        let cases = [
            ("Patient", "name", Some("HumanName")),
            ("Patient", "birthDate", Some("date")),
            ("HumanName", "text", Some("string")),
            ("ContactPoint", "system", Some("code")),
            ("Encounter", "class", Some("Coding")),
            ("BundleEntry", "resource", Some("Resource")),
            ("Patient", "nosuchmember", None),
        ];
        for (parent, member, want) in cases {
            assert_eq!(member_type(parent, member), want, "{parent}.{member}");
        }
    }

    #[test]
    fn normalization_table() {
        let rules = Rules::default();
        #[rustfmt::skip]
        let cases: Vec<(Value, Value)> = vec![
            // rule 2 in a string; rule 3 in a code and a date
            (json!({"resourceType":"Patient","name":[{"family":"ﾔﾏﾀﾞ"}],"gender":"ｍａｌｅ","birthDate":"１９７０-01-01"}),
             json!({"resourceType":"Patient","name":[{"family":"ヤマダ"}],"gender":"male","birthDate":"1970-01-01"})),
            // rule 1 (CP932 wave dash) in narrative-free string; rule 4 in HumanName.text
            (json!({"resourceType":"Patient","name":[{"text":"山田\u{3000}太郎"}],"address":[{"text":"1\u{FF5E}2"}]}),
             json!({"resourceType":"Patient","name":[{"text":"山田 太郎"}],"address":[{"text":"1\u{301C}2"}]})),
            // phone vs email; postal code
            (json!({"resourceType":"Patient","telecom":[{"system":"phone","value":" ０３ー１２３４ー５６７８ "},{"system":"email","value":"ａ@example.jp"}],"address":[{"postalCode":"１２３４５６７"}]}),
             json!({"resourceType":"Patient","telecom":[{"system":"phone","value":"03-1234-5678"},{"system":"email","value":"ａ@example.jp"}],"address":[{"postalCode":"123-4567"}]})),
            // ASCII identifier systems fold; Coverage member identifiers do not
            (json!({"resourceType":"Patient","identifier":[{"system":"urn:oid:1.2.392.100495.20.3.51.11311234567","value":"００００１"}]}),
             json!({"resourceType":"Patient","identifier":[{"system":"urn:oid:1.2.392.100495.20.3.51.11311234567","value":"00001"}]})),
            (json!({"resourceType":"Coverage","identifier":[{"system":"http://jpfhir.jp/fhir/core/IdSystem/insurance-member-id","value":"０００１２３４５:あいう:１８７:０５"}]}),
             json!({"resourceType":"Coverage","identifier":[{"system":"http://jpfhir.jp/fhir/core/IdSystem/insurance-member-id","value":"０００１２３４５:あいう:１８７:０５"}]})),
            // rule 3 in dates, codes, phones and ASCII identifiers: ー and － between digits,
            // U+3000 trimmed; rule 3 comes before rule 1 (－ would become −, kept outside digits)
            (json!({"resourceType":"Patient","gender":"male\u{3000}","birthDate":"２０２４ー０１ー１５","telecom":[{"system":"phone","value":"\u{3000}０３\u{2212}１２３４－５６７８"}],"identifier":[{"system":"urn:oid:1.2.392.100495.20.3.51.11311234567","value":"Ａ－１２３ー４"}],"name":[{"family":"サーバ－1"}]}),
             json!({"resourceType":"Patient","gender":"male","birthDate":"2024-01-15","telecom":[{"system":"phone","value":"03-1234-5678"}],"identifier":[{"system":"urn:oid:1.2.392.100495.20.3.51.11311234567","value":"A-123-4"}],"name":[{"family":"サーバ\u{2212}1"}]})),
            // compatibility ideographs and IVS stay as sent (no NFC/NFKC)
            (json!({"resourceType":"Patient","name":[{"family":"\u{FA46}\u{9AD9}\u{FA11}","given":["葛\u{E0100}"]}]}),
             json!({"resourceType":"Patient","name":[{"family":"\u{FA46}\u{9AD9}\u{FA11}","given":["葛\u{E0100}"]}]})),
            // contained resources and Bundle entries use their own resourceType
            (json!({"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","gender":"ｆｅｍａｌｅ","name":[{"family":"ｶﾞ"}]}}]}),
             json!({"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","gender":"female","name":[{"family":"ガ"}]}}]})),
        ];
        for (mut input, want) in cases {
            let original = input.clone();
            normalize(&mut input, &rules).unwrap();
            assert_eq!(input, want, "from {original}");
        }
    }

    #[test]
    fn counts_per_rule() {
        let mut patient = json!({"resourceType":"Patient","name":[{"family":"ﾔﾏﾀﾞ","text":"ﾔﾏﾀﾞ\u{3000}ﾀﾛｳ"}],"gender":"ｍａｌｅ"});
        let changes = normalize(&mut patient, &Rules::default()).unwrap();
        assert_eq!(changes.kana_widened, 3 + 6);
        assert_eq!(changes.ascii_folded, 4);
        assert_eq!(changes.name_spaces, 1);
        assert_eq!(changes.nonzero().len(), 3);
    }

    #[test]
    fn violations_name_the_element() {
        let rules = Rules::default();
        #[rustfmt::skip]
        let cases: Vec<(Value, Violation)> = vec![
            (json!({"resourceType":"Patient","name":[{"family":"山\u{E000}"}]}),
             Violation::PrivateUse { path: "Patient.name[0].family".into(), code_point: '\u{E000}' }),
            (json!({"resourceType":"Patient","name":[{"given":["a","b\u{1}"]}]}),
             Violation::Control { path: "Patient.name[0].given[1]".into(), code_point: '\u{1}' }),
        ];
        for (mut input, want) in cases {
            assert_eq!(normalize(&mut input, &rules), Err(want));
        }
        let mut mapped = json!({"resourceType":"Patient","name":[{"family":"山\u{E000}"}]});
        let map_rules = Rules {
            private_use: PrivateUsePolicy::Map(
                [('\u{E000}', "﨑".to_owned())].into_iter().collect(),
            ),
            ..Rules::default()
        };
        let changes = normalize(&mut mapped, &map_rules).unwrap();
        assert_eq!(mapped["name"][0]["family"], "山﨑");
        assert_eq!(changes.private_use_mapped, 1);
        let mut allowed = json!({"resourceType":"Patient","name":[{"family":"山\u{E000}"}]});
        let allow = Rules {
            private_use: PrivateUsePolicy::Allow,
            ..Rules::default()
        };
        assert_eq!(normalize(&mut allowed, &allow).unwrap().total(), 0);
    }
}
