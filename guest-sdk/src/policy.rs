//! The [`Policy`] trait every Portcullis policy implements.

use serde_json::Value;

use crate::metadata::Metadata;
use crate::request::AdmissionRequest;
use crate::settings::Settings;
use crate::verdict::{Verdict, reject};

/// A Kubernetes admission policy.
///
/// Implement it on a unit struct and export it with
/// [`export_policy!`](crate::export_policy). The host creates a fresh instance
/// of the component for every call, so a policy cannot keep state between
/// requests (and `static`s start from their initial values every time).
pub trait Policy {
    /// The policy's settings; use [`NoSettings`](crate::NoSettings) when it
    /// takes none.
    type Settings: Settings;

    /// Describes the policy: the resources it targets, whether it mutates,
    /// a description. Must be cheap and must not depend on settings.
    fn metadata() -> Metadata;

    /// Decides on an admission request, given validated settings.
    fn validate(request: &AdmissionRequest, settings: &Self::Settings) -> Verdict;

    /// Decides on a raw JSON document that is not an admission request (a
    /// Terraform plan, a CI manifest, ...). By default a policy does not
    /// support raw validation and rejects every document.
    fn validate_raw(document: &Value, settings: &Self::Settings) -> Verdict {
        let _ = (document, settings);
        reject("this policy does not support raw validation")
    }
}
