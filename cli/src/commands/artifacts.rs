//! `clreg ls`, `show` and `lineage`: reading artifacts and their history.

use std::collections::{BTreeMap, HashSet};

use anyhow::Result;
use clreg_types::{Artifact, Lineage, LineageEdge, LineageNode};
use serde_json::json;

use super::Ctx;
use crate::args::{LsArgs, RefArgs};
use crate::client::seg;
use crate::error::ExitStatus;
use crate::output::{human_size, short, short_time, table};

pub async fn ls(ctx: &Ctx, args: LsArgs) -> Result<ExitStatus> {
    let client = ctx.client()?;
    let mut req = client.request(
        reqwest::Method::GET,
        &format!("/collaborations/{}/artifacts", seg(&args.collab)),
    );
    if let Some(name) = &args.name {
        req = req.query(&[("name", name)]);
    }
    let list: Vec<Artifact> = crate::client::json_body(client.send(req).await?).await?;
    ctx.out.emit(&list, || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|a| {
                vec![
                    a.reference(),
                    a.kind.to_string(),
                    human_size(a.total_size()),
                    short_time(&a.created_at),
                    short(&a.id, 12).to_string(),
                ]
            })
            .collect();
        table(&["REF", "KIND", "SIZE", "CREATED", "ID"], &rows)
    })?;
    Ok(ExitStatus::Success)
}

pub async fn show(ctx: &Ctx, args: RefArgs) -> Result<ExitStatus> {
    let client = ctx.client()?;
    let a: Artifact = client.get(&args.reference.api_path()).await?;
    let lineage: Lineage = client.get(&format!("/artifacts/{}/lineage", a.id)).await?;
    let nodes: BTreeMap<&str, &LineageNode> =
        lineage.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let parents: Vec<&LineageEdge> = lineage.edges.iter().filter(|e| e.child == a.id).collect();
    ctx.out.emit(&json!({"artifact": a, "parents": parents}), || {
        let m = &a.metadata;
        let mut s = format!(
            "ref:         {}\nid:          {}\nkind:        {}\nbase:        {}\ncreated:     {} by {}\nsize:        {}\n",
            a.reference(),
            a.id,
            a.kind,
            a.base.as_deref().unwrap_or("-"),
            short_time(&a.created_at),
            a.created_by,
            human_size(a.total_size()),
        );
        if !a.description.is_empty() {
            s.push_str(&format!("description: {}\n", a.description));
        }
        s.push_str(&format!(
            "arch:        {}\ndtype:       {}\nparameters:  {}\ntensors:     {}\n",
            m.architecture.as_deref().unwrap_or("-"),
            m.dtype.as_deref().unwrap_or("-"),
            m.parameters,
            m.tensors
        ));
        if let Some(ad) = &m.adapter {
            s.push_str(&format!(
                "adapter:     r={} alpha={} rslora={} targets={}\n",
                ad.r,
                ad.lora_alpha,
                ad.use_rslora,
                ad.target_modules.join(",")
            ));
        }
        s.push('\n');
        let rows: Vec<Vec<String>> = a
            .files
            .iter()
            .map(|f| vec![f.path.clone(), human_size(f.size), f.digest.to_string()])
            .collect();
        s.push_str(&table(&["FILE", "SIZE", "DIGEST"], &rows));
        if !parents.is_empty() {
            s.push('\n');
            let rows: Vec<Vec<String>> = parents
                .iter()
                .map(|e| vec![node_ref(&nodes, &e.parent), edge_label(e), params(e)])
                .collect();
            s.push_str(&table(&["PARENT", "RELATION", "PARAMS"], &rows));
        }
        s
    })?;
    Ok(ExitStatus::Success)
}

pub async fn lineage(ctx: &Ctx, args: RefArgs) -> Result<ExitStatus> {
    let client = ctx.client()?;
    let a: Artifact = client.get(&args.reference.api_path()).await?;
    let lineage: Lineage = client.get(&format!("/artifacts/{}/lineage", a.id)).await?;
    ctx.out.emit(&lineage, || render_lineage(&lineage))?;
    Ok(ExitStatus::Success)
}

fn node_ref(nodes: &BTreeMap<&str, &LineageNode>, id: &str) -> String {
    match nodes.get(id) {
        Some(n) => format!("{}/{}:{}", n.collab, n.name, n.version),
        None => short(id, 12).to_string(),
    }
}

