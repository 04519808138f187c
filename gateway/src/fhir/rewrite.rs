//! Base-URL rewriting: every URL in a response that points at the upstream's
//! base is rewritten to the gateway's public base, so clients never bypass
//! the gateway by following a link.
//!
//! Rewriting is structural: a URL is rewritten only where FHIR puts a URL
//! that names a server location, never by replacing text anywhere in a body:
//!
//! | element                                        | why                       |
//! |------------------------------------------------|---------------------------|
//! | `Bundle.link[].url`                            | paging (`next`, `self`)   |
//! | `Bundle.entry[].fullUrl`                       | entry identity            |
//! | `Bundle.entry[].response.location`, `.request.url` | transaction results   |
//! | any `Reference.reference` (absolute)           | links between resources   |
//! | `Attachment.url` (`attachment`, `photo`, `presentedForm`) | Binary links   |
//! | `CapabilityStatement.implementation.url`       | the server's own base     |
//! | `$export` manifest `request`, `output[].url`, `error[].url`, `deleted[].url` | bulk files |
//! | `Location`, `Content-Location` headers         | create results, async polling |
//!
//! Canonical URLs (`StructureDefinition.url`, `Extension.url`, `Coding.system`)
//! are identifiers, not locations, and are never touched.
//!
//! A URL is "under" a base when scheme, host (any case) and port (default
//! ports made explicit) are equal and the path starts with the base path at a
//! segment boundary. The rest of the URL — path, percent-encoded query and
//! fragment — is kept byte for byte.

use std::borrow::Cow;
use std::sync::RwLock;

use quick_xml::events::{BytesStart, Event};

/// A parsed base URL: `scheme://host:port/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    scheme: String,
    host: String,
    port: u16,
    /// Without a trailing slash; empty for a root base.
    path: String,
}

impl BaseUrl {
    /// Parses an absolute http(s) URL. Query and fragment are not allowed.
    pub fn parse(url: &str) -> Option<BaseUrl> {
        let (scheme, rest) = url.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.is_empty() || path.contains(['?', '#']) || authority.contains('@') {
            return None;
        }
        let (host, port) = split_host_port(authority, default_port)?;
        Some(BaseUrl {
            scheme,
            host,
            port,
            path: path.trim_end_matches('/').to_owned(),
        })
    }

