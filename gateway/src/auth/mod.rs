//! Who is calling, and what they may do (`[auth]`, docs/security.md).
//!
//! - `passthrough` (default): the upstream decides. A bearer JWT's claims
//!   are read without any check and recorded in access records as
//!   *unverified*; the gateway never decides anything on them.
//! - `jwt`: the gateway validates bearer tokens ([`jwt`]) and enforces
//!   SMART scopes ([`smart`]) and a patient context ([`compartment`]).
//!
//! A client certificate's subject (mTLS, `[tls] client_ca_file`) is an
//! identity in both modes: verified by the TLS handshake.

pub mod compartment;
pub mod jwt;
pub mod smart;

use http::header::AUTHORIZATION;
use http::HeaderMap;

use crate::config::{AuthConfig, AuthMode};
use crate::error::{ConfigError, GatewayError};
use crate::fhir::interaction::Interaction;
use jwt::{Claims, JwtValidator};
use smart::{ScopeContext, Scopes};

/// The caller of one request, as far as the gateway knows.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The claims were validated by the gateway (`jwt` mode). False: they
    /// are what the token says, unchecked, or there are none.
    pub verified: bool,
    pub claims: Option<Claims>,
    /// The TLS client certificate's subject, when the client sent one.
    pub certificate_subject: Option<String>,
    /// Granted SMART scopes (`jwt` mode only).
    pub scopes: Scopes,
}

impl Caller {
    /// The client application: `client_id`, else `azp`.
    pub fn client_id(&self) -> Option<&str> {
        let claims = self.claims.as_ref()?;
        claims.client_id.as_deref().or(claims.azp.as_deref())
    }

    /// The patient in the token's launch context, when verified.
    pub fn patient_context(&self) -> Option<&str> {
        match self.verified {
            true => self.claims.as_ref()?.patient.as_deref(),
            false => None,
        }
    }
}

/// What the gateway does with bearer tokens.
#[derive(Debug)]
pub struct Authenticator {
    validator: Option<JwtValidator>,
}