fn edge_label(e: &LineageEdge) -> String {
    if e.method.is_empty() {
        e.relation.to_string()
    } else {
        format!("{} ({})", e.relation, e.method)
    }
}

fn params(e: &LineageEdge) -> String {
    let mut parts: Vec<String> = e.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !e.datasets.is_empty() {
        parts.push(format!("datasets={}", e.datasets.len()));
    }
    parts.join(" ")
}

/// Ancestors (walking parent edges up from the root), the root, then descendants.
pub fn render_lineage(l: &Lineage) -> String {
    let nodes: BTreeMap<&str, &LineageNode> = l.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let label = |id: &str| match nodes.get(id) {
        Some(n) => format!(
            "{}/{}:{} [{}] {}",
            n.collab,
            n.name,
            n.version,
            n.kind,
            short(&n.id, 12)
        ),
        None => short(id, 12).to_string(),
    };
    let mut out = String::new();
    let up = |id: &str| {
        l.edges
            .iter()
            .filter(|e| e.child == id)
            .map(|e| (e.parent.as_str(), e))
            .collect::<Vec<_>>()
    };
    let down = |id: &str| {
        l.edges
            .iter()
            .filter(|e| e.parent == id)
            .map(|e| (e.child.as_str(), e))
            .collect::<Vec<_>>()
    };
    if !up(&l.root).is_empty() {
        out.push_str("ancestors:\n");
        tree(&l.root, &up, &label, "", &mut HashSet::new(), &mut out);
    }
    out.push_str(&format!("{}  (this artifact)\n", label(&l.root)));
    if !down(&l.root).is_empty() {
        out.push_str("descendants:\n");
        tree(&l.root, &down, &label, "", &mut HashSet::new(), &mut out);
    }
    out
}

fn tree<'a>(
    id: &'a str,
    next: &dyn Fn(&str) -> Vec<(&'a str, &'a LineageEdge)>,
    label: &dyn Fn(&str) -> String,
    prefix: &str,
    path: &mut HashSet<&'a str>,
    out: &mut String,
) {
    path.insert(id);
    let children = next(id);
    for (i, (child, edge)) in children.iter().enumerate() {
        let last = i + 1 == children.len();
        let cycle = path.contains(child);
        out.push_str(&format!(
            "{prefix}{}{}  via {}{}\n",
            if last { "└── " } else { "├── " },
            label(child),
            edge_label(edge),
            if cycle { " (cycle)" } else { "" }
        ));
        if !cycle {
            let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
            tree(child, next, label, &deeper, path, out);
        }
    }
    path.remove(id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clreg_types::{ArtifactKind, Relation};

    fn node(id: &str, name: &str, kind: ArtifactKind) -> LineageNode {
        LineageNode {
            id: id.repeat(64),
            collab: "c".into(),
            name: name.into(),
            version: 1,
            kind,
        }
    }

    fn edge(p: &str, c: &str, relation: Relation, method: &str) -> LineageEdge {
        LineageEdge {
            parent: p.repeat(64),
            child: c.repeat(64),
            relation,
            method: method.into(),
            params: Default::default(),
            datasets: vec![],
        }
    }

    #[test]
    fn renders_both_directions() {
        let l = Lineage {
            root: "b".repeat(64),
            nodes: vec![
                node("a", "base", ArtifactKind::Base),
                node("b", "ft", ArtifactKind::Checkpoint),
                node("c", "m1", ArtifactKind::Merge),
                node("d", "m2", ArtifactKind::Merge),
            ],
            edges: vec![
                edge("a", "b", Relation::Finetune, "fft"),
                edge("b", "c", Relation::Merge, "ties"),
                edge("b", "d", Relation::Merge, ""),
            ],
        };
        let text = render_lineage(&l);
        let want = "\
ancestors:
└── c/base:1 [base] aaaaaaaaaaaa  via finetune (fft)
c/ft:1 [checkpoint] bbbbbbbbbbbb  (this artifact)
descendants:
├── c/m1:1 [merge] cccccccccccc  via merge (ties)
└── c/m2:1 [merge] dddddddddddd  via merge
";
        assert_eq!(text, want);
    }
}
