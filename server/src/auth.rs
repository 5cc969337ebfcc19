//! Identity: API keys (stored hashed), short-lived HS256 JWTs with `kid` rotation, and `Caller`.

use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use clreg_types::ErrorCode;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::{Config, JwtKey};
use crate::error::ApiError;

/// The only algorithm clreg signs or accepts.
const ALGORITHM: Algorithm = Algorithm::HS256;
const KEY_PREFIX: &str = "clreg_";

pub struct Keys {
    /// (kid, encoding key); the first signs.
    signing: (String, EncodingKey),
    verifying: Vec<(String, DecodingKey)>,
    issuer: String,
    ttl: Duration,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub uid: i64,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// When it was issued, in milliseconds (`iat` has whole seconds: a token issued just
    /// after a revocation in the same second must not count as revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_ms: Option<i64>,
}

impl Keys {
    pub fn load_or_generate(config: &Config) -> anyhow::Result<Keys> {
        let keys = if config.jwt_keys.is_empty() {
            load_or_create_key_file(&config.data_dir.join("jwt-keys.json"))?
        } else {
            config.jwt_keys.clone()
        };
        Keys::new(&keys, &config.issuer, config.token_ttl_secs)
    }

    pub fn new(keys: &[JwtKey], issuer: &str, ttl_secs: u64) -> anyhow::Result<Keys> {
        let first = keys
            .first()
            .ok_or_else(|| anyhow::anyhow!("no JWT signing key"))?;
        Ok(Keys {
            signing: (
                first.kid.clone(),
                EncodingKey::from_secret(first.secret.as_bytes()),
            ),
            verifying: keys
                .iter()
                .map(|k| (k.kid.clone(), DecodingKey::from_secret(k.secret.as_bytes())))
                .collect(),
            issuer: issuer.to_string(),
            ttl: Duration::seconds(i64::try_from(ttl_secs).unwrap_or(3600)),
        })
    }

    pub fn issue(&self, user: &str, uid: i64) -> Result<(String, DateTime<Utc>), ApiError> {
        let now = Utc::now();
        let exp = now + self.ttl;
        let claims = Claims {
            sub: user.to_string(),
            uid,
            iss: self.issuer.clone(),
            aud: clreg_types::TOKEN_AUDIENCE.to_string(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: exp.timestamp(),
            iat_ms: Some(now.timestamp_millis()),
        };
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(self.signing.0.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.signing.1)
            .map_err(|e| ApiError::internal(format!("jwt encode: {e}")))?;
        Ok((token, exp))
    }

    /// Checks signature (key chosen by `kid`), algorithm, `exp`, `nbf`, `iss` and `aud`.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let invalid = |why: &str| {
            ApiError::new(
                ErrorCode::InvalidToken,
                format!("invalid token: {why}; log in again (`clreg login`) to get a new one"),
            )
        };
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed"))?;
        if header.alg != ALGORITHM {
            return Err(invalid("unexpected signing algorithm"));
        }
        let kid = header.kid.ok_or_else(|| invalid("no key id"))?;
        let key = self
            .verifying
            .iter()
            .find(|(k, _)| *k == kid)
            .map(|(_, key)| key)
            .ok_or_else(|| invalid("unknown key id"))?;
        let mut validation = Validation::new(ALGORITHM);
        validation.leeway = 5;
        validation.validate_nbf = true;
        validation.set_audience(&[clreg_types::TOKEN_AUDIENCE]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => invalid("expired"),
                    ErrorKind::ImmatureSignature => invalid("not yet valid"),
                    ErrorKind::InvalidAudience => invalid("wrong audience"),
                    ErrorKind::InvalidIssuer => invalid("wrong issuer"),
                    ErrorKind::InvalidSignature => invalid("bad signature"),
                    _ => invalid("rejected"),
                }
            })
    }
}

/// Refuses a key file others may read.
pub(crate) fn check_private(path: &Path, holds: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "{} holds {holds} but is readable by others (mode {mode:o}): `chmod 600` it",
                path.display()
            );
        }
    }
    Ok(())
}

