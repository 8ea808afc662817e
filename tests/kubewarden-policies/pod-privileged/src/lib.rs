//! Kubewarden's pod-privileged semantics as a waPC policy written with
//! Kubewarden's Rust SDK: rejects workloads running privileged containers,
//! init containers (unless `skip_init_containers`) or ephemeral containers
//! (unless `skip_ephemeral_containers`).

use guest::prelude::*;
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    accept_request, protocol_version_guest, reject_request, request::ValidationRequest,
    settings::Validatable, validate_settings,
};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    skip_init_containers: bool,
    skip_ephemeral_containers: bool,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings::<Settings>);
    register_function("protocol_version", protocol_version_guest);
}

/// The pod spec of a pod or of a workload's pod template.
fn pod_spec<'a>(kind: &str, object: &'a Value) -> Option<&'a Value> {
    let spec = object.get("spec")?;
    match kind {
        "Pod" => Some(spec),
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicationController"
        | "Job" => spec.get("template")?.get("spec"),
        "CronJob" => spec
            .get("jobTemplate")?
            .get("spec")?
            .get("template")?
            .get("spec"),
        _ => None,
    }
}

fn any_privileged(spec: &Value, field: &str) -> bool {
    spec.get(field)
        .and_then(Value::as_array)
        .is_some_and(|containers| {
            containers.iter().any(|c| {
                c.pointer("/securityContext/privileged")
                    .and_then(Value::as_bool)
                    == Some(true)
            })
        })
}

fn validate(payload: &[u8]) -> CallResult {
    let request: ValidationRequest<Settings> = ValidationRequest::new(payload)?;
    let Some(spec) = pod_spec(&request.request.kind.kind, &request.request.object) else {
        return accept_request();
    };
    let settings = &request.settings;
    let message = if any_privileged(spec, "containers") {
        "Privileged container is not allowed"
    } else if !settings.skip_init_containers && any_privileged(spec, "initContainers") {
        "Privileged init container is not allowed"
    } else if !settings.skip_ephemeral_containers && any_privileged(spec, "ephemeralContainers") {
        "Privileged ephemeral container is not allowed"
    } else {
        return accept_request();
    };
    reject_request(Some(message.to_owned()), None, None, None)
}
