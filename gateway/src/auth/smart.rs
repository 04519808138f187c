//! SMART App Launch scopes (v1 and v2) and what they allow. Pure.
//!
//! ```text
//! scope      = context "/" type "." permissions [ "?" query ]
//! context    = "patient" | "user" | "system"
//! type       = a resource type | "*"
//! permissions (v1) = "read" | "write" | "*"
//! permissions (v2) = letters of "cruds", in that order
//! ```
//!
//! v1 `read` is v2 `rs`, `write` is `cud`, `*` is `cruds`. Granular v2
//! scopes (with a `?query`) restrict a permission to matching resources;
//! the gateway cannot check that for every interaction, so it grants
//! nothing for them (fail closed) and says so in the refusal. Scopes that
//! are not resource scopes (`openid`, `launch`, `offline_access`, …) are
//! ignored.

use crate::fhir::interaction::Interaction;
use crate::fhir::path;

/// Whose data a scope opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScopeContext {
    /// The patient in the token's launch context, and nobody else.
    Patient,
    /// Whatever the user may see (the upstream's own rules apply).
    User,
    /// A backend service.
    System,
}

/// One permission letter of SMART v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Permission {
    fn letter(self) -> char {
        match self {
            Permission::Create => 'c',
            Permission::Read => 'r',
            Permission::Update => 'u',
            Permission::Delete => 'd',
            Permission::Search => 's',
        }
    }
}

/// A resource scope the gateway grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub context: ScopeContext,
    /// `None` for `*`.
    pub resource_type: Option<String>,
    /// The v2 letters granted, e.g. `rs`.
    pub permissions: String,
}

/// The resource scopes of a token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    pub granted: Vec<Scope>,
    /// Granular scopes seen and not granted.
    pub granular_ignored: Vec<String>,
}

/// What one request needs: a permission on a resource type (`None`: on
/// every type, for system-wide searches and histories).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub resource_type: Option<String>,
    pub permission: Permission,
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}",
            self.resource_type.as_deref().unwrap_or("*"),
            self.permission.letter()
        )
    }
}

impl Scopes {
    /// Parses a space-separated `scope` claim.
    pub fn parse(text: &str) -> Scopes {
        let mut scopes = Scopes::default();
        for word in text.split_ascii_whitespace() {
            if word.contains('?') {
                if parse_scope(word.split('?').next().unwrap_or("")).is_some() {
                    scopes.granular_ignored.push(word.to_owned());
                }
                continue;
            }
            if let Some(scope) = parse_scope(word) {
                scopes.granted.push(scope);
            }
        }
        scopes
    }

    /// The contexts whose scopes grant `need`, most powerful first
    /// (`system`, then `user`, then `patient`): a token with both a user
    /// and a patient scope for a type is not held to the patient.
    pub fn granting(&self, need: &Need) -> Option<ScopeContext> {
        self.granted
            .iter()
            .filter(|scope| {
                let type_ok = match (&scope.resource_type, &need.resource_type) {
                    (None, _) => true,
                    (Some(granted), Some(wanted)) => granted == wanted,
                    (Some(_), None) => false,
                };
                type_ok && scope.permissions.contains(need.permission.letter())
            })
            .map(|scope| scope.context)
            .max()
    }
}

fn parse_scope(word: &str) -> Option<Scope> {
    let (context, rest) = word.split_once('/')?;
    let context = match context {
        "patient" => ScopeContext::Patient,
        "user" => ScopeContext::User,
        "system" => ScopeContext::System,
        _ => return None,
    };
    let (resource_type, permissions) = rest.rsplit_once('.')?;
    let resource_type = match resource_type {
        "*" => None,
        t if path::is_resource_type(t) && t.chars().all(|c| c.is_ascii_alphanumeric()) => {
            Some(t.to_owned())
        }
        _ => return None,
    };
    let permissions = match permissions {
        "read" => "rs".to_owned(),
        "write" => "cud".to_owned(),
        "*" => "cruds".to_owned(),
        letters => {
            // v2: a non-empty subsequence of "cruds", in order.
            let mut order = "cruds".chars();
            let in_order = letters.chars().all(|c| order.any(|o| o == c));
            if letters.is_empty() || !in_order {
                return None;
            }
            letters.to_owned()
        }
    };
    Some(Scope {
        context,
        resource_type,
        permissions,
    })
}

/// Operations that only read, whatever the method (`POST` carries their
/// parameters). Any other operation may change data and needs the write
/// permissions `cud` on its type (or on every type, at the system level).
const READ_ONLY_OPERATIONS: &[&str] = &[
    "$proof",
    "$verify",
    "$validate",
    "$everything",
    "$export",
    "$lastn",
    "$stats",
    "$expand",
    "$lookup",
    "$translate",
    "$validate-code",
    "$subsumes",
    "$meta",
    "$document",
    "$summary",
];

