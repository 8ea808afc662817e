//! The HTTP API: a table of routes to small handlers.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use crate::admission::{ADMISSION_API_VERSION, AdmissionResponse, parse_review};
use crate::bindings::AdmissionRequest;
use crate::enforcement::{Decision, Purpose};

/// The webhook API (TLS when configured).
pub fn api(state: Arc<AppState>, body_limit: usize) -> Router {
    Router::new()
        .route(
            "/validate/{policy_id}",
            post(validate).fallback(method_not_allowed),
        )
        .route(
            "/validate_raw/{policy_id}",
            post(validate_raw).fallback(method_not_allowed),
        )
        .route(
            "/audit/{policy_id}",
            post(audit).fallback(method_not_allowed),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Probes and metrics (plain HTTP, on the readiness port).
pub fn probes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/readiness", get(readiness).fallback(method_not_allowed))
        .route(
            "/livez",
            get(|| async { "ok" }).fallback(method_not_allowed),
        )
        .route("/metrics", get(metrics).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(state)
}

/// An `AdmissionReview` carrying a response.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut {
    api_version: &'static str,
    kind: &'static str,
    response: AdmissionResponse,
}

impl ReviewOut {
    fn new(response: AdmissionResponse) -> Json<Self> {
        Json(Self {
            api_version: ADMISSION_API_VERSION,
            kind: "AdmissionReview",
            response,
        })
    }
}

async fn validate(
    state: State<Arc<AppState>>,
    Path(policy_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReviewOut>, ApiError> {
    review(state, policy_id, body?, Purpose::Admission).await
}

async fn audit(
    state: State<Arc<AppState>>,
    Path(policy_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReviewOut>, ApiError> {
    review(state, policy_id, body?, Purpose::Audit).await
}

async fn review(
    State(state): State<Arc<AppState>>,
    policy_id: String,
    body: Bytes,
    purpose: Purpose,
) -> Result<Json<ReviewOut>, ApiError> {
    let policy = state.policy(&policy_id)?;
    let request = parse_review(&body)?;
    if purpose == Purpose::Admission && state.always_accepted(&request) {
        return Ok(ReviewOut::new(AdmissionResponse::allow(&request.uid)));
    }
    let decision = state.evaluate(&policy, request, purpose).await?;
    Ok(ReviewOut::new(decision.response))
}

/// `{"response": AdmissionResponse}` for a raw document.
#[derive(Serialize)]
struct RawOut {
    response: AdmissionResponse,
}

async fn validate_raw(
    State(state): State<Arc<AppState>>,
    Path(policy_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RawOut>, ApiError> {
    let body = body?;
    let policy = state.policy(&policy_id)?;
    let document: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON document: {e}"),
        )
    })?;
    // Raw documents carry no uid of their own; echo one if the caller sent it.
    let uid = document
        .get("uid")
        .and_then(|u| u.as_str())
        .unwrap_or_default()
        .to_owned();
    let text = String::from_utf8(body.to_vec()).expect("valid JSON is valid UTF-8");
    let Decision { response, .. } = state.evaluate_raw(&policy, &uid, text).await?;
    Ok(Json(RawOut { response }))
}

async fn readiness(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading policies").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().encode(),
    )
        .into_response()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

impl AppState {
    fn policy(&self, id: &str) -> Result<Arc<crate::Policy>, ApiError> {
        self.environment()
            .and_then(|env| env.policy(id).cloned())
            .ok_or_else(|| ApiError::unknown_policy(id))
    }

    fn always_accepted(&self, request: &AdmissionRequest) -> bool {
        self.always_accept_namespace.is_some()
            && request.namespace.as_deref() == self.always_accept_namespace.as_deref()
    }
}
