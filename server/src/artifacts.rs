//! Artifacts: reference resolution, commit (validate, id, version, lineage, ledger) and lineage.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::Utc;
use clreg_engine::error::FormatError;
use clreg_engine::inspect::{self, FileAccess, Kind};
use clreg_types::{
    Artifact, ArtifactFile, ArtifactKind, ArtifactMetadata, CommitArtifact, Digest, ErrorCode,
    Relation, Role,
};
use object_store::{GetOptions, GetRange, ObjectStore};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::auth::Caller;
use crate::authz::{Access, Action};
use crate::blobs::blob_key;
use crate::db::entities::blob::WeightsCheck;
use crate::db::entities::{
    artifact, artifact_file, blob, collaboration, dataset, lineage_edge, member, user,
};
use crate::error::ApiError;
use crate::state::AppState;

/// Finds an artifact among the collaborations `within` (those the caller may see) by
/// `collab/name[:version|latest]`, full id, or unique id prefix (≥ 8 hex). Anything outside
/// `within` is not found, and does not make a prefix ambiguous.
pub async fn find(
    state: &AppState,
    reference: &str,
    within: &BTreeSet<i64>,
) -> Result<artifact::Model, ApiError> {
    let not_found = || ApiError::not_found(format!("artifact `{reference}`"));
    if let Some((collab_name, rest)) = reference.split_once('/') {
        let (name, version) = rest.split_once(':').unwrap_or((rest, "latest"));
        let collab = collaboration::Entity::find()
            .filter(collaboration::Column::Name.eq(collab_name))
            .one(&state.db)
            .await?
            .filter(|c| within.contains(&c.id))
            .ok_or_else(not_found)?;
        return by_name(state, collab.id, name, version)
            .await?
            .ok_or_else(not_found);
    }
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    if hex.len() < 8
        || hex.len() > 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(ApiError::bad_request(format!(
            "`{reference}` is not an artifact reference: use COLLAB/NAME[:VERSION], an id, or an id prefix of at least 8 hex digits"
        )));
    }
    if hex.len() == 64 {
        return artifact::Entity::find_by_id(hex)
            .one(&state.db)
            .await?
            .filter(|a| within.contains(&a.collab_id))
            .ok_or_else(not_found);
    }
    let mut found = artifact::Entity::find()
        .filter(artifact::Column::Id.starts_with(hex))
        .filter(artifact::Column::CollabId.is_in(within.iter().copied()))
        .all(&state.db)
        .await?;
    match found.len() {
        0 => Err(not_found()),
        1 => Ok(found.remove(0)),
        n => Err(ApiError::new(
            ErrorCode::AmbiguousRef,
            format!("id prefix `{hex}` matches {n} artifacts; give more digits"),
        )),
    }
}

pub async fn by_name(
    state: &AppState,
    collab_id: i64,
    name: &str,
    version: &str,
) -> Result<Option<artifact::Model>, ApiError> {
    let query = artifact::Entity::find()
        .filter(artifact::Column::CollabId.eq(collab_id))
        .filter(artifact::Column::Name.eq(name));
    if version == "latest" {
        return Ok(query
            .order_by_desc(artifact::Column::Version)
            .one(&state.db)
            .await?);
    }
    let version: i64 = clreg_types::parse_digits(version).ok_or_else(|| {
        ApiError::bad_request(format!("version `{version}` is not a number or `latest`"))
    })?;
    Ok(query
        .filter(artifact::Column::Version.eq(version))
        .one(&state.db)
        .await?)
}