    /// If `url` is under this base, the rest of it (starting with `/`, `?`,
    /// `#`, or empty), else `None`.
    pub fn strip<'a>(&self, url: &'a str) -> Option<&'a str> {
        let (scheme, rest) = url.split_once("://")?;
        if !scheme.eq_ignore_ascii_case(&self.scheme) {
            return None;
        }
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let default_port = if self.scheme == "https" { 443 } else { 80 };
        let (host, port) = split_host_port(authority, default_port)?;
        if host != self.host || port != self.port {
            return None;
        }
        let after_path = tail.strip_prefix(self.path.as_str())?;
        match after_path.as_bytes().first() {
            None | Some(b'/' | b'?' | b'#') => Some(after_path),
            _ => None, // `/fhirx` is not under `/fhir`
        }
    }

    /// `host:port` as it appears in URLs: a cheap needle to test whether a
    /// body could contain a URL under this base at all.
    pub fn authority_needle(&self) -> String {
        let default_port = if self.scheme == "https" { 443 } else { 80 };
        if self.port == default_port {
            format!("//{}", self.host)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    // IPv6 literals keep their brackets: `[::1]:8080`.
    let (host, port) = if let Some(end) = authority
        .strip_prefix('[')
        .and_then(|_| authority.find(']'))
    {
        let host = &authority[..=end];
        match &authority[end + 1..] {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p.parse().ok()?,
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// Rewrites URLs under any known upstream base to a public base.
#[derive(Debug)]
pub struct Rewriter {
    /// The configured upstream URL and its aliases, plus bases learned from
    /// the upstream's CapabilityStatement at run time, each with its
    /// authority needle (precomputed: it is searched for in every body).
    bases: RwLock<Vec<(BaseUrl, String)>>,
}

impl Rewriter {
    pub fn new(bases: impl IntoIterator<Item = BaseUrl>) -> Rewriter {
        Rewriter {
            bases: RwLock::new(
                bases
                    .into_iter()
                    .map(|b| {
                        let needle = b.authority_needle();
                        (b, needle)
                    })
                    .collect(),
            ),
        }
    }

    /// Adds a base the upstream was seen to advertise (idempotent).
    pub fn learn(&self, base: BaseUrl) {
        let mut bases = self.bases.write().unwrap_or_else(|e| e.into_inner());
        if !bases.iter().any(|(known, _)| *known == base) {
            tracing::info!(base = %format!("{}://{}:{}{}", base.scheme, base.host, base.port, base.path), "learned an upstream base from its CapabilityStatement");
            let needle = base.authority_needle();
            bases.push((base, needle));
        }
    }

    /// The public form of `url`, or `None` when it is not under an upstream
    /// base.
    pub fn rewrite_url(&self, url: &str, public_base: &str) -> Option<String> {
        let bases = self.bases.read().unwrap_or_else(|e| e.into_inner());
        let rest = bases.iter().find_map(|(b, _)| b.strip(url))?;
        let public = public_base.trim_end_matches('/');
        Some(format!("{public}{rest}"))
    }

    /// The part of `url` after an upstream base (`/Patient/1?…`), if it is
    /// under one.
    pub fn upstream_path<'a>(&self, url: &'a str) -> Option<&'a str> {
        let bases = self.bases.read().unwrap_or_else(|e| e.into_inner());
        bases.iter().find_map(|(b, _)| b.strip(url))
    }

    /// True when `body` might contain a URL under an upstream base. A `false`
    /// lets the body through without parsing.
    pub fn might_contain_upstream_url(&self, body: &[u8]) -> bool {
        let bases = self.bases.read().unwrap_or_else(|e| e.into_inner());
        bases
            .iter()
            .any(|(_, needle)| memchr::memmem::find(body, needle.as_bytes()).is_some())
    }

    /// Rewrites a FHIR JSON body. `None` means nothing needed rewriting (send
    /// the original bytes); `Some` is the new body. One pass over the bytes:
    /// everything but the rewritten strings is copied as the upstream wrote
    /// it (whitespace, member order, number text).
    pub fn rewrite_json(&self, body: &[u8], public_base: &str) -> Option<Vec<u8>> {
        if !self.might_contain_upstream_url(body) {
            return None;
        }
        rewrite_json_strings(body, |parent, key, value| {
            if is_location_element(parent, key) {
                self.rewrite_url(value, public_base)
            } else {
                None
            }
        })
    }

    /// Rewrites a FHIR XML body, keeping everything but the rewritten `value`
    /// attributes as the upstream wrote it. `None` means nothing changed.
    pub fn rewrite_xml(&self, body: &[u8], public_base: &str) -> Option<Vec<u8>> {
        if !self.might_contain_upstream_url(body) {
            return None;
        }
        let mut reader = quick_xml::Reader::from_reader(body);
        let mut writer = quick_xml::Writer::new(Vec::with_capacity(body.len() + 64));
        let mut stack: Vec<Vec<u8>> = Vec::new();
        let mut changed = false;
        let mut buf = Vec::new();
        loop {
            let event = reader.read_event_into(&mut buf).ok()?;
            match event {
                Event::Eof => break,
                Event::Start(start) => {
                    let rewritten = self.rewrite_xml_element(&start, &stack, public_base);
                    stack.push(start.local_name().as_ref().to_vec());
                    changed |= rewritten.is_some();
                    writer
                        .write_event(Event::Start(rewritten.unwrap_or(start)))
                        .ok()?;
                }
                Event::Empty(start) => {
                    let rewritten = self.rewrite_xml_element(&start, &stack, public_base);
                    changed |= rewritten.is_some();
                    writer
                        .write_event(Event::Empty(rewritten.unwrap_or(start)))
                        .ok()?;
                }
                Event::End(end) => {
                    stack.pop();
                    writer.write_event(Event::End(end)).ok()?;
                }
                other => writer.write_event(other).ok()?,
            }
            buf.clear();
        }
        changed.then(|| writer.into_inner())
    }

    fn rewrite_xml_element(
        &self,
        element: &BytesStart<'_>,
        stack: &[Vec<u8>],
        public_base: &str,
    ) -> Option<BytesStart<'static>> {
        let name = std::str::from_utf8(element.local_name().as_ref())
            .ok()?
            .to_owned();
        let parent = stack.last().and_then(|p| std::str::from_utf8(p).ok());
        if !is_location_element(parent, &name) {
            return None;
        }
        let value = element
            .try_get_attribute("value")
            .ok()??
            .unescape_value()
            .ok()?
            .into_owned();
        let new_value = self.rewrite_url(&value, public_base)?;
        let mut rewritten = BytesStart::new(
            std::str::from_utf8(element.name().as_ref())
                .ok()?
                .to_owned(),
        );
        for attr in element.attributes().flatten() {
            if attr.key.as_ref() == b"value" {
                rewritten.push_attribute(("value", new_value.as_str()));
            } else {
                rewritten.push_attribute(attr);
            }
        }
        Some(rewritten)
    }
}

/// An open JSON container while scanning: the key it sits under (array
/// items inherit their array's key, so in `"link": [{"url": …}]` the object's
/// parent is `link`) and, for objects, the member key being read.
enum Frame<'a> {
    Object {
        container_key: Option<Cow<'a, str>>,
        key: Option<Cow<'a, str>>,
        expecting_key: bool,
    },
    Array {
        container_key: Option<Cow<'a, str>>,
    },
}

