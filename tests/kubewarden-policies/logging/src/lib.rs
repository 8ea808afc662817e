//! A waPC policy that logs through Kubewarden's `tracing/log` host call (the
//! SDK's slog drain), then accepts.

use guest::prelude::*;
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    accept_request, logging, protocol_version_guest, request::ValidationRequest,
    settings::Validatable, validate_settings,
};
use serde::Deserialize;
use slog::{Drain, Logger, info, o, warn};

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
    let request: ValidationRequest<Settings> = ValidationRequest::new(payload)?;
    let log = Logger::root(
        logging::KubewardenDrain::new().fuse(),
        o!("logger" => "kw-logging"),
    );
    info!(log, "validating a request"; "uid" => &request.request.uid, "kind" => &request.request.kind.kind);
    warn!(log, "this policy only logs");
    accept_request()
}
