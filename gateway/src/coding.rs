//! HTTP content codings (RFC 9110 §8.4.1): `gzip`, `deflate`, `br` and
//! `identity`, in both directions.
//!
//! Every step that looks into a body (URL rewriting, the XML bridge, the
//! seal, verify-on-read, Japanese text, JP Core checks, `$verify`) needs the
//! decoded bytes, while real clients (Python `requests`, Node's fetch) ask
//! for compressed answers by default and may compress what they send. So:
//! request bodies are decoded (step 5) before steps 10 and 11 inspect them; the upstream is
//! offered only codings the gateway can decode; an inspected upstream answer
//! is decoded, worked on, and encoded again in a coding the client accepts.
//! Bodies the gateway does not inspect (a large `Binary`, `$export` NDJSON)
//! stream through with their coding untouched.
//!
//! Decoding is always bounded by the *decoded* size: a small compressed body
//! that inflates past the limit is refused, never held in memory.

use std::io::Read;

use http::header::{HeaderMap, HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING};

/// A content coding the gateway can decode and encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    /// HTTP's `deflate` is the zlib format (RFC 1950); some servers send raw
    /// deflate (RFC 1951) under the same name, which decoding also accepts.
    Deflate,
    Brotli,
}

impl Coding {
    /// The token in `Content-Encoding` / `Accept-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
        }
    }

    /// Every coding, in the gateway's order of preference when the client
    /// weighs several equally (brotli compresses FHIR JSON best, gzip is
    /// what every client has).
    const ALL: [Coding; 3] = [Coding::Gzip, Coding::Brotli, Coding::Deflate];

    fn from_token(token: &str) -> Option<Coding> {
        match token.to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Some(Coding::Gzip),
            "deflate" => Some(Coding::Deflate),
            "br" => Some(Coding::Brotli),
            _ => None,
        }
    }
}

/// What a `Content-Encoding` header says about a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyCoding {
    /// No header, or only `identity`.
    Identity,
    /// One coding the gateway knows.
    Known(Coding),
    /// Anything else (an unknown token, or several codings stacked): the
    /// value as sent, for the error message.
    Unsupported(String),
}

/// Reads the `Content-Encoding` of a message.
pub fn body_coding(headers: &HeaderMap) -> BodyCoding {
    let mut tokens = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        let Ok(text) = value.to_str() else {
            return BodyCoding::Unsupported("(not ASCII)".into());
        };
        tokens.extend(
            text.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("identity")),
        );
    }
    match tokens.as_slice() {
        [] => BodyCoding::Identity,
        [one] => match Coding::from_token(one) {
            Some(coding) => BodyCoding::Known(coding),
            None => BodyCoding::Unsupported((*one).to_owned()),
        },
        several => BodyCoding::Unsupported(several.join(", ")),
    }
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The decoded body would exceed the limit (a decompression bomb, or
    /// just a large body).
    TooLarge { limit: u64 },
    /// The bytes are not valid in the declared coding.
    Corrupt { coding: Coding, reason: String },
}

/// Decodes a whole body, refusing to produce more than `limit` bytes.
pub fn decode(coding: Coding, encoded: &[u8], limit: u64) -> Result<Vec<u8>, DecodeError> {
    let result = match coding {
        Coding::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(encoded), limit),
        Coding::Deflate => read_bounded(flate2::read::ZlibDecoder::new(encoded), limit).or_else(
            |error| match error {
                // Not zlib: try raw deflate, which some servers label so.
                DecodeError::Corrupt { .. } => {
                    read_bounded(flate2::read::DeflateDecoder::new(encoded), limit)
                }
                too_large => Err(too_large),
            },
        ),
        Coding::Brotli => read_bounded(
            brotli::Decompressor::new(encoded, BROTLI_BUFFER_BYTES),
            limit,
        ),
    };
    result.map_err(|error| match error {
        DecodeError::Corrupt { reason, .. } => DecodeError::Corrupt { coding, reason },
        too_large => too_large,
    })
}

const BROTLI_BUFFER_BYTES: usize = 16 * 1024;

fn read_bounded(reader: impl Read, limit: u64) -> Result<Vec<u8>, DecodeError> {
    let mut decoded = Vec::new();
    // One byte past the limit tells "exactly the limit" from "more".
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut decoded)
        .map_err(|e| DecodeError::Corrupt {
            coding: Coding::Gzip,
            reason: e.to_string(),
        })?;
    if decoded.len() as u64 > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    // `read_to_end` doubles its buffer: do not hold up to twice the body
    // while the request waits on the upstream.
    decoded.shrink_to_fit();
    Ok(decoded)
}