/// Finds an artifact and checks the caller's route rule against its collaboration.
pub async fn find_for(
    state: &AppState,
    caller: &Caller,
    reference: &str,
) -> Result<(artifact::Model, Access), ApiError> {
    // Every role reads, so the caller's memberships are both what they may see and, once the
    // artifact is found, their roles in its collaboration: one query for the two.
    let memberships: Vec<(i64, Role)> = member::Entity::find()
        .filter(member::Column::UserId.eq(caller.id))
        .all(&state.db)
        .await?
        .into_iter()
        .filter_map(|m| Some((m.collab_id, m.role.parse().ok()?)))
        .filter(|(_, role)| Action::Read.roles().contains(role))
        .collect();
    let visible: BTreeSet<i64> = memberships.iter().map(|(c, _)| *c).collect();
    let found = find(state, reference, &visible).await?;
    let collab = collaboration::Entity::find_by_id(found.collab_id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::internal("artifact without collaboration"))?;
    let roles = memberships
        .into_iter()
        .filter(|(c, _)| *c == found.collab_id)
        .map(|(_, role)| role)
        .collect();
    let access = caller.access_with(collab, roles).map_err(|e| {
        if e.code == ErrorCode::NotFound {
            ApiError::not_found(format!("artifact `{reference}`"))
        } else {
            e
        }
    })?;
    Ok((found, access))
}

/// The wire form of an artifact.
pub async fn to_wire(state: &AppState, a: artifact::Model) -> Result<Artifact, ApiError> {
    let mut one = to_wire_all(state, vec![a]).await?;
    one.pop()
        .ok_or_else(|| ApiError::internal("an artifact lost on the way to the wire"))
}

/// The wire form of an artifact of `collab` (already read: one query fewer).
pub async fn to_wire_in(
    state: &AppState,
    a: artifact::Model,
    collab: &collaboration::Model,
) -> Result<Artifact, ApiError> {
    let known = HashMap::from([(collab.id, collab.name.clone())]);
    let mut one = wire(state, vec![a], known).await?;
    one.pop()
        .ok_or_else(|| ApiError::internal("an artifact lost on the way to the wire"))
}

/// The wire form of many artifacts, in their order: three queries for the lot (their
/// collaborations, authors and files), in batches that stay within every database's limit on
/// bound parameters.
pub async fn to_wire_all(
    state: &AppState,
    rows: Vec<artifact::Model>,
) -> Result<Vec<Artifact>, ApiError> {
    wire(state, rows, HashMap::new()).await
}

/// [`to_wire_all`] knowing the names of some collaborations already.
async fn wire(
    state: &AppState,
    rows: Vec<artifact::Model>,
    mut collabs: HashMap<i64, String>,
) -> Result<Vec<Artifact>, ApiError> {
    const BATCH: usize = 500;
    let mut creators = HashMap::new();
    let mut files: HashMap<String, Vec<ArtifactFile>> = HashMap::new();
    for batch in rows.chunks(BATCH) {
        let collab_ids: BTreeSet<i64> = batch
            .iter()
            .map(|a| a.collab_id)
            .filter(|c| !collabs.contains_key(c))
            .collect();
        if !collab_ids.is_empty() {
            for c in collaboration::Entity::find()
                .filter(collaboration::Column::Id.is_in(collab_ids))
                .all(&state.db)
                .await?
            {
                collabs.insert(c.id, c.name);
            }
        }
        let user_ids: BTreeSet<i64> = batch.iter().map(|a| a.created_by).collect();
        for u in user::Entity::find()
            .filter(user::Column::Id.is_in(user_ids))
            .all(&state.db)
            .await?
        {
            creators.insert(u.id, u.name);
        }
        for f in artifact_file::Entity::find()
            .filter(artifact_file::Column::ArtifactId.is_in(batch.iter().map(|a| a.id.clone())))
            .order_by_asc(artifact_file::Column::Path)
            .all(&state.db)
            .await?
        {
            files.entry(f.artifact_id).or_default().push(ArtifactFile {
                digest: Digest::parse_lenient(&f.digest).map_err(ApiError::internal)?,
                path: f.path,
                size: u64::try_from(f.size).unwrap_or(0),
            });
        }
    }
    rows.into_iter()
        .map(|a| {
            Ok(Artifact {
                kind: a.kind.parse().map_err(ApiError::internal)?,
                collab: collabs.get(&a.collab_id).cloned().unwrap_or_default(),
                name: a.name,
                version: a.version,
                base: a.base_id,
                description: a.description,
                metadata: serde_json::from_str(&a.metadata).map_err(ApiError::internal)?,
                files: files.remove(&a.id).unwrap_or_default(),
                created_by: creators.get(&a.created_by).cloned().unwrap_or_default(),
                created_at: a.created_at,
                id: a.id,
            })
        })
        .collect()
}

