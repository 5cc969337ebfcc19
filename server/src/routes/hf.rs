//! A read-only Hugging Face Hub–compatible API under `/hf`, so `transformers`, `peft` and
//! `huggingface_hub` load registry models with `HF_ENDPOINT=<server>/hf` and
//! `HF_TOKEN=<API key or JWT>`. Tested with huggingface_hub 2.4.0.
//!
//! - A repository is `COLLAB/NAME`; revision `main` is the latest version, a number is that
//!   version, and a hex prefix (7–64) of an artifact id is that artifact. The commit sha
//!   clients see is the first 40 hex digits of the artifact id.
//! - The authorization table applies as everywhere: metadata needs `Read`, file bytes
//!   `Download` (auditors get metadata only); non-members see `RepoNotFound`, as private
//!   repositories do on the Hub.
//! - Errors carry `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`,
//!   `GatedRepo`) and `X-Error-Message`, which the client maps to its own exceptions.
//! - Files stream from the object store (Range supported); the ETag is the file's sha256.

use std::collections::BTreeSet;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clreg_types::ErrorCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::db::entities::{artifact, artifact_file};
use crate::error::{ApiError, ApiPath};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/hf/api/models/{c}/{n}", get(info))
        .route("/hf/api/models/{c}/{n}/revision/{rev}", get(info_at))
        .route("/hf/api/models/{c}/{n}/tree/{rev}", get(tree))
        .route("/hf/api/models/{c}/{n}/tree/{rev}/{*path}", get(tree_under))
        .route("/hf/api/models/{c}/{n}/paths-info/{rev}", post(paths_info))
        .route(
            "/hf/{c}/{n}/resolve/{rev}/{*path}",
            get(resolve).head(resolve),
        )
}

/// An error as the Hub answers it.
#[derive(Debug)]
struct HubError {
    status: StatusCode,
    code: &'static str,
    message: String,
    commit: Option<String>,
}

impl HubError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        HubError {
            status,
            code,
            message: message.into(),
            commit: None,
        }
    }
}

impl From<ApiError> for HubError {
    fn from(e: ApiError) -> Self {
        match e.code {
            ErrorCode::NotFound => HubError::new(StatusCode::NOT_FOUND, "RepoNotFound", e.message),
            // A member without the right (an auditor asking for bytes).
            ErrorCode::Forbidden => HubError::new(StatusCode::FORBIDDEN, "GatedRepo", e.message),
            _ => HubError {
                status: StatusCode::from_u16(e.code.status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                code: "",
                message: e.message,
                commit: None,
            },
        }
    }
}

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({"error": self.message}))).into_response();
        let h = response.headers_mut();
        if !self.code.is_empty() {
            h.insert("x-error-code", HeaderValue::from_static(self.code));
        }
        // Header values must be visible ASCII; the JSON body keeps the full message.
        let printable: String = self
            .message
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&printable) {
            h.insert("x-error-message", v);
        }
        if let Some(commit) = self.commit.and_then(|c| HeaderValue::from_str(&c).ok()) {
            h.insert("x-repo-commit", commit);
        }
        response
    }
}

/// Middleware over the whole app: under `/hf`, refusals that did not come from these
/// handlers (the authorization middleware's missing or bad credentials, unknown routes) read as
/// the Hub's own: the repository is not found for this caller.
pub async fn hub_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let hub = request.uri().path().starts_with("/hf/");
    let mut response = next.run(request).await;
    let status = response.status();
    if hub
        && matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
        )
        && !response.headers().contains_key("x-error-code")
    {
        let code = if status == StatusCode::FORBIDDEN {
            "GatedRepo"
        } else {
            "RepoNotFound"
        };
        response
            .headers_mut()
            .insert("x-error-code", HeaderValue::from_static(code));
    }
    response
}

/// The 40-hex commit a client sees for an artifact.
fn commit_of(a: &artifact::Model) -> String {
    a.id.chars().take(40).collect()
}

