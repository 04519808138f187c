//! Every FHIR interaction passes through the gateway to the real upstream.

use serde_json::json;

use crate::{assert_outcome, create, json, patient, Stack};
use inkan_e2e::client;

#[test]
fn crud_and_history_round_trip() {
    let stack = Stack::start();
    let http = client();

    // create: 201, Location points at the gateway, not the upstream.
    let response = crate::post_json(&stack, "/Patient", patient("Yamada", "Hanako").to_string());
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&stack.url("/Patient/")), "{location}");
    let created = json(response);
    let id = created["id"].as_str().unwrap().to_owned();

    // read and vread
    let read = http
        .get(stack.url(&format!("/Patient/{id}")))
        .send()
        .unwrap();
    assert_eq!(read.status(), 200);
    let etag = read.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(json(read)["name"][0]["family"], "Yamada");
    let vread = http
        .get(stack.url(&format!("/Patient/{id}/_history/1")))
        .send()
        .unwrap();
    assert_eq!(vread.status(), 200);

    // update with If-Match (version-aware), then a stale If-Match is refused by the upstream.
    let mut updated = patient("Yamada", "Hanako");
    updated["id"] = json!(id);
    updated["gender"] = json!("other");
    let response = http
        .put(stack.url(&format!("/Patient/{id}")))
        .header("Content-Type", "application/fhir+json")
        .header("If-Match", &etag)
        .body(updated.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    let stale = http
        .put(stack.url(&format!("/Patient/{id}")))
        .header("Content-Type", "application/fhir+json")
        .header("If-Match", &etag)
        .body(updated.to_string())
        .send()
        .unwrap();
    assert!(
        stale.status() == 409 || stale.status() == 412,
        "stale If-Match: {}",
        stale.status()
    );

    // JSON Patch body passes untouched.
    let response = http
        .patch(stack.url(&format!("/Patient/{id}")))
        .header("Content-Type", "application/json-patch+json")
        .body(r#"[{"op":"replace","path":"/gender","value":"female"}]"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    let read = crate::get_json(&stack, &format!("/Patient/{id}"));
    assert_eq!(read["gender"], "female");
    assert_eq!(read["meta"]["versionId"], "3");

    // history: instance, type, system
    let history = crate::get_json(&stack, &format!("/Patient/{id}/_history"));
    assert_eq!(history["type"], "history");
    assert_eq!(history["entry"].as_array().unwrap().len(), 3);
    let type_history = crate::get_json(&stack, "/Patient/_history");
    assert_eq!(type_history["type"], "history");
    let system_history = crate::get_json(&stack, "/_history");
    assert_eq!(system_history["type"], "history");

    // delete, then read is gone
    let response = http
        .delete(stack.url(&format!("/Patient/{id}")))
        .send()
        .unwrap();
    assert!(
        response.status().is_success(),
        "delete: {}",
        response.status()
    );
    let gone = http
        .get(stack.url(&format!("/Patient/{id}")))
        .send()
        .unwrap();
    assert_eq!(gone.status(), 410);
}

#[test]
fn conditional_create_update_and_delete() {
    let stack = Stack::start();
    let http = client();
    let mut resource = patient("Sato", "Jiro");
    resource["identifier"] =
        json!([{"system": "urn:oid:1.2.392.100495.20.3.51.11311234567", "value": "00001"}]);
    let post = |body: &serde_json::Value| {
        http.post(stack.url("/Patient"))
            .header("Content-Type", "application/fhir+json")
            .header(
                "If-None-Exist",
                "identifier=urn:oid:1.2.392.100495.20.3.51.11311234567|00001",
            )
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let first = post(&resource);
    assert_eq!(first.status(), 201);
    let first_id = json(first)["id"].as_str().unwrap().to_owned();
    let second = post(&resource);
    assert_eq!(
        second.status(),
        200,
        "If-None-Exist match returns the existing resource"
    );

    // conditional update by search
    resource["gender"] = json!("male");
    let response = http
        .put(stack.url("/Patient?identifier=urn:oid:1.2.392.100495.20.3.51.11311234567|00001"))
        .header("Content-Type", "application/fhir+json")
        .body(resource.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    let read = crate::get_json(&stack, &format!("/Patient/{first_id}"));
    assert_eq!(read["gender"], "male");

    // conditional delete
    let response = http
        .delete(stack.url("/Patient?identifier=urn:oid:1.2.392.100495.20.3.51.11311234567|00001"))
        .send()
        .unwrap();
    assert!(
        response.status().is_success(),
        "conditional delete: {}",
        response.status()
    );
    assert_eq!(
        http.get(stack.url(&format!("/Patient/{first_id}")))
            .send()
            .unwrap()
            .status(),
        410
    );
}

#[test]
fn transaction_and_batch_bundles_pass_whole_and_in_order() {
    let stack = Stack::start();
    let transaction = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
             "resource": patient("Suzuki", "Ichiro"),
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059",
             "resource": {"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"},
                "valueQuantity": {"value": 60.50, "unit": "kg"}},
             "request": {"method": "POST", "url": "Observation"}}
        ]
    });
    let response = crate::post_json(&stack, "", transaction.to_string());
    assert_eq!(response.status(), 200);
    let result = json(response);
    assert_eq!(result["type"], "transaction-response");
    let entries = result["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let patient_location = entries[0]["response"]["location"].as_str().unwrap();
    let observation_location = entries[1]["response"]["location"].as_str().unwrap();
    assert!(
        patient_location.contains("Patient/"),
        "order kept: {patient_location}"
    );
    assert!(
        observation_location.contains("Observation/"),
        "order kept: {observation_location}"
    );
    for location in [patient_location, observation_location] {
        assert!(
            location.starts_with(&stack.gateway.base) || !location.contains("://"),
            "location not rewritten: {location}"
        );
    }
    // The urn:uuid reference was resolved by the upstream to the new Patient.
    let observation_path = observation_location
        .trim_start_matches(&format!("{}/", stack.gateway.base))
        .split("/_history")
        .next()
        .unwrap()
        .to_owned();
    let observation = crate::get_json(&stack, &format!("/{observation_path}"));
    let subject = observation["subject"]["reference"].as_str().unwrap();
    assert!(
        subject.contains("Patient/") && !subject.starts_with("urn:uuid"),
        "{subject}"
    );
    assert!(
        !subject.contains("localhost:8080"),
        "subject not rewritten: {subject}"
    );
    assert_eq!(observation["valueQuantity"]["value"].as_f64(), Some(60.5));

    let batch = json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Patient?family=Suzuki"}},
            {"resource": patient("Takahashi", "Saburo"), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/does-not-exist"}}
        ]
    });
    let result = json(crate::post_json(&stack, "", batch.to_string()));
    assert_eq!(result["type"], "batch-response");
    let statuses: Vec<&str> = result["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert!(statuses[0].starts_with("200"), "{statuses:?}");
    assert!(statuses[1].starts_with("201"), "{statuses:?}");
    assert!(statuses[2].starts_with("404"), "{statuses:?}");
}

