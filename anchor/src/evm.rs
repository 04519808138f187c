//! EVM chain anchoring, the pure parts: the versioned payload a checkpoint
//! becomes, signing an EIP-1559 transaction that carries it (RLP,
//! Keccak-256, secp256k1), and checking a fetched transaction against a
//! receipt. The JSON-RPC exchange is the gateway's.
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

/// The first 6 bytes of a payload: `INKAN` and the version byte `0x01`.
pub const PAYLOAD_MAGIC: &[u8; 6] = b"INKAN\x01";
/// Length of a v1 payload in bytes.
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
    /// The chain the transaction is valid on (EIP-155 chain id).
    pub chain_id: u64,
    /// The sender's count of earlier transactions (each nonce is used once).
    pub nonce: u64,
    /// Tip per gas to the block producer, in wei.
    pub max_priority_fee_per_gas: u128,
    /// Most paid per gas, base fee and tip together, in wei.
    pub max_fee_per_gas: u128,
    /// Most gas the transaction may use.
    pub gas_limit: u64,
    /// Recipient address (for anchoring, the sender's own).
    pub to: [u8; 20],
    /// Wei transferred (0 for anchoring).
    pub value: u128,
    /// Input data (for anchoring, the [`payload`]).
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
    /// The chain the signature is bound to (EIP-155).
    pub chain_id: u64,
    /// The sender's count of earlier transactions (each nonce is used once).
    pub nonce: u64,
    /// Price per gas, in wei.
    pub gas_price: u128,
    /// Most gas the transaction may use.
    pub gas_limit: u64,
    /// Recipient address (for anchoring, the sender's own).
    pub to: [u8; 20],
    /// Wei transferred (0 for anchoring).
    pub value: u128,
    /// Input data (for anchoring, the [`payload`]).
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

/// Why a transaction on chain does not back an `evm` receipt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptMismatch {
    /// The receipt has no `from`.
    #[error("the receipt names no sender")]
    NoSender,
    /// The receipt has no `chainId`.
    #[error("the receipt names no chain id")]
    NoChainId,
    /// A member of the receipt has the wrong form.
    #[error("the receipt's {field} is malformed: {value}")]
    MalformedReceipt {
        /// The receipt's JSON member (`chainId`, `from`).
        field: &'static str,
        /// Its value, as JSON text.
        value: String,
    },
    /// A member of the fetched transaction has the wrong form.
    #[error("the transaction's {field} is malformed: {value}")]
    MalformedTransaction {
        /// The transaction's JSON member (`chainId`, `v`, `from`, `input`).
        field: &'static str,
        /// Its value, as JSON text.
        value: String,
    },
    /// The node that was asked is on another chain than the receipt's.
    #[error("the node is on chain {node}, the receipt is for chain {receipt}")]
    NodeChain {
        /// The node's chain id.
        node: u128,
        /// The receipt's chain id.
        receipt: u64,
    },
    /// The transaction names no chain: no `chainId` and no EIP-155 `v` (a
    /// legacy `v` of 27 or 28 is valid on every chain, so it proves none).
    #[error("the transaction is bound to no chain (neither chainId nor an EIP-155 signature)")]
    UnboundTransaction,
    /// The transaction is signed for another chain than the receipt's.
    #[error("the transaction is for chain {transaction}, the receipt for chain {receipt}")]
    TransactionChain {
        /// The transaction's chain id (`chainId`, or from its EIP-155 `v`).
        transaction: u128,
        /// The receipt's chain id.
        receipt: u64,
    },
    /// The transaction was not sent by the account the receipt names.
    #[error("the transaction was sent by 0x{transaction}, the receipt names 0x{receipt}")]
    Sender {
        /// The transaction's sender address, lower-case hex without `0x`.
        transaction: String,
        /// The receipt's sender address, lower-case hex without `0x`.
        receipt: String,
    },
    /// The transaction is not sent to its sender (the anchoring account).
    #[error("the transaction is sent to {to}, not to the anchoring account itself")]
    Recipient {
        /// The transaction's `to`, as JSON text (`null` when absent).
        to: String,
    },
    /// The transaction's input is not the payload of this checkpoint.
    #[error("the transaction does not carry this checkpoint")]
    Payload,
    /// The checkpoint note cannot be parsed (the parse error).
    #[error("the checkpoint is malformed: {0}")]
    Checkpoint(String),
}

/// What an `evm` receipt says about its transaction: the chain it is on and
/// the account that sent it (`chainId`, `from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptClaims {
    /// The receipt's `chainId`.
    pub chain_id: u64,
    /// The receipt's `from`: the anchoring account's address.
    pub sender: [u8; 20],
}

