//! Legacy Japanese charsets and JP Core normalization in the request path,
//! against the real upstream: what HFS stores is UTF-8, normalized by
//! datatype; invalid bytes, 外字 and control characters are refused with
//! the offset or the element path.

use serde_json::json;

use crate::{assert_outcome, json, Stack};
use inkan_e2e::client;

fn post_encoded(stack: &Stack, body: Vec<u8>, content_type: &str) -> reqwest::blocking::Response {
    client()
        .post(stack.url("/Patient"))
        .header("Content-Type", content_type)
        .header("Prefer", "return=representation")
        .body(body)
        .send()
        .unwrap()
}

fn legacy_patient() -> String {
    json!({
        "resourceType": "Patient",
        "name": [{"family": "ﾔﾏﾀﾞ", "given": ["ﾀﾛｳ"], "text": "山田\u{3000}太郎"}],
        "gender": "ｍａｌｅ",
        "birthDate": "１９７０-01-01",
        "telecom": [{"system": "phone", "value": "０３ー１２３４ー５６７８"}],
        "address": [{"text": "東京都千代田区1\u{FF5E}2", "postalCode": "１００００１４"}]
    })
    .to_string()
}

#[test]
fn shift_jis_body_is_stored_as_normalized_utf8_and_found_by_a_halfwidth_search() {
    // A legacy client that sends Shift_JIS everywhere, query strings too.
    let stack = Stack::start_with("[japanese]\ndefault_charset = \"Shift_JIS\"\n");
    let patient = legacy_patient();
    let (sjis, _, unmappable) = encoding_rs::SHIFT_JIS.encode(&patient);
    assert!(!unmappable);
    let response = post_encoded(
        &stack,
        sjis.into_owned(),
        "application/fhir+json; charset=Shift_JIS",
    );
    assert_eq!(response.status(), 201);
    let text = response.headers()["inkan-text"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        text.starts_with("charset=Shift_JIS (Windows-31J); "),
        "{text}"
    );
    for part in ["variants-folded=1", "kana-widened=6", "name-spaces=1"] {
        assert!(text.contains(part), "{part} in {text}");
    }
    let created = json(response);
    let id = created["id"].as_str().unwrap();

    // What the upstream stored, read directly from HFS.
    let stored: serde_json::Value = client()
        .get(format!("{}/Patient/{id}", stack.hfs.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(stored["name"][0]["family"], "ヤマダ");
    assert_eq!(stored["name"][0]["given"][0], "タロウ");
    assert_eq!(stored["name"][0]["text"], "山田 太郎");
    assert_eq!(stored["gender"], "male");
    assert_eq!(stored["birthDate"], "1970-01-01");
    assert_eq!(stored["telecom"][0]["value"], "03-1234-5678");
    assert_eq!(stored["address"][0]["text"], "東京都千代田区1\u{301C}2");
    assert_eq!(stored["address"][0]["postalCode"], "100-0014");

    // The normalized version is what was sealed: a read verifies.
    let read = client()
        .get(stack.url(&format!("/Patient/{id}")))
        .send()
        .unwrap();
    assert_eq!(
        read.headers()["inkan-verify"],
        "verified=1, tampered=0, unsealed=0, unchecked=0"
    );
    // Read back in Shift_JIS, as the legacy system wants it.
    let back = client()
        .get(stack.url(&format!("/Patient/{id}")))
        .header("Accept-Charset", "Shift_JIS")
        .send()
        .unwrap();
    assert_eq!(
        back.headers()["content-type"],
        "application/fhir+json; charset=Shift_JIS"
    );
    let bytes = back.bytes().unwrap();
    let (text, _, malformed) = encoding_rs::SHIFT_JIS.decode(&bytes);
    assert!(!malformed);
    let back: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back["name"][0]["text"], "山田 太郎");

    // Searches typed with half-width kana — in UTF-8, or percent-encoded
    // Shift_JIS — are normalized like the stored value and find it.
    let sjis_query: String = encoding_rs::SHIFT_JIS
        .encode("ﾔﾏﾀﾞ")
        .0
        .iter()
        .map(|b| format!("%{b:02X}"))
        .collect();
    for query in [
        "family=ヤマダ".to_owned(),
        "family=ﾔﾏﾀﾞ".to_owned(),
        format!("family={sjis_query}"),
    ] {
        let response = client()
            .get(stack.url(&format!("/Patient?{query}")))
            .send()
            .unwrap();
        let header = response
            .headers()
            .get("inkan-text")
            .map(|v| v.to_str().unwrap().to_owned());
        let found = json(response);
        assert_eq!(
            found["entry"][0]["resource"]["id"], id,
            "{query}: {header:?}"
        );
        if query != "family=ヤマダ" {
            assert!(header.unwrap().contains("kana-widened=3"), "{query}");
        }
    }
    // The same values in a `_search` form body (what form-posting clients
    // send), in UTF-8 and in Shift_JIS declared by the form's charset.
    let utf8_form: String = "ﾔﾏﾀﾞ".bytes().map(|b| format!("%{b:02X}")).collect();
    for (form, content_type) in [
        (
            format!("family={utf8_form}"),
            "application/x-www-form-urlencoded",
        ),
        (
            format!("family={sjis_query}"),
            "application/x-www-form-urlencoded; charset=Shift_JIS",
        ),
    ] {
        let response = client()
            .post(stack.url("/Patient/_search"))
            .header("Content-Type", content_type)
            .body(form.clone())
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{content_type}");
        let header = response
            .headers()
            .get("inkan-text")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            header.as_deref().unwrap_or("").contains("kana-widened=3"),
            "{content_type}: {header:?}"
        );
        let found = json(response);
        assert_eq!(found["entry"][0]["resource"]["id"], id, "{content_type}");
    }
}