/// Reads artifact files out of the object store for the engine's inspectors, which run on a
/// blocking thread; each read blocks that thread on the runtime.
struct StoreFiles {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Handle,
    files: BTreeMap<String, (Digest, u64)>,
}

impl FileAccess for StoreFiles {
    fn size(&self, path: &str) -> Option<u64> {
        self.files.get(path).map(|f| f.1)
    }

    fn content_id(&self, path: &str) -> Option<String> {
        self.files.get(path).map(|(digest, _)| digest.hex())
    }

    fn read_range(&self, path: &str, start: u64, end: u64) -> Result<Vec<u8>, FormatError> {
        let io = |reason: String| FormatError::Io {
            file: path.to_string(),
            reason,
        };
        let (digest, _) = self
            .files
            .get(path)
            .ok_or_else(|| io("no such file in the artifact".into()))?;
        if start == end {
            return Ok(Vec::new());
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(start..end)),
            ..Default::default()
        };
        self.runtime.block_on(async {
            let result = self
                .store
                .get_opts(&blob_key(digest), options)
                .await
                .map_err(|e| io(e.to_string()))?;
            result
                .bytes()
                .await
                .map(|b| b.to_vec())
                .map_err(|e| io(e.to_string()))
        })
    }
}

async fn inspect_files(
    state: &AppState,
    kind: Kind,
    files: BTreeMap<String, (Digest, u64)>,
    base_shapes: Option<BTreeMap<String, Vec<u64>>>,
) -> Result<inspect::Report, ApiError> {
    let _permit = state.cpu.acquire().await.map_err(ApiError::internal)?;
    let access = StoreFiles {
        store: state.store.clone(),
        runtime: tokio::runtime::Handle::current(),
        files,
    };
    tokio::task::spawn_blocking(move || {
        let paths: Vec<String> = access.files.keys().cloned().collect();
        inspect::inspect_artifact(kind, &access, &paths, base_shapes.as_ref())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::from)
}

/// Reads every float tensor of `paths` (safetensors files the upload's scan did not cover)
/// and refuses the first NaN or infinity: one tensor in memory at a time.
async fn check_finite_at_commit(
    state: &AppState,
    files: &BTreeMap<String, (Digest, u64)>,
    paths: Vec<String>,
) -> Result<(), ApiError> {
    let _permit = state.cpu.acquire().await.map_err(ApiError::internal)?;
    let access = StoreFiles {
        store: state.store.clone(),
        runtime: tokio::runtime::Handle::current(),
        files: files.clone(),
    };
    tokio::task::spawn_blocking(move || {
        for path in &paths {
            let info = inspect::read_header(&access, path)?;
            inspect::check_finite(&access, path, &info)?;
        }
        Ok::<_, clreg_engine::error::FormatError>(())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::from)
}

async fn files_of(
    state: &AppState,
    artifact_id: &str,
) -> Result<BTreeMap<String, (Digest, u64)>, ApiError> {
    let rows = artifact_file::Entity::find()
        .filter(artifact_file::Column::ArtifactId.eq(artifact_id))
        .all(&state.db)
        .await?;
    rows.into_iter()
        .map(|f| {
            Ok((
                f.path,
                (
                    Digest::parse_lenient(&f.digest).map_err(ApiError::internal)?,
                    u64::try_from(f.size).unwrap_or(0),
                ),
            ))
        })
        .collect()
}

/// Commits a manifest: checks, inspects, and writes artifact + files + edges + ledger event in one
/// transaction. Returns (created, artifact row).
pub async fn commit(
    state: &AppState,
    caller: &Caller,
    access: &Access,
    req: CommitArtifact,
) -> Result<(bool, artifact::Model), ApiError> {
    clreg_types::check_name(&req.name).map_err(|m| ApiError::new(ErrorCode::InvalidName, m))?;
    let engine_kind = match req.kind {
        ArtifactKind::Base => {
            access.require(Action::PushBase)?;
            Kind::Base
        }
        ArtifactKind::Checkpoint => Kind::Checkpoint,
        ArtifactKind::Adapter => Kind::Adapter,
        // A merge is a checkpoint or, merged from adapters, an adapter (`clreg local merge`).
        ArtifactKind::Merge if req.files.contains_key(inspect::ADAPTER_CONFIG) => Kind::Adapter,
        ArtifactKind::Merge => Kind::Checkpoint,
        ArtifactKind::Mixture => Kind::Mixture,
    };
    let author = Author {
        id: caller.id,
        name: caller.name.clone(),
    };
    let prepared = prepare(state, &author, &access.collab, engine_kind, req).await?;
    if let Some(existing) = artifact::Entity::find_by_id(&prepared.id)
        .one(&state.db)
        .await?
    {
        return Ok((false, existing));
    }
    crate::db::write(&state.db, |txn| {
        let prepared = prepared.clone();
        Box::pin(async move { insert(txn, &prepared).await })
    })
    .await
}

/// Who commits an artifact: a caller pushing, or the submitter of the job that made it.
#[derive(Debug, Clone)]
pub struct Author {
    pub id: i64,
    pub name: String,
}

/// A lineage edge to insert: parent id, relation, method, parameters, dataset digests.
type ParentEdge = (
    String,
    Relation,
    String,
    BTreeMap<String, serde_json::Value>,
    Vec<Digest>,
);

/// The semi-cooperative collaborations where `digest` is a registered dataset, by name.
async fn semi_datasets_holding(
    state: &AppState,
    digest: &clreg_types::Digest,
) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for d in dataset::Entity::find()
        .filter(dataset::Column::Digest.eq(digest.hex()))
        .all(&state.db)
        .await?
    {
        if let Some(c) = collaboration::Entity::find_by_id(d.collab_id)
            .one(&state.db)
            .await?
            .filter(|c| c.policy == collaboration::PolicyValue::Semi)
        {
            out.push(c.name);
        }
    }
    Ok(out)
}

/// The most files one artifact may have (a sharded checkpoint has tens).
pub const MAX_FILES: usize = 4096;

/// A manifest checked, inspected and resolved, ready to be inserted.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub id: String,
    collab: collaboration::Model,
    author: Author,
    req: CommitArtifact,
    base_id: Option<String>,
    metadata_json: String,
    parents: Vec<ParentEdge>,
    /// The collaboration's storage quota, checked when the files are added.
    quota: u64,
}

