//! The object under review as Gatekeeper hands it to a template:
//! `input.review` (an AdmissionRequest, as Go's `admission/v1` types write
//! it) and `input.parameters` (the constraint's).

use serde_json::{Map, Value, json};

use super::matching::Candidate;

/// One review: the AdmissionRequest a template sees as `input.review`.
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    request: Map<String, Value>,
}

/// Why a document cannot be reviewed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// An AdmissionReview without a `request`.
    #[error("the AdmissionReview has no request")]
    NoRequest,
    /// A request with neither an object nor an old object.
    #[error("the AdmissionRequest has neither an object nor an oldObject to review")]
    NoObject,
    /// A DELETE without the deleted object (API servers before 1.15).
    #[error("oldObject cannot be nil for DELETE operations")]
    DeleteWithoutOldObject,
    /// An object whose `apiVersion` or `kind` is missing.
    #[error("the object has no {0}")]
    Incomplete(&'static str),
    /// Not a JSON object.
    #[error("not an object")]
    NotAnObject,
}

impl Review {
    /// The review of a document as `gator verify` reads a case's object: an
    /// `admission.k8s.io` AdmissionReview is its request; anything else is
    /// a plain object, reviewed as Gatekeeper's audit does.
    pub fn from_document(document: Value) -> Result<Self, ReviewError> {
        let is_review = document.get("kind").and_then(Value::as_str) == Some("AdmissionReview")
            && document
                .get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|version| version.starts_with("admission.k8s.io/"));
        if is_review {
            let request = match document.get("request") {
                Some(request @ Value::Object(_)) => request.clone(),
                _ => return Err(ReviewError::NoRequest),
            };
            Self::from_request(request)
        } else {
            Self::from_object(document)
        }
    }

    /// The review of an AdmissionRequest (a webhook's, or an
    /// AdmissionReview's `request`), normalised as Go's types write it:
    /// every non-optional field present, an absent object `null`. A DELETE
    /// reviews its old object as `object`, as Gatekeeper does.
    pub fn from_request(request: Value) -> Result<Self, ReviewError> {
        let Value::Object(mut request) = request else {
            return Err(ReviewError::NotAnObject);
        };
        let present = |request: &Map<String, Value>, key: &str| {
            request.get(key).is_some_and(|value| !value.is_null())
        };
        if !present(&request, "object") && !present(&request, "oldObject") {
            return Err(ReviewError::NoObject);
        }
        for (key, default) in [
            ("uid", json!("")),
            ("kind", json!({"group": "", "version": "", "kind": ""})),
            (
                "resource",
                json!({"group": "", "version": "", "resource": ""}),
            ),
            ("operation", json!("")),
            ("userInfo", json!({})),
            ("object", Value::Null),
            ("oldObject", Value::Null),
            ("options", Value::Null),
        ] {
            request.entry(key).or_insert(default);
        }
        if request.get("operation").and_then(Value::as_str) == Some("DELETE") {
            if !present(&request, "oldObject") {
                return Err(ReviewError::DeleteWithoutOldObject);
            }
            request["object"] = request["oldObject"].clone();
        }
        Ok(Self { request })
    }

    /// The review of a plain object, outside any admission request: the
    /// request Gatekeeper makes of it (kind, object, name, namespace; no
    /// operation, no user).
    pub fn from_object(object: Value) -> Result<Self, ReviewError> {
        if !object.is_object() {
            return Err(ReviewError::NotAnObject);
        }
        let text = |pointer: &str| {
            object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let api_version = text("/apiVersion");
        let kind = text("/kind");
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        if version.is_empty() {
            return Err(ReviewError::Incomplete("apiVersion"));
        }
        if kind.is_empty() {
            return Err(ReviewError::Incomplete("kind"));
        }
        let mut request = json!({
            "uid": "",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": "", "version": "", "resource": ""},
            "operation": "",
            "userInfo": {},
        });
        for (key, pointer) in [
            ("name", "/metadata/name"),
            ("namespace", "/metadata/namespace"),
        ] {
            if !text(pointer).is_empty() {
                request[key] = Value::from(text(pointer));
            }
        }
        request["object"] = object;
        request["oldObject"] = Value::Null;
        request["options"] = Value::Null;
        Self::from_request(request)
    }

    /// The request's namespace (where to look the Namespace up for a
    /// `namespaceSelector`), empty for cluster-scoped objects.
    pub fn namespace(&self) -> &str {
        self.request
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The request's operation (`""` for a plain object).
    pub fn operation(&self) -> &str {
        self.request
            .get("operation")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// What a constraint's `match` reads, with `namespace` (the request's
    /// Namespace object) when known.
    pub fn candidate<'a>(&'a self, namespace: Option<&'a Value>) -> Candidate<'a> {
        Candidate {
            object: self.request.get("object"),
            old_object: self.request.get("oldObject"),
            namespace,
        }
    }

    /// The template's `input`: `{"review": ..., "parameters": ...}`, the
    /// review carrying `namespaceObject` (the Namespace, or `null`).
    pub fn input(&self, parameters: &Value, namespace: Option<&Value>) -> Value {
        let mut review = self.request.clone();
        review.insert(
            "namespaceObject".into(),
            namespace.cloned().unwrap_or(Value::Null),
        );
        json!({"review": review, "parameters": parameters})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"}})
    }

    #[test]
    fn a_plain_object_is_reviewed_as_gatekeeper_writes_the_request() {
        let review = Review::from_document(pod()).unwrap();
        let input = review.input(&json!({"a": 1}), None);
        assert_eq!(
            input,
            json!({
                "review": {
                    "uid": "",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "", "resource": ""},
                    "name": "web",
                    "namespace": "shop",
                    "operation": "",
                    "userInfo": {},
                    "object": pod(),
                    "oldObject": null,
                    "options": null,
                    "namespaceObject": null,
                },
                "parameters": {"a": 1},
            })
        );
        assert_eq!(review.namespace(), "shop");
        let deployment =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
        let review = Review::from_object(deployment).unwrap();
        assert_eq!(
            review.input(&json!({}), None)["review"]["kind"],
            json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );
        assert_eq!(
            review.input(&json!({}), None)["review"].get("namespace"),
            None
        );
    }

    #[test]
    fn an_admission_review_is_its_request_and_a_delete_reviews_the_old_object() {
        let document = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": "u", "operation": "DELETE", "namespace": "shop", "oldObject": pod(), "userInfo": {"username": "alice"}},
        });
        let review = Review::from_document(document).unwrap();
        assert_eq!(review.operation(), "DELETE");
        let namespace = json!({"metadata": {"name": "shop"}});
        let input = review.input(&json!({}), Some(&namespace));
        assert_eq!(input["review"]["object"], pod());
        assert_eq!(input["review"]["oldObject"], pod());
        assert_eq!(input["review"]["userInfo"]["username"], "alice");
        assert_eq!(input["review"]["namespaceObject"], namespace);
        assert_eq!(input["review"]["options"], Value::Null);
        let candidate = review.candidate(None);
        assert_eq!(candidate.object, Some(&pod()));
    }

    #[test]
    fn what_cannot_be_reviewed_says_why() {
        let review = |value: Value| Review::from_document(value).unwrap_err();
        assert_eq!(
            review(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})),
            ReviewError::NoRequest
        );
        assert_eq!(
            review(
                json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"operation": "CREATE"}})
            ),
            ReviewError::NoObject
        );
        assert_eq!(
            Review::from_request(json!({"operation": "DELETE", "object": pod()})).unwrap_err(),
            ReviewError::DeleteWithoutOldObject
        );
        assert_eq!(
            review(json!({"kind": "Pod"})),
            ReviewError::Incomplete("apiVersion")
        );
        assert_eq!(
            review(json!({"apiVersion": "v1"})),
            ReviewError::Incomplete("kind")
        );
    }
}