/// Scans JSON once and replaces the string members for which `replace`
/// (given the parent key, the member key and the decoded value) returns a
/// new value. `None` when nothing was replaced or the input is not JSON.
fn rewrite_json_strings(
    input: &[u8],
    mut replace: impl FnMut(Option<&str>, &str, &str) -> Option<String>,
) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied_upto = 0;
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            open @ (b'{' | b'[') => push_frame(&mut stack, open),
            b'}' | b']' => {
                stack.pop();
            }
            b':' => {
                if let Some(Frame::Object { expecting_key, .. }) = stack.last_mut() {
                    *expecting_key = false;
                }
            }
            b',' => {
                if let Some(Frame::Object {
                    expecting_key, key, ..
                }) = stack.last_mut()
                {
                    *expecting_key = true;
                    *key = None;
                }
            }
            b'"' => {
                let start = i;
                let (end, escaped) = string_end(input, start)?;
                i = end;
                let raw = &input[start..end];
                match stack.last_mut() {
                    Some(Frame::Object {
                        expecting_key: true,
                        key,
                        ..
                    }) => *key = Some(decode_string(raw, escaped)?),
                    Some(Frame::Object {
                        container_key,
                        key: Some(key),
                        ..
                    }) => {
                        let value = decode_string(raw, escaped)?;
                        if let Some(new) = replace(container_key.as_deref(), key, &value) {
                            let buffer =
                                out.get_or_insert_with(|| Vec::with_capacity(input.len() + 256));
                            buffer.extend_from_slice(&input[copied_upto..start]);
                            buffer.extend_from_slice(serde_json::to_string(&new).ok()?.as_bytes());
                            copied_upto = end;
                        }
                    }
                    _ => {}
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let mut buffer = out?;
    buffer.extend_from_slice(&input[copied_upto..]);
    Some(buffer)
}

/// Opens an object or array under the key the current frame is at.
fn push_frame<'a>(stack: &mut Vec<Frame<'a>>, open: u8) {
    let container_key = match stack.last() {
        Some(Frame::Object { key, .. }) => key.clone(),
        Some(Frame::Array { container_key }) => container_key.clone(),
        None => None,
    };
    stack.push(if open == b'{' {
        Frame::Object {
            container_key,
            key: None,
            expecting_key: true,
        }
    } else {
        Frame::Array { container_key }
    });
}

/// The end (one past the closing quote) of the JSON string starting at
/// `start`, and whether it has escapes; `None` when it never closes.
fn string_end(input: &[u8], start: usize) -> Option<(usize, bool)> {
    let mut i = start + 1;
    let mut escaped = false;
    loop {
        match input.get(i)? {
            b'\\' => {
                escaped = true;
                i += 2;
            }
            b'"' => return Some((i + 1, escaped)),
            _ => i += 1,
        }
    }
}

/// A JSON string token's value (quotes included in `raw`).
fn decode_string(raw: &[u8], escaped: bool) -> Option<Cow<'_, str>> {
    if escaped {
        serde_json::from_slice::<String>(raw).ok().map(Cow::Owned)
    } else {
        std::str::from_utf8(&raw[1..raw.len() - 1])
            .ok()
            .map(Cow::Borrowed)
    }
}

