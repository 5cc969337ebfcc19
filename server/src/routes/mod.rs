//! The HTTP surface: every resource's routes merged into one router, plus the OpenAPI document.

use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

mod artifacts;
mod auth;
mod blobs;
mod collaborations;
mod datasets;
mod evaluations;
mod health;
mod hf;
mod jobs;
mod ledger;
mod series;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "clreg",
        description = "Model registry and collaborative knowledge ledger."
    ),
    components(schemas(clreg_types::ErrorBody))
)]
struct ApiDoc;

/// The API routes and their OpenAPI description, generated from the handlers' annotations.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::router())
        .merge(collaborations::router())
        .merge(blobs::router())
        .merge(artifacts::router())
        .merge(datasets::router())
        .merge(ledger::router())
        .merge(jobs::router())
        .merge(evaluations::router())
        .merge(series::router())
        .split_for_parts()
}

/// The whole application: API, health probes, the API description; every route passes through
/// the authorization table.
pub fn app(state: AppState) -> Router {
    let (api, doc) = api();
    let doc = std::sync::Arc::new(doc);
    Router::new()
        .merge(api)
        .merge(hf::router())
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::authz::authorize,
        ))
        .fallback(|| async { crate::error::ApiError::not_found("route") })
        .layer(axum::middleware::from_fn(hf::hub_errors))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
