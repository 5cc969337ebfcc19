//! A collaboration: its policy and what it means, members and roles, artifacts, dataset
//! manifests, jobs and round series.

use clreg_types::{Artifact, Collaboration, Dataset, Job, Member, Series};
use maud::{Markup, html};

use super::{artifact_href, collab_href, kind_badge, policy_meaning, role_meaning};
use crate::layout::{Chrome, page, segment, short_hash, size, time};

pub struct CollabView<'a> {
    pub collab: &'a Collaboration,
    pub members: &'a [Member],
    pub artifacts: &'a [Artifact],
    pub datasets: &'a [Dataset],
    /// Newest first.
    pub jobs: &'a [Job],
    pub series: &'a [Series],
}

pub fn collab(chrome: &Chrome<'_>, v: &CollabView<'_>) -> Markup {
    let c = v.collab;
    let home = collab_href(&c.name);
    let body = html! {
        h1 { (c.name) " " span class=(format!("badge policy-{}", c.policy.as_str())) { (c.policy.as_str()) } }
        @if !c.description.is_empty() { p { (c.description) } }
        p.meta { "Created " (time(&c.created_at)) " by " (c.created_by) ". Your roles: "
            (c.my_roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")) "." }
        nav.subnav aria-label="Collaboration" {
            a href=(format!("{home}/lineage")) { "Lineage graph" }
            a href=(format!("{home}/ledger")) { "Ledger" }
        }
        section aria-labelledby="policy" {
            h2 #policy { "Policy" }
            p { (policy_meaning(c.policy)) }
        }
        section aria-labelledby="members" {
            h2 #members { "Members" }
            table {
                thead { tr { th { "User" } th { "Roles" } th { "May" } } }
                tbody {
                    @for m in v.members {
                        tr {
                            td { (m.user) }
                            td { (m.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")) }
                            td { (m.roles.iter().map(|r| role_meaning(*r)).collect::<Vec<_>>().join("; ")) }
                        }
                    }
                }
            }
        }
        section aria-labelledby="artifacts" {
            h2 #artifacts { "Artifacts (" (v.artifacts.len()) ")" }
            @if v.artifacts.is_empty() {
                p.empty { "No artifacts yet. Push one with " code { "clreg push DIR --collab " (c.name) " --name NAME" } "." }
            } @else {
                table {
                    thead { tr { th { "Name" } th { "Version" } th { "Kind" } th { "Size" } th { "Pushed" } } }
                    tbody {
                        @for a in v.artifacts {
                            tr {
                                td { a href=(artifact_href(&a.id)) { (a.name) } }
                                td.num { (a.version) }
                                td { (kind_badge(a.kind)) }
                                td.num { (size(a.files.iter().map(|f| f.size).sum())) }
                                td { (time(&a.created_at)) " by " (a.created_by) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="datasets" {
            h2 #datasets { "Dataset manifests (" (v.datasets.len()) ")" }
            @if v.datasets.is_empty() {
                p.empty { "No datasets registered." }
            } @else {
                table {
                    thead { tr { th { "Name" } th { "Task" } th { "Metric" } th { "Examples" } th { "Size" } th { "Licence" } th { "Content" } th { "Digest" } } }
                    tbody {
                        @for d in v.datasets {
                            tr {
                                td { (d.name) }
                                td { (d.task) }
                                td { (d.metric) }
                                td.num { (d.examples) }
                                td.num { (size(d.size)) }
                                td { (d.license) }
                                td { @if d.content_stored { "stored" } @else { "manifest only" } }
                                td { (short_hash(&d.digest.to_string())) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="jobs" {
            h2 #jobs { "Jobs" }
            @if v.jobs.is_empty() {
                p.empty { "No jobs yet." }
            } @else {
                table {
                    thead { tr { th { "Job" } th { "Kind" } th { "State" } th { "Progress" } th { "Submitted" } } }
                    tbody { @for j in v.jobs { (super::job_row(j)) } }
                }
            }
        }
        section aria-labelledby="series" {
            h2 #series { "Round series" }
            @if v.series.is_empty() {
                p.empty { "No series yet. Create one with " code { "clreg series create NAME --collab " (c.name) " --base BASE --tasks A,B" } "." }
            } @else {
                ul {
                    @for s in v.series {
                        li {
                            a href=(format!("{home}/series/{}", segment(&s.name))) { (s.name) }
                            " — " (s.rounds.len()) " round(s) on tasks " (s.tasks.join(", "))
                        }
                    }
                }
            }
        }
    };
    page(&c.name, Some(chrome), None, body)
}
