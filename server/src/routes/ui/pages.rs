//! The page handlers: each loads what the API's handlers load (the same functions, so the same
//! authorization and the same figures) and renders it with `clreg_web::pages`.

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use clreg_types::Role;
use clreg_web::layout::Chrome;
use clreg_web::pages;
use maud::Markup;
use uuid::Uuid;

use super::UiError;
use super::session::{CsrfForm, Session, check_csrf};
use crate::auth::Caller;
use crate::authz::Action;
use crate::error::{ApiError, ApiPath};
use crate::routes::{artifacts, collaborations, datasets, evaluations, jobs, series};
use crate::state::AppState;

/// How many jobs the collaboration page lists (newest first).
const RECENT_JOBS: u64 = 50;

fn chrome<'a>(caller: &'a Caller, session: &'a Session) -> Chrome<'a> {
    Chrome {
        user: &caller.name,
        csrf: &session.csrf,
    }
}

pub async fn home(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<Session>,
) -> Result<Markup, UiError> {
    let collabs = collaborations::list_for(&state, &caller).await?;
    Ok(pages::collabs(&chrome(&caller, &session), &collabs))
}

pub async fn collab(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<Session>,
    ApiPath(c): ApiPath<String>,
) -> Result<Markup, UiError> {
    let access = caller.access(&state, &c).await?;
    let members = collaborations::member_list(&state.db, access.collab.id).await?;
    let artifacts = artifacts::list_in(&state, &access, None).await?;
    let datasets = datasets::list_in(&state, &access).await?;
    let jobs = jobs::list_in(&state, &access, Some(RECENT_JOBS)).await?;
    let series = series::list_in(&state, &access).await?;
    let collab = collaborations::wire(&state, access).await?;
    Ok(pages::collab(
        &chrome(&caller, &session),
        &pages::CollabView {
            collab: &collab,
            members: &members,
            artifacts: &artifacts,
            datasets: &datasets,
            jobs: &jobs,
            series: &series,
        },
    ))
}

pub async fn lineage(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<Session>,
    ApiPath(c): ApiPath<String>,
) -> Result<Markup, UiError> {
    let access = caller.access(&state, &c).await?;
    let lineage = crate::lineage::of_collab(&state, &caller, &access.collab).await?;
    let collab = collaborations::wire(&state, access).await?;
    Ok(pages::lineage_page(
        &chrome(&caller, &session),
        &collab,
        &lineage,
    ))
}

pub async fn ledger(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<Session>,
    ApiPath(c): ApiPath<String>,
) -> Result<Markup, UiError> {
    let access = caller.access(&state, &c).await?;
    let (id, name) = (access.collab.id, access.collab.name.clone());
    let events = crate::ledger::list(&state.db, Some((id, &name))).await?;
    let checkpoint = crate::transparency::sign(&state, &name, &events)?;
    let key = state.signer.public();
    let verification = pages::Verification {
        chain: clreg_types::transparency::verify_chain(&events),
        checkpoint,
        key,
        verified_at: chrono::Utc::now(),
    };
    let collab = collaborations::wire(&state, access).await?;
    Ok(pages::ledger(
        &chrome(&caller, &session),
        &pages::LedgerView {
            collab: &collab,
            events: &events,
            verification: &verification,
        },
    ))
}

pub async fn series(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<Session>,
    ApiPath((c, s)): ApiPath<(String, String)>,
) -> Result<Markup, UiError> {
    let access = caller.access(&state, &c).await?;
    let found = crate::series::find_in(&state.db, access.collab.id, &s).await?;
    let wire = crate::series::to_wire(&state.db, &access.collab, &found).await?;
    let report = crate::series::report_with_history(&state.db, &access.collab, &found).await?;
    let names = artifacts::list_in(&state, &access, None)
        .await?
        .into_iter()
        .map(|a| (a.id, format!("{} v{}", a.name, a.version)))
        .collect();
    let collab = collaborations::wire(&state, access).await?;
    Ok(pages::series(
        &chrome(&caller, &session),
        &collab,
        &wire,
        &report,
        &names,
    ))
}

pub async fn artifact(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<Session>,
    ApiPath(id): ApiPath<String>,
) -> Result<Markup, UiError> {
    let (found, access) = crate::artifacts::find_for(&state, &caller, &id).await?;
    let lineage = crate::lineage::of_artifact(&state, &caller, &found).await?;
    let evaluations = evaluations::list_in(&state, &caller, &access, Some(&found.id)).await?;
    let artifact = crate::artifacts::to_wire(&state, found).await?;
    Ok(pages::artifact(
        &chrome(&caller, &session),
        &pages::ArtifactView {
            artifact: &artifact,
            lineage: &lineage,
            evaluations: &evaluations,
            can_download: access.has(Action::Download),
        },
    ))
}

/// A file download: refused exactly as the API's file route refuses (same status, code, body).
pub async fn file(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, path)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    artifacts::serve_file(&state, &caller, &id, &path, &headers).await
}

pub async fn job(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<Session>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Markup, UiError> {
    let (row, access) = jobs::find(&state, &caller, id).await?;
    let log = row.log.clone();
    let job = crate::jobs::to_wire(&state, row).await?;
    // Owners cancel any job, others their own (jobs::cancel decides again on submit).
    let can_cancel = access.has(Action::CancelJob)
        && (access.roles.contains(&Role::Owner) || job.submitted_by == caller.name);
    Ok(pages::job(
        &chrome(&caller, &session),
        &job,
        &log,
        can_cancel,
    ))
}

pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Extension(session): Extension<Session>,
    ApiPath(id): ApiPath<Uuid>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, UiError> {
    check_csrf(&session, form.csrf.as_deref())?;
    let (_, access) = jobs::find(&state, &caller, id).await?;
    crate::jobs::cancel(&state, &caller, &access, id).await?;
    Ok(Redirect::to(&format!("/ui/jobs/{id}")).into_response())
}
