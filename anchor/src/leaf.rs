//! Salted commitments and the leaf encoding (docs/ledger-format.md). Pure.
//!
//! ```text
//! leaf data (35 bytes) = version (0x01) ‖ kind ‖ flags ‖ commitment (32)
//!   kind:   0x01 resource version, 0x02 deletion tombstone,
//!           0x03 access record (a BALP AuditEvent the gateway wrote)
//!   flags:  bit 0 = backfilled (first seen in the upstream, not written
//!           through the gateway); other bits 0
//! commitment (version)   = SHA-256(salt ‖ canonical bytes)
//! commitment (tombstone) = SHA-256(salt ‖ "inkan-tombstone-v1\n" ‖ type ‖ "/" ‖ id ‖ "/" ‖ versionId)
//! commitment (access)    = SHA-256(salt ‖ "inkan-access-v1\n" ‖ canonical bytes without `id` and `meta`)
//! salt: 32 fresh random bytes per leaf, never published in tiles
//! ```
//!
//! Without its salt a leaf reveals nothing about the resource, not even
//! which resource it is: tiles and proof paths can be shown to outsiders.

use sha2::{Digest, Sha256};

use crate::merkle::Hash;
use crate::Error;

/// The encoding version, the first byte of leaf data.
pub const LEAF_VERSION: u8 = 0x01;
/// Length of leaf data in bytes.
pub const LEAF_LEN: usize = 35;
/// Length of a salt in bytes.
pub const SALT_LEN: usize = 32;

/// A per-leaf random salt.
pub type Salt = [u8; SALT_LEN];

/// A fresh random salt from the OS.
pub fn fresh_salt() -> Salt {
    use rand::RngCore;
    let mut salt = [0u8; SALT_LEN];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    salt
}

/// What a leaf records (its `kind` byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    /// A resource version: the commitment is over the salt and the
    /// canonical bytes.
    Version = 0x01,
    /// A deletion: the commitment is over the salt and the deleted
    /// version's `type/id/versionId`.
    Tombstone = 0x02,
    /// An access record: an AuditEvent the gateway wrote about a request
    /// it served. The commitment is over the salt, a domain tag and the
    /// canonical bytes without `id` and `meta`, which the audit
    /// repository assigns.
    Access = 0x03,
}

/// A decoded leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    /// What the leaf records.
    pub kind: LeafKind,
    /// First seen in the upstream (recovery, `inkan backfill`) rather than
    /// written through the gateway (flag bit 0).
    pub backfilled: bool,
    /// The salted commitment ([`commitment`] or [`tombstone_commitment`]).
    pub commitment: Hash,
}

impl Leaf {
    /// The 35-byte leaf data (see the module docs).
    pub fn encode(&self) -> [u8; LEAF_LEN] {
        let mut out = [0u8; LEAF_LEN];
        out[0] = LEAF_VERSION;
        out[1] = self.kind as u8;
        out[2] = u8::from(self.backfilled);
        out[3..].copy_from_slice(&self.commitment);
        out
    }

    /// Parses leaf data; refuses a wrong length, an unknown version or kind,
    /// or any flag bit but bit 0.
    pub fn decode(data: &[u8]) -> Result<Leaf, Error> {
        if data.len() != LEAF_LEN {
            return Err(Error::Leaf(format!(
                "leaf has {} bytes, not {LEAF_LEN}",
                data.len()
            )));
        }
        if data[0] != LEAF_VERSION {
            return Err(Error::Leaf(format!("unknown leaf version {}", data[0])));
        }
        let kind = match data[1] {
            0x01 => LeafKind::Version,
            0x02 => LeafKind::Tombstone,
            0x03 => LeafKind::Access,
            other => return Err(Error::Leaf(format!("unknown leaf kind {other}"))),
        };
        if data[2] & !1 != 0 {
            return Err(Error::Leaf(format!("unknown leaf flags {:#04x}", data[2])));
        }
        let mut commitment = [0u8; 32];
        commitment.copy_from_slice(&data[3..]);
        Ok(Leaf {
            kind,
            backfilled: data[2] & 1 == 1,
            commitment,
        })
    }
}

/// `SHA-256(salt ‖ canonical)`.
pub fn commitment(salt: &Salt, canonical: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(canonical);
    h.finalize().into()
}

/// The unsalted content digest `SHA-256(canonical)`, kept only in the
/// private index so a holder of the resource can find its entry.
pub fn content_digest(canonical: &[u8]) -> Hash {
    Sha256::digest(canonical).into()
}

/// The commitment of a deletion of `type/id` at `version_id`.
pub fn tombstone_commitment(salt: &Salt, resource_type: &str, id: &str, version_id: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(b"inkan-tombstone-v1\n");
    h.update(resource_type.as_bytes());
    h.update(b"/");
    h.update(id.as_bytes());
    h.update(b"/");
    h.update(version_id.as_bytes());
    h.finalize().into()
}

/// The commitment of an access record whose canonical form (without
/// `meta`) is `canonical`. The domain tag keeps an access record from ever
/// verifying as a resource version with the same bytes, and back.
pub fn access_commitment(salt: &Salt, canonical: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(b"inkan-access-v1\n");
    h.update(canonical);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_round_trips_and_rejects_garbage() {
        let leaf = Leaf {
            kind: LeafKind::Tombstone,
            backfilled: true,
            commitment: [9u8; 32],
        };
        assert_eq!(Leaf::decode(&leaf.encode()).unwrap(), leaf);
        let mut bad = leaf.encode();
        bad[0] = 2;
        assert!(Leaf::decode(&bad).is_err());
        let mut bad = leaf.encode();
        bad[2] = 4;
        assert!(Leaf::decode(&bad).is_err());
        assert!(Leaf::decode(&bad[..34]).is_err());
    }

    #[test]
    fn same_content_different_salt_gives_unlinkable_commitments() {
        let canonical = br#"{"id":"1","resourceType":"Patient"}"#;
        let a = commitment(&fresh_salt(), canonical);
        let b = commitment(&fresh_salt(), canonical);
        assert_ne!(a, b);
        assert_ne!(a, content_digest(canonical));
    }

    #[test]
    fn an_access_commitment_never_equals_a_version_commitment_of_the_same_bytes() {
        let salt = fresh_salt();
        let canonical = br#"{"id":"1","resourceType":"AuditEvent"}"#;
        assert_ne!(
            access_commitment(&salt, canonical),
            commitment(&salt, canonical)
        );
        let leaf = Leaf {
            kind: LeafKind::Access,
            backfilled: false,
            commitment: access_commitment(&salt, canonical),
        };
        assert_eq!(Leaf::decode(&leaf.encode()).unwrap(), leaf);
    }
}