/// Encodes a whole body. Levels are chosen for a proxy, where the CPU
/// spent per answer is the price: the fastest levels (gzip/deflate 1,
/// brotli 2) still shrink FHIR JSON several times.
pub fn encode(coding: Coding, plain: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(plain.len() / 4 + 64);
    // Writing into a Vec cannot fail.
    match coding {
        Coding::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
            let _ = encoder.write_all(plain);
            let _ = encoder.finish();
        }
        Coding::Deflate => {
            let mut encoder =
                flate2::write::ZlibEncoder::new(&mut out, flate2::Compression::fast());
            let _ = encoder.write_all(plain);
            let _ = encoder.finish();
        }
        Coding::Brotli => {
            let params = brotli::enc::BrotliEncoderParams {
                quality: 2,
                lgwin: 20,
                ..Default::default()
            };
            let mut input = plain;
            let _ = brotli::BrotliCompress(&mut input, &mut out, &params);
        }
    }
    out
}

/// One `Accept-Encoding` entry: a coding (or `*`, or `identity`) and its
/// weight in thousandths.
fn accepted(headers: &HeaderMap) -> Vec<(String, u16)> {
    let mut entries = Vec::new();
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut params = item.split(';');
            let token = params.next().unwrap_or("").trim().to_ascii_lowercase();
            if token.is_empty() {
                continue;
            }
            let weight = params
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .find_map(parse_qvalue)
                .unwrap_or(1000);
            entries.push((token, weight));
        }
    }
    entries
}

/// `q=0.5` → 500 (RFC 9110 §12.4.2: at most three decimals).
fn parse_qvalue(text: &str) -> Option<u16> {
    let value: f64 = text.trim().parse().ok()?;
    (0.0..=1.0)
        .contains(&value)
        .then(|| (value * 1000.0).round() as u16)
}

/// The weight a client gives a coding: its own entry, else `*`'s, else 0.
fn weight_of(entries: &[(String, u16)], coding: Coding) -> u16 {
    let named = entries.iter().find(|(token, _)| {
        token == coding.token() || (coding == Coding::Gzip && token == "x-gzip")
    });
    match named {
        Some((_, weight)) => *weight,
        None => entries
            .iter()
            .find(|(token, _)| token == "*")
            .map_or(0, |(_, weight)| *weight),
    }
}

/// The coding to send a client whose request carried these headers:
/// `preferred` (what the upstream chose) when the client accepts it, else
/// the client's highest-weighted coding the gateway can produce, else none
/// (identity).
pub fn choose_for_client(request_headers: &HeaderMap, preferred: Option<Coding>) -> Option<Coding> {
    let entries = accepted(request_headers);
    if entries.is_empty() {
        return None;
    }
    if let Some(coding) = preferred.filter(|c| weight_of(&entries, *c) > 0) {
        return Some(coding);
    }
    // `max_by_key` keeps the last of equals: walk the preference order
    // backwards so the first preferred coding wins a tie.
    Coding::ALL
        .iter()
        .rev()
        .copied()
        .map(|c| (weight_of(&entries, c), c))
        .filter(|(weight, _)| *weight > 0)
        .max_by_key(|(weight, _)| *weight)
        .map(|(_, coding)| coding)
}

