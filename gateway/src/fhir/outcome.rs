//! OperationOutcome bodies for the errors the gateway itself produces.

use bytes::Bytes;

use super::format::WireFormat;
use crate::error::GatewayError;

/// Renders one error as an OperationOutcome in `format` (JSON unless XML).
/// JP Core findings become one issue each, with its FHIRPath location.
pub fn render(error: &GatewayError, format: WireFormat) -> Bytes {
    render_issues(&issues_of(error), format)
}

/// [`render`], plus an informational issue naming the request id: the
/// key to the detail in the gateway's log (never in the body itself).
pub fn render_for_request(error: &GatewayError, format: WireFormat, request_id: &str) -> Bytes {
    let mut issues = issues_of(error);
    issues.push(Issue {
        severity: "information",
        code: "informational",
        diagnostics: format!("request id {request_id} (X-Request-Id)"),
        expression: None,
    });
    render_issues(&issues, format)
}

fn issues_of(error: &GatewayError) -> Vec<Issue> {
    let code = error.issue_type().code();
    match error {
        GatewayError::JpCoreViolations { findings } => findings
            .iter()
            .map(|(path, message)| Issue {
                severity: "error",
                code,
                diagnostics: format!("JP Core: {message}"),
                expression: Some(path.clone()),
            })
            .collect(),
        _ => vec![Issue {
            severity: "error",
            code,
            diagnostics: error.to_string(),
            expression: None,
        }],
    }
}

/// One `OperationOutcome.issue`.
#[derive(Debug, Clone)]
pub struct Issue {
    pub severity: &'static str,
    pub code: &'static str,
    pub diagnostics: String,
    /// FHIRPath location (`issue.expression`).
    pub expression: Option<String>,
}

/// Renders a one-issue OperationOutcome.
pub fn render_issue(
    severity: &'static str,
    code: &'static str,
    diagnostics: &str,
    format: WireFormat,
) -> Bytes {
    let issue = Issue {
        severity,
        code,
        diagnostics: diagnostics.to_owned(),
        expression: None,
    };
    render_issues(&[issue], format)
}

/// Renders an OperationOutcome with these issues.
pub fn render_issues(issues: &[Issue], format: WireFormat) -> Bytes {
    match format {
        WireFormat::Xml => {
            let mut xml = String::with_capacity(256);
            xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
            xml.push_str("<OperationOutcome xmlns=\"http://hl7.org/fhir\">");
            for issue in issues {
                xml.push_str("<issue>");
                for (name, value) in [
                    ("severity", issue.severity),
                    ("code", issue.code),
                    ("diagnostics", issue.diagnostics.as_str()),
                ] {
                    xml.push('<');
                    xml.push_str(name);
                    xml.push_str(" value=\"");
                    xml.push_str(&quick_xml::escape::escape(value));
                    xml.push_str("\"/>");
                }
                if let Some(expression) = &issue.expression {
                    xml.push_str("<expression value=\"");
                    xml.push_str(&quick_xml::escape::escape(expression.as_str()));
                    xml.push_str("\"/>");
                }
                xml.push_str("</issue>");
            }
            xml.push_str("</OperationOutcome>");
            Bytes::from(xml)
        }
        WireFormat::Json | WireFormat::Other => {
            let issues: Vec<serde_json::Value> = issues
                .iter()
                .map(|issue| {
                    let mut value = serde_json::json!({
                        "severity": issue.severity,
                        "code": issue.code,
                        "diagnostics": issue.diagnostics,
                    });
                    if let Some(expression) = &issue.expression {
                        value["expression"] = serde_json::json!([expression]);
                    }
                    value
                })
                .collect();
            let outcome = serde_json::json!({"resourceType": "OperationOutcome", "issue": issues});
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
