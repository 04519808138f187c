//! The XML bridge both ways: XML from clients to JSON, and (lenient) JSON
//! from upstreams to XML. Never panics or overflows the stack; the XML it
//! writes converts back (fhirbolt copies a JSON `div` as it is: the bridge
//! refuses narratives that are not well-formed XHTML — found here).
#![no_main]

use inkan::fhir::xml_bridge::{json_to_xml_lenient, xml_to_json};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(json) = xml_to_json(data) {
        let _ = json_to_xml_lenient(&json);
    }
    if let Ok((xml, _dropped)) = json_to_xml_lenient(data) {
        xml_to_json(&xml).expect("the bridge's own XML converts back");
    }
});
