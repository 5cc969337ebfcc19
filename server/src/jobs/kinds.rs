//! What each kind of job does around the engine: the engine spec a claimed job becomes once
//! its inputs are staged ([`spec`]), and the artifact its output becomes, with the lineage
//! edges taken from the run ([`commit_plan`]). The worker ([`super::worker`]) does the rest,
//! the same for every kind.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use clreg_engine::inspect::Kind;
use clreg_engine::job::{JobOutput, JobSpec, MergeSpec, MixLayout, MixSpec};
use clreg_engine::provenance::{self, Input, Provenance};
use clreg_types::{ArtifactKind, ErrorCode, JobKind, ParentSpec, Relation, SubmitJob};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::data::{self, DataRole};
use super::stage;
use super::worker::{Failure, engine_failure, submitter_roles};
use crate::db::entities::{artifact, collaboration, lineage_edge, user};
use crate::error::ApiError;
use crate::state::AppState;

/// The job's input artifacts, staged: by the reference the request names them with.
#[derive(Default)]
pub(super) struct Staged {
    pub dirs: HashMap<String, PathBuf>,
    pub rows: BTreeMap<String, artifact::Model>,
    /// Local path → hex sha256 of every staged file (the engine hashes nothing again).
    pub digests: HashMap<PathBuf, String>,
    /// The inputs' cache entries, held against eviction while the job runs.
    pub held: Vec<stage::InUse>,
}

impl Staged {
    fn dir(&self, reference: &str) -> Result<PathBuf, ApiError> {
        self.dirs
            .get(reference)
            .cloned()
            .ok_or_else(|| ApiError::internal(format!("input `{reference}` was not staged")))
    }

    /// Stages artifact `id` into the input cache, keeps its digests and holds it against
    /// eviction until the job ends; returns its directory.
    pub(super) async fn stage(&mut self, state: &AppState, id: &str) -> Result<PathBuf, ApiError> {
        let (dir, known, held) = stage::stage_artifact(state, id).await?;
        self.digests.extend(known);
        self.held.push(held);
        Ok(dir)
    }
}

/// Who ran the job, where, and with what it may read.
pub(super) struct Context<'a> {
    pub state: &'a AppState,
    pub job: uuid::Uuid,
    pub collab: &'a collaboration::Model,
    pub submitter: &'a user::Model,
    /// The collaborations whose artifacts the submitter may download.
    pub downloadable: &'a BTreeSet<i64>,
    pub scratch: &'a Path,
    pub output: &'a Path,
}

