//! The RFC 6962 / RFC 9162 Merkle tree: hashing, proof generation and pure
//! proof verification.
//!
//! Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2: preconditions are
//! checked first, the root is *calculated* from the proof and only then
//! compared with the *claimed* root, and the error says which is which.

use sha2::{Digest, Sha256};

use crate::Error;

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &[u8], right: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: `SHA-256()`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Largest power of two strictly less than `n` (n ≥ 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// An in-memory tree that keeps the hash of every complete, aligned subtree
/// (level k holds the hashes of subtrees of 2^k leaves): the same nodes the
/// tlog-tiles layout stores, so proofs cost O(log n) hashes.
#[derive(Debug, Default, Clone)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> MemoryTree {
        MemoryTree::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends a leaf hash; completes the parents it finishes.
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut level = 0;
        while self.levels[level].len().is_multiple_of(2) {
            let n = self.levels[level].len();
            let parent = node_hash(&self.levels[level][n - 2], &self.levels[level][n - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
    }

    /// Hash of a complete, aligned subtree, if stored: level `k`, index `i`.
    pub fn stored(&self, level: usize, index: u64) -> Option<Hash> {
        self.levels
            .get(level)?
            .get(usize::try_from(index).ok()?)
            .copied()
    }

    /// `MTH(D[start:end])`: the hash of the leaves `start..end`.
    pub fn range_hash(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        if n.is_power_of_two() && start.is_multiple_of(n) {
            if let Some(h) = self.stored(n.trailing_zeros() as usize, start / n) {
                return h;
            }
        }
        if n == 0 {
            return empty_root();
        }
        let k = split_point(n);
        node_hash(
            &self.range_hash(start, start + k),
            &self.range_hash(start + k, end),
        )
    }

    /// Root of the tree's first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, Error> {
        if size > self.size() {
            return Err(Error::Proof(format!(
                "tree size {size} exceeds {}",
                self.size()
            )));
        }
        Ok(self.range_hash(0, size))
    }

    /// Inclusion proof of leaf `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, Error> {
        if index >= size || size > self.size() {
            return Err(Error::Proof(format!("no leaf {index} in a tree of {size}")));
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    fn path(&self, m: u64, start: u64, end: u64, proof: &mut Vec<Hash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split_point(n);
        if m - start < k {
            self.path(m, start, start + k, proof);
            proof.push(self.range_hash(start + k, end));
        } else {
            self.path(m, start + k, end, proof);
            proof.push(self.range_hash(start, start + k));
        }
    }

    /// Consistency proof between the trees of `size1` and `size2` leaves.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, Error> {
        if size1 > size2 || size2 > self.size() {
            return Err(Error::Proof(format!(
                "no consistency proof from {size1} to {size2}"
            )));
        }
        let mut proof = Vec::new();
        if size1 > 0 && size1 < size2 {
            self.subproof(size1, 0, size2, true, &mut proof);
        }
        Ok(proof)
    }

    fn subproof(&self, m: u64, start: u64, end: u64, complete: bool, proof: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !complete {
                proof.push(self.range_hash(start, end));
            }
            return;
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, start, start + k, complete, proof);
            proof.push(self.range_hash(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, proof);
            proof.push(self.range_hash(start, start + k));
        }
    }
}

fn mismatch(what: &str, calculated: &[u8], claimed: &[u8]) -> Error {
    Error::Proof(format!(
        "{what}: calculated {} but the claimed root is {}",
        hex::encode(calculated),
        hex::encode(claimed)
    ))
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of `size` leaves
/// whose root is `root`. Pure. Roots and the leaf hash are byte strings
/// compared exactly (a claimed root of the wrong length simply never
/// matches).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[Hash],
    root: &[u8],
) -> Result<(), Error> {
    let calculated = root_from_inclusion(index, size, leaf_hash, proof)?;
    if calculated.as_slice() != root {
        return Err(mismatch("inclusion proof", &calculated, root));
    }
    Ok(())
}

/// The root an inclusion proof implies (RFC 9162 §2.1.3.2).
pub fn root_from_inclusion(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[Hash],
) -> Result<Vec<u8>, Error> {
    if index >= size {
        return Err(Error::Proof(format!(
            "leaf index {index} is not below tree size {size}"
        )));
    }
    if leaf_hash.len() != 32 {
        return Err(Error::Proof(format!(
            "leaf hash has {} bytes, not 32",
            leaf_hash.len()
        )));
    }
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = leaf_hash.to_vec();
    for p in proof {
        if s_n == 0 {
            return Err(Error::Proof("inclusion proof is too long".into()));
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r).to_vec();
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p).to_vec();
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(Error::Proof("inclusion proof is too short".into()));
    }
    Ok(r)
}

/// Verifies that the tree of `size2` leaves with `root2` extends the tree of
/// `size1` leaves with `root1` (RFC 9162 §2.1.4.2). Pure.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &[u8],
    root2: &[u8],
    proof: &[Hash],
) -> Result<(), Error> {
    if size2 < size1 {
        return Err(Error::Proof(format!(
            "size2 {size2} is below size1 {size1}"
        )));
    }
    if size1 == 0 {
        // Every tree extends the empty tree; a "proof" of it proves nothing
        // and usually means the caller mixed up its sizes.
        return Err(Error::Proof(
            "consistency with the empty tree is meaningless".into(),
        ));
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(Error::Proof("equal sizes need an empty proof".into()));
        }
        if root1 != root2 {
            return Err(mismatch("equal-size consistency", root1, root2));
        }
        return Ok(());
    }
    if proof.is_empty() {
        return Err(Error::Proof("empty consistency proof".into()));
    }
    let mut path: Vec<&[u8]> = Vec::with_capacity(proof.len() + 1);
    if size1.is_power_of_two() {
        path.push(root1);
    }
    path.extend(proof.iter().map(|h| h.as_slice()));
    let mut f_n = size1 - 1;
    let mut s_n = size2 - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut f_r = path[0].to_vec();
    let mut s_r = path[0].to_vec();
    for c in &path[1..] {
        if s_n == 0 {
            return Err(Error::Proof("consistency proof is too long".into()));
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r).to_vec();
            s_r = node_hash(c, &s_r).to_vec();
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            s_r = node_hash(&s_r, c).to_vec();
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(Error::Proof("consistency proof is too short".into()));
    }
    if f_r != root1 {
        return Err(mismatch("consistency proof (old tree)", &f_r, root1));
    }
    if s_r != root2 {
        return Err(mismatch("consistency proof (new tree)", &s_r, root2));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference MTH straight from RFC 6962 §2.1, for cross-checking.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn proofs_round_trip_for_every_index_and_size_up_to_40() {
        let leaves: Vec<Hash> = (0u32..40).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut tree = MemoryTree::new();
        for leaf in &leaves {
            tree.push(*leaf);
        }
        for size in 1..=40u64 {
            let root = tree.root(size).unwrap();
            assert_eq!(
                root,
                reference_root(&leaves[..size as usize]),
                "size {size}"
            );
            for index in 0..size {
                let proof = tree.inclusion_proof(index, size).unwrap();
                verify_inclusion(index, size, &leaves[index as usize], &proof, &root).unwrap();
                let wrong = leaf_hash(b"other");
                assert!(verify_inclusion(index, size, &wrong, &proof, &root).is_err());
            }
            for size1 in 1..=size {
                let proof = tree.consistency_proof(size1, size).unwrap();
                let root1 = tree.root(size1).unwrap();
                verify_consistency(size1, size, &root1, &root, &proof).unwrap();
            }
        }
    }
}
