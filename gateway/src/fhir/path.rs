//! FHIR REST paths, parsed in one place: the segments of a path after the
//! base, which resource (and version) a path, a `Location` or a history
//! entry's `request.url` names, and the version an `ETag` names.

use ledger::store::VersionKey;

/// The non-empty segments of a path after the FHIR base (query and
/// fragment ignored): `/Patient/1/_history/2` → `Patient`, `1`, `_history`, `2`.
pub fn segments(path: &str) -> Vec<&str> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// True for a segment that names a resource type (`Patient`): FHIR
/// resource types start with an upper-case letter; `_history`, `$op` and
/// `metadata` do not.
pub fn is_resource_type(segment: &str) -> bool {
    segment.starts_with(|c: char| c.is_ascii_uppercase())
}

/// The resource type a path is about (`/Patient/_search` → `Patient`), if any.
pub fn resource_type_of(path: &str) -> Option<&str> {
    segments(path)
        .into_iter()
        .find(|s| !s.starts_with(['_', '$']))
        .filter(|s| is_resource_type(s))
}

/// The resource, and maybe the version, a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub resource_type: String,
    pub id: String,
    /// The `<vid>` of `…/_history/<vid>`.
    pub version_id: Option<String>,
}

impl ResourcePath {
    /// `/Patient/123`, `Patient/123/_history/2` or an absolute URL ending
    /// so (query ignored) → type, id and version. `None` for anything
    /// else (a type, an operation, a history listing).
    pub fn parse(path: &str) -> Option<ResourcePath> {
        let segments = segments(path);
        match segments.as_slice() {
            [.., t, id, "_history", vid] if is_resource_type(t) => Some(ResourcePath {
                resource_type: (*t).into(),
                id: (*id).into(),
                version_id: Some((*vid).into()),
            }),
            [.., t, id] if is_resource_type(t) && !id.starts_with(['$', '_']) => {
                Some(ResourcePath {
                    resource_type: (*t).into(),
                    id: (*id).into(),
                    version_id: None,
                })
            }
            _ => None,
        }
    }

    /// The version key, when the path named a version.
    pub fn version_key(self) -> Option<VersionKey> {
        Some(VersionKey {
            resource_type: self.resource_type,
            id: self.id,
            version_id: self.version_id?,
        })
    }

    /// The instance's history path, `/Patient/123/_history`.
    pub fn history_path(&self) -> String {
        format!("/{}/{}/_history", self.resource_type, self.id)
    }
}

/// The path of one version after the base: `/Patient/123/_history/2`.
pub fn version_path(key: &VersionKey) -> String {
    format!(
        "/{}/{}/_history/{}",
        key.resource_type, key.id, key.version_id
    )
}

/// The id of the resource of `resource_type` a reference names
/// (`Patient/1`, an absolute URL, with or without `_history`); `None`
/// for another type or anything that is not a literal reference.
pub fn id_of_reference(reference: &str, resource_type: &str) -> Option<String> {
    ResourcePath::parse(reference)
        .filter(|p| p.resource_type == resource_type)
        .map(|p| p.id)
}

/// The `name=value` pairs of a query, both percent-decoded (`+` is a
/// space, as in forms); empty pairs skipped.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (decode(name), decode(value))
    })
}

/// The version id in an ETag: `W/"3"` → `3`.
pub fn etag_version(etag: &str) -> Option<String> {
    let version = etag.trim().trim_start_matches("W/").trim_matches('"');
    (!version.is_empty()).then(|| version.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_references_table() {
        // (reference or Location, type, id)
        let table: &[(&str, &str, Option<&str>)] = &[
            ("AuditEvent/7/_history/1", "AuditEvent", Some("7")),
            (
                "http://audit.test/fhir/AuditEvent/a-b/_history/1",
                "AuditEvent",
                Some("a-b"),
            ),
            ("AuditEvent/7", "AuditEvent", Some("7")),
            ("Patient/7/_history/1", "AuditEvent", None),
            ("Patient/p1", "Patient", Some("p1")),
            (
                "https://fhir.example.jp/fhir/Patient/p1",
                "Patient",
                Some("p1"),
            ),
            ("Group/p1", "Patient", None),
            ("p1", "Patient", None),
        ];
        for (reference, resource_type, expected) in table {
            assert_eq!(
                id_of_reference(reference, resource_type).as_deref(),
                *expected,
                "{reference}"
            );
        }
    }

    #[test]
    fn query_pairs_are_decoded_like_forms() {
        let pairs: Vec<(String, String)> =
            query_pairs("subject=Patient%2Fp2&&name=Yamada+Taro&_has").collect();
        let expected = [
            ("subject", "Patient/p2"),
            ("name", "Yamada Taro"),
            ("_has", ""),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(pairs, expected);
    }

    #[test]
    fn resource_paths_table() {
        type Named<'a> = Option<(&'a str, &'a str, Option<&'a str>)>;
        let table: &[(&str, Named)] = &[
            ("/Patient/123", Some(("Patient", "123", None))),
            (
                "Patient/123/_history/2",
                Some(("Patient", "123", Some("2"))),
            ),
            ("/Patient/123?_format=json", Some(("Patient", "123", None))),
            (
                "http://h/fhir/Patient/1/_history/7",
                Some(("Patient", "1", Some("7"))),
            ),
            ("/Patient", None),
            ("/Patient/_history", None),
            ("/Patient/$validate", None),
            ("/Patient/1/_history", None),
            ("/metadata", None),
            ("/", None),
        ];
        for (path, expected) in table {
            let found = ResourcePath::parse(path);
            let found = found.as_ref().map(|p| {
                (
                    p.resource_type.as_str(),
                    p.id.as_str(),
                    p.version_id.as_deref(),
                )
            });
            assert_eq!(found, *expected, "{path}");
        }
    }

    #[test]
    fn resource_types_and_etags_table() {
        for (path, expected) in [
            ("/Patient/_search", Some("Patient")),
            ("/Observation", Some("Observation")),
            ("/_history", None),
            ("/$export", None),
            ("/metadata", None),
        ] {
            assert_eq!(resource_type_of(path), expected, "{path}");
        }
        for (etag, expected) in [
            (r#"W/"3""#, Some("3")),
            (r#""12""#, Some("12")),
            ("W/\"\"", None),
        ] {
            assert_eq!(etag_version(etag).as_deref(), expected, "{etag}");
        }
    }
}
