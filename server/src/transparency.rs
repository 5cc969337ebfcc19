//! The verifiable ledger: each collaboration chain's RFC 6962 Merkle tree, checkpoints of it
//! signed with the server's Ed25519 key, and inclusion and consistency proofs. What a verifier
//! checks is in `clreg_types::transparency`; `clreg audit verify` runs it.
//!
//! The signing key is the 32-byte seed in `ledger_signing_key` (`CLREG_LEDGER_SIGNING_KEY`), or
//! the one generated into `<data_dir>/ledger-signing-key` (mode 0600) on first start. Replicas
//! must share it. Its public half is served at `/.well-known/clreg/ledger-keys`.

use std::path::Path;

use chrono::Utc;
use clreg_types::merkle::{self, Hash};
use clreg_types::transparency::{
    Checkpoint, ConsistencyProof, InclusionProof, LedgerKey, SignedCheckpoint, key_id,
};
use ed25519_dalek::{Signer as _, SigningKey};

use crate::config::Config;
use crate::error::ApiError;
use crate::state::AppState;

/// The server's checkpoint signing key.
pub struct Signer {
    key: SigningKey,
    key_id: String,
}

impl Signer {
    pub fn load_or_generate(config: &Config) -> anyhow::Result<Signer> {
        let seed = match &config.ledger_signing_key {
            Some(hex_seed) => parse_seed(hex_seed)
                .ok_or_else(|| anyhow::anyhow!("ledger_signing_key must be 64 hex digits"))?,
            None => load_or_create(&config.data_dir.join("ledger-signing-key"))?,
        };
        let key = SigningKey::from_bytes(&seed);
        let key_id = key_id(&key.verifying_key().to_bytes());
        Ok(Signer { key, key_id })
    }

    pub fn public(&self) -> LedgerKey {
        LedgerKey {
            key_id: self.key_id.clone(),
            algorithm: "ed25519".into(),
            public_key: hex::encode(self.key.verifying_key().to_bytes()),
        }
    }

    fn sign(&self, checkpoint: Checkpoint) -> Result<SignedCheckpoint, ApiError> {
        let bytes = checkpoint.signed_bytes().map_err(ApiError::internal)?;
        let signature = hex::encode(self.key.sign(&bytes).to_bytes());
        Ok(SignedCheckpoint {
            checkpoint,
            signature,
        })
    }
}

fn parse_seed(s: &str) -> Option<[u8; 32]> {
    hex::decode(s.trim()).ok()?.try_into().ok()
}

fn load_or_create(path: &Path) -> anyhow::Result<[u8; 32]> {
    if path.exists() {
        crate::auth::check_private(path, "the ledger signing key")?;
        return parse_seed(&std::fs::read_to_string(path)?)
            .ok_or_else(|| anyhow::anyhow!("{} is not 64 hex digits", path.display()));
    }
    let seed: [u8; 32] = rand::random();
    crate::auth::write_private(path, hex::encode(seed).as_bytes())?;
    Ok(seed)
}

/// The leaves of a collaboration's chain, oldest first.
async fn leaves(state: &AppState, collab: (i64, &str)) -> Result<Vec<Hash>, ApiError> {
    let events = crate::ledger::list(&state.db, Some(collab)).await?;
    clreg_types::transparency::leaves(&events).map_err(ApiError::internal)
}

/// A signed checkpoint of the chain as it stands.
pub async fn checkpoint(
    state: &AppState,
    collab: (i64, &str),
) -> Result<SignedCheckpoint, ApiError> {
    let events = crate::ledger::list(&state.db, Some(collab)).await?;
    sign(state, collab.1, &events)
}

/// A signed checkpoint of `events` (a collaboration's whole chain, oldest first).
pub fn sign(
    state: &AppState,
    collab: &str,
    events: &[clreg_types::LedgerEvent],
) -> Result<SignedCheckpoint, ApiError> {
    let leaves = clreg_types::transparency::leaves(events).map_err(ApiError::internal)?;
    state.signer.sign(Checkpoint {
        collab: collab.to_string(),
        size: leaves.len() as u64,
        root: merkle::to_hex(&merkle::root(&leaves)),
        timestamp: Utc::now(),
        key_id: state.signer.key_id.clone(),
    })
}

fn size_in(size: u64, len: usize, what: &str) -> Result<usize, ApiError> {
    usize::try_from(size)
        .ok()
        .filter(|&s| s <= len)
        .ok_or_else(|| {
            ApiError::bad_request(format!("{what} {size} is beyond the ledger's {len} events"))
        })
}

/// The audit path of event `seq` in the tree of the chain's first `size` events.
pub async fn inclusion(
    state: &AppState,
    collab: (i64, &str),
    seq: i64,
    size: u64,
) -> Result<InclusionProof, ApiError> {
    let leaves = leaves(state, collab).await?;
    let size_n = size_in(size, leaves.len(), "size")?;
    let proof = usize::try_from(seq - 1)
        .ok()
        .and_then(|index| merkle::inclusion_proof(&leaves[..size_n], index))
        .ok_or_else(|| {
            ApiError::bad_request(format!("event {seq} is not among the first {size} events"))
        })?;
    Ok(InclusionProof {
        seq,
        size,
        proof: proof.iter().map(merkle::to_hex).collect(),
    })
}

/// The proof that the chain's first `from` events are a prefix of its first `to`.
pub async fn consistency(
    state: &AppState,
    collab: (i64, &str),
    from: u64,
    to: u64,
) -> Result<ConsistencyProof, ApiError> {
    let leaves = leaves(state, collab).await?;
    let to_n = size_in(to, leaves.len(), "to")?;
    let from_n = size_in(from, to_n, "from")?;
    let proof = merkle::consistency_proof(&leaves[..to_n], from_n)
        .ok_or_else(|| ApiError::bad_request("`from` must be at least 1 and at most `to`"))?;
    Ok(ConsistencyProof {
        from,
        to,
        proof: proof.iter().map(merkle::to_hex).collect(),
    })
}