#[test]
fn search_by_get_and_by_post() {
    let stack = Stack::start();
    let http = client();
    for given in ["A", "B"] {
        create(&stack, &patient("Kobayashi", given));
    }
    create(&stack, &patient("Watanabe", "C"));
    let by_get = crate::get_json(&stack, "/Patient?family=Kobayashi");
    assert_eq!(by_get["entry"].as_array().unwrap().len(), 2);
    let by_post = json(
        http.post(stack.url("/Patient/_search"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("family=Kobayashi")
            .send()
            .unwrap(),
    );
    assert_eq!(by_post["entry"].as_array().unwrap().len(), 2);
}

#[test]
fn operations_pass_through() {
    let stack = Stack::start();
    let http = client();
    let response = crate::post_json(
        &stack,
        "/Patient/$validate",
        patient("Ito", "Shiro").to_string(),
    );
    let status = response.status();
    let body = json(response);
    assert!(status.is_success(), "{status} {body}");
    assert_eq!(body["resourceType"], "OperationOutcome");

    let unknown = http
        .get(stack.url("/Patient/$no-such-operation"))
        .send()
        .unwrap();
    assert!(unknown.status().is_client_error(), "{}", unknown.status());
    let body = json(unknown);
    assert_outcome(&body, body["issue"][0]["code"].as_str().unwrap());
}

#[test]
fn fhirpath_patch_body_passes_untouched() {
    let stack = Stack::start();
    let created = create(&stack, &patient("Patch", "FhirPath"));
    let id = created["id"].as_str().unwrap();
    let parameters = json!({
        "resourceType": "Parameters",
        "parameter": [{
            "name": "operation",
            "part": [
                {"name": "type", "valueCode": "replace"},
                {"name": "path", "valueString": "Patient.birthDate"},
                {"name": "value", "valueDate": "1999-12-31"}
            ]
        }]
    });
    let response = client()
        .patch(stack.url(&format!("/Patient/{id}")))
        .header("Content-Type", "application/fhir+json")
        .body(parameters.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    let read = crate::get_json(&stack, &format!("/Patient/{id}"));
    assert_eq!(read["birthDate"], "1999-12-31");
}
