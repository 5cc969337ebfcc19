//! `clreg-server demo`: fills the server's own database and store with a small, real
//! collaboration — a tiny base, three sequential LoRA rounds trained by jobs on synthetic TRACE
//! tasks, a TIES merge, a LoRA-MoE mix, evaluation jobs and a round series — through the same
//! functions the API calls (authorization, policy gate, ledger and all), so that the web UI has
//! something true to show. Runs while the server serves, so its jobs can be watched live.

use std::path::Path;
use std::time::Duration;

use clreg_engine::synth::{Suite, SuiteSizes, SuiteTask};
use clreg_engine::tiny::TinyConfig;
use clreg_engine::train::{Method, TrainConfig};
use clreg_types::{
    AddMember, AddRound, ArtifactKind, CommitArtifact, CreateCollaboration, CreateSeries, Digest,
    JobData, JobKind, JobState, JobTask, Policy, RegisterDataset, Role, SubmitJob,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use sha2::{Digest as _, Sha256};

use crate::auth::Caller;
use crate::authz::{Access, Action, Rule};
use crate::db::entities::{collaboration, job, user};
use crate::error::ApiError;
use crate::routes::{collaborations, datasets};
use crate::state::AppState;

/// The collaboration the demo fills.
pub const COLLAB: &str = "demo";
const OWNER: &str = "demo-owner";
const AUDITOR: &str = "demo-auditor";
/// The synthetic tasks the three rounds train on, in order.
const TASKS: [&str; 3] = ["cstance", "scienceqa", "meetingbank"];
const ROUNDS: usize = TASKS.len();

/// What `demo` prints: a key to log in with for each role (new keys each run; old ones stay).
pub struct Logins {
    pub owner_key: String,
    pub auditor_key: String,
    /// False when the collaboration was already there and was left as it was.
    pub filled: bool,
}

/// A user's key: the user is created on first use, later runs get another key.
async fn key_for(state: &AppState, name: &str) -> Result<(String, user::Model), ApiError> {
    let key = match crate::admin::create_user(&state.db, name, false).await {
        Ok(key) => key,
        Err(e) if e.code == clreg_types::ErrorCode::Conflict => {
            crate::admin::create_key(&state.db, name).await?
        }
        Err(e) => return Err(e),
    };
    let model = user::Entity::find()
        .filter(user::Column::Name.eq(name))
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::internal("demo user vanished"))?;
    Ok((key, model))
}

fn caller(u: &user::Model, action: Action) -> Caller {
    Caller {
        id: u.id,
        name: u.name.clone(),
        is_admin: u.is_admin,
        rule: Rule::Member(action),
    }
}

async fn access(state: &AppState, u: &user::Model, action: Action) -> Result<Access, ApiError> {
    caller(u, action).access(state, COLLAB).await
}

/// Fills the demo collaboration unless it exists; `say` reports each step.
pub async fn fill(state: &AppState, work: &Path, say: &dyn Fn(&str)) -> anyhow::Result<Logins> {
    let (owner_key, owner) = key_for(state, OWNER).await?;
    let (auditor_key, _) = key_for(state, AUDITOR).await?;
    let exists = collaboration::Entity::find()
        .filter(collaboration::Column::Name.eq(COLLAB))
        .one(&state.db)
        .await?
        .is_some();
    if exists {
        say("collaboration `demo` is already there: left as it is");
        return Ok(Logins {
            owner_key,
            auditor_key,
            filled: false,
        });
    }
    std::fs::create_dir_all(work)?;
    let result = build(state, &owner, work, say).await;
    let _ = std::fs::remove_dir_all(work);
    result?;
    Ok(Logins {
        owner_key,
        auditor_key,
        filled: true,
    })
}

