//! `clreg series …` (round series and their BWT reports) and `clreg eval import`.

use anyhow::Result;
use clreg_types::{
    AddRound, CreateSeries, Evaluation, ImportEvaluations, ResultsFormat, Series, SeriesReport,
};

use super::Ctx;
use crate::args::{EvalImportArgs, SeriesAddArgs, SeriesCreateArgs, SeriesRefArgs};
use crate::client::seg;
use crate::error::{ExitStatus, LocalError};
use crate::output::{short_time, table};

pub async fn create(ctx: &Ctx, a: SeriesCreateArgs) -> Result<ExitStatus> {
    let req = CreateSeries {
        name: a.name,
        base: a.base,
        tasks: a.tasks,
        round_of_task: a.round_of_task,
        description: a.description,
    };
    let created: Series = ctx
        .client()?
        .post(&format!("/collaborations/{}/series", seg(&a.collab)), &req)
        .await?;
    ctx.out.emit(&created, || {
        format!(
            "series {}/{} created: {} task(s); add rounds with `clreg series add {} REF --collab {}`",
            created.collab,
            created.name,
            created.tasks.len(),
            created.name,
            created.collab
        )
    })?;
    Ok(ExitStatus::Success)
}

pub async fn add(ctx: &Ctx, a: SeriesAddArgs) -> Result<ExitStatus> {
    let updated: Series = ctx
        .client()?
        .post(
            &format!(
                "/collaborations/{}/series/{}/rounds",
                seg(&a.collab),
                seg(&a.name)
            ),
            &AddRound {
                artifact: a.artifact.clone(),
            },
        )
        .await?;
    ctx.out.emit(&updated, || {
        format!(
            "round {} of {}/{}: {}",
            updated.rounds.len(),
            updated.collab,
            updated.name,
            a.artifact
        )
    })?;
    Ok(ExitStatus::Success)
}

pub async fn ls(ctx: &Ctx, collab: &str) -> Result<ExitStatus> {
    let all: Vec<Series> = ctx
        .client()?
        .get(&format!("/collaborations/{}/series", seg(collab)))
        .await?;
    ctx.out.emit(&all, || {
        let rows: Vec<Vec<String>> = all
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.rounds.len().to_string(),
                    s.tasks.join(","),
                    short_time(&s.created_at),
                ]
            })
            .collect();
        table(&["NAME", "ROUNDS", "TASKS", "CREATED"], &rows)
    })?;
    Ok(ExitStatus::Success)
}

pub async fn report(ctx: &Ctx, a: SeriesRefArgs) -> Result<ExitStatus> {
    let r: SeriesReport = ctx
        .client()?
        .get(&format!(
            "/collaborations/{}/series/{}/report",
            seg(&a.collab),
            seg(&a.name)
        ))
        .await?;
    ctx.out.emit(&r, || render(&r))?;
    Ok(ExitStatus::Success)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:+.2} %", v * 100.0))
}

/// The report as a newcomer reads it: the matrix, then the figures, then what is missing.
fn render(r: &SeriesReport) -> String {
    let mut headers = vec!["ROUND", "ARTIFACT"];
    headers.extend(r.tasks.iter().map(String::as_str));
    let row = |label: String, s: &clreg_types::ScoreRow| {
        let mut cells = vec![label, s.artifact.chars().take(12).collect()];
        cells.extend(
            s.scores
                .iter()
                .map(|v| v.map_or("-".into(), |v| format!("{v:.4}"))),
        );
        cells
    };
    let mut rows = vec![row("base".into(), &r.base)];
    rows.extend(r.matrix.iter().map(|s| row(s.round.to_string(), s)));
    let mut out = format!(
        "series {}/{}: {} round(s)\n{}",
        r.collab,
        r.series,
        r.rounds,
        table(&headers, &rows)
    );
    match &r.transfer {
        Some(t) => {
            out.push_str(&format!(
                "\nover {}:\n  BWT            {}\n  FWT            {}\n  final average  {:.4}\n  average gain   {}\n",
                r.transfer_tasks.join(", "),
                pct(Some(t.bwt)),
                pct(t.fwt),
                t.final_average,
                pct(t.average_gain)
            ));
            for (j, task) in r.transfer_tasks.iter().enumerate() {
                let gain = t.gain.as_ref().and_then(|g| g.get(j).copied().flatten());
                out.push_str(&format!(
                    "  {task}: relative BWT {}, gain over base {}\n",
                    pct(t.relative_bwt.get(j).copied().flatten()),
                    pct(gain)
                ));
            }
        }
        None => {
            if let Some(p) = &r.pending {
                out.push_str(&format!("\nno transfer figures yet: {p}\n"));
            }
        }
    }
    if !r.missing.is_empty() {
        out.push_str("\nmissing:\n");
        for m in &r.missing {
            out.push_str(&format!("  {m}\n"));
        }
    }
    if !r.history.is_empty() {
        out.push_str("\nhistory (snapshot when each round's scores were complete):\n");
        for h in &r.history {
            out.push_str(&format!(
                "  round {}: BWT {}, final average {}  ({})\n",
                h.round,
                pct(h.bwt),
                h.final_average.map_or("-".into(), |v| format!("{v:.4}")),
                short_time(&h.taken_at)
            ));
        }
    }
    out.trim_end().to_string()
}

/// `clreg eval import`.
pub async fn import(ctx: &Ctx, a: EvalImportArgs) -> Result<ExitStatus> {
    let content = std::fs::read_to_string(&a.file)
        .map_err(|e| LocalError::usage(format!("cannot read {}: {e}", a.file.display())))?;
    let format = if a.format == "trace" {
        ResultsFormat::Trace
    } else {
        ResultsFormat::LmEval
    };
    let req = ImportEvaluations {
        artifact: a.scored,
        format,
        content,
        task: a.task,
        metric: a.metric,
        file: a.file.file_name().map(|n| n.to_string_lossy().into_owned()),
    };
    let imported: Vec<Evaluation> = ctx
        .client()?
        .post(
            &format!("/collaborations/{}/evaluations", seg(&a.collab)),
            &req,
        )
        .await?;
    ctx.out.emit(&imported, || {
        imported
            .iter()
            .map(|e| format!("imported {}: {} = {:.4}", e.task, e.metric, e.score))
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    Ok(ExitStatus::Success)
}
