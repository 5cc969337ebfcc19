//! The command line: clap derive types with help text and examples for every command.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use clap::{Args as ClapArgs, Parser, Subcommand};
use clreg_types::{ArtifactKind, Policy, Relation, Role};

use crate::refs::ArtifactRef;

const TOP_AFTER_HELP: &str = "\
Examples:
  clreg login --server https://registry.example --api-key $KEY
  clreg collab create org-a --policy semi
  clreg push ./llama-7b --collab org-a --name llama
  clreg push ./lora-out --collab org-a --name med-lora --base org-a/llama
  clreg pull org-a/med-lora:2 -o ./med-lora
  clreg lineage org-a/med-lora

Environment:
  CLREG_SERVER      server URL (as --server)
  CLREG_API_KEY     API key for `clreg login`
  CLREG_CONFIG_DIR  where the login is stored (credentials.json)
  CLREG_CACHE_DIR   digest cache and resumable upload sessions
  NO_COLOR          no colour in messages

Exit codes:
  0  success
  1  other error (local engine work: an I/O or computation failure)
  2  usage error (bad arguments, impossible engine settings or recipe)
  3  authentication: not logged in, or the key or token was refused (401)
  4  not found (404)
  5  refused by the server: forbidden, conflict, invalid input (other 4xx)
  6  server or network error (5xx, cannot connect)
  7  local verification failed: digest mismatch on pull, invalid local files
  130  cancelled (Ctrl-C)";

/// clreg: push, pull and trace models in a collaborative model registry.
#[derive(Debug, Parser)]
#[command(name = "clreg", version, after_help = TOP_AFTER_HELP, propagate_version = true)]
pub struct Args {
    /// Server URL; overrides the one stored by `clreg login`.
    #[arg(long, global = true, env = "CLREG_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress bars or notes on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exchange an API key for a login token and store both.
    #[command(after_help = "\
Examples:
  clreg login --server https://registry.example --api-key $KEY
  echo \"$KEY\" | clreg login --server https://registry.example

The key is read from --api-key, else CLREG_API_KEY, else standard input. It is stored
(mode 0600) so the short-lived token can be renewed; it is never printed.")]
    Login(LoginArgs),

    /// Forget the stored login.
    #[command(after_help = "Example:\n  clreg logout")]
    Logout,

    /// Show who you are logged in as, and where.
    #[command(after_help = "Example:\n  clreg whoami --json")]
    Whoami,

    /// Create and manage collaborations and their members.
    #[command(subcommand)]
    Collab(CollabCommand),

    /// Work on files on disk with the engine, without a server.
    #[command(subcommand)]
    Local(LocalCommand),

    /// Upload a model directory and commit it as a new artifact version.
    #[command(after_help = "\
Examples:
  clreg push ./llama --collab org-a --name llama
  clreg push ./ft --collab org-a --name llama-med --base org-a/llama \\
      --parent org-a/llama --relation finetune --method fft --param lr=2e-5 \\
      --param epochs=3 --dataset ./med.json
  clreg push ./lora --collab org-a --name med-lora --kind adapter --base org-a/llama:1
  clreg push ./merged --collab org-a --name med-ties      # output of `clreg local merge`

A directory holding clreg_merge.json, clreg_mix.json or clreg_train.json (written by `clreg
local merge|mix|train`) keeps its provenance: each input the record names is found in the
registry by the sha256 of its files and becomes a lineage edge with the run's method and
parameters; the kind and base follow from the record. An input the registry does not hold (or
that you cannot read) is refused unless --allow-unregistered-inputs.

Files already on the server are not sent again; an interrupted push resumes where it stopped.
Hidden files and *.partial files are left out.")]
    Push(PushArgs),

    /// Download an artifact's files and verify every digest.
    #[command(after_help = "\
Examples:
  clreg pull org-a/llama -o ./llama
  clreg pull org-a/med-lora:2 -o ./med-lora
  clreg pull 1a2b3c4d5e6f -o ./model

Files already present with the right content are skipped; an interrupted pull resumes.")]
    Pull(PullArgs),

    /// List a collaboration's artifacts.
    #[command(
        after_help = "Examples:\n  clreg ls --collab org-a\n  clreg ls --collab org-a --name llama --json"
    )]
    Ls(LsArgs),

    /// Show an artifact: metadata, files and parents.
    #[command(after_help = "Examples:\n  clreg show org-a/llama:1\n  clreg show 1a2b3c4d --json")]
    Show(RefArgs),

    /// Show an artifact's ancestors and descendants.
    #[command(
        after_help = "Examples:\n  clreg lineage org-a/med-lora\n  clreg lineage 1a2b3c4d --json"
    )]
    Lineage(RefArgs),

    /// Register, list and fetch datasets (TRACE JSON).
    #[command(subcommand)]
    Dataset(DatasetCommand),

    /// Show a collaboration's ledger of events.
    #[command(
        after_help = "Examples:\n  clreg ledger --collab org-a\n  clreg ledger --collab org-a --json"
    )]
    Ledger(CollabArg),

    /// Verify a collaboration's ledger offline: hash chain, Merkle tree, signed checkpoint,
    /// and that its history has not been rewritten since your last check.
    #[command(subcommand)]
    Audit(AuditCommand),

    /// Merge registry models on the server: a job from a mergekit YAML recipe whose model
    /// fields are artifact references.
    #[command(after_help = "\
Examples:
  clreg merge --collab org-a --config ties.yml --name llama-ties --wait
  clreg merge --collab org-a --config linear.yml --name soup

A recipe (the same YAML as `clreg local merge`, with references instead of paths):
  merge_method: ties
  base_model: org-a/llama
  models:
    - model: org-a/llama-med:2
      parameters: {weight: 1.0, density: 0.5}
    - model: org-b/llama-law
      parameters: {weight: 0.5, density: 0.5}
  dtype: bfloat16
  seed: 7

