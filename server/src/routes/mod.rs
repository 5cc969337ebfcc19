//! The HTTP surface: every resource's routes merged into one router, plus the OpenAPI document.

use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

mod artifacts;
mod auth;
mod blobs;
pub(crate) mod collaborations;
pub(crate) mod datasets;
mod evaluations;
mod health;
mod hf;
mod jobs;
mod ledger;
mod series;
pub mod ui;

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
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::router())
        .merge(collaborations::router())
        .merge(blobs::router())
        .merge(artifacts::router())
        .merge(datasets::router())
        .merge(ledger::router())
        .merge(jobs::router())
        .merge(evaluations::router())
        .merge(series::router())
        .split_for_parts();
    describe_errors_and_parameters(&mut doc);
    (router, doc)
}

/// Completes the generated description with what holds for every operation: any status not
/// listed is an [`clreg_types::ErrorBody`] (`default`), and path parameters carry the patterns
/// the server checks (names, digests, artifact references), so a client — or schemathesis —
/// knows a value outside them is refused.
fn describe_errors_and_parameters(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, Schema};
    let error = ResponseBuilder::new()
        .description(
            "An error: `code` is one of the stable error codes, `message` says what to change.",
        )
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.head,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            op.responses
                .responses
                .entry("default".into())
                .or_insert_with(|| RefOr::T(error.clone()));
            for param in op.parameters.iter_mut().flatten() {
                let path = matches!(param.parameter_in, ParameterIn::Path);
                let pattern = match param.name.as_str() {
                    "c" | "s" | "name" | "user" if path => clreg_types::NAME_PATTERN,
                    "digest" => clreg_types::DIGEST_PATTERN,
                    "artifact" => clreg_types::REFERENCE_PATTERN,
                    _ => continue,
                };
                if let Some(RefOr::T(Schema::Object(object))) = param.schema.as_mut() {
                    object.pattern = Some(pattern.into());
                }
            }
        }
    }
    // An empty chunk is a harmless probe that answers where the upload stands.
    if let Some(body) = doc
        .paths
        .paths
        .get_mut("/api/v1/blobs/uploads/{id}")
        .and_then(|item| item.patch.as_mut())
        .and_then(|op| op.request_body.as_mut())
    {
        body.required = Some(utoipa::openapi::Required::False);
    }
    // Artifact references (`/artifacts/{id}…`): not a UUID like other ids.
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/api/v1/artifacts/{id}") {
            continue;
        }
        for op in [&mut item.get, &mut item.head].into_iter().flatten() {
            for param in op.parameters.iter_mut().flatten() {
                if param.name == "id"
                    && let Some(RefOr::T(Schema::Object(object))) = param.schema.as_mut()
                {
                    object.pattern = Some(clreg_types::REFERENCE_PATTERN.into());
                }
            }
        }
    }
}

/// The whole application: API, health probes, the API description, the web UI; every route
/// passes through the authorization table.
pub fn app(state: AppState) -> Router {
    let (api, doc) = api();
    let doc = std::sync::Arc::new(doc);
    Router::new()
        .merge(api)
        .merge(hf::router())
        .merge(ui::router())
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
        .layer(axum::middleware::from_fn(ui::harden))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
