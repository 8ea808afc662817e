//! A context-aware waPC policy written with Kubewarden's Rust SDK and its
//! kubernetes host-capability helpers: a pod is denied in a namespace that
//! holds a ConfigMap named `portcullis-freeze` (a change freeze). It lists
//! the namespace's ConfigMaps with a field selector and a field mask through
//! `list_resources_by_namespace`, which Portcullis serves from its
//! watch-based cache exactly as Kubewarden's policy-server would.

use guest::prelude::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kubewarden_policy_sdk::host_capabilities::kubernetes::{
    ListResourcesByNamespaceRequest, list_resources_by_namespace,
};
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    accept_request, protocol_version_guest, reject_request, request::ValidationRequest,
    settings::Validatable, validate_settings,
};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
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

fn validate(payload: &[u8]) -> CallResult {
    let request: ValidationRequest<Settings> = ValidationRequest::new(payload)?;
    let namespace = request.request.namespace.clone();
    let list = ListResourcesByNamespaceRequest {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: namespace.clone(),
        label_selector: None,
        field_selector: Some(format!("metadata.name={FREEZE}")),
        field_masks: Some(["metadata.name".to_owned()].into()),
    };
    match list_resources_by_namespace::<ConfigMap>(&list) {
        Ok(found) if found.items.is_empty() => accept_request(),
        Ok(_) => reject_request(
            Some(format!(
                "namespace `{namespace}` is frozen (ConfigMap `{FREEZE}`)"
            )),
            None,
            None,
            None,
        ),
        Err(error) => reject_request(
            Some(format!("cannot list ConfigMaps: {error}")),
            Some(500),
            None,
            None,
        ),
    }
}
