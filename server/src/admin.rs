//! Server-admin operations run from the `clreg-server admin` command (users and API keys).

use chrono::Utc;
use clreg_types::ErrorCode;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set,
};
use serde_json::json;

use crate::auth::new_api_key;
use crate::db::entities::{api_key, user};
use crate::error::ApiError;
use crate::ledger;

/// Creates a user and its first API key. Returns the key, which is never shown again.
pub async fn create_user(
    db: &DatabaseConnection,
    name: &str,
    is_admin: bool,
) -> Result<String, ApiError> {
    clreg_types::check_name(name).map_err(|m| ApiError::new(ErrorCode::InvalidName, m))?;
    let name = name.to_string();
    crate::db::write(db, |txn| {
        let name = name.clone();
        Box::pin(async move {
            if user::Entity::find()
                .filter(user::Column::Name.eq(&name))
                .one(txn)
                .await?
                .is_some()
            {
                return Err(ApiError::conflict(format!(
                    "user `{name}` already exists; use `admin create-key {name}` for another key"
                )));
            }
            let u = user::ActiveModel {
                name: Set(name.clone()),
                is_admin: Set(is_admin),
                created_at: Set(Utc::now()),
                ..Default::default()
            }
            .insert(txn)
            .await?;
            let key = insert_key(txn, u.id).await?;
            ledger::append(
                txn,
                None,
                "user.created",
                "admin",
                json!({"user": name, "admin": is_admin}),
            )
            .await?;
            Ok(key)
        })
    })
    .await
}

/// Adds another API key to an existing user.
pub async fn create_key(db: &DatabaseConnection, name: &str) -> Result<String, ApiError> {
    let name = name.to_string();
    crate::db::write(db, |txn| {
        let name = name.clone();
        Box::pin(async move {
            let u = user::Entity::find()
                .filter(user::Column::Name.eq(&name))
                .one(txn)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("user `{name}`")))?;
            let key = insert_key(txn, u.id).await?;
            ledger::append(txn, None, "api_key.created", "admin", json!({"user": name})).await?;
            Ok(key)
        })
    })
    .await
}

/// Revokes every API key of a user, and every token issued to them so far.
pub async fn revoke_keys(db: &DatabaseConnection, name: &str) -> Result<usize, ApiError> {
    let name = name.to_string();
    crate::db::write(db, |txn| {
        let name = name.clone();
        Box::pin(async move {
            let u = user::Entity::find()
                .filter(user::Column::Name.eq(&name))
                .one(txn)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("user `{name}`")))?;
            let keys = api_key::Entity::find()
                .filter(api_key::Column::UserId.eq(u.id))
                .filter(api_key::Column::RevokedAt.is_null())
                .all(txn)
                .await?;
            let n = keys.len();
            for k in keys {
                let mut active: api_key::ActiveModel = k.into();
                active.revoked_at = Set(Some(Utc::now()));
                active.update(txn).await?;
            }
            let mut active: user::ActiveModel = u.into();
            active.tokens_valid_after = Set(Some(Utc::now()));
            active.update(txn).await?;
            ledger::append(
                txn,
                None,
                "api_key.revoked",
                "admin",
                json!({"user": name, "keys": n}),
            )
            .await?;
            Ok(n)
        })
    })
    .await
}

/// Disables a user (`disable`) or enables them again: a disabled user's keys and tokens are
/// refused; disabling also ends the tokens issued so far.
pub async fn set_disabled(
    db: &DatabaseConnection,
    name: &str,
    disable: bool,
) -> Result<(), ApiError> {
    let name = name.to_string();
    crate::db::write(db, |txn| {
        let name = name.clone();
        Box::pin(async move {
            let u = user::Entity::find()
                .filter(user::Column::Name.eq(&name))
                .one(txn)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("user `{name}`")))?;
            let mut active: user::ActiveModel = u.into();
            let now = Utc::now();
            active.disabled_at = Set(disable.then_some(now));
            if disable {
                active.tokens_valid_after = Set(Some(now));
            }
            active.update(txn).await?;
            let kind = if disable {
                "user.disabled"
            } else {
                "user.enabled"
            };
            ledger::append(txn, None, kind, "admin", json!({"user": name})).await?;
            Ok(())
        })
    })
    .await
}

pub async fn list_users(db: &DatabaseConnection) -> Result<Vec<user::Model>, ApiError> {
    Ok(user::Entity::find()
        .order_by_asc(user::Column::Name)
        .all(db)
        .await?)
}

async fn insert_key<C: sea_orm::ConnectionTrait>(
    txn: &C,
    user_id: i64,
) -> Result<String, ApiError> {
    let (key, hash, prefix) = new_api_key();
    api_key::ActiveModel {
        user_id: Set(user_id),
        key_hash: Set(hash),
        prefix: Set(prefix),
        created_at: Set(Utc::now()),
        revoked_at: Set(None),
        ..Default::default()
    }
    .insert(txn)
    .await?;
    Ok(key)
}