/// Checks every file (possession, size), resolves the base and parents the author may read,
/// inspects the files with the engine, and computes the artifact id. Reads only.
pub async fn prepare(
    state: &AppState,
    author: &Author,
    collab: &collaboration::Model,
    engine_kind: Kind,
    req: CommitArtifact,
) -> Result<Prepared, ApiError> {
    if req.files.is_empty() {
        return Err(ApiError::bad_request("the manifest lists no files"));
    }
    if req.files.len() > MAX_FILES {
        return Err(ApiError::bad_request(format!(
            "the manifest lists {} files; an artifact has at most {MAX_FILES}",
            req.files.len()
        )));
    }
    clreg_types::check_manifest_paths(req.files.keys().map(String::as_str))
        .map_err(|m| ApiError::new(ErrorCode::InvalidPath, m))?;
    // Every file: a safe path and a blob the server has, of the declared size, and whose
    // weights (a safetensors file) the upload's scan found finite.
    let mut files = BTreeMap::new();
    let mut unscanned = Vec::new();
    // Each distinct blob is looked up once, however many paths name it.
    let mut blobs: HashMap<Digest, (blob::Model, Vec<String>)> = HashMap::new();
    for (path, entry) in &req.files {
        clreg_types::check_file_path(path).map_err(|m| ApiError::new(ErrorCode::InvalidPath, m))?;
        // Possession first, so the answer says nothing of blobs the caller cannot name.
        let unknown = || {
            ApiError::new(
                ErrorCode::BlobUnknown,
                format!(
                    "file `{path}`: you have not uploaded blob {}; upload it first",
                    entry.digest
                ),
            )
        };
        let first = !blobs.contains_key(&entry.digest);
        if first {
            if !crate::blobs::may_name(state, author.id, &entry.digest).await? {
                return Err(unknown());
            }
            let stored = blob::Entity::find_by_id(entry.digest.hex())
                .one(&state.db)
                .await?
                .ok_or_else(unknown)?;
            let semi = semi_datasets_holding(state, &entry.digest).await?;
            blobs.insert(entry.digest.clone(), (stored, semi));
        }
        let (stored, semi) = &blobs[&entry.digest];
        if u64::try_from(stored.size).ok() != Some(entry.size) {
            return Err(ApiError::bad_request(format!(
                "file `{path}`: declared size {} but blob {} has {} bytes",
                entry.size, entry.digest, stored.size
            )));
        }
        crate::policy::publishable(path, semi)?;
        if path.ends_with(".safetensors") {
            match stored.weights_check {
                Some(WeightsCheck::NonFinite) => {
                    return Err(ApiError::new(
                        ErrorCode::NonFiniteWeights,
                        format!(
                            "{path}: tensor `{}` holds a NaN or infinite value (element {}); fix \
                             the training run that produced it",
                            stored.non_finite_tensor.as_deref().unwrap_or("?"),
                            stored.non_finite_element.unwrap_or(0)
                        ),
                    ));
                }
                // Not safetensors at all: the inspection below refuses it.
                Some(WeightsCheck::Finite | WeightsCheck::NotSafetensors) => {}
                // Stored before uploads were scanned, or a header too large to scan in the stream.
                None | Some(WeightsCheck::Unscanned) if first => unscanned.push(path.clone()),
                None | Some(WeightsCheck::Unscanned) => {}
            }
        }
        files.insert(path.clone(), (entry.digest.clone(), entry.size));
    }
    // The base: required for everything but a base model, must itself be a base.
    let base = match (&req.base, req.kind) {
        (None, ArtifactKind::Base) => None,
        (Some(_), ArtifactKind::Base) => {
            return Err(ApiError::bad_request(
                "a base model has no base; drop `base`",
            ));
        }
        (None, kind) => {
            return Err(ApiError::bad_request(format!(
                "an artifact of kind `{kind}` must name its base model (`base`)"
            )));
        }
        (Some(r), _) => {
            let (b, _) = find_for_read(state, author.id, r).await.map_err(|e| {
                if e.code == ErrorCode::NotFound {
                    ApiError::not_found(format!("base model `{r}`"))
                } else {
                    e
                }
            })?;
            if b.kind != ArtifactKind::Base.as_str() {
                return Err(ApiError::bad_request(format!(
                    "`{r}` is a {}, not a base model",
                    b.kind
                )));
            }
            Some(b)
        }
    };
    let base_shapes = match &base {
        Some(b) => Some(
            inspect_files(state, Kind::Other, files_of(state, &b.id).await?, None)
                .await?
                .shapes,
        ),
        None => None,
    };
    let report = inspect_files(state, engine_kind, files.clone(), base_shapes).await?;
    if !unscanned.is_empty() {
        check_finite_at_commit(state, &files, unscanned).await?;
    }
    let base_arch = match &base {
        Some(b) => serde_json::from_str::<ArtifactMetadata>(&b.metadata)
            .ok()
            .and_then(|m| m.architecture),
        None => None,
    };
    let metadata = ArtifactMetadata {
        architecture: report.architecture.clone().or(base_arch),
        dtype: report.dtype.clone(),
        parameters: report.parameters,
        tensors: report.tensors,
        adapter: report
            .adapter
            .as_ref()
            .map(|a| clreg_types::AdapterMetadata {
                r: a.r,
                lora_alpha: a.lora_alpha,
                target_modules: a.target_modules.clone(),
                use_rslora: a.use_rslora,
            }),
    };
    // Parents: resolved, readable; datasets on edges must be registered in this collaboration.
    let mut parents = Vec::new();
    for p in &req.parents {
        let (parent, _) = find_for_read(state, author.id, &p.parent).await?;
        for d in &p.datasets {
            let registered = dataset::Entity::find()
                .filter(dataset::Column::CollabId.eq(collab.id))
                .filter(dataset::Column::Digest.eq(d.hex()))
                .one(&state.db)
                .await?;
            if registered.is_none() {
                return Err(ApiError::new(
                    ErrorCode::InvalidDataset,
                    format!(
                        "dataset {d} on the edge from `{}` is not registered in `{}`; register it first (`clreg dataset push`)",
                        p.parent, collab.name
                    ),
                ));
            }
        }
        parents.push((
            parent.id,
            p.relation,
            p.method.clone(),
            p.params.clone(),
            p.datasets.clone(),
        ));
    }
    if parents.is_empty()
        && let Some(b) = &base
    {
        {
            let relation = if req.kind == ArtifactKind::Adapter {
                Relation::Adapter
            } else {
                Relation::Finetune
            };
            parents.push((
                b.id.clone(),
                relation,
                String::new(),
                BTreeMap::new(),
                Vec::new(),
            ));
        }
    }
    let canonical = json!({
        "collab": collab.name,
        "name": req.name,
        "kind": req.kind,
        "base": base.as_ref().map(|b| b.id.clone()),
        "description": req.description,
        "files": req.files,
        "parents": parents.iter().map(|(id, rel, method, params, datasets)| json!({
            "parent": id, "relation": rel, "method": method, "params": params, "datasets": datasets,
        })).collect::<Vec<_>>(),
    });
    let id = hex::encode(Sha256::digest(
        clreg_types::canonical_json(&canonical).as_bytes(),
    ));
    let metadata_json = serde_json::to_string(&metadata).map_err(ApiError::internal)?;
    Ok(Prepared {
        id,
        collab: collab.clone(),
        author: author.clone(),
        base_id: base.map(|b| b.id),
        req,
        metadata_json,
        parents,
        quota: state.config.collab_quota_bytes,
    })
}

