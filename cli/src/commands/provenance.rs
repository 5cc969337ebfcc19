//! `clreg push` of a local run's output: the record (`clreg_merge.json`, `clreg_mix.json`,
//! `clreg_train.json`) becomes the artifact's kind, base and lineage edges, each input found in
//! the registry by the sha256 of its files (the same edges a server job of that run records).

use std::collections::BTreeSet;
use std::str::FromStr;

use anyhow::{Context as _, Result};
use clreg_engine::provenance::{Input, Provenance};
use clreg_types::{Artifact, ArtifactKind, Digest, ParentSpec, Relation};
use serde_json::{Value, json};

use crate::client::{Client, seg};
use crate::error::LocalError;

/// What the record makes of the push.
pub struct RunLineage {
    /// The base model's id, when the record's base input is in the registry.
    pub base: Option<String>,
    pub parents: Vec<ParentSpec>,
    /// Inputs not found, as recorded on the edges (empty unless allowed).
    pub unregistered: Vec<Value>,
}

/// The artifact kind a record's output is pushed as.
pub fn kind_of(p: &Provenance) -> ArtifactKind {
    match (p.record, p.output_kind.as_str()) {
        (clreg_engine::merge::record::RECORD, _) => ArtifactKind::Merge,
        (clreg_engine::moe::MIX_RECORD, _) => ArtifactKind::Mixture,
        (_, "adapter") => ArtifactKind::Adapter,
        _ => ArtifactKind::Checkpoint,
    }
}

/// Resolves every input of `p` to the newest readable artifact holding all of its files.
pub async fn resolve(
    client: &Client,
    p: &Provenance,
    allow_unregistered: bool,
) -> Result<RunLineage> {
    let mut found: Vec<(&Input, Option<Artifact>)> = Vec::new();
    for input in &p.inputs {
        found.push((input, holder(client, input).await?));
    }
    let missing: Vec<&Input> = found
        .iter()
        .filter(|(_, a)| a.is_none())
        .map(|(i, _)| *i)
        .collect();
    if !missing.is_empty() && !allow_unregistered {
        let names: Vec<String> = missing.iter().map(|i| describe(i)).collect();
        return Err(LocalError::refused(
            "unregistered_input",
            format!(
                "{} names input(s) the registry does not hold or you cannot read: {}; push them \
                 first (or ask for access), or pass --allow-unregistered-inputs to record them \
                 by their digests",
                p.record,
                names.join(", ")
            ),
        )
        .into());
    }
    let unregistered: Vec<Value> = missing
        .iter()
        .map(|i| {
            json!({"role": i.params.get("role"), "path": i.path,
                   "files": i.files.iter().map(|f| format!("sha256:{}", f.sha256)).collect::<Vec<_>>()})
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut parents = Vec::new();
    for (input, artifact) in &found {
        let Some(a) = artifact else { continue };
        if !seen.insert(a.id.clone()) {
            continue;
        }
        let relation = serde_json::to_value(input.relation)
            .ok()
            .and_then(|v| v.as_str().and_then(|s| Relation::from_str(s).ok()))
            .unwrap_or(Relation::Finetune);
        let mut params: std::collections::BTreeMap<String, Value> =
            input.params.clone().into_iter().collect();
        if !unregistered.is_empty() {
            params.insert("unregistered_inputs".into(), json!(unregistered));
        }
        parents.push(ParentSpec {
            parent: a.id.clone(),
            relation,
            method: p.method.clone(),
            params,
            datasets: input
                .datasets
                .iter()
                .map(|d| Digest::parse_lenient(d))
                .collect::<Result<_, _>>()
                .context("a dataset digest in the record")?,
        });
    }
    // The base: the base input's (`role: base`, else the first input).
    let base_input = found
        .iter()
        .find(|(i, _)| i.params.get("role").and_then(Value::as_str) == Some("base"))
        .or(found.first());
    let base = base_input
        .and_then(|(_, a)| a.as_ref())
        .and_then(|a| match a.kind {
            ArtifactKind::Base => Some(a.id.clone()),
            _ => a.base.clone(),
        });
    Ok(RunLineage {
        base,
        parents,
        unregistered,
    })
}

fn describe(i: &Input) -> String {
    match i.params.get("role").and_then(Value::as_str) {
        Some(role) => format!("{} ({role})", i.path.display()),
        None => i.path.display().to_string(),
    }
}

/// The newest artifact the caller may read that holds every file of `input`.
async fn holder(client: &Client, input: &Input) -> Result<Option<Artifact>> {
    let wanted: BTreeSet<&str> = input.files.iter().map(|f| f.sha256.as_str()).collect();
    // The weights are the least shared file: ask by them.
    let Some(probe) = input
        .files
        .iter()
        .find(|f| f.file.ends_with(".safetensors"))
        .or(input.files.first())
    else {
        return Ok(None);
    };
    let digest = Digest::parse_lenient(&probe.sha256).context("a file digest in the record")?;
    let candidates: Vec<Artifact> = client
        .get(&format!("/blobs/{}/artifacts", seg(&digest.to_string())))
        .await
        .with_context(|| format!("looking up the artifact of {}", input.path.display()))?;
    Ok(candidates.into_iter().find(|a| {
        let held: BTreeSet<String> = a.files.iter().map(|f| f.digest.hex()).collect();
        wanted.iter().all(|w| held.contains(*w))
    }))
}
