//! Kubernetes helpers.
//!
//! The full typed Kubernetes API is re-exported as
//! [`portcullis_sdk::k8s_openapi`](crate::k8s_openapi) (the `latest` API
//! version); [`AdmissionRequest::object_as`] parses a request's object into
//! any of its types. [`pod_spec`] finds the pod spec of every workload kind.

use serde_json::Value;
use serde_json::value::RawValue;

pub use k8s_openapi::api::core::v1::PodSpec;

use crate::json::{self, RawJson, error_message, raw_json_type};
use crate::request::AdmissionRequest;

/// What [`pod_spec`] looks into: an admission request or a bare object.
#[derive(Debug, Clone, Copy)]
pub enum ObjectSource<'a> {
    /// An admission request: its `object` is examined, and its `kind.kind`
    /// is used when the object does not say what kind it is.
    Request(&'a AdmissionRequest),
    /// A Kubernetes object as JSON text, which must carry its own `kind`.
    Json(&'a RawJson),
    /// A Kubernetes object (JSON), which must carry its own `kind`.
    Object(&'a Value),
}

impl<'a> From<&'a AdmissionRequest> for ObjectSource<'a> {
    fn from(request: &'a AdmissionRequest) -> Self {
        ObjectSource::Request(request)
    }
}

impl<'a> From<&'a RawJson> for ObjectSource<'a> {
    fn from(object: &'a RawJson) -> Self {
        ObjectSource::Json(object)
    }
}

impl<'a> From<&'a Value> for ObjectSource<'a> {
    fn from(object: &'a Value) -> Self {
        ObjectSource::Object(object)
    }
}

/// Where each workload kind keeps its pod spec.
fn pod_spec_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &["spec"],
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicationController"
        | "Job" => &["spec", "template", "spec"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => return None,
    })
}

/// The pod spec of a Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet,
/// ReplicationController, Job or CronJob (`spec.jobTemplate.spec.template.spec`).
///
/// The kind is the object's own `kind`, or, when the object has none, the
/// request's `kind.kind`. Returns:
///
/// * `Ok(Some(spec))` for a workload;
/// * `Ok(None)` for any other kind (a `Service`, ...), for a request without
///   an object (a `DELETE`), for an object without a `kind` (bare objects
///   only), and when the pod spec is absent or `null`;
/// * `Err(message)` when the object is malformed: not a JSON object, a
///   non-string `kind`, a non-object on the way to the pod spec, or a pod
///   spec that does not parse (e.g. `containers` is not a list). The message
///   says what and where, e.g. `cannot read the pod spec of the Deployment at
///   spec.template.spec: invalid type: string "nginx", expected a sequence`.
///
/// ```
/// use portcullis_sdk::k8s::pod_spec;
/// use portcullis_sdk::serde_json::json;
///
/// let cron_job = json!({
///     "apiVersion": "batch/v1",
///     "kind": "CronJob",
///     "spec": {"jobTemplate": {"spec": {"template": {"spec": {
///         "containers": [{"name": "backup", "image": "backup:1.2"}]
///     }}}}}
/// });
/// let spec = pod_spec(&cron_job).unwrap().unwrap();
/// assert_eq!(spec.containers[0].name, "backup");
///
/// assert!(pod_spec(&json!({"kind": "Service", "spec": {}})).unwrap().is_none());
/// ```
pub fn pod_spec<'a>(source: impl Into<ObjectSource<'a>>) -> Result<Option<PodSpec>, String> {
    // Only the members on the way to the pod spec are looked at; the rest of
    // the object is skipped over as text, never built.
    let converted;
    let (object, fallback_kind) = match source.into() {
        ObjectSource::Request(request) => match &request.object {
            None => return Ok(None),
            Some(object) => (object, Some(request.kind.kind.as_str())),
        },
        ObjectSource::Json(object) => (object, None),
        ObjectSource::Object(object) => {
            converted = RawJson::from_value(object);
            (&converted, None)
        }
    };
    if object.is_null() {
        return Ok(None);
    }
    let [kind, spec] = object
        .fields(["kind", "spec"])
        .map_err(|found| format!("the object is not a JSON object (found {found})"))?;
    let own_kind = match kind {
        None => None,
        Some(kind) => match serde_json::from_str::<std::borrow::Cow<str>>(kind.get()) {
            Ok(kind) => Some(kind).filter(|kind| !kind.is_empty()),
            Err(_) => {
                return Err(format!(
                    "the object's `kind` is not a string (found {})",
                    raw_json_type(kind)
                ));
            }
        },
    };
    let kind = match (&own_kind, fallback_kind) {
        (Some(kind), _) => kind.as_ref(),
        (None, Some(kind)) => kind,
        (None, None) => return Ok(None),
    };
    let Some(path) = pod_spec_path(kind) else {
        return Ok(None);
    };
    let Some(mut current) = spec else {
        return Ok(None);
    };
    for depth in 1..path.len() {
        let [next] = json::fields(current, [path[depth]]).map_err(|found| {
            format!(
                "cannot read the pod spec of the {kind}: `{}` is not an object (found {found})",
                path[..depth].join(".")
            )
        })?;
        match next {
            None => return Ok(None),
            Some(next) => current = next,
        }
    }
    parse_pod_spec(current).map(Some).map_err(|error| {
        format!(
            "cannot read the pod spec of the {kind} at {}: {}",
            path.join("."),
            error_message(&error)
        )
    })
}

