//! The verifiable ledger on the wire: signed checkpoints of a collaboration chain's Merkle tree
//! (RFC 6962, [`crate::merkle`]), proofs, the server's public keys, and the checks a verifier
//! runs offline (`clreg audit verify`).
//!
//! A chain's tree has one leaf per event, in order: `leaf_hash(event hash bytes)`. A checkpoint
//! says "the first `size` events have tree head `root`", signed with Ed25519 over the RFC 8785
//! form of the checkpoint, prefixed with [`CHECKPOINT_CONTEXT`].

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::merkle::{self, Hash};
use crate::{LedgerEvent, ledger_hash};

/// Domain separation for checkpoint signatures.
pub const CHECKPOINT_CONTEXT: &str = "clreg ledger checkpoint v1\n";

/// A statement of a chain's tree head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Checkpoint {
    pub collab: String,
    /// Events covered: the first `size` of the chain.
    pub size: u64,
    /// Hex tree head over those events.
    pub root: String,
    pub timestamp: DateTime<Utc>,
    /// Which of the server's keys signed it ([`key_id`]).
    pub key_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// Hex Ed25519 signature over [`Checkpoint::signed_bytes`].
    pub signature: String,
}

/// One of the server's ledger signing keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LedgerKey {
    pub key_id: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// Hex of the 32-byte public key.
    pub public_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InclusionProof {
    /// The event's sequence number (1-based; leaf `seq - 1`).
    pub seq: i64,
    pub size: u64,
    /// Hex hashes, leaf to root.
    pub proof: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    pub proof: Vec<String>,
}

impl Checkpoint {
    /// The bytes a checkpoint's signature covers.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, String> {
        let mut out = CHECKPOINT_CONTEXT.as_bytes().to_vec();
        out.extend(serde_jcs::to_vec(self).map_err(|e| e.to_string())?);
        Ok(out)
    }
}

/// A key's id: the first 8 bytes of sha256 of the public key, hex.
pub fn key_id(public_key: &[u8; 32]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(public_key);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn hex32(s: &str, what: &str) -> Result<Hash, String> {
    merkle::from_hex(s).ok_or_else(|| format!("{what} `{s}` is not 64 hex digits"))
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// Checks `signed` against `public_key` (hex), which must be the key its `key_id` names.
pub fn verify_checkpoint(signed: &SignedCheckpoint, public_key: &str) -> Result<(), String> {
    let raw = merkle::from_hex(public_key)
        .ok_or_else(|| format!("public key `{public_key}` is not 32 hex bytes"))?;
    if key_id(&raw) != signed.checkpoint.key_id {
        return Err(format!(
            "the checkpoint names key {}, not {}",
            signed.checkpoint.key_id,
            key_id(&raw)
        ));
    }
    let key = VerifyingKey::from_bytes(&raw).map_err(|e| format!("public key: {e}"))?;
    let sig: [u8; 64] = hex_bytes(&signed.signature)
        .and_then(|b| b.try_into().ok())
        .ok_or("the signature is not 64 hex bytes")?;
    key.verify(
        &signed.checkpoint.signed_bytes()?,
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| "the checkpoint's signature does not verify".to_string())
}

/// A chain's leaves: one per event, from its hash.
pub fn leaves(events: &[LedgerEvent]) -> Result<Vec<Hash>, String> {
    events
        .iter()
        .map(|e| hex32(&e.hash, "event hash").map(|h| merkle::leaf_hash(&h)))
        .collect()
}

/// Recomputes every hash of a chain and its links; `Err` names the first event that does not
/// verify.
pub fn verify_chain(events: &[LedgerEvent]) -> Result<(), String> {
    let mut prev = crate::LEDGER_GENESIS.to_string();
    for (i, e) in events.iter().enumerate() {
        let expected_seq = i64::try_from(i).unwrap_or(i64::MAX) + 1;
        if e.seq != expected_seq || e.prev_hash != prev {
            return Err(format!("event {} does not link to its predecessor", e.seq));
        }
        let hash = ledger_hash(
            e.scheme,
            &e.prev_hash,
            e.seq,
            e.collab.as_deref(),
            &e.kind,
            &e.actor,
            &e.created_at,
            &e.payload,
        );
        if hash.as_deref() != Ok(e.hash.as_str()) {
            return Err(format!("event {} has been altered", e.seq));
        }
        prev = e.hash.clone();
    }
    Ok(())
}

/// Checks that `events` (a chain, already verified) have the tree head `checkpoint` states for
/// its first `size` events.
pub fn verify_tree_head(events: &[LedgerEvent], checkpoint: &Checkpoint) -> Result<(), String> {
    let size = usize::try_from(checkpoint.size).map_err(|e| e.to_string())?;
    if size > events.len() {
        return Err(format!(
            "the checkpoint covers {size} events but the ledger has {}",
            events.len()
        ));
    }
    let head = merkle::root(&leaves(&events[..size])?);
    if merkle::to_hex(&head) != checkpoint.root {
        return Err(format!(
            "the events do not have the checkpoint's tree head at size {size}"
        ));
    }
    Ok(())
}

/// Checks that `newer` extends `older` (a checkpoint saved earlier) by `proof`.
pub fn verify_extends(
    older: &Checkpoint,
    newer: &Checkpoint,
    proof: &ConsistencyProof,
) -> Result<(), String> {
    if newer.size < older.size {
        return Err(format!(
            "the ledger has {} events, fewer than the {} of the checkpoint you saved",
            newer.size, older.size
        ));
    }
    let nodes: Vec<Hash> = proof
        .proof
        .iter()
        .map(|h| hex32(h, "proof node"))
        .collect::<Result<_, _>>()?;
    let ok = merkle::verify_consistency(
        older.size,
        newer.size,
        &hex32(&older.root, "saved root")?,
        &hex32(&newer.root, "root")?,
        &nodes,
    );
    if !ok {
        return Err(format!(
            "the ledger's first {} events are not the ones of the checkpoint you saved: its \
             history was rewritten",
            older.size
        ));
    }
    Ok(())
}

/// Checks the registry's record of an artifact against the `artifact.pushed` event that
/// committed it: id, name, version, kind, base and every file's digest and size. A record
/// changed in the database after the fact (a file pointed at other bytes) fails here.
pub fn verify_artifact_record(
    event: &LedgerEvent,
    artifact: &crate::Artifact,
) -> Result<(), String> {
    let p = &event.payload;
    let named = |what: &str| {
        format!(
            "artifact {} (event {}): its {what} differs from what the ledger recorded",
            artifact.id, event.seq
        )
    };
    if p["id"].as_str() != Some(artifact.id.as_str()) {
        return Err(named("id"));
    }
    if p["name"].as_str() != Some(artifact.name.as_str()) {
        return Err(named("name"));
    }
    if p["version"].as_i64() != Some(artifact.version) {
        return Err(named("version"));
    }
    if p["kind"].as_str() != Some(artifact.kind.as_str()) {
        return Err(named("kind"));
    }
    if p["base"].as_str() != artifact.base.as_deref() {
        return Err(named("base"));
    }
    let recorded = p["files"].as_object().ok_or_else(|| named("file list"))?;
    if recorded.len() != artifact.files.len() {
        return Err(named("file list"));
    }
    for f in &artifact.files {
        let entry = recorded
            .get(&f.path)
            .ok_or_else(|| named(&format!("file `{}`", f.path)))?;
        if entry["digest"].as_str() != Some(f.digest.to_string().as_str())
            || entry["size"].as_u64() != Some(f.size)
        {
            return Err(named(&format!("file `{}`", f.path)));
        }
    }
    Ok(())
}
