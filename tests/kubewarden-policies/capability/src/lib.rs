//! A waPC policy that calls a host capability and rejects with the host's
//! answer: what a policy sees when it calls a capability it was not
//! granted, or one the host does not provide. By default it asks to resolve
//! a name (`net/v1/dns_lookup_host`, through the SDK); with `readKind` set it
//! reads a Kubernetes object of that kind (`kubernetes/get_resource`, a raw
//! waPC host call), which `contextAwareResources` gates too.

use guest::prelude::*;
use kubewarden_policy_sdk::host_capabilities::net::lookup_host;
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    protocol_version_guest, reject_request, request::ValidationRequest, settings::Validatable,
    validate_settings,
};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
struct Settings {
    read_kind: Option<String>,
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

fn validate(payload: &[u8]) -> CallResult {
    let request: ValidationRequest<Settings> = ValidationRequest::new(payload)?;
    let message = match &request.settings.read_kind {
        None => match lookup_host("registry.example.invalid") {
            Ok(response) => format!("resolved: {:?}", response.ips),
            Err(error) => format!("host capability failed: {error}"),
        },
        Some(kind) => {
            let get = serde_json::json!({
                "api_version": "v1", "kind": kind, "name": "x", "disable_cache": false,
            });
            match guest::host_call(
                "kubewarden",
                "kubernetes",
                "get_resource",
                &serde_json::to_vec(&get)?,
            ) {
                Ok(object) => format!("read: {}", String::from_utf8_lossy(&object)),
                Err(error) => format!("host capability failed: {error}"),
            }
        }
    };
    reject_request(Some(message), None, None, None)
}
