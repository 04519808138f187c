//! The ledger of inkan's seals, and the means to anchor and check it.
//!
//! - Pure (no IO, no clock, no async, so verification runs anywhere,
//!   offline): the canonical form ([`canonical`], [`narrative`],
//!   [`resource`]), leaves and commitments ([`leaf`]), RFC 6962 proofs
//!   ([`merkle`]), signed C2SP notes and checkpoints ([`note`]), proof
//!   bundles ([`bundle`]), and the checks of anchor receipts ([`tsa`],
//!   [`evm`]).
//! - Operational: the log itself ([`log`]: appends, group commit, the
//!   checkpointer), its storage ([`store`]), the published tiles
//!   ([`tiles`]).
//! - [`backends`]: where checkpoints are anchored, and the obligations of
//!   every backend.
//!
//! Arrows point from operational to pure, never back; pure modules use
//! the plain data types of [`store`] (`VersionKey`, `IndexRecord`) and
//! nothing else of it.

#![warn(missing_docs)]

// Pure: no IO, no clock, no async — verification can run anywhere.
pub mod bundle;
pub mod canonical;
pub mod evm;
pub mod leaf;
pub mod merkle;
pub mod narrative;
pub mod note;
pub mod resource;
pub mod tsa;

// Operational: the log on disk, its storage, its checkpointer.
pub mod clock;
mod durable;
pub mod log;
pub mod store;
pub mod tiles;

// Where checkpoints are sent.
pub mod backends;

/// Errors of this crate. Each names what did not match.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input cannot be put in canonical form.
    #[error("not canonicalizable at byte {offset}: {reason}")]
    Canonical {
        /// Byte offset of the problem in the text being read (for XML, in
        /// the XML or in the JSON it was converted to); 0 when unknown.
        offset: usize,
        /// What is wrong, in words.
        reason: String,
    },
    /// A Merkle proof is malformed or does not verify.
    #[error("proof rejected: {0}")]
    Proof(String),
    /// Leaf data that is not a valid leaf encoding.
    #[error("invalid leaf: {0}")]
    Leaf(String),
    /// The ledger's storage failed.
    #[error("ledger storage: {0}")]
    Store(String),
    /// A proof bundle is malformed or does not verify.
    #[error("proof bundle rejected: {0}")]
    Bundle(String),
    /// The requested version or checkpoint does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// An anchor backend's answer was refused (a bad or forged receipt).
    #[error("anchor rejected: {0}")]
    Anchor(String),
    /// A signed note or checkpoint is malformed or its signature is wrong.
    #[error("signed note rejected: {0}")]
    Note(String),
}

/// Which side an [`Error`] blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The input handed in: a resource, a proof, a bundle, a receipt.
    Input,
    /// The ledger's own storage (disk, SQLite).
    Storage,
    /// An anchor backend or the way to it (a TSA or node that is down,
    /// refuses, or answers something that does not check out).
    Backend,
}

impl Error {
    /// A stable name for the error, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Canonical { .. } => "canonical",
            Error::Proof(_) => "proof",
            Error::Leaf(_) => "leaf",
            Error::Store(_) => "store",
            Error::Bundle(_) => "bundle",
            Error::NotFound(_) => "not_found",
            Error::Anchor(_) => "anchor",
            Error::Note(_) => "note",
        }
    }

    /// Which side is at fault: what was handed in, or the ledger itself.
    pub fn fault(&self) -> Fault {
        match self {
            Error::Store(_) => Fault::Storage,
            Error::Anchor(_) => Fault::Backend,
            _ => Fault::Input,
        }
    }
}