You must be able to download every input. The result is an artifact of kind `merge` named
--name (versions count up), with a lineage edge from each input. The job id is printed;
--wait follows it with a progress bar and exits with its outcome (0 succeeded, 5 failed,
6 server error, 130 cancelled).")]
    Merge(MergeJobArgs),

    /// Mix registry models on the server: a mix job from a mergekit-moe YAML recipe whose
    /// model fields are artifact references.
    #[command(after_help = "\
Examples:
  clreg mix --collab org-a --config moe.yml --name llama-moe --wait
  clreg mix --collab org-a --config experts.yml --name med-law-moe --lora --wait
  clreg mix --collab org-a --config experts.yml --name med-law-moe-tr --lora \\
      --train-router calib.json --steps 200 --wait

A recipe (the same YAML as `clreg local mix`, with references instead of paths):
  base_model: org-a/llama
  gate_mode: hidden
  experts_per_token: 2
  experts:
    - source_model: org-a/llama-med
      positive_prompts: [\"symptoms and treatment\"]
    - source_model: org-b/llama-law
      positive_prompts: [\"the court held\"]

Fine-tunes become a Mixtral checkpoint; with --lora, adapters (or fine-tunes, decomposed at
`rank`) become a LoRA-MoE bundle. Prompts go in the recipe (`prompts_file` is refused: the
server reads no file of yours). The result is an artifact of kind `mixture` named --name,
with a lineage edge from the base and each expert.

--train-router FILE trains only the routers on a calibration set before the mixture is
written. The set is data the job trains on: register its manifest first (`clreg dataset
push`); it travels with the job and is deleted when the job ends, or, in a fully-cooperative
collaboration, name a stored dataset with --train-router-dataset.")]
    Mix(MixJobArgs),

    /// Continue-train a registry model on the server: a train job (LoRA, FFT or O-LoRA).
    #[command(after_help = "\
Examples:
  clreg dataset push cstance.json --collab org-a --task C-STANCE --metric accuracy --manifest-only
  clreg train --collab org-a --base org-a/llama --data cstance.json --name round1 \\
      --lr 2e-4 --epochs 2 --wait
  clreg train --collab org-a --base org-a/llama --adapter org-a/round1 --method olora \\
      --data fomc.json --name round2 --wait
  clreg train --collab joint --base joint/llama --dataset sha256:… --past-dataset sha256:… \\
      --replay 0.5 --name round3

In a semi-cooperative collaboration the data travels with the job (--data, --past: files
whose manifests you registered); the server keeps it for that job alone and deletes it when
the job ends. Stored datasets (--dataset, --past-dataset), replay and joint training over
them need a fully-cooperative collaboration. The settings are those of `clreg local train`.
The result is an adapter (or, for --method fft, a checkpoint) named --name.")]
    Train(Box<TrainJobArgs>),

    /// Score a registry model on tasks on the server: an eval job; the scores become the
    /// collaboration's evaluations.
    #[command(
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true,
        after_help = "\
Examples:
  clreg eval org-a/round1 --collab org-a --task cstance:exact:cstance-test.json --wait
  clreg eval org-a/llama --collab joint --stored-task fomc:exact:sha256:… --wait

--task NAME:METRIC:FILE carries the data with the job (a dataset whose manifest you
registered; the only way in a semi-cooperative collaboration, deleted when the job ends,
reports keep no examples of it). --stored-task NAME:METRIC:DIGEST uses a stored dataset
(fully-cooperative only). Metrics: exact, first_char, rouge_l, edit_sim, sari, final_number,
mc. An adapter is scored on its base, with the earlier adapters it was trained on top of
(the model after that round).

`clreg eval import FILE --artifact REF --collab C` imports scores computed elsewhere."
    )]
    Eval(EvalCommand),

    /// Create round series and report their score matrix, BWT, FWT and gains.
    #[command(subcommand)]
    Series(SeriesCommand),

    /// List a collaboration's evaluations (scores of artifacts on tasks).
    #[command(
        after_help = "Examples:\n  clreg evaluations --collab org-a\n  clreg evaluations --collab org-a --artifact org-a/round1 --json"
    )]
    Evaluations(EvaluationsArgs),

    /// Follow and manage jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
}

/// `clreg eval REF …` submits an eval job; `clreg eval import …` imports results.
#[derive(Debug, ClapArgs)]
pub struct EvalCommand {
    #[command(subcommand)]
    pub import: Option<EvalSubcommand>,
    #[command(flatten)]
    pub job: EvalJobArgs,
}

#[derive(Debug, Subcommand)]
pub enum EvalSubcommand {
    /// Import scores computed elsewhere: an lm-evaluation-harness results*.json (one
    /// evaluation per task) or a TRACE inference output (one task).
    #[command(after_help = "\
Examples:
  clreg eval import results_2026-11-30.json --artifact org-a/round3 --collab org-a
  clreg eval import fomc_output.json --format trace --task fomc --artifact org-a/round3 --collab org-a
  clreg eval import py150_output.json --format trace --task py150 --metric edit_sim \\
      --artifact org-a/round3 --collab org-a

From a harness file each task's acc_norm, else acc, else exact_match is taken. From a TRACE
file its own accuracy, similarity/100, sari/100 or rouge-L, or with --metric its generations
rescored by clreg. Only the scores are kept; a TRACE file's generations and labels are not.")]
    Import(EvalImportArgs),
}

