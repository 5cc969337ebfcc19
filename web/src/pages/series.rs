//! A round series: the score matrix as a heatmap with its numbers, BWT / FWT / gain over the
//! base, each task's score across rounds, and the BWT history (the figures after each round).

use std::collections::HashMap;

use clreg_types::{Collaboration, Series, SeriesReport};
use maud::{Markup, html};

use super::{artifact_href, collab_href};
use crate::charts::{Heatmap, Line, LineChart, heatmap, line_chart, number};
use crate::layout::{Chrome, page, time};

fn figure(x: Option<f64>) -> Markup {
    match x {
        Some(x) => html! { span.figure { (number(x)) } },
        None => html! { span.figure.none { "—" } },
    }
}

/// `names`: a label (`name vN`) for each artifact id of the collaboration.
pub fn series(
    chrome: &Chrome<'_>,
    collab: &Collaboration,
    s: &Series,
    r: &SeriesReport,
    names: &HashMap<String, String>,
) -> Markup {
    let name = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
    let title = format!("Series {} in {}", s.name, collab.name);
    // Rows: the base, then each round, labelled by the artifact it scored.
    let rows: Vec<&clreg_types::ScoreRow> =
        std::iter::once(&r.base).chain(r.matrix.iter()).collect();
    let row_labels: Vec<String> = rows
        .iter()
        .map(|row| {
            if row.round == 0 {
                "base".to_string()
            } else {
                format!("after round {}", row.round)
            }
        })
        .collect();
    let cells: Vec<Vec<Option<f64>>> = rows.iter().map(|row| row.scores.clone()).collect();
    let x_labels = row_labels.clone();
    let trends: Vec<Line> = r
        .tasks
        .iter()
        .enumerate()
        .map(|(t, task)| Line {
            name: task.clone(),
            points: rows
                .iter()
                .map(|row| row.scores.get(t).copied().flatten())
                .collect(),
        })
        .collect();
    let history_labels: Vec<String> = r
        .history
        .iter()
        .map(|h| format!("round {}", h.round))
        .collect();
    let history = [
        Line {
            name: "BWT".into(),
            points: r.history.iter().map(|h| h.bwt).collect(),
        },
        Line {
            name: "FWT".into(),
            points: r.history.iter().map(|h| h.fwt).collect(),
        },
        Line {
            name: "average gain".into(),
            points: r.history.iter().map(|h| h.average_gain).collect(),
        },
    ];
    let body = html! {
        p.crumbs { a href=(collab_href(&collab.name)) { (collab.name) } " / series / " (s.name) }
        h1 { (title) }
        @if !s.description.is_empty() { p { (s.description) } }
        p.meta { "Base " a href=(artifact_href(&s.base)) { (name(&s.base)) } "; tasks in order: " (s.tasks.join(", ")) "; created " (time(&s.created_at)) " by " (s.created_by) "." }
        section aria-labelledby="rounds" {
            h2 #rounds { "Rounds" }
            @if s.rounds.is_empty() { p.empty { "No rounds yet. Add one with " code { "clreg series add " (s.name) " ARTIFACT --collab " (collab.name) } "." } }
            @else {
                ol {
                    @for round in &s.rounds {
                        li { a href=(artifact_href(&round.artifact)) { (name(&round.artifact)) } " — added by " (round.added_by) ", " (time(&round.added_at)) }
                    }
                }
            }
        }
        section aria-labelledby="matrix" {
            h2 #matrix { "Score matrix" }
            p { "Rows: the base and the model after each round; columns: tasks. Every cell prints its score; empty cells are not evaluated yet." }
            div.chart { (heatmap(&Heatmap { row_labels: &row_labels, col_labels: &r.tasks, cells: &cells, min: 0.0, max: 1.0 }, "matrix", "Score matrix", &format!("Scores of {} rows by {} tasks, from 0 to 1.", rows.len(), r.tasks.len()))) }
            @if !r.missing.is_empty() {
                p.note { "Missing: " (r.missing.join("; ")) }
            }
        }
        section aria-labelledby="transfer" {
            h2 #transfer { "Transfer" }
            @match &r.transfer {
                Some(t) => {
                    dl.facts #transfer-figures {
                        dt { "BWT" } dd data-figure="bwt" { (figure(Some(t.bwt))) }
                        dt { "FWT" } dd data-figure="fwt" { (figure(t.fwt)) }
                        dt { "Final average" } dd data-figure="final_average" { (figure(Some(t.final_average))) }
                        dt { "Average gain over base" } dd data-figure="average_gain" { (figure(t.average_gain)) }
                    }
                    table #per-task {
                        thead { tr { th { "Task" } th { "Relative BWT" } th { "Gain over base" } } }
                        tbody {
                            @for (i, task) in r.transfer_tasks.iter().enumerate() {
                                tr {
                                    td { (task) }
                                    td.num data-figure="relative_bwt" { (figure(t.relative_bwt.get(i).copied().flatten())) }
                                    td.num data-figure="gain" { (figure(t.gain.as_ref().and_then(|g| g.get(i).copied().flatten()))) }
                                }
                            }
                        }
                    }
                    p.note { "Fractions (0.1 = 10 %). " (t.normalisation) }
                }
                None => {
                    p.empty { "No transfer figures yet: " (r.pending.as_deref().unwrap_or("the matrix is incomplete")) }
                }
            }
        }
        section aria-labelledby="trends" {
            h2 #trends { "Scores across rounds" }
            div.chart { (line_chart(&LineChart { x_labels: &x_labels, lines: &trends, x_title: "model", y_title: "score", zero_line: false }, "trends", "Each task's score across rounds", "One line per task: its score on the base and after each round.")) }
        }
        section aria-labelledby="history" {
            h2 #history { "BWT history" }
            @if r.history.is_empty() {
                p.empty { "No snapshot yet: one is taken when a round's evaluations are complete." }
            } @else {
                div.chart { (line_chart(&LineChart { x_labels: &history_labels, lines: &history, x_title: "snapshot after round", y_title: "fraction", zero_line: true }, "bwt-history", "BWT history", "BWT, FWT and average gain over the base as they stood after each round.")) }
            }
        }
    };
    page(&title, Some(chrome), None, body)
}
