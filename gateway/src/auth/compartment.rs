//! The patient compartment of a token with patient context: what a
//! `patient/…` scope lets a client see, where the gateway can tell. Pure.
//!
//! - A read of `Patient/<id>` must name the context patient.
//! - A resource read or written may not point at another patient through
//!   its `subject`, `patient` or `beneficiary` reference.
//! - A search of a type with a `patient` search parameter gets
//!   `patient=<context>` added (or must already say so); a search of
//!   `Patient` gets `_id=<context>`. Searches the gateway cannot pin to the
//!   patient (other types, chains, `_has`, system-wide) are refused.

use crate::fhir::path::{id_of_reference, query_pairs};

/// Resource types with a `patient` search parameter (FHIR R4's search
/// parameter registry, the resources of the Patient compartment that have
/// one). A patient-context search of any other type is refused.
const PATIENT_PARAMETER_TYPES: &[&str] = &[
    "Account",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "BodyStructure",
    "CarePlan",
    "CareTeam",
    "ChargeItem",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "Communication",
    "CommunicationRequest",
    "Composition",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "Encounter",
    "EnrollmentRequest",
    "EpisodeOfCare",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GuidanceResponse",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "Invoice",
    "List",
    "MeasureReport",
    "Media",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationRequest",
    "MedicationStatement",
    "MolecularSequence",
    "NutritionOrder",
    "Observation",
    "Person",
    "Procedure",
    "Provenance",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchSubject",
    "RiskAssessment",
    "ServiceRequest",
    "Specimen",
    "SupplyDelivery",
    "Task",
    "VisionPrescription",
];

/// The reference fields that name a resource's patient.
const PATIENT_REFERENCE_FIELDS: &[&str] = &["subject", "patient", "beneficiary"];

/// How a patient-context search is pinned to the patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchPin {
    /// The query already names only the context patient.
    AlreadyPinned,
    /// Add this `name=value` to the query.
    Add(String, String),
}

/// Pins a search of `resource_type` with `query` to `patient`, or says
/// why it cannot be.
pub fn pin_search(
    resource_type: &str,
    query: Option<&str>,
    patient: &str,
) -> Result<SearchPin, String> {
    let pin = if resource_type == "Patient" {
        "_id"
    } else if PATIENT_PARAMETER_TYPES.contains(&resource_type) {
        "patient"
    } else {
        return Err(format!(
            "a patient-context search of {resource_type} cannot be limited to the patient"
        ));
    };
    let mut pinned = false;
    for (name, value) in query_pairs(query.unwrap_or("")) {
        let base = name.split([':', '.']).next().unwrap_or("");
        if name.starts_with("_has") {
            return Err("reverse chaining (_has) is refused with patient context".into());
        }
        let names_patient = base == pin || (pin == "patient" && base == "subject");
        if !names_patient {
            continue;
        }
        let plain = name == base || name == format!("{base}:Patient");
        if !plain {
            return Err(format!(
                "search parameter {name} is refused with patient context"
            ));
        }
        if !value.split(',').all(|v| names_the_patient(v, patient)) {
            return Err(format!("{name} names another patient than the token's"));
        }
        pinned = true;
    }
    Ok(match pinned {
        true => SearchPin::AlreadyPinned,
        false => SearchPin::Add(pin.to_owned(), patient.to_owned()),
    })
}

/// Whether a reference (`123`, `Patient/123`, an absolute URL, with or
/// without `_history`) names the patient `patient`.
pub fn names_the_patient(reference: &str, patient: &str) -> bool {
    reference == patient || id_of_reference(reference, "Patient").as_deref() == Some(patient)
}