#[derive(Debug, ClapArgs)]
pub struct EvalImportArgs {
    /// The results file.
    pub file: std::path::PathBuf,
    /// The artifact these are scores of (a reference).
    #[arg(long = "artifact", value_name = "REF")]
    pub scored: String,
    /// Collaboration the evaluations go to.
    #[arg(long, value_name = "COLLAB")]
    pub collab: String,
    /// The file's format.
    #[arg(long, default_value = "lm-eval", value_parser = ["lm-eval", "trace"])]
    pub format: String,
    /// trace: the task's name.
    #[arg(long)]
    pub task: Option<String>,
    /// trace: rescore the generations with this metric (exact, first_char, rouge_l, edit_sim,
    /// sari, final_number).
    #[arg(long)]
    pub metric: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SeriesCommand {
    /// Create a series: a base model and the tasks in training order.
    #[command(after_help = "\
Examples:
  clreg series create seq --collab org-a --base org-a/llama --tasks cstance,fomc,meetingbank
  clreg series create trace8 --collab org-a --base org-a/llama \\
      --tasks cstance,fomc,meetingbank,py150,scienceqa,numglue-cm,gsm8k,gsm8k-cot \\
      --round-of-task 1,2,3,4,5,6,7,7

A column is a task name, or task:metric when the task was scored with more than one metric.
Scores come from the collaboration's evaluations (eval jobs, imports).")]
    Create(SeriesCreateArgs),
    /// Append the next round: the artifact after training on the next task.
    #[command(after_help = "Example:\n  clreg series add seq org-a/round2 --collab org-a")]
    Add(SeriesAddArgs),
    /// The score matrix (rounds × tasks, base row), BWT, FWT, relative BWT, gains, missing
    /// cells, and the BWT history.
    #[command(
        after_help = "Examples:\n  clreg series report seq --collab org-a\n  clreg series report seq --collab org-a --json"
    )]
    Report(SeriesRefArgs),
    /// List a collaboration's series.
    #[command(after_help = "Example:\n  clreg series ls --collab org-a")]
    Ls(CollabArg),
}

#[derive(Debug, ClapArgs)]
pub struct SeriesCreateArgs {
    /// The series' name.
    pub name: String,
    #[arg(long, value_name = "COLLAB")]
    pub collab: String,
    /// The base model (a reference).
    #[arg(long, value_name = "REF")]
    pub base: String,
    /// The tasks in training order, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tasks: Vec<String>,
    /// The round each task is trained in, comma-separated (default: task j in round j).
    #[arg(long, value_delimiter = ',')]
    pub round_of_task: Option<Vec<usize>>,
    /// A sentence about the series.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub description: String,
}

#[derive(Debug, ClapArgs)]
pub struct SeriesAddArgs {
    /// The series' name.
    pub name: String,
    /// The artifact of the new round (a reference).
    pub artifact: String,
    #[arg(long, value_name = "COLLAB")]
    pub collab: String,
}

#[derive(Debug, ClapArgs)]
pub struct SeriesRefArgs {
    /// The series' name.
    pub name: String,
    #[arg(long, value_name = "COLLAB")]
    pub collab: String,
}

#[derive(Debug, ClapArgs)]
pub struct EvalJobArgs {
    /// The artifact to score (a reference).
    pub artifact: Option<String>,
    /// Collaboration the job runs in (and the evaluations go to).
    #[arg(long, value_name = "COLLAB")]
    pub collab: Option<String>,
    /// A task whose data travels with the job: NAME:METRIC:FILE.
    #[arg(long = "task", value_name = "NAME:METRIC:FILE")]
    pub tasks: Vec<String>,
    /// A task on a stored dataset: NAME:METRIC:DIGEST.
    #[arg(long = "stored-task", value_name = "NAME:METRIC:DIGEST")]
    pub stored_tasks: Vec<String>,
    /// Score only the first N examples of each task.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// The most tokens generated per answer [default: 64].
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<usize>,
    /// Prompts generated together [default: 8].
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Run only on a worker with this device kind.
    #[arg(long, value_parser = ["cpu", "cuda"])]
    pub requires: Option<String>,
    /// Follow the job until it ends; exit with its outcome.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, ClapArgs)]
pub struct EvaluationsArgs {
    /// Collaboration name.
    #[arg(long, value_name = "COLLAB")]
    pub collab: String,
    /// Only this artifact's (a reference).
    #[arg(long)]
    pub artifact: Option<String>,
}

#[derive(Debug, ClapArgs)]
pub struct MixJobArgs {
    #[command(flatten)]
    pub job: MergeJobArgs,
    /// Adapters into a LoRA-MoE bundle instead of fine-tunes into a Mixtral checkpoint.
    #[arg(long)]
    pub lora: bool,
    #[command(flatten)]
    pub router: RouterArgs,
    /// Train the routers on this stored dataset (a digest; fully-cooperative collaborations)
    /// instead of a carried file.
    #[arg(long, value_name = "DIGEST", conflicts_with = "train_router")]
    pub train_router_dataset: Option<String>,
}

/// Router training of a mix (Mixtral gates or LoRA-MoE routers): only the routers learn.
#[derive(Debug, ClapArgs)]
pub struct RouterArgs {
    /// Train the routers on this calibration file before the mixture is written: a TRACE file,
    /// JSON lines with `text` (or `prompt` and `answer`), or plain lines.
    #[arg(long, value_name = "FILE")]
    pub train_router: Option<std::path::PathBuf>,
    /// Router training steps, one calibration sequence each [default: 100].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Router training learning rate (AdamW) [default: 0.001].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Coefficient of the load-balancing loss [default: 0.01].
    #[arg(long)]
    pub aux_coef: Option<f64>,
}

#[derive(Debug, ClapArgs)]
pub struct MergeJobArgs {
    /// Collaboration the job runs in (and the result goes to).
    #[arg(long, value_name = "COLLAB")]
    pub collab: String,
    /// The recipe (mergekit or mergekit-moe YAML; model fields are artifact references).
    #[arg(long, short = 'c')]
    pub config: std::path::PathBuf,
    /// Name of the artifact the job commits.
    #[arg(long)]
    pub name: String,
    /// A sentence about the result.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub description: String,
    /// Run only on a worker with this device kind.
    #[arg(long, value_parser = ["cpu", "cuda"])]
    pub requires: Option<String>,
    /// Follow the job until it ends; exit with its outcome.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, ClapArgs)]
pub struct JobIdArgs {
    /// The job id (printed when it was submitted).
    pub id: String,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List a collaboration's jobs, newest first.
    #[command(after_help = "Example:\n  clreg jobs ls --collab org-a")]
    Ls(CollabArg),
    /// Show one job: state, progress, result or error.
    #[command(after_help = "Example:\n  clreg jobs show 0b5e…")]
    Show(JobIdArgs),
    /// Print a job's log.
    #[command(after_help = "Example:\n  clreg jobs logs 0b5e…")]
    Logs(JobIdArgs),
    /// Cancel a job: at once if queued, between steps if running (owners: any job; others:
    /// their own).
    #[command(after_help = "Example:\n  clreg jobs cancel 0b5e…")]
    Cancel(JobIdArgs),
    /// Follow a job until it ends; exit with its outcome (0 succeeded, 5 failed, 6 server
    /// error, 130 cancelled).
    #[command(after_help = "Example:\n  clreg jobs wait 0b5e…")]
    Wait(JobIdArgs),
}

#[derive(Debug, ClapArgs)]
pub struct LoginArgs {
    /// API key (an admin creates it with `clreg-server admin`).
    #[arg(
        long,
        env = "CLREG_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CollabCommand {
    /// Create a collaboration; you become its owner.
    #[command(after_help = "\
Examples:
  clreg collab create org-a --policy semi --description \"medical QA\"
  clreg collab create joint --policy full

semi: models are shared, dataset content is not (only manifests).
full: dataset content is stored and readable by members (replay, joint training).")]
    Create {
        /// Collaboration name (letters, digits, `.`, `_`, `-`).
        name: String,
        /// What members agree to share; it can later only be tightened (full → semi).
        #[arg(long, value_parser = policy_parser())]
        policy: Policy,
        /// A sentence about its purpose.
        #[arg(long, default_value = "", hide_default_value = true)]
        description: String,
    },