/// What authorization decided for one request (`jwt` mode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// The patient the request is held to, when only a patient scope
    /// grants it.
    pub patient: Option<String>,
    /// A search parameter added to pin a search to that patient.
    pub added_search_parameter: Option<(String, String)>,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Result<Authenticator, ConfigError> {
        let validator = match config.mode {
            AuthMode::Passthrough => None,
            AuthMode::Jwt => Some(JwtValidator::new(config)?),
        };
        Ok(Authenticator { validator })
    }

    /// Whether the gateway enforces tokens.
    pub fn enforces(&self) -> bool {
        self.validator.is_some()
    }

    /// The issuer's keys fetched once at start (a warning when not yet
    /// reachable; requests retry).
    pub async fn prefetch(&self) {
        if let Some(validator) = &self.validator {
            match validator.prefetch().await {
                Ok(keys) => tracing::info!(keys, "bearer token validation ready"),
                Err(error) => tracing::warn!(%error, "bearer token keys not available yet"),
            }
        }
    }

    /// The caller of a request. In `jwt` mode a missing or invalid token is
    /// refused (401), except for requests that need none (the
    /// CapabilityStatement and SMART configuration, which clients read
    /// before they have a token).
    pub async fn identify(
        &self,
        headers: &HeaderMap,
        certificate_subject: Option<&str>,
        open_to_all: bool,
    ) -> Result<Caller, GatewayError> {
        let token = bearer_token(headers);
        let mut caller = Caller {
            certificate_subject: certificate_subject.map(str::to_owned),
            ..Caller::default()
        };
        let Some(validator) = &self.validator else {
            caller.claims = token.and_then(jwt::unverified_claims);
            return Ok(caller);
        };
        let Some(token) = token else {
            if open_to_all {
                return Ok(caller);
            }
            return Err(GatewayError::MissingToken);
        };
        let claims = validator
            .validate(token)
            .await
            .map_err(|e| GatewayError::InvalidToken { reason: e.0 })?;
        caller.scopes = Scopes::parse(claims.scope.as_deref().unwrap_or(""));
        caller.claims = Some(claims);
        caller.verified = true;
        Ok(caller)
    }

    /// Whether `caller` may make this request (`jwt` mode; everything is
    /// allowed in passthrough). `query` is the client's query; `batch`
    /// the entries of a batch or transaction, `(method, url)`.
    pub fn authorize(
        &self,
        caller: &Caller,
        interaction: Interaction,
        method: &http::Method,
        fhir_path: &str,
        query: Option<&str>,
        batch: Option<&[(String, String)]>,
    ) -> Result<Grant, GatewayError> {
        if !self.enforces() || open_to_all(interaction, fhir_path) {
            return Ok(Grant::default());
        }
        let forbidden = |reason: String| GatewayError::Forbidden { reason };
        if interaction == Interaction::BatchOrTransaction {
            let entries = batch.unwrap_or_default();
            for (method, url) in entries {
                let (path, entry_query) = url.split_once('?').unwrap_or((url, ""));
                let path = format!("/{}", path.trim_start_matches('/'));
                let method = http::Method::from_bytes(method.as_bytes())
                    .map_err(|_| forbidden(format!("batch entry method {method:?}")))?;
                let entry = Interaction::classify(&method, &path);
                if entry == Interaction::BatchOrTransaction {
                    return Err(forbidden("a batch inside a batch".into()));
                }
                let grant =
                    self.authorize(caller, entry, &method, &path, Some(entry_query), None)?;
                if grant.patient.is_some() {
                    return Err(forbidden(
                        "batch and transaction entries cannot be held to a patient context; use a user or system scope".into(),
                    ));
                }
            }
            return Ok(Grant::default());
        }
        let needs = smart::needs(interaction, method, fhir_path).ok_or_else(|| {
            forbidden(format!(
                "no SMART scope grants a {} request on this path",
                interaction.as_str()
            ))
        })?;
        let mut grant = Grant::default();
        for need in needs {
            match caller.scopes.granting(&need) {
                None => {
                    let granular = match caller.scopes.granular_ignored.is_empty() {
                        true => String::new(),
                        false => {
                            " (granular scopes with a query are not granted by the gateway)".into()
                        }
                    };
                    return Err(forbidden(format!(
                        "the token's scopes do not grant {need}{granular}"
                    )));
                }
                Some(ScopeContext::Patient) => {
                    let patient = caller.patient_context().ok_or_else(|| {
                        forbidden("a patient scope without a patient in the token's context".into())
                    })?;
                    grant.patient = Some(patient.to_owned());
                }
                Some(_) => {}
            }
        }
        if let Some(patient) = grant.patient.clone() {
            grant.added_search_parameter =
                pin_to_patient(interaction, method, fhir_path, query, &patient)
                    .map_err(forbidden)?;
        }
        Ok(grant)
    }
}

/// Requests that need no token: the CapabilityStatement and the SMART
/// configuration, which clients read to learn how to get one.
pub fn open_to_all(interaction: Interaction, fhir_path: &str) -> bool {
    interaction == Interaction::Capabilities
        || fhir_path.trim_end_matches('/') == "/.well-known/smart-configuration"
}

