//! Step 18, shape. Runs on buffered answers after verification. Rewrites
//! the upstream's base URLs to the public base (links, references,
//! `fullUrl`s), shows the client what the gateway adds (a
//! CapabilityStatement lists the XML formats the bridge serves, the seal
//! operations and the Japanese extension; bridged paging links keep the
//! client's `_format`), converts JSON to XML when bridging, and encodes
//! the answer in a legacy charset the client asked for (escaping what it
//! lacks). May change: the body and `Content-Type`. Results: the shaped
//! body; 502 when JSON the client wants as XML cannot be converted.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};

use super::facts::{RequestFacts, ResponsePlan};
use super::forward::replace_format_param;
use super::inspect::Head;
use super::Gateway;
use crate::error::GatewayError;
use crate::fhir::format::WireFormat;
use crate::fhir::interaction::Interaction;
use crate::fhir::xml_bridge;
use crate::metrics::KindLabels;

impl Gateway {
    pub(super) fn shape(
        &self,
        body: Bytes,
        head: &mut Head,
        facts: &RequestFacts,
        plan: &ResponsePlan,
    ) -> Result<Bytes, GatewayError> {
        let rewriter = self.upstream.rewriter();
        let rewritten = match head.format {
            WireFormat::Json => rewriter.rewrite_json(&body, &facts.public_base),
            WireFormat::Xml => rewriter.rewrite_xml(&body, &facts.public_base),
            WireFormat::Other => None,
        };
        let mut body = rewritten.map(Bytes::from).unwrap_or(body);
        let is_capabilities = facts.interaction == Interaction::Capabilities;
        if head.format == WireFormat::Json
            && (plan.advertise_xml || is_capabilities || head.convert_to_xml)
        {
            if let Some(adjusted) = self.client_view(&body, facts, plan) {
                body = Bytes::from(adjusted);
            }
        }
        if head.convert_to_xml {
            if !body.is_empty() {
                body = self.json_to_xml(&body)?;
            }
            head.parts.headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static(WireFormat::Xml.fhir_media_type()),
            );
        }
        if let Some(charset) = plan.response_charset {
            let xml = head.convert_to_xml || head.format == WireFormat::Xml;
            if let Some(encoded) = crate::japanese::Japanese::encode_response(&body, xml, charset) {
                body = Bytes::from(encoded);
                let media = if xml {
                    WireFormat::Xml
                } else {
                    WireFormat::Json
                }
                .fhir_media_type();
                let essence = media.split(';').next().unwrap_or(media);
                let label = crate::japanese::charset_label(charset);
                if let Ok(v) = HeaderValue::from_str(&format!("{essence}; charset={label}")) {
                    head.parts.headers.insert(CONTENT_TYPE, v);
                }
            }
        }
        Ok(body)
    }

    fn json_to_xml(&self, body: &[u8]) -> Result<Bytes, GatewayError> {
        let (xml, dropped) = xml_bridge::json_to_xml_lenient(body).map_err(|e| {
            GatewayError::ResponseConversion {
                target: "FHIR XML",
                reason: e.to_string(),
            }
        })?;
        if !dropped.is_empty() {
            xml_bridge::log_dropped_once(&dropped);
        }
        self.metrics
            .xml_conversions
            .get_or_create(&KindLabels {
                kind: "response_json_to_xml",
            })
            .inc();
        Ok(Bytes::from(xml))
    }

    /// The client's view of what the gateway adds. `None` when nothing
    /// changes.
    fn client_view(
        &self,
        body: &[u8],
        facts: &RequestFacts,
        plan: &ResponsePlan,
    ) -> Option<Vec<u8>> {
        let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let mut changed = false;
        if value["resourceType"] == "CapabilityStatement" {
            changed |= self.advertise(&mut value, facts, plan);
        }
        let client_format = facts
            .client_format_param
            .as_ref()
            .filter(|_| plan.bridge_response);
        if let (Some(client_format), Some(links)) = (client_format, value["link"].as_array_mut()) {
            for link in links {
                let Some((base, query)) = link["url"].as_str().and_then(|u| u.split_once('?'))
                else {
                    continue;
                };
                let restored = format!("{base}?{}", replace_format_param(query, client_format));
                if link["url"] != restored.as_str() {
                    link["url"] = serde_json::Value::String(restored);
                    changed = true;
                }
            }
        }
        changed.then(|| serde_json::to_vec(&value).ok()).flatten()
    }

    /// What a CapabilityStatement gains: the bridge's XML formats, the
    /// seal operations, the Japanese extension.
    fn advertise(
        &self,
        capability: &mut serde_json::Value,
        facts: &RequestFacts,
        plan: &ResponsePlan,
    ) -> bool {
        let mut changed = false;
        if plan.advertise_xml {
            if let Some(formats) = capability["format"].as_array_mut() {
                for xml in ["xml", "application/fhir+xml"] {
                    if !formats.iter().any(|f| f == xml) {
                        formats.push(serde_json::Value::String(xml.into()));
                        changed = true;
                    }
                }
            }
        }
        if plan.advertise_seal_ops {
            changed |= crate::seal::operations::advertise(capability);
        }
        if facts.interaction == Interaction::Capabilities {
            if let Some(extension) = self.japanese.capability_extension() {
                changed |= crate::japanese::advertise(capability, extension);
            }
        }
        changed
    }
}