impl ReceiptClaims {
    /// From a receipt as the gateway writes it. Receipts have always named
    /// their sender; one without is refused rather than checked less.
    pub fn from_receipt(receipt: &serde_json::Value) -> Result<ReceiptClaims, ReceiptMismatch> {
        let chain_id = match &receipt["chainId"] {
            serde_json::Value::Null => return Err(ReceiptMismatch::NoChainId),
            value => value
                .as_u64()
                .ok_or_else(|| ReceiptMismatch::MalformedReceipt {
                    field: "chainId",
                    value: value.to_string(),
                })?,
        };
        let sender = match &receipt["from"] {
            serde_json::Value::Null => return Err(ReceiptMismatch::NoSender),
            value => value.as_str().and_then(parse_address).ok_or_else(|| {
                ReceiptMismatch::MalformedReceipt {
                    field: "from",
                    value: value.to_string(),
                }
            })?,
        };
        Ok(ReceiptClaims { chain_id, sender })
    }

    /// Checks a transaction as `eth_getTransactionByHash` returns it, from a
    /// node on chain `node_chain_id`: same chain as the receipt (the node's
    /// and the transaction's own, `chainId` or its EIP-155 `v`), sent by
    /// the receipt's sender to itself, carrying the payload of `note`.
    pub fn check_transaction(
        &self,
        transaction: &serde_json::Value,
        node_chain_id: u128,
        note: &str,
    ) -> Result<(), ReceiptMismatch> {
        if node_chain_id != u128::from(self.chain_id) {
            return Err(ReceiptMismatch::NodeChain {
                node: node_chain_id,
                receipt: self.chain_id,
            });
        }
        let transaction_chain = transaction_chain_id(transaction)?;
        if transaction_chain != u128::from(self.chain_id) {
            return Err(ReceiptMismatch::TransactionChain {
                transaction: transaction_chain,
                receipt: self.chain_id,
            });
        }
        let from = address_field(transaction, "from")?;
        if from != self.sender {
            return Err(ReceiptMismatch::Sender {
                transaction: hex::encode(from),
                receipt: hex::encode(self.sender),
            });
        }
        // The anchoring account sends to itself (see the module docs).
        if transaction["to"]
            .as_str()
            .and_then(parse_address)
            .is_none_or(|to| to != self.sender)
        {
            return Err(ReceiptMismatch::Recipient {
                to: transaction["to"].to_string(),
            });
        }
        let input = transaction["input"]
            .as_str()
            .and_then(|text| hex::decode(strip_0x(text)).ok())
            .ok_or_else(|| ReceiptMismatch::MalformedTransaction {
                field: "input",
                value: transaction["input"].to_string(),
            })?;
        if !payload_matches(&input, note).map_err(|e| ReceiptMismatch::Checkpoint(e.to_string()))? {
            return Err(ReceiptMismatch::Payload);
        }
        Ok(())
    }
}

/// The chain a transaction is signed for: its `chainId` (typed
/// transactions, and legacy ones on nodes that report it), else from an
/// EIP-155 legacy `v` (chain id * 2 + 35 or 36). A pre-EIP-155 legacy
/// transaction (`v` 27 or 28) is valid on every chain, so it names none.
fn transaction_chain_id(transaction: &serde_json::Value) -> Result<u128, ReceiptMismatch> {
    if let Some(chain_id) = quantity_field(transaction, "chainId")? {
        return Ok(chain_id);
    }
    match quantity_field(transaction, "v")? {
        Some(v) if v >= 35 => Ok((v - 35) / 2),
        _ => Err(ReceiptMismatch::UnboundTransaction),
    }
}

/// A hex quantity field (`"0x539"`), or None when absent.
fn quantity_field(
    transaction: &serde_json::Value,
    field: &'static str,
) -> Result<Option<u128>, ReceiptMismatch> {
    match &transaction[field] {
        serde_json::Value::Null => Ok(None),
        value => value
            .as_str()
            .and_then(|text| u128::from_str_radix(strip_0x(text), 16).ok())
            .map(Some)
            .ok_or_else(|| ReceiptMismatch::MalformedTransaction {
                field,
                value: value.to_string(),
            }),
    }
}

fn address_field(
    transaction: &serde_json::Value,
    field: &'static str,
) -> Result<[u8; 20], ReceiptMismatch> {
    transaction[field]
        .as_str()
        .and_then(parse_address)
        .ok_or_else(|| ReceiptMismatch::MalformedTransaction {
            field,
            value: transaction[field].to_string(),
        })
}

/// A 20-byte address in hex, `0x` prefixed or not, any letter case (EIP-55
/// checksummed addresses are mixed case).
fn parse_address(text: &str) -> Option<[u8; 20]> {
    hex::decode(strip_0x(text)).ok()?.try_into().ok()
}

