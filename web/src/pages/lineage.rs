//! The lineage graph: a collaboration's whole DAG on its own page, and the conversion from the
//! API's `Lineage` to the layout's nodes and edges (the artifact page draws a neighbourhood).

use clreg_types::{Collaboration, Lineage};
use maud::{Markup, html};

use super::{artifact_href, collab_href};
use crate::layout::{Chrome, page};
use crate::lineage::{Edge, Node, render};

/// `lineage` drawn as a layered DAG; `focus` (an artifact id) is outlined.
pub fn graph(lineage: &Lineage, focus: Option<&str>, id_prefix: &str, title: &str) -> Markup {
    let mut nodes: Vec<&clreg_types::LineageNode> = lineage.nodes.iter().collect();
    // A stable order (the API's is not): by collaboration, name and version.
    nodes.sort_by(|a, b| (&a.collab, &a.name, a.version).cmp(&(&b.collab, &b.name, b.version)));
    let index: std::collections::HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let layout_nodes: Vec<Node> = nodes
        .iter()
        .map(|n| Node {
            label: format!("{} v{}", n.name, n.version),
            detail: format!("{} · {}", n.kind.as_str(), n.collab),
            kind: n.kind,
            href: artifact_href(&n.id),
            focus: focus == Some(n.id.as_str()),
        })
        .collect();
    let edges: Vec<Edge> = lineage
        .edges
        .iter()
        .filter_map(|e| {
            Some(Edge {
                parent: *index.get(e.parent.as_str())?,
                child: *index.get(e.child.as_str())?,
                relation: e.relation,
                label: (!e.method.is_empty()).then(|| e.method.clone()),
            })
        })
        .collect();
    let desc = format!(
        "{} artifacts and {} lineage edges; parents above children. Each box links to its artifact.",
        layout_nodes.len(),
        edges.len()
    );
    render(&layout_nodes, &edges, id_prefix, title, &desc)
}

/// The collaboration's whole lineage graph.
pub fn lineage_page(chrome: &Chrome<'_>, collab: &Collaboration, lineage: &Lineage) -> Markup {
    let title = format!("Lineage of {}", collab.name);
    let body = html! {
        p.crumbs { a href=(collab_href(&collab.name)) { (collab.name) } " / lineage" }
        h1 { (title) }
        p { (lineage.nodes.len()) " artifacts, " (lineage.edges.len()) " edges. Colour and dash show the relation; labels name the method. Select a box to open its artifact." }
        div.graph { (graph(lineage, None, "lineage", &title)) }
    };
    page(&title, Some(chrome), None, body)
}
