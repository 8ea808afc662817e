//! A mutating waPC policy: adds the annotations of its settings to every
//! object that lacks them, leaves objects that have them alone.

use std::collections::BTreeMap;

use guest::prelude::*;
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    accept_request, mutate_request, protocol_version_guest, request::ValidationRequest,
    settings::Validatable, validate_settings,
};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    annotations: BTreeMap<String, String>,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        if self.annotations.is_empty() {
            return Err("`annotations` must name at least one annotation to add".to_owned());
        }
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
    let mut object = request.request.object;
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        // No object (a DELETE): still "mutated", so the host's rule for
        // mutations of a null object is what answers.
        return mutate_request(
            serde_json::json!({"metadata": {"annotations": request.settings.annotations}}),
        );
    };
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(annotations) = annotations.as_object_mut() else {
        return accept_request();
    };
    let mut changed = false;
    for (key, value) in &request.settings.annotations {
        if annotations.get(key).and_then(Value::as_str) != Some(value) {
            annotations.insert(key.clone(), Value::String(value.clone()));
            changed = true;
        }
    }
    if changed {
        mutate_request(object)
    } else {
        accept_request()
    }
}
