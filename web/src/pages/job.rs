//! A job: state, progress and log, live while it runs (server-sent events; without JavaScript
//! the page refreshes itself), and its results.

use clreg_types::{Job, JobState};
use maud::{Markup, html};

use super::{artifact_href, collab_href};
use crate::layout::{Chrome, csrf_field, page, time};

/// Whether a job can still change.
pub fn active(state: JobState) -> bool {
    matches!(state, JobState::Queued | JobState::Running)
}

fn label(j: &Job) -> String {
    let id = j.id.simple().to_string();
    match &j.name {
        Some(name) => format!("{} {name}", j.kind.as_str()),
        None => format!("{} {}", j.kind.as_str(), &id[..8]),
    }
}

/// One row of a job table.
pub fn job_row(j: &Job) -> Markup {
    html! {
        tr {
            td { a href=(format!("/ui/jobs/{}", j.id)) { (label(j)) } }
            td { (j.kind.as_str()) }
            td { span class=(format!("badge state-{}", j.state.as_str())) { (j.state.as_str()) } }
            td.num { (format!("{:.0} %", j.progress * 100.0)) }
            td { (time(&j.created_at)) " by " (j.submitted_by) }
        }
    }
}

/// The job page; `can_cancel` shows the cancel form (the server checks again on submit).
pub fn job(chrome: &Chrome<'_>, j: &Job, log: &str, can_cancel: bool) -> Markup {
    let live = active(j.state);
    let head = live.then(|| html! { noscript { meta http-equiv="refresh" content="5"; } });
    let title = label(j);
    let body = html! {
        p.crumbs { a href=(collab_href(&j.collab)) { (j.collab) } " / jobs / " (title) }
        h1 { "Job " (title) }
        div #job data-events=[live.then(|| format!("/ui/jobs/{}/events", j.id))] {
            dl.facts {
                dt { "State" } dd { span #job-state class=(format!("badge state-{}", j.state.as_str())) { (j.state.as_str()) } }
                dt { "Progress" } dd {
                    progress #job-progress max="1" value=(j.progress) { (format!("{:.0} %", j.progress * 100.0)) }
                    " " span #job-percent { (format!("{:.0} %", j.progress * 100.0)) }
                }
                dt { "Message" } dd #job-message { (j.message) }
                dt { "Submitted" } dd { (time(&j.created_at)) " by " (j.submitted_by) }
                @if let Some(at) = &j.started_at { dt { "Started" } dd { (time(at)) } }
                @if let Some(at) = &j.finished_at { dt { "Finished" } dd { (time(at)) } }
                dt { "Attempts" } dd { (j.attempts) }
                @if let Some(req) = &j.requires { dt { "Requires" } dd { (req) } }
                dt { "Id" } dd { code { (j.id) } }
            }
            @if live { p.note #live-note { "This page follows the job live; without JavaScript it reloads every 5 s." } }
        }
        @if let Some(e) = &j.error {
            section aria-labelledby="error" { h2 #error { "Error" } p.problem { code { (e.code.as_str()) } " " (e.message) } }
        }
        @if let Some(result) = &j.result {
            section aria-labelledby="result" {
                h2 #result { "Result" }
                @if !result.artifacts.is_empty() {
                    p { "Artifacts: " @for a in &result.artifacts { a href=(artifact_href(a)) { code { (a) } } " " } }
                }
                @if !result.evaluations.is_empty() { p { (result.evaluations.len()) " evaluation(s) recorded." } }
            }
        }
        @if can_cancel && live {
            form method="post" action=(format!("/ui/jobs/{}/cancel", j.id)) {
                (csrf_field(chrome.csrf))
                button.danger type="submit" { "Cancel job" }
            }
        }
        section aria-labelledby="log-title" {
            h2 #log-title { "Log" }
            pre #log aria-labelledby="log-title" { (log) }
        }
    };
    page(&format!("Job {title}"), Some(chrome), head, body)
}