/// Checks a patient-context request against its path and query; for a
/// search, the parameter to add (if the query does not pin it already).
fn pin_to_patient(
    interaction: Interaction,
    method: &http::Method,
    fhir_path: &str,
    query: Option<&str>,
    patient: &str,
) -> Result<Option<(String, String)>, String> {
    let segments = crate::fhir::path::segments(fhir_path);
    let resource_type = segments.first().copied().unwrap_or("");
    let names_the_patient = segments.get(1) == Some(&patient);
    // Parameters that take the patient's references out of an answer, so
    // that the answer check below would see nothing to compare.
    let hiding = query.unwrap_or("").split('&').find(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        matches!(
            name,
            "_elements" | "_summary" | "_contained" | "_containedType"
        )
    });
    if let Some(pair) = hiding {
        let name = pair.split('=').next().unwrap_or("");
        return Err(format!("{name} is refused with a patient context"));
    }
    match interaction {
        Interaction::Read | Interaction::Vread | Interaction::HistoryInstance => {
            if resource_type == "Patient" && !names_the_patient {
                return Err("the token's patient context is another patient".into());
            }
            // Other types: the answer's references are checked once it is in.
            Ok(None)
        }
        Interaction::SearchType if *method == http::Method::POST => {
            Err("POST _search is refused with a patient context; search with GET".into())
        }
        Interaction::SearchType => match compartment::pin_search(resource_type, query, patient)? {
            compartment::SearchPin::AlreadyPinned => Ok(None),
            compartment::SearchPin::Add(name, value) => Ok(Some((name, value))),
        },
        // A new resource's body is checked before it leaves.
        Interaction::Create => Ok(None),
        // The patient's own Patient resource only: another type's current
        // version, which the update replaces, cannot be checked before the
        // write (and a delete or a patch leaves nothing to check).
        Interaction::Update if resource_type == "Patient" && names_the_patient => Ok(None),
        Interaction::Operation if resource_type == "Patient" && matches!(segments.len(), 3 | 5) => {
            match names_the_patient {
                true => Ok(None),
                false => Err("the token's patient context is another patient".into()),
            }
        }
        _ => Err(format!(
            "a {} request cannot be held to the token's patient context",
            interaction.as_str()
        )),
    }
}