/// The `Accept-Encoding` to send upstream for a client that sent these
/// headers: only the codings the client accepts *and* the gateway can
/// decode, so no answer arrives in a coding the gateway cannot look into
/// (`zstd`, say). `None`: ask for identity (send no header).
pub fn upstream_accept_encoding(client_headers: &HeaderMap) -> Option<HeaderValue> {
    let entries = accepted(client_headers);
    let offered: Vec<&str> = Coding::ALL
        .iter()
        .filter(|c| weight_of(&entries, **c) > 0)
        .map(|c| c.token())
        .collect();
    if offered.is_empty() {
        return None;
    }
    HeaderValue::from_str(&offered.join(", ")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: http::header::HeaderName, value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(name, HeaderValue::from_str(value).unwrap());
        map
    }

    #[test]
    fn content_encoding_table() {
        use BodyCoding::*;
        let cases: &[(&str, BodyCoding)] = &[
            ("gzip", Known(Coding::Gzip)),
            ("x-gzip", Known(Coding::Gzip)),
            ("GZIP", Known(Coding::Gzip)),
            ("deflate", Known(Coding::Deflate)),
            ("br", Known(Coding::Brotli)),
            ("identity", Identity),
            ("identity, gzip", Known(Coding::Gzip)),
            ("zstd", Unsupported("zstd".into())),
            ("gzip, br", Unsupported("gzip, br".into())),
            ("compress", Unsupported("compress".into())),
        ];
        for (value, expected) in cases {
            assert_eq!(
                &body_coding(&headers(CONTENT_ENCODING, value)),
                expected,
                "{value}"
            );
        }
        assert_eq!(body_coding(&HeaderMap::new()), Identity);
    }

    #[test]
    fn client_choice_table() {
        // (Accept-Encoding, what the upstream used, what the client gets)
        let cases: &[(&str, Option<Coding>, Option<Coding>)] = &[
            ("gzip, deflate", Some(Coding::Gzip), Some(Coding::Gzip)),
            (
                "gzip, deflate, br",
                Some(Coding::Brotli),
                Some(Coding::Brotli),
            ),
            ("gzip, deflate, br", None, Some(Coding::Gzip)),
            ("br;q=1.0, gzip;q=0.8", None, Some(Coding::Brotli)),
            ("gzip;q=0", Some(Coding::Gzip), None),
            ("identity", Some(Coding::Gzip), None),
            ("*", Some(Coding::Deflate), Some(Coding::Deflate)),
            ("*;q=0, br", Some(Coding::Gzip), Some(Coding::Brotli)),
            ("zstd", Some(Coding::Gzip), None),
        ];
        for (accept, upstream, expected) in cases {
            assert_eq!(
                choose_for_client(&headers(ACCEPT_ENCODING, accept), *upstream),
                *expected,
                "{accept} / {upstream:?}"
            );
        }
        assert_eq!(
            choose_for_client(&HeaderMap::new(), Some(Coding::Gzip)),
            None
        );
    }

    #[test]
    fn upstream_is_offered_only_what_the_gateway_decodes() {
        let cases: &[(&str, Option<&str>)] = &[
            ("gzip, deflate", Some("gzip, deflate")),
            ("gzip, deflate, br, zstd", Some("gzip, br, deflate")),
            ("zstd", None),
            ("identity", None),
            ("gzip;q=0, br", Some("br")),
            ("*", Some("gzip, br, deflate")),
        ];
        for (client, expected) in cases {
            let offered = upstream_accept_encoding(&headers(ACCEPT_ENCODING, client));
            assert_eq!(
                offered.as_ref().map(|v| v.to_str().unwrap()),
                *expected,
                "{client}"
            );
        }
    }

    #[test]
    fn every_coding_round_trips() {
        let plain = "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"山田\"}]}".repeat(50);
        for coding in Coding::ALL {
            let encoded = encode(coding, plain.as_bytes());
            assert!(encoded.len() < plain.len() / 4, "{coding:?} compresses");
            assert_eq!(
                decode(coding, &encoded, 1 << 20).unwrap(),
                plain.as_bytes(),
                "{coding:?}"
            );
        }
    }

    #[test]
    fn raw_deflate_labelled_deflate_is_accepted() {
        use std::io::Write;
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        raw.write_all(b"{\"resourceType\":\"Patient\"}").unwrap();
        let raw = raw.finish().unwrap();
        assert_eq!(
            decode(Coding::Deflate, &raw, 1000).unwrap(),
            b"{\"resourceType\":\"Patient\"}"
        );
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_limit() {
        // 64 MiB of zeros compress to ~64 KiB of gzip at the best level.
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![0u8; 64 << 20]).unwrap();
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 200 << 10);
        assert_eq!(
            decode(Coding::Gzip, &bomb, 1 << 20),
            Err(DecodeError::TooLarge { limit: 1 << 20 })
        );
        // Exactly the limit is fine.
        let exact = encode(Coding::Brotli, &[7u8; 1000]);
        assert_eq!(decode(Coding::Brotli, &exact, 1000).unwrap().len(), 1000);
    }

    #[test]
    fn corrupt_bytes_are_an_error_naming_the_coding() {
        for coding in Coding::ALL {
            match decode(coding, b"this is not compressed at all", 1000) {
                Err(DecodeError::Corrupt { coding: named, .. }) => assert_eq!(named, coding),
                other => panic!("{coding:?}: {other:?}"),
            }
        }
    }
}