/// What an interaction on `fhir_path` with `method` needs. `None` when no
/// scope can grant it (an unknown shape of request, or a history read
/// with a method that is not a read).
pub fn needs(
    interaction: Interaction,
    method: &http::Method,
    fhir_path: &str,
) -> Option<Vec<Need>> {
    let reading = matches!(*method, http::Method::GET | http::Method::HEAD);
    let segments = path::segments(fhir_path);
    let resource_type = segments
        .first()
        .filter(|s| path::is_resource_type(s))
        .map(|s| (*s).to_owned());
    // A permission on the path's type; a typed interaction on a path
    // without one is no request a scope can grant.
    let on_type = |permission| {
        resource_type.clone().map(|t| Need {
            resource_type: Some(t),
            permission,
        })
    };
    let on_all = |permission| {
        Some(Need {
            resource_type: None,
            permission,
        })
    };
    let history = matches!(
        interaction,
        Interaction::HistoryInstance | Interaction::HistoryType | Interaction::HistorySystem
    );
    if history && !reading {
        // `DELETE Patient/1/_history` purges on some servers.
        return None;
    }
    if interaction == Interaction::Operation {
        let operation = segments.last().copied().unwrap_or("");
        let read_only = reading || READ_ONLY_OPERATIONS.contains(&operation);
        if !read_only {
            let on = |permission| match segments.len() {
                1 => on_all(permission),
                _ => on_type(permission),
            };
            return [Permission::Create, Permission::Update, Permission::Delete]
                .into_iter()
                .map(on)
                .collect();
        }
    }
    let need = match interaction {
        Interaction::Read | Interaction::Vread | Interaction::HistoryInstance => {
            on_type(Permission::Read)
        }
        Interaction::SearchType | Interaction::HistoryType => on_type(Permission::Search),
        Interaction::SearchSystem | Interaction::HistorySystem => on_all(Permission::Search),
        Interaction::Create => on_type(Permission::Create),
        Interaction::Update
        | Interaction::ConditionalUpdate
        | Interaction::Patch
        | Interaction::ConditionalPatch => on_type(Permission::Update),
        Interaction::Delete | Interaction::ConditionalDelete => on_type(Permission::Delete),
        Interaction::Operation => match segments.as_slice() {
            // Instance operations ($proof, $verify, $everything, …) read
            // the instance; type operations search the type; system
            // operations need every type.
            [_, _, op] | [_, _, "_history", _, op] if op.starts_with('$') => {
                on_type(Permission::Read)
            }
            [_, op] if op.starts_with('$') => on_type(Permission::Search),
            [op] if op.starts_with('$') => on_all(Permission::Search),
            _ => None,
        },
        // Batches are authorized entry by entry (see `authorize`).
        Interaction::BatchOrTransaction | Interaction::Capabilities | Interaction::Other => {
            return None
        }
    };
    need.map(|need| vec![need])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ScopeContext::*;

    fn need(t: Option<&str>, permission: Permission) -> Need {
        Need {
            resource_type: t.map(str::to_owned),
            permission,
        }
    }

    #[test]
    fn scopes_grant_like_the_smart_tables() {
        use Permission::*;
        // (scope claim, resource type needed, permission, granting context)
        let cases: &[(&str, Option<&str>, Permission, Option<ScopeContext>)] = &[
            (
                "patient/Observation.read",
                Some("Observation"),
                Read,
                Some(Patient),
            ),
            (
                "patient/Observation.read",
                Some("Observation"),
                Search,
                Some(Patient),
            ),
            (
                "patient/Observation.read",
                Some("Observation"),
                Create,
                None,
            ),
            ("patient/Observation.read", Some("Condition"), Read, None),
            (
                "patient/Observation.rs",
                Some("Observation"),
                Search,
                Some(Patient),
            ),
            ("patient/Observation.r", Some("Observation"), Search, None),
            ("patient/Observation.s", Some("Observation"), Read, None),
            ("user/*.write", Some("Patient"), Update, Some(User)),
            ("user/*.write", Some("Patient"), Read, None),
            ("user/*.cruds", None, Search, Some(User)),
            ("user/Patient.rs", None, Search, None),
            ("system/*.*", Some("Patient"), Delete, Some(System)),
            (
                "patient/*.rs user/Patient.rs",
                Some("Patient"),
                Read,
                Some(User),
            ),
            (
                "patient/*.rs system/Patient.r",
                Some("Patient"),
                Read,
                Some(System),
            ),
            // v2 letters out of order, unknown contexts and types, granular.
            ("patient/Observation.sr", Some("Observation"), Read, None),
            ("patient/Observation.rx", Some("Observation"), Read, None),
            ("admin/*.read", Some("Patient"), Read, None),
            ("patient/observation.read", Some("observation"), Read, None),
            (
                "patient/Observation.rs?category=laboratory",
                Some("Observation"),
                Read,
                None,
            ),
            (
                "openid fhirUser launch/patient",
                Some("Patient"),
                Read,
                None,
            ),
            ("", Some("Patient"), Read, None),
        ];
        for (claim, resource_type, permission, expected) in cases {
            let scopes = Scopes::parse(claim);
            assert_eq!(
                scopes.granting(&need(*resource_type, *permission)),
                *expected,
                "{claim:?} for {resource_type:?} {permission:?}"
            );
        }
        assert_eq!(
            Scopes::parse("patient/Observation.rs?category=laboratory openid").granular_ignored,
            ["patient/Observation.rs?category=laboratory"]
        );
    }

    #[test]
    fn operations_that_may_write_need_write_permissions_and_history_only_reads() {
        use Permission as P;
        let post = http::Method::POST;
        let writes = |t: Option<&str>| {
            Some(vec![
                need(t, P::Create),
                need(t, P::Update),
                need(t, P::Delete),
            ])
        };
        // (method, interaction, path, expected)
        let cases: &[(&http::Method, Interaction, &str, Option<Vec<Need>>)] = &[
            (
                &post,
                Interaction::Operation,
                "/Patient/1/$meta-delete",
                writes(Some("Patient")),
            ),
            (
                &post,
                Interaction::Operation,
                "/Patient/$merge",
                writes(Some("Patient")),
            ),
            (&post, Interaction::Operation, "/$import", writes(None)),
            (
                &post,
                Interaction::Operation,
                "/Patient/1/$everything",
                Some(vec![need(Some("Patient"), P::Read)]),
            ),
            (
                &post,
                Interaction::Operation,
                "/Patient/$verify",
                Some(vec![need(Some("Patient"), P::Search)]),
            ),
            (
                &http::Method::DELETE,
                Interaction::HistoryInstance,
                "/Patient/1/_history",
                None,
            ),
            (
                &http::Method::DELETE,
                Interaction::HistoryType,
                "/Patient/_history",
                None,
            ),
        ];
        for (method, interaction, path, expected) in cases {
            assert_eq!(
                &needs(*interaction, method, path),
                expected,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn interactions_need_these_permissions() {
        use Interaction::*;
        use Permission as P;
        type Case<'a> = (Interaction, &'a str, Option<(Option<&'a str>, Permission)>);
        let cases: &[Case] = &[
            (Read, "/Patient/1", Some((Some("Patient"), P::Read))),
            (
                Vread,
                "/Patient/1/_history/2",
                Some((Some("Patient"), P::Read)),
            ),
            (
                HistoryInstance,
                "/Patient/1/_history",
                Some((Some("Patient"), P::Read)),
            ),
            (
                SearchType,
                "/Observation",
                Some((Some("Observation"), P::Search)),
            ),
            (
                HistoryType,
                "/Observation/_history",
                Some((Some("Observation"), P::Search)),
            ),
            (SearchSystem, "/", Some((None, P::Search))),
            (HistorySystem, "/_history", Some((None, P::Search))),
            (
                Create,
                "/Observation",
                Some((Some("Observation"), P::Create)),
            ),
            (
                Update,
                "/Observation/1",
                Some((Some("Observation"), P::Update)),
            ),
            (
                Patch,
                "/Observation/1",
                Some((Some("Observation"), P::Update)),
            ),
            (
                ConditionalDelete,
                "/Observation",
                Some((Some("Observation"), P::Delete)),
            ),
            (
                Operation,
                "/Patient/1/$proof",
                Some((Some("Patient"), P::Read)),
            ),
            (
                Operation,
                "/Patient/1/_history/2/$proof",
                Some((Some("Patient"), P::Read)),
            ),
            (
                Operation,
                "/Patient/$verify",
                Some((Some("Patient"), P::Search)),
            ),
            (Operation, "/$export", Some((None, P::Search))),
            (Capabilities, "/metadata", None),
            (BatchOrTransaction, "/", None),
            (Other, "/Patient/1/x/y/z", None),
        ];
        for (interaction, path, expected) in cases {
            let expected = expected.map(|(t, p)| vec![need(t, p)]);
            assert_eq!(
                needs(*interaction, &http::Method::GET, path),
                expected,
                "{interaction:?} {path}"
            );
        }
    }
}
