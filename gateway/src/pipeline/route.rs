//! Step 3, route. Runs on every request outside `/-/`, first. Decides the
//! FHIR path (the request path after the configured base), the
//! interaction, the format the client wants and the public base URL, and
//! fixes them in [`RequestFacts`]. Changes nothing. Results: the facts;
//! 404 for a path outside the base; 400 for a path a server behind the
//! gateway could resolve elsewhere, or a bad `Host`.

use std::time::Instant;

use http::header::{ACCEPT_ENCODING, HOST};
use http::Request;

use super::facts::RequestFacts;
use super::{Connection, Gateway};
use crate::error::GatewayError;
use crate::fhir::format::{self, Wanted};
use crate::fhir::interaction::Interaction;
use crate::headers::{X_FORWARDED_HOST, X_FORWARDED_PREFIX, X_FORWARDED_PROTO};

/// A request refused before routing could finish: the error and what is
/// known for answering it.
#[derive(Debug)]
pub(super) struct Unrouted {
    pub error: GatewayError,
    pub request_id: String,
    pub wanted: Wanted,
}

impl Gateway {
    pub(super) fn route<B>(
        &self,
        request: &Request<B>,
        conn: &Connection,
        request_id: String,
        started: Instant,
    ) -> Result<RequestFacts, Unrouted> {
        let wanted = format::negotiate(request.headers(), request.uri().query());
        let refuse = |error| Unrouted {
            error,
            request_id: request_id.clone(),
            wanted,
        };
        let path = request.uri().path();
        if let Err(reason) = check_path_segments(path) {
            return Err(refuse(GatewayError::MalformedRequest {
                detail: format!("the request path has {reason}, which no FHIR path has"),
            }));
        }
        let fhir_path = match path.strip_prefix(self.config.base_path_trimmed()) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.to_owned(),
            _ => {
                return Err(refuse(GatewayError::NotFound {
                    base_path: self.config.base_path.clone(),
                }))
            }
        };
        let public_base = self.public_base(request, conn).map_err(refuse)?;
        Ok(RequestFacts {
            started,
            started_unix: ledger::clock::unix_seconds(),
            conn: conn.clone(),
            interaction: Interaction::classify(request.method(), &fhir_path),
            method: request.method().clone(),
            fhir_path,
            query: request.uri().query().map(str::to_owned),
            client_format_param: format::format_param(request.uri().query()),
            wanted,
            public_base,
            client_accept_encoding: request
                .headers()
                .get_all(ACCEPT_ENCODING)
                .iter()
                .map(|v| (ACCEPT_ENCODING, v.clone()))
                .collect(),
            request_id,
        })
    }

    /// The gateway's public FHIR base for this request: configured, or
    /// derived from the scheme and `Host` (or trusted `X-Forwarded-*`).
    fn public_base<B>(
        &self,
        request: &Request<B>,
        conn: &Connection,
    ) -> Result<String, GatewayError> {
        if let Some(configured) = &self.config.public_base_url {
            return Ok(configured.trim_end_matches('/').to_owned());
        }
        let headers = request.headers();
        let header = |name: &http::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(',').next().unwrap_or("").trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let trusted = self.config.trust_forwarded_headers;
        let scheme = trusted
            .then(|| header(&X_FORWARDED_PROTO))
            .flatten()
            .filter(|p| p == "http" || p == "https")
            .unwrap_or_else(|| {
                if conn.tls || self.config.tls.is_some() {
                    "https".into()
                } else {
                    "http".into()
                }
            });
        let host = trusted
            .then(|| header(&X_FORWARDED_HOST))
            .flatten()
            .or_else(|| header(&HOST))
            .or_else(|| request.uri().authority().map(|a| a.to_string()))
            .unwrap_or_else(|| self.config.listen.to_string());
        if host.parse::<http::uri::Authority>().is_err() {
            return Err(GatewayError::MalformedRequest {
                detail: "the Host header is not a valid authority".into(),
            });
        }
        let prefix = trusted
            .then(|| header(&X_FORWARDED_PREFIX))
            .flatten()
            .map(|p| p.trim_end_matches('/').to_owned())
            .unwrap_or_default();
        Ok(format!(
            "{scheme}://{host}{prefix}{}",
            self.config.base_path_trimmed()
        ))
    }
}

/// Refuses request paths a server behind the gateway could resolve to
/// somewhere else than they appear: dot segments (`..`, `.`, also
/// percent-encoded), encoded slashes and backslashes, NUL, `;` path
/// parameters and empty segments. No FHIR path has any of them, and
/// forwarding them would let a client reach upstream paths outside the
/// FHIR base (or past a rule of an authorizing proxy in front of it).
/// The error names what the path has.
pub(super) fn check_path_segments(path: &str) -> Result<(), &'static str> {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (index, segment) in segments.iter().enumerate() {
        let lowered = segment.to_ascii_lowercase();
        let decoded = lowered.replace("%2e", ".");
        let trailing = index + 1 == segments.len();
        if decoded == "." || decoded == ".." {
            return Err("a dot segment");
        } else if segment.is_empty() && !trailing {
            return Err("an empty segment");
        } else if segment.contains(';') {
            return Err("a ';' path parameter");
        } else if ["%2f", "%5c", "%00", "\\"]
            .iter()
            .any(|bad| lowered.contains(bad))
        {
            return Err("an encoded slash, backslash or NUL");
        }
    }
    Ok(())
}
