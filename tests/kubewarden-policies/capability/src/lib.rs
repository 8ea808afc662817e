//! A waPC policy that asks the host to resolve a name
//! (`net/v1/dns_lookup_host`) and rejects with the host's answer: what a
//! policy sees when it calls a capability it was not granted, or one the
//! host does not provide.

use guest::prelude::*;
use kubewarden_policy_sdk::host_capabilities::net::lookup_host;
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    protocol_version_guest, reject_request, request::ValidationRequest, settings::Validatable,
    validate_settings,
};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Settings {}

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
    let _request: ValidationRequest<Settings> = ValidationRequest::new(payload)?;
    let message = match lookup_host("registry.example.invalid") {
        Ok(response) => format!("resolved: {:?}", response.ips),
        Err(error) => format!("host capability failed: {error}"),
    };
    reject_request(Some(message), None, None, None)
}
