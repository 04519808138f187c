//! JP Core checks: the constraints of the Japanese base profiles that
//! inkan enforces at the door (`japanese.jpcore = warn | strict`). Not a
//! full profile validator: the checks below, each with the FHIRPath
//! location of what it found. Run after normalization, so full-width
//! digits a rule folds are not reported.
//!
//! | check | applies to |
//! |---|---|
//! | `identifier` present, each with a `value` | Patient claiming JP_Patient |
//! | patient-ID system `urn:oid:1.2.392.100495.20.3.51.` + `1` + 10-digit institution code | every Patient |
//! | `iso21090-EN-representation` is `IDE`, `SYL` or `ABC`; SYL names are full-width katakana | every HumanName |
//! | a seven-digit postal code is written `NNN-NNNN` | every Address |
//! | medical-institution code is 10 digits | every Organization identifier of that system |
//! | member identifier (JP_Insurance_memberID) is `保険者番号:記号:番号:枝番`-shaped, CSV identifier has a value | Coverage claiming JP_Coverage |
//! | `category` with a `coding.code`, `code`, `status` | Observation claiming JP_Observation_Common |

use serde_json::Value;

/// One thing a JP Core check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// FHIRPath-like location, e.g. `Patient.identifier[0].system`.
    pub path: String,
    /// What is wrong and what is expected, in words for the client.
    pub message: String,
}

const PROFILE_BASE: &str = "http://jpfhir.jp/fhir/core/StructureDefinition/";
const PATIENT_ID_PREFIX: &str = "urn:oid:1.2.392.100495.20.3.51.";
const EN_REPRESENTATION: &str =
    "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation";
const INSTITUTION_CODE_SYSTEM: &str =
    "http://jpfhir.jp/fhir/core/IdSystem/insurance-medical-institution-no";
const MEMBER_ID_SYSTEM: &str = "http://jpfhir.jp/fhir/clins/Idsystem/JP_Insurance_memberID";
const COVERAGE_CSV_SYSTEM: &str = "http://jpfhir.jp/fhir/core/IdSystem/JP_Coverage_id";

