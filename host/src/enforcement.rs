//! What the operator declared about a policy, applied to its verdict: mode
//! (protect / monitor), permission to mutate, an overriding message, and what
//! an evaluation failure means for the request.

use crate::admission::{AdmissionResponse, StatusCause, StatusDetails};
use crate::bindings::ValidationResponse;
use crate::environment::Policy;
use crate::evaluation::EvaluationError;
use crate::group::{Group, GroupVerdict};
use crate::policy::PolicyMode;

/// Why the verdict is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// To admit or reject the request: the policy's mode applies.
    Admission,
    /// To report on existing objects: always protect semantics, never a patch.
    Audit,
}

/// How an evaluation ended. In monitor mode this is the verdict that was
/// *not* enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted unchanged.
    Accepted,
    /// Admitted with a patch.
    Mutated,
    /// Rejected by the policy.
    Rejected,
    /// No verdict: timeout, trap, out of memory, invalid output.
    Error,
}

impl Outcome {
    /// The lower-case name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Mutated => "mutated",
            Self::Rejected => "rejected",
            Self::Error => "error",
        }
    }
}

/// The response to send, and how the evaluation ended.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The AdmissionResponse for the API server.
    pub response: AdmissionResponse,
    /// What the policy decided (before monitor mode relaxed it).
    pub outcome: Outcome,
}

/// Applies `policy`'s declared semantics to the result of evaluating the
/// request `uid`, whose submitted object is `object` (JSON).
pub fn decide(
    policy: &Policy,
    uid: &str,
    object: Option<&str>,
    result: Result<ValidationResponse, EvaluationError>,
    purpose: Purpose,
) -> Decision {
    let spec = policy.spec();
    let mut decision = match result {
        Err(error) => Decision {
            response: AdmissionResponse::reject(
                uid,
                format!("policy `{}` failed: {error}", spec.id),
                500,
            ),
            outcome: Outcome::Error,
        },
        Ok(mut verdict) => {
            if purpose == Purpose::Audit {
                verdict.mutated_object = None;
            }
            if verdict.mutated_object.is_some() && !spec.allowed_to_mutate {
                // Kubewarden's wording, so operators see the same message.
                let message = format!(
                    "Request rejected by policy {}. The policy attempted to mutate the request, \
                     but it is currently configured to not allow mutations.",
                    spec.id
                );
                Decision {
                    response: AdmissionResponse::reject(uid, message, 500),
                    outcome: Outcome::Rejected,
                }
            } else {
                let mutated = verdict.mutated_object.is_some();
                match AdmissionResponse::from_verdict(uid, verdict, object) {
                    Ok(response) => Decision {
                        outcome: match (response.allowed, mutated) {
                            (false, _) => Outcome::Rejected,
                            (true, true) => Outcome::Mutated,
                            (true, false) => Outcome::Accepted,
                        },
                        response,
                    },
                    Err(error) => Decision {
                        response: AdmissionResponse::reject(
                            uid,
                            format!("policy `{}` failed: {error}", spec.id),
                            500,
                        ),
                        outcome: Outcome::Error,
                    },
                }
            }
        }
    };
    if !decision.response.allowed
        && decision.outcome == Outcome::Rejected
        && let (Some(message), Some(status)) = (&spec.message, decision.response.status.as_mut())
    {
        status.message = Some(message.clone());
    }
    if purpose == Purpose::Admission && spec.mode == PolicyMode::Monitor {
        monitor(&spec.id, uid, &mut decision);
    }
    decision
}

/// Monitor mode: the request is admitted; a verdict that was not is logged.
fn monitor(id: &str, uid: &str, decision: &mut Decision) {
    if decision.outcome != Outcome::Accepted {
        let message = decision
            .response
            .status
            .as_ref()
            .and_then(|s| s.message.as_deref());
        tracing::info!(
            policy = id,
            %uid,
            outcome = decision.outcome.as_str(),
            // Not `message`: that is the event's own field, and JSON logs
            // would carry the key twice.
            verdict = message,
            "monitor mode: verdict not enforced"
        );
    }
    decision.response = AdmissionResponse::allow(uid);
}

/// Applies a group's declared semantics to its verdict for the request
/// `uid`: one response with the group's message and one cause per member
/// that rejected (`status.details.causes`, as Kubewarden). A member that
/// gave no verdict where the expression needed one fails the group, closed:
/// rejected with code 500, whatever the expression (`!m()` included).
pub fn decide_group(
    group: &Group,
    uid: &str,
    verdict: &GroupVerdict,
    purpose: Purpose,
) -> Decision {
    let mut decision = match verdict.allowed {
        Some(true) => Decision {
            response: AdmissionResponse::allow(uid),
            outcome: Outcome::Accepted,
        },
        Some(false) => {
            let causes = verdict
                .runs
                .iter()
                .filter_map(|run| {
                    run.rejection().map(|message| StatusCause {
                        field: Some(format!("spec.policies.{}", run.name)),
                        message: Some(message),
                    })
                })
                .collect();
            let mut response = AdmissionResponse::reject(uid, group.message(), 400);
            if let Some(status) = response.status.as_mut() {
                status.code = None;
                status.details = Some(StatusDetails { causes });
            }
            Decision {
                response,
                outcome: Outcome::Rejected,
            }
        }
        None => {
            let failed = verdict.runs.last().expect("a failed group ran a member");
            let error = failed.result.as_ref().expect_err("the last run failed");
            Decision {
                response: AdmissionResponse::reject(
                    uid,
                    format!(
                        "policy group `{}`: member `{}` failed: {error}",
                        group.id(),
                        failed.name
                    ),
                    500,
                ),
                outcome: Outcome::Error,
            }
        }
    };
    if purpose == Purpose::Admission && group.mode() == PolicyMode::Monitor {
        monitor(group.id(), uid, &mut decision);
    }
    decision
}
