//! A policy's decision: [`Verdict`] and the functions that build one.
//!
//! ```
//! use portcullis_sdk::{accept, reject, reject_with_code};
//!
//! let ok = accept().with_warning("image uses the `latest` tag");
//! let no = reject("Privileged container is not allowed");
//! let bad = reject_with_code("cannot parse the object", 400)
//!     .with_audit_annotation("policy", "pod-privileged");
//! assert!(ok.allowed && !no.allowed && bad.code == Some(400));
//! ```

use serde::Serialize;
use serde_json::Value;

use crate::bindings::wit;

/// A policy's verdict on a request or document.
///
/// Build one with [`accept`], [`reject`], [`reject_with_code`] or [`mutate`],
/// then add [warnings](Verdict::with_warning) and
/// [audit annotations](Verdict::with_audit_annotation).
#[derive(Debug, Clone, PartialEq)]
#[must_use = "a verdict does nothing unless it is returned"]
pub struct Verdict {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Why it was rejected, shown to the user by `kubectl`.
    pub message: Option<String>,
    /// The HTTP status code to report with a rejection (e.g. 400, 403).
    pub code: Option<u16>,
    /// Warnings returned to the client, even when the request is admitted.
    pub warnings: Vec<String>,
    /// Annotations recorded in the API server's audit log, as key and value.
    pub audit_annotations: Vec<(String, String)>,
    /// The object the policy wants stored instead of the submitted one.
    pub mutated_object: Option<Value>,
}

/// Admits the request.
pub fn accept() -> Verdict {
    Verdict {
        allowed: true,
        message: None,
        code: None,
        warnings: Vec::new(),
        audit_annotations: Vec::new(),
        mutated_object: None,
    }
}

/// Rejects the request with a message for the user; the host picks the
/// HTTP status code.
pub fn reject(message: impl Into<String>) -> Verdict {
    Verdict {
        allowed: false,
        message: Some(message.into()),
        ..accept()
    }
}

/// Rejects the request with a message and an HTTP status code (e.g. 400 for
/// a malformed object, 403 for a forbidden one).
pub fn reject_with_code(message: impl Into<String>, code: u16) -> Verdict {
    Verdict {
        code: Some(code),
        ..reject(message)
    }
}

/// Admits the request, asking the host to store `object` instead of the
/// submitted object. The host only honours it for policies the operator
/// allowed to mutate (and whose [`Metadata`](crate::Metadata) says `mutating`).
///
/// If `object` cannot be serialized to JSON (a map with non-string keys, a
/// failing `Serialize` impl), the verdict is a rejection with code 500 that
/// explains why, rather than a panic.
pub fn mutate(object: impl Serialize) -> Verdict {
    match serde_json::to_value(object) {
        Ok(object) => Verdict {
            mutated_object: Some(object),
            ..accept()
        },
        Err(error) => reject_with_code(
            format!("policy error: cannot serialize the mutated object: {error}"),
            500,
        ),
    }
}

impl Verdict {
    /// Adds a warning returned to the client (shown by `kubectl`).
    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }

    /// Adds an annotation recorded in the API server's audit log.
    pub fn with_audit_annotation(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.audit_annotations.push((key.into(), value.into()));
        self
    }
}

impl From<Verdict> for wit::ValidationResponse {
    fn from(verdict: Verdict) -> Self {
        wit::ValidationResponse {
            allowed: verdict.allowed,
            message: verdict.message,
            code: verdict.code,
            warnings: verdict.warnings,
            audit_annotations: verdict.audit_annotations,
            mutated_object: verdict.mutated_object.as_ref().map(Value::to_string),
        }
    }
}

impl TryFrom<wit::ValidationResponse> for Verdict {
    type Error = String;

    /// Converts a response back, parsing `mutated-object`; fails when it is
    /// not valid JSON (which a response built by this SDK never is).
    fn try_from(response: wit::ValidationResponse) -> Result<Self, String> {
        let mutated_object = match response.mutated_object {
            None => None,
            Some(text) => Some(serde_json::from_str(&text).map_err(|error| {
                format!("the response's mutated object is not valid JSON: {error}")
            })?),
        };
        Ok(Verdict {
            allowed: response.allowed,
            message: response.message,
            code: response.code,
            warnings: response.warnings,
            audit_annotations: response.audit_annotations,
            mutated_object,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builders_fill_the_expected_fields() {
        let verdict = accept();
        assert!(verdict.allowed);
        assert_eq!(verdict.message, None);
        assert_eq!(verdict.code, None);

        let verdict = reject("nope");
        assert!(!verdict.allowed);
        assert_eq!(verdict.message.as_deref(), Some("nope"));
        assert_eq!(verdict.code, None);

        let verdict = reject_with_code("bad", 400)
            .with_warning("w1")
            .with_warning("w2")
            .with_audit_annotation("k", "v");
        assert!(!verdict.allowed);
        assert_eq!(verdict.code, Some(400));
        assert_eq!(verdict.warnings, ["w1", "w2"]);
        assert_eq!(
            verdict.audit_annotations,
            [("k".to_string(), "v".to_string())]
        );
    }

    #[test]
    fn mutate_accepts_with_the_object() {
        let verdict = mutate(json!({"kind": "Pod", "metadata": {"labels": {"a": "b"}}}));
        assert!(verdict.allowed);
        assert_eq!(
            verdict.mutated_object.unwrap()["metadata"]["labels"]["a"],
            "b"
        );
    }

    #[test]
    fn mutate_with_an_unserializable_object_rejects() {
        let mut map = std::collections::HashMap::new();
        map.insert((1, 2), "tuple keys are not JSON");
        let verdict = mutate(map);
        assert!(!verdict.allowed);
        assert_eq!(verdict.code, Some(500));
        assert!(
            verdict
                .message
                .as_deref()
                .unwrap()
                .starts_with("policy error: cannot serialize"),
            "{verdict:?}"
        );
    }

    #[test]
    fn converts_to_the_wit_response_and_back() {
        let verdict = mutate(json!({"spec": {"replicas": 3}}))
            .with_warning("careful")
            .with_audit_annotation("policy", "test");
        let response = wit::ValidationResponse::from(verdict.clone());
        assert!(response.allowed);
        assert_eq!(response.message, None);
        assert_eq!(response.code, None);
        assert_eq!(response.warnings, ["careful"]);
        assert_eq!(
            response.audit_annotations,
            [("policy".to_string(), "test".to_string())]
        );
        assert_eq!(
            response.mutated_object.as_deref(),
            Some(r#"{"spec":{"replicas":3}}"#)
        );
        assert_eq!(Verdict::try_from(response).unwrap(), verdict);

        let response = wit::ValidationResponse::from(reject_with_code("denied", 403));
        assert!(!response.allowed);
        assert_eq!(response.message.as_deref(), Some("denied"));
        assert_eq!(response.code, Some(403));
        assert_eq!(response.mutated_object, None);
    }

    #[test]
    fn a_response_with_invalid_mutated_json_does_not_convert() {
        let mut response = wit::ValidationResponse::from(accept());
        response.mutated_object = Some("{oops".into());
        let error = Verdict::try_from(response).unwrap_err();
        assert!(error.contains("not valid JSON"), "{error}");
    }
}
