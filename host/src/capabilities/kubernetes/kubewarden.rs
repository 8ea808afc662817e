//! Kubewarden's `kubernetes/*` host calls, with its JSON shapes: the
//! payloads its SDKs send and the answers they expect, served by the same
//! [`Kubernetes`] reads as components. The policy's grants were checked by
//! [`Capabilities::call`](crate::capabilities::Capabilities::call) already.

use k8s_openapi::api::authorization::v1::SubjectAccessReviewSpec;
use serde::Deserialize;
use serde_json::Value;

use super::{GetRequest, KubeError, Kubernetes, ListRequest};
use crate::capabilities::CallContext;

/// The operations, as Kubewarden names them.
pub(super) const OPERATIONS: &[&str] = &[
    "list_resources_by_namespace",
    "list_resources_all",
    "get_resource",
    "can_i",
];

#[derive(Deserialize)]
struct GetResource {
    api_version: String,
    kind: String,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    disable_cache: bool,
    #[serde(default)]
    field_masks: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct ListResources {
    api_version: String,
    kind: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    label_selector: Option<String>,
    #[serde(default)]
    field_selector: Option<String>,
    #[serde(default)]
    field_masks: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct CanI {
    subject_access_review: SubjectAccessReview,
    #[serde(default)]
    disable_cache: bool,
}

/// Kubewarden's SDK sends the review's spec with snake_case keys.
#[derive(Deserialize)]
struct SubjectAccessReview {
    user: String,
    #[serde(default)]
    groups: Option<Vec<String>>,
    resource_attributes: ResourceAttributes,
}

#[derive(Deserialize)]
struct ResourceAttributes {
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    resource: String,
    #[serde(default)]
    subresource: Option<String>,
    verb: String,
    #[serde(default)]
    version: Option<String>,
}

/// Kubewarden's host error text for a failed call.
fn failure(error: KubeError) -> String {
    match error {
        // Kubewarden's own denial text, verbatim.
        KubeError::NotGranted(message) => message,
        other => format!("Callback evaluation failure: {other}"),
    }
}

fn invalid(operation: &str, error: serde_json::Error) -> String {
    format!("Callback evaluation failure: invalid {operation} request: {error}")
}

pub(super) async fn call(
    kubernetes: &Kubernetes,
    context: &CallContext<'_>,
    operation: &str,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    let (policy, grants) = (context.policy_id, context.grants);
    match operation {
        "get_resource" => {
            let get: GetResource =
                serde_json::from_slice(payload).map_err(|e| invalid(operation, e))?;
            let request = GetRequest {
                api_version: get.api_version,
                kind: get.kind,
                name: get.name,
                namespace: get.namespace,
                field_masks: get.field_masks.unwrap_or_default(),
                bypass_cache: get.disable_cache,
            };
            let object = kubernetes
                .get(policy, grants, context.deadline, &request)
                .await
                .map_err(failure)?;
            Ok(serde_json::to_vec(&object).expect("a JSON value serialises"))
        }
        "list_resources_by_namespace" | "list_resources_all" => {
            let list: ListResources =
                serde_json::from_slice(payload).map_err(|e| invalid(operation, e))?;
            if operation == "list_resources_by_namespace" && list.namespace.is_none() {
                return Err(
                    "Callback evaluation failure: list_resources_by_namespace needs a namespace"
                        .into(),
                );
            }
            let request = ListRequest {
                namespace: match operation {
                    "list_resources_all" => None,
                    _ => list.namespace,
                },
                api_version: list.api_version,
                kind: list.kind,
                label_selector: list.label_selector,
                field_selector: list.field_selector,
                field_masks: list.field_masks.unwrap_or_default(),
            };
            let items = kubernetes.list(policy, grants, &request).map_err(failure)?;
            // A Kubernetes List, as the API server would send it.
            let mut out = format!(
                r#"{{"apiVersion":{},"kind":{},"metadata":{{}},"items":"#,
                Value::from(request.api_version.as_str()),
                Value::from(format!("{}List", request.kind)),
            );
            out.push_str(&items);
            out.push('}');
            Ok(out.into_bytes())
        }
        "can_i" => {
            let can_i: CanI = serde_json::from_slice(payload).map_err(|e| invalid(operation, e))?;
            let review = can_i.subject_access_review;
            let attributes = review.resource_attributes;
            let spec = SubjectAccessReviewSpec {
                user: Some(review.user),
                groups: review.groups,
                resource_attributes: Some(
                    k8s_openapi::api::authorization::v1::ResourceAttributes {
                        group: attributes.group,
                        name: attributes.name,
                        namespace: attributes.namespace,
                        resource: Some(attributes.resource),
                        subresource: attributes.subresource,
                        verb: Some(attributes.verb),
                        version: attributes.version,
                        ..Default::default()
                    },
                ),
                ..Default::default()
            };
            let status = kubernetes
                .can_i(policy, grants, context.deadline, spec, can_i.disable_cache)
                .await
                .map_err(failure)?;
            Ok(serde_json::to_vec(&status).expect("a status serialises"))
        }
        other => Err(format!("unknown operation: {other}")),
    }
}
