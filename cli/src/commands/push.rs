//! `clreg push`: upload a directory's files (in parallel) and commit the manifest.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use clreg_types::{
    Artifact, ArtifactKind, CommitArtifact, CommitResult, Digest, FileEntry, ParentSpec, Relation,
};
use futures::StreamExt as _;

use super::Ctx;
use crate::args::PushArgs;
use crate::client::{Client, seg};
use crate::error::{ExitStatus, LocalError};
use crate::hashing;
use crate::output::human_size;
use crate::progress::{Progress, Tracker};
use crate::refs::ArtifactRef;
use crate::upload::Uploader;
use crate::walk::walk;

pub async fn push(ctx: &Ctx, args: PushArgs) -> Result<ExitStatus> {
    clreg_types::check_name(&args.collab).map_err(LocalError::usage)?;
    clreg_types::check_name(&args.name).map_err(LocalError::usage)?;
    let files = walk(&args.dir)?;
    if files.is_empty() {
        return Err(
            LocalError::usage(format!("{} has no files to push", args.dir.display())).into(),
        );
    }
    let paths: Vec<String> = files.iter().map(|f| f.rel.clone()).collect();
    let record = clreg_engine::provenance::read(&args.dir)
        .map_err(|e| LocalError::engine(e.code(), e.to_string()))?;
    if record.is_some() && args.parent.is_some() {
        return Err(LocalError::usage(
            "the directory holds a run record, whose inputs become the parents: drop --parent",
        )
        .into());
    }
    let kind = match args
        .kind
        .or_else(|| record.as_ref().map(super::provenance::kind_of))
        .or_else(|| detect_kind(&paths, args.base.is_some()))
    {
        Some(k) => k,
        None => {
            return Err(LocalError::usage(
                "cannot tell the artifact kind (no config.json or adapter_config.json); pass --kind",
            )
            .into());
        }
    };
    if kind != ArtifactKind::Base && args.base.is_none() && record.is_none() {
        return Err(
            LocalError::usage(format!("a {kind} needs its base model: pass --base REF")).into(),
        );
    }
    let datasets = args
        .datasets
        .iter()
        .map(|d| dataset_digest(d))
        .collect::<Result<Vec<_>>>()?;

    let client = ctx.client()?;
    let run = match &record {
        Some(r) => {
            Some(super::provenance::resolve(&client, r, args.allow_unregistered_inputs).await?)
        }
        None => None,
    };
    let base = match (&args.base, &run) {
        (Some(r), _) => Some(
            resolve(&client, r)
                .await
                .with_context(|| format!("resolving --base {r}"))?
                .id,
        ),
        (None, Some(run)) if kind != ArtifactKind::Base => {
            Some(run.base.clone().ok_or_else(|| {
                LocalError::usage("the run's base model is not in the registry: pass --base REF")
            })?)
        }
        (None, _) => None,
    };
    let mut description = args.description.clone();
    let parents = match (&args.parent, run) {
        (Some(r), _) => {
            let parent = resolve(&client, r)
                .await
                .with_context(|| format!("resolving --parent {r}"))?;
            let relation = args.relation.unwrap_or(if kind == ArtifactKind::Adapter {
                Relation::Adapter
            } else {
                Relation::Finetune
            });
            vec![ParentSpec {
                parent: parent.id,
                relation,
                method: args.method.clone(),
                params: args.params.iter().cloned().collect(),
                datasets,
            }]
        }
        (None, Some(run)) => {
            if run.parents.is_empty() && !run.unregistered.is_empty() {
                // No edge to carry them: the description does.
                let note = format!(
                    "unregistered inputs: {}",
                    serde_json::Value::from(run.unregistered.clone())
                );
                description = if description.is_empty() {
                    note
                } else {
                    format!("{description} ({note})")
                };
            }
            run.parents
        }
        (None, None) => Vec::new(),
    };

    let uploader = Uploader::new(client.clone(), ctx.cache()?);
    let total_size: u64 = files.iter().map(|f| f.size).sum();
    let progress = Progress::new(ctx.out.progress());
    let total = progress.total(total_size, "push");
    let results: Vec<Result<(String, FileEntry, u64)>> = futures::stream::iter(&files)
        .map(|f| {
            let (uploader, progress, total) = (&uploader, &progress, &total);
            async move {
                let bar = Tracker::new(progress, total, f.size, &f.rel);
                let pushed = uploader.push_file(&f.abs, &bar).await;
                bar.finish();
                let pushed = pushed?;
                Ok((
                    f.rel.clone(),
                    FileEntry {
                        digest: pushed.digest,
                        size: pushed.size,
                    },
                    pushed.sent,
                ))
            }
        })
        .buffer_unordered(usize::from(args.jobs))
        .collect()
        .await;
    total.finish_and_clear();
    let mut manifest = BTreeMap::new();
    let mut sent = 0;
    for r in results {
        let (rel, entry, n) = r?;
        sent += n;
        manifest.insert(rel, entry);
    }

    let commit = CommitArtifact {
        name: args.name.clone(),
        kind,
        base,
        files: manifest,
        parents,
        description,
    };
    let result: CommitResult = client
        .post(
            &format!("/collaborations/{}/artifacts", seg(&args.collab)),
            &commit,
        )
        .await
        .context("committing the manifest")?;
    ctx.out.note(&format!(
        "{} {} files, {} ({} sent)",
        if result.created {
            "committed"
        } else {
            "unchanged:"
        },
        files.len(),
        human_size(total_size),
        human_size(sent)
    ));
    let a = &result.artifact;
    ctx.out
        .emit(&result, || format!("{} {}", a.reference(), a.id))?;
    Ok(ExitStatus::Success)
}

/// The artifact a reference names.
pub async fn resolve(client: &Client, r: &ArtifactRef) -> Result<Artifact> {
    client.get(&r.api_path()).await
}

/// `--dataset`: a file (its sha256) or a digest.
fn dataset_digest(s: &str) -> Result<Digest> {
    let path = Path::new(s);
    if path.is_file() {
        let (digest, _) = hashing::hash_file(path).with_context(|| format!("reading {s}"))?;
        return Ok(digest);
    }
    Digest::parse_lenient(s).map_err(|_| {
        LocalError::usage(format!(
            "--dataset {s}: not a file, nor a digest (sha256:<64 hex>)"
        ))
        .into()
    })
}

/// `adapter_config.json` → adapter; `config.json` → base, or checkpoint when a base is named.
fn detect_kind(paths: &[String], has_base: bool) -> Option<ArtifactKind> {
    use clreg_engine::inspect::Kind;
    match clreg_engine::inspect::detect_kind(paths)? {
        Kind::Adapter => Some(ArtifactKind::Adapter),
        Kind::Base | Kind::Checkpoint if has_base => Some(ArtifactKind::Checkpoint),
        Kind::Base | Kind::Checkpoint => Some(ArtifactKind::Base),
        Kind::Mixture => Some(ArtifactKind::Mixture),
        Kind::Other => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_args() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("d.json");
        std::fs::write(&f, b"[]")?;
        let from_file = dataset_digest(&f.to_string_lossy())?;
        assert_eq!(from_file, hashing::digest_bytes(b"[]"));
        let hex = from_file.hex();
        assert_eq!(dataset_digest(&hex)?, from_file);
        assert_eq!(dataset_digest(&format!("sha256:{hex}"))?, from_file);
        assert!(dataset_digest("nope.json").is_err());
        Ok(())
    }
}
