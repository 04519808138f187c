//! Header handling at the proxy boundary: hop-by-hop headers are dropped
//! (RFC 9110 §7.6.1), end-to-end headers pass in both directions with every
//! value kept (`If-Match` may be a list), and the `X-Forwarded-*` and
//! `X-Request-Id` headers are set.

use std::net::SocketAddr;

use http::header::{HeaderName, HeaderValue, CONNECTION, HOST};
use http::HeaderMap;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1,
/// plus the de-facto `Proxy-Connection` and `Keep-Alive`).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// Removes hop-by-hop headers, including any named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Adds `token` to `Vary` unless it is already listed (or `Vary: *`).
pub fn add_vary(headers: &mut HeaderMap, token: &str) {
    let listed = headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case(token));
    if !listed {
        if let Ok(value) = HeaderValue::from_str(token) {
            headers.append(http::header::VARY, value);
        }
    }
}

/// The client-facing facts the gateway forwards upstream.
#[derive(Debug, Clone)]
pub struct ClientFacts {
    pub peer: SocketAddr,
    /// `http` or `https`, as the client reached us (or as a trusted proxy
    /// says).
    pub proto: String,
    /// The `Host` the client used (or a trusted proxy says).
    pub host: Option<String>,
}

/// Prepares client request headers for the upstream: hop-by-hop and `Host`
/// removed, `X-Forwarded-*` set. With `trust_forwarded` the client's own
/// `X-Forwarded-For` chain is kept and our peer appended; otherwise any
/// client-sent forwarding headers are replaced, so a client cannot forge them.
pub fn prepare_upstream_request_headers(
    headers: &mut HeaderMap,
    facts: &ClientFacts,
    trust_forwarded: bool,
) {
    strip_hop_by_hop(headers);
    headers.remove(HOST);
    mark_credentials_sensitive(headers);
    let peer_ip = facts.peer.ip().to_string();
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(chain) if trust_forwarded => format!("{chain}, {peer_ip}"),
        _ => peer_ip,
    };
    set(headers, X_FORWARDED_FOR, &forwarded_for);
    set(headers, X_FORWARDED_PROTO, &facts.proto);
    match &facts.host {
        Some(host) => set(headers, X_FORWARDED_HOST, host),
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
    if !trust_forwarded {
        headers.remove(X_FORWARDED_PREFIX);
        // Other spellings of the same claims: a client must not choose the
        // address the upstream logs or authorizes by.
        headers.remove(http::header::FORWARDED);
        headers.remove(X_REAL_IP);
    }
}

/// Credentials are marked sensitive: HTTP/2's header compression never
/// indexes them and `Debug` output (logs) shows them as `Sensitive`.
pub fn mark_credentials_sensitive(headers: &mut HeaderMap) {
    for name in [http::header::AUTHORIZATION, http::header::COOKIE] {
        if let http::header::Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
}

const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Removes what only the gateway may say from an upstream answer: the
/// `Inkan-*` headers (seal and verification results) and `Repr-Digest`.
/// An upstream (or whoever edits its responses) must not be able to send
/// `Inkan-Verify: verified=1` or a digest the gateway did not compute.
pub fn strip_gateway_owned(headers: &mut HeaderMap) {
    let owned: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("inkan-") || name.as_str() == "repr-digest")
        .cloned()
        .collect();
    for name in owned {
        headers.remove(name);
    }
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// The request id: the client's `X-Request-Id` when it is a sane token,
/// otherwise a fresh UUID.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

#[cfg(test)]
mod gateway_owned_tests {
    use super::*;

    #[test]
    fn upstream_sent_inkan_headers_and_digests_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            (
                "inkan-verify",
                "verified=1, tampered=0, unsealed=0, unchecked=0",
            ),
            ("Inkan-Seal", "sealed"),
            ("repr-digest", "sha-256=:AAAA:"),
            ("etag", "W/\"1\""),
            ("x-inkan-like", "kept"),
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        strip_gateway_owned(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["etag", "x-inkan-like"]);
    }

    #[test]
    fn forwarded_and_x_real_ip_from_clients_are_dropped_unless_trusted() {
        let facts = ClientFacts {
            peer: "192.0.2.7:5000".parse().unwrap(),
            proto: "http".into(),
            host: None,
        };
        for trusted in [false, true] {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::FORWARDED, "for=10.0.0.1".parse().unwrap());
            headers.insert("x-real-ip", "10.0.0.1".parse().unwrap());
            prepare_upstream_request_headers(&mut headers, &facts, trusted);
            assert_eq!(headers.contains_key(http::header::FORWARDED), trusted);
            assert_eq!(headers.contains_key("x-real-ip"), trusted);
            assert_eq!(headers["x-forwarded-for"], "192.0.2.7");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.append("if-match", HeaderValue::from_static("W/\"1\""));
        h.append("if-match", HeaderValue::from_static("W/\"2\""));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret-hop").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("transfer-encoding").is_none());
        assert_eq!(h.get_all("if-match").iter().count(), 2, "multi-valued kept");
    }

    #[test]
    fn forwarded_headers_cannot_be_forged_by_untrusted_clients() {
        let facts = ClientFacts {
            peer: "192.0.2.7:5555".parse().unwrap(),
            proto: "https".into(),
            host: Some("gw.example.jp".into()),
        };
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.9.9.9"));
        prepare_upstream_request_headers(&mut h, &facts, false);
        assert_eq!(h[X_FORWARDED_FOR], "192.0.2.7");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_HOST], "gw.example.jp");

        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.9.9.9"));
        prepare_upstream_request_headers(&mut h, &facts, true);
        assert_eq!(h[X_FORWARDED_FOR], "10.9.9.9, 192.0.2.7");
    }

    #[test]
    fn request_id_is_kept_or_generated() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(
            X_REQUEST_ID,
            HeaderValue::from_static("bad value with spaces"),
        );
        assert_eq!(request_id(&h).len(), 36);
        assert_eq!(request_id(&HeaderMap::new()).len(), 36);
    }
}