    /// List the collaborations you can see.
    #[command(after_help = "Example:\n  clreg collab ls")]
    Ls,

    /// Show a collaboration and its members.
    #[command(after_help = "Example:\n  clreg collab show org-a")]
    Show {
        /// Collaboration name.
        name: String,
    },

    /// Grant a role to a user (owners only).
    #[command(
        after_help = "Examples:\n  clreg collab add-member org-a bob --role contributor\n  clreg collab add-member org-a audit --role auditor"
    )]
    AddMember {
        /// Collaboration name.
        name: String,
        /// User name.
        user: String,
        /// The role to grant.
        #[arg(long, value_parser = role_parser())]
        role: Role,
    },

    /// Remove a user, or one of their roles (owners only).
    #[command(
        after_help = "Examples:\n  clreg collab remove-member org-a bob\n  clreg collab remove-member org-a bob --role contributor"
    )]
    RemoveMember {
        /// Collaboration name.
        name: String,
        /// User name.
        user: String,
        /// Remove only this role (default: every role).
        #[arg(long, value_parser = role_parser())]
        role: Option<Role>,
    },

    /// Tighten the policy from full to semi; stored dataset content is purged.
    #[command(after_help = "\
Example:
  clreg collab tighten joint --yes

This cannot be undone: a policy is never loosened.")]
    Tighten {
        /// Collaboration name.
        name: String,
        /// Confirm without asking.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, ClapArgs)]
pub struct PushArgs {
    /// The model directory.
    pub dir: PathBuf,

    /// Collaboration to push to.
    #[arg(long, value_name = "COLLAB")]
    pub collab: String,

    /// Artifact name; each push of changed files makes a new version.
    #[arg(long)]
    pub name: String,

    /// Artifact kind (default: from the run record if there is one; else adapter if
    /// adapter_config.json exists, else base, or checkpoint when --base is given).
    #[arg(long, value_parser = kind_parser())]
    pub kind: Option<ArtifactKind>,

    /// The base model this one builds on (required for checkpoints and adapters, unless the
    /// run record names it).
    #[arg(long, value_name = "REF")]
    pub base: Option<ArtifactRef>,

    /// The artifact this one was made from (a lineage edge); not with a run record, whose
    /// inputs are the parents.
    #[arg(long, value_name = "REF")]
    pub parent: Option<ArtifactRef>,

    /// Push even if the run record names inputs the registry does not hold; they are recorded
    /// on the edges (`unregistered_inputs`) by path and file digests.
    #[arg(long)]
    pub allow_unregistered_inputs: bool,

    /// How it was made from --parent (default: adapter for adapters, else finetune).
    #[arg(long, requires = "parent", value_parser = relation_parser())]
    pub relation: Option<Relation>,

    /// The method of that step, e.g. lora, fft, olora, ties.
    #[arg(
        long,
        requires = "parent",
        default_value = "",
        hide_default_value = true
    )]
    pub method: String,

    /// A parameter of that step, KEY=VALUE; VALUE is JSON if it parses, else a string.
    #[arg(long = "param", requires = "parent", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, serde_json::Value)>,

    /// A dataset the step used: a TRACE file (hashed here) or its digest.
    #[arg(long = "dataset", requires = "parent", value_name = "FILE_OR_DIGEST")]
    pub datasets: Vec<String>,

    /// A sentence about this artifact.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub description: String,

    /// Files uploaded at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
}

#[derive(Debug, ClapArgs)]
pub struct PullArgs {
    /// collab/name[:version|:latest] or an id (8+ hex digits).
    #[arg(value_name = "REF")]
    pub reference: ArtifactRef,

    /// Directory to write the files into (created if needed).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,

    /// Files downloaded at the same time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
}

#[derive(Debug, ClapArgs)]
pub struct LsArgs {
    /// Collaboration to list.
    #[arg(long, value_name = "COLLAB")]
    pub collab: String,