fn strip_0x(text: &str) -> &str {
    text.strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text)
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

    const NOTE: &str = "example.jp/inkan\n7\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\n\u{2014} example.jp/inkan sig\n";
    /// ganache --wallet.deterministic accounts 0 and 1.
    const SENDER: &str = "0x90f8bf6a479f320ead074411a4b0e7944ea8c9c1";
    const SENDER_EIP55: &str = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1";
    const OTHER: &str = "0xffcf8fdee72ac11b5c542428b35eef5769c409f0";

    /// A receipt as the gateway writes it (chain 1337), with `changes`
    /// (a null value removes the field).
    fn receipt(changes: &[(&str, serde_json::Value)]) -> serde_json::Value {
        with(
            serde_json::json!({
                "chainId": 1337, "txHash": "0xab", "blockNumber": 5, "blockHash": "0xcd",
                "from": SENDER, "confirmations": 1, "payloadVersion": 1,
            }),
            changes,
        )
    }

    /// The anchoring transaction as ganache returns it (EIP-1559), with
    /// `changes`.
    fn transaction(changes: &[(&str, serde_json::Value)]) -> serde_json::Value {
        let input = format!("0x{}", hex::encode(payload(NOTE).unwrap()));
        with(
            serde_json::json!({
                "type": "0x2", "chainId": "0x539", "from": SENDER, "to": SENDER,
                "value": "0x0", "input": input, "v": "0x1",
            }),
            changes,
        )
    }

    fn with(
        mut value: serde_json::Value,
        changes: &[(&str, serde_json::Value)],
    ) -> serde_json::Value {
        for (field, changed) in changes {
            match changed {
                serde_json::Value::Null => value.as_object_mut().unwrap().remove(*field),
                _ => value
                    .as_object_mut()
                    .unwrap()
                    .insert(field.to_string(), changed.clone()),
            };
        }
        value
    }

    /// What a line shows, the transaction, the receipt, the node's chain id
    /// and the outcome.
    type Case<'a> = (
        &'a str,
        serde_json::Value,
        serde_json::Value,
        u128,
        Result<(), ReceiptMismatch>,
    );

    /// Each refused line differs from a good transaction or receipt in one
    /// respect; without the check that names it, it is accepted.
    #[test]
    fn transaction_against_receipt_table() {
        use serde_json::{json, Value::Null};
        use ReceiptMismatch::*;
        let other_payload = format!(
            "0x{}",
            hex::encode(payload(&NOTE.replace("\n7\n", "\n8\n")).unwrap())
        );
        #[rustfmt::skip]
        let cases: Vec<Case<'_>> = vec![
            ("good: EIP-1559",                      transaction(&[]),                                             receipt(&[]), 1337, Ok(())),
            ("good: legacy EIP-155, chain in v",    transaction(&[("type", json!("0x0")), ("chainId", Null), ("v", json!("0xa96"))]), receipt(&[]), 1337, Ok(())),
            ("good: EIP-55 checksummed addresses",  transaction(&[("from", json!(SENDER_EIP55)), ("to", json!(SENDER_EIP55))]), receipt(&[]), 1337, Ok(())),
            ("receipt without sender",              transaction(&[]),                                             receipt(&[("from", Null)]), 1337, Err(NoSender)),
            ("receipt without chain id",            transaction(&[]),                                             receipt(&[("chainId", Null)]), 1337, Err(NoChainId)),
            ("sent by another account",             transaction(&[("from", json!(OTHER))]),                       receipt(&[]), 1337, Err(Sender { transaction: OTHER[2..].into(), receipt: SENDER[2..].into() })),
            ("node on another chain",               transaction(&[]),                                             receipt(&[]), 1, Err(NodeChain { node: 1, receipt: 1337 })),
            ("typed transaction for another chain", transaction(&[("chainId", json!("0x1"))]),                    receipt(&[]), 1337, Err(TransactionChain { transaction: 1, receipt: 1337 })),
            ("legacy transaction for another chain", transaction(&[("chainId", Null), ("v", json!("0x25"))]),     receipt(&[]), 1337, Err(TransactionChain { transaction: 1, receipt: 1337 })),
            ("legacy transaction without EIP-155",  transaction(&[("chainId", Null), ("v", json!("0x1b"))]),      receipt(&[]), 1337, Err(UnboundTransaction)),
            ("sent to another account",             transaction(&[("to", json!(OTHER))]),                         receipt(&[]), 1337, Err(Recipient { to: format!("\"{OTHER}\"") })),
            ("a contract creation (no to)",         transaction(&[("to", Null)]),                                 receipt(&[]), 1337, Err(Recipient { to: "null".into() })),
            ("another checkpoint's payload",        transaction(&[("input", json!(other_payload))]),              receipt(&[]), 1337, Err(Payload)),
        ];
        let mut wrong = Vec::new();
        for (what, transaction, receipt, node_chain_id, expected) in cases {
            let got = ReceiptClaims::from_receipt(&receipt)
                .and_then(|claims| claims.check_transaction(&transaction, node_chain_id, NOTE));
            if got != expected {
                wrong.push(format!("{what}: got {got:?}, want {expected:?}"));
            }
        }
        assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
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
