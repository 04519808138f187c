//! Step 9, negotiate. Runs on every forwarded request. Decides, from the
//! client's headers and what the gateway knows of the upstream, the
//! [`ResponsePlan`]: whether the XML bridge is in play (the client wants
//! or sends XML and the upstream speaks only JSON), what the
//! CapabilityStatement must advertise, the legacy charset the client
//! wants, and whether verify-on-read checks the answer. May probe the
//! upstream's CapabilityStatement once (`upstream.xml = "auto"`). Changes
//! nothing in the request. Never fails: an upstream that cannot be probed
//! is bridged (JSON is every server's format) and probed again next time.

use std::sync::atomic::Ordering;

use http::HeaderMap;

use super::facts::{RequestFacts, ResponsePlan};
use super::state::XmlSupport;
use super::Gateway;
use crate::config::XmlMode;
use crate::fhir::format::{self, ContentType, Wanted, WireFormat};
use crate::fhir::interaction::Interaction;
use crate::upstream::ReadError;

impl Gateway {
    pub(super) async fn negotiate(
        &self,
        headers: &HeaderMap,
        body_type: Option<&ContentType>,
        facts: &RequestFacts,
    ) -> ResponsePlan {
        let client_sent_xml = body_type.is_some_and(|ct| ct.format == WireFormat::Xml);
        // Probe (at most once) only when XML or the CapabilityStatement is involved.
        let xml_involved = facts.wanted == Wanted::Xml || client_sent_xml;
        let is_capabilities = facts.interaction == Interaction::Capabilities;
        let upstream_bridged = (xml_involved || is_capabilities) && self.xml_bridged().await;
        let bridge = xml_involved && upstream_bridged;
        // A read the gateway verifies is fetched as JSON and rendered as XML
        // here even when the upstream speaks XML: the seal is of the stored
        // JSON, and an upstream's own XML need not be the same data (one
        // tested server rewrites instants and decimals in its XML), so the
        // client gets exactly what was checked.
        let verify = self.verify_shape(facts.interaction);
        let verified_xml = verify.is_some() && facts.wanted == Wanted::Xml;
        ResponsePlan {
            bridge_request: bridge,
            client_sent_xml,
            bridge_response: (bridge || verified_xml) && facts.wanted == Wanted::Xml,
            advertise_xml: is_capabilities && upstream_bridged,
            advertise_seal_ops: is_capabilities && self.sealer.is_some(),
            response_charset: self.japanese.wanted_charset(headers),
            verify,
        }
    }

    /// Does this upstream need the XML bridge? Probes once in `auto` mode.
    async fn xml_bridged(&self) -> bool {
        match XmlSupport::load(self.xml_support.load(Ordering::Relaxed)) {
            XmlSupport::Native => false,
            XmlSupport::Bridged => true,
            XmlSupport::Unknown => match self.probe_capabilities().await {
                Ok(_) => {
                    XmlSupport::load(self.xml_support.load(Ordering::Relaxed))
                        == XmlSupport::Bridged
                }
                // Unknown: bridging is always safe (JSON is every server's
                // format); do not cache, probe again next time.
                Err(_) => true,
            },
        }
    }

    /// Fetches the upstream's CapabilityStatement (JSON) and learns from
    /// it: the base it advertises, its XML support (in `auto` mode) and
    /// its search parameter types. Used here, at start and by `/-/readyz`.
    pub async fn probe_capabilities(&self) -> Result<serde_json::Value, ReadError> {
        let capability = self.upstream.capability_statement().await?;
        if self.config.upstream.xml == XmlMode::Auto {
            let speaks_xml = capability["format"].as_array().is_some_and(|formats| {
                formats.iter().filter_map(|f| f.as_str()).any(|f| {
                    format::classify_media_type(f.split(';').next().unwrap_or(""))
                        == WireFormat::Xml
                })
            });
            let state = match speaks_xml {
                true => XmlSupport::Native,
                false => XmlSupport::Bridged,
            };
            if self.xml_support.swap(state as u8, Ordering::Relaxed) != state as u8 {
                tracing::info!(
                    bridged = !speaks_xml,
                    "upstream XML support determined from its CapabilityStatement"
                );
            }
        }
        self.learn_search_param_types(&capability);
        Ok(capability)
    }
}
