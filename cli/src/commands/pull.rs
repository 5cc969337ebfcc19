//! `clreg pull`: download every file of an artifact, verified, resumable.

use anyhow::{Context as _, Result};
use clreg_types::Artifact;
use futures::StreamExt as _;
use serde_json::json;

use super::Ctx;
use crate::args::PullArgs;
use crate::client::seg;
use crate::download::{self, Fetched, fetch};
use crate::error::{ExitStatus, LocalError};
use crate::output::human_size;
use crate::progress::{Progress, Tracker};

pub async fn pull(ctx: &Ctx, args: PullArgs) -> Result<ExitStatus> {
    let client = ctx.client()?;
    let artifact: Artifact = client.get(&args.reference.api_path()).await?;
    // Each path safe, and none that would collide on disk with another or with a download in
    // progress (`w` and `w.partial`, names equal but for case, a file that is another's
    // directory): the same rule the server applies to new manifests.
    clreg_types::check_manifest_paths(artifact.files.iter().map(|f| f.path.as_str())).map_err(
        |e| {
            LocalError::verify(
                "unsafe_path",
                format!("refusing artifact {}: {e}", artifact.id),
            )
        },
    )?;
    if artifact.files.iter().any(|f| {
        f.path == download::STAGING_DIR
            || f.path.starts_with(&format!("{}/", download::STAGING_DIR))
    }) {
        return Err(LocalError::verify(
            "unsafe_path",
            format!(
                "refusing artifact {}: it has a file under {}, where clreg keeps downloads in \
                 progress",
                artifact.id,
                download::STAGING_DIR
            ),
        )
        .into());
    }
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    // Downloads in progress live in a private directory of this artifact's, and each file is
    // renamed into place once verified.
    let staging = download::staging_dir(&args.output, &artifact.id.to_string())?;
    let cache = ctx.cache()?;
    let progress = Progress::new(ctx.out.progress());
    let total = progress.total(artifact.total_size(), "pull");
    let results: Vec<Result<(usize, Fetched)>> =
        futures::stream::iter(artifact.files.iter().enumerate())
            .map(|(i, f)| {
                let (client, cache, progress, total) = (&client, &cache, &progress, &total);
                let partial = staging.join(format!("{i}.partial"));
                let api_path = format!("/artifacts/{}/files/{}", artifact.id, seg(&f.path));
                let output = &args.output;
                async move {
                    let dest = download::create_parents(output, std::path::Path::new(&f.path))
                        .with_context(|| format!("pulling {}", f.path))?;
                    let bar = Tracker::new(progress, total, f.size, &f.path);
                    let r = fetch(
                        client, &api_path, &dest, &partial, &f.digest, f.size, cache, &bar,
                    )
                    .await;
                    bar.finish();
                    Ok((i, r.with_context(|| format!("pulling {}", f.path))?))
                }
            })
            .buffer_unordered(usize::from(args.jobs))
            .collect()
            .await;
    total.finish_and_clear();
    let mut outcome = vec![Fetched::Present; artifact.files.len()];
    for r in results {
        let (i, fetched) = r?;
        outcome[i] = fetched;
    }
    download::remove_staging(&staging);
    let received: u64 = outcome
        .iter()
        .map(|o| match o {
            Fetched::Downloaded(n) => *n,
            Fetched::Present => 0,
        })
        .sum();
    let files: Vec<_> = artifact
        .files
        .iter()
        .zip(&outcome)
        .map(|(f, o)| {
            json!({"path": f.path, "digest": f.digest, "size": f.size,
                   "downloaded": matches!(o, Fetched::Downloaded(_))})
        })
        .collect();
    let dir = args.output.display().to_string();
    ctx.out.note(&format!(
        "{} files, {} ({} received), all digests verified",
        artifact.files.len(),
        human_size(artifact.total_size()),
        human_size(received)
    ));
    ctx.out.emit(
        &json!({"reference": artifact.reference(), "id": artifact.id, "dir": dir, "files": files}),
        || format!("pulled {} {} into {dir}", artifact.reference(), artifact.id),
    )?;
    Ok(ExitStatus::Success)
}
