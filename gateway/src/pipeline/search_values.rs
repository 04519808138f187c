//! Step 11, search values. Runs on searches (`GET [type]?…`, `GET ?…`,
//! `POST …/_search`). Each search value is decoded from a legacy charset
//! and normalized like the stored values of its parameter's type (rule 7
//! of the Japanese rules), so a search finds what normalization stored.
//! Parameter types come from the upstream's CapabilityStatement, else
//! from the R4 specification. May change: the query to forward and a
//! form body (then re-encoded as UTF-8). Results: the normalized request;
//! 400 for a value that is not valid text in its charset.

use bytes::Bytes;

use super::facts::{Outgoing, RequestFacts};
use super::Gateway;
use crate::error::GatewayError;
use crate::fhir::interaction::Interaction;
use crate::japanese::TextReport;

impl Gateway {
    pub(super) fn normalize_search_values(
        &self,
        outgoing: &mut Outgoing,
        facts: &RequestFacts,
    ) -> Result<(), GatewayError> {
        let searching = matches!(
            facts.interaction,
            Interaction::SearchType | Interaction::SearchSystem
        );
        if !searching {
            return Ok(());
        }
        let param_type = |name: &str| self.search_param_type(&facts.fhir_path, name);
        if let Some(query) = &outgoing.query {
            let mut report = TextReport::default();
            let normalized = self
                .japanese
                .normalize_query(query, param_type, &mut report)?;
            if let Some(normalized) = normalized {
                outgoing.query = Some(normalized);
            }
            self.count_text_changes(&report);
            outgoing.text_report.merge(&report);
        }
        // The same for a `_search` form body: its pairs are search values.
        let form = outgoing.content_type.as_mut().filter(|ct| ct.is_form());
        if let Some(ct) = form.filter(|_| !outgoing.body.is_empty()) {
            let mut report = TextReport::default();
            let normalized = self.japanese.normalize_form(
                &outgoing.body,
                ct.charset.as_deref(),
                param_type,
                &mut report,
            )?;
            self.count_text_changes(&report);
            outgoing.text_report.merge(&report);
            if let Some(form) = normalized {
                // Re-encoded as UTF-8 percent-escapes.
                ct.charset = ct.charset.take().map(|_| "utf-8".into());
                outgoing.body = Bytes::from(form);
            }
        }
        Ok(())
    }

    /// The type of search parameter `name` on the resource type `fhir_path`
    /// names (`/Patient/_search` → `Patient`): as the upstream declares it,
    /// else as the R4 specification defines it (an upstream that declares
    /// no types still gets its standard parameters normalized).
    pub(super) fn search_param_type(&self, fhir_path: &str, name: &str) -> Option<String> {
        let resource_type = crate::fhir::path::resource_type_of(fhir_path).unwrap_or("*");
        let types = self
            .search_param_types
            .read()
            .unwrap_or_else(|e| e.into_inner());
        types
            .get(&format!("{resource_type}.{name}"))
            .or_else(|| types.get(&format!("*.{name}")))
            .cloned()
            .or_else(|| {
                profiles_jp::r4_search_params::r4_search_param_type(resource_type, name)
                    .map(str::to_owned)
            })
    }

    /// Records the search parameter types the upstream declares.
    pub(super) fn learn_search_param_types(&self, capability: &serde_json::Value) {
        let mut learned = std::collections::HashMap::new();
        for rest in capability["rest"].as_array().into_iter().flatten() {
            let system = std::iter::once(("*", &rest["searchParam"]));
            let per_type = rest["resource"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| Some((r["type"].as_str()?, &r["searchParam"])));
            for (resource_type, params) in system.chain(per_type) {
                for param in params.as_array().into_iter().flatten() {
                    if let (Some(name), Some(kind)) =
                        (param["name"].as_str(), param["type"].as_str())
                    {
                        learned.insert(format!("{resource_type}.{name}"), kind.to_owned());
                    }
                }
            }
        }
        if !learned.is_empty() {
            *self
                .search_param_types
                .write()
                .unwrap_or_else(|e| e.into_inner()) = learned;
        }
    }
}