#[test]
fn euc_jp_is_detected_and_iso_2022_jp_is_decoded() {
    let stack = Stack::start();
    let body = json!({"resourceType": "Patient", "name": [{"family": "鈴木", "given": ["花子"]}]})
        .to_string();
    // Undeclared EUC-JP: detected, and said so.
    let euc = encoding_rs::EUC_JP.encode(&body).0.into_owned();
    let response = post_encoded(&stack, euc, "application/fhir+json");
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["inkan-text"],
        "charset=EUC-JP (detected)"
    );
    assert_eq!(json(response)["name"][0]["family"], "鈴木");
    // Declared ISO-2022-JP (the SS-MIX2 storage charset).
    let jis = encoding_rs::ISO_2022_JP.encode(&body).0.into_owned();
    let response = post_encoded(&stack, jis, "application/fhir+json; charset=ISO-2022-JP");
    assert_eq!(response.status(), 201);
    assert_eq!(json(response)["name"][0]["given"][0], "花子");
}

#[test]
fn invalid_bytes_gaiji_and_controls_are_refused_with_where() {
    let stack = Stack::start();
    // 0x82 alone is a truncated Shift_JIS lead byte, at offset 46.
    let mut bad = br#"{"resourceType":"Patient","name":[{"family":""#.to_vec();
    let offset = bad.len();
    bad.extend_from_slice(b"\x82\"}]}");
    let response = post_encoded(&stack, bad, "application/fhir+json; charset=Shift_JIS");
    assert_eq!(response.status(), 400);
    let outcome = json(response);
    assert_outcome(&outcome, "invalid");
    let diagnostics = outcome["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        diagnostics.contains(&format!("offset {offset}")),
        "{diagnostics}"
    );

    let gaiji = json!({"resourceType": "Patient", "name": [{"family": "髙\u{E000}"}]}).to_string();
    let response = post_encoded(&stack, gaiji.into_bytes(), "application/fhir+json");
    assert_eq!(response.status(), 422);
    let outcome = json(response);
    let diagnostics = outcome["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        diagnostics.contains("Patient.name[0].family") && diagnostics.contains("U+E000"),
        "{diagnostics}"
    );

    let control =
        json!({"resourceType": "Patient", "name": [{"given": ["a", "b\u{7}"]}]}).to_string();
    let response = post_encoded(&stack, control.into_bytes(), "application/fhir+json");
    assert_eq!(response.status(), 400);
    let outcome = json(response);
    assert!(outcome["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("Patient.name[0].given[1]"));

    // Nothing of the refused writes reached the upstream.
    let all = json(
        client()
            .get(format!("{}/Patient", stack.hfs.url))
            .send()
            .unwrap(),
    );
    assert!(
        all.get("entry")
            .is_none_or(|e| e.as_array().unwrap().is_empty()),
        "{all}"
    );

    // The CapabilityStatement declares the charsets and conversions.
    let capability = json(client().get(stack.url("/metadata")).send().unwrap());
    let declared = capability["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == "https://inkan.dev/fhir/StructureDefinition/japanese-text-handling")
        .expect("declaration");
    let codes: Vec<&str> = declared["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["valueCode"].as_str())
        .collect();
    for code in [
        "Shift_JIS",
        "ISO-2022-JP",
        "halfwidth-kana-widening",
        "reject",
    ] {
        assert!(codes.contains(&code), "{codes:?}");
    }
}

#[test]
fn responses_are_transcoded_on_request_with_escapes_for_what_the_charset_lacks() {
    let stack = Stack::start();
    // 𠮷 (U+20BB7) is in no legacy charset; U+2212 is one that encoders
    // would silently turn into U+FF0D.
    let body =
        json!({"resourceType": "Patient", "name": [{"family": "𠮷田", "text": "1\u{2212}2"}]})
            .to_string();
    let created = json(post_encoded(
        &stack,
        body.into_bytes(),
        "application/fhir+json",
    ));
    let id = created["id"].as_str().unwrap();
    let utf8 = json(
        client()
            .get(stack.url(&format!("/Patient/{id}")))
            .send()
            .unwrap(),
    );

    let response = client()
        .get(stack.url(&format!("/Patient/{id}")))
        .header("Accept-Charset", "Shift_JIS, utf-8;q=0.5")
        .send()
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/fhir+json; charset=Shift_JIS"
    );
    let bytes = response.bytes().unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("\\ud842\\udfb7"), "escaped: {text}");
    let (decoded, _, malformed) = encoding_rs::SHIFT_JIS.decode(&bytes);
    assert!(!malformed);
    let parsed: serde_json::Value = serde_json::from_str(&decoded).unwrap();
    assert_eq!(
        parsed, utf8,
        "decoding and parsing gives back the UTF-8 resource"
    );

    // XML in EUC-JP: numeric character references, and the declaration says EUC-JP.
    let response = client()
        .get(stack.url(&format!("/Patient/{id}")))
        .header("Accept", "application/fhir+xml; charset=EUC-JP")
        .send()
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/fhir+xml; charset=EUC-JP"
    );
    let bytes = response.bytes().unwrap();
    let (decoded, _, malformed) = encoding_rs::EUC_JP.decode(&bytes);
    assert!(!malformed);
    assert!(decoded.contains("encoding=\"EUC-JP\""), "{decoded}");
    assert!(
        decoded.contains("&#x20BB7;田") && decoded.contains("1&#x2212;2"),
        "{decoded}"
    );
}

#[test]
fn jp_core_checks_warn_by_default_and_refuse_in_strict_mode() {
    let syl_in_hiragana = json!({
        "resourceType": "Patient",
        "name": [{"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation", "valueCode": "SYL"}],
                  "family": "やまだ"}]
    })
    .to_string();

    // warn (the default): accepted, with the locations in a header.
    let stack = Stack::start();
    let response = post_encoded(
        &stack,
        syl_in_hiragana.clone().into_bytes(),
        "application/fhir+json",
    );
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["inkan-jp-core"],
        "findings=1; at=Patient.name[0].family"
    );
    drop(stack);

    // strict: 422, one issue per finding with its FHIRPath expression.
    let strict = Stack::start_with("[japanese]\njpcore = \"strict\"\n");
    let response = post_encoded(
        &strict,
        syl_in_hiragana.into_bytes(),
        "application/fhir+json",
    );
    assert_eq!(response.status(), 422);
    let outcome = json(response);
    assert_outcome(&outcome, "invariant");
    assert_eq!(
        outcome["issue"][0]["expression"][0],
        "Patient.name[0].family"
    );

    // The JP Core examples pass strict mode through to the real server.
    let dir = inkan_e2e::fixture("jp-core/json");
    let mut accepted = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let covered = [
            "Patient-",
            "Practitioner-",
            "Organization-",
            "Coverage-",
            "Observation-",
        ];
        if !covered.iter().any(|prefix| name.starts_with(prefix)) {
            continue;
        }
        let mut resource: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        resource.as_object_mut().unwrap().remove("id");
        let kind = resource["resourceType"].as_str().unwrap().to_owned();
        let response = client()
            .post(strict.url(&format!("/{kind}")))
            .header("Content-Type", "application/fhir+json")
            .body(resource.to_string())
            .send()
            .unwrap();
        assert_eq!(
            response.status(),
            201,
            "{name}: {}",
            response.text().unwrap()
        );
        accepted += 1;
    }
    assert!(
        accepted >= 10,
        "only {accepted} JP Core examples of the covered types"
    );
}
