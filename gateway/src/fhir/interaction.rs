//! Which FHIR interaction a request is, from its method and path alone
//! (<http://hl7.org/fhir/R4/http.html>). Used for metrics and logs now, and by
//! later pipeline steps (sealing writes, verifying reads).

use http::Method;

/// A FHIR RESTful interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interaction {
    Capabilities,
    Read,
    Vread,
    Update,
    ConditionalUpdate,
    Patch,
    ConditionalPatch,
    Delete,
    ConditionalDelete,
    HistoryInstance,
    HistoryType,
    HistorySystem,
    Create,
    SearchType,
    SearchSystem,
    /// `POST [base]` with a batch or transaction Bundle.
    BatchOrTransaction,
    /// Any `$operation`, including `$export` and its polling when under the
    /// base.
    Operation,
    /// Anything else: passed through unchanged.
    Other,
}

impl Interaction {
    pub fn as_str(self) -> &'static str {
        match self {
            Interaction::Capabilities => "capabilities",
            Interaction::Read => "read",
            Interaction::Vread => "vread",
            Interaction::Update => "update",
            Interaction::ConditionalUpdate => "conditional-update",
            Interaction::Patch => "patch",
            Interaction::ConditionalPatch => "conditional-patch",
            Interaction::Delete => "delete",
            Interaction::ConditionalDelete => "conditional-delete",
            Interaction::HistoryInstance => "history-instance",
            Interaction::HistoryType => "history-type",
            Interaction::HistorySystem => "history-system",
            Interaction::Create => "create",
            Interaction::SearchType => "search-type",
            Interaction::SearchSystem => "search-system",
            Interaction::BatchOrTransaction => "batch-transaction",
            Interaction::Operation => "operation",
            Interaction::Other => "other",
        }
    }

    /// Classifies a request. `path` is the part after the FHIR base, without
    /// the query string, e.g. `/Patient/123/_history/2`.
    pub fn classify(method: &Method, path: &str) -> Interaction {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let is_type = |s: &str| s.starts_with(|c: char| c.is_ascii_uppercase());
        let is_op = |s: &str| s.starts_with('$');
        let m = method;
        match segments.as_slice() {
            [] if m == Method::POST => Interaction::BatchOrTransaction,
            [] if m == Method::GET || m == Method::HEAD => Interaction::SearchSystem,
            ["metadata"] if m == Method::GET || m == Method::HEAD => Interaction::Capabilities,
            ["_history"] => Interaction::HistorySystem,
            ["_search"] if m == Method::POST => Interaction::SearchSystem,
            [op] if is_op(op) => Interaction::Operation,
            [t] if is_type(t) => match *m {
                Method::GET | Method::HEAD => Interaction::SearchType,
                Method::POST => Interaction::Create,
                Method::PUT => Interaction::ConditionalUpdate,
                Method::PATCH => Interaction::ConditionalPatch,
                Method::DELETE => Interaction::ConditionalDelete,
                _ => Interaction::Other,
            },
            [t, "_search"] if is_type(t) && m == Method::POST => Interaction::SearchType,
            [t, "_history"] if is_type(t) => Interaction::HistoryType,
            [t, op] if is_type(t) && is_op(op) => Interaction::Operation,
            [t, _id] if is_type(t) => match *m {
                Method::GET | Method::HEAD => Interaction::Read,
                Method::PUT => Interaction::Update,
                Method::PATCH => Interaction::Patch,
                Method::DELETE => Interaction::Delete,
                _ => Interaction::Other,
            },
            [t, _id, "_history"] if is_type(t) => Interaction::HistoryInstance,
            [t, _id, op] if is_type(t) && is_op(op) => Interaction::Operation,
            [t, _id, "_history", _vid] if is_type(t) && (m == Method::GET || m == Method::HEAD) => {
                Interaction::Vread
            }
            [.., op] if is_op(op) => Interaction::Operation,
            _ => Interaction::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        #[rustfmt::skip]
        let cases = [
            (Method::GET,    "/metadata",                    Interaction::Capabilities),
            (Method::GET,    "/Patient/1",                   Interaction::Read),
            (Method::GET,    "/Patient/1/_history/2",        Interaction::Vread),
            (Method::PUT,    "/Patient/1",                   Interaction::Update),
            (Method::PUT,    "/Patient",                     Interaction::ConditionalUpdate),
            (Method::PATCH,  "/Patient/1",                   Interaction::Patch),
            (Method::PATCH,  "/Patient",                     Interaction::ConditionalPatch),
            (Method::DELETE, "/Patient/1",                   Interaction::Delete),
            (Method::DELETE, "/Patient",                     Interaction::ConditionalDelete),
            (Method::GET,    "/Patient/1/_history",          Interaction::HistoryInstance),
            (Method::GET,    "/Patient/_history",            Interaction::HistoryType),
            (Method::GET,    "/_history",                    Interaction::HistorySystem),
            (Method::POST,   "/Patient",                     Interaction::Create),
            (Method::GET,    "/Patient",                     Interaction::SearchType),
            (Method::POST,   "/Patient/_search",             Interaction::SearchType),
            (Method::GET,    "/",                            Interaction::SearchSystem),
            (Method::POST,   "/_search",                     Interaction::SearchSystem),
            (Method::POST,   "/",                            Interaction::BatchOrTransaction),
            (Method::POST,   "",                             Interaction::BatchOrTransaction),
            (Method::GET,    "/$export",                     Interaction::Operation),
            (Method::POST,   "/Patient/$validate",           Interaction::Operation),
            (Method::GET,    "/Patient/1/$everything",       Interaction::Operation),
            (Method::GET,    "/some/thing/else",             Interaction::Other),
        ];
        for (method, path, want) in cases {
            assert_eq!(
                Interaction::classify(&method, path),
                want,
                "{method} {path}"
            );
        }
    }
}
