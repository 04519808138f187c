//! EVM chain anchoring, the pure parts: the versioned payload a checkpoint
//! becomes, and signing an EIP-1559 transaction that carries it (RLP,
//! Keccak-256, secp256k1). The JSON-RPC exchange is the gateway's.
//!
//! **Payload v1** (78 bytes, the transaction's `data`):
//!
//! | bytes | what |
//! |---|---|
//! | 0..6 | `INKAN` followed by the version byte `0x01` |
//! | 6..38 | SHA-256 of the log's origin line (UTF-8) |
//! | 38..46 | tree size, unsigned 64-bit big-endian |
//! | 46..78 | the Merkle root |
//!
//! Only these hashes go on chain, never health data. The transaction is
//! sent to the anchoring account itself with value 0.

use k256::ecdsa::SigningKey;
use sha2::{Digest, Sha256};
use sha3::Keccak256;

use crate::note::Checkpoint;
use crate::Error;

pub const PAYLOAD_MAGIC: &[u8; 6] = b"INKAN\x01";
pub const PAYLOAD_LEN: usize = 78;

/// The payload anchoring `note` (a signed checkpoint).
pub fn payload(note: &str) -> Result<Vec<u8>, Error> {
    let checkpoint = checkpoint_of(note)?;
    let mut out = Vec::with_capacity(PAYLOAD_LEN);
    out.extend_from_slice(PAYLOAD_MAGIC);
    out.extend_from_slice(&Sha256::digest(checkpoint.origin.as_bytes()));
    out.extend_from_slice(&checkpoint.size.to_be_bytes());
    out.extend_from_slice(&checkpoint.root);
    Ok(out)
}

/// The checkpoint (origin, size, root) of a signed note, unverified.
fn checkpoint_of(note: &str) -> Result<Checkpoint, Error> {
    let body = note
        .split("\n\n")
        .next()
        .ok_or_else(|| Error::Note("empty checkpoint".into()))?;
    Checkpoint::parse(&format!("{body}\n"))
}

/// The Ethereum address of a secp256k1 key.
pub fn address(key: &SigningKey) -> [u8; 20] {
    let point = key.verifying_key().to_encoded_point(false);
    let hash = Keccak256::digest(&point.as_bytes()[1..]);
    let mut address = [0u8; 20];
    address.copy_from_slice(&hash[12..]);
    address
}

/// An EIP-1559 (type 2) transaction with an empty access list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub chain_id: u64,
    pub nonce: u64,
    pub max_priority_fee_per_gas: u128,
    pub max_fee_per_gas: u128,
    pub gas_limit: u64,
    pub to: [u8; 20],
    pub value: u128,
    pub data: Vec<u8>,
}

impl Transaction {
    /// Signs it; returns the raw transaction (for `eth_sendRawTransaction`)
    /// and its hash.
    pub fn sign(&self, key: &SigningKey) -> Result<(Vec<u8>, [u8; 32]), Error> {
        let fields = self.fields();
        let unsigned = typed(&rlp_list(&fields));
        let digest = Keccak256::digest(&unsigned);
        let (signature, recovery) = key
            .sign_prehash_recoverable(&digest)
            .map_err(|e| Error::Anchor(format!("cannot sign the transaction: {e}")))?;
        let (r, s) = signature.split_bytes();
        let mut signed = fields;
        signed.push(rlp_uint(u128::from(recovery.is_y_odd())));
        signed.push(rlp_bytes(strip_zeros(&r)));
        signed.push(rlp_bytes(strip_zeros(&s)));
        let raw = typed(&rlp_list(&signed));
        let hash: [u8; 32] = Keccak256::digest(&raw).into();
        Ok((raw, hash))
    }

    fn fields(&self) -> Vec<Vec<u8>> {
        vec![
            rlp_uint(u128::from(self.chain_id)),
            rlp_uint(u128::from(self.nonce)),
            rlp_uint(self.max_priority_fee_per_gas),
            rlp_uint(self.max_fee_per_gas),
            rlp_uint(u128::from(self.gas_limit)),
            rlp_bytes(&self.to),
            rlp_uint(self.value),
            rlp_bytes(&self.data),
            rlp_list(&[]), // access list
        ]
    }
}

/// A legacy (EIP-155) transaction, for chains without a base fee
/// (before London, or a permissioned network configured without it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyTransaction {
    pub chain_id: u64,
    pub nonce: u64,
    pub gas_price: u128,
    pub gas_limit: u64,
    pub to: [u8; 20],
    pub value: u128,
    pub data: Vec<u8>,
}

