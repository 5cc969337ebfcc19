//! Authorization: one table of every route and who may call it. Unlisted means denied.

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use clreg_types::{ErrorCode, Policy, Role};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::auth::Caller;
use crate::db::entities::{collaboration, member, user};
use crate::error::ApiError;
use crate::state::AppState;

/// What a collaboration member does; DESIGN.md's table, row by row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read collaboration, members, manifests, lineage, evaluations, reports, jobs, ledger.
    Read,
    /// Download artifact files.
    Download,
    /// Push checkpoints and adapters (base models need `PushBase`, checked on the body's kind).
    Push,
    PushBase,
    /// Register a dataset manifest, upload or download its content (`full` only for content).
    Datasets,
    /// Add or remove members, change roles.
    ManageMembers,
    /// Tighten the policy `full` → `semi`.
    TightenPolicy,
    /// Submit train jobs.
    SubmitTrain,
    /// Submit merge, mix and eval jobs; import evaluations; create and extend round series.
    SubmitJob,
    /// Cancel a job (owners any job; others their own, which the handler checks).
    CancelJob,
}

impl Action {
    pub fn roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            Action::Read => &[Owner, Contributor, Consumer, Auditor],
            Action::Download => &[Owner, Contributor, Consumer],
            Action::Push | Action::Datasets | Action::SubmitTrain => &[Owner, Contributor],
            Action::SubmitJob | Action::CancelJob => &[Owner, Contributor, Consumer],
            Action::PushBase | Action::ManageMembers | Action::TightenPolicy => &[Owner],
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// No credentials (health, token exchange, API description).
    Public,
    /// Any authenticated user (create or list collaborations, upload blobs).
    User,
    /// A member with a role that allows the action in the route's collaboration; the handler
    /// finds the collaboration (path or artifact) and calls `Caller::access`.
    Member(Action),
    /// Blob content: the caller must be allowed to download some artifact or dataset that holds it.
    BlobReader,
}

