//! Lineage as a graph: an artifact's ancestors and descendants, and a collaboration's whole DAG,
//! in the API's `Lineage` shape (the CLI's `clreg lineage` and the web UI's graphs read these).

use std::collections::{HashMap, HashSet, VecDeque};

use clreg_types::{Lineage, LineageEdge, LineageNode};
use sea_orm::{
    ColumnTrait, DbBackend, EntityTrait, QueryFilter, QuerySelect, QueryTrait, Statement,
};

use crate::artifacts::member_collabs;
use crate::auth::Caller;
use crate::authz::Action;
use crate::db::entities::{artifact, collaboration, lineage_edge};
use crate::error::ApiError;
use crate::state::AppState;

/// Ancestors and descendants of `root`, limited to collaborations the caller can read (the
/// walk does not pass through an artifact the caller cannot read). Two queries whatever the
/// depth: recursive common table expressions collect every ancestor and descendant with the
/// edges between them, and the walk through readable artifacts runs here, in memory. (Joining
/// `artifacts` inside the recursion to filter there made SQLite's planner take 350 ms for a
/// 1,000-round chain; without it each query takes under 10 ms.)
pub async fn of_artifact(
    state: &AppState,
    caller: &Caller,
    root: &artifact::Model,
) -> Result<Lineage, ApiError> {
    let readable = member_collabs(state, caller.id, Action::Read).await?;
    let backend = state.db.get_database_backend();
    let root_param = match backend {
        DbBackend::Postgres => "$1",
        _ => "?1",
    };
    // `up` holds the root and every ancestor, `down` the root and every descendant (UNION, not
    // UNION ALL: each artifact once, so a cycle would end too). The casts give both arms of a
    // walk one type, as PostgreSQL requires.
    let walks = format!(
        "WITH RECURSIVE \
         up(id) AS (SELECT CAST({root_param} AS TEXT) UNION \
           SELECT CAST(e.parent_id AS TEXT) FROM lineage_edges e JOIN up ON e.child_id = up.id), \
         down(id) AS (SELECT CAST({root_param} AS TEXT) UNION \
           SELECT CAST(e.child_id AS TEXT) FROM lineage_edges e JOIN down ON e.parent_id = down.id) "
    );
    let values: Vec<sea_orm::Value> = vec![root.id.clone().into()];
    let nodes: HashMap<String, artifact::Model> = artifact::Entity::find()
        .from_raw_sql(Statement::from_sql_and_values(
            backend,
            format!(
                "{walks}SELECT a.* FROM artifacts a \
                 WHERE a.id IN (SELECT id FROM up UNION SELECT id FROM down)"
            ),
            values.clone(),
        ))
        .all(&state.db)
        .await?
        .into_iter()
        .filter(|a| a.id == root.id || readable.contains(&a.collab_id))
        .map(|a| (a.id.clone(), a))
        .collect();
    // Every edge between two ancestors or between two descendants.
    let edges = lineage_edge::Entity::find()
        .from_raw_sql(Statement::from_sql_and_values(
            backend,
            format!(
                "{walks}SELECT e.* FROM lineage_edges e \
                 WHERE (e.child_id IN (SELECT id FROM up) AND e.parent_id IN (SELECT id FROM up)) \
                 OR (e.parent_id IN (SELECT id FROM down) AND e.child_id IN (SELECT id FROM down)) \
                 ORDER BY e.id"
            ),
            values,
        ))
        .all(&state.db)
        .await?;
    // The walks again, through readable artifacts only.
    let mut keep_nodes = HashSet::from([root.id.clone()]);
    let mut keep_edges = HashSet::new();
    for upward in [true, false] {
        let mut next: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, e) in edges.iter().enumerate() {
            let from = if upward { &e.child_id } else { &e.parent_id };
            next.entry(from.as_str()).or_default().push(i);
        }
        let mut queue = VecDeque::from([root.id.as_str()]);
        let mut seen = HashSet::from([root.id.as_str()]);
        while let Some(current) = queue.pop_front() {
            for &i in next.get(current).into_iter().flatten() {
                let e = &edges[i];
                let to = if upward { &e.parent_id } else { &e.child_id };
                if !nodes.contains_key(to) {
                    continue;
                }
                keep_edges.insert(i);
                if seen.insert(to.as_str()) {
                    keep_nodes.insert(to.clone());
                    queue.push_back(to.as_str());
                }
            }
        }
    }
    let edges = edges
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep_edges.contains(i))
        .map(|(_, e)| e)
        .collect();
    let nodes = nodes
        .into_values()
        .filter(|a| keep_nodes.contains(&a.id))
        .collect();
    to_wire(state, root.id.clone(), nodes, edges).await
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
