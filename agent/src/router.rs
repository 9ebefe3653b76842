//! Every route of the agent and the layer stack, in one place:
//! trace span (method + matched route only, never bodies or headers) ->
//! body limit (413 in the error shape) -> bearer-token auth (all but
//! `/healthz`, constant-time compare, 401) -> per-request timeout (`run`
//! gets its own, longer one). Unknown routes and methods answer in the error
//! shape too.

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{BoxError, Router};
use tower::timeout::TimeoutLayer;
use tower::ServiceBuilder;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::error::ApiError;
use crate::handlers::{credentials, envs, health, secrets, status, sync};
use crate::state::AppState;

/// The agent's HTTP API.
pub fn router(state: AppState) -> Router {
    let config = state.config();
    let request_timeout = config.request_timeout;
    let run_timeout = config.max_run_timeout + Duration::from_secs(15);
    let body_limit = config.body_limit;

    let api = Router::new()
        .route("/v1/secrets/_write_to_file", post(secrets::write_to_file))
        .route("/v1/secrets/{name}", delete(secrets::revoke))
        .route("/v1/envs/{env}/_set_env_vars", post(envs::set_env_vars))
        .route("/v1/sync", post(sync::post))
        .route("/v1/status", get(status::get))
        .route("/metrics", get(metrics))
        .route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_timeout))
                .layer(TimeoutLayer::new(request_timeout)),
        );
    let run = Router::new()
        .route("/v1/envs/{env}/run", post(envs::run))
        .route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_timeout))
                .layer(TimeoutLayer::new(run_timeout)),
        );
    // Their own rules (a credentials token, or the peer's uid), not the
    // API token: see `handlers::credentials`.
    let creds = Router::new()
        .route("/v1/credentials/aws/{name}", get(credentials::aws))
        .route("/", get(credentials::metadata_root))
        .route("/computeMetadata/v1/{*path}", get(credentials::metadata))
        .route_layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_timeout))
                .layer(TimeoutLayer::new(request_timeout)),
        );
    let authed = api
        .merge(run)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));

    Router::new()
        .route("/healthz", get(health::get))
        .merge(creds)
        .merge(authed)
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("unmatched", MatchedPath::as_str);
                    tracing::info_span!("request", method = %req.method(), route)
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        .with_state(state)
}

async fn handle_timeout(err: BoxError) -> ApiError {
    if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the request took longer than the agent's timeout; a write it started runs to its \
             end and is recorded: see /v1/status",
        )
    } else {
        ApiError::internal(err)
    }
}

/// 401 unless `Authorization: Bearer <token>` matches (constant time).
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(token) if state.token_matches(token) => next.run(req).await,
        _ => {
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token (see <state-dir>/token on the node)",
            )
            .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            resp
        }
    }
}

/// Count every request routed (for `/metrics`).
async fn count_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    crate::pull::metrics::Metrics::inc(&state.inner.metrics.http_requests);
    next.run(req).await
}

/// `GET /metrics`: Prometheus text (counters only; behind the token like
/// every `/v1` route, since pull state is this node's business).
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.inner.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}
