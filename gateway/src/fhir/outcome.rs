//! OperationOutcome bodies for the errors the gateway itself produces.

use bytes::Bytes;

use super::format::WireFormat;
use crate::error::GatewayError;

/// Renders one error as an OperationOutcome in `format` (JSON unless XML).
pub fn render(error: &GatewayError, format: WireFormat) -> Bytes {
    render_issue(
        "error",
        error.issue_type().code(),
        &error.to_string(),
        format,
    )
}

/// Renders a one-issue OperationOutcome.
pub fn render_issue(severity: &str, code: &str, diagnostics: &str, format: WireFormat) -> Bytes {
    match format {
        WireFormat::Xml => {
            let mut xml = String::with_capacity(256 + diagnostics.len());
            xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
            xml.push_str("<OperationOutcome xmlns=\"http://hl7.org/fhir\"><issue>");
            for (name, value) in [
                ("severity", severity),
                ("code", code),
                ("diagnostics", diagnostics),
            ] {
                xml.push('<');
                xml.push_str(name);
                xml.push_str(" value=\"");
                xml.push_str(&quick_xml::escape::escape(value));
                xml.push_str("\"/>");
            }
            xml.push_str("</issue></OperationOutcome>");
            Bytes::from(xml)
        }
        WireFormat::Json | WireFormat::Other => {
            let outcome = serde_json::json!({
                "resourceType": "OperationOutcome",
                "issue": [{
                    "severity": severity,
                    "code": code,
                    "diagnostics": diagnostics,
                }]
            });
            Bytes::from(serde_json::to_vec(&outcome).unwrap_or_default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_outcome_is_fhir() {
        let body = render(&GatewayError::BodyTooLarge { limit: 10 }, WireFormat::Json);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["resourceType"], "OperationOutcome");
        assert_eq!(v["issue"][0]["code"], "too-long");
        assert!(v["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("10 bytes"));
    }

    #[test]
    fn xml_outcome_escapes_and_parses_as_fhir() {
        let body = render_issue("error", "invalid", "a <b> & \"c\"", WireFormat::Xml);
        let json = crate::fhir::xml_bridge::xml_to_json(&body).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["issue"][0]["diagnostics"], "a <b> & \"c\"");
    }
}