async fn build(
    state: &AppState,
    owner: &user::Model,
    work: &Path,
    say: &dyn Fn(&str),
) -> anyhow::Result<()> {
    say("creating collaboration `demo` (semi-cooperative) with an auditor");
    collaborations::create_for(
        state,
        &caller(owner, Action::Read),
        CreateCollaboration {
            name: COLLAB.into(),
            policy: Policy::Semi,
            description: "clreg-server demo: three sequential LoRA rounds on synthetic tasks, \
                          a TIES merge, a LoRA-MoE mix, evaluations and a round series"
                .into(),
        },
    )
    .await?;
    let managing = access(state, owner, Action::ManageMembers).await?;
    collaborations::add_member_to(
        state,
        &caller(owner, Action::ManageMembers),
        &managing,
        AddMember {
            user: AUDITOR.into(),
            role: Role::Auditor,
        },
    )
    .await?;

    say("writing and pushing a tiny Llama base (byte tokenizer)");
    let base_dir = work.join("base");
    std::fs::create_dir_all(&base_dir)?;
    let tiny = TinyConfig {
        hidden: 128,
        intermediate: 256,
        layers: 2,
        vocab: clreg_engine::tiny::BYTE_VOCAB,
        ..TinyConfig::default()
    };
    clreg_engine::tiny::write_tiny_llama(&base_dir, &tiny, 1, None)?;
    clreg_engine::tiny::write_byte_tokenizer(&base_dir)?;
    let files = crate::jobs::stage::upload_dir(state, &base_dir, owner.id).await?;
    let pushing = access(state, owner, Action::PushBase).await?;
    crate::artifacts::commit(
        state,
        &caller(owner, Action::PushBase),
        &pushing,
        CommitArtifact {
            name: "base".into(),
            kind: ArtifactKind::Base,
            base: None,
            files,
            parents: vec![],
            description: "a seeded tiny Llama (2 layers, hidden 128)".into(),
        },
    )
    .await?;

    say("writing the synthetic suite and registering its manifests (content stays with jobs)");
    let suite_dir = work.join("suite");
    let suite: Suite = clreg_engine::synth::write_suite(
        &suite_dir,
        3,
        SuiteSizes {
            train: 60,
            eval: 4,
            test: 12,
        },
    )?;
    // Tasks a tiny byte-level model can learn in a few epochs: a one-letter label, a one-letter
    // choice, and a summary scored by ROUGE-L (partial credit).
    let tasks: Vec<&SuiteTask> = TASKS
        .iter()
        .map(|name| {
            suite
                .tasks
                .iter()
                .find(|t| t.name == *name)
                .ok_or_else(|| anyhow::anyhow!("the synthetic suite has no task `{name}`"))
        })
        .collect::<anyhow::Result<_>>()?;
    let registering = access(state, owner, Action::Datasets).await?;
    let carried = |rel: &str| -> anyhow::Result<JobData> {
        let content = std::fs::read_to_string(suite_dir.join(rel))?;
        Ok(JobData {
            digest: Digest::from_bytes(Sha256::digest(content.as_bytes()).into()),
            content: Some(content),
        })
    };
    for t in &tasks {
        for (split, rel) in [("train", &t.train), ("test", &t.test)] {
            let data = carried(rel)?;
            let content = data.content.as_deref().unwrap_or_default();
            let examples = serde_json::from_str::<Vec<serde_json::Value>>(content)
                .map(|v| v.len() as u64)
                .unwrap_or(0);
            datasets::register_in(
                state,
                &caller(owner, Action::Datasets),
                &registering,
                RegisterDataset {
                    name: format!("{}-{split}", t.name),
                    task: t.name.clone(),
                    metric: t.metric.clone(),
                    digest: data.digest,
                    size: content.len() as u64,
                    examples,
                    license: "synthetic (clreg local synth)".into(),
                    store_content: false,
                },
            )
            .await?;
        }
    }

    for (i, t) in tasks.iter().enumerate() {
        let round = i + 1;
        let config = TrainConfig {
            method: if round == 2 {
                Method::Olora
            } else {
                Method::Lora
            },
            epochs: 8,
            batch_size: 8,
            grad_accum: 1,
            lr: 0.02,
            seed: 1,
            ..TrainConfig::default()
        };
        let name = format!("r{round}");
        say(&format!(
            "round {round}: training {name} ({}) on {} through a job",
            if round == 2 { "O-LoRA" } else { "LoRA" },
            t.name
        ));
        submit_and_wait(
            state,
            owner,
            SubmitJob {
                kind: JobKind::Train,
                name: Some(name),
                base: Some(format!("{COLLAB}/base")),
                adapters: (1..round).map(|r| format!("{COLLAB}/r{r}")).collect(),
                data: vec![carried(&t.train)?],
                config: Some(serde_json::to_value(&config)?),
                ..empty_job(JobKind::Train)
            },
            say,
        )
        .await?;
    }

    say("merging the three rounds with TIES through a job");
    let models: String = (1..=ROUNDS)
        .map(|r| {
            format!("  - model: {COLLAB}/r{r}\n    parameters: {{weight: 1.0, density: 0.5}}\n")
        })
        .collect();
    submit_and_wait(
        state,
        owner,
        SubmitJob {
            name: Some("ties".into()),
            recipe: Some(format!(
                "merge_method: ties\nbase_model: {COLLAB}/base\nmodels:\n{models}dtype: float32\nseed: 7\n"
            )),
            ..empty_job(JobKind::Merge)
        },
        say,
    )
    .await?;

    say("mixing the three adapters into a LoRA-MoE through a job");
    let experts: String = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "  - source_model: {COLLAB}/r{}\n    positive_prompts: [\"{}\"]\n",
                i + 1,
                t.name
            )
        })
        .collect();
    submit_and_wait(
        state,
        owner,
        SubmitJob {
            name: Some("moe".into()),
            lora: true,
            recipe: Some(format!(
                "base_model: {COLLAB}/base\ngate_mode: hidden\nexperts_per_token: 2\nexperts:\n{experts}"
            )),
            ..empty_job(JobKind::Mix)
        },
        say,
    )
    .await?;

    let eval_tasks = tasks
        .iter()
        .map(|t| {
            Ok(JobTask {
                task: t.name.clone(),
                metric: t.metric.clone(),
                data: carried(&t.test)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for m in ["base", "r1", "r2", "r3", "ties"] {
        say(&format!("evaluating {m} on the three tasks through a job"));
        submit_and_wait(
            state,
            owner,
            SubmitJob {
                artifact: Some(format!("{COLLAB}/{m}")),
                tasks: eval_tasks.clone(),
                ..empty_job(JobKind::Eval)
            },
            say,
        )
        .await?;
    }

    say("recording the rounds as a series (BWT, FWT, gain over the base)");
    let series_access = access(state, owner, Action::SubmitJob).await?;
    let submitter = caller(owner, Action::SubmitJob);
    crate::series::create(
        state,
        &submitter,
        &series_access,
        CreateSeries {
            name: "seq".into(),
            base: format!("{COLLAB}/base"),
            tasks: tasks.iter().map(|t| t.name.clone()).collect(),
            round_of_task: None,
            description: "sequential LoRA, O-LoRA, LoRA".into(),
        },
    )
    .await?;
    for r in 1..=ROUNDS {
        crate::series::add_round(
            state,
            &submitter,
            &series_access,
            "seq",
            AddRound {
                artifact: format!("{COLLAB}/r{r}"),
            },
        )
        .await?;
    }
    let found = crate::series::find_in(&state.db, series_access.collab.id, "seq").await?;
    let report =
        crate::series::report_with_history(&state.db, &series_access.collab, &found).await?;
    for row in std::iter::once(&report.base).chain(&report.matrix) {
        let scores: Vec<String> = row
            .scores
            .iter()
            .map(|s| s.map_or("—".into(), |s| format!("{s:.3}")))
            .collect();
        let label = if row.round == 0 {
            "base".to_string()
        } else {
            format!("after round {}", row.round)
        };
        say(&format!("  {label:<14} {}", scores.join("  ")));
    }
    if let Some(t) = &report.transfer {
        say(&format!(
            "  BWT {:.3}, final average {:.3}",
            t.bwt, t.final_average
        ));
    }
    Ok(())
}

fn empty_job(kind: JobKind) -> SubmitJob {
    SubmitJob {
        kind,
        name: None,
        recipe: None,
        lora: false,
        base: None,
        adapters: vec![],
        data: vec![],
        past: vec![],
        config: None,
        artifact: None,
        tasks: vec![],
        requires: None,
        description: "clreg-server demo".into(),
    }
}

/// Submits a job as the owner and waits for a worker to finish it, reporting progress.
async fn submit_and_wait(
    state: &AppState,
    owner: &user::Model,
    req: SubmitJob,
    say: &dyn Fn(&str),
) -> anyhow::Result<()> {
    let action = if req.kind == JobKind::Train {
        Action::SubmitTrain
    } else {
        Action::SubmitJob
    };
    let submitting = access(state, owner, action).await?;
    let row = crate::jobs::submit(state, &caller(owner, action), &submitting, req).await?;
    let started = std::time::Instant::now();
    let mut shown = -1i64;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let row = job::Entity::find_by_id(row.id)
            .one(&state.db)
            .await?
            .ok_or_else(|| anyhow::anyhow!("job {} vanished", row.id))?;
        let job_state = JobState::from(row.state);
        let tenth = (row.progress * 10.0).floor() as i64;
        if job_state == JobState::Running && tenth > shown {
            shown = tenth;
            say(&format!(
                "  {:>3.0} %  {}",
                row.progress * 100.0,
                row.message
            ));
        }
        match job_state {
            JobState::Succeeded => {
                say(&format!(
                    "  done in {:.1} s",
                    started.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            JobState::Failed | JobState::Cancelled => {
                anyhow::bail!(
                    "job {} ended {}: {} {}",
                    row.id,
                    job_state.as_str(),
                    row.error_code.unwrap_or_default(),
                    row.error_message.unwrap_or_default()
                )
            }
            JobState::Queued | JobState::Running => {}
        }
    }
}