/// Checks one resource (and its contained resources).
pub fn check(resource: &Value) -> Vec<Finding> {
    let mut findings = Vec::new();
    let resource_type = resource["resourceType"].as_str().unwrap_or("Resource");
    check_resource(resource, resource_type, &mut findings);
    for (i, contained) in array(&resource["contained"]).iter().enumerate() {
        let inner_type = contained["resourceType"].as_str().unwrap_or("Resource");
        let mut inner = Vec::new();
        check_resource(contained, inner_type, &mut inner);
        findings.extend(inner.into_iter().map(|f| {
            Finding {
                path: f
                    .path
                    .replacen(inner_type, &format!("{resource_type}.contained[{i}]"), 1),
                message: f.message,
            }
        }));
    }
    findings
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

fn claims(resource: &Value, profile: &str) -> bool {
    array(&resource["meta"]["profile"]).iter().any(|p| {
        p.as_str()
            .is_some_and(|url| url.split('|').next() == Some(&format!("{PROFILE_BASE}{profile}")))
    })
}

fn check_resource(resource: &Value, resource_type: &str, findings: &mut Vec<Finding>) {
    let mut found = |path: String, message: &str| {
        findings.push(Finding {
            path,
            message: message.to_owned(),
        })
    };
    for (i, name) in array(&resource["name"]).iter().enumerate() {
        check_human_name(name, &format!("{resource_type}.name[{i}]"), &mut found);
    }
    for (i, address) in array(&resource["address"]).iter().enumerate() {
        let code = address["postalCode"].as_str().unwrap_or("");
        let digits = code.chars().filter(char::is_ascii_digit).count();
        let japanese_shape = code.chars().all(|c| c.is_ascii_digit() || c == '-');
        if digits == 7 && japanese_shape && !is_postal_code(code) {
            found(
                format!("{resource_type}.address[{i}].postalCode"),
                "a Japanese postal code is written NNN-NNNN",
            );
        }
    }
    let identifiers = array(&resource["identifier"]);
    match resource_type {
        "Patient" => {
            if claims(resource, "JP_Patient") && identifiers.is_empty() {
                found(
                    "Patient.identifier".into(),
                    "JP_Patient requires at least one identifier",
                );
            }
            for (i, identifier) in identifiers.iter().enumerate() {
                let path = format!("Patient.identifier[{i}]");
                if claims(resource, "JP_Patient") && identifier["value"].as_str().is_none() {
                    found(
                        format!("{path}.value"),
                        "JP_Patient requires identifier.value",
                    );
                }
                if let Some(institution) = identifier["system"]
                    .as_str()
                    .and_then(|s| s.strip_prefix(PATIENT_ID_PREFIX))
                {
                    let ok = institution.len() == 11
                        && institution.starts_with('1')
                        && institution.chars().all(|c| c.is_ascii_digit());
                    if !ok {
                        found(format!("{path}.system"), "the patient-ID system is urn:oid:1.2.392.100495.20.3.51. followed by 1 and the 10-digit medical-institution code");
                    }
                }
            }
        }
        "Organization" => {
            for (i, identifier) in identifiers.iter().enumerate() {
                if identifier["system"] == INSTITUTION_CODE_SYSTEM {
                    let value = identifier["value"].as_str().unwrap_or("");
                    if value.len() != 10 || !value.chars().all(|c| c.is_ascii_digit()) {
                        found(
                            format!("Organization.identifier[{i}].value"),
                            "a medical-institution code is 10 digits",
                        );
                    }
                }
            }
        }
        "Coverage" if claims(resource, "JP_Coverage") => {
            for (i, identifier) in identifiers.iter().enumerate() {
                let path = format!("Coverage.identifier[{i}].value");
                let value = identifier["value"].as_str();
                if identifier["system"] == MEMBER_ID_SYSTEM
                    && value.is_none_or(|v| v.split(':').count() != 4)
                {
                    found(path, "the member identifier is 保険者番号:記号:番号:枝番 (four parts joined by ':')");
                } else if identifier["system"] == COVERAGE_CSV_SYSTEM && value.is_none() {
                    found(path, "JP_Coverage requires the CSV identifier's value");
                }
            }
        }
        "Observation" if claims(resource, "JP_Observation_Common") => {
            let has_category_code = array(&resource["category"]).iter().any(|c| {
                array(&c["coding"])
                    .iter()
                    .any(|coding| coding["code"].is_string())
            });
            if !has_category_code {
                found(
                    "Observation.category".into(),
                    "JP_Observation_Common requires a category with a coding.code",
                );
            }
            for member in ["code", "status"] {
                if resource[member].is_null() {
                    found(
                        format!("Observation.{member}"),
                        "required by JP_Observation_Common",
                    );
                }
            }
        }
        _ => {}
    }
}

fn check_human_name(name: &Value, path: &str, found: &mut impl FnMut(String, &str)) {
    let representation = array(&name["extension"])
        .iter()
        .find(|e| e["url"] == EN_REPRESENTATION)
        .map(|e| e["valueCode"].as_str().unwrap_or(""));
    match representation {
        Some("IDE" | "ABC") | None => {}
        Some("SYL") => {
            let parts = std::iter::once(("family", &name["family"]))
                .chain(std::iter::once(("text", &name["text"])))
                .chain(array(&name["given"]).iter().map(|g| ("given", g)));
            for (member, value) in parts {
                if let Some(text) = value.as_str() {
                    if !text.chars().all(is_syllabic) {
                        found(
                            format!("{path}.{member}"),
                            "a SYL (カナ) name is written in full-width katakana",
                        );
                    }
                }
            }
        }
        Some(_) => found(
            format!("{path}.extension"),
            "iso21090-EN-representation is IDE, SYL or ABC",
        ),
    }
}

/// Full-width katakana, the prolonged sound mark, the middle dot and spaces.
fn is_syllabic(c: char) -> bool {
    matches!(
        c,
        '\u{30A1}'..='\u{30FA}' | 'ー' | '・' | 'ヽ' | 'ヾ' | ' ' | '\u{3000}'
    )
}

fn is_postal_code(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 8
        && b[3] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 3 || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(resource: Value) -> Vec<String> {
        check(&resource).into_iter().map(|f| f.path).collect()
    }

    #[test]
    fn checks_table() {
        let syl = |family: &str| json!([{"extension": [{"url": EN_REPRESENTATION, "valueCode": "SYL"}], "family": family}]);
        #[rustfmt::skip]
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (json!({"resourceType": "Patient", "name": syl("ヤマダ")}),                                 vec![]),
            (json!({"resourceType": "Patient", "name": syl("やまだ")}),                                 vec!["Patient.name[0].family"]),
            (json!({"resourceType": "Patient", "name": [{"extension": [{"url": EN_REPRESENTATION, "valueCode": "XYZ"}]}]}),
                                                                                                       vec!["Patient.name[0].extension"]),
            (json!({"resourceType": "Patient", "meta": {"profile": ["http://jpfhir.jp/fhir/core/StructureDefinition/JP_Patient"]}}),
                                                                                                       vec!["Patient.identifier"]),
            (json!({"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.11312345670", "value": "1"}]}),
                                                                                                       vec![]),
            (json!({"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.392.100495.20.3.51.1312345670", "value": "1"}]}),
                                                                                                       vec!["Patient.identifier[0].system"]),
            (json!({"resourceType": "Patient", "address": [{"postalCode": "1600023"}]}),               vec!["Patient.address[0].postalCode"]),
            (json!({"resourceType": "Patient", "address": [{"postalCode": "160-0023"}, {"postalCode": "SW1A 1AA"}]}),
                                                                                                       vec![]),
            (json!({"resourceType": "Organization", "identifier": [{"system": INSTITUTION_CODE_SYSTEM, "value": "131234567"}]}),
                                                                                                       vec!["Organization.identifier[0].value"]),
            (json!({"resourceType": "Coverage", "meta": {"profile": ["http://jpfhir.jp/fhir/core/StructureDefinition/JP_Coverage"]},
                    "identifier": [{"system": MEMBER_ID_SYSTEM, "value": "00012345:あいう:１８７:05"}, {"system": COVERAGE_CSV_SYSTEM}]}),
                                                                                                       vec!["Coverage.identifier[1].value"]),
            (json!({"resourceType": "Observation", "meta": {"profile": ["http://jpfhir.jp/fhir/core/StructureDefinition/JP_Observation_Common"]},
                    "status": "final", "code": {"text": "x"}}),                                        vec!["Observation.category"]),
            (json!({"resourceType": "Observation", "contained": [{"resourceType": "Patient", "name": syl("たろう")}]}),
                                                                                                       vec!["Observation.contained[0].name[0].family"]),
        ];
        for (resource, want) in cases {
            assert_eq!(paths(resource.clone()), want, "{resource}");
        }
    }
}
