//! The web UI under `/ui/`: pages rendered by `clreg-web` from the same queries the API answers
//! with, behind the same authorization table (`authz::ROUTES`); a session cookie stands in for
//! the bearer token. Refusals are pages with the API's status and stable code; file downloads
//! refuse exactly as the API does.

pub mod events;
mod pages;
pub mod session;

use axum::Router;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use clreg_types::ErrorCode;

use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/static/clreg.css", get(css))
        .route("/ui/static/clreg.js", get(js))
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/", get(pages::home))
        .route("/ui/c/{c}", get(pages::collab))
        .route("/ui/c/{c}/lineage", get(pages::lineage))
        .route("/ui/c/{c}/ledger", get(pages::ledger))
        .route("/ui/c/{c}/series/{s}", get(pages::series))
        .route("/ui/artifacts/{id}", get(pages::artifact))
        .route("/ui/artifacts/{id}/files/{*path}", get(pages::file))
        .route("/ui/jobs/{id}", get(pages::job))
        .route("/ui/jobs/{id}/events", get(events::job))
        .route("/ui/jobs/{id}/cancel", post(pages::cancel))
}

/// Headers every UI response carries: no framing, no sniffing, scripts and styles from this
/// server only (the pages have no inline script or style), nothing cached.
pub async fn harden(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let ui = request.uri().path().starts_with("/ui");
    let mut response = next.run(request).await;
    if ui {
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        h.entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
    }
    response
}

async fn css() -> Response {
    static_asset("text/css; charset=utf-8", clreg_web::CSS)
}

async fn js() -> Response {
    static_asset("text/javascript; charset=utf-8", clreg_web::JS)
}

fn static_asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// A refusal on a UI page: the API's status and code, as a page.
#[derive(Debug)]
pub struct UiError {
    error: ApiError,
    signed_in: bool,
}

impl UiError {
    /// A refusal before anyone is signed in (the login form).
    pub fn anonymous(error: ApiError) -> Self {
        UiError {
            error,
            signed_in: false,
        }
    }
}

impl From<ApiError> for UiError {
    fn from(error: ApiError) -> Self {
        UiError {
            error,
            signed_in: true,
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let code = self.error.code;
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let page = clreg_web::pages::error(
            status.as_u16(),
            code.as_str(),
            &self.error.message,
            self.signed_in,
        );
        let mut response = (status, page).into_response();
        if let Ok(v) = HeaderValue::from_str(code.as_str()) {
            response.headers_mut().insert("x-error-code", v);
        }
        response
    }
}

/// What a UI request without a valid session gets: a page load goes to the login form (and
/// comes back after), anything else is refused as unauthenticated.
pub fn unauthenticated(method: &Method, uri: &Uri, error: ApiError) -> Response {
    if error.code == ErrorCode::Unauthenticated && *method == Method::GET {
        let here = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/ui/");
        let next = clreg_web::layout::segment(&session::safe_next(Some(here)));
        return Redirect::to(&format!("/ui/login?next={next}")).into_response();
    }
    UiError::anonymous(error).into_response()
}