    /// Only versions of this artifact.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, ClapArgs)]
pub struct RefArgs {
    /// collab/name[:version|:latest] or an id (8+ hex digits).
    #[arg(value_name = "REF")]
    pub reference: ArtifactRef,
}

#[derive(Debug, ClapArgs)]
pub struct CollabArg {
    /// Collaboration name.
    #[arg(long, value_name = "COLLAB")]
    pub collab: String,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check a collaboration's ledger against the server's signed checkpoint and the
    /// checkpoint you saved last time; exits non-zero naming the first bad event.
    #[command(after_help = "\
Examples:
  clreg audit verify --collab org-a
  clreg audit verify --collab org-a --json

What it checks: every event's hash and link (RFC 8785 or v1, as each event records), the RFC 6962
tree head over the events against a checkpoint signed by a key you trust, and a consistency proof
from the checkpoint it saved last time (so a history rewritten consistently by someone with
database access is caught). The first run trusts the server's key on first use and says so;
pin a key you got out of band with `clreg audit trust`. Needs only the right to read the
ledger (auditors have it), never bytes.")]
    Verify(CollabArg),
    /// Pin a ledger signing key for the current server (hex public key, or a file holding it,
    /// as served at /.well-known/clreg/ledger-keys).
    #[command(
        after_help = "Examples:\n  clreg audit trust 3b6a27bc…\n  clreg audit trust ./ledger-key.hex"
    )]
    Trust {
        /// The Ed25519 public key: 64 hex digits, or a file that holds them.
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Validate a TRACE dataset and register it (its content is uploaded only under `full`).
    #[command(after_help = "\
Examples:
  clreg dataset push ./med.json --collab org-a --task medqa --metric accuracy
  clreg dataset push ./med.json --collab joint --task medqa --metric rouge-l --manifest-only

Under a semi policy only the manifest (digest, size, task, metric, licence) is registered;
the content stays on this machine.")]
    Push {
        /// The TRACE JSON file: [{\"prompt\": ..., \"answer\": ...}, ...].
        file: PathBuf,
        /// Collaboration name.
        #[arg(long, value_name = "COLLAB")]
        collab: String,
        /// Task name, e.g. medqa.
        #[arg(long)]
        task: String,
        /// Metric the task is scored with, e.g. accuracy, rouge-l.
        #[arg(long)]
        metric: String,
        /// Dataset name (default: the file name without extension).
        #[arg(long)]
        name: Option<String>,
        /// Licence of the data.
        #[arg(long, default_value = "", hide_default_value = true)]
        license: String,
        /// Register the manifest only, even under a full policy.
        #[arg(long)]
        manifest_only: bool,
    },

    /// List a collaboration's datasets.
    #[command(after_help = "Example:\n  clreg dataset ls --collab org-a")]
    Ls(CollabArg),

    /// Download a dataset's stored content (full policy only) and verify its digest.
    #[command(
        after_help = "Example:\n  clreg dataset pull sha256:3f2a... --collab joint -o med.json"
    )]
    Pull {
        /// The dataset's digest (sha256:… or 64 hex digits).
        digest: String,
        /// Collaboration name.
        #[arg(long, value_name = "COLLAB")]
        collab: String,
        /// File to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

fn policy_parser() -> impl clap::builder::TypedValueParser<Value = Policy> {
    PossibleValuesParser::new(["semi", "full"]).try_map(|s| s.parse::<Policy>())
}

fn role_parser() -> impl clap::builder::TypedValueParser<Value = Role> {
    PossibleValuesParser::new(Role::ALL.iter().map(|r| r.as_str())).try_map(|s| s.parse::<Role>())
}

fn kind_parser() -> impl clap::builder::TypedValueParser<Value = ArtifactKind> {
    PossibleValuesParser::new(["base", "checkpoint", "adapter"])
        .try_map(|s| s.parse::<ArtifactKind>())
}

fn relation_parser() -> impl clap::builder::TypedValueParser<Value = Relation> {
    PossibleValuesParser::new(Relation::ALL.iter().map(|r| r.as_str()))
        .try_map(|s| s.parse::<Relation>())
}

/// `KEY=VALUE`: the value as JSON when it is valid JSON (`3`, `2e-5`, `true`, `[1,2]`), else as
/// a string.
pub fn parse_param(s: &str) -> Result<(String, serde_json::Value), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("`{s}` has an empty key"));
    }
    let value = serde_json::from_str(value)
        .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;
    use serde_json::json;

    #[test]
    fn verify_cli() {
        Args::command().debug_assert();
    }

    #[test]
    fn params() {
        assert_eq!(parse_param("lr=2e-5"), Ok(("lr".into(), json!(2e-5))));
        assert_eq!(parse_param("epochs=3"), Ok(("epochs".into(), json!(3))));
        assert_eq!(parse_param("name=ties"), Ok(("name".into(), json!("ties"))));
        assert_eq!(
            parse_param("w=[0.5, 0.5]"),
            Ok(("w".into(), json!([0.5, 0.5])))
        );
        assert_eq!(parse_param("s=\"3\""), Ok(("s".into(), json!("3"))));
        assert_eq!(parse_param("e="), Ok(("e".into(), json!(""))));
        assert_eq!(parse_param("k=a=b"), Ok(("k".into(), json!("a=b"))));
        assert!(parse_param("novalue").is_err());
        assert!(parse_param("=3").is_err());
    }

    #[test]
    fn parses_push() -> Result<(), clap::Error> {
        let args = Args::try_parse_from([
            "clreg",
            "push",
            "d",
            "--collab",
            "c",
            "--name",
            "n",
            "--parent",
            "c/p:1",
            "--relation",
            "finetune",
            "--param",
            "lr=0.1",
            "--param",
            "r=8",
            "--json",
            "--jobs",
            "2",
        ])?;
        let Command::Push(push) = args.command else {
            panic!("not push");
        };
        assert!(args.json);
        assert_eq!(push.params.len(), 2);
        assert_eq!(push.jobs, 2);
        assert_eq!(push.relation, Some(Relation::Finetune));
        Ok(())
    }

    #[test]
    fn refuses_bad_input() {
        let bad: [&[&str]; 6] = [
            &[
                "clreg",
                "push",
                "d",
                "--collab",
                "c",
                "--name",
                "n",
                "--relation",
                "merge",
            ],
            &[
                "clreg", "push", "d", "--collab", "c", "--name", "n", "--kind", "merge",
            ],
            &["clreg", "pull", "not a ref", "-o", "x"],
            &["clreg", "collab", "create", "x", "--policy", "open"],
            &["clreg", "collab", "add-member", "x", "u", "--role", "admin"],
            &[
                "clreg", "push", "d", "--collab", "c", "--name", "n", "--jobs", "0",
            ],
        ];
        for argv in bad {
            let err = Args::try_parse_from(argv).err().map(|e| e.exit_code());
            assert_eq!(err, Some(2), "{argv:?}");
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Write a seeded random Llama-family model (config.json + safetensors) for tests and demos.
    #[command(after_help = "\
Examples:
  clreg local tiny -o ./tiny --seed 1
  clreg local tiny -o ./big --hidden 2048 --intermediate 5632 --layers 3 --heads 16 --kv-heads 16 --vocab 32000

The same seed and sizes always give the same bytes.")]
    Tiny(TinyArgs),

    /// Merge models or adapters from a mergekit-style YAML recipe, streaming tensor by tensor.
    #[command(after_help = "\
Examples:
  clreg local merge --config ties.yml -o ./merged
  clreg local merge --config ties.yml -o ./merged --flavour peft --seed 7

Recipe (mergekit's YAML subset; paths are relative to the current directory):
  merge_method: ties            # linear, task_arithmetic, ties, dare_ties, dare_linear,
                                # cat, svd, peft_ab (LoRA -> LoRA)
  base_model: ./base
  models:
    - model: ./ft-a
      parameters: {weight: 1.0, density: 0.2}
    - model: ./lora-b           # a PEFT adapter counts as base + its delta
      parameters: {weight: 1.0, density: 0.2}
  parameters: {lambda: 1.0, normalize: true}
  dtype: bfloat16
  tokenizer_source: base

The output holds the weights and clreg_merge.json (method, flavour, every parameter, seeds,
input digests). Nothing is left behind on error or Ctrl-C.")]
    Merge(MergeArgs),

    /// Convert a Llama GGUF file (F32/F16/BF16, Q4_0/Q4_1/Q5_x/Q8_0, K-quants) into a Hugging Face
    /// checkpoint: config.json, model.safetensors (dequantised) and tokenizer.json.
    #[command(after_help = "\
Example:
  clreg local import-gguf SmolLM2-135M-Instruct.Q4_1.gguf -o ./smollm2
  clreg local generate ./smollm2 --prompt 'The capital of France is'")]
    ImportGguf(ImportGgufArgs),

    /// Generate text from a local checkpoint (greedy unless --temperature > 0), optionally with
    /// LoRA adapters stacked on top.
    #[command(after_help = "\
Examples:
  clreg local generate ./smollm2 --prompt 'The capital of France is'
  clreg local generate ./base --adapter ./lora-a --prompt 'Stance:' --max-tokens 16 --temperature 0.7 --seed 3")]
    Generate(GenerateArgs),

    /// Mix fine-tuned models (Mixtral layout) or LoRA adapters (a LoRA-MoE bundle) into a
    /// mixture of experts from a mergekit-moe YAML recipe, optionally training the routers.
    #[command(after_help = "\
Examples:
  clreg local mix --config moe.yml -o ./moe
  clreg local mix --config moe.yml -o ./moe --train-router calib.jsonl --steps 200
  clreg local mix --config adapters.yml -o ./lora-moe --lora
  clreg local mix --config adapters.yml -o ./lora-moe-tr --lora --train-router calib.json
  clreg local generate ./moe --prompt 'The capital of France is'

Recipe (mergekit-moe's YAML subset; paths are relative to the current directory):
  base_model: ./base
  gate_mode: hidden           # hidden, hidden_avg, cheap_embed, random, uniform
  experts_per_token: 2
  dtype: bfloat16
  experts:
    - source_model: ./ft-math
      positive_prompts: [\"Solve: 12 * 7 =\"]
      negative_prompts: [\"Summarise the meeting\"]
    - source_model: ./ft-code
      prompts_file: ./code-prompts.txt   # clreg: one prompt per line, or JSON lines
  seed: 0                     # clreg: seed of random routers
  average_non_mlp: false      # clreg: average attention/norms/embeddings over the experts
  gate_norm: softmax          # clreg, --lora: softmax (top-k) or sigmoid (dense)
  rank: 16                    # clreg, --lora: SVD rank for full fine-tunes as LoRA experts

The output holds the mixture and clreg_mix.json (router init, prompts' digests, seeds,
parameter counts, input digests). Nothing is left behind on error or Ctrl-C.")]
    Mix(MixArgs),

    /// Continue-train a model on TRACE data: a LoRA adapter (sequential, merged or stacked on
    /// earlier rounds), O-LoRA, or full fine-tuning; plain, replay or joint data schedules.
    #[command(after_help = "\
Examples:
  clreg local train --base ./base --data cstance/train.json -o ./round1
  clreg local train --base ./base --adapter ./round1 --data fomc/train.json -o ./round2
  clreg local train --base ./base --adapter ./round1 --data fomc/train.json --method olora --lambda 0.5 -o ./round2-olora
  clreg local train --base ./base --data fomc/train.json --replay 0.1 --past cstance/train.json -o ./round2-replay
  clreg local train --base ./base --data a.json --past b.json c.json --joint -o ./joint
  clreg local train --base ./base --data a.json --method fft --lr 2e-5 -o ./round1-fft

The loss counts answer tokens only (prompt + answer + eos). Outputs: a PEFT adapter (lora, olora)
or a Hugging Face checkpoint (fft), plus clreg_train.json with settings, seeds, input digests,
data counts, the loss of every step and tokens/s. Progress goes to stderr; Ctrl-C stops between
steps (checkpoints written so far are kept; resume with --resume).")]
    Train(Box<TrainArgs>),

    /// Evaluate a model on TRACE tasks (generation metrics or multiple-choice log-likelihood) and
    /// write a JSON report per task.
    #[command(after_help = "\
Examples:
  clreg local eval ./base --adapter ./round1 --suite ./suite -o report.json
  clreg local eval ./base --tasks cstance/test.json:exact fomc/test.json:exact -o report.json
  clreg local eval ./base --tasks facts/test.json:mc --limit 20

A task is FILE:METRIC (metrics: exact, first_char, rouge_l, edit_sim, sari, final_number, mc),
or FILE alone when its metric is known: a file of a suite written by `clreg local synth` (its
suite.json names the metric) or a multiple-choice file (every example has `choices`: mc).
--suite DIR evaluates every test set of a suite and its old-knowledge set.")]
    Eval(EvalArgs),

    /// Backward/forward transfer and gain over the base from a score matrix (JSON).
    #[command(after_help = "\
Example:
  clreg local bwt matrix.json

matrix.json: {\"tasks\": [\"a\", \"b\"], \"rounds\": [[0.5, 0.1], [0.4, 0.7]], \"base\": [0.2, 0.1]}
(rounds[t][j] = score on task j after round t+1; optional \"round_of_task\" when a task has
several score columns).")]
    Bwt(BwtArgs),

    /// Write the synthetic mini-TRACE suite (seven tasks + an old-knowledge multiple-choice set),
    /// deterministic from the seed.
    #[command(after_help = "\
Example:
  clreg local synth -o ./suite --seed 1 --train 200 --eval 20 --test 50")]
    Synth(SynthArgs),

    /// Split one TRACE file into train/eval/test files (seeded shuffle).
    #[command(after_help = "\
Example:
  clreg local split data.json -o ./task --eval 0.1 --test 0.1 --seed 0   # task/{train,eval,test}.json")]
    Split(SplitArgs),
}

#[derive(Debug, clap::Args)]
pub struct SplitArgs {
    /// The TRACE file (JSON array or JSON Lines).
    pub file: std::path::PathBuf,
    /// Output directory (created; train.json, eval.json and test.json must not exist).
    #[arg(short, long)]
    pub output: std::path::PathBuf,
    #[arg(long, default_value_t = 0.1)]
    pub eval: f64,
    #[arg(long, default_value_t = 0.1)]
    pub test: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The base checkpoint (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    pub base: std::path::PathBuf,
    /// Earlier rounds' PEFT adapters, oldest first.
    #[arg(long, num_args = 1..)]
    pub adapter: Vec<std::path::PathBuf>,
    /// The current task's TRACE files (JSON array or JSON Lines).
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<std::path::PathBuf>,
    /// Earlier tasks' TRACE files, one task each (for --replay or --joint).
    #[arg(long, num_args = 1..)]
    pub past: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub settings: TrainSettings,
    /// Where checkpoints go (default: OUTPUT.ckpt when --checkpoint-every is set).
    #[arg(long)]
    pub checkpoint_dir: Option<std::path::PathBuf>,
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Continue from the newest checkpoint in the checkpoint directory.
    #[arg(long)]
    pub resume: bool,
    /// Output directory (must not exist or be empty).
    #[arg(short, long)]
    pub output: std::path::PathBuf,
}

/// Every setting of a training run, shared by `clreg local train` and `clreg train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainSettings {
    #[arg(long, default_value = "lora", value_parser = ["lora", "fft", "olora"])]
    pub method: String,
    /// merged: earlier adapters are merged into the weights (the study's); stacked: kept frozen.
    #[arg(long, default_value = "merged", value_parser = ["merged", "stacked"])]
    pub mode: String,
    /// Replay: each earlier task contributes round(FRACTION x |current|) examples per epoch.
    #[arg(long, conflicts_with = "joint")]
    pub replay: Option<f64>,
    /// Joint training: every --data and --past file is a task; smaller ones are upsampled.
    #[arg(long)]
    pub joint: bool,
    /// O-LoRA weight of the orthogonality term.
    #[arg(long, default_value_t = 0.5)]
    pub lambda: f64,
    /// O-LoRA penalty: l1 = sum |A_t A_i^T|, sq = sum of squares.
    #[arg(long, default_value = "l1", value_parser = ["l1", "sq"])]
    pub orth: String,
    /// O-LoRA weight of the L2 norm of the new LoRA's parameters.
    #[arg(long, default_value_t = 0.0)]
    pub lambda2: f64,
    #[arg(long, default_value_t = 8)]
    pub r: usize,
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f64,
    /// LoRA dropout on the adapter input while training (seeded masks).
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    #[arg(long)]
    pub rslora: bool,
    /// LoRA target modules.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    )]
    pub targets: Vec<String>,
    /// FFT: train only weights whose name contains one of these (default: all).
    #[arg(long, value_delimiter = ',')]
    pub fft_params: Vec<String>,
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,
    #[arg(long, default_value = "constant", value_parser = ["constant", "linear", "cosine"])]
    pub lr_schedule: String,
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 4)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Tokens per example (longer ones are truncated: the answer keeps up to half, the prompt its end).
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    /// Concatenate examples into rows of --max-len tokens instead of padding.
    #[arg(long)]
    pub packing: bool,
    /// Clip the global gradient norm (0 turns clipping off).
    #[arg(long, default_value_t = 1.0)]
    pub clip_grad: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `clreg train`: a train job on the server.
#[derive(Debug, clap::Args)]
pub struct TrainJobArgs {
    /// Collaboration the job runs in (and the adapter goes to).
    #[arg(long, value_name = "COLLAB")]
    pub collab: String,
    /// The base model (an artifact reference).
    #[arg(long)]
    pub base: String,
    /// Earlier rounds' adapters (references), oldest first.
    #[arg(long, num_args = 1..)]
    pub adapter: Vec<String>,
    /// The current task's data, carried with the job: TRACE files whose manifests you
    /// registered (`clreg dataset push FILE --manifest-only`).
    #[arg(long, num_args = 1..)]
    pub data: Vec<std::path::PathBuf>,
    /// The current task's data by the digest of a stored dataset (fully-cooperative only).
    #[arg(long, num_args = 1.., value_name = "DIGEST")]
    pub dataset: Vec<String>,
    /// Earlier tasks' data for --replay or --joint, carried (files you registered).
    #[arg(long, num_args = 1..)]
    pub past: Vec<std::path::PathBuf>,
    /// Earlier tasks' data by stored datasets' digests (fully-cooperative only).
    #[arg(long, num_args = 1.., value_name = "DIGEST")]
    pub past_dataset: Vec<String>,
    /// Name of the artifact the job commits (versions count up).
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub settings: TrainSettings,
    /// Run only on a worker with this device kind.
    #[arg(long, value_parser = ["cpu", "cuda"])]
    pub requires: Option<String>,
    /// Follow the job until it ends; exit with its outcome.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// A checkpoint directory (config.json, safetensors, tokenizer.json).
    pub model: std::path::PathBuf,
    /// PEFT adapters stacked on the model, in order.
    #[arg(long, num_args = 1..)]
    pub adapter: Vec<std::path::PathBuf>,
    /// Tasks as FILE:METRIC, or FILE when its metric is known (see below).
    #[arg(long, num_args = 1..)]
    pub tasks: Vec<String>,
    /// A suite written by `clreg local synth`: its test sets and old-knowledge set.
    #[arg(long)]
    pub suite: Option<std::path::PathBuf>,
    /// Evaluate the first N examples of each task.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Write the reports (a JSON array) here as well as to stdout with --json.
    #[arg(short, long)]
    pub output: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct BwtArgs {
    /// The score matrix (JSON).
    pub matrix: std::path::PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// Output directory (created).
    #[arg(short, long)]
    pub output: std::path::PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 200)]
    pub train: usize,
    #[arg(long, default_value_t = 20)]
    pub eval: usize,
    #[arg(long, default_value_t = 50)]
    pub test: usize,
}

#[derive(Debug, clap::Args)]
pub struct ImportGgufArgs {
    /// The .gguf file.
    pub file: std::path::PathBuf,
    /// Output directory (must not exist or be empty).
    #[arg(short, long)]
    pub output: std::path::PathBuf,
    /// Dtype of the written weights.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16"])]
    pub dtype: String,
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// A checkpoint directory (config.json, safetensors, tokenizer.json).
    pub model: std::path::PathBuf,
    #[arg(long)]
    pub prompt: String,
    /// PEFT adapter directories to stack on the model (in order).
    #[arg(long)]
    pub adapter: Vec<std::path::PathBuf>,
    #[arg(long, default_value_t = 32)]
    pub max_tokens: usize,
    /// 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling threshold.
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

fn parse_flavour(s: &str) -> Result<clreg_engine::merge::Flavour, String> {
    match s {
        "mergekit" => Ok(clreg_engine::merge::Flavour::Mergekit),
        "peft" => Ok(clreg_engine::merge::Flavour::Peft),
        _ => Err("use mergekit or peft".to_string()),
    }
}

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The recipe (mergekit YAML subset).
    #[arg(long, short = 'c')]
    pub config: std::path::PathBuf,
    /// Output directory (must not exist or be empty).
    #[arg(short, long)]
    pub output: std::path::PathBuf,
    /// Which tool's semantics for ties/dare: mergekit (default) or peft (overrides the recipe).
    #[arg(long, value_parser = parse_flavour)]
    pub flavour: Option<clreg_engine::merge::Flavour>,
    /// Seed of every random step (DARE masks); overrides the recipe.
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct TinyArgs {
    /// Output directory (created; must not contain a model already).
    #[arg(short, long)]
    pub output: std::path::PathBuf,
    /// Seed of every weight.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 64)]
    pub hidden: usize,
    #[arg(long, default_value_t = 128)]
    pub intermediate: usize,
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 2)]
    pub kv_heads: usize,
    #[arg(long, default_value_t = 256)]
    pub vocab: usize,
    /// Tie the output layer to the embeddings.
    #[arg(long)]
    pub tie: bool,
    /// Shard the weights into files of at most this many bytes.
    #[arg(long)]
    pub shard_bytes: Option<u64>,
    /// words: a word-level vocabulary of --vocab made-up words; bytes: a byte-level BPE
    /// tokenizer that encodes any text (the vocabulary becomes at least 259).
    #[arg(long, default_value = "words", value_parser = ["words", "bytes"])]
    pub tokenizer: String,
}

#[derive(Debug, clap::Args)]
pub struct MixArgs {
    /// The recipe (mergekit-moe YAML subset).
    #[arg(long, short = 'c')]
    pub config: std::path::PathBuf,
    /// Output directory (must not exist or be empty).
    #[arg(short, long)]
    pub output: std::path::PathBuf,
    /// The experts are LoRA adapters (or full fine-tunes decomposed at `rank`): write a
    /// LoRA-MoE bundle instead of a Mixtral checkpoint.
    #[arg(long)]
    pub lora: bool,
    #[command(flatten)]
    pub router: RouterArgs,
    /// Seed of random routers and of the training order; overrides the recipe.
    #[arg(long)]
    pub seed: Option<u64>,
}
