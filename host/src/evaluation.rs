//! One evaluation: a fresh store and instance from the shared `InstancePre`,
//! one call under the limits, the guest's output logged, everything dropped.
//!
//! This is the one place limits, the deadline, output capture and the
//! classification of failures live, for every kind of policy alike; the
//! [runtime](crate::runtime) of each kind only sets up its store and makes
//! the call.

use std::time::{Duration, Instant};

use wasmtime::Trap;

use crate::capabilities::Caller;
use crate::engine::Engine;
use crate::limits::Limits;
use crate::runtime::{
    Call, Completed, Failure, GuestFault, PolicyCode, PolicyContext, Returned, StoreSetup,
};
use crate::store::{EvaluationState, new_store};

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
    /// The policy returned more than the response limit allows.
    #[error("policy output too large: {size} bytes (limit: {limit} bytes)")]
    OutputTooLarge {
        /// Bytes returned.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// Every instance slot is in use: the host is overloaded.
    #[error("no free instance slot: too many concurrent evaluations ({0})")]
    Overloaded(String),
    /// Creating the instance failed for another reason.
    #[error("cannot instantiate the policy: {0}")]
    Instantiation(String),
    /// The policy reported an error instead of an answer (a Kubewarden
    /// module's `__guest_error`, or a WASI command's non-zero exit).
    #[error("the policy reported an error: {0}")]
    Policy(String),
    /// The policy broke its protocol: an answer that is not what the
    /// protocol says, a pointer outside its memory, a second response.
    #[error("the policy broke the Kubewarden protocol: {0}")]
    Protocol(String),
}

/// Runs `call` in a fresh instance of `code` under `limits` (memory,
/// output, and the deadline `limits.timeout`, which covers host calls).
/// Guest output is re-emitted as `tracing` events tagged with the policy's id.
pub async fn evaluate(
    engine: &Engine,
    code: &PolicyCode,
    policy: &PolicyContext<'_>,
    limits: &Limits,
    call: Call<'_>,
) -> Result<Evaluation, EvaluationError> {
    let timeout = limits.timeout;
    let started = Instant::now();
    let runtime = code.runtime();
    let StoreSetup { io, state } = runtime.setup(call, limits);
    let mut store = new_store(engine.wasmtime(), limits, started + timeout, io);
    store.data_mut().insert(Box::new(Caller {
        policy_id: policy.id.to_owned(),
        grants: policy.grants.clone(),
        capabilities: policy.capabilities.clone(),
        deadline: started + timeout,
    }));
    if let Some(state) = state {
        store.data_mut().insert(state);
    }
    let outcome = tokio::time::timeout(timeout, runtime.run(&mut store, call, started)).await;
    let total = started.elapsed();
    let state = store.data();
    emit_guest_output(policy.id, state);
    match outcome {
        Ok(Ok(Completed {
            returned,
            instantiation,
        })) => {
            let size = returned.size();
            if size > limits.response_bytes {
                return Err(EvaluationError::OutputTooLarge {
                    size,
                    limit: limits.response_bytes,
                });
            }
            Ok(Evaluation {
                returned,
                instantiation,
                total,
            })
        }
        Ok(Err(failure)) => Err(classify(failure, state, limits)),
        Err(_elapsed) => Err(EvaluationError::Timeout(timeout)),
    }
}

fn classify(failure: Failure, state: &EvaluationState, limits: &Limits) -> EvaluationError {
    let error = match failure {
        Failure::Instantiate(ref error) | Failure::Call(ref error) => error,
        Failure::Policy(message) => return EvaluationError::Policy(message),
        Failure::Protocol(message) => return EvaluationError::Protocol(message),
        Failure::Fault(fault) => return fault.into(),
    };
    if let Some(fault) = error.downcast_ref::<GuestFault>() {
        return match fault {
            GuestFault::TooLarge { size, limit } => EvaluationError::OutputTooLarge {
                size: *size,
                limit: *limit,
            },
            GuestFault::Protocol(message) => EvaluationError::Protocol(message.clone()),
        };
    }
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return EvaluationError::Timeout(limits.timeout);
    }
    if state.memory_refused() {
        return EvaluationError::OutOfMemory {
            limit: limits.memory_bytes,
        };
    }
    match failure {
        Failure::Instantiate(e)
            if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some() =>
        {
            EvaluationError::Overloaded(e.to_string())
        }
        Failure::Instantiate(e) => EvaluationError::Instantiation(format!("{e:#}")),
        Failure::Policy(_) | Failure::Protocol(_) | Failure::Fault(_) => {
            unreachable!("classified above")
        }
        Failure::Call(e) => {
            let what = match e.downcast_ref::<Trap>() {
                Some(Trap::StackOverflow) => return EvaluationError::Trap("stack overflow".into()),
                Some(trap) => trap.to_string(),
                None => e.root_cause().to_string(),
            };
            // A Rust guest prints its panic to stderr before trapping: a line
            // "thread '…' panicked at FILE:LINE:COL:" and the message on the
            // next one. That says far more than "unreachable executed".
            match panic_message(&state.output().lines()) {
                Some(panic) => EvaluationError::Trap(format!("{what} ({panic})")),
                None => EvaluationError::Trap(what),
            }
        }
    }
}

/// `panicked at FILE:LINE:COL: MESSAGE` from the last Rust panic in `lines`.
fn panic_message(lines: &[String]) -> Option<String> {
    let at = lines
        .iter()
        .rposition(|line| line.contains("panicked at"))?;
    let location = lines[at][lines[at].find("panicked at")?..].trim_end();
    Some(match lines.get(at + 1) {
        Some(message) => format!("{location} {}", message.trim()),
        None => location.to_owned(),
    })
}

impl From<GuestFault> for EvaluationError {
    fn from(fault: GuestFault) -> Self {
        match fault {
            GuestFault::TooLarge { size, limit } => EvaluationError::OutputTooLarge { size, limit },
            GuestFault::Protocol(message) => EvaluationError::Protocol(message),
        }
    }
}

fn emit_guest_output(policy_id: &str, state: &EvaluationState) {
    let output = state.output();
    for line in output.lines() {
        tracing::info!(target: "portcullis::guest", policy = policy_id, "{line}");
    }
    // Lines sent through Kubewarden's `tracing/log`, at their own level.
    for (level, line) in output.events() {
        match level {
            tracing::Level::ERROR => {
                tracing::error!(target: "portcullis::guest", policy = policy_id, "{line}")
            }
            tracing::Level::WARN => {
                tracing::warn!(target: "portcullis::guest", policy = policy_id, "{line}")
            }
            tracing::Level::INFO => {
                tracing::info!(target: "portcullis::guest", policy = policy_id, "{line}")
            }
            tracing::Level::DEBUG => {
                tracing::debug!(target: "portcullis::guest", policy = policy_id, "{line}")
            }
            tracing::Level::TRACE => {
                tracing::trace!(target: "portcullis::guest", policy = policy_id, "{line}")
            }
        }
    }
    if output.truncated() {
        tracing::warn!(target: "portcullis::guest", policy = policy_id, "guest output truncated");
    }
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn a_rust_panic_is_location_and_message() {
        let lines = [
            "starting".to_owned(),
            "thread '<unnamed>' (1) panicked at src/lib.rs:240:26:".to_owned(),
            "hostile policy panicked on purpose".to_owned(),
        ];
        assert_eq!(
            panic_message(&lines).as_deref(),
            Some("panicked at src/lib.rs:240:26: hostile policy panicked on purpose")
        );
        assert_eq!(panic_message(&lines[..1]), None);
    }
}
