//! `clreg audit`: verify a collaboration's ledger offline. Pinned keys live in
//! `<config>/ledger-keys.json` (per server), the last verified checkpoint of each collaboration
//! in `<config>/audit/<server>/<collab>.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clreg_types::transparency::{
    ConsistencyProof, LedgerKey, SignedCheckpoint, key_id, verify_artifact_record, verify_chain,
    verify_checkpoint, verify_extends, verify_tree_head,
};
use clreg_types::{Artifact, LedgerEvent};
use serde_json::json;

use super::Ctx;
use crate::client::seg;
use crate::error::{ExitStatus, LocalError};

const KEYS_FILE: &str = "ledger-keys.json";

/// Pinned public keys (hex), by server URL.
type Pinned = BTreeMap<String, Vec<String>>;

fn load_pinned(dir: &Path) -> Result<Pinned> {
    match std::fs::read_to_string(dir.join(KEYS_FILE)) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("reading {}", dir.join(KEYS_FILE).display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Pinned::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.join(KEYS_FILE).display())),
    }
}

fn save_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    clreg_types::merkle::from_hex(text.trim())
}

/// A file name for a server URL.
fn server_dir(server: &str) -> String {
    server
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn saved_path(dir: &Path, server: &str, collab: &str) -> PathBuf {
    dir.join("audit")
        .join(server_dir(server))
        .join(format!("{collab}.json"))
}

pub async fn trust(ctx: &Ctx, key: &str) -> Result<ExitStatus> {
    let text = match std::fs::read_to_string(key) {
        Ok(t) => t,
        Err(_) => key.to_string(),
    };
    let raw = parse_key(&text).ok_or_else(|| {
        LocalError::usage("the key must be 64 hex digits (or a file holding them)")
    })?;
    let client = ctx.client()?;
    let server = client.server().to_string();
    let mut pinned = load_pinned(ctx.config_dir())?;
    let hex = clreg_types::merkle::to_hex(&raw);
    let keys = pinned.entry(server.clone()).or_default();
    if !keys.contains(&hex) {
        keys.push(hex.clone());
    }
    save_json(&ctx.config_dir().join(KEYS_FILE), &pinned)?;
    ctx.out.emit(
        &json!({"server": server, "key_id": key_id(&raw), "public_key": hex}),
        || format!("trusting ledger key {} for {server}", key_id(&raw)),
    )?;
    Ok(ExitStatus::Success)
}

fn failed(code: &'static str, collab: &str, why: String) -> anyhow::Error {
    LocalError::verify(
        code,
        format!("the ledger of `{collab}` does not verify: {why}"),
    )
    .into()
}

pub async fn verify(ctx: &Ctx, collab: &str) -> Result<ExitStatus> {
    let client = ctx.client()?;
    let server = client.server().to_string();
    let base = format!("/collaborations/{}/ledger", seg(collab));
    let signed: SignedCheckpoint = client.get(&format!("{base}/checkpoint")).await?;
    let cp = &signed.checkpoint;

    // A key this user trusts, pinned earlier or now on first use (and said so).
    let mut pinned = load_pinned(ctx.config_dir())?;
    if pinned.get(&server).is_none_or(Vec::is_empty) {
        let keys: Vec<LedgerKey> = client.get_at_root("/.well-known/clreg/ledger-keys").await?;
        let ids: Vec<&str> = keys.iter().map(|k| k.key_id.as_str()).collect();
        ctx.out.note(&format!(
            "trusting {server}'s ledger key {} on first use (pinned in {}); pin a key you got out \
             of band with `clreg audit trust`",
            ids.join(", "),
            ctx.config_dir().join(KEYS_FILE).display()
        ));
        pinned.insert(
            server.clone(),
            keys.into_iter().map(|k| k.public_key).collect(),
        );
        save_json(&ctx.config_dir().join(KEYS_FILE), &pinned)?;
    }
    let trusted = pinned.get(&server).cloned().unwrap_or_default();
    let key = trusted
        .iter()
        .find(|k| parse_key(k).is_some_and(|raw| key_id(&raw) == cp.key_id))
        .ok_or_else(|| {
            failed(
                "untrusted_key",
                collab,
                format!(
                    "its checkpoint is signed by key {}, which you do not trust; if the server \
                     changed its key, get the new one out of band and `clreg audit trust` it",
                    cp.key_id
                ),
            )
        })?;
    verify_checkpoint(&signed, key).map_err(|e| failed("bad_signature", collab, e))?;

    // The events: every hash and link, then the tree head the checkpoint signs.
    let events: Vec<LedgerEvent> = client.get(&base).await?;
    verify_chain(&events).map_err(|e| failed("ledger_tampered", collab, e))?;
    verify_tree_head(&events, cp).map_err(|e| failed("ledger_tampered", collab, e))?;

    // The registry's record of every artifact the ledger committed (metadata auditors may read;
    // no bytes): ids, names, versions, kinds, bases and each file's digest and size.
    let mut artifacts = 0usize;
    for e in events.iter().filter(|e| e.kind == "artifact.pushed") {
        let id = e.payload["id"].as_str().unwrap_or_default();
        let artifact: Artifact = client
            .get(&format!("/artifacts/{}", seg(id)))
            .await
            .with_context(|| format!("fetching artifact {id} (event {})", e.seq))?;
        verify_artifact_record(e, &artifact).map_err(|m| failed("artifact_tampered", collab, m))?;
        artifacts += 1;
    }

    // Nothing before the last checkpoint this user verified has changed.
    let saved_file = saved_path(ctx.config_dir(), &server, collab);
    let saved: Option<SignedCheckpoint> =
        match std::fs::read_to_string(&saved_file) {
            Ok(text) => Some(serde_json::from_str(&text).with_context(|| {
                format!("reading the saved checkpoint {}", saved_file.display())
            })?),
            Err(_) => None,
        };
    if let Some(saved) = &saved {
        let older = &saved.checkpoint;
        if older.size > cp.size {
            return Err(failed(
                "history_rewritten",
                collab,
                format!(
                    "it has {} events, fewer than the {} of the checkpoint you saved",
                    cp.size, older.size
                ),
            ));
        }
        let proof: ConsistencyProof = client
            .get(&format!(
                "{base}/proof/consistency?from={}&to={}",
                older.size, cp.size
            ))
            .await?;
        verify_extends(older, cp, &proof).map_err(|e| failed("history_rewritten", collab, e))?;
        // And directly: the events this user saw then have the tree head saved then.
        verify_tree_head(&events, older).map_err(|e| failed("history_rewritten", collab, e))?;
    }
    save_json(&saved_file, &signed)?;

    let since = saved
        .as_ref()
        .map(|s| {
            format!(
                "; consistent with your checkpoint of {} events",
                s.checkpoint.size
            )
        })
        .unwrap_or_default();
    ctx.out.emit(
        &json!({"collab": collab, "events": events.len(), "artifacts": artifacts, "checkpoint": cp,
                "previous_size": saved.as_ref().map(|s| s.checkpoint.size)}),
        || {
            format!(
                "ledger of `{collab}` verified: {} events, {artifacts} artifact records, tree head {} \
                 signed by key {} at {}{since}",
                events.len(),
                &cp.root[..16],
                cp.key_id,
                cp.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        },
    )?;
    Ok(ExitStatus::Success)
}
