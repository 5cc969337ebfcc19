//! Collaborations, their members and their policy.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use clreg_types::{
    AddMember, ChangePolicy, Collaboration, CreateCollaboration, ErrorBody, ErrorCode, Member,
    Policy, Role,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, ModelTrait, QueryFilter, Set,
};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::authz::Access;
use crate::db::entities::{collaboration, dataset, member, user};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::ledger;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show))
        .routes(routes!(members, add_member))
        .routes(routes!(remove_member))
        .routes(routes!(change_policy))
}

async fn to_wire<C: ConnectionTrait>(
    db: &C,
    c: collaboration::Model,
    my_roles: Vec<Role>,
) -> Result<Collaboration, ApiError> {
    let creator = user::Entity::find_by_id(c.created_by).one(db).await?;
    Ok(Collaboration {
        policy: c.policy.into(),
        name: c.name,
        description: c.description,
        created_by: creator.map(|u| u.name).unwrap_or_default(),
        created_at: c.created_at,
        my_roles,
    })
}

/// Collaborations the caller is a member of.
#[utoipa::path(get, path = "/api/v1/collaborations", responses((status = 200, body = Vec<Collaboration>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<ApiJson<Vec<Collaboration>>, ApiError> {
    Ok(ApiJson(list_for(&state, &caller).await?))
}

