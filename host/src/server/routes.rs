//! The HTTP API: a table of routes to small handlers.

use std::sync::{Arc, LazyLock};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::body::LimitedBody;
use super::error::ApiError;
use super::gate::LARGE;
use super::groups::{GroupJob, Target};
use super::{AppState, Received};
use crate::admission::{ADMISSION_API_VERSION, AdmissionResponse, parse_review, raw_document_uid};
use crate::bindings::AdmissionRequest;
use crate::enforcement::{Decision, Purpose};

/// The webhook API (TLS when configured), and `/metrics` with
/// `with_metrics`. Bodies are read by [`LimitedBody`] under the server's
/// body limits.
pub fn api(state: Arc<AppState>, with_metrics: bool) -> Router {
    let router = Router::new();
    let router = if with_metrics {
        router.route("/metrics", get(metrics).fallback(method_not_allowed))
    } else {
        router
    };
    router
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
        .with_state(state)
}

/// Probes, and metrics with `with_metrics` (plain HTTP, on the readiness
/// port).
pub fn probes(state: Arc<AppState>, with_metrics: bool) -> Router {
    let router = Router::new()
        .route("/readiness", get(readiness).fallback(method_not_allowed))
        .route(
            "/livez",
            get(|| async { "ok" }).fallback(method_not_allowed),
        );
    let router = if with_metrics {
        router.route("/metrics", get(metrics).fallback(method_not_allowed))
    } else {
        router
    };
    router.fallback(not_found).with_state(state)
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

/// The policy id in the path; a path that is not one (invalid UTF-8, say)
/// is answered like every other error, in JSON.
type PolicyId = Result<Path<String>, PathRejection>;

fn policy_id(path: PolicyId) -> Result<String, ApiError> {
    path.map(|Path(id)| id).map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid policy id in the path: {}", rejection.body_text()),
        )
    })
}

async fn validate(
    state: State<Arc<AppState>>,
    id: PolicyId,
    body: LimitedBody,
) -> Result<Json<ReviewOut>, ApiError> {
    review(state, policy_id(id)?, body, Purpose::Admission).await
}

async fn audit(
    state: State<Arc<AppState>>,
    id: PolicyId,
    body: LimitedBody,
) -> Result<Json<ReviewOut>, ApiError> {
    review(state, policy_id(id)?, body, Purpose::Audit).await
}

async fn review(
    State(state): State<Arc<AppState>>,
    policy_id: String,
    body: LimitedBody,
    purpose: Purpose,
) -> Result<Json<ReviewOut>, ApiError> {
    let target = state.target(&policy_id)?;
    let LimitedBody { bytes, arrived } = body;
    let received = Received {
        arrived,
        bytes: bytes.len(),
    };
    // The request holds copies of what it needs (no more than the body, in
    // whose place it is counted): the body goes.
    let request = parse(bytes, |bytes| parse_review(&bytes)).await??;
    if purpose == Purpose::Admission && state.always_accepted(&request) {
        return Ok(ReviewOut::new(AdmissionResponse::allow(&request.uid)));
    }
    let decision = match target {
        Target::Policy(policy) => state.evaluate(&policy, request, purpose, received).await?,
        Target::Group(group) => {
            let uid = request.uid.clone();
            let job = GroupJob::Validate(Box::new(request));
            state
                .evaluate_group(&group, &uid, job, purpose, received)
                .await?
        }
    };
    Ok(ReviewOut::new(decision.response))
}

/// `{"response": AdmissionResponse}` for a raw document.
#[derive(Serialize)]
struct RawOut {
    response: AdmissionResponse,
}

async fn validate_raw(
    State(state): State<Arc<AppState>>,
    id: PolicyId,
    body: LimitedBody,
) -> Result<Json<RawOut>, ApiError> {
    let target = state.target(&policy_id(id)?)?;
    let LimitedBody { bytes, arrived } = body;
    // Checks the whole document and reads its top-level `uid` (raw documents
    // carry none of their own; echo one if the caller sent it) without
    // building it in memory: the policy parses it anyway.
    let received = Received {
        arrived,
        bytes: bytes.len(),
    };
    let (uid, text) = parse(bytes, |bytes| {
        let uid = raw_document_uid(&bytes)?;
        let text = String::from_utf8(Vec::from(bytes)).expect("valid JSON is valid UTF-8");
        Ok::<_, serde_json::Error>((uid, text))
    })
    .await?
    .map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON document: {e}"),
        )
    })?;
    let Decision { response, .. } = match target {
        Target::Policy(policy) => state.evaluate_raw(&policy, &uid, text, received).await?,
        Target::Group(group) => {
            let job = GroupJob::Raw(text);
            state
                .evaluate_group(&group, &uid, job, Purpose::Admission, received)
                .await?
        }
    };
    Ok(Json(RawOut { response }))
}

/// Runs `parse` on `body`: here for ordinary bodies, on the blocking pool
/// for large ones, whose parse takes milliseconds that the threads serving
/// HTTP owe to every other connection.
///
/// While a body is parsed, it and the request parsed from it are both in
/// memory, and the budget counts one of them: so large bodies are parsed
/// one per CPU at a time (more would not finish sooner), which bounds that
/// uncounted copy to a few bodies, whatever the budget holds.
async fn parse<T: Send + 'static>(
    body: Bytes,
    parse: impl FnOnce(Bytes) -> T + Send + 'static,
) -> Result<T, ApiError> {
    static PARSING: LazyLock<Semaphore> = LazyLock::new(|| {
        Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    });
    if body.len() <= LARGE {
        return Ok(parse(body));
    }
    let failed = |e: &dyn std::fmt::Display| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("parsing the request failed: {e}"),
        )
    };
    let _parsing = PARSING.acquire().await.map_err(|e| failed(&e))?;
    tokio::task::spawn_blocking(move || parse(body))
        .await
        .map_err(|e| failed(&e))
}

async fn readiness(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "loading policies").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state
        .metrics()
        .buffered_body_bytes(state.body_budget.in_use());
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
    fn always_accepted(&self, request: &AdmissionRequest) -> bool {
        self.always_accept_namespace.is_some()
            && request.namespace.as_deref() == self.always_accept_namespace.as_deref()
    }
}
