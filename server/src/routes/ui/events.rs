//! A job's live progress as server-sent events: one `job` event whenever its state, progress,
//! message or log changes (checked every second), ending when the job does. The page works
//! without it: it refreshes itself when JavaScript is off.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use clreg_types::JobState;
use futures::Stream;
use sea_orm::EntityTrait;
use uuid::Uuid;

use crate::auth::Caller;
use crate::db::entities::job;
use crate::error::{ApiError, ApiPath};
use crate::state::AppState;

/// How often the stream looks at the job, and for how long at most (the page then reconnects).
const POLL: Duration = Duration::from_secs(1);
const MAX_STREAM: Duration = Duration::from_secs(3600);

#[derive(PartialEq)]
struct Seen {
    state: JobState,
    progress: f64,
    message: String,
    log_len: usize,
}

pub async fn job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // The same lookup as the page: not found for anyone who may not read the job.
    crate::routes::jobs::find(&state, &caller, id).await?;
    let started = tokio::time::Instant::now();
    let stream = futures::stream::unfold(
        (state, None::<Seen>, false),
        move |(state, seen, done)| async move {
            if done {
                return None;
            }
            let mut seen = seen;
            loop {
                if started.elapsed() > MAX_STREAM {
                    return None;
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
                    return Some((Ok(event), (state, Some(now), finished)));
                }
                seen = Some(now);
                tokio::time::sleep(POLL).await;
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
