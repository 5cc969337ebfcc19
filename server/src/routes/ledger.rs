//! The collaboration's ledger, oldest event first; its signed checkpoint and proofs
//! (`crate::transparency`); and the server's ledger keys.

use axum::extract::State;
use clreg_types::LedgerEvent;
use clreg_types::transparency::{ConsistencyProof, InclusionProof, LedgerKey, SignedCheckpoint};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(checkpoint))
        .routes(routes!(inclusion))
        .routes(routes!(consistency))
        .routes(routes!(keys))
}

#[utoipa::path(get, path = "/api/v1/collaborations/{c}/ledger", params(("c" = String, Path)),
    responses((status = 200, body = Vec<LedgerEvent>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
) -> Result<ApiJson<Vec<LedgerEvent>>, ApiError> {
    let access = caller.access(&state, &c).await?;
    let events =
        crate::ledger::list(&state.db, Some((access.collab.id, &access.collab.name))).await?;
    Ok(ApiJson(events))
}

/// A checkpoint of the ledger's Merkle tree as it stands, signed with the server's key.
#[utoipa::path(get, path = "/api/v1/collaborations/{c}/ledger/checkpoint", params(("c" = String, Path)),
    responses((status = 200, body = SignedCheckpoint)))]
async fn checkpoint(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
) -> Result<ApiJson<SignedCheckpoint>, ApiError> {
    let access = caller.access(&state, &c).await?;
    let signed =
        crate::transparency::checkpoint(&state, (access.collab.id, &access.collab.name)).await?;
    Ok(ApiJson(signed))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct InclusionQuery {
    /// The event (1-based sequence number).
    seq: i64,
    /// The tree size the proof is for (a checkpoint's `size`).
    size: u64,
}

/// The audit path of one event in the tree of the first `size` events.
#[utoipa::path(get, path = "/api/v1/collaborations/{c}/ledger/proof/inclusion",
    params(("c" = String, Path), InclusionQuery),
    responses((status = 200, body = InclusionProof)))]
async fn inclusion(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> Result<ApiJson<InclusionProof>, ApiError> {
    let access = caller.access(&state, &c).await?;
    let proof = crate::transparency::inclusion(
        &state,
        (access.collab.id, &access.collab.name),
        q.seq,
        q.size,
    )
    .await?;
    Ok(ApiJson(proof))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct ConsistencyQuery {
    /// The older tree size (a saved checkpoint's `size`).
    from: u64,
    /// The newer tree size.
    to: u64,
}

/// The proof that the first `from` events are unchanged in the first `to`.
#[utoipa::path(get, path = "/api/v1/collaborations/{c}/ledger/proof/consistency",
    params(("c" = String, Path), ConsistencyQuery),
    responses((status = 200, body = ConsistencyProof)))]
async fn consistency(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(c): ApiPath<String>,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> Result<ApiJson<ConsistencyProof>, ApiError> {
    let access = caller.access(&state, &c).await?;
    let proof = crate::transparency::consistency(
        &state,
        (access.collab.id, &access.collab.name),
        q.from,
        q.to,
    )
    .await?;
    Ok(ApiJson(proof))
}

/// The public keys that sign ledger checkpoints (public: pin one out of band).
#[utoipa::path(get, path = "/.well-known/clreg/ledger-keys", responses((status = 200, body = Vec<LedgerKey>)))]
async fn keys(State(state): State<AppState>) -> ApiJson<Vec<LedgerKey>> {
    ApiJson(vec![state.signer.public()])
}
