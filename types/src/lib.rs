//! The clreg wire contract: every request and response body of `/api/v1`, shared by server and CLI.
//!
//! No I/O lives here. Field names are the JSON names; enums serialise in lower case.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub mod digest;
pub mod error;
pub mod merkle;
pub mod series;
pub mod transparency;

pub use digest::{Digest, DigestError};
pub use error::{ErrorBody, ErrorCode};
pub use series::{
    AddRound, CreateSeries, HistoryPoint, ScoreRow, Series, SeriesReport, SeriesRound, Transfer,
};

/// The path prefix of the JSON API.
pub const API_PREFIX: &str = "/api/v1";

/// The audience every clreg JWT carries.
pub const TOKEN_AUDIENCE: &str = "clreg-api";

/// The header a chunk's starting offset travels in (`PATCH /blobs/uploads/{id}`).
pub const UPLOAD_OFFSET_HEADER: &str = "upload-offset";

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown {} `{s}`; expected one of: {}",
                        stringify!($name).to_lowercase(),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum!(
    /// A collaboration's access policy, fixed at creation (it can only be tightened).
    Policy { Semi => "semi", Full => "full" }
);

string_enum!(
    /// A member's role in one collaboration; a user may hold several.
    Role { Owner => "owner", Contributor => "contributor", Consumer => "consumer", Auditor => "auditor" }
);

string_enum!(
    /// What an artifact is.
    ArtifactKind { Base => "base", Checkpoint => "checkpoint", Adapter => "adapter", Merge => "merge", Mixture => "mixture" }
);

string_enum!(
    /// How a lineage edge's child was made from its parent.
    Relation { Finetune => "finetune", Adapter => "adapter", Merge => "merge", Mix => "mix", Import => "import" }
);

/// `POST /auth/token`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenRequest {
    pub api_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub user: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateCollaboration {
    /// A name: 1–64 of `[A-Za-z0-9._-]`, not starting with `.` or `-` (`NAME_PATTERN`).
    #[schema(pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    pub policy: Policy,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Collaboration {
    pub name: String,
    pub policy: Policy,
    pub description: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// The caller's roles here (empty for a server admin who is not a member).
    pub my_roles: Vec<Role>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub user: String,
    pub roles: Vec<Role>,
}

/// `POST /collaborations/{c}/members`: grant `role` to `user` (idempotent).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AddMember {
    /// A name: 1–64 of `[A-Za-z0-9._-]`, not starting with `.` or `-` (`NAME_PATTERN`).
    #[schema(pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub user: String,
    pub role: Role,
}

/// `POST /collaborations/{c}/policy`: the only allowed change is `full` → `semi`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChangePolicy {
    pub policy: Policy,
}

/// The state of a resumable upload session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UploadStatus {
    pub id: uuid::Uuid,
    /// Bytes received so far; the next chunk must start here.
    pub offset: u64,
    /// The largest blob the server accepts.
    pub max_size: u64,
    pub expires_at: DateTime<Utc>,
}

/// The result of finishing an upload.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
}

/// One file of an artifact, as the client declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileEntry {
    pub digest: Digest,
    pub size: u64,
}

/// A lineage edge declared at push time; `parent` is any artifact reference.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ParentSpec {
    pub parent: String,
    pub relation: Relation,
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Digests of the datasets the step used (their manifests must be registered).
    #[serde(default)]
    pub datasets: Vec<Digest>,
}

/// `POST /collaborations/{c}/artifacts`: commit a manifest once all its blobs are uploaded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommitArtifact {
    /// A name: 1–64 of `[A-Za-z0-9._-]`, not starting with `.` or `-` (`NAME_PATTERN`).
    #[schema(pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    pub kind: ArtifactKind,
    /// The base model (any artifact reference). Required for every kind but `base`.
    #[serde(default)]
    pub base: Option<String>,
    /// Relative file path → content.
    pub files: BTreeMap<String, FileEntry>,
    #[serde(default)]
    pub parents: Vec<ParentSpec>,
    #[serde(default)]
    pub description: String,
}

