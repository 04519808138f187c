//! FHIR content negotiation: which wire format a client sends and wants.
//!
//! FHIR lets a client choose the response format with `Accept` or with the
//! `_format` query parameter, which wins when both are present
//! (<http://hl7.org/fhir/R4/http.html#mime-type>). Media types that are not
//! FHIR JSON or XML (a `Binary` served as `application/pdf`, NDJSON from
//! `$export`) are [`WireFormat::Other`]: the gateway passes them through.

use http::header::{ACCEPT, CONTENT_TYPE};
use http::HeaderMap;

/// A body's wire format as far as the gateway is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    Json,
    Xml,
    Other,
}

impl WireFormat {
    /// The media type the gateway writes when it produces this format.
    pub fn fhir_media_type(self) -> &'static str {
        match self {
            WireFormat::Json | WireFormat::Other => "application/fhir+json; charset=utf-8",
            WireFormat::Xml => "application/fhir+xml; charset=utf-8",
        }
    }
}

/// Classifies a media type (without parameters, any case).
pub fn classify_media_type(essence: &str) -> WireFormat {
    let essence = essence.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/fhir+json" | "application/json" | "application/json+fhir" | "json" => {
            WireFormat::Json
        }
        "application/fhir+xml"
        | "application/xml"
        | "text/xml"
        | "application/xml+fhir"
        | "xml" => WireFormat::Xml,
        _ => WireFormat::Other,
    }
}

/// A parsed `Content-Type`: the format and the declared charset, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    pub essence: String,
    pub format: WireFormat,
    pub charset: Option<String>,
}

impl ContentType {
    pub fn parse(value: &str) -> ContentType {
        let mut parts = value.split(';');
        let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let charset = parts.find_map(|param| {
            let (name, value) = param.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("charset")
                .then(|| value.trim().trim_matches('"').to_ascii_lowercase())
        });
        ContentType {
            format: classify_media_type(&essence),
            essence,
            charset,
        }
    }

    pub fn from_headers(headers: &HeaderMap) -> Option<ContentType> {
        headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(ContentType::parse)
    }

    /// `application/x-www-form-urlencoded`: a `_search` form body.
    pub fn is_form(&self) -> bool {
        self.essence == "application/x-www-form-urlencoded"
    }

    /// True when the declared charset (if any) is UTF-8: the only charset the
    /// pass-through accepts for FHIR bodies.
    pub fn charset_is_utf8(&self) -> bool {
        matches!(self.charset.as_deref(), None | Some("utf-8") | Some("utf8"))
    }
}

/// What the client asked to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// The client stated no FHIR format (`*/*`, no `Accept`): the upstream
    /// decides, and the gateway's own errors are JSON.
    Unspecified,
    Json,
    Xml,
    /// Only non-FHIR types (e.g. `application/pdf` for a Binary).
    Other,
}

impl Wanted {
    /// The format for an OperationOutcome the gateway itself writes.
    pub fn outcome_format(self) -> WireFormat {
        match self {
            Wanted::Xml => WireFormat::Xml,
            _ => WireFormat::Json,
        }
    }
}

/// Reads `_format` from a raw query string, percent-decoded.
pub fn format_param(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == "_format").then(|| {
            percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Negotiates the response format from `_format` (wins) and `Accept`.
pub fn negotiate(headers: &HeaderMap, query: Option<&str>) -> Wanted {
    if let Some(format) = format_param(query) {
        let essence = format.split(';').next().unwrap_or("");
        return match classify_media_type(essence) {
            WireFormat::Json => Wanted::Json,
            WireFormat::Xml => Wanted::Xml,
            WireFormat::Other => Wanted::Other,
        };
    }
    let mut best: Option<(f32, usize, Wanted)> = None;
    let mut saw_any = false;
    for value in headers.get_all(ACCEPT).iter() {
        let Ok(value) = value.to_str() else { continue };
        for (position, item) in value.split(',').enumerate() {
            let mut params = item.split(';');
            let essence = params.next().unwrap_or("").trim();
            if essence.is_empty() {
                continue;
            }
            let q = params
                .find_map(|p| {
                    let (name, value) = p.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| value.trim().parse::<f32>().ok())?
                })
                .unwrap_or(1.0);
            if q <= 0.0 {
                continue;
            }
            let wanted = if essence == "*/*" || essence.eq_ignore_ascii_case("application/*") {
                saw_any = true;
                continue;
            } else {
                match classify_media_type(essence) {
                    WireFormat::Json => Wanted::Json,
                    WireFormat::Xml => Wanted::Xml,
                    WireFormat::Other => Wanted::Other,
                }
            };
            // Highest q wins; on a tie, the earlier entry wins.
            let better = match best {
                None => true,
                Some((best_q, _, _)) => q > best_q,
            };
            if better {
                best = Some((q, position, wanted));
            }
        }
    }
    match best {
        Some((_, _, Wanted::Other)) if saw_any => Wanted::Unspecified,
        Some((_, _, wanted)) => wanted,
        None => Wanted::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn negotiation_table() {
        #[rustfmt::skip]
        let cases: &[(&[&str], Option<&str>, Wanted)] = &[
            (&[],                                          None,                          Wanted::Unspecified),
            (&["*/*"],                                     None,                          Wanted::Unspecified),
            (&["application/fhir+json"],                   None,                          Wanted::Json),
            (&["application/fhir+xml"],                    None,                          Wanted::Xml),
            (&["application/xml"],                         None,                          Wanted::Xml),
            (&["text/xml;q=0.9, application/json"],        None,                          Wanted::Json),
            (&["application/json;q=0.5, application/fhir+xml"], None,                    Wanted::Xml),
            (&["application/fhir+json", "application/fhir+xml"], None,                   Wanted::Json),
            (&["application/fhir+json"],                   Some("_format=xml"),           Wanted::Xml),
            (&["application/fhir+xml"],                    Some("a=1&_format=json"),      Wanted::Json),
            (&[],                                          Some("_format=application%2Ffhir%2Bxml"), Wanted::Xml),
            (&["application/pdf"],                         None,                          Wanted::Other),
            (&["application/pdf, */*;q=0.1"],              None,                          Wanted::Unspecified),
            (&["application/fhir+xml;q=0"],                None,                          Wanted::Unspecified),
        ];
        for (headers, query, want) in cases {
            assert_eq!(
                negotiate(&accept(headers), *query),
                *want,
                "{headers:?} {query:?}"
            );
        }
    }

    #[test]
    fn content_type_table() {
        #[rustfmt::skip]
        let cases = [
            ("application/fhir+json",                     WireFormat::Json,  None),
            ("application/fhir+xml; charset=UTF-8",       WireFormat::Xml,   Some("utf-8")),
            ("Application/JSON;charset=\"Shift_JIS\"",    WireFormat::Json,  Some("shift_jis")),
            ("application/json-patch+json",               WireFormat::Other, None),
            ("application/octet-stream",                  WireFormat::Other, None),
        ];
        for (value, format, charset) in cases {
            let ct = ContentType::parse(value);
            assert_eq!(ct.format, format, "{value}");
            assert_eq!(ct.charset.as_deref(), charset, "{value}");
        }
    }
}
