//! A policy that sleeps, then accepts: a Portcullis test and benchmark aid
//! built with `portcullis-sdk`.
//!
//! Every evaluation sleeps for `sleepMilliseconds` (a setting), or for the
//! number of milliseconds in the object's
//! `portcullis.sleep_duration_milliseconds` annotation when it has one, and
//! then accepts. Benchmarks use it to simulate a slow policy; timeout tests
//! use it to check that the host interrupts a policy that overruns its
//! deadline.
//!
//! The sleep is a single `std::thread::sleep` call, which a `wasm32-wasip2`
//! component performs as one blocking WASI call (a `monotonic-clock`
//! subscription and a poll). It is deliberately not sliced into short sleeps:
//! the point is to check that the host can interrupt a policy that is blocked
//! inside one long host call, not merely one that keeps running wasm code.

use std::time::Duration;

use portcullis_sdk::prelude::*;
use portcullis_sdk::serde_json::Value;
use serde::Deserialize;

/// The annotation that overrides the sleep duration of one request: a
/// decimal number of milliseconds.
pub const SLEEP_ANNOTATION: &str = "portcullis.sleep_duration_milliseconds";

/// The policy's settings, e.g. `{"sleepMilliseconds": 250}`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct SleepingSettings {
    /// How long to sleep, in milliseconds; required, and greater than 0.
    pub sleep_milliseconds: Option<u64>,
}

impl portcullis_sdk::Settings for SleepingSettings {
    fn validate(&self) -> Result<(), String> {
        match self.sleep_milliseconds {
            None => Err(
                "sleepMilliseconds is required: how long to sleep on every request, \
                 in milliseconds, e.g. {\"sleepMilliseconds\": 250}"
                    .into(),
            ),
            Some(0) => Err("sleepMilliseconds must be greater than 0".into()),
            Some(_) => Ok(()),
        }
    }
}

impl SleepingSettings {
    /// The sleep duration; settings that passed validation always have one.
    fn duration(&self) -> Duration {
        Duration::from_millis(self.sleep_milliseconds.unwrap_or_default())
    }
}

/// The sleeping policy.
pub struct Sleeping;

impl Policy for Sleeping {
    type Settings = SleepingSettings;

    fn metadata() -> Metadata {
        Metadata::new(
            "Sleeps for `sleepMilliseconds` (or, for one request, for the number of \
             milliseconds in the object's `portcullis.sleep_duration_milliseconds` \
             annotation), then accepts. For benchmarks and timeout tests: never deploy it \
             to a real cluster.",
        )
        .rule(
            Rule::new()
                .api_groups([""])
                .api_versions(["v1"])
                .resources(["pods"])
                .operations([Operation::Create, Operation::Update]),
        )
    }

    fn validate(request: &AdmissionRequest, settings: &SleepingSettings) -> Verdict {
        sleep_then_accept(
            request.object.as_ref().map(RawJson::to_value).as_ref(),
            settings,
        )
    }

    /// Raw documents sleep the same way, so benchmarks can time the
    /// `validate-raw` path too.
    fn validate_raw(document: &Value, settings: &SleepingSettings) -> Verdict {
        sleep_then_accept(Some(document), settings)
    }
}

portcullis_sdk::export_policy!(Sleeping);

fn sleep_then_accept(object: Option<&Value>, settings: &SleepingSettings) -> Verdict {
    let duration = match object.map(requested_duration).transpose() {
        Ok(requested) => requested.flatten().unwrap_or_else(|| settings.duration()),
        Err(error) => return reject_with_code(error, 400),
    };
    // One call, on purpose: see the crate documentation.
    std::thread::sleep(duration);
    accept()
}

/// The duration in the object's sleep annotation: `Ok(None)` when it has
/// none, an error naming the annotation when its value is not a decimal
/// number of milliseconds.
fn requested_duration(object: &Value) -> Result<Option<Duration>, String> {
    let value = match object
        .get("metadata")
        .and_then(|metadata| metadata.get("annotations"))
        .and_then(|annotations| annotations.get(SLEEP_ANNOTATION))
    {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    let milliseconds = value
        .as_str()
        // `u64::from_str` also takes a leading `+`: only plain digits are decimal.
        .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse::<u64>().ok());
    match milliseconds {
        Some(milliseconds) => Ok(Some(Duration::from_millis(milliseconds))),
        None => Err(format!(
            "annotation \"{SLEEP_ANNOTATION}\" must be a decimal number of milliseconds \
             (at most {}), found {value}",
            u64::MAX
        )),
    }
}

#[cfg(test)]
mod tests;
