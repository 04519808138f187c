//! An EVM chain reached by JSON-RPC: anchoring transactions signed here,
//! sent, followed until confirmed (replaced when stuck, re-sent when
//! reorganized away), and receipts checked on chain.

use std::io::Read;
use std::time::Duration;

use super::http::describe_http_error;
use super::AnchorBackend;
use crate::store::StoredCheckpoint;
use crate::Error;

/// Why an exchange with an EVM chain did not give a receipt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ChainError {
    /// The JSON-RPC endpoint could not be reached, or answered an error
    /// or something that is not JSON-RPC.
    #[error("{0}")]
    Rpc(String),
    /// The chain contradicts the anchoring (wrong chain, not mined yet,
    /// reverted, not the receipt's transaction).
    #[error("{0}")]
    Refused(String),
    /// The pending-transaction file could not be kept.
    #[error("the pending transaction file: {0}")]
    State(#[from] std::io::Error),
    #[error("the pending transaction file: {0}")]
    StateFormat(#[from] serde_json::Error),
    /// The configured address is not hex.
    #[error("the account address: {0}")]
    Address(#[from] hex::FromHexError),
    /// Building or signing the transaction failed.
    #[error(transparent)]
    Transaction(#[from] Error),
}

/// An EVM chain reached by JSON-RPC: one EIP-1559 transaction per
/// anchoring, carrying the checkpoint's payload (ledger::evm), signed
/// locally, sent to the account itself.
///
/// Nonces come from the node (`pending` count) at each submission; the one
/// transaction in flight is remembered in `<ledger dir>/evm-pending.json`,
/// so a restart waits for it instead of sending a duplicate, and a
/// transaction that disappears (dropped, or reorganized away before its
/// confirmations) is sent again, never silently lost.
pub struct EvmAnchor {
    rpc_url: String,
    chain_id: u64,
    key: k256::ecdsa::SigningKey,
    address: String,
    confirmations: u64,
    interval: Duration,
    timeout: Duration,
    max_fee_wei: u128,
    /// How long a sent transaction may sit unmined before it is replaced.
    replace_after: Duration,
    pending_file: std::path::PathBuf,
    agent: ureq::Agent,
}

impl std::fmt::Debug for EvmAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmAnchor")
            .field("rpc_url", &super::redact_url(&self.rpc_url))
            .field("chain_id", &self.chain_id)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// How to reach an EVM chain; the gateway builds it from `[anchors.evm]`.
#[derive(Debug)]
pub struct EvmOptions {
    /// The node's JSON-RPC URL (may carry an API key: redacted in messages).
    pub rpc_url: String,
    /// The chain the node must be on (EIP-155).
    pub chain_id: u64,
    /// The account that signs (and receives) anchoring transactions.
    pub key: k256::ecdsa::SigningKey,
    /// Blocks on top of the transaction's before its receipt counts (at
    /// least 1).
    pub confirmations: u64,
    /// The least time between two anchorings.
    pub interval: Duration,
    /// Time one anchoring may wait for its transaction.
    pub timeout: Duration,
    /// The most it may offer per gas, in wei.
    pub max_fee_wei: u128,
    /// Where the transaction in flight is remembered across restarts.
    pub pending_file: std::path::PathBuf,
}

impl EvmAnchor {
    /// A backend for the chain `options` describe.
    pub fn new(options: EvmOptions) -> EvmAnchor {
        let address = format!("0x{}", hex::encode(crate::evm::address(&options.key)));
        EvmAnchor {
            rpc_url: options.rpc_url,
            chain_id: options.chain_id,
            key: options.key,
            address,
            confirmations: options.confirmations.max(1),
            interval: options.interval,
            timeout: options.timeout,
            max_fee_wei: options.max_fee_wei,
            replace_after: options.timeout * 2,
            pending_file: options.pending_file,
            agent: ureq::AgentBuilder::new()
                .timeout(options.timeout.min(Duration::from_secs(10)))
                .build(),
        }
    }
}

/// The transaction in flight, persisted.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PendingTx {
    size: u64,
    tx_hash: String,
    nonce: u64,
    /// Unix seconds when it was sent, to replace it if it sits unmined.
    #[serde(default)]
    sent_at: u64,
    /// The fee it offered (max fee per gas, or gas price), wei.
    #[serde(default)]
    fee: u128,
}

/// Where a transaction stands.
enum TxState {
    /// In a block with enough blocks on top.
    Confirmed {
        block_number: u64,
        block_hash: String,
    },
    /// In a block, waiting for confirmations.
    Mined { confirmations: u64 },
    /// In a block, but it failed (status 0).
    Reverted,
    /// Known to the node, not mined yet.
    Pending,
    /// Unknown to the node: dropped, or its block was reorganized away.
    Missing,
}

impl EvmAnchor {
    fn rpc(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, ChainError> {
        json_rpc(&self.agent, &self.rpc_url, method, params)
    }

    fn load_pending(&self) -> Option<PendingTx> {
        serde_json::from_slice(&std::fs::read(&self.pending_file).ok()?).ok()
    }

    fn save_pending(&self, pending: Option<&PendingTx>) -> Result<(), ChainError> {
        match pending {
            Some(p) => {
                let tmp = self.pending_file.with_extension("tmp");
                let bytes = serde_json::to_vec(p)?;
                std::fs::write(&tmp, bytes)?;
                std::fs::File::open(&tmp).and_then(|f| f.sync_all())?;
                std::fs::rename(&tmp, &self.pending_file).map_err(ChainError::from)
            }
            None => match std::fs::remove_file(&self.pending_file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            },
        }
    }

    fn tx_state(&self, tx_hash: &str) -> Result<TxState, ChainError> {
        let receipt = self.rpc("eth_getTransactionReceipt", serde_json::json!([tx_hash]))?;
        if receipt.is_null() {
            let tx = self.rpc("eth_getTransactionByHash", serde_json::json!([tx_hash]))?;
            return Ok(if tx.is_null() {
                TxState::Missing
            } else {
                TxState::Pending
            });
        }
        let block_number = quantity(&receipt["blockNumber"])? as u64;
        let block_hash = receipt["blockHash"].as_str().unwrap_or_default().to_owned();
        // The block at that height must still be the one holding it.
        let block = self.rpc(
            "eth_getBlockByNumber",
            serde_json::json!([format!("0x{block_number:x}"), false]),
        )?;
        if block["hash"].as_str() != Some(block_hash.as_str()) {
            return Ok(TxState::Missing);
        }
        if receipt["status"].as_str() != Some("0x1") {
            return Ok(TxState::Reverted);
        }
        let latest = quantity(&self.rpc("eth_blockNumber", serde_json::json!([]))?)? as u64;
        let confirmations = latest.saturating_sub(block_number) + 1;
        Ok(if confirmations >= self.confirmations {
            TxState::Confirmed {
                block_number,
                block_hash,
            }
        } else {
            TxState::Mined { confirmations }
        })
    }

    /// Signs and sends the payload of `note`; remembers it as pending. With
    /// `replacing`, reuses its nonce at fees a quarter higher, so a
    /// transaction stuck unmined (underpriced for the mempool) is replaced
    /// rather than left blocking every later nonce.
    fn submit(
        &self,
        size: u64,
        note: &str,
        replacing: Option<&PendingTx>,
    ) -> Result<PendingTx, ChainError> {
        let nonce = match replacing {
            Some(stuck) => stuck.nonce,
            None => quantity(&self.rpc(
                "eth_getTransactionCount",
                serde_json::json!([self.address, "pending"]),
            )?)? as u64,
        };
        let bump = |fee: u128| match replacing {
            Some(stuck) => fee.max(stuck.fee + stuck.fee / 4 + 1).min(self.max_fee_wei),
            None => fee,
        };
        let latest = self.rpc("eth_getBlockByNumber", serde_json::json!(["latest", false]))?;
        let data = crate::evm::payload(note)?;
        let data_hex = format!("0x{}", hex::encode(&data));
        let gas = quantity(&self.rpc(
            "eth_estimateGas",
            serde_json::json!([{"from": self.address, "to": self.address, "data": data_hex}]),
        )?)? as u64;
        let mut to = [0u8; 20];
        to.copy_from_slice(&hex::decode(self.address.trim_start_matches("0x"))?);
        // EIP-1559 where the chain has a base fee; a legacy EIP-155
        // transaction where it has none.
        let offered;
        let (raw, hash) = match quantity(&latest["baseFeePerGas"]) {
            Ok(base_fee) => {
                let priority = self
                    .rpc("eth_maxPriorityFeePerGas", serde_json::json!([]))
                    .and_then(|v| quantity(&v))
                    .unwrap_or(1_000_000_000);
                let max_fee = bump((base_fee * 2 + priority).min(self.max_fee_wei));
                let priority = bump(priority).min(max_fee);
                offered = max_fee;
                crate::evm::Transaction {
                    chain_id: self.chain_id,
                    nonce,
                    max_priority_fee_per_gas: priority,
                    max_fee_per_gas: max_fee,
                    gas_limit: gas + gas / 4,
                    to,
                    value: 0,
                    data,
                }
                .sign(&self.key)
            }
            Err(_) => {
                let gas_price = quantity(&self.rpc("eth_gasPrice", serde_json::json!([]))?)?;
                let gas_price = bump(gas_price.min(self.max_fee_wei));
                offered = gas_price;
                crate::evm::LegacyTransaction {
                    chain_id: self.chain_id,
                    nonce,
                    gas_price,
                    gas_limit: gas + gas / 4,
                    to,
                    value: 0,
                    data,
                }
                .sign(&self.key)
            }
        }?;
        let tx_hash = format!("0x{}", hex::encode(hash));
        let sent = self.rpc(
            "eth_sendRawTransaction",
            serde_json::json!([format!("0x{}", hex::encode(raw))]),
        )?;
        if sent
            .as_str()
            .is_some_and(|h| !h.eq_ignore_ascii_case(&tx_hash))
        {
            return Err(ChainError::Refused(format!(
                "the node names the transaction {sent}, we computed {tx_hash}"
            )));
        }
        let pending = PendingTx {
            size,
            tx_hash,
            nonce,
            sent_at: crate::clock::unix_seconds().unsigned_abs(),
            fee: offered,
        };
        self.save_pending(Some(&pending))?;
        Ok(pending)
    }

    fn receipt(&self, pending: &PendingTx, block_number: u64, block_hash: &str) -> String {
        serde_json::json!({
            "chainId": self.chain_id,
            "txHash": pending.tx_hash,
            "blockNumber": block_number,
            "blockHash": block_hash,
            "from": self.address,
            "confirmations": self.confirmations,
            "payloadVersion": 1,
        })
        .to_string()
    }

    /// The receipt for a confirmed transaction, once the transaction on
    /// chain is shown to back it (crate::evm::ReceiptClaims): a pending
    /// transaction sent under another key or chain id (the configuration
    /// changed since) must not become this anchor's receipt.
    fn checked_receipt(
        &self,
        pending: &PendingTx,
        block_number: u64,
        block_hash: &str,
        node_chain: u128,
        note: &str,
    ) -> Result<String, ChainError> {
        let receipt = self.receipt(pending, block_number, block_hash);
        // The claims of the receipt as written, so what is stored is what was checked.
        let value: serde_json::Value = serde_json::from_str(&receipt)?;
        let claims = crate::evm::ReceiptClaims::from_receipt(&value)
            .map_err(|e| ChainError::Refused(format!("the receipt as written: {e}")))?;
        let tx = self.rpc(
            "eth_getTransactionByHash",
            serde_json::json!([pending.tx_hash]),
        )?;
        if tx.is_null() {
            return Err(ChainError::Refused(format!(
                "transaction {} is no longer on chain; it will be re-submitted",
                pending.tx_hash
            )));
        }
        claims
            .check_transaction(&tx, node_chain, note)
            .map_err(|e| {
                ChainError::Refused(format!(
                    "transaction {} does not back a receipt: {e}; it will be re-submitted",
                    pending.tx_hash
                ))
            })?;
        Ok(receipt)
    }

    fn anchor_note(&self, checkpoint: &StoredCheckpoint) -> Result<String, ChainError> {
        let chain = quantity(&self.rpc("eth_chainId", serde_json::json!([]))?)?;
        if chain != u128::from(self.chain_id) {
            return Err(ChainError::Refused(format!(
                "the node is on chain {chain}, not the configured {}",
                self.chain_id
            )));
        }
        let deadline = std::time::Instant::now() + self.timeout;
        let mut pending = self.load_pending();
        loop {
            let current = match pending.take() {
                Some(p) => p,
                None => self.submit(checkpoint.size, &checkpoint.note, None)?,
            };
            match self.tx_state(&current.tx_hash)? {
                TxState::Confirmed {
                    block_number,
                    block_hash,
                } => {
                    self.save_pending(None)?;
                    if current.size == checkpoint.size {
                        return self.checked_receipt(
                            &current,
                            block_number,
                            &block_hash,
                            chain,
                            &checkpoint.note,
                        );
                    }
                    // It anchored an older checkpoint: now the latest.
                    continue;
                }
                TxState::Reverted => {
                    self.save_pending(None)?;
                    return Err(ChainError::Refused(format!(
                        "transaction {} reverted; it will be re-submitted",
                        current.tx_hash
                    )));
                }
                TxState::Missing => {
                    self.save_pending(None)?;
                    tracing::warn!(tx = %current.tx_hash, "anchoring transaction no longer on chain (dropped or reorganized away); re-submitting");
                    continue;
                }
                TxState::Mined { confirmations } if std::time::Instant::now() >= deadline => {
                    return Err(ChainError::Refused(format!(
                        "transaction {} has {confirmations} of {} confirmations; waiting",
                        current.tx_hash, self.confirmations
                    )));
                }
                TxState::Pending
                    if crate::clock::unix_seconds()
                        .unsigned_abs()
                        .saturating_sub(current.sent_at)
                        > self.replace_after.as_secs() =>
                {
                    tracing::warn!(tx = %current.tx_hash, nonce = current.nonce, "anchoring transaction not mined; replacing it with higher fees");
                    // Same nonce, the latest checkpoint (it covers the old one).
                    pending =
                        Some(self.submit(checkpoint.size, &checkpoint.note, Some(&current))?);
                }
                TxState::Pending if std::time::Instant::now() >= deadline => {
                    return Err(ChainError::Refused(format!(
                        "transaction {} not mined yet; waiting",
                        current.tx_hash
                    )));
                }
                TxState::Mined { .. } | TxState::Pending => {
                    pending = Some(current);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
}

impl AnchorBackend for EvmAnchor {
    fn name(&self) -> &str {
        "evm"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn anchor(&self, checkpoint: &StoredCheckpoint) -> Result<String, Error> {
        self.anchor_note(checkpoint).map_err(|reason| {
            Error::Anchor(format!(
                "EVM {}: {reason}",
                super::redact_url(&self.rpc_url)
            ))
        })
    }
}

/// One JSON-RPC call; the `result`, or the error in words.
fn json_rpc(
    agent: &ureq::Agent,
    url: &str,
    method: &str,
    params: serde_json::Value,
) -> Result<serde_json::Value, ChainError> {
    let request =
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let response = agent
        .post(url)
        .set("Content-Type", "application/json")
        .send_string(&request.to_string())
        .map_err(|e| ChainError::Rpc(format!("{method}: {}", describe_http_error(&e))))?;
    let mut body = Vec::new();
    response
        .into_reader()
        .take(4 * 1024 * 1024)
        .read_to_end(&mut body)
        .map_err(|e| ChainError::Rpc(format!("{method}: {e}")))?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ChainError::Rpc(format!("{method}: not JSON-RPC: {e}")))?;
    if let Some(error) = value.get("error") {
        return Err(ChainError::Refused(format!(
            "{method}: {}",
            error["message"].as_str().unwrap_or("error")
        )));
    }
    Ok(value["result"].clone())
}

/// A JSON-RPC quantity (`"0x1a"`).
fn quantity(value: &serde_json::Value) -> Result<u128, ChainError> {
    let text = value
        .as_str()
        .ok_or_else(|| ChainError::Rpc(format!("expected a hex quantity, got {value}")))?;
    u128::from_str_radix(text.trim_start_matches("0x"), 16)
        .map_err(|_| ChainError::Rpc(format!("not a hex quantity: {text}")))
}

/// `inkan verify --evm-rpc`: checks an `evm` receipt of a bundle on chain —
/// the node is on the receipt's chain; the transaction is bound to that
/// chain, was sent by the receipt's sender to itself and carries this
/// checkpoint's payload (crate::evm::ReceiptClaims); it succeeded, sits
/// in the recorded block, and has the recorded number of confirmations.
pub fn check_evm_receipt(rpc_url: &str, receipt: &str, note: &str) -> Result<String, Error> {
    check_on_chain(rpc_url, receipt, note).map_err(|e| Error::Anchor(e.to_string()))
}

fn check_on_chain(rpc_url: &str, receipt: &str, note: &str) -> Result<String, ChainError> {
    let receipt: serde_json::Value = serde_json::from_str(receipt)
        .map_err(|_| ChainError::Refused("the evm receipt is not JSON".to_owned()))?;
    let claims = crate::evm::ReceiptClaims::from_receipt(&receipt)
        .map_err(|e| ChainError::Refused(format!("the evm receipt: {e}")))?;
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let tx_hash = receipt["txHash"].as_str().unwrap_or_default();
    let node_chain = quantity(&json_rpc(
        &agent,
        rpc_url,
        "eth_chainId",
        serde_json::json!([]),
    )?)?;
    let tx = json_rpc(
        &agent,
        rpc_url,
        "eth_getTransactionByHash",
        serde_json::json!([tx_hash]),
    )?;
    if tx.is_null() {
        return Err(ChainError::Refused(format!(
            "transaction {tx_hash} is not on this chain"
        )));
    }
    claims
        .check_transaction(&tx, node_chain, note)
        .map_err(|e| ChainError::Refused(format!("transaction {tx_hash}: {e}")))?;
    let on_chain = json_rpc(
        &agent,
        rpc_url,
        "eth_getTransactionReceipt",
        serde_json::json!([tx_hash]),
    )?;
    if on_chain["status"].as_str() != Some("0x1") {
        return Err(ChainError::Refused(format!(
            "transaction {tx_hash} did not succeed"
        )));
    }
    if on_chain["blockHash"] != receipt["blockHash"] {
        return Err(ChainError::Refused(format!(
            "transaction {tx_hash} is no longer in the recorded block"
        )));
    }
    let block = quantity(&on_chain["blockNumber"])?;
    let latest = quantity(&json_rpc(
        &agent,
        rpc_url,
        "eth_blockNumber",
        serde_json::json!([]),
    )?)?;
    let confirmations = latest.saturating_sub(block) + 1;
    let required = u128::from(receipt["confirmations"].as_u64().unwrap_or(1));
    if confirmations < required {
        return Err(ChainError::Refused(format!(
            "transaction {tx_hash} has {confirmations} of {required} confirmations"
        )));
    }
    Ok(format!(
        "evm: checkpoint anchored by transaction {tx_hash} from 0x{} in block {block} of chain {}, {confirmations} confirmations (checked on chain)",
        hex::encode(claims.sender),
        claims.chain_id
    ))
}
