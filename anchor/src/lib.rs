//! The seal: canonical form, salted commitments, the RFC 6962 Merkle log,
//! signed C2SP checkpoints and proofs. Hashing, proof and checkpoint code is
//! pure (no IO, no async) so verification can run anywhere, offline;
//! [`store`], [`ledger`], [`tiles`] and [`anchor`] are the parts that touch
//! disk.

pub mod anchor;
pub mod bundle;
pub mod canonical;
pub mod clock;
pub mod evm;
pub mod leaf;
pub mod ledger;
pub mod merkle;
pub mod narrative;
pub mod note;
pub mod resource;
pub mod store;
pub mod tiles;
pub mod tsa;

/// Errors of this crate. Each names what did not match.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input cannot be put in canonical form.
    #[error("not canonicalizable at byte {offset}: {reason}")]
    Canonical { offset: usize, reason: String },
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