impl LegacyTransaction {
    /// Signs it with EIP-155 replay protection; the raw transaction and
    /// its hash.
    pub fn sign(&self, key: &SigningKey) -> Result<(Vec<u8>, [u8; 32]), Error> {
        let mut fields = vec![
            rlp_uint(u128::from(self.nonce)),
            rlp_uint(self.gas_price),
            rlp_uint(u128::from(self.gas_limit)),
            rlp_bytes(&self.to),
            rlp_uint(self.value),
            rlp_bytes(&self.data),
        ];
        let mut unsigned = fields.clone();
        unsigned.push(rlp_uint(u128::from(self.chain_id)));
        unsigned.push(rlp_uint(0));
        unsigned.push(rlp_uint(0));
        let digest = Keccak256::digest(rlp_list(&unsigned));
        let (signature, recovery) = key
            .sign_prehash_recoverable(&digest)
            .map_err(|e| Error::Anchor(format!("cannot sign the transaction: {e}")))?;
        let (r, s) = signature.split_bytes();
        let v = u128::from(self.chain_id) * 2 + 35 + u128::from(recovery.is_y_odd());
        fields.push(rlp_uint(v));
        fields.push(rlp_bytes(strip_zeros(&r)));
        fields.push(rlp_bytes(strip_zeros(&s)));
        let raw = rlp_list(&fields);
        let hash: [u8; 32] = Keccak256::digest(&raw).into();
        Ok((raw, hash))
    }
}

/// Checks that `data` (a transaction's input) is the v1 payload of `note`.
pub fn payload_matches(data: &[u8], note: &str) -> Result<bool, Error> {
    Ok(data == payload(note)?.as_slice())
}

fn typed(rlp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rlp.len() + 1);
    out.push(0x02);
    out.extend_from_slice(rlp);
    out
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn rlp_uint(value: u128) -> Vec<u8> {
    rlp_bytes(strip_zeros(&value.to_be_bytes()))
}

fn rlp_bytes(bytes: &[u8]) -> Vec<u8> {
    if bytes.len() == 1 && bytes[0] < 0x80 {
        return bytes.to_vec();
    }
    let mut out = rlp_length(bytes.len(), 0x80);
    out.extend_from_slice(bytes);
    out
}

fn rlp_list(items: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = items.concat();
    let mut out = rlp_length(body.len(), 0xC0);
    out.extend_from_slice(&body);
    out
}

fn rlp_length(len: usize, offset: u8) -> Vec<u8> {
    if len < 56 {
        return vec![offset + len as u8];
    }
    let len_bytes = strip_zeros(&len.to_be_bytes()).to_vec();
    let mut out = vec![offset + 55 + len_bytes.len() as u8];
    out.extend_from_slice(&len_bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlp_table() {
        // Vectors from the Ethereum RLP specification.
        let long = format!("b838{}", "61".repeat(56));
        #[rustfmt::skip]
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (rlp_bytes(b"dog"),                       "83646f67"),
            (rlp_list(&[rlp_bytes(b"cat"), rlp_bytes(b"dog")]), "c88363617483646f67"),
            (rlp_bytes(b""),                          "80"),
            (rlp_list(&[]),                           "c0"),
            (rlp_uint(0),                             "80"),
            (rlp_uint(15),                            "0f"),
            (rlp_uint(1024),                          "820400"),
            (rlp_bytes(&[b'a'; 56]),                  &long),
        ];
        for (got, want) in cases {
            assert_eq!(hex::encode(got), want);
        }
    }

    #[test]
    fn ganache_deterministic_key_has_its_known_address() {
        // ganache --wallet.deterministic, account 0.
        let key = SigningKey::from_slice(
            &hex::decode("4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            hex::encode(address(&key)),
            "90f8bf6a479f320ead074411a4b0e7944ea8c9c1"
        );
    }

    #[test]
    fn payload_layout() {
        let note = "example.jp/inkan\n7\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\n\u{2014} example.jp/inkan sig\n";
        let data = payload(note).unwrap();
        assert_eq!(data.len(), PAYLOAD_LEN);
        assert_eq!(&data[..6], PAYLOAD_MAGIC);
        assert_eq!(&data[6..38], Sha256::digest(b"example.jp/inkan").as_slice());
        assert_eq!(&data[38..46], &7u64.to_be_bytes());
        assert_eq!(&data[46..], (0u8..32).collect::<Vec<u8>>().as_slice());
        assert!(payload_matches(&data, note).unwrap());
        assert!(!payload_matches(&data, &note.replace("\n7\n", "\n8\n")).unwrap());
    }
}
