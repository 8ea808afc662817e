//! A waPC policy that sleeps `sleepMilliseconds` (or what the object's
//! `portcullis.sleep_duration_milliseconds` annotation says) before
//! accepting: the deadline's test subject.

use std::time::Duration;

use guest::prelude::*;
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    accept_request, protocol_version_guest, request::ValidationRequest, settings::Validatable,
    validate_settings,
};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
struct Settings {
    sleep_milliseconds: u64,
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
    let milliseconds = request
        .request
        .object
        .pointer("/metadata/annotations/portcullis.sleep_duration_milliseconds")
        .and_then(Value::as_str)
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(request.settings.sleep_milliseconds);
    std::thread::sleep(Duration::from_millis(milliseconds));
    accept_request()
}