/// The bearer token of `Authorization: Bearer <token>`, if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(scope: &str, patient: Option<&str>) -> Caller {
        Caller {
            verified: true,
            claims: Some(Claims {
                patient: patient.map(str::to_owned),
                ..Claims::default()
            }),
            certificate_subject: None,
            scopes: Scopes::parse(scope),
        }
    }

    fn enforcing() -> Authenticator {
        // A validator is only needed to switch enforcement on.
        let config = AuthConfig {
            mode: AuthMode::Jwt,
            issuer: Some("https://id.example.jp".into()),
            audience: vec!["https://fhir.example.jp/fhir".into()],
            jwks_file: None,
            ..AuthConfig::default()
        };
        Authenticator::new(&config).unwrap()
    }

    #[test]
    fn requests_are_granted_refused_or_pinned_like_this() {
        use Interaction::*;
        let auth = enforcing();
        let pinned = |n: &str, v: &str| Some((n.to_owned(), v.to_owned()));
        // (scope, patient, interaction, path, query, expected: Err(()) or the added parameter)
        #[allow(clippy::type_complexity)]
        let cases: &[(
            &str,
            Option<&str>,
            Interaction,
            &str,
            Option<&str>,
            Result<Option<(String, String)>, ()>,
        )] = &[
            (
                "patient/Patient.rs",
                Some("p1"),
                Read,
                "/Patient/p1",
                None,
                Ok(None),
            ),
            (
                "patient/Patient.rs",
                Some("p1"),
                Read,
                "/Patient/p2",
                None,
                Err(()),
            ),
            (
                "patient/Patient.rs",
                None,
                Read,
                "/Patient/p1",
                None,
                Err(()),
            ),
            ("user/Patient.rs", None, Read, "/Patient/p2", None, Ok(None)),
            (
                "patient/Observation.rs",
                Some("p1"),
                SearchType,
                "/Observation",
                Some("code=x"),
                Ok(pinned("patient", "p1")),
            ),
            (
                "patient/Observation.rs",
                Some("p1"),
                SearchType,
                "/Observation",
                Some("patient=p2"),
                Err(()),
            ),
            (
                "patient/Observation.rs",
                Some("p1"),
                SearchType,
                "/Observation/_search",
                None,
                Err(()),
            ),
            (
                "patient/Observation.rs",
                Some("p1"),
                Create,
                "/Observation",
                None,
                Err(()),
            ),
            (
                "patient/Observation.cruds",
                Some("p1"),
                Create,
                "/Observation",
                None,
                Ok(None),
            ),
            ("patient/*.rs", Some("p1"), SearchSystem, "/", None, Err(())),
            (
                "patient/*.rs",
                Some("p1"),
                Operation,
                "/Patient/p1/$proof",
                None,
                Ok(None),
            ),
            (
                "patient/*.rs",
                Some("p1"),
                Operation,
                "/Patient/p2/$proof",
                None,
                Err(()),
            ),
            (
                "patient/*.rs",
                Some("p1"),
                Operation,
                "/Observation/o1/$proof",
                None,
                Err(()),
            ),
            ("system/*.rs", None, SearchSystem, "/", None, Ok(None)),
            (
                "system/Patient.rs",
                None,
                Read,
                "/Observation/o1",
                None,
                Err(()),
            ),
            ("", None, Capabilities, "/metadata", None, Ok(None)),
            (
                "system/*.rs",
                None,
                Other,
                "/Patient/1/a/b/c",
                None,
                Err(()),
            ),
            (
                "patient/Observation.rs",
                Some("p1"),
                Read,
                "/Observation/o1",
                Some("_elements=valueQuantity"),
                Err(()),
            ),
            (
                "patient/Observation.rs",
                Some("p1"),
                SearchType,
                "/Observation",
                Some("_summary=count"),
                Err(()),
            ),
            (
                "patient/Observation.cruds",
                Some("p1"),
                Update,
                "/Observation/o1",
                None,
                Err(()),
            ),
            (
                "patient/Observation.cruds",
                Some("p1"),
                Delete,
                "/Observation/o1",
                None,
                Err(()),
            ),
            (
                "patient/Observation.cruds",
                Some("p1"),
                Patch,
                "/Observation/o1",
                None,
                Err(()),
            ),
            (
                "patient/Patient.cruds",
                Some("p1"),
                Update,
                "/Patient/p1",
                None,
                Ok(None),
            ),
            (
                "patient/Patient.cruds",
                Some("p1"),
                Update,
                "/Patient/p2",
                None,
                Err(()),
            ),
            (
                "user/Observation.cruds",
                None,
                Delete,
                "/Observation/o1",
                None,
                Ok(None),
            ),
        ];
        for (scope, patient, interaction, path, query, expected) in cases {
            let got = auth
                .authorize(
                    &caller(scope, *patient),
                    *interaction,
                    &method_of(*interaction, path),
                    path,
                    *query,
                    None,
                )
                .map(|g| g.added_search_parameter)
                .map_err(|_| ());
            assert_eq!(
                &got, expected,
                "{scope} {patient:?} {interaction:?} {path} {query:?}"
            );
        }
    }

    fn method_of(interaction: Interaction, path: &str) -> http::Method {
        match interaction {
            Interaction::SearchType if path.ends_with("/_search") => http::Method::POST,
            Interaction::Create | Interaction::BatchOrTransaction => http::Method::POST,
            Interaction::Update => http::Method::PUT,
            Interaction::Patch => http::Method::PATCH,
            Interaction::Delete => http::Method::DELETE,
            _ => http::Method::GET,
        }
    }

    #[test]
    fn batch_entries_are_each_authorized() {
        let auth = enforcing();
        let entries = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(m, u)| (m.to_string(), u.to_string()))
                .collect()
        };
        let writer = caller("user/Observation.cruds user/Patient.rs", None);
        let ok = entries(&[("POST", "Observation"), ("GET", "Patient/1")]);
        assert!(auth
            .authorize(
                &writer,
                Interaction::BatchOrTransaction,
                &http::Method::POST,
                "/",
                None,
                Some(&ok)
            )
            .is_ok());
        let too_much = entries(&[("POST", "Observation"), ("DELETE", "Patient/1")]);
        assert!(auth
            .authorize(
                &writer,
                Interaction::BatchOrTransaction,
                &http::Method::POST,
                "/",
                None,
                Some(&too_much)
            )
            .is_err());
        let patient = caller("patient/*.cruds", Some("p1"));
        assert!(auth
            .authorize(
                &patient,
                Interaction::BatchOrTransaction,
                &http::Method::POST,
                "/",
                None,
                Some(&ok)
            )
            .is_err());
    }

    #[test]
    fn bearer_tokens_are_found_in_any_scheme_case() {
        let cases: &[(&str, Option<&str>)] = &[
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearer", None),
        ];
        for (header, expected) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, header.parse().unwrap());
            assert_eq!(bearer_token(&headers), *expected, "{header}");
        }
    }
}
