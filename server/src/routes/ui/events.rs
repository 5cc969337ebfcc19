//! A job's live progress as server-sent events: one `job` event whenever its state, progress,
//! message or log changes (checked every second), ending when the job does. The page works
//! without it: it refreshes itself when JavaScript is off.
//!
//! Streams are bounded: at most [`MAX_STREAMS`] open at once and [`MAX_PER_USER`] per user
//! (more get `503 busy`; the page then falls back to reloading), each lasts at most
//! [`MAX_STREAM`] (the page reconnects), and every [`RECHECK`] the session and the reader's
//! access are checked again, so a logout, revocation or removal ends the stream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use clreg_types::{ErrorCode, JobState};
use futures::Stream;
use sea_orm::EntityTrait;
use uuid::Uuid;

use crate::auth::Caller;
use crate::db::entities::job;
use crate::error::{ApiError, ApiPath};
use crate::state::AppState;

/// How often a stream looks at its job.
const POLL: Duration = Duration::from_secs(1);
/// How often it checks the session and the reader's access again.
const RECHECK: Duration = Duration::from_secs(10);
/// The longest a stream lasts; the page's script reconnects.
const MAX_STREAM: Duration = Duration::from_secs(300);
pub const MAX_STREAMS: usize = 64;
pub const MAX_PER_USER: usize = 4;

/// The open streams: one count in all and one per user.
#[derive(Default)]
pub struct Streams {
    open: Mutex<(usize, HashMap<i64, usize>)>,
}

/// A place among the open streams, given back on drop (when the stream ends or the client goes).
struct Place {
    streams: Arc<Streams>,
    user: i64,
}

impl Streams {
    fn take(self: &Arc<Self>, user: i64) -> Result<Place, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mine = open.1.get(&user).copied().unwrap_or(0);
        if open.0 >= MAX_STREAMS || mine >= MAX_PER_USER {
            return Err(ApiError::new(
                ErrorCode::Busy,
                format!(
                    "too many live job views open (at most {MAX_PER_USER} per user, {MAX_STREAMS} in all); close some or reload later"
                ),
            ));
        }
        open.0 += 1;
        *open.1.entry(user).or_default() += 1;
        Ok(Place {
            streams: self.clone(),
            user,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.user);
            }
        }
    }
}

#[derive(PartialEq)]
struct Seen {
    state: JobState,
    progress: f64,
    message: String,
    log_len: usize,
}

/// Whether the reader may still see the job: the session is live and they may read it.
async fn still_allowed(state: &AppState, headers: &HeaderMap, caller: &Caller, id: Uuid) -> bool {
    let Ok((now, _)) = super::session::authenticate(state, headers, caller.rule).await else {
        return false;
    };
    now.id == caller.id && crate::routes::jobs::find(state, &now, id).await.is_ok()
}

pub async fn job(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // The same lookup as the page: not found for anyone who may not read the job.
    crate::routes::jobs::find(&state, &caller, id).await?;
    let place = state.ui_streams.take(caller.id)?;
    let started = tokio::time::Instant::now();
    let stream = futures::stream::unfold(
        (state, None::<Seen>, false, started),
        move |(state, mut seen, done, mut checked)| {
            let (headers, caller) = (headers.clone(), caller.clone());
            let _held = &place;
            async move {
                if done {
                    return None;
                }
                loop {
                    if started.elapsed() > MAX_STREAM {
                        return None;
                    }
                    if checked.elapsed() >= RECHECK {
                        if !still_allowed(&state, &headers, &caller, id).await {
                            return None;
                        }
                        checked = tokio::time::Instant::now();
                    }
                    let row = match job::Entity::find_by_id(id).one(&state.db).await {
                        Ok(Some(row)) => row,
                        Ok(None) => return None,
                        Err(e) => {
                            tracing::warn!(job = %id, error = %e, "job event stream: lookup failed");
                            return None;
                        }
                    };
                    let job_state = JobState::from(row.state);
                    let now = Seen {
                        state: job_state,
                        progress: row.progress,
                        message: row.message.clone(),
                        log_len: row.log.len(),
                    };
                    if seen.as_ref() != Some(&now) {
                        let finished = !matches!(job_state, JobState::Queued | JobState::Running);
                        let data = serde_json::json!({
                            "state": job_state.as_str(),
                            "progress": row.progress,
                            "message": row.message,
                            "log": row.log,
                        });
                        let event = Event::default().event("job").data(data.to_string());
                        return Some((Ok(event), (state, Some(now), finished, checked)));
                    }
                    seen = Some(now);
                    tokio::time::sleep(POLL).await;
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