/// The first reference in `resource` (parsed JSON) that names another
/// patient than `patient`, or `Patient/<id>` itself when the resource is
/// another Patient. `None`: nothing the gateway can see points elsewhere.
pub fn foreign_patient(resource: &serde_json::Value, patient: &str) -> Option<String> {
    if resource["resourceType"] == "Patient" {
        let id = resource["id"].as_str().unwrap_or("");
        return (id != patient).then(|| format!("Patient/{id}"));
    }
    for field in PATIENT_REFERENCE_FIELDS {
        let value = &resource[*field];
        // `subject` of a few types is a list (e.g. Consent's in R5); be
        // liberal in what is looked at.
        let references: Vec<&serde_json::Value> = match value {
            serde_json::Value::Array(items) => items.iter().collect(),
            serde_json::Value::Null => continue,
            single => vec![single],
        };
        for reference in references {
            match reference["reference"].as_str() {
                Some(text) if names_the_patient(text, patient) => {}
                Some(text) => return Some(text.to_owned()),
                // A contained or identifier-only reference: not a patient
                // the gateway can compare.
                None => return Some(format!("{field} without a literal reference")),
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_are_pinned_to_the_patient_or_refused() {
        use SearchPin::*;
        let add = |n: &str| -> Result<SearchPin, ()> { Ok(Add(n.into(), "p1".into())) };
        // (type, query, result)
        let cases: &[(&str, Option<&str>, Result<SearchPin, ()>)] = &[
            ("Observation", None, add("patient")),
            ("Observation", Some("code=1234-5"), add("patient")),
            ("Observation", Some("patient=p1"), Ok(AlreadyPinned)),
            ("Observation", Some("patient=Patient/p1"), Ok(AlreadyPinned)),
            (
                "Observation",
                Some("subject=Patient%2Fp1"),
                Ok(AlreadyPinned),
            ),
            ("Observation", Some("subject:Patient=p1"), Ok(AlreadyPinned)),
            ("Observation", Some("patient=p2"), Err(())),
            ("Observation", Some("patient=p1,p2"), Err(())),
            ("Observation", Some("patient=p1&patient=p2"), Err(())),
            ("Observation", Some("subject=Group/g"), Err(())),
            ("Observation", Some("patient.name=Yamada"), Err(())),
            ("Observation", Some("patient:missing=true"), Err(())),
            ("Patient", None, add("_id")),
            ("Patient", Some("_id=p1"), Ok(AlreadyPinned)),
            ("Patient", Some("_id=p2"), Err(())),
            ("Patient", Some("_has:Observation:patient:code=x"), Err(())),
            ("Practitioner", None, Err(())),
        ];
        for (resource_type, query, expected) in cases {
            let got = pin_search(resource_type, *query, "p1").map_err(|_| ());
            assert_eq!(&got, expected, "{resource_type}?{query:?}");
        }
    }

    #[test]
    fn references_name_the_patient_or_another() {
        let cases: &[(&str, bool)] = &[
            ("p1", true),
            ("Patient/p1", true),
            ("Patient/p1/_history/3", true),
            ("https://fhir.example.jp/fhir/Patient/p1", true),
            ("Patient/p12", false),
            ("Patient/xp1", false),
            ("Group/p1", false),
            ("p2", false),
        ];
        for (reference, expected) in cases {
            assert_eq!(names_the_patient(reference, "p1"), *expected, "{reference}");
        }
    }

    #[test]
    fn resources_pointing_at_another_patient_are_found() {
        let cases: &[(&str, Option<&str>)] = &[
            (r#"{"resourceType":"Patient","id":"p1"}"#, None),
            (
                r#"{"resourceType":"Patient","id":"p2"}"#,
                Some("Patient/p2"),
            ),
            (
                r#"{"resourceType":"Observation","subject":{"reference":"Patient/p1"}}"#,
                None,
            ),
            (
                r#"{"resourceType":"Observation","subject":{"reference":"Patient/p2"}}"#,
                Some("Patient/p2"),
            ),
            (
                r#"{"resourceType":"AllergyIntolerance","patient":{"reference":"Patient/p2"}}"#,
                Some("Patient/p2"),
            ),
            (
                r#"{"resourceType":"Coverage","beneficiary":{"reference":"Patient/p2"}}"#,
                Some("Patient/p2"),
            ),
            (
                r#"{"resourceType":"Observation","subject":{"identifier":{"value":"x"}}}"#,
                Some("subject without a literal reference"),
            ),
            (r#"{"resourceType":"Practitioner","id":"d1"}"#, None),
        ];
        for (json, expected) in cases {
            let value: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(
                foreign_patient(&value, "p1").as_deref(),
                *expected,
                "{json}"
            );
        }
    }
}