/// The engine spec of a claimed job, with every reference replaced by its staged directory.
/// Data uses are decided again here: the policy or the submitter's roles may have changed
/// since submission.
pub(super) async fn spec(
    cx: &Context<'_>,
    request: &SubmitJob,
    staged: &mut Staged,
) -> Result<JobSpec, Failure> {
    let output = cx.output.to_path_buf();
    Ok(match request.kind {
        JobKind::Merge => {
            let mut recipe = clreg_engine::merge::Recipe::from_yaml(recipe_text(request))
                .map_err(|e| engine_failure(e.code(), e.to_string()))?;
            if let Some(base) = &recipe.base_model {
                recipe.base_model = Some(staged.dir(&base.to_string_lossy())?);
            }
            for m in &mut recipe.models {
                m.model = staged.dir(&m.model.to_string_lossy())?;
            }
            JobSpec::Merge(MergeSpec { recipe, output })
        }
        JobKind::Mix => {
            let mut recipe = clreg_engine::moe::MoeRecipe::from_yaml(recipe_text(request))
                .map_err(|e| engine_failure(e.code(), e.to_string()))?;
            recipe.base_model = staged.dir(&recipe.base_model.to_string_lossy())?;
            for e in &mut recipe.experts {
                e.source_model = staged.dir(&e.source_model.to_string_lossy())?;
            }
            let router_training = match super::router_settings(request)? {
                Some(settings) => {
                    decide_data(cx, request, false).await?;
                    let staged_data =
                        data::stage(cx.state, cx.job, &request.data, cx.scratch).await?;
                    let calibration = staged_data.into_iter().next().ok_or_else(|| {
                        ApiError::internal("a mix job's calibration set was not staged")
                    })?;
                    Some(settings.with_data(calibration))
                }
                None => None,
            };
            JobSpec::Mix(MixSpec {
                recipe,
                output,
                layout: if request.lora {
                    MixLayout::LoraMoe
                } else {
                    MixLayout::Mixtral
                },
                router_training,
            })
        }
        JobKind::Train => {
            decide_data(cx, request, false).await?;
            JobSpec::Train(clreg_engine::job::TrainSpec {
                base: staged.dir(request.base.as_deref().unwrap_or_default())?,
                adapters: request
                    .adapters
                    .iter()
                    .map(|r| staged.dir(r))
                    .collect::<Result<_, _>>()?,
                data: data::stage(cx.state, cx.job, &request.data, cx.scratch).await?,
                past: data::stage(cx.state, cx.job, &request.past, cx.scratch).await?,
                output,
                checkpoint_dir: None,
                checkpoint_every: None,
                resume: false,
                config: super::train_config(request)?,
            })
        }
        JobKind::Eval => {
            decide_data(cx, request, true).await?;
            let reference = request.artifact.clone().unwrap_or_default();
            let row = staged
                .rows
                .get(&reference)
                .cloned()
                .ok_or_else(|| ApiError::internal("eval job without its artifact"))?;
            let dir = staged.dir(&reference)?;
            // An adapter is scored on its base, stacked on the adapters it was trained over;
            // a LoRA-MoE bundle on its base, staged here (the path it records is the mixing
            // job's).
            let (model, adapters, bundle_base) = if row.kind == ArtifactKind::Adapter.as_str() {
                let base_dir = stage_base(cx, staged, &row, "adapter").await?;
                // The model after a round is the base with every earlier round's adapter (as
                // its training saw them) and this one.
                let mut adapters = Vec::new();
                for earlier in earlier_adapters(cx, &row.id).await? {
                    adapters.push(staged.stage(cx.state, &earlier).await?);
                }
                adapters.push(dir);
                (base_dir, adapters, None)
            } else if dir.join(clreg_engine::moe::lora_moe::BUNDLE_JSON).is_file() {
                let base_dir = stage_base(cx, staged, &row, "mixture").await?;
                (dir, vec![], Some(base_dir))
            } else {
                (dir, vec![], None)
            };
            let carried: Vec<clreg_types::JobData> =
                request.tasks.iter().map(|t| t.data.clone()).collect();
            let paths = data::stage(cx.state, cx.job, &carried, cx.scratch).await?;
            let mut tasks = Vec::with_capacity(paths.len());
            for (t, path) in request.tasks.iter().zip(paths) {
                tasks.push(clreg_engine::job::EvalTask {
                    name: t.task.clone(),
                    path,
                    metric: super::metric_of(&t.metric)?,
                });
            }
            JobSpec::Eval(clreg_engine::job::EvalSpec {
                model,
                adapters,
                bundle_base,
                tasks,
                // Reports keep no examples: dataset content never lands in the database (a
                // policy tightened later could not purge it from reports).
                options: super::eval_settings(request)?.options(0),
                output: None,
            })
        }
    })
}

/// Stages the base model of `row` (an adapter or a LoRA-MoE bundle, named `what` in errors),
/// which the submitter must be able to read.
async fn stage_base(
    cx: &Context<'_>,
    staged: &mut Staged,
    row: &artifact::Model,
    what: &str,
) -> Result<PathBuf, Failure> {
    let base_id = row
        .base_id
        .clone()
        .ok_or_else(|| ApiError::internal(format!("{what} without base")))?;
    if !readable(cx, &base_id).await? {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!(
                "the {what}'s base model is not readable by {}; it cannot be scored",
                cx.submitter.name
            ),
        )
        .into());
    }
    Ok(staged.stage(cx.state, &base_id).await?)
}

/// Whether artifact `id` exists and the submitter may download it.
async fn readable(cx: &Context<'_>, id: &str) -> Result<bool, Failure> {
    Ok(artifact::Entity::find_by_id(id)
        .one(&cx.state.db)
        .await?
        .is_some_and(|a| cx.downloadable.contains(&a.collab_id)))
}

/// The adapters an adapter was trained on top of (its `earlier_adapter` edges, by round),
/// each readable by the submitter.
async fn earlier_adapters(cx: &Context<'_>, adapter: &str) -> Result<Vec<String>, Failure> {
    let mut found: Vec<(u64, String)> = Vec::new();
    for e in lineage_edge::Entity::find()
        .filter(lineage_edge::Column::ChildId.eq(adapter))
        .all(&cx.state.db)
        .await?
    {
        let params: serde_json::Value = serde_json::from_str(&e.params).unwrap_or_default();
        if params["role"] != "earlier_adapter" {
            continue;
        }
        if !readable(cx, &e.parent_id).await? {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "the adapter was trained on top of {}, which {} cannot read; it cannot be scored",
                    e.parent_id, cx.submitter.name
                ),
            )
            .into());
        }
        found.push((params["round"].as_u64().unwrap_or(0), e.parent_id));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, id)| id).collect())
}

