//! The seal: canonical form, salted commitments, the RFC 6962 Merkle log,
//! signed C2SP checkpoints and proofs. Hashing, proof and checkpoint code is
//! pure (no IO, no async) so verification can run anywhere, offline.

pub mod canonical;
pub mod leaf;
pub mod merkle;
pub mod narrative;
pub mod note;
pub mod resource;

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
    /// A signed note or checkpoint is malformed or its signature is wrong.
    #[error("signed note rejected: {0}")]
    Note(String),
}
