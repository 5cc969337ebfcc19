//! Web UI sessions: an API key logs in once and becomes a random session token in an HttpOnly,
//! SameSite=Strict cookie (Secure behind TLS); the database keeps only the token's sha256, the
//! user, the session's form token and the expiry. Every form carries the form token (CSRF);
//! the login form, before any session, uses a double-submit cookie instead.

use axum::Form;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{Duration, Utc};
use clreg_types::ErrorCode;
use rand::RngCore;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::UiError;
use crate::auth::Caller;
use crate::authz::Rule;
use crate::db::entities::{user, web_session};
use crate::error::ApiError;
use crate::state::AppState;

const SESSION_COOKIE: &str = "clreg_session";
const LOGIN_COOKIE: &str = "clreg_login";
/// How long a login lasts (revoking the user's keys or disabling the user ends it sooner).
const SESSION_TTL_HOURS: i64 = 12;

/// The signed-in session of a UI request, next to its `Caller` in the request's extensions.
#[derive(Debug, Clone)]
pub struct Session {
    /// The form token every form of this session carries.
    pub csrf: String,
}

fn random_hex() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Compares two secrets by their hashes, so the time taken says nothing about where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    !a.is_empty() && Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether cookies carry `Secure`: when configured (`secure_cookies`), or when the request came
/// over TLS through a proxy (`X-Forwarded-Proto: https`).
fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    state.config.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// `Set-Cookie` for `name`.
fn set_cookie(secure: bool, name: &str, value: &str, path: &str, max_age: i64) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    // Names and values are ours (hex), so the header is always valid.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The caller of a UI request, from its session cookie; the authorization middleware calls this
/// for every non-public `/ui/` route.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    rule: Rule,
) -> Result<(Caller, Session), ApiError> {
    let missing = || ApiError::new(ErrorCode::Unauthenticated, "log in to see this page");
    let token = cookie(headers, SESSION_COOKIE).ok_or_else(missing)?;
    let row = web_session::Entity::find_by_id(sha256_hex(token))
        .one(&state.db)
        .await?
        .filter(|s| s.expires_at > Utc::now())
        .ok_or_else(missing)?;
    let user = user::Entity::find_by_id(row.user_id)
        .one(&state.db)
        .await?
        .ok_or_else(missing)?;
    // Keys revoked or the user disabled since the login: the session ends with them.
    if user.disabled_at.is_some() || user.tokens_valid_after.is_some_and(|t| row.created_at <= t) {
        return Err(missing());
    }
    let caller = Caller {
        id: user.id,
        name: user.name,
        is_admin: user.is_admin,
        rule,
    };
    Ok((caller, Session { csrf: row.csrf }))
}

/// Refuses a form whose token is not this session's.
pub fn check_csrf(session: &Session, presented: Option<&str>) -> Result<(), ApiError> {
    if presented.is_some_and(|p| same_secret(&session.csrf, p)) {
        Ok(())
    } else {
        Err(csrf_rejected())
    }
}

fn csrf_rejected() -> ApiError {
    ApiError::new(
        ErrorCode::CsrfRejected,
        "this form's CSRF token is missing or not this session's; reload the page and submit it again",
    )
}

/// Where to go after logging in: a UI page of this server, never another site.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.contains("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n.to_string()
        }
        _ => "/ui/".to_string(),
    }
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// `GET /ui/login`: the form.
pub async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    form_page(&state, &headers, &safe_next(q.next.as_deref()), None)
}

/// The login form with a fresh form token, in a cookie and a hidden field; `problem` is why the
/// last attempt was refused (and sets the page's status).
fn form_page(
    state: &AppState,
    headers: &HeaderMap,
    next: &str,
    problem: Option<&ApiError>,
) -> Response {
    let token = random_hex();
    let page = clreg_web::pages::login(&token, next, problem.map(|e| e.message.as_str()));
    let status = problem.map_or(StatusCode::OK, |e| {
        StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::UNAUTHORIZED)
    });
    let mut response = (status, page).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(
            secure(state, headers),
            LOGIN_COOKIE,
            &token,
            "/ui/login",
            3600,
        ),
    );
    response
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    api_key: String,
    csrf: Option<String>,
    next: Option<String>,
}

