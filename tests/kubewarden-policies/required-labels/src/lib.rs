//! A validating waPC policy whose `validate_settings` rejects bad settings:
//! objects must carry every label of `labels` (each a valid label name).
//! Accepted objects get an audit annotation, rejected ones warnings.

use std::collections::HashMap;

use guest::prelude::*;
use kubewarden_policy_sdk::response::ValidationResponse;
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    protocol_version_guest, request::ValidationRequest, settings::Validatable, validate_settings,
};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    labels: Vec<String>,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        if self.labels.is_empty() {
            return Err("`labels` must not be empty".to_owned());
        }
        for label in &self.labels {
            let valid = !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(format!("`{label}` is not a valid label name"));
            }
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
    let labels = request.request.object.pointer("/metadata/labels");
    let missing: Vec<&String> = request
        .settings
        .labels
        .iter()
        .filter(|label| {
            labels
                .and_then(|l| l.get(label.as_str()))
                .and_then(Value::as_str)
                .is_none()
        })
        .collect();
    let response = if missing.is_empty() {
        ValidationResponse {
            accepted: true,
            message: None,
            code: None,
            mutated_object: None,
            audit_annotations: Some(HashMap::from([(
                "required-labels".to_owned(),
                request.settings.labels.join(","),
            )])),
            warnings: None,
        }
    } else {
        ValidationResponse {
            accepted: false,
            message: Some(format!(
                "missing required labels: {}",
                missing
                    .iter()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            code: Some(403),
            mutated_object: None,
            audit_annotations: None,
            warnings: Some(
                missing
                    .iter()
                    .map(|l| format!("label `{l}` is missing"))
                    .collect(),
            ),
        }
    };
    Ok(serde_json::to_vec(&response)?)
}