/// Inserts a prepared artifact with its files, lineage edges and ledger event in `txn`; an
/// artifact with the same id already there is returned as not created.
pub async fn insert<C: sea_orm::ConnectionTrait>(
    txn: &C,
    p: &Prepared,
) -> Result<(bool, artifact::Model), ApiError> {
    let (collab, req, id, parents) = (&p.collab, &p.req, &p.id, &p.parents);
    let (base_id, actor, user_id) = (&p.base_id, &p.author.name, p.author.id);
    crate::db::lock_collab(txn, collab.id).await?;
    // An identical commit may have won a race since it was prepared.
    if let Some(existing) = artifact::Entity::find_by_id(id).one(txn).await? {
        return Ok((false, existing));
    }
    crate::quota::check(
        txn,
        collab,
        req.files.values().map(|f| (f.digest.hex(), f.size)),
        p.quota,
    )
    .await?;
    let latest = artifact::Entity::find()
        .filter(artifact::Column::CollabId.eq(collab.id))
        .filter(artifact::Column::Name.eq(&req.name))
        .order_by_desc(artifact::Column::Version)
        .one(txn)
        .await?;
    // A name's kind is fixed by its first version: a checkpoint cannot take over a base's name
    // (and a new version of a base needs the right to push bases, checked at commit).
    if let Some(first) = &latest
        && first.kind != req.kind.as_str()
    {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "`{}` is a {} in `{}`; a new version must be a {} too: choose another name",
                req.name, first.kind, collab.name, first.kind
            ),
        ));
    }
    let version = latest.map_or(1, |a| a.version + 1);
    let model = artifact::ActiveModel {
        id: Set(id.clone()),
        collab_id: Set(collab.id),
        name: Set(req.name.clone()),
        version: Set(version),
        kind: Set(req.kind.as_str().to_string()),
        base_id: Set(base_id.clone()),
        description: Set(req.description.clone()),
        metadata: Set(p.metadata_json.clone()),
        created_by: Set(user_id),
        created_at: Set(Utc::now()),
    }
    .insert(txn)
    .await?;
    for (path, entry) in &req.files {
        artifact_file::ActiveModel {
            artifact_id: Set(id.clone()),
            path: Set(path.clone()),
            digest: Set(entry.digest.hex()),
            size: Set(i64::try_from(entry.size).unwrap_or(i64::MAX)),
            ..Default::default()
        }
        .insert(txn)
        .await?;
    }
    for (parent, relation, method, params, datasets) in parents {
        lineage_edge::ActiveModel {
            parent_id: Set(parent.clone()),
            child_id: Set(id.clone()),
            relation: Set(relation.as_str().to_string()),
            method: Set(method.clone()),
            params: Set(serde_json::to_string(params).map_err(ApiError::internal)?),
            datasets: Set(serde_json::to_string(datasets).map_err(ApiError::internal)?),
            ..Default::default()
        }
        .insert(txn)
        .await?;
    }
    crate::ledger::append(
        txn,
        Some((collab.id, &collab.name)),
        "artifact.pushed",
        actor,
        json!({
            "id": id, "name": req.name, "version": version, "kind": req.kind,
            "base": base_id, "files": req.files,
            "parents": parents.iter().map(|p| json!({"parent": p.0, "relation": p.1, "datasets": p.4})).collect::<Vec<_>>(),
        }),
    )
    .await?;
    Ok((true, model))
}