/// Every route of the server: (method, path as axum matches it, rule).
pub const ROUTES: &[(&str, &str, Rule)] = &[
    ("GET", "/healthz", Rule::Public),
    ("GET", "/readyz", Rule::Public),
    ("GET", "/api/v1/openapi.json", Rule::Public),
    ("POST", "/api/v1/auth/token", Rule::Public),
    ("GET", "/api/v1/collaborations", Rule::User),
    ("POST", "/api/v1/collaborations", Rule::User),
    (
        "GET",
        "/api/v1/collaborations/{c}",
        Rule::Member(Action::Read),
    ),
    (
        "GET",
        "/api/v1/collaborations/{c}/members",
        Rule::Member(Action::Read),
    ),
    (
        "POST",
        "/api/v1/collaborations/{c}/members",
        Rule::Member(Action::ManageMembers),
    ),
    (
        "DELETE",
        "/api/v1/collaborations/{c}/members/{user}",
        Rule::Member(Action::ManageMembers),
    ),
    (
        "POST",
        "/api/v1/collaborations/{c}/policy",
        Rule::Member(Action::TightenPolicy),
    ),
    ("HEAD", "/api/v1/blobs/{digest}", Rule::User),
    ("GET", "/api/v1/blobs/{digest}", Rule::BlobReader),
    // Filtered to the artifacts the caller may read: the handler checks.
    ("GET", "/api/v1/blobs/{digest}/artifacts", Rule::User),
    ("POST", "/api/v1/blobs/uploads", Rule::User),
    ("GET", "/api/v1/blobs/uploads/{id}", Rule::User),
    ("PATCH", "/api/v1/blobs/uploads/{id}", Rule::User),
    ("PUT", "/api/v1/blobs/uploads/{id}", Rule::User),
    ("DELETE", "/api/v1/blobs/uploads/{id}", Rule::User),
    (
        "GET",
        "/api/v1/collaborations/{c}/artifacts",
        Rule::Member(Action::Read),
    ),
    (
        "POST",
        "/api/v1/collaborations/{c}/artifacts",
        Rule::Member(Action::Push),
    ),
    (
        "GET",
        "/api/v1/collaborations/{c}/artifacts/{name}/{version}",
        Rule::Member(Action::Read),
    ),
    (
        "GET",
        "/api/v1/collaborations/{c}/lineage",
        Rule::Member(Action::Read),
    ),
    ("GET", "/api/v1/artifacts/{id}", Rule::Member(Action::Read)),
    (
        "GET",
        "/api/v1/artifacts/{id}/lineage",
        Rule::Member(Action::Read),
    ),
    (
        "GET",
        "/api/v1/artifacts/{id}/files/{path}",
        Rule::Member(Action::Download),
    ),
    (
        "GET",
        "/api/v1/collaborations/{c}/datasets",
        Rule::Member(Action::Read),
    ),
    (
        "POST",
        "/api/v1/collaborations/{c}/datasets",
        Rule::Member(Action::Datasets),
    ),
    (
        "GET",
        "/api/v1/collaborations/{c}/datasets/{digest}",
        Rule::Member(Action::Read),
    ),
    (
        "GET",
        "/api/v1/collaborations/{c}/datasets/{digest}/content",
        Rule::Member(Action::Datasets),
    ),
    (
        "GET",
        "/api/v1/collaborations/{c}/ledger",
        Rule::Member(Action::Read),
    ),
    (
        "GET",
        "/api/v1/collaborations/{c}/ledger/checkpoint",
        Rule::Member(Action::Read),
    ),
    (
        "GET",
        "/api/v1/collaborations/{c}/ledger/proof/inclusion",
        Rule::Member(Action::Read),
    ),
    (
        "GET",
        "/api/v1/collaborations/{c}/ledger/proof/consistency",
        Rule::Member(Action::Read),
    ),
    ("GET", "/.well-known/clreg/ledger-keys", Rule::Public),
    (
        "GET",
        "/api/v1/collaborations/{c}/jobs",
        Rule::Member(Action::Read),
    ),
    // Jobs that train on data need SubmitTrain, which the handler checks on the body
    // (`jobs::required_action`).
    (
        "POST",
        "/api/v1/collaborations/{c}/jobs",
        Rule::Member(Action::SubmitJob),
    ),
    ("GET", "/api/v1/jobs/{id}", Rule::Member(Action::Read)),
    (
        "GET",
        "/api/v1/collaborations/{c}/evaluations",
        Rule::Member(Action::Read),
    ),
    (
        "POST",
        "/api/v1/collaborations/{c}/evaluations",
        Rule::Member(Action::SubmitJob),
    ),
    (
        "GET",
        "/api/v1/collaborations/{c}/series",
        Rule::Member(Action::Read),
    ),
    (
        "POST",
        "/api/v1/collaborations/{c}/series",
        Rule::Member(Action::SubmitJob),
    ),
    (
        "GET",
        "/api/v1/collaborations/{c}/series/{s}",
        Rule::Member(Action::Read),
    ),
    (
        "POST",
        "/api/v1/collaborations/{c}/series/{s}/rounds",
        Rule::Member(Action::SubmitJob),
    ),
    (
        "GET",
        "/api/v1/collaborations/{c}/series/{s}/report",
        Rule::Member(Action::Read),
    ),
    ("GET", "/api/v1/jobs/{id}/log", Rule::Member(Action::Read)),
    // The Hugging Face Hub–compatible read API (routes/hf.rs): metadata to readers, bytes to
    // those who may download.
    ("GET", "/hf/api/models/{c}/{n}", Rule::Member(Action::Read)),
    (
        "GET",
        "/hf/api/models/{c}/{n}/revision/{rev}",
        Rule::Member(Action::Read),
    ),
    (
        "GET",
        "/hf/api/models/{c}/{n}/tree/{rev}",
        Rule::Member(Action::Read),
    ),
    (
        "GET",
        "/hf/api/models/{c}/{n}/tree/{rev}/{*path}",
        Rule::Member(Action::Read),
    ),
    (
        "POST",
        "/hf/api/models/{c}/{n}/paths-info/{rev}",
        Rule::Member(Action::Read),
    ),
    (
        "GET",
        "/hf/{c}/{n}/resolve/{rev}/{*path}",
        Rule::Member(Action::Download),
    ),
    // Owners cancel any job, others their own: the handler checks.
    (
        "POST",
        "/api/v1/jobs/{id}/cancel",
        Rule::Member(Action::CancelJob),
    ),
    // The web UI (routes/ui): the same rules, with a session cookie for credentials.
    ("GET", "/", Rule::Public),
    ("GET", "/ui", Rule::Public),
    ("GET", "/ui/static/clreg.css", Rule::Public),
    ("GET", "/ui/static/clreg.js", Rule::Public),
    ("GET", "/ui/login", Rule::Public),
    // The form token is checked against its cookie: see routes/ui/session.rs.
    ("POST", "/ui/login", Rule::Public),
    ("POST", "/ui/logout", Rule::User),
    ("GET", "/ui/", Rule::User),
    ("GET", "/ui/c/{c}", Rule::Member(Action::Read)),
    ("GET", "/ui/c/{c}/lineage", Rule::Member(Action::Read)),
    ("GET", "/ui/c/{c}/ledger", Rule::Member(Action::Read)),
    ("GET", "/ui/c/{c}/series/{s}", Rule::Member(Action::Read)),
    ("GET", "/ui/artifacts/{id}", Rule::Member(Action::Read)),
    (
        "GET",
        "/ui/artifacts/{id}/files/{*path}",
        Rule::Member(Action::Download),
    ),
    ("GET", "/ui/jobs/{id}", Rule::Member(Action::Read)),
    ("GET", "/ui/jobs/{id}/events", Rule::Member(Action::Read)),
    // Owners cancel any job, others their own: jobs::cancel checks.
    (
        "POST",
        "/ui/jobs/{id}/cancel",
        Rule::Member(Action::CancelJob),
    ),
];

