//! Japanese charsets and text normalization for FHIR, as JP Core asks.
//! Pure: no IO, no async.
//!
//! - [`charset`]: decode Shift_JIS/CP932, EUC-JP, ISO-2022-JP and UTF-8
//!   bodies, with the byte offset of the first invalid sequence (mojibake is
//!   never produced), and detection among them for undeclared bodies;
//!   encode responses in the legacy charsets with escapes for what a strict
//!   decoder of the charset would not give back exactly (a table generated
//!   by `scripts/gen-jisx0208.py`).
//! - [`text`]: the string-level normalization rules (mapping-variant
//!   folding, half-width kana widening with dakuten composition, HumanName
//!   text spacing) and the checks (private-use 外字, control characters).
//!
//! - [`resource`]: the rules applied to a FHIR R4 resource field by field,
//!   by each element's datatype (a table generated from the R4 definitions
//!   by `scripts/gen-r4-types.py`).
//!
//! - [`jpcore`]: the JP Core checks (a subset of the profiles' constraints).
//!
//! - [`r4_search_params`]: the type of every search parameter R4 defines
//!   (a table generated from the specification's SearchParameter Bundle by
//!   `scripts/gen-r4-search-params.py`), for upstreams that do not declare
//!   a parameter's type.

pub mod charset;
mod jisx0208;
pub mod jpcore;
pub mod r4_search_params;
mod r4_types;
pub mod resource;
pub mod text;

/// Errors of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The body is not valid in the charset it was decoded as.
    #[error("the body is not valid {charset}: invalid byte sequence at offset {offset}")]
    InvalidBytes {
        charset: &'static str,
        offset: usize,
    },
    /// The charset label names no supported charset.
    #[error("unsupported charset {0:?}: send UTF-8, Shift_JIS (CP932), EUC-JP or ISO-2022-JP")]
    UnsupportedCharset(String),
    /// No charset was declared and detection was not confident.
    #[error("the body is not UTF-8 and its Japanese charset could not be detected with confidence; declare it with charset=")]
    Undetectable,
}