fn recipe_text(request: &SubmitJob) -> &str {
    request.recipe.as_deref().unwrap_or_default()
}

/// Every dataset the job uses, decided by the policy module as things stand now.
async fn decide_data(
    cx: &Context<'_>,
    request: &SubmitJob,
    evaluating: bool,
) -> Result<(), Failure> {
    let roles = submitter_roles(cx.state, cx.collab.id, cx.submitter.id).await?;
    let policy: clreg_types::Policy = cx.collab.policy.into();
    let uses = request
        .data
        .iter()
        .map(|d| (d, DataRole::Current))
        .chain(request.past.iter().map(|d| (d, DataRole::Past)))
        .chain(request.tasks.iter().map(|t| (&t.data, DataRole::Current)));
    for (d, role) in uses {
        crate::policy::decide(
            &cx.collab.name,
            policy,
            &roles,
            data::data_use(d, role, evaluating),
        )?;
    }
    Ok(())
}

/// What a job's output is committed as.
pub(super) struct Plan {
    pub kind: ArtifactKind,
    pub inspect: Kind,
    pub parents: Vec<ParentSpec>,
    pub base: Option<String>,
}

/// The artifact kind, inspection and lineage of a job's output. The edges come from the run's
/// record ([`clreg_engine::provenance`], as for a pushed local run): one per distinct input
/// artifact, with the method and every parameter of the run.
pub(super) fn commit_plan(
    staged: &Staged,
    output: &JobOutput,
    provenance: &Provenance,
) -> Result<Plan, Failure> {
    let by_dir: HashMap<&Path, &artifact::Model> = staged
        .dirs
        .iter()
        .filter_map(|(r, dir)| Some((dir.as_path(), staged.rows.get(r)?)))
        .collect();
    let mut rows = Vec::new();
    for input in &provenance.inputs {
        let row = by_dir.get(input.path.as_path()).ok_or_else(|| {
            ApiError::internal(format!(
                "the run's record names input {} which the job did not stage",
                input.path.display()
            ))
        })?;
        rows.push((input, *row));
    }
    let mut seen = BTreeSet::new();
    let parents = rows
        .iter()
        .filter(|(_, row)| seen.insert(row.id.clone()))
        .map(|(input, row)| parent_spec(input, &provenance.method, row.id.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    // The base: the base input's (a merge's `role: base`, else the first input).
    let first = rows
        .iter()
        .find(|(i, _)| i.params.get("role").and_then(|r| r.as_str()) == Some("base"))
        .or(rows.first())
        .map(|(_, row)| *row)
        .ok_or_else(|| ApiError::internal("a run without inputs"))?;
    let adapter = provenance.output_kind == "adapter";
    let (kind, inspect) = match output {
        JobOutput::Merge(_) if adapter => (ArtifactKind::Merge, Kind::Adapter),
        JobOutput::Merge(_) => (ArtifactKind::Merge, Kind::Checkpoint),
        JobOutput::Mix(_) => (ArtifactKind::Mixture, Kind::Mixture),
        JobOutput::Train(_) if adapter => (ArtifactKind::Adapter, Kind::Adapter),
        JobOutput::Train(_) => (ArtifactKind::Checkpoint, Kind::Checkpoint),
        JobOutput::Eval { .. } => {
            return Err(ApiError::internal("an eval job commits no artifact").into());
        }
    };
    Ok(Plan {
        kind,
        inspect,
        parents,
        base: base_of(first),
    })
}

/// The edge to `parent` a record's input implies.
pub fn parent_spec(input: &Input, method: &str, parent: String) -> Result<ParentSpec, ApiError> {
    let datasets = input
        .datasets
        .iter()
        .map(|d| clreg_types::Digest::parse_lenient(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)?;
    Ok(ParentSpec {
        parent,
        relation: match input.relation {
            provenance::Relation::Merge => Relation::Merge,
            provenance::Relation::Mix => Relation::Mix,
            provenance::Relation::Adapter => Relation::Adapter,
            provenance::Relation::Finetune => Relation::Finetune,
        },
        method: method.to_string(),
        params: input.params.clone().into_iter().collect(),
        datasets,
    })
}

/// The base model of an input: itself if it is one, else its base.
fn base_of(row: &artifact::Model) -> Option<String> {
    if row.kind == ArtifactKind::Base.as_str() {
        Some(row.id.clone())
    } else {
        row.base_id.clone()
    }
}
