//! An artifact: files and sizes, metadata, provenance (the lineage edges that made it),
//! evaluations and its lineage neighbourhood.

use clreg_types::{Artifact, Evaluation, Lineage};
use maud::{Markup, html};

use super::{collab_href, kind_badge};
use crate::charts::number;
use crate::layout::{Chrome, page, path, segment, short_hash, size, time};

pub struct ArtifactView<'a> {
    pub artifact: &'a Artifact,
    pub lineage: &'a Lineage,
    pub evaluations: &'a [Evaluation],
    /// Whether the viewer may download files (auditors may not: no links are shown).
    pub can_download: bool,
}

pub fn artifact(chrome: &Chrome<'_>, v: &ArtifactView<'_>) -> Markup {
    let a = v.artifact;
    let m = &a.metadata;
    let provenance: Vec<_> = v.lineage.edges.iter().filter(|e| e.child == a.id).collect();
    let title = format!("{}/{} v{}", a.collab, a.name, a.version);
    let body = html! {
        p.crumbs { a href=(collab_href(&a.collab)) { (a.collab) } " / " (a.name) }
        h1 { (a.name) " v" (a.version) " " (kind_badge(a.kind)) }
        @if !a.description.is_empty() { p { (a.description) } }
        dl.facts {
            dt { "Id" } dd { code { (a.id) } }
            dt { "Pushed" } dd { (time(&a.created_at)) " by " (a.created_by) }
            @if let Some(base) = &a.base {
                dt { "Base" }
                dd {
                    @match v.lineage.nodes.iter().find(|n| &n.id == base) {
                        Some(n) => a href=(super::artifact_href(base)) { (n.collab) "/" (n.name) " v" (n.version) },
                        None => code { (base) },
                    }
                }
            }
            @if let Some(arch) = &m.architecture { dt { "Architecture" } dd { (arch) } }
            @if let Some(dtype) = &m.dtype { dt { "Dtype" } dd { (dtype) } }
            dt { "Parameters" } dd.num { (m.parameters) }
            dt { "Tensors" } dd.num { (m.tensors) }
            @if let Some(ad) = &m.adapter {
                dt { "Adapter" } dd { "r = " (ad.r) ", α = " (ad.lora_alpha)
                    @if ad.use_rslora { ", rsLoRA" } "; targets " (ad.target_modules.join(", ")) }
            }
        }
        section aria-labelledby="files" {
            h2 #files { "Files (" (a.files.len()) ", " (size(a.files.iter().map(|f| f.size).sum())) ")" }
            @if !v.can_download {
                p.note { "Your roles here do not include downloading: metadata only." }
            }
            table {
                thead { tr { th { "Path" } th { "Size" } th { "sha256" } } }
                tbody {
                    @for f in &a.files {
                        tr {
                            td {
                                @if v.can_download {
                                    a.download href=(format!("/ui/artifacts/{}/files/{}", segment(&a.id), path(&f.path))) download { (f.path) }
                                } @else { (f.path) }
                            }
                            td.num { (size(f.size)) }
                            td { (short_hash(&f.digest.to_string())) }
                        }
                    }
                }
            }
        }
        section aria-labelledby="provenance" {
            h2 #provenance { "Provenance" }
            @if provenance.is_empty() {
                p.empty { "Pushed as is: no parents recorded." }
            } @else {
                table {
                    thead { tr { th { "Parent" } th { "Relation" } th { "Method" } th { "Parameters" } th { "Datasets" } } }
                    tbody {
                        @for e in &provenance {
                            @let parent = v.lineage.nodes.iter().find(|n| n.id == e.parent);
                            tr {
                                td {
                                    @if let Some(p) = parent {
                                        a href=(super::artifact_href(&p.id)) { (p.collab) "/" (p.name) " v" (p.version) }
                                    } @else { code { (e.parent) } }
                                }
                                td { (e.relation.as_str()) }
                                td { (e.method) }
                                td { @if e.params.is_empty() { "—" } @else {
                                    code.params { (serde_params(&e.params)) } } }
                                td { @for d in &e.datasets { (short_hash(&d.to_string())) " " } }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="evaluations" {
            h2 #evaluations { "Evaluations" }
            @if v.evaluations.is_empty() {
                p.empty { "Not evaluated yet." }
            } @else {
                table {
                    thead { tr { th { "Task" } th { "Metric" } th { "Score" } th { "Examples" } th { "By" } } }
                    tbody {
                        @for e in v.evaluations {
                            tr {
                                td { (e.task) } td { (e.metric) }
                                td.num.score { (number(e.score)) }
                                td.num { (e.n) }
                                td {
                                    @if let Some(job) = e.job { a href=(format!("/ui/jobs/{job}")) { "job" } " · " }
                                    (e.created_by) ", " (time(&e.created_at))
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="neighbourhood" {
            h2 #neighbourhood { "Lineage" }
            p { "Ancestors and descendants you can read. " a href=(format!("{}/lineage", collab_href(&a.collab))) { "Whole collaboration graph" } }
            div.graph { (super::graph(v.lineage, Some(&a.id), "neighbourhood", &format!("Lineage of {title}"))) }
        }
    };
    page(&title, Some(chrome), None, body)
}

/// Edge parameters as compact `key=value` pairs.
fn serde_params(params: &std::collections::BTreeMap<String, serde_json::Value>) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