/// The artifact `rev` names in repository `c/n`, for this caller.
async fn revision(
    state: &AppState,
    caller: &Caller,
    c: &str,
    n: &str,
    rev: &str,
) -> Result<artifact::Model, HubError> {
    let repo_missing = || {
        HubError::new(
            StatusCode::NOT_FOUND,
            "RepoNotFound",
            format!("repository `{c}/{n}` not found (or you may not read it)"),
        )
    };
    let access = caller.access(state, c).await.map_err(|e| match e.code {
        ErrorCode::NotFound => repo_missing(),
        _ => e.into(),
    })?;
    let versions = artifact::Entity::find()
        .filter(artifact::Column::CollabId.eq(access.collab.id))
        .filter(artifact::Column::Name.eq(n))
        .order_by_desc(artifact::Column::Version)
        .all(&state.db)
        .await
        .map_err(ApiError::from)?;
    if versions.is_empty() {
        return Err(repo_missing());
    }
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    let found = match rev {
        "main" => versions.first(),
        r if !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()) && r.len() < 7 => {
            versions.iter().find(|a| a.version.to_string() == r)
        }
        r if (7..=64).contains(&r.len()) && hex(r) => versions.iter().find(|a| a.id.starts_with(r)),
        _ => None,
    };
    found.cloned().ok_or_else(|| {
        HubError::new(
            StatusCode::NOT_FOUND,
            "RevisionNotFound",
            format!(
                "revision `{rev}` of `{c}/{n}` not found: use main, a version number (1 to {}) or an artifact id",
                versions.len()
            ),
        )
    })
}

async fn files_of(
    state: &AppState,
    a: &artifact::Model,
) -> Result<Vec<artifact_file::Model>, HubError> {
    Ok(artifact_file::Entity::find()
        .filter(artifact_file::Column::ArtifactId.eq(&a.id))
        .order_by_asc(artifact_file::Column::Path)
        .all(&state.db)
        .await
        .map_err(ApiError::from)?)
}

/// Model info: what `model_info` and `snapshot_download` read (`id`, `sha`, `siblings`).
async fn model_info(
    state: &AppState,
    caller: &Caller,
    c: &str,
    n: &str,
    rev: &str,
) -> Result<Response, HubError> {
    let a = revision(state, caller, c, n, rev).await?;
    let files = files_of(state, &a).await?;
    let library = if a.kind == clreg_types::ArtifactKind::Adapter.as_str() {
        "peft"
    } else {
        "transformers"
    };
    let body = json!({
        "_id": a.id,
        "id": format!("{c}/{n}"),
        "modelId": format!("{c}/{n}"),
        "sha": commit_of(&a),
        "private": true,
        "disabled": false,
        "gated": false,
        "lastModified": a.created_at,
        "createdAt": a.created_at,
        "library_name": library,
        "pipeline_tag": "text-generation",
        "tags": [a.kind, format!("clreg-version:{}", a.version)],
        "siblings": files
            .iter()
            .map(|f| json!({"rfilename": f.path, "size": f.size}))
            .collect::<Vec<_>>(),
    });
    Ok(axum::Json(body).into_response())
}

async fn info(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((c, n)): ApiPath<(String, String)>,
) -> Result<Response, HubError> {
    model_info(&state, &caller, &c, &n, "main").await
}

async fn info_at(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((c, n, rev)): ApiPath<(String, String, String)>,
) -> Result<Response, HubError> {
    model_info(&state, &caller, &c, &n, &rev).await
}

/// One tree entry: a file, or a folder of them.
fn file_entry(f: &artifact_file::Model) -> Value {
    json!({"type": "file", "path": f.path, "size": f.size,
           "oid": f.digest.chars().take(40).collect::<String>()})
}

fn folder_entry(path: &str) -> Value {
    use sha2::{Digest as _, Sha256};
    let oid = hex::encode(Sha256::digest(path.as_bytes()));
    json!({"type": "directory", "path": path, "oid": &oid[..40]})
}

/// The entries under `prefix` ("" for the root): its direct children, or all with `recursive`.
fn entries(files: &[artifact_file::Model], prefix: &str, recursive: bool) -> Vec<Value> {
    let under = |p: &str| -> Option<String> {
        if prefix.is_empty() {
            Some(p.to_string())
        } else {
            p.strip_prefix(prefix)?
                .strip_prefix('/')
                .map(str::to_string)
        }
    };
    let join = |rest: &str| {
        if prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{prefix}/{rest}")
        }
    };
    let mut folders = BTreeSet::new();
    let mut out = Vec::new();
    for f in files {
        let Some(rest) = under(&f.path) else { continue };
        let parts: Vec<&str> = rest.split('/').collect();
        for depth in 1..parts.len() {
            if depth > 1 && !recursive {
                break;
            }
            folders.insert(join(&parts[..depth].join("/")));
        }
        if parts.len() == 1 || recursive {
            out.push(file_entry(f));
        }
    }
    let mut all: Vec<Value> = folders.iter().map(|p| folder_entry(p)).collect();
    all.extend(out);
    all
}