/// Like `find_for`, but only needs read access whatever the route's rule is (bases, parents).
async fn find_for_read(
    state: &AppState,
    user_id: i64,
    reference: &str,
) -> Result<(artifact::Model, ()), ApiError> {
    let readable = member_collabs(state, user_id, Action::Read).await?;
    Ok((find(state, reference, &readable).await?, ()))
}

/// The artifacts of collaborations `within` that hold blob `digest`, newest first.
pub async fn holding(
    state: &AppState,
    digest: &clreg_types::Digest,
    within: BTreeSet<i64>,
) -> Result<Vec<artifact::Model>, ApiError> {
    let ids: Vec<String> = artifact_file::Entity::find()
        .filter(artifact_file::Column::Digest.eq(digest.hex()))
        .all(&state.db)
        .await?
        .into_iter()
        .map(|f| f.artifact_id)
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(artifact::Entity::find()
        .filter(artifact::Column::Id.is_in(ids))
        .filter(artifact::Column::CollabId.is_in(within))
        .order_by_desc(artifact::Column::CreatedAt)
        .all(&state.db)
        .await?)
}

/// Collaborations where `user` holds a role that allows `action`.
pub async fn member_collabs(
    state: &AppState,
    user_id: i64,
    action: Action,
) -> Result<BTreeSet<i64>, ApiError> {
    let roles: Vec<&str> = action.roles().iter().map(|r| r.as_str()).collect();
    Ok(member::Entity::find()
        .filter(member::Column::UserId.eq(user_id))
        .filter(member::Column::Role.is_in(roles))
        .all(&state.db)
        .await?
        .into_iter()
        .map(|m| m.collab_id)
        .collect())
}
