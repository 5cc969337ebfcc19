//! Lineage as a graph: an artifact's ancestors and descendants, and a collaboration's whole DAG,
//! in the API's `Lineage` shape (the CLI's `clreg lineage` and the web UI's graphs read these).

use std::collections::{BTreeSet, HashMap, VecDeque};

use clreg_types::{Lineage, LineageEdge, LineageNode};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, QueryTrait};

use crate::artifacts::member_collabs;
use crate::auth::Caller;
use crate::authz::Action;
use crate::db::entities::{artifact, collaboration, lineage_edge};
use crate::error::ApiError;
use crate::state::AppState;

/// Ancestors and descendants of `root`, limited to collaborations the caller can read.
pub async fn of_artifact(
    state: &AppState,
    caller: &Caller,
    root: &artifact::Model,
) -> Result<Lineage, ApiError> {
    let readable = member_collabs(state, caller.id, Action::Read).await?;
    let mut nodes: HashMap<String, artifact::Model> = HashMap::new();
    let mut edges: Vec<lineage_edge::Model> = Vec::new();
    let mut seen_edges = BTreeSet::new();
    nodes.insert(root.id.clone(), root.clone());
    for upward in [true, false] {
        let mut queue = VecDeque::from([root.id.clone()]);
        let mut visited = BTreeSet::from([root.id.clone()]);
        while let Some(current) = queue.pop_front() {
            let column = if upward {
                lineage_edge::Column::ChildId
            } else {
                lineage_edge::Column::ParentId
            };
            for e in lineage_edge::Entity::find()
                .filter(column.eq(&current))
                .all(&state.db)
                .await?
            {
                let next = if upward {
                    e.parent_id.clone()
                } else {
                    e.child_id.clone()
                };
                let Some(node) = artifact::Entity::find_by_id(&next).one(&state.db).await? else {
                    continue;
                };
                if !readable.contains(&node.collab_id) {
                    continue;
                }
                if seen_edges.insert(e.id) {
                    edges.push(e);
                }
                if visited.insert(next.clone()) {
                    nodes.insert(next.clone(), node);
                    queue.push_back(next);
                }
            }
        }
    }
    to_wire(state, root.id.clone(), nodes.into_values().collect(), edges).await
}

/// Every artifact of `collab` and every edge into one, plus the parents (in collaborations the
/// caller can read) those edges come from: at most four queries, whatever the size.
pub async fn of_collab(
    state: &AppState,
    caller: &Caller,
    collab: &collaboration::Model,
) -> Result<Lineage, ApiError> {
    let readable = member_collabs(state, caller.id, Action::Read).await?;
    let mut nodes: HashMap<String, artifact::Model> = artifact::Entity::find()
        .filter(artifact::Column::CollabId.eq(collab.id))
        .all(&state.db)
        .await?
        .into_iter()
        .map(|a| (a.id.clone(), a))
        .collect();
    let in_collab = || {
        artifact::Entity::find()
            .select_only()
            .column(artifact::Column::Id)
            .filter(artifact::Column::CollabId.eq(collab.id))
            .into_query()
    };
    let edges = lineage_edge::Entity::find()
        .filter(lineage_edge::Column::ChildId.in_subquery(in_collab()))
        .all(&state.db)
        .await?;
    if edges.iter().any(|e| !nodes.contains_key(&e.parent_id)) {
        let parents = lineage_edge::Entity::find()
            .select_only()
            .column(lineage_edge::Column::ParentId)
            .filter(lineage_edge::Column::ChildId.in_subquery(in_collab()))
            .into_query();
        for a in artifact::Entity::find()
            .filter(artifact::Column::Id.in_subquery(parents))
            .filter(artifact::Column::CollabId.ne(collab.id))
            .filter(artifact::Column::CollabId.is_in(readable))
            .all(&state.db)
            .await?
        {
            nodes.insert(a.id.clone(), a);
        }
    }
    let edges = edges
        .into_iter()
        .filter(|e| nodes.contains_key(&e.parent_id))
        .collect();
    to_wire(
        state,
        collab.name.clone(),
        nodes.into_values().collect(),
        edges,
    )
    .await
}

async fn to_wire(
    state: &AppState,
    root: String,
    nodes: Vec<artifact::Model>,
    edges: Vec<lineage_edge::Model>,
) -> Result<Lineage, ApiError> {
    let mut collab_names = HashMap::new();
    let mut wire_nodes = Vec::new();
    for n in nodes {
        if let std::collections::hash_map::Entry::Vacant(slot) = collab_names.entry(n.collab_id) {
            let c = collaboration::Entity::find_by_id(n.collab_id)
                .one(&state.db)
                .await?;
            slot.insert(c.map(|c| c.name).unwrap_or_default());
        }
        wire_nodes.push(LineageNode {
            collab: collab_names.get(&n.collab_id).cloned().unwrap_or_default(),
            kind: n.kind.parse().map_err(ApiError::internal)?,
            id: n.id,
            name: n.name,
            version: n.version,
        });
    }
    wire_nodes
        .sort_by(|a, b| (&a.collab, &a.name, a.version).cmp(&(&b.collab, &b.name, b.version)));
    let wire_edges = edges
        .into_iter()
        .map(|e| {
            Ok(LineageEdge {
                parent: e.parent_id,
                child: e.child_id,
                relation: e.relation.parse().map_err(ApiError::internal)?,
                method: e.method,
                params: serde_json::from_str(&e.params).map_err(ApiError::internal)?,
                datasets: serde_json::from_str(&e.datasets).map_err(ApiError::internal)?,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Lineage {
        root,
        nodes: wire_nodes,
        edges: wire_edges,
    })
}