/// `POST /ui/login`: checks the form token against its cookie, then the API key (with the token
/// exchange's rate limits), and starts a session.
pub async fn login(
    State(state): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, UiError> {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !form
        .csrf
        .as_deref()
        .is_some_and(|p| same_secret(expected, p))
    {
        return Err(UiError::anonymous(csrf_rejected()));
    }
    let next = safe_next(form.next.as_deref());
    // Taken before the key is checked: a revocation racing this login ends the session too.
    let now = Utc::now();
    let peer = peer.map(|axum::Extension(ConnectInfo(addr))| addr);
    let user = match crate::auth::user_for_login(&state, peer, &form.api_key).await {
        Ok(user) => user,
        Err(e) if e.code == ErrorCode::InvalidApiKey || e.code == ErrorCode::TooManyRequests => {
            // The form again, with a new token and the reason.
            return Ok(form_page(&state, &headers, &next, Some(&e)));
        }
        Err(e) => return Err(UiError::anonymous(e)),
    };
    let token = random_hex();
    web_session::ActiveModel {
        token_hash: Set(sha256_hex(&token)),
        user_id: Set(user.id),
        csrf: Set(random_hex()),
        created_at: Set(now),
        expires_at: Set(now + Duration::hours(SESSION_TTL_HOURS)),
    }
    .insert(&state.db)
    .await
    .map_err(ApiError::from)?;
    // The session this browser held before ends; expired sessions of anyone go too, so the
    // table stays small.
    if let Some(old) = cookie(&headers, SESSION_COOKIE) {
        web_session::Entity::delete_by_id(sha256_hex(old))
            .exec(&state.db)
            .await
            .map_err(ApiError::from)?;
    }
    web_session::Entity::delete_many()
        .filter(web_session::Column::ExpiresAt.lt(now))
        .exec(&state.db)
        .await
        .map_err(ApiError::from)?;
    tracing::info!(user = %user.name, "web session started");
    let mut response = Redirect::to(&next).into_response();
    let cookies = response.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        set_cookie(
            secure(&state, &headers),
            SESSION_COOKIE,
            &token,
            "/ui",
            SESSION_TTL_HOURS * 3600,
        ),
    );
    cookies.append(
        header::SET_COOKIE,
        set_cookie(secure(&state, &headers), LOGIN_COOKIE, "", "/ui/login", 0),
    );
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    pub csrf: Option<String>,
}

/// `POST /ui/logout`: ends the session (its row is deleted) and clears the cookie.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Extension(session): axum::Extension<Session>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, UiError> {
    check_csrf(&session, form.csrf.as_deref())?;
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        web_session::Entity::delete_by_id(sha256_hex(token))
            .exec(&state.db)
            .await
            .map_err(ApiError::from)?;
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(secure(&state, &headers), SESSION_COOKIE, "", "/ui", 0),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_servers_ui() {
        assert_eq!(safe_next(Some("/ui/c/lab")), "/ui/c/lab");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil",
            "/api/v1/x",
            "/ui\\x",
            "/ui/\nx",
            "/ui/ x",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui/");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; clreg_session=abc; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), None);
        let set = set_cookie(false, SESSION_COOKIE, "v", "/ui", 60);
        assert_eq!(
            set.to_str().ok(),
            Some("clreg_session=v; Path=/ui; Max-Age=60; HttpOnly; SameSite=Strict")
        );
        assert!(
            set_cookie(true, SESSION_COOKIE, "v", "/ui", 60)
                .to_str()
                .is_ok_and(|s| s.ends_with("; Secure"))
        );
    }

    #[test]
    fn form_tokens_must_match() {
        let s = Session { csrf: "abc".into() };
        assert!(check_csrf(&s, Some("abc")).is_ok());
        assert!(check_csrf(&s, Some("abd")).is_err());
        assert!(check_csrf(&s, None).is_err());
        assert!(!same_secret("", ""));
    }
}