pub fn rule_for(method: &Method, path: &str) -> Option<Rule> {
    // HEAD on a GET route without its own HEAD entry is served by axum as GET: same rule.
    let find = |m: &str| {
        ROUTES
            .iter()
            .find(|(rm, rp, _)| *rm == m && *rp == path)
            .map(|r| r.2)
    };
    find(method.as_str()).or_else(|| (method == Method::HEAD).then(|| find("GET")).flatten())
}

/// The methods the table serves on `path` (HEAD wherever GET is).
fn methods_of(path: &str) -> Vec<&'static str> {
    let mut methods: Vec<&'static str> = ROUTES
        .iter()
        .filter(|(_, rp, _)| *rp == path)
        .map(|(m, _, _)| *m)
        .collect();
    if methods.contains(&"GET") && !methods.contains(&"HEAD") {
        methods.push("HEAD");
    }
    methods
}

/// `405 method_not_allowed` with the `Allow` header.
fn method_not_allowed(method: &Method, allowed: &[&str]) -> Response {
    let mut response = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not served here; use {}", allowed.join(", ")),
    )
    .into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&allowed.join(", ")) {
        response.headers_mut().insert(axum::http::header::ALLOW, v);
    }
    response
}

/// Route-level middleware: looks the matched route up in `ROUTES`, authenticates when the rule
/// needs it, and hands the handler a `Caller` carrying the rule.
pub async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let path = path.as_str();
    let Some(rule) = rule_for(request.method(), path) else {
        // A known route asked with a method it does not serve.
        let allowed = methods_of(path);
        if !allowed.is_empty() {
            return Ok(method_not_allowed(request.method(), &allowed));
        }
        tracing::error!(method = %request.method(), path, "route missing from the authorization table");
        return Err(ApiError::forbidden("this route has no authorization rule"));
    };
    if rule != Rule::Public && path.starts_with("/ui") {
        match crate::routes::ui::session::authenticate(&state, request.headers(), rule).await {
            Ok((caller, session)) => {
                request.extensions_mut().insert(caller);
                request.extensions_mut().insert(session);
            }
            Err(e) => {
                return Ok(crate::routes::ui::unauthenticated(
                    request.method(),
                    request.uri(),
                    e,
                ));
            }
        }
    } else if rule != Rule::Public {
        let header = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let caller = authenticate(&state, header.as_deref(), rule).await?;
        request.extensions_mut().insert(caller);
    }
    Ok(next.run(request).await)
}

