//! Which patients a request concerns, for BALP's patient-specific events.
//! Pure; looks only at what can be told without a FHIR model: the path,
//! the patient search parameters, and the `subject`/`patient`/
//! `beneficiary` references and Patient ids of the answer's resources.

use serde::Deserialize;

use crate::fhir::path::{id_of_reference, query_pairs};

/// Adds `id` unless present; at most `max` + 1 entries are kept, so the
/// caller can tell that more were left out without unbounded memory.
pub fn add(patients: &mut Vec<String>, id: &str, max: usize) {
    if !id.is_empty() && patients.len() <= max && !patients.iter().any(|p| p == id) {
        patients.push(id.to_owned());
    }
}

/// Patients named by the path and the patient search parameters.
pub fn in_request(fhir_path: &str, query: Option<&str>, patients: &mut Vec<String>, max: usize) {
    let segments = crate::fhir::path::segments(fhir_path);
    let is_patient = segments.first() == Some(&"Patient");
    if is_patient {
        if let Some(id) = segments.get(1).filter(|s| !s.starts_with(['$', '_'])) {
            add(patients, id, max);
        }
    }
    for (name, value) in query_pairs(query.unwrap_or("")) {
        let base = name.split(':').next().unwrap_or("");
        let named = matches!(base, "patient" | "subject") || (is_patient && base == "_id");
        if !named {
            continue;
        }
        for item in value.split(',') {
            match id_of_reference(item, "Patient") {
                Some(id) => add(patients, &id, max),
                None if !item.contains('/') => add(patients, item, max),
                None => {}
            }
        }
    }
}

#[derive(Deserialize)]
struct Reference {
    reference: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum References {
    One(Reference),
    Many(Vec<Reference>),
}

#[derive(Deserialize)]
struct Resource {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    id: Option<String>,
    subject: Option<References>,
    patient: Option<References>,
    beneficiary: Option<References>,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    resource: Option<Resource>,
}

/// Patients in a JSON answer: the resource itself or each entry of a
/// Bundle. Anything that is not FHIR JSON names nobody.
pub fn in_answer(body: &[u8], patients: &mut Vec<String>, max: usize) {
    let Ok(resource) = serde_json::from_slice::<Resource>(body) else {
        return;
    };
    collect(&resource, patients, max);
    for entry in &resource.entry {
        if let Some(resource) = &entry.resource {
            collect(resource, patients, max);
        }
    }
}

fn collect(resource: &Resource, patients: &mut Vec<String>, max: usize) {
    if resource.resource_type.as_deref() == Some("Patient") {
        if let Some(id) = &resource.id {
            add(patients, id, max);
        }
    }
    for field in [&resource.subject, &resource.patient, &resource.beneficiary] {
        let references: &[Reference] = match field {
            Some(References::One(one)) => std::slice::from_ref(one),
            Some(References::Many(many)) => many,
            None => &[],
        };
        for reference in references {
            let named = reference.reference.as_deref();
            if let Some(id) = named.and_then(|r| id_of_reference(r, "Patient")) {
                add(patients, &id, max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patients_are_found_in_paths_queries_and_answers() {
        // (path, query, answer, expected)
        let cases: &[(&str, Option<&str>, &str, &[&str])] = &[
            ("/Patient/p1", None, "", &["p1"]),
            ("/Patient/p1/_history/2", None, "", &["p1"]),
            ("/Patient/$verify", None, "", &[]),
            ("/Observation", Some("patient=p1"), "", &["p1"]),
            (
                "/Observation",
                Some("subject=Patient%2Fp2&code=x"),
                "",
                &["p2"],
            ),
            ("/Observation", Some("subject=Group/g1"), "", &[]),
            ("/Patient", Some("_id=p1,p2"), "", &["p1", "p2"]),
            ("/Observation", Some("_id=o1"), "", &[]),
            (
                "/Observation/o1",
                None,
                r#"{"resourceType":"Observation","subject":{"reference":"Patient/p3"}}"#,
                &["p3"],
            ),
            (
                "/Observation",
                None,
                r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Observation","subject":{"reference":"http://x/fhir/Patient/p4/_history/1"}}},{"resource":{"resourceType":"Patient","id":"p5"}},{"resource":{"resourceType":"Observation","subject":{"reference":"Patient/p4"}}}]}"#,
                &["p4", "p5"],
            ),
            (
                "/Coverage/c1",
                None,
                r#"{"resourceType":"Coverage","beneficiary":{"reference":"Patient/p6"}}"#,
                &["p6"],
            ),
            ("/Observation/o1", None, "<Observation/>", &[]),
        ];
        for (path, query, answer, expected) in cases {
            let mut found = Vec::new();
            in_request(path, *query, &mut found, 10);
            in_answer(answer.as_bytes(), &mut found, 10);
            assert_eq!(found, *expected, "{path} {query:?}");
        }
    }

    #[test]
    fn at_most_one_more_than_the_cap_is_kept() {
        let mut found = Vec::new();
        for i in 0..10 {
            add(&mut found, &format!("p{i}"), 3);
        }
        assert_eq!(found, ["p0", "p1", "p2", "p3"]);
    }
}