/// What the server read out of an artifact's files when it was committed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactMetadata {
    /// `architectures[0]` of `config.json`, or the base's for adapters.
    pub architecture: Option<String>,
    /// The weights' dtype (`mixed` when tensors differ).
    pub dtype: Option<String>,
    /// Number of scalar parameters stored in the artifact's safetensors files.
    pub parameters: u64,
    pub tensors: u64,
    pub adapter: Option<AdapterMetadata>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AdapterMetadata {
    pub r: u64,
    pub lora_alpha: f64,
    pub target_modules: Vec<String>,
    pub use_rslora: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ArtifactFile {
    pub path: String,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Artifact {
    /// sha256 of the canonical manifest.
    pub id: String,
    pub collab: String,
    pub name: String,
    pub version: i64,
    pub kind: ArtifactKind,
    pub base: Option<String>,
    pub description: String,
    pub metadata: ArtifactMetadata,
    pub files: Vec<ArtifactFile>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl Artifact {
    /// `collab/name:version`, the human reference.
    pub fn reference(&self) -> String {
        format!("{}/{}:{}", self.collab, self.name, self.version)
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// `POST /collaborations/{c}/artifacts` answer: `created` is false when an identical manifest was
/// already committed (a re-push is idempotent).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommitResult {
    pub created: bool,
    pub artifact: Artifact,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LineageNode {
    pub id: String,
    pub collab: String,
    pub name: String,
    pub version: i64,
    pub kind: ArtifactKind,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LineageEdge {
    pub parent: String,
    pub child: String,
    pub relation: Relation,
    pub method: String,
    pub params: BTreeMap<String, serde_json::Value>,
    pub datasets: Vec<Digest>,
}

/// Ancestors and descendants of `root` as a DAG.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Lineage {
    pub root: String,
    pub nodes: Vec<LineageNode>,
    pub edges: Vec<LineageEdge>,
}

/// `POST /collaborations/{c}/datasets`.
///
/// In a `semi` collaboration only the manifest is recorded and `store_content` must be false.
/// In a `full` one, `store_content: true` keeps the uploaded blob `digest` as the content; the
/// server then validates it as TRACE JSON and counts its examples itself.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisterDataset {
    /// A name: 1–64 of `[A-Za-z0-9._-]`, not starting with `.` or `-` (`NAME_PATTERN`).
    #[schema(pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub name: String,
    /// 1–128 characters, not only spaces.
    #[schema(min_length = 1, max_length = 128, pattern = "\\S")]
    pub task: String,
    #[schema(min_length = 1, max_length = 128, pattern = "\\S")]
    pub metric: String,
    pub digest: Digest,
    pub size: u64,
    pub examples: u64,
    #[serde(default)]
    pub license: String,
    #[serde(default)]
    pub store_content: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Dataset {
    pub digest: Digest,
    pub name: String,
    pub task: String,
    pub metric: String,
    pub size: u64,
    pub examples: u64,
    pub license: String,
    pub content_stored: bool,
    pub registered_by: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LedgerEvent {
    pub seq: i64,
    /// `null` for the server-wide chain (users).
    pub collab: Option<String>,
    pub kind: String,
    pub actor: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// Hex sha256 of the previous event of the same chain (64 zeros for the first).
    pub prev_hash: String,
    /// Hex sha256 over this event's canonical form (see [`ledger_hash`]).
    pub hash: String,
    /// How `hash` was computed; events written before schemes existed are `v1`.
    #[serde(default)]
    pub scheme: LedgerScheme,
}

string_enum!(
    /// How a ledger event's hash is computed. `v1`: sha256 of the line format of
    /// [`ledger_preimage`] (events written before RFC 8785 was adopted keep it); `jcs`: sha256 of
    /// the RFC 8785 (JCS) canonical JSON of the event object `{actor, collab, created_at, kind,
    /// payload, prev_hash, seq}`, which any JCS implementation reproduces.
    LedgerScheme { V1 => "v1", Jcs => "jcs" }
);

// string_enum! takes no per-variant attributes, so `#[default]` cannot be derived.
#[allow(clippy::derivable_impls)]
impl Default for LedgerScheme {
    fn default() -> Self {
        Self::V1
    }
}

/// The `prev_hash` of a chain's first event.
pub const LEDGER_GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hex sha256 of one ledger event under `scheme`: what the server writes and every
/// verifier recomputes.
#[allow(clippy::too_many_arguments)]
pub fn ledger_hash(
    scheme: LedgerScheme,
    prev_hash: &str,
    seq: i64,
    collab: Option<&str>,
    kind: &str,
    actor: &str,
    created_at: &DateTime<Utc>,
    payload: &serde_json::Value,
) -> Result<String, String> {
    use sha2::Digest as _;
    let bytes = match scheme {
        LedgerScheme::V1 => {
            ledger_preimage(prev_hash, seq, collab, kind, actor, created_at, payload).into_bytes()
        }
        LedgerScheme::Jcs => serde_jcs::to_vec(&serde_json::json!({
            "prev_hash": prev_hash,
            "seq": seq,
            "collab": collab,
            "kind": kind,
            "actor": actor,
            "created_at": created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "payload": payload,
        }))
        .map_err(|e| format!("cannot canonicalise the event: {e}"))?,
    };
    Ok(sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The hash of one ledger event: sha256 over `prev_hash \n seq \n collab \n kind \n actor \n
/// created_at(RFC 3339, µs) \n payload (serde_json canonical: sorted keys, no spaces)`.
/// Returned as the string that is hashed so that any party can recompute it.
pub fn ledger_preimage(
    prev_hash: &str,
    seq: i64,
    collab: Option<&str>,
    kind: &str,
    actor: &str,
    created_at: &DateTime<Utc>,
    payload: &serde_json::Value,
) -> String {
    format!(
        "{prev_hash}\n{seq}\n{}\n{kind}\n{actor}\n{}\n{}",
        collab.unwrap_or(""),
        created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        canonical_json(payload)
    )
}

/// JSON with object keys sorted (by bytes) and no insignificant whitespace: the encoding of
/// artifact ids and of `v1` ledger events. The keys are sorted here, not by serde_json's map
/// (which keeps insertion order when any crate in the build turns `preserve_order` on), so ids
/// and hashes never depend on a feature flag. Scalars are serde_json's compact forms.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

string_enum!(
    /// What a job does.
    JobKind { Merge => "merge", Mix => "mix", Train => "train", Eval => "eval" }
);

string_enum!(
    /// Where a job stands: queued → running → succeeded | failed | cancelled.
    JobState { Queued => "queued", Running => "running", Succeeded => "succeeded", Failed => "failed", Cancelled => "cancelled" }
);

impl JobState {
    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// `POST /collaborations/{c}/jobs`: run engine work in the registry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    pub kind: JobKind,
    /// The name of the artifact the job produces (merge, mix, train); its versions count up
    /// as for pushes.
    #[serde(default)]
    pub name: Option<String>,
    /// merge and mix: the mergekit / mergekit-moe YAML recipe, whose model fields are artifact
    /// references (`collab/name[:version]`, an id or an id prefix).
    #[serde(default)]
    pub recipe: Option<String>,
    /// mix: adapters into a LoRA-MoE bundle instead of fine-tunes into a Mixtral checkpoint.
    #[serde(default)]
    pub lora: bool,
    /// train: the base model (an artifact reference).
    #[serde(default)]
    pub base: Option<String>,
    /// train: earlier rounds' adapters (references), oldest first.
    #[serde(default)]
    pub adapters: Vec<String>,
    /// train: the current task's data. mix: the routers' calibration set (one dataset), to
    /// train the routers on before the mixture is written.
    #[serde(default)]
    pub data: Vec<JobData>,
    /// train: earlier tasks' data, for replay and joint schedules.
    #[serde(default)]
    pub past: Vec<JobData>,
    /// train: the engine's settings, as `clreg_train.json` records them (method, lora, lr,
    /// epochs, max_steps, schedule, seed, …). mix with `data`: router training's `steps`,
    /// `learning_rate`, `aux_loss_coef`, `seed` and `max_len`. eval: `limit`, `max_new_tokens`,
    /// `batch_size`. merge: none (the recipe holds its settings). Unknown keys are refused.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// eval: the artifact to score (a reference; an adapter is scored on its base, with the
    /// earlier rounds' adapters it was trained on top of).
    #[serde(default)]
    pub artifact: Option<String>,
    /// eval: the tasks, each a dataset scored with one metric.
    #[serde(default)]
    pub tasks: Vec<JobTask>,
    /// Run only on a worker with this device kind: `cpu` or `cuda`.
    #[serde(default)]
    pub requires: Option<String>,
    #[serde(default)]
    pub description: String,
}

/// A dataset a job uses, named by the digest of a manifest registered in the collaboration.
/// With `content`, the data travels with the job (the only way in a semi-cooperative
/// collaboration, and only for a dataset the submitter registered): the server keeps it under
/// the job alone and deletes it when the job ends. Without, the stored dataset is used
/// (fully-cooperative collaborations).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobData {
    pub digest: Digest,
    /// TRACE JSON whose sha256 is `digest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One task of an eval job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobTask {
    /// The task's name, as evaluations and series reports show it.
    pub task: String,
    /// `exact`, `first_char`, `rouge_l`, `edit_sim`, `sari`, `final_number` or `mc`.
    pub metric: String,
    pub data: JobData,
}

/// What a finished job produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobResult {
    /// Ids of the artifacts it committed.
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// Ids of the evaluations it recorded.
    #[serde(default)]
    pub evaluations: Vec<i64>,
}

/// A score of an artifact on a task with a metric.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Evaluation {
    pub id: i64,
    pub collab: String,
    /// The artifact's id.
    pub artifact: String,
    pub task: String,
    pub metric: String,
    /// In [0, 1].
    pub score: f64,
    /// Examples scored.
    pub n: u64,
    /// The job that scored it, for evaluations the registry ran.
    pub job: Option<uuid::Uuid>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// The format of an imported results file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResultsFormat {
    /// lm-evaluation-harness `results*.json`: one evaluation per task.
    LmEval,
    /// A TRACE inference output of one task (`eval`, `prompts`, `results`, `labels`).
    Trace,
}

/// `POST /collaborations/{c}/evaluations`: scores computed elsewhere, imported.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportEvaluations {
    /// The artifact scored (a reference).
    pub artifact: String,
    pub format: ResultsFormat,
    /// The file's text.
    pub content: String,
    /// trace: the task's name (the file does not say).
    #[serde(default)]
    pub task: Option<String>,
    /// trace: rescore the saved generations with this clreg metric (exact, rouge_l, …)
    /// instead of taking the file's own headline score.
    #[serde(default)]
    pub metric: Option<String>,
    /// The file's name, for messages and the record.
    #[serde(default)]
    pub file: Option<String>,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: uuid::Uuid,
    pub collab: String,
    pub kind: JobKind,
    pub state: JobState,
    pub name: Option<String>,
    pub submitted_by: String,
    /// Fraction done, in [0, 1].
    pub progress: f64,
    /// The latest progress line.
    pub message: String,
    pub attempts: i32,
    pub requires: Option<String>,
    pub result: Option<JobResult>,
    pub error: Option<crate::error::ErrorBody>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Answer of `GET /healthz` and `/readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// A non-negative decimal number as the API writes them: ASCII digits only (Rust's `parse`
/// also takes a leading `+`, which the API does not document).
pub fn parse_digits<T: FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// [`check_name`] as a regular expression, for the OpenAPI description.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$";
/// A digest on the wire, as a regular expression.
pub const DIGEST_PATTERN: &str = "^sha256:[0-9a-f]{64}$";
/// An artifact reference in one path segment: an id or id prefix (8–64 lowercase hex, optionally
/// `sha256:`-prefixed) or `COLLAB/NAME[:VERSION|:latest]` (the `/` percent-encoded).
pub const REFERENCE_PATTERN: &str = "^((sha256:)?[0-9a-f]{8,64}|[A-Za-z0-9_][A-Za-z0-9._-]{0,63}/[A-Za-z0-9_][A-Za-z0-9._-]{0,63}(:([0-9]+|latest))?)$";

/// Whether `name` is acceptable as a collaboration, artifact, dataset or user name:
/// 1–64 characters from `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() || name.len() > 64 || !ok_chars || name.starts_with(['.', '-']) {
        return Err(format!(
            "invalid name `{}`: use 1-64 characters from A-Z a-z 0-9 . _ - and do not start with . or -",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// Whether `path` is acceptable as a file path inside an artifact: relative, `/`-separated,
/// each segment a plain name (no `.`/`..`, no backslash, no NUL or control characters).
pub fn check_file_path(path: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "invalid file path `{}`: {why}",
            path.escape_debug()
        ))
    };
    if path.is_empty() || path.len() > 255 {
        return bad("must be 1-255 bytes");
    }
    if path.starts_with('/') {
        return bad("must be relative");
    }
    if path
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == ':')
    {
        return bad("contains a control character, a backslash or a colon");
    }
    for seg in path.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return bad("has an empty, `.` or `..` segment");
        }
    }
    // Downloads stage files as `NAME.partial…`: a file of that name would be confused with one.
    if path
        .rsplit('/')
        .next()
        .is_some_and(|f| f.contains(".partial"))
    {
        return bad("`.partial` names are reserved for interrupted downloads; rename the file");
    }
    Ok(())
}

/// The paths of one manifest, together: each valid ([`check_file_path`]), no two equal but for
/// case (they would overwrite each other on case-insensitive file systems), and no file that
/// is also a directory of another (`a` and `a/b`).
pub fn check_manifest_paths<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    let mut all = std::collections::BTreeSet::new();
    for p in paths {
        check_file_path(p)?;
        if let Some(other) = seen.insert(p.to_lowercase(), p) {
            return Err(format!(
                "files `{other}` and `{p}` differ only by case; rename one"
            ));
        }
        all.insert(p);
    }
    for p in &all {
        let mut dir = String::new();
        for seg in p.split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(seg);
            if all.contains(dir.as_str()) {
                return Err(format!(
                    "`{dir}` is a file and also the directory of `{p}`; rename one"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_and_paths() {
        assert!(check_name("org-a.v1_2").is_ok());
        for bad in ["", ".hidden", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_file_path("model.safetensors").is_ok());
        assert!(check_file_path("sub/dir/file.json").is_ok());
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../b",
            "a//b",
            "a\0b",
            "c:\\x",
            "a\\b",
            "./a",
            "",
        ] {
            assert!(check_file_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn enums_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(*r));
            assert_eq!(serde_json::to_string(r).ok(), Some(format!("\"{r}\"")));
        }
        assert!("admin".parse::<Role>().is_err());
    }

    #[test]
    fn canonical_json_is_serde_jsons_sorted_compact_form() {
        // What serde_json writes for a BTreeMap-ordered value, on a mix of every JSON type,
        // escapes and non-ASCII keys included.
        let v = serde_json::json!({
            "z": [1, -2.5, 1e300, "q\"uote\n", null, true, {"b": {}, "a": []}],
            "é": "ü\u{1F600}", "a b": {"y": 0.1, "x": -0.0}, "A": false
        });
        assert_eq!(canonical_json(&v), v.to_string());
    }

    #[test]
    fn jcs_ledger_hashes_are_sha256_of_the_rfc8785_form() {
        use sha2::Digest as _;
        let at = DateTime::parse_from_rfc3339("2026-11-30T12:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let payload = serde_json::json!({"b": [true, null, 1.5, 10], "a": "é\n"});
        // Written by hand: keys in UTF-16 order, no whitespace, RFC 8785 escapes and numbers.
        let canonical = concat!(
            r#"{"actor":"alice","collab":"lab","created_at":"2026-11-30T12:00:00.123456Z","#,
            r#""kind":"artifact.committed","payload":{"a":"é\n","b":[true,null,1.5,10]},"#,
            r#""prev_hash":"00","seq":7}"#
        );
        let expected: String = sha2::Sha256::digest(canonical.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let got = ledger_hash(
            LedgerScheme::Jcs,
            "00",
            7,
            Some("lab"),
            "artifact.committed",
            "alice",
            &at,
            &payload,
        )
        .unwrap();
        assert_eq!(got, expected);
        // v1 is the line format, unchanged.
        let v1 = ledger_hash(
            LedgerScheme::V1,
            "00",
            7,
            Some("lab"),
            "k",
            "alice",
            &at,
            &payload,
        );
        let line = ledger_preimage("00", 7, Some("lab"), "k", "alice", &at, &payload);
        let expected_v1: String = sha2::Sha256::digest(line.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(v1.unwrap(), expected_v1);
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b": 1, "a": {"d": [1, 2], "c": null}}"#).unwrap_or_default();
        assert_eq!(canonical_json(&v), r#"{"a":{"c":null,"d":[1,2]},"b":1}"#);
    }

    /// A ledger payload is hashed as written and verified as read back: every float must
    /// survive the trip exactly (serde_json's default parser is off by an ulp for some, such
    /// as computed BWT figures; the workspace enables `float_roundtrip`).
    #[test]
    fn canonical_json_reads_back_every_float_exactly() {
        let mut x = 0.123_456_789_f64;
        for _ in 0..100_000 {
            x = (x * std::f64::consts::PI + std::f64::consts::E).fract() - 0.5;
            let text = canonical_json(&serde_json::json!({ "v": x / 7.0 }));
            let back: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            assert_eq!(canonical_json(&back), text);
        }
    }
}