fn parse_pod_spec(spec: &RawValue) -> serde_json::Result<PodSpec> {
    serde_json::from_str(spec.get())
}

/// How an error message names the JSON type of `value` ("a string", "an object", ...).
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn containers() -> Value {
        json!({"containers": [{"name": "app", "image": "nginx"}]})
    }

    /// Wraps `spec` at `path` (outermost first).
    fn nest(path: &[&str], spec: Value) -> Value {
        path.iter()
            .rev()
            .fold(spec, |inner, key| json!({ *key: inner }))
    }

    fn request(kind: &str, object: Value) -> AdmissionRequest {
        serde_json::from_value(json!({
            "uid": "1",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "operation": "CREATE",
            "object": object,
        }))
        .unwrap()
    }

    const WORKLOADS: [(&str, &[&str]); 8] = [
        ("Pod", &["spec"]),
        ("Deployment", &["spec", "template", "spec"]),
        ("ReplicaSet", &["spec", "template", "spec"]),
        ("StatefulSet", &["spec", "template", "spec"]),
        ("DaemonSet", &["spec", "template", "spec"]),
        ("ReplicationController", &["spec", "template", "spec"]),
        ("Job", &["spec", "template", "spec"]),
        (
            "CronJob",
            &["spec", "jobTemplate", "spec", "template", "spec"],
        ),
    ];

    #[test]
    fn finds_the_pod_spec_of_every_workload_kind() {
        for (kind, path) in WORKLOADS {
            let mut object = nest(path, containers());
            object["kind"] = json!(kind);
            object["metadata"] = json!({"name": "x"});

            let spec = pod_spec(&object)
                .unwrap()
                .unwrap_or_else(|| panic!("{kind}"));
            assert_eq!(spec.containers[0].image.as_deref(), Some("nginx"), "{kind}");

            // Through a request, with the kind on the object ...
            let spec = pod_spec(&request(kind, object.clone())).unwrap().unwrap();
            assert_eq!(spec.containers[0].name, "app", "{kind}");

            // ... and with only the request's kind (Kubewarden's fixtures omit it).
            object.as_object_mut().unwrap().remove("kind");
            let spec = pod_spec(&request(kind, object)).unwrap().unwrap();
            assert_eq!(spec.containers[0].name, "app", "{kind}");
        }
    }

    #[test]
    fn the_objects_own_kind_wins() {
        // A Pod-shaped object sent with a Deployment request kind: the object says Pod.
        let object = json!({"kind": "Pod", "spec": containers()});
        let spec = pod_spec(&request("Deployment", object)).unwrap();
        assert!(spec.is_some());
    }

    #[test]
    fn other_kinds_have_no_pod_spec() {
        let service = json!({"kind": "Service", "spec": {"type": "LoadBalancer"}});
        assert_eq!(pod_spec(&service).unwrap(), None);
        assert_eq!(pod_spec(&request("Service", service)).unwrap(), None);
        // A bare object without a kind cannot be classified.
        assert_eq!(pod_spec(&json!({"spec": containers()})).unwrap(), None);
    }

    #[test]
    fn missing_pieces_mean_no_pod_spec() {
        let mut delete = request("Pod", Value::Null);
        delete.operation = crate::Operation::Delete;
        assert_eq!(pod_spec(&delete).unwrap(), None);
        assert_eq!(pod_spec(&json!({"kind": "Deployment"})).unwrap(), None);
        assert_eq!(
            pod_spec(&json!({"kind": "Deployment", "spec": {"template": null}})).unwrap(),
            None
        );
    }

    #[test]
    fn malformed_objects_are_errors() {
        assert_eq!(
            pod_spec(&request("Pod", json!("nginx"))).unwrap_err(),
            "the object is not a JSON object (found a string)"
        );
        assert_eq!(
            pod_spec(&json!({"kind": 7})).unwrap_err(),
            "the object's `kind` is not a string (found a number)"
        );
        assert_eq!(
            pod_spec(&json!({"kind": "Deployment", "spec": {"template": []}})).unwrap_err(),
            "cannot read the pod spec of the Deployment: `spec.template` is not an object (found an array)"
        );
        assert_eq!(
            pod_spec(&json!({"kind": "Deployment", "spec": {"template": {"spec": {"containers": "nginx"}}}}))
                .unwrap_err(),
            "cannot read the pod spec of the Deployment at spec.template.spec: invalid type: string \"nginx\", expected a sequence"
        );
    }

    #[test]
    fn request_object_as_parses_typed_objects() {
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::core::v1::Pod;

        let pod = request(
            "Pod",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": containers()}),
        );
        let parsed: Pod = pod.object_as().unwrap().unwrap();
        assert_eq!(parsed.metadata.name.as_deref(), Some("p"));
        assert_eq!(pod.old_object_as::<Pod>().unwrap(), None);

        let error = pod.object_as::<Deployment>().unwrap_err();
        assert!(
            error.starts_with("cannot parse the request's `object` as a Deployment: invalid value: string \"v1\", expected apps/v1"),
            "{error}"
        );
    }
}
