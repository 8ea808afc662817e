//! The `portcullis:policy/kubernetes` import of context-aware components:
//! typed calls, served by the evaluation's [`Kubernetes`] capability with
//! the calling policy's grants, as async host functions (a call waiting for
//! the API server suspends the component's fiber and frees its thread).

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReviewSpec};
use wasmtime::component::{HasData, Linker};

use super::{GetRequest, KubeError, Kubernetes, ListRequest};
use crate::bindings::kubernetes as wit;
use crate::capabilities::Caller;
use crate::store::EvaluationState;

/// What the import's functions see of the evaluation: who is calling.
pub struct KubernetesView<'a> {
    caller: Option<&'a Caller>,
}

struct KubernetesImport;

impl HasData for KubernetesImport {
    type Data<'a> = KubernetesView<'a>;
}

/// Adds the import to the component linker.
pub(crate) fn add_to_linker(linker: &mut Linker<EvaluationState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<EvaluationState, KubernetesImport>(linker, |state| KubernetesView {
        caller: state.get::<Caller>(),
    })
}

impl KubernetesView<'_> {
    fn context(&self) -> Result<(&Caller, &Kubernetes), KubeError> {
        let caller = self.caller.ok_or_else(|| {
            KubeError::Unavailable("the kubernetes import was called outside an evaluation".into())
        })?;
        let kubernetes = caller.capabilities.find::<Kubernetes>().ok_or_else(|| {
            KubeError::Unavailable("this host has no Kubernetes capability".into())
        })?;
        Ok((caller, kubernetes))
    }
}

impl From<KubeError> for wit::Error {
    fn from(error: KubeError) -> Self {
        match error {
            KubeError::NotGranted(m) => Self::NotGranted(m),
            KubeError::NotFound(m) => Self::NotFound(m),
            KubeError::Unavailable(m) => Self::Unavailable(m),
            KubeError::Invalid(m) => Self::Invalid(m),
            KubeError::Forbidden(m) => Self::Forbidden(m),
        }
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

impl wit::Host for KubernetesView<'_> {
    async fn get(&mut self, request: wit::GetRequest) -> Result<String, wit::Error> {
        let (caller, kubernetes) = self.context()?;
        let request = GetRequest {
            api_version: request.api_version,
            kind: request.kind,
            name: request.name,
            namespace: request.namespace,
            field_masks: request.field_masks,
            bypass_cache: request.bypass_cache,
        };
        let object = kubernetes
            .get(&caller.policy_id, &caller.grants, caller.deadline, &request)
            .await?;
        Ok(object.to_string())
    }

    async fn list(&mut self, request: wit::ListRequest) -> Result<String, wit::Error> {
        let (caller, kubernetes) = self.context()?;
        let request = ListRequest {
            api_version: request.api_version,
            kind: request.kind,
            namespace: request.namespace,
            label_selector: request.label_selector,
            field_selector: request.field_selector,
            field_masks: request.field_masks,
        };
        Ok(kubernetes.list(&caller.policy_id, &caller.grants, &request)?)
    }

    async fn can_i(
        &mut self,
        review: wit::AccessReview,
    ) -> Result<wit::AccessReviewStatus, wit::Error> {
        let (caller, kubernetes) = self.context()?;
        let attributes = review.resource;
        let spec = SubjectAccessReviewSpec {
            user: Some(review.user),
            groups: Some(review.groups),
            resource_attributes: Some(ResourceAttributes {
                group: Some(attributes.group),
                version: non_empty(attributes.version),
                resource: Some(attributes.resource),
                subresource: non_empty(attributes.subresource),
                verb: Some(attributes.verb),
                namespace: non_empty(attributes.namespace),
                name: non_empty(attributes.name),
                ..Default::default()
            }),
            ..Default::default()
        };
        let status = kubernetes
            .can_i(
                &caller.policy_id,
                &caller.grants,
                caller.deadline,
                spec,
                review.bypass_cache,
            )
            .await?;
        Ok(wit::AccessReviewStatus {
            allowed: status.allowed,
            denied: status.denied.unwrap_or(false),
            reason: status.reason.filter(|r| !r.is_empty()),
            evaluation_error: status.evaluation_error.filter(|e| !e.is_empty()),
        })
    }
}
