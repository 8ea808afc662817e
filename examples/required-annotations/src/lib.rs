//! Makes sure resources carry a set of annotations: a mutating Portcullis
//! policy built with `portcullis-sdk`.
//!
//! The operator lists the annotations every resource must carry, with their
//! values, in the `requiredAnnotations` setting. For a resource of any kind
//! that is created or updated:
//!
//! * when some of them are missing, the request is accepted with a mutated
//!   object that adds them and is otherwise identical to the submitted one;
//! * when one is present with another value, the request is rejected (code
//!   400) with a message naming the key, the expected and the actual value:
//!   silently overwriting a value someone set on purpose would hide a
//!   conflict the author of the resource has to settle;
//! * when all are present with the right values, the request is accepted
//!   unchanged.
//!
//! Requests without an object (deletions) are accepted. Raw JSON documents
//! (`validate-raw`) are handled the same way, through their
//! `metadata.annotations`.
//!
//! Objects are handled as untyped JSON rather than typed Kubernetes structs,
//! so that resources of any kind, custom resources included, come back with
//! every field they were submitted with.

use std::collections::BTreeMap;

use portcullis_sdk::k8s::json_type;
use portcullis_sdk::prelude::*;
use portcullis_sdk::serde_json::{Map, Value};
use serde::Deserialize;

/// The policy's settings, e.g.
/// `{"requiredAnnotations": {"fluxcd.io/cat": "felix"}}`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RequiredAnnotationsSettings {
    /// The annotations every resource must carry: key and value.
    pub required_annotations: BTreeMap<String, String>,
}

impl portcullis_sdk::Settings for RequiredAnnotationsSettings {
    fn validate(&self) -> Result<(), String> {
        if self.required_annotations.is_empty() {
            return Err("requiredAnnotations must list at least one annotation, \
                 e.g. {\"requiredAnnotations\": {\"owner\": \"team-a\"}}"
                .into());
        }
        // A key the API server refuses would make every mutated object
        // invalid: better to refuse the settings when the policy is loaded.
        for key in self.required_annotations.keys() {
            validate_annotation_key(key).map_err(|reason| {
                format!(
                    "requiredAnnotations: {} is not a valid annotation key: {reason}",
                    quote(key)
                )
            })?;
        }
        Ok(())
    }
}

/// The required-annotations policy.
pub struct RequiredAnnotations;

impl Policy for RequiredAnnotations {
    type Settings = RequiredAnnotationsSettings;

    fn metadata() -> Metadata {
        Metadata::new(
            "Adds the annotations listed in the `requiredAnnotations` setting to resources \
             of any kind that lack them, and rejects resources that carry one of them with \
             a different value. Also applies to raw JSON documents with \
             `metadata.annotations`.",
        )
        .mutating(true)
        .rule(
            Rule::new()
                .api_groups(["*"])
                .api_versions(["*"])
                .resources(["*"])
                .operations([Operation::Create, Operation::Update]),
        )
    }

    fn validate(request: &AdmissionRequest, settings: &RequiredAnnotationsSettings) -> Verdict {
        match &request.object {
            // A deletion: there is nothing to annotate.
            None => accept(),
            // The policy may hand back a modified copy: it needs the whole tree.
            Some(object) => enforce(&object.to_value(), "object", settings),
        }
    }

    fn validate_raw(document: &Value, settings: &RequiredAnnotationsSettings) -> Verdict {
        enforce(document, "document", settings)
    }
}

portcullis_sdk::export_policy!(RequiredAnnotations);

/// Checks `object`'s annotations against the settings: rejects conflicting
/// values, adds missing annotations, accepts a compliant object unchanged.
/// `what` names the object in error messages (`object` or `document`).
fn enforce(object: &Value, what: &str, settings: &RequiredAnnotationsSettings) -> Verdict {
    let annotations = match annotations(object, what) {
        Ok(annotations) => annotations,
        Err(error) => return reject_with_code(error, 400),
    };
    let mut conflicts = Vec::new();
    let mut missing = Vec::new();
    for (key, expected) in &settings.required_annotations {
        match annotations.and_then(|annotations| annotations.get(key)) {
            // Kubernetes reads a null annotation value as absent.
            None | Some(Value::Null) => missing.push((key, expected)),
            Some(Value::String(actual)) if actual == expected => {}
            Some(actual) => conflicts.push(format!(
                "annotation {} must be {}, found {actual}",
                quote(key),
                quote(expected)
            )),
        }
    }
    if !conflicts.is_empty() {
        return reject_with_code(conflicts.join("; "), 400);
    }
    if missing.is_empty() {
        return accept();
    }
    let mut mutated = object.clone();
    let annotations = annotations_mut(&mut mutated);
    for (key, value) in missing {
        annotations.insert(key.clone(), Value::String(value.clone()));
    }
    mutate(mutated)
}

/// The object's `metadata.annotations`, `None` when either is absent or null;
/// an error when the object does not have the shape of a Kubernetes object.
fn annotations<'a>(
    object: &'a Value,
    what: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    let Value::Object(fields) = object else {
        return Err(format!(
            "the {what} is not a JSON object (found {})",
            json_type(object)
        ));
    };
    let metadata = match fields.get("metadata") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(metadata)) => metadata,
        Some(other) => {
            return Err(format!(
                "the {what}'s `metadata` is not an object (found {})",
                json_type(other)
            ));
        }
    };
    match metadata.get("annotations") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(annotations)) => Ok(Some(annotations)),
        Some(other) => Err(format!(
            "the {what}'s `metadata.annotations` is not an object (found {})",
            json_type(other)
        )),
    }
}

/// `metadata.annotations` of an object [`annotations`] accepted, created
/// when absent or null.
fn annotations_mut(object: &mut Value) -> &mut Map<String, Value> {
    let mut current = object;
    for field in ["metadata", "annotations"] {
        let Value::Object(fields) = current else {
            unreachable!("annotations() checked the shape of the object");
        };
        let next = fields
            .entry(field)
            .or_insert_with(|| Value::Object(Map::new()));
        if next.is_null() {
            *next = Value::Object(Map::new());
        }
        current = next;
    }
    match current {
        Value::Object(annotations) => annotations,
        _ => unreachable!("annotations() checked the shape of the object"),
    }
}

/// Checks a Kubernetes annotation key: an optional DNS subdomain prefix and
/// `/`, then a name of at most 63 letters, digits, `-`, `_` and `.` that
/// starts and ends with a letter or digit.
fn validate_annotation_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("the prefix before `/` is empty".into());
        }
        if prefix.len() > 253 {
            return Err("the prefix is longer than 253 characters".into());
        }
        let is_label = |label: &str| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        };
        if !prefix.split('.').all(is_label) {
            return Err(format!(
                "the prefix {} is not a DNS subdomain (lower case letters, digits, `-` and `.`, \
                 starting and ending with a letter or digit)",
                quote(prefix)
            ));
        }
    }
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > 63 {
        return Err("the name is longer than 63 characters".into());
    }
    let bytes = name.as_bytes();
    let valid = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if !valid {
        return Err(format!(
            "the name {} must consist of letters, digits, `-`, `_` and `.`, and start and end \
             with a letter or digit",
            quote(name)
        ));
    }
    Ok(())
}

/// A string as a JSON string literal, so that quotes and control characters
/// in keys and values cannot garble the message.
fn quote(text: &str) -> String {
    Value::from(text).to_string()
}

#[cfg(test)]
mod tests;
