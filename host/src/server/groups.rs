//! Serving policy groups: a group enters the gate once, in a lane of its
//! own, and its members run one after another on the evaluation runtime,
//! each under its own limits and deadline.

use std::sync::Arc;

use axum::http::StatusCode;

use super::error::ApiError;
use super::{AppState, Received};
use crate::bindings::AdmissionRequest;
use crate::enforcement::{Decision, Outcome, Purpose, decide_group};
use crate::environment::Policy;
use crate::evaluation::EvaluationError;
use crate::group::{Group, GroupVerdict, Input};

/// What a request's path names.
pub(super) enum Target {
    Policy(Arc<Policy>),
    Group(Arc<Group>),
}

/// What a group is asked to evaluate, owned, so it can cross to the
/// evaluation runtime.
pub(super) enum GroupJob {
    Validate(Box<AdmissionRequest>),
    Raw(String),
}

impl AppState {
    /// Evaluates `job` with `group` and applies its declared semantics.
    pub(super) async fn evaluate_group(
        self: &Arc<Self>,
        group: &Arc<Group>,
        uid: &str,
        job: GroupJob,
        purpose: Purpose,
        received: Received,
    ) -> Result<Decision, ApiError> {
        let permit = self.enter(group.id(), received).await?;
        let state = Arc::clone(self);
        let running = Arc::clone(group);
        let evaluation = async move {
            let _in_flight = state.metrics.in_flight();
            let input = match &job {
                GroupJob::Validate(request) => Input::Request(request),
                GroupJob::Raw(document) => Input::Raw(document),
            };
            running.evaluate(input).await
        };
        let task = self
            .evaluator
            .spawn(permit.run(group.timeout(), evaluation));
        let verdict = task.await.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("evaluation task failed: {e}"),
            )
        })?;
        let failure = verdict
            .runs
            .last()
            .and_then(|run| run.result.as_ref().err());
        if let Some(EvaluationError::Overloaded(message)) = failure {
            // As for a policy: a full instance pool is overload, not a verdict.
            self.metrics.overloaded("instance_pool");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("server overloaded: {message}"),
            ));
        }
        Ok(self.record_group(group, uid, &verdict, purpose))
    }

    /// The policy or group `id` names, in the configuration serving now.
    pub(super) fn target(&self, id: &str) -> Result<Target, ApiError> {
        let environment = self.environment();
        let environment = environment.as_deref();
        if let Some(policy) = environment.and_then(|env| env.policy(id)) {
            return Ok(Target::Policy(Arc::clone(policy)));
        }
        environment
            .and_then(|env| env.group(id))
            .map(|group| Target::Group(Arc::clone(group)))
            .ok_or_else(|| ApiError::unknown_policy(id))
    }

    fn record_group(
        &self,
        group: &Group,
        uid: &str,
        verdict: &GroupVerdict,
        purpose: Purpose,
    ) -> Decision {
        for run in &verdict.runs {
            let member = &group.members()[&run.name];
            match &run.result {
                Ok(verdict) => {
                    self.metrics
                        .timings(member.id(), verdict.instantiation, verdict.total)
                }
                Err(error) => {
                    tracing::warn!(policy = member.id(), %uid, %error, "evaluation failed")
                }
            }
        }
        let decision = decide_group(group, uid, verdict, purpose);
        let mode = match purpose {
            Purpose::Admission => group.mode().as_str(),
            Purpose::Audit => "audit",
        };
        self.metrics.evaluation(group.id(), mode, decision.outcome);
        if decision.outcome != Outcome::Error {
            tracing::debug!(
                policy = group.id(),
                %uid,
                members = verdict.runs.len(),
                outcome = decision.outcome.as_str(),
                "evaluated"
            );
        }
        decision
    }
}