/// The collaborations `caller` belongs to, by name, with the caller's roles in each.
pub(crate) async fn list_for(
    state: &AppState,
    caller: &Caller,
) -> Result<Vec<Collaboration>, ApiError> {
    let mut roles: BTreeMap<i64, Vec<Role>> = BTreeMap::new();
    for m in member::Entity::find()
        .filter(member::Column::UserId.eq(caller.id))
        .all(&state.db)
        .await?
    {
        if let Ok(role) = m.role.parse() {
            roles.entry(m.collab_id).or_default().push(role);
        }
    }
    let collabs = collaboration::Entity::find()
        .filter(collaboration::Column::Id.is_in(roles.keys().copied()))
        .all(&state.db)
        .await?;
    let mut out = Vec::new();
    for c in collabs {
        let mut mine = roles.remove(&c.id).unwrap_or_default();
        mine.sort();
        out.push(to_wire(&state.db, c, mine).await?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Create a collaboration; the caller becomes its owner. The policy can later only be tightened.
#[utoipa::path(post, path = "/api/v1/collaborations", request_body = CreateCollaboration,
    responses((status = 201, body = Collaboration), (status = 409, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateCollaboration>,
) -> Result<(StatusCode, ApiJson<Collaboration>), ApiError> {
    let created = create_for(&state, &caller, req).await?;
    Ok((StatusCode::CREATED, ApiJson(created)))
}

/// Creates a collaboration owned by `caller` (the API's and `clreg-server demo`'s).
pub(crate) async fn create_for(
    state: &AppState,
    caller: &Caller,
    req: CreateCollaboration,
) -> Result<Collaboration, ApiError> {
    clreg_types::check_name(&req.name).map_err(|m| ApiError::new(ErrorCode::InvalidName, m))?;
    crate::db::write(&state.db, |txn| {
        let (req, actor, caller_id) = (req.clone(), caller.name.clone(), caller.id);
        Box::pin(async move {
            let taken = collaboration::Entity::find()
                .filter(collaboration::Column::Name.eq(&req.name))
                .one(txn)
                .await?;
            if taken.is_some() {
                return Err(ApiError::conflict(format!(
                    "collaboration `{}` already exists; choose another name",
                    req.name
                )));
            }
            let c = collaboration::ActiveModel {
                name: Set(req.name.clone()),
                policy: Set(req.policy.into()),
                description: Set(req.description.clone()),
                created_by: Set(caller_id),
                created_at: Set(Utc::now()),
                ..Default::default()
            }
            .insert(txn)
            .await?;
            member::ActiveModel {
                collab_id: Set(c.id),
                user_id: Set(caller_id),
                role: Set(Role::Owner.as_str().to_string()),
                ..Default::default()
            }
            .insert(txn)
            .await?;
            let chain = Some((c.id, c.name.as_str()));
            ledger::append(
                txn,
                chain,
                "collaboration.created",
                &actor,
                json!({"name": c.name, "policy": req.policy, "description": req.description}),
            )
            .await?;
            ledger::append(
                txn,
                chain,
                "member.added",
                &actor,
                json!({"user": actor, "role": Role::Owner}),
            )
            .await?;
            to_wire(txn, c, vec![Role::Owner]).await
        })
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/collaborations/{c}", params(("c" = String, Path)),
    responses((status = 200, body = Collaboration), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
) -> Result<ApiJson<Collaboration>, ApiError> {
    let access = caller.access(&state, &c).await?;
    Ok(ApiJson(wire(&state, access).await?))
}

/// A collaboration as its `access` sees it.
pub(crate) async fn wire(state: &AppState, access: Access) -> Result<Collaboration, ApiError> {
    let Access { collab, mut roles } = access;
    roles.sort();
    to_wire(&state.db, collab, roles).await
}

async fn find_user(state: &AppState, name: &str) -> Result<user::Model, ApiError> {
    user::Entity::find()
        .filter(user::Column::Name.eq(name))
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user `{name}`")))
}

pub(crate) async fn member_list<C: ConnectionTrait>(
    db: &C,
    collab_id: i64,
) -> Result<Vec<Member>, ApiError> {
    let rows = member::Entity::find()
        .filter(member::Column::CollabId.eq(collab_id))
        .all(db)
        .await?;
    let names: BTreeMap<i64, String> = user::Entity::find()
        .filter(user::Column::Id.is_in(rows.iter().map(|m| m.user_id)))
        .all(db)
        .await?
        .into_iter()
        .map(|u| (u.id, u.name))
        .collect();
    let mut by_user: BTreeMap<String, Vec<Role>> = BTreeMap::new();
    for m in rows {
        if let (Some(name), Ok(role)) = (names.get(&m.user_id), m.role.parse()) {
            by_user.entry(name.clone()).or_default().push(role);
        }
    }
    Ok(by_user
        .into_iter()
        .map(|(user, mut roles)| {
            roles.sort();
            Member { user, roles }
        })
        .collect())
}

#[utoipa::path(get, path = "/api/v1/collaborations/{c}/members", params(("c" = String, Path)),
    responses((status = 200, body = Vec<Member>)))]
async fn members(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
) -> Result<ApiJson<Vec<Member>>, ApiError> {
    let access = caller.access(&state, &c).await?;
    Ok(ApiJson(member_list(&state.db, access.collab.id).await?))
}

/// Grant a role (idempotent). Owners only.
#[utoipa::path(post, path = "/api/v1/collaborations/{c}/members", params(("c" = String, Path)), request_body = AddMember,
    responses((status = 200, body = Member), (status = 404, body = ErrorBody)))]
async fn add_member(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
    ApiJson(req): ApiJson<AddMember>,
) -> Result<ApiJson<Member>, ApiError> {
    let access = caller.access(&state, &c).await?;
    Ok(ApiJson(add_member_to(&state, &caller, &access, req).await?))
}

/// Grants `req.role` in the collaboration `access` holds (the caller is an owner).
pub(crate) async fn add_member_to(
    state: &AppState,
    caller: &Caller,
    access: &Access,
    req: AddMember,
) -> Result<Member, ApiError> {
    let target = find_user(state, &req.user).await?;
    crate::db::write(&state.db, |txn| {
        let (collab, target, req) = (access.collab.clone(), target.clone(), req.clone());
        let actor = caller.name.clone();
        Box::pin(async move {
            crate::db::lock_collab(txn, collab.id).await?;
            let existing = member::Entity::find()
                .filter(member::Column::CollabId.eq(collab.id))
                .filter(member::Column::UserId.eq(target.id))
                .filter(member::Column::Role.eq(req.role.as_str()))
                .one(txn)
                .await?;
            if existing.is_none() {
                member::ActiveModel {
                    collab_id: Set(collab.id),
                    user_id: Set(target.id),
                    role: Set(req.role.as_str().to_string()),
                    ..Default::default()
                }
                .insert(txn)
                .await?;
                ledger::append(
                    txn,
                    Some((collab.id, &collab.name)),
                    "member.added",
                    &actor,
                    json!({"user": target.name, "role": req.role}),
                )
                .await?;
            }
            let all = member_list(txn, collab.id).await?;
            all.into_iter()
                .find(|m| m.user == target.name)
                .ok_or_else(|| ApiError::internal("member vanished"))
        })
    })
    .await
}

#[derive(Debug, Deserialize)]
struct RemoveQuery {
    role: Option<Role>,
}

/// Remove a member (all roles, or `?role=` one). The last owner cannot be removed.
#[utoipa::path(delete, path = "/api/v1/collaborations/{c}/members/{user}",
    params(("c" = String, Path), ("user" = String, Path), ("role" = Option<clreg_types::Role>, Query)),
    responses((status = 204), (status = 409, body = ErrorBody)))]
async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((c, name)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    let access = caller.access(&state, &c).await?;
    let target = find_user(&state, &name).await?;
    crate::db::write(&state.db, |txn| {
        let (collab, target, name) = (access.collab.clone(), target.clone(), name.clone());
        let (actor, role) = (caller.name.clone(), query.role);
        Box::pin(async move {
            crate::db::lock_collab(txn, collab.id).await?;
            let mut rows = member::Entity::find()
                .filter(member::Column::CollabId.eq(collab.id))
                .filter(member::Column::UserId.eq(target.id));
            if let Some(role) = role {
                rows = rows.filter(member::Column::Role.eq(role.as_str()));
            }
            let rows = rows.all(txn).await?;
            if rows.is_empty() {
                return Err(ApiError::not_found(format!(
                    "member `{name}` in `{}`",
                    collab.name
                )));
            }
            let removes_owner = rows.iter().any(|m| m.role == Role::Owner.as_str());
            if removes_owner {
                let owners = member::Entity::find()
                    .filter(member::Column::CollabId.eq(collab.id))
                    .filter(member::Column::Role.eq(Role::Owner.as_str()))
                    .all(txn)
                    .await?;
                if owners.len() <= 1 {
                    return Err(ApiError::conflict(format!(
                        "`{name}` is the last owner of `{}`; make someone else owner first",
                        collab.name
                    )));
                }
            }
            let roles: Vec<String> = rows.iter().map(|m| m.role.clone()).collect();
            for row in rows {
                row.delete(txn).await?;
            }
            ledger::append(
                txn,
                Some((collab.id, &collab.name)),
                "member.removed",
                &actor,
                json!({"user": name, "roles": roles}),
            )
            .await?;
            Ok(())
        })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Tighten the policy `full` → `semi`: stored dataset content leaves every reader's view at once
/// and is queued for purging (`crate::purge`), recorded in the ledger once the bytes are gone.
#[utoipa::path(post, path = "/api/v1/collaborations/{c}/policy", params(("c" = String, Path)), request_body = ChangePolicy,
    responses((status = 200, body = Collaboration), (status = 409, body = ErrorBody)))]
async fn change_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
    ApiJson(req): ApiJson<ChangePolicy>,
) -> Result<ApiJson<Collaboration>, ApiError> {
    let access = caller.access(&state, &c).await?;
    let current = access.policy();
    if req.policy == current {
        return Ok(ApiJson(
            to_wire(&state.db, access.collab, access.roles).await?,
        ));
    }
    if req.policy == Policy::Full {
        return Err(ApiError::new(
            ErrorCode::PolicyLoosening,
            "a policy is never loosened from semi to full: members joined under its promise; create a new collaboration instead",
        ));
    }
    let updated = crate::db::write(&state.db, |txn| {
        let (collab, actor) = (access.collab.clone(), caller.name.clone());
        Box::pin(async move {
            crate::db::lock_collab(txn, collab.id).await?;
            let stored = dataset::Entity::find()
                .filter(dataset::Column::CollabId.eq(collab.id))
                .filter(dataset::Column::ContentStored.eq(true))
                .all(txn)
                .await?;
            let mut queued = Vec::new();
            for d in stored {
                queued.push(d.digest.clone());
                let mut active: dataset::ActiveModel = d.into();
                active.content_stored = Set(false);
                active.update(txn).await?;
            }
            let mut active: collaboration::ActiveModel = collab.clone().into();
            active.policy = Set(Policy::Semi.into());
            let updated = active.update(txn).await?;
            ledger::append(
                txn,
                Some((collab.id, &collab.name)),
                "policy.tightened",
                &actor,
                json!({"from": "full", "to": "semi", "purge_queued": queued}),
            )
            .await?;
            crate::purge::queue(txn, collab.id, &queued).await?;
            Ok(updated)
        })
    })
    .await?;
    // The content is out of every reader's view already; the bytes go now, or on a later run
    // of the queue, which records each purge in the ledger once it is true.
    if let Err(e) = crate::purge::run(&state).await {
        tracing::warn!(
            error = e.message,
            "purging dataset content failed; will retry"
        );
    }
    Ok(ApiJson(to_wire(&state.db, updated, access.roles).await?))
}