/// The table in the module docs, as code: is `key` (inside an element named
/// `parent`) a URL that names a server location?
fn is_location_element(parent: Option<&str>, key: &str) -> bool {
    match key {
        "reference" | "fullUrl" => true,
        "location" => parent == Some("response"),
        "url" => matches!(
            parent,
            Some(
                "link"
                    | "request"
                    | "implementation"
                    | "attachment"
                    | "photo"
                    | "presentedForm"
                    | "output"
                    | "error"
                    | "deleted"
            )
        ),
        // The `$export` manifest's top-level `request`.
        "request" => parent.is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC: &str = "https://gw.example.jp/fhir";

    fn rewriter() -> Rewriter {
        Rewriter::new([
            BaseUrl::parse("http://127.0.0.1:39001/fhir").unwrap(),
            BaseUrl::parse("http://localhost:8080").unwrap(),
        ])
    }

    #[test]
    fn url_table() {
        #[rustfmt::skip]
        let cases: &[(&str, Option<&str>)] = &[
            ("http://127.0.0.1:39001/fhir/Patient/1",          Some("https://gw.example.jp/fhir/Patient/1")),
            ("http://127.0.0.1:39001/fhir",                    Some("https://gw.example.jp/fhir")),
            ("http://127.0.0.1:39001/fhir?_getpages=abc&_x=%E5%B1%B1", Some("https://gw.example.jp/fhir?_getpages=abc&_x=%E5%B1%B1")),
            ("HTTP://127.0.0.1:39001/fhir/Patient?name=%E5%B1%B1%E7%94%B0", Some("https://gw.example.jp/fhir/Patient?name=%E5%B1%B1%E7%94%B0")),
            ("http://127.0.0.1:39001/fhirx/Patient/1",         None),
            ("http://127.0.0.1:39002/fhir/Patient/1",          None),
            ("https://127.0.0.1:39001/fhir/Patient/1",         None),
            ("http://LOCALHOST:8080/Patient/1/_history/2",     Some("https://gw.example.jp/fhir/Patient/1/_history/2")),
            ("http://localhost:8080",                          Some("https://gw.example.jp/fhir")),
            ("http://localhost/Patient/1",                     None),
            ("Patient/1",                                      None),
            ("urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a", None),
            ("http://hl7.org/fhir/StructureDefinition/Patient", None),
        ];
        let r = rewriter();
        for (url, want) in cases {
            assert_eq!(r.rewrite_url(url, PUBLIC).as_deref(), *want, "{url}");
        }
    }

    #[test]
    fn default_ports_are_equal_to_explicit_ones() {
        let base = BaseUrl::parse("https://fhir.example.jp").unwrap();
        assert_eq!(
            base.strip("https://fhir.example.jp:443/Patient"),
            Some("/Patient")
        );
        let ipv6 = BaseUrl::parse("http://[::1]:8080/fhir").unwrap();
        assert_eq!(
            ipv6.strip("http://[::1]:8080/fhir/Patient"),
            Some("/Patient")
        );
    }

    #[test]
    fn json_bundle_is_rewritten_structurally() {
        let body = br#"{"resourceType":"Bundle","type":"searchset",
          "link":[{"relation":"next","url":"http://localhost:8080/Patient?_count=1&_offset=1"}],
          "entry":[{"fullUrl":"http://localhost:8080/Patient/1",
            "resource":{"resourceType":"Patient","id":"1",
              "extension":[{"url":"http://localhost:8080/StructureDefinition/x","valueString":"http://localhost:8080/Patient/1"}],
              "managingOrganization":{"reference":"http://localhost:8080/Organization/9"},
              "identifier":[{"system":"http://localhost:8080/ids","value":"1"}]},
            "response":{"location":"http://localhost:8080/Patient/1/_history/1"}}]}"#;
        let out = rewriter().rewrite_json(body, PUBLIC).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["link"][0]["url"],
            "https://gw.example.jp/fhir/Patient?_count=1&_offset=1"
        );
        assert_eq!(
            v["entry"][0]["fullUrl"],
            "https://gw.example.jp/fhir/Patient/1"
        );
        assert_eq!(
            v["entry"][0]["response"]["location"],
            "https://gw.example.jp/fhir/Patient/1/_history/1"
        );
        let patient = &v["entry"][0]["resource"];
        assert_eq!(
            patient["managingOrganization"]["reference"],
            "https://gw.example.jp/fhir/Organization/9"
        );
        // Identifiers and strings are data, not locations: untouched.
        assert_eq!(
            patient["extension"][0]["url"],
            "http://localhost:8080/StructureDefinition/x"
        );
        assert_eq!(
            patient["extension"][0]["valueString"],
            "http://localhost:8080/Patient/1"
        );
        assert_eq!(
            patient["identifier"][0]["system"],
            "http://localhost:8080/ids"
        );
    }

    #[test]
    fn json_without_upstream_urls_is_left_alone() {
        let body = br#"{"resourceType":"Patient","id":"1","birthDate":"1970-01-01"}"#;
        assert_eq!(rewriter().rewrite_json(body, PUBLIC), None);
    }

    #[test]
    fn json_rewriting_keeps_everything_else_byte_for_byte() {
        let body = "{ \"resourceType\" : \"Bundle\",\n  \"entry\": [ {\"fullUrl\": \"http://localhost:8080/Patient/1\", \"resource\": {\"note\": \"a \\\"quoted\\\" \\u5c71 ]}\", \"v\": 1.50e0}} ] }";
        let out =
            String::from_utf8(rewriter().rewrite_json(body.as_bytes(), PUBLIC).unwrap()).unwrap();
        assert_eq!(out, body.replace("http://localhost:8080", PUBLIC));
    }

    #[test]
    fn escaped_urls_are_decoded_before_matching() {
        let body = br#"{"subject":{"reference":"http:\/\/localhost:8080\/Patient\/1"}}"#;
        // The needle is the authority, which has no slash: found.
        let out = rewriter().rewrite_json(body, PUBLIC).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["subject"]["reference"],
            "https://gw.example.jp/fhir/Patient/1"
        );
    }

    #[test]
    fn json_numbers_keep_their_precision() {
        let body = br#"{"resourceType":"Observation","valueQuantity":{"value":1.50},"subject":{"reference":"http://localhost:8080/Patient/1"}}"#;
        let out = rewriter().rewrite_json(body, PUBLIC).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("\"value\":1.50"));
    }

    #[test]
    fn xml_bundle_is_rewritten_structurally() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Bundle xmlns="http://hl7.org/fhir"><type value="searchset"/>
