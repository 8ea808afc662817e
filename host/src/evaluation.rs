//! One evaluation: a fresh store and instance from the shared `InstancePre`,
//! one call under the limits, the guest's output logged, everything dropped.

use std::time::{Duration, Instant};

use wasmtime::Trap;

use crate::bindings::{AdmissionRequest, PolicyMetadata, ValidationResponse};
use crate::component::PolicyComponent;
use crate::engine::Engine;
use crate::limits::Limits;
use crate::store::{EvaluationState, new_store};

/// A call into a policy.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    /// `metadata()`.
    Metadata,
    /// `validate-settings(settings)`.
    ValidateSettings {
        /// Settings as JSON text.
        settings: &'a str,
    },
    /// `validate(request, settings)`.
    Validate {
        /// The admission request.
        request: &'a AdmissionRequest,
        /// Settings as JSON text.
        settings: &'a str,
    },
    /// `validate-raw(document, settings)`.
    ValidateRaw {
        /// The raw JSON document.
        document: &'a str,
        /// Settings as JSON text.
        settings: &'a str,
    },
}

/// What a [`Call`] returned.
#[derive(Debug, Clone)]
pub enum Returned {
    /// From [`Call::Metadata`].
    Metadata(PolicyMetadata),
    /// From [`Call::ValidateSettings`].
    Settings(Result<(), String>),
    /// From [`Call::Validate`] and [`Call::ValidateRaw`].
    Verdict(ValidationResponse),
}

/// A finished evaluation.
#[derive(Debug)]
pub struct Evaluation {
    /// What the policy returned.
    pub returned: Returned,
    /// Time spent creating the instance.
    pub instantiation: Duration,
    /// Time from the start of instantiation to the policy's return.
    pub total: Duration,
}

/// Why an evaluation produced no verdict. Each costs this one request only.
#[derive(Debug, thiserror::Error)]
pub enum EvaluationError {
    /// The wall-clock budget ran out (in wasm or blocked in a host call).
    #[error("policy evaluation timed out after {}ms", .0.as_millis())]
    Timeout(Duration),
    /// The policy needed more memory than its limit.
    #[error("policy ran out of memory (limit: {limit} bytes)")]
    OutOfMemory {
        /// The memory limit in force.
        limit: usize,
    },
    /// The policy trapped (a panic, `unreachable`, stack overflow, ...).
    #[error("policy trapped: {0}")]
    Trap(String),
    /// Every instance slot is in use: the host is overloaded.
    #[error("no free instance slot: too many concurrent evaluations ({0})")]
    Overloaded(String),
    /// Creating the instance failed for another reason.
    #[error("cannot instantiate the policy: {0}")]
    Instantiation(String),
}

/// Runs `call` in a fresh instance of `component`, with `limits` and a
/// deadline of `timeout`. Guest output is re-emitted as `tracing` events
/// tagged with `policy_id`.
pub async fn evaluate(
    engine: &Engine,
    component: &PolicyComponent,
    policy_id: &str,
    limits: &Limits,
    timeout: Duration,
    call: Call<'_>,
) -> Result<Evaluation, EvaluationError> {
    let mut store = new_store(engine, limits);
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, async {
        let policy = component
            .pre()
            .instantiate_async(&mut store)
            .await
            .map_err(Failure::Instantiate)?;
        let instantiated = started.elapsed();
        let returned = match call {
            Call::Metadata => policy
                .call_metadata(&mut store)
                .await
                .map(Returned::Metadata),
            Call::ValidateSettings { settings } => policy
                .call_validate_settings(&mut store, settings)
                .await
                .map(Returned::Settings),
            Call::Validate { request, settings } => policy
                .call_validate(&mut store, request, settings)
                .await
                .map(Returned::Verdict),
            Call::ValidateRaw { document, settings } => policy
                .call_validate_raw(&mut store, document, settings)
                .await
                .map(Returned::Verdict),
        }
        .map_err(Failure::Call)?;
        Ok::<_, Failure>((returned, instantiated))
    })
    .await;
    let total = started.elapsed();
    let state = store.data();
    emit_guest_output(policy_id, state);
    match outcome {
        Ok(Ok((returned, instantiation))) => Ok(Evaluation {
            returned,
            instantiation,
            total,
        }),
        Ok(Err(failure)) => Err(classify(failure, state, limits)),
        Err(_elapsed) => Err(EvaluationError::Timeout(timeout)),
    }
}

enum Failure {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
}

fn classify(failure: Failure, state: &EvaluationState, limits: &Limits) -> EvaluationError {
    match failure {
        Failure::Instantiate(e)
            if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some() =>
        {
            EvaluationError::Overloaded(e.to_string())
        }
        Failure::Instantiate(_) | Failure::Call(_) if state.memory_refused() => {
            EvaluationError::OutOfMemory {
                limit: limits.memory_bytes,
            }
        }
        Failure::Instantiate(e) => EvaluationError::Instantiation(format!("{e:#}")),
        Failure::Call(e) => {
            let what = match e.downcast_ref::<Trap>() {
                Some(Trap::StackOverflow) => return EvaluationError::Trap("stack overflow".into()),
                Some(trap) => trap.to_string(),
                None => e.root_cause().to_string(),
            };
            // A Rust guest prints its panic message to stderr before trapping:
            // that line says far more than "unreachable executed".
            match state
                .output()
                .lines()
                .into_iter()
                .rev()
                .find(|l| l.contains("panicked at"))
            {
                Some(panic) => EvaluationError::Trap(format!("{what} ({panic})")),
                None => EvaluationError::Trap(what),
            }
        }
    }
}

fn emit_guest_output(policy_id: &str, state: &EvaluationState) {
    let output = state.output();
    for line in output.lines() {
        tracing::info!(target: "portcullis::guest", policy = policy_id, "{line}");
    }
    if output.truncated() {
        tracing::warn!(target: "portcullis::guest", policy = policy_id, "guest output truncated");
    }
}
