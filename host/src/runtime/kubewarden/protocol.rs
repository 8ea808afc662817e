//! Kubewarden's JSON: the `ValidationRequest` a policy is given and the
//! `ValidationResponse` / `SettingsValidationResponse` it answers with,
//! turned into the host's types.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::admission::{request_json_capacity, write_request_json};
use crate::bindings::{AdmissionRequest, ValidationResponse};

/// Kubewarden's answer to a mutation of a request without an object
/// (a DELETE): refused, in its words.
pub(super) const NULL_OBJECT_MUTATION: &str = "Incoming object is null, which happens only with \
     DELETE operations, but the policy is attempting a mutation. This is not allowed";

/// `{"request": <AdmissionRequest>, "settings": <settings>}`, the request
/// in Kubernetes' JSON with absent fields left out (as Kubewarden sends it:
/// its SDKs read absent strings as empty, but not `null` ones).
///
/// The documents — object, old object, options, settings — are JSON the
/// host already parsed on the way in (the API server's bytes, the
/// operator's settings): they are spliced in as they are, not scanned again.
pub(super) fn validation_request(request: &AdmissionRequest, settings: &str) -> String {
    let mut out = String::with_capacity(request_json_capacity(request) + settings.len() + 32);
    out.push_str(r#"{"request":"#);
    write_request_json(request, &mut out);
    out.push_str(r#","settings":"#);
    out.push_str(settings);
    out.push('}');
    out
}

/// `{"request": <document>, "settings": <settings>}` for a raw policy. A
/// body in Kubewarden's envelope, `{"request": X}`, hands the policy X (as
/// Kubewarden's `/validate_raw` does); any other document is handed as is.
pub(super) fn raw_validation_request(document: &str, settings: &str) -> String {
    let request = envelope_content(document).map_or(document, RawValue::get);
    format!(r#"{{"request":{request},"settings":{settings}}}"#)
}

/// X, when `document` is exactly `{"request": X}`.
fn envelope_content(document: &str) -> Option<&RawValue> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Envelope<'a> {
        #[serde(borrow)]
        request: &'a RawValue,
    }
    serde_json::from_str::<Envelope<'_>>(document)
        .ok()
        .map(|e| e.request)
}

/// A policy's verdict, in Kubewarden's JSON.
#[derive(Deserialize)]
struct KubewardenResponse {
    accepted: bool,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    mutated_object: Option<Box<RawValue>>,
    #[serde(default)]
    audit_annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    warnings: Option<Vec<String>>,
}

impl KubewardenResponse {
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| {
            format!("the policy's response is not a Kubewarden ValidationResponse: {e}")
        })
    }

    fn into_verdict(self, mutated: Option<String>) -> ValidationResponse {
        ValidationResponse {
            allowed: self.accepted,
            message: self.message,
            code: self.code,
            warnings: self.warnings.unwrap_or_default(),
            audit_annotations: self
                .audit_annotations
                .unwrap_or_default()
                .into_iter()
                .collect(),
            mutated_object: mutated,
        }
    }
}

/// The verdict on an admission request. A mutation of a request without
/// an object is refused with Kubewarden's message.
pub(super) fn validation_response(
    bytes: &[u8],
    object_is_null: bool,
) -> Result<ValidationResponse, String> {
    let mut response = KubewardenResponse::parse(bytes)?;
    // `null` reads as no mutation.
    let mutated = response
        .mutated_object
        .take()
        .map(|raw| raw.get().to_owned());
    if mutated.is_some() && object_is_null {
        return Ok(ValidationResponse {
            allowed: false,
            message: Some(NULL_OBJECT_MUTATION.to_owned()),
            code: None,
            warnings: Vec::new(),
            audit_annotations: Vec::new(),
            mutated_object: None,
        });
    }
    Ok(response.into_verdict(mutated))
}

