//! A raw waPC policy (`policyType: raw`): judges `{user, action, resource}`
//! documents against the users, actions and resources its settings allow,
//! as Kubewarden's raw-validation test policy does.

use guest::prelude::*;
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    accept_request, protocol_version_guest, reject_request, settings::Validatable,
    validate_settings,
};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
struct Settings {
    valid_users: Vec<String>,
    valid_actions: Vec<String>,
    valid_resources: Vec<String>,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Deserialize)]
struct Document {
    user: String,
    action: String,
    resource: String,
}

#[derive(Deserialize)]
struct RawValidationRequest {
    request: Document,
    settings: Settings,
}

#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings::<Settings>);
    register_function("protocol_version", protocol_version_guest);
}

fn validate(payload: &[u8]) -> CallResult {
    let request: RawValidationRequest = match serde_json::from_slice(payload) {
        Ok(request) => request,
        Err(e) => {
            return reject_request(
                Some(format!("not a {{user, action, resource}} document: {e}")),
                Some(400),
                None,
                None,
            );
        }
    };
    let (document, settings) = (request.request, request.settings);
    let allowed = |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
    if !allowed(&settings.valid_users, &document.user) {
        return reject_request(
            Some(format!("user `{}` is not allowed", document.user)),
            None,
            None,
            None,
        );
    }
    if !allowed(&settings.valid_actions, &document.action) {
        return reject_request(
            Some(format!("action `{}` is not allowed", document.action)),
            None,
            None,
            None,
        );
    }
    if !allowed(&settings.valid_resources, &document.resource) {
        return reject_request(
            Some(format!("resource `{}` is not allowed", document.resource)),
            None,
            None,
            None,
        );
    }
    accept_request()
}
