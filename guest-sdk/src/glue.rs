//! The code between the WIT exports and a [`Policy`].
//!
//! [`export_policy!`](crate::export_policy) implements the generated
//! [`Guest`](crate::bindings::exports::portcullis::policy::admission::Guest)
//! trait by calling these functions, and the
//! native [test harness](crate::testing) calls the very same functions, so a
//! policy's unit tests exercise the code path the component runs: settings
//! JSON is parsed and validated, the request's JSON documents are parsed, the
//! policy decides, and its verdict is converted to the WIT response.

use serde_json::Value;

use crate::bindings::wit;
use crate::metadata::Metadata;
use crate::policy::Policy;
use crate::request::AdmissionRequest;
use crate::settings::load_settings;
use crate::verdict::reject_with_code;

/// The `metadata` export: the policy's [`Policy::metadata`], converted.
pub fn metadata<P: Policy>() -> wit::PolicyMetadata {
    let metadata: Metadata = P::metadata();
    metadata.into()
}

/// The `validate-settings` export: parses the settings JSON and runs
/// [`Settings::validate`](crate::Settings::validate).
pub fn validate_settings<P: Policy>(settings: &str) -> Result<(), String> {
    load_settings::<P::Settings>(settings).map(drop)
}

/// The `validate` export.
///
/// Rejects with code 500 when the settings are invalid (the host never sends
/// settings that `validate-settings` refused, so this means a host bug) and
/// with code 400 when one of the request's JSON documents does not parse;
/// otherwise returns the policy's verdict.
pub fn validate<P: Policy>(
    request: wit::AdmissionRequest,
    settings: &str,
) -> wit::ValidationResponse {
    let settings = match load_settings::<P::Settings>(settings) {
        Ok(settings) => settings,
        Err(error) => return reject_with_code(error, 500).into(),
    };
    let request = match AdmissionRequest::try_from(request) {
        Ok(request) => request,
        Err(error) => return reject_with_code(error, 400).into(),
    };
    P::validate(&request, &settings).into()
}

/// The `validate-raw` export: like [`validate`], for a raw JSON document.
/// Rejects with code 400 when the document is not valid JSON.
pub fn validate_raw<P: Policy>(document: &str, settings: &str) -> wit::ValidationResponse {
    let settings = match load_settings::<P::Settings>(settings) {
        Ok(settings) => settings,
        Err(error) => return reject_with_code(error, 500).into(),
    };
    let document: Value = match serde_json::from_str(document) {
        Ok(document) => document,
        Err(error) => {
            return reject_with_code(format!("invalid document: not valid JSON: {error}"), 400)
                .into();
        }
    };
    P::validate_raw(&document, &settings).into()
}
