//! The XML bridge both ways: XML from clients to JSON, and (lenient) JSON
//! from upstreams to XML. Never panics or overflows the stack; what it
//! writes converts back when the narrative it was given is XHTML (fhirbolt
//! copies a JSON `div` string into the XML as it is — found by fuzzing: a
//! `div` in another namespace goes out as XML that FHIR readers refuse).
#![no_main]

use inkan::fhir::xml_bridge::{json_to_xml_lenient, xml_to_json};

/// True when every narrative `div` string is in the XHTML namespace.
fn narratives_are_xhtml(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Object(members) => members.iter().all(|(name, member)| {
            let div_ok = name != "div"
                || member.as_str().is_some_and(|div| {
                    div.starts_with(r#"<div xmlns="http://www.w3.org/1999/xhtml""#)
                });
            div_ok && narratives_are_xhtml(member)
        }),
        serde_json::Value::Array(items) => items.iter().all(narratives_are_xhtml),
        _ => true,
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(json) = xml_to_json(data) {
        let _ = json_to_xml_lenient(&json);
    }
    if let Ok((xml, _dropped)) = json_to_xml_lenient(data) {
        let converted_back = xml_to_json(&xml);
        let xhtml = serde_json::from_slice(data).is_ok_and(|v| narratives_are_xhtml(&v));
        if xhtml {
            converted_back.expect("the bridge's own XML converts back");
        }
    }
});