#[derive(Debug, Deserialize)]
struct TreeQuery {
    #[serde(default)]
    recursive: Option<String>,
}

async fn list_tree(
    state: &AppState,
    caller: &Caller,
    (c, n, rev): (&str, &str, &str),
    path: &str,
    recursive: bool,
) -> Result<Response, HubError> {
    let a = revision(state, caller, c, n, rev).await?;
    let files = files_of(state, &a).await?;
    let path = path.trim_matches('/');
    let listed = entries(&files, path, recursive);
    if listed.is_empty() && !path.is_empty() {
        return Err(HubError {
            commit: Some(commit_of(&a)),
            ..HubError::new(
                StatusCode::NOT_FOUND,
                "EntryNotFound",
                format!("`{path}` is not a folder of `{c}/{n}` at `{rev}`"),
            )
        });
    }
    Ok(axum::Json(listed).into_response())
}

async fn tree(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((c, n, rev)): ApiPath<(String, String, String)>,
    Query(q): Query<TreeQuery>,
) -> Result<Response, HubError> {
    let recursive = q.recursive.as_deref() == Some("true");
    list_tree(&state, &caller, (&c, &n, &rev), "", recursive).await
}

async fn tree_under(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((c, n, rev, path)): ApiPath<(String, String, String, String)>,
    Query(q): Query<TreeQuery>,
) -> Result<Response, HubError> {
    let recursive = q.recursive.as_deref() == Some("true");
    list_tree(&state, &caller, (&c, &n, &rev), &path, recursive).await
}

/// `paths-info`: the entries of the named paths (files, or folders), as a form lists them.
async fn paths_info(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((c, n, rev)): ApiPath<(String, String, String)>,
    axum::Form(form): axum::Form<Vec<(String, String)>>,
) -> Result<Response, HubError> {
    let a = revision(&state, &caller, &c, &n, &rev).await?;
    let files = files_of(&state, &a).await?;
    let mut out = Vec::new();
    for (key, path) in form {
        if key != "paths" {
            continue;
        }
        let path = path.trim_matches('/');
        if let Some(f) = files.iter().find(|f| f.path == path) {
            out.push(file_entry(f));
        } else if files
            .iter()
            .any(|f| f.path.starts_with(&format!("{path}/")))
        {
            out.push(folder_entry(path));
        }
    }
    Ok(axum::Json(out).into_response())
}

/// A file of a revision: HEAD answers its metadata (commit, ETag = sha256, size), GET streams
/// it (Range supported).
async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    method: Method,
    ApiPath((c, n, rev, path)): ApiPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, HubError> {
    let a = revision(&state, &caller, &c, &n, &rev).await?;
    let commit = commit_of(&a);
    let file = artifact_file::Entity::find()
        .filter(artifact_file::Column::ArtifactId.eq(&a.id))
        .filter(artifact_file::Column::Path.eq(&path))
        .one(&state.db)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| HubError {
            commit: Some(commit.clone()),
            ..HubError::new(
                StatusCode::NOT_FOUND,
                "EntryNotFound",
                format!("`{c}/{n}` has no file `{path}` at `{rev}`"),
            )
        })?;
    let digest = clreg_types::Digest::parse_lenient(&file.digest).map_err(ApiError::internal)?;
    let size = u64::try_from(file.size).unwrap_or(0);
    let mut response = if method == Method::HEAD {
        let mut r = StatusCode::OK.into_response();
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        r.headers_mut()
            .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        r
    } else {
        crate::blobs::serve(&state, &digest, size, &headers).await?
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", digest.hex())) {
        h.insert(header::ETAG, v.clone());
        h.insert("x-linked-etag", v);
    }
    h.insert("x-linked-size", HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&commit) {
        h.insert("x-repo-commit", v);
    }
    Ok(response)
}