<link><relation value="next"/><url value="http://localhost:8080/Patient?_count=1&amp;_offset=1"/></link>
<entry><fullUrl value="http://localhost:8080/Patient/1"/><resource><Patient><id value="1"/>
<extension url="http://localhost:8080/StructureDefinition/x"><valueString value="http://localhost:8080/Patient/1"/></extension>
<managingOrganization><reference value="http://localhost:8080/Organization/9"/></managingOrganization>
</Patient></resource></entry></Bundle>"#;
        let out = String::from_utf8(rewriter().rewrite_xml(body, PUBLIC).unwrap()).unwrap();
        assert!(
            out.contains(
                r#"<url value="https://gw.example.jp/fhir/Patient?_count=1&amp;_offset=1"/>"#
            ),
            "{out}"
        );
        assert!(
            out.contains(r#"<fullUrl value="https://gw.example.jp/fhir/Patient/1"/>"#),
            "{out}"
        );
        assert!(
            out.contains(r#"<reference value="https://gw.example.jp/fhir/Organization/9"/>"#),
            "{out}"
        );
        assert!(
            out.contains(r#"<extension url="http://localhost:8080/StructureDefinition/x">"#),
            "{out}"
        );
        assert!(
            out.contains(r#"<valueString value="http://localhost:8080/Patient/1"/>"#),
            "{out}"
        );
    }

    #[test]
    fn export_manifest_urls_are_rewritten() {
        let body = br#"{"transactionTime":"2026-01-01T00:00:00Z","request":"http://localhost:8080/$export",
          "requiresAccessToken":true,"output":[{"type":"Patient","url":"http://localhost:8080/bulk/1.ndjson"}],"error":[]}"#;
        let v: serde_json::Value =
            serde_json::from_slice(&rewriter().rewrite_json(body, PUBLIC).unwrap()).unwrap();
        assert_eq!(v["request"], "https://gw.example.jp/fhir/$export");
        assert_eq!(
            v["output"][0]["url"],
            "https://gw.example.jp/fhir/bulk/1.ndjson"
        );
    }
}