fn load_or_create_key_file(path: &Path) -> anyhow::Result<Vec<JwtKey>> {
    if path.exists() {
        check_private(path, "the token signing keys")?;
        let text = std::fs::read_to_string(path)?;
        let keys: Vec<JwtKey> = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid key file {}: {e}", path.display()))?;
        crate::config::check_jwt_keys(&keys)
            .map_err(|e| anyhow::anyhow!("key file {}: {e}", path.display()))?;
        return Ok(keys);
    }
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let keys = vec![JwtKey {
        kid: format!("k{}", Utc::now().timestamp()),
        secret: hex::encode(secret),
    }];
    write_private(path, serde_json::to_string_pretty(&keys)?.as_bytes())?;
    Ok(keys)
}

/// Writes a file readable by its owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// A new API key: (the key shown once, its sha256 hex to store, a display prefix).
pub fn new_api_key() -> (String, String, String) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let key = format!("{KEY_PREFIX}{}", hex::encode(raw));
    let hash = hash_api_key(&key);
    let prefix = key[..KEY_PREFIX.len() + 6].to_string();
    (key, hash, prefix)
}

/// Whether a bearer token is an API key (rather than a JWT).
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(KEY_PREFIX)
}

/// The user an API key belongs to, if the key exists and is not revoked.
pub async fn user_of_api_key<C: sea_orm::ConnectionTrait>(
    db: &C,
    key: &str,
) -> Result<Option<crate::db::entities::user::Model>, ApiError> {
    use crate::db::entities::{api_key, user};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let Some(found) = api_key::Entity::find()
        .filter(api_key::Column::KeyHash.eq(hash_api_key(key.trim())))
        .one(db)
        .await?
        .filter(|k| k.revoked_at.is_none_or(|t| t > Utc::now()))
    else {
        return Ok(None);
    };
    Ok(user::Entity::find_by_id(found.user_id)
        .one(db)
        .await?
        .filter(|u| u.disabled_at.is_none()))
}

/// The user an API key logs in, for the token exchange and the web UI's login: limited per
/// client address, then per key (by its hash: the key itself is never kept).
pub async fn user_for_login(
    state: &crate::state::AppState,
    peer: Option<std::net::SocketAddr>,
    api_key: &str,
) -> Result<crate::db::entities::user::Model, ApiError> {
    let limited = |retry: u64| {
        ApiError::new(
            ErrorCode::TooManyRequests,
            format!("too many login attempts; retry in {retry} s (a token lasts, reuse it)"),
        )
    };
    if let Some(addr) = peer {
        state
            .token_limits
            .0
            .hit(&addr.ip().to_string())
            .map_err(limited)?;
    }
    state
        .token_limits
        .1
        .hit(&hash_api_key(api_key.trim()))
        .map_err(limited)?;
    user_of_api_key(&state.db, api_key).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidApiKey,
            "unknown or revoked API key; ask a server admin for a new one",
        )
    })
}

/// API keys carry 256 random bits, so one sha256 is as strong as a slow password hash here.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The authenticated user of a request, put into the request's extensions by the authorization
/// middleware together with the rule the route table gave this route.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: i64,
    pub name: String,
    pub is_admin: bool,
    pub rule: crate::authz::Rule,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "this route needs an authenticated caller",
            )
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_readable_by_others_or_with_bad_keys_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("jwt-keys.json");
        let keys = load_or_create_key_file(&path).unwrap_or_default();
        assert_eq!(keys.len(), 1);
        assert_eq!(
            std::fs::metadata(&path)
                .map(|m| m.permissions().mode() & 0o777)
                .ok(),
            Some(0o600)
        );
        let again = load_or_create_key_file(&path).unwrap_or_default();
        assert_eq!(
            again.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            keys.iter().map(|k| &k.kid).collect::<Vec<_>>()
        );
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
        let err = load_or_create_key_file(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        let _ = std::fs::write(&path, r#"[{"kid":"a","secret":"short"}]"#);
        let err = load_or_create_key_file(&path).unwrap_err().to_string();
        assert!(err.contains("too short"), "{err}");
    }
}
