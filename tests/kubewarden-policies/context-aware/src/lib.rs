//! A context-aware waPC policy written with Kubewarden's Rust SDK and its
//! kubernetes host-capability helpers: a pod is denied in a namespace that
//! holds a ConfigMap named `portcullis-freeze` (a change freeze). It lists
//! the namespace's ConfigMaps with a field selector and a field mask through
//! `list_resources_by_namespace`, which Portcullis serves from its
//! watch-based cache exactly as Kubewarden's policy-server would.
//!
//! Two settings add checks (without them, that is all it does):
//!
//! - `freezeLabel: L`: the namespace is frozen too when a ConfigMap in *any*
//!   namespace carries the label `L=<the pod's namespace>` (a freeze list
//!   kept elsewhere), read with `list_resources_all` and a label selector;
//! - `requiredAccess: {verb, resource, group?, subresource?, disableCache?,
//!   namespaces?}`: the user creating the pod must be allowed that in the
//!   pod's namespace (in every namespace, or only in those of `namespaces`),
//!   asked with `can_i` (a SubjectAccessReview). A pod that passes carries a
//!   warning quoting the review's answer (`allowed`, `reason`), so a test can
//!   see the whole response reach the policy.

use std::collections::BTreeSet;

use guest::prelude::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kubewarden_policy_sdk::host_capabilities::kubernetes::{
    CanIRequest, ListAllResourcesRequest, ListResourcesByNamespaceRequest, ResourceAttributes,
    SubjectAccessReview, can_i, list_all_resources, list_resources_by_namespace,
};
use kubewarden_policy_sdk::response::ValidationResponse;
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    accept_request, protocol_version_guest, reject_request, request::ValidationRequest,
    settings::Validatable, validate_settings,
};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Settings {
    /// A ConfigMap anywhere labelled `<freezeLabel>=<namespace>` freezes
    /// that namespace.
    #[serde(default)]
    freeze_label: Option<String>,
    /// What the user creating the pod must be allowed in its namespace.
    #[serde(default)]
    required_access: Option<Access>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Access {
    verb: String,
    resource: String,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    subresource: Option<String>,
    /// Ask the API server every time (Kubewarden caches answers 5 s).
    #[serde(default)]
    disable_cache: bool,
    /// Where the access is required; everywhere if absent.
    #[serde(default)]
    namespaces: Option<Vec<String>>,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        if self.freeze_label.as_deref() == Some("") {
            return Err("freezeLabel must not be empty".into());
        }
        if let Some(access) = &self.required_access
            && (access.verb.is_empty() || access.resource.is_empty())
        {
            return Err("requiredAccess needs a verb and a resource".into());
        }
        Ok(())
    }
}

/// The ConfigMap whose presence freezes a namespace.
const FREEZE: &str = "portcullis-freeze";

#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings::<Settings>);
    register_function("protocol_version", protocol_version_guest);
}

fn reject(message: String, code: Option<u16>) -> CallResult {
    reject_request(Some(message), code, None, None)
}

fn masks(fields: &[&str]) -> Option<BTreeSet<String>> {
    Some(fields.iter().map(|f| (*f).to_owned()).collect())
}

fn validate(payload: &[u8]) -> CallResult {
    let request: ValidationRequest<Settings> = ValidationRequest::new(payload)?;
    let namespace = request.request.namespace.clone();
    let list = ListResourcesByNamespaceRequest {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: namespace.clone(),
        label_selector: None,
        field_selector: Some(format!("metadata.name={FREEZE}")),
        field_masks: masks(&["metadata.name"]),
    };
    match list_resources_by_namespace::<ConfigMap>(&list) {
        Ok(found) if found.items.is_empty() => {}
        Ok(_) => {
            return reject(
                format!("namespace `{namespace}` is frozen (ConfigMap `{FREEZE}`)"),
                None,
            );
        }
        Err(error) => return reject(format!("cannot list ConfigMaps: {error}"), Some(500)),
    }

    if let Some(label) = &request.settings.freeze_label {
        let list = ListAllResourcesRequest {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            label_selector: Some(format!("{label}={namespace}")),
            field_selector: None,
            field_masks: masks(&["metadata.name", "metadata.namespace"]),
        };
        match list_all_resources::<ConfigMap>(&list) {
            Ok(found) => {
                if let Some(freeze) = found.items.first() {
                    let metadata = &freeze.metadata;
                    return reject(
                        format!(
                            "namespace `{namespace}` is frozen by ConfigMap `{}/{}`",
                            metadata.namespace.as_deref().unwrap_or_default(),
                            metadata.name.as_deref().unwrap_or_default(),
                        ),
                        None,
                    );
                }
            }
            Err(error) => {
                return reject(
                    format!("cannot list ConfigMaps in all namespaces: {error}"),
                    Some(500),
                );
            }
        }
    }

    let Some(access) = &request.settings.required_access else {
        return accept_request();
    };
    if let Some(namespaces) = &access.namespaces
        && !namespaces.contains(&namespace)
    {
        return accept_request();
    }
    let user = &request.request.user_info;
    let mut groups: Vec<String> = user.groups.iter().cloned().collect();
    groups.sort();
    let review = CanIRequest {
        subject_access_review: SubjectAccessReview {
            user: user.username.clone(),
            groups: Some(groups),
            resource_attributes: ResourceAttributes {
                group: access.group.clone(),
                name: None,
                namespace: Some(namespace.clone()),
                resource: access.resource.clone(),
                subresource: access.subresource.clone(),
                verb: access.verb.clone(),
                version: None,
            },
        },
        disable_cache: access.disable_cache,
    };
    let what = format!(
        "{} {}{} in namespace `{namespace}`",
        access.verb,
        access.resource,
        access
            .subresource
            .as_deref()
            .map(|s| format!("/{s}"))
            .unwrap_or_default()
    );
    match can_i(review) {
        Ok(status) if status.allowed => {
            // The answer, quoted back: what the SubjectAccessReview said.
            let warning = format!(
                "kubernetes/can_i: user `{}` may {what}: {}",
                user.username,
                status.reason.as_deref().unwrap_or("(no reason)")
            );
            Ok(serde_json::to_vec(&ValidationResponse {
                accepted: true,
                message: None,
                code: None,
                mutated_object: None,
                audit_annotations: None,
                warnings: Some(vec![warning]),
            })?)
        }
        Ok(status) => reject(
            format!(
                "user `{}` may not {what} (denied: {}, reason: `{}`)",
                user.username,
                status.denied.unwrap_or(false),
                status.reason.as_deref().unwrap_or_default()
            ),
            None,
        ),
        Err(error) => reject(format!("cannot ask can_i: {error}"), Some(500)),
    }
}