async fn authenticate(
    state: &AppState,
    header: Option<&str>,
    rule: Rule,
) -> Result<Caller, ApiError> {
    // The header is copied out first: a request body is not Sync, so it cannot be borrowed here.
    let header = header.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "missing `Authorization: Bearer <token>`; get a token from POST /api/v1/auth/token",
        )
    })?;
    let token = header.strip_prefix("Bearer ").ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "the Authorization header must be `Bearer <token>`",
        )
    })?;
    let token = token.trim();
    // An API key works as a bearer token too (Hugging Face clients send `HF_TOKEN` so).
    let user = if crate::auth::is_api_key(token) {
        crate::auth::user_of_api_key(&state.db, token)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidApiKey,
                    "unknown or revoked API key; ask a server admin for a new one",
                )
            })?
    } else {
        let claims = state.keys.verify(token)?;
        let user = user::Entity::find_by_id(claims.uid)
            .one(&state.db)
            .await?
            .filter(|u| u.name == claims.sub)
            .ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidToken, "the token's user no longer exists")
            })?;
        // Keys revoked or the user disabled since the token was issued: it ends with them.
        let issued_ms = claims.iat_ms.unwrap_or(claims.iat.saturating_mul(1000));
        if user.disabled_at.is_some()
            || user
                .tokens_valid_after
                .is_some_and(|t| issued_ms <= t.timestamp_millis())
        {
            return Err(ApiError::new(
                ErrorCode::InvalidToken,
                "this token was revoked (the user's keys were revoked or the user disabled); log in again with a valid key",
            ));
        }
        user
    };
    Ok(Caller {
        id: user.id,
        name: user.name,
        is_admin: user.is_admin,
        rule,
    })
}

/// A collaboration as seen by a caller who passed its route's rule.
#[derive(Debug, Clone)]
pub struct Access {
    pub collab: collaboration::Model,
    pub roles: Vec<Role>,
}

impl Access {
    pub fn policy(&self) -> Policy {
        self.collab.policy.into()
    }

    pub fn has(&self, action: Action) -> bool {
        self.roles.iter().any(|r| action.roles().contains(r))
    }

    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        if self.has(action) {
            return Ok(());
        }
        let allowed: Vec<&str> = action.roles().iter().map(|r| r.as_str()).collect();
        Err(ApiError::forbidden(format!(
            "this needs the role {} in collaboration `{}`; ask an owner to grant it",
            allowed.join(" or "),
            self.collab.name
        )))
    }
}

impl Caller {
    /// Loads `collab` and the caller's roles in it and checks the route's rule. Non-members get
    /// `not_found`, so collaboration names do not leak.
    pub async fn access(&self, state: &AppState, collab_name: &str) -> Result<Access, ApiError> {
        let collab = collaboration::Entity::find()
            .filter(collaboration::Column::Name.eq(collab_name))
            .one(&state.db)
            .await?;
        let collab =
            collab.ok_or_else(|| ApiError::not_found(format!("collaboration `{collab_name}`")))?;
        self.access_to(state, collab).await
    }

    pub async fn access_to(
        &self,
        state: &AppState,
        collab: collaboration::Model,
    ) -> Result<Access, ApiError> {
        let roles: Vec<Role> = member::Entity::find()
            .filter(member::Column::CollabId.eq(collab.id))
            .filter(member::Column::UserId.eq(self.id))
            .all(&state.db)
            .await?
            .into_iter()
            .filter_map(|m| m.role.parse().ok())
            .collect();
        self.access_with(collab, roles)
    }

    /// [`Caller::access_to`] with the caller's roles in `collab` already read.
    pub fn access_with(
        &self,
        collab: collaboration::Model,
        roles: Vec<Role>,
    ) -> Result<Access, ApiError> {
        if roles.is_empty() {
            return Err(ApiError::not_found(format!(
                "collaboration `{}`",
                collab.name
            )));
        }
        let access = Access { collab, roles };
        match self.rule {
            Rule::Member(action) => access.require(action)?,
            _ => {
                return Err(ApiError::internal(
                    "collaboration access on a non-member route",
                ));
            }
        }
        Ok(access)
    }
}