/// The verdict on a raw document. A mutated document is put back into the
/// envelope when the request came in one, so the patch is computed against
/// what was posted.
pub(super) fn raw_validation_response(
    bytes: &[u8],
    enveloped: bool,
) -> Result<ValidationResponse, String> {
    let mut response = KubewardenResponse::parse(bytes)?;
    let mutated = response.mutated_object.take().map(|raw| match enveloped {
        true => format!(r#"{{"request":{}}}"#, raw.get()),
        false => raw.get().to_owned(),
    });
    Ok(response.into_verdict(mutated))
}

/// Whether a raw body is in Kubewarden's `{"request": X}` envelope.
pub(super) fn is_enveloped(document: &str) -> bool {
    envelope_content(document).is_some()
}

/// The verdict on settings: `Ok`, or the policy's reason for refusing them.
pub(super) fn settings_response(bytes: &[u8]) -> Result<Result<(), String>, String> {
    #[derive(Deserialize)]
    struct SettingsValidationResponse {
        valid: bool,
        #[serde(default)]
        message: Option<String>,
    }
    let response: SettingsValidationResponse = serde_json::from_slice(bytes).map_err(|e| {
        format!("the policy's answer is not a Kubewarden SettingsValidationResponse: {e}")
    })?;
    Ok(match response.valid {
        true => Ok(()),
        false => Err(response
            .message
            .unwrap_or_else(|| "the policy gave no reason".to_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(object: Option<&str>) -> AdmissionRequest {
        let mut json = serde_json::json!({
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "DELETE", "userInfo": {"username": "alice", "groups": ["g"]},
            "namespace": "ns",
        });
        if let Some(object) = object {
            json["object"] = serde_json::from_str(object).unwrap();
        }
        crate::admission::parse_request(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn the_request_is_kubernetes_json_without_absent_fields() {
        let text = validation_request(&request(Some(r#"{"a": 1}"#)), r#"{"s":true}"#);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["settings"], serde_json::json!({"s": true}));
        let r = &value["request"];
        assert_eq!(r["resource"]["resource"], "pods");
        assert_eq!(r["userInfo"]["username"], "alice");
        assert_eq!(r["object"], serde_json::json!({"a": 1}));
        assert_eq!(r["operation"], "DELETE");
        for absent in ["subResource", "name", "oldObject", "options", "requestKind"] {
            assert!(r.get(absent).is_none(), "{absent}");
        }
    }

    #[test]
    fn a_mutation_without_an_object_is_refused_in_kubewardens_words() {
        let response = br#"{"accepted":true,"message":null,"code":null,
            "mutated_object":{"a":2},"audit_annotations":null,"warnings":null}"#;
        let verdict = validation_response(response, true).unwrap();
        assert!(!verdict.allowed);
        assert_eq!(verdict.message.as_deref(), Some(NULL_OBJECT_MUTATION));
        let verdict = validation_response(response, false).unwrap();
        assert!(verdict.allowed);
        assert_eq!(verdict.mutated_object.as_deref(), Some(r#"{"a":2}"#));
    }

    #[test]
    fn raw_bodies_are_unwrapped_and_mutations_rewrapped() {
        let text = raw_validation_request(r#"{"request": {"user": "tonio"}}"#, "{}");
        assert_eq!(text, r#"{"request":{"user": "tonio"},"settings":{}}"#);
        let text = raw_validation_request(r#"{"user": "tonio"}"#, "{}");
        assert_eq!(text, r#"{"request":{"user": "tonio"},"settings":{}}"#);
        let text = raw_validation_request(r#"{"request": 1, "uid": "u"}"#, "{}");
        assert_eq!(
            text,
            r#"{"request":{"request": 1, "uid": "u"},"settings":{}}"#
        );
        let verdict =
            raw_validation_response(br#"{"accepted":true,"mutated_object":{"u":1}}"#, true)
                .unwrap();
        assert_eq!(
            verdict.mutated_object.as_deref(),
            Some(r#"{"request":{"u":1}}"#)
        );
    }

    #[test]
    fn bad_answers_say_what_was_expected() {
        assert!(
            validation_response(b"nope", false)
                .unwrap_err()
                .contains("ValidationResponse")
        );
        assert_eq!(
            settings_response(br#"{"valid":false,"message":"m"}"#),
            Ok(Err("m".into()))
        );
        assert_eq!(settings_response(br#"{"valid":true}"#), Ok(Ok(())));
    }
}
