//! The admission request a policy decides on, as an SDK-native model.
//!
//! [`AdmissionRequest`] mirrors the WIT `admission-request` record, holds the
//! objects as [`RawJson`] (checked JSON text, parsed on demand into whatever
//! model the policy needs), and deserializes from Kubernetes' own (camelCase)
//! JSON, so a Kubewarden-style fixture file — a bare `AdmissionRequest` —
//! parses directly.

use std::collections::BTreeMap;
use std::fmt;

use crate::bindings::wit;
use crate::json::{RawJson, error_message};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The operation the API server is admitting.
///
/// Serialized as Kubernetes spells it: `"CREATE"`, `"UPDATE"`, `"DELETE"`,
/// `"CONNECT"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// An object is being created.
    Create,
    /// An existing object is being replaced or patched.
    Update,
    /// An object is being deleted.
    Delete,
    /// A connection to a sub-resource (`pods/exec`, `pods/portforward`, ...).
    Connect,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        })
    }
}

impl From<wit::Operation> for Operation {
    fn from(operation: wit::Operation) -> Self {
        match operation {
            wit::Operation::Create => Operation::Create,
            wit::Operation::Update => Operation::Update,
            wit::Operation::Delete => Operation::Delete,
            wit::Operation::Connect => Operation::Connect,
        }
    }
}

impl From<Operation> for wit::Operation {
    fn from(operation: Operation) -> Self {
        match operation {
            Operation::Create => wit::Operation::Create,
            Operation::Update => wit::Operation::Update,
            Operation::Delete => wit::Operation::Delete,
            Operation::Connect => wit::Operation::Connect,
        }
    }
}

/// A Kubernetes API group, version and kind, e.g. `apps`/`v1`/`Deployment`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct GroupVersionKind {
    /// API group; empty for the core group (`Pod`, `Service`, ...).
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Pod`.
    pub kind: String,
}

impl From<wit::GroupVersionKind> for GroupVersionKind {
    fn from(gvk: wit::GroupVersionKind) -> Self {
        GroupVersionKind {
            group: gvk.group,
            version: gvk.version,
            kind: gvk.kind,
        }
    }
}

impl From<&GroupVersionKind> for wit::GroupVersionKind {
    fn from(gvk: &GroupVersionKind) -> Self {
        wit::GroupVersionKind {
            group: gvk.group.clone(),
            version: gvk.version.clone(),
            kind: gvk.kind.clone(),
        }
    }
}

/// A Kubernetes API group, version and resource, e.g. `apps`/`v1`/`deployments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct GroupVersionResource {
    /// API group; empty for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Resource (plural, lower case), e.g. `deployments`.
    pub resource: String,
}

impl From<wit::GroupVersionResource> for GroupVersionResource {
    fn from(gvr: wit::GroupVersionResource) -> Self {
        GroupVersionResource {
            group: gvr.group,
            version: gvr.version,
            resource: gvr.resource,
        }
    }
}

impl From<&GroupVersionResource> for wit::GroupVersionResource {
    fn from(gvr: &GroupVersionResource) -> Self {
        wit::GroupVersionResource {
            group: gvr.group.clone(),
            version: gvr.version.clone(),
            resource: gvr.resource.clone(),
        }
    }
}

/// The user on whose behalf the API server sends the request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct UserInfo {
    /// The name that uniquely identifies the user.
    pub username: String,
    /// A unique value that identifies the user across time; may be empty.
    pub uid: String,
    /// The groups the user belongs to.
    pub groups: Vec<String>,
    /// Extra attributes provided by the authenticator.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl From<wit::UserInfo> for UserInfo {
    fn from(user: wit::UserInfo) -> Self {
        UserInfo {
            username: user.username,
            uid: user.uid,
            groups: user.groups,
            extra: user.extra.into_iter().collect(),
        }
    }
}

impl From<&UserInfo> for wit::UserInfo {
    fn from(user: &UserInfo) -> Self {
        wit::UserInfo {
            username: user.username.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
            extra: user
                .extra
                .iter()
                .map(|(key, values)| (key.clone(), values.clone()))
                .collect(),
        }
    }
}

/// A Kubernetes `AdmissionRequest` (admission.k8s.io/v1) with its objects
/// as [`RawJson`]: parse them with [`object_as`](Self::object_as) (into a
/// typed model, or a [`serde_json::Value`]) or [`pod_spec`](Self::pod_spec).
///
/// Deserializes from the JSON Kubernetes sends (camelCase field names);
/// `subResource`, `requestKind`, `requestResource`, `requestSubResource`,
/// `name`, `namespace`, `object`, `oldObject`, `options` and `dryRun` may be
/// absent (or `null`), and so may `uid`, `resource` and `userInfo`, which is
/// convenient for hand-written test fixtures.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Identifier of this admission call.
    #[serde(default)]
    pub uid: String,
    /// The fully-qualified kind of the object being submitted.
    pub kind: GroupVersionKind,
    /// The fully-qualified resource being requested.
    #[serde(default)]
    pub resource: GroupVersionResource,
    /// The sub-resource being requested, if any (e.g. `status`, `scale`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_resource: Option<String>,
    /// The kind of the original API request, when it differs from `kind`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_kind: Option<GroupVersionKind>,
    /// The resource of the original API request, when it differs from `resource`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_resource: Option<GroupVersionResource>,
    /// The sub-resource of the original API request, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_sub_resource: Option<String>,
    /// Name of the object; absent when the client relies on `generateName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace of the object; absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// What is being done to the object.
    pub operation: Operation,
    /// Who is doing it.
    #[serde(default)]
    pub user_info: UserInfo,
    /// The object as it will be stored; absent for `DELETE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<RawJson>,
    /// The existing object, present for `UPDATE` and `DELETE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_object: Option<RawJson>,
    /// True when the request will not be persisted (`kubectl --dry-run=server`).
    #[serde(default, deserialize_with = "null_as_false")]
    pub dry_run: bool,
    /// The operation options, e.g. a `CreateOptions` document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<RawJson>,
}

fn null_as_false<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(deserializer)?.unwrap_or(false))
}

impl AdmissionRequest {
    /// Parses the submitted object (`object`) into `T`, e.g. a
    /// [`k8s_openapi::api::core::v1::Pod`], a struct of only the fields the
    /// policy reads (cheapest), or a [`serde_json::Value`].
    ///
    /// Returns `Ok(None)` when the request carries no object (a `DELETE`),
    /// and an error naming `T` when the object does not have `T`'s shape.
    pub fn object_as<T: DeserializeOwned>(&self) -> Result<Option<T>, String> {
        parse_optional(self.object.as_ref(), "object")
    }

    /// Parses the existing object (`oldObject`) into `T`; see
    /// [`object_as`](Self::object_as).
    pub fn old_object_as<T: DeserializeOwned>(&self) -> Result<Option<T>, String> {
        parse_optional(self.old_object.as_ref(), "oldObject")
    }

    /// The pod spec of the submitted object, for every workload kind; see
    /// [`k8s::pod_spec`](crate::k8s::pod_spec).
    pub fn pod_spec(&self) -> Result<Option<crate::k8s::PodSpec>, String> {
        crate::k8s::pod_spec(self)
    }
}

fn parse_optional<T: DeserializeOwned>(
    document: Option<&RawJson>,
    field: &str,
) -> Result<Option<T>, String> {
    match document {
        None => Ok(None),
        Some(document) if document.is_null() => Ok(None),
        Some(document) => document.parse().map(Some).map_err(|error| {
            format!(
                "cannot parse the request's `{field}` as a {}: {}",
                short_type_name::<T>(),
                error_message(&error)
            )
        }),
    }
}

/// `k8s_openapi::api::core::v1::Pod` -> `Pod`, `Vec<foo::Bar>` -> `Vec<foo::Bar>`.
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    match base.rfind("::") {
        Some(index) => &full[index + 2..],
        None => full,
    }
}

impl TryFrom<wit::AdmissionRequest> for AdmissionRequest {
    type Error = String;

    /// Converts the request the host sent, parsing its JSON documents.
    /// Fails, naming the field, when one of them is not valid JSON.
    fn try_from(request: wit::AdmissionRequest) -> Result<Self, String> {
        Ok(AdmissionRequest {
            uid: request.uid,
            kind: request.kind.into(),
            resource: request.resource.into(),
            sub_resource: request.sub_resource,
            request_kind: request.request_kind.map(Into::into),
            request_resource: request.request_resource.map(Into::into),
            request_sub_resource: request.request_sub_resource,
            name: request.name,
            namespace: request.namespace,
            operation: request.operation.into(),
            user_info: request.user_info.into(),
            object: parse_json_field(request.object, "object")?,
            old_object: parse_json_field(request.old_object, "oldObject")?,
            dry_run: request.dry_run,
            options: parse_json_field(request.options, "options")?,
        })
    }
}

fn parse_json_field(text: Option<String>, field: &str) -> Result<Option<RawJson>, String> {
    match text {
        None => Ok(None),
        Some(text) => match RawJson::from_string(text) {
            Ok(document) if document.is_null() => Ok(None),
            Ok(document) => Ok(Some(document)),
            Err(error) => Err(format!(
                "invalid admission request: `{field}` is not valid JSON: {error}"
            )),
        },
    }
}

impl From<&AdmissionRequest> for wit::AdmissionRequest {
    /// Converts to the form the host sends, serializing the objects as JSON text.
    fn from(request: &AdmissionRequest) -> Self {
        wit::AdmissionRequest {
            uid: request.uid.clone(),
            kind: (&request.kind).into(),
            resource: (&request.resource).into(),
            sub_resource: request.sub_resource.clone(),
            request_kind: request.request_kind.as_ref().map(Into::into),
            request_resource: request.request_resource.as_ref().map(Into::into),
            request_sub_resource: request.request_sub_resource.clone(),
            name: request.name.clone(),
            namespace: request.namespace.clone(),
            operation: request.operation.into(),
            user_info: (&request.user_info).into(),
            object: request.object.as_ref().map(|o| o.as_str().to_owned()),
            old_object: request.old_object.as_ref().map(|o| o.as_str().to_owned()),
            dry_run: request.dry_run,
            options: request.options.as_ref().map(|o| o.as_str().to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Kubewarden's `statefulset_with_privileged_container.json`, trimmed:
    /// no `requestResource`, `name`, `namespace`, `dryRun`, `oldObject`, `options`.
    const MINIMAL: &str = r#"{
      "uid": "1299d386-525b-4032-98ae-1949f69f9cfc",
      "kind": {"kind": "StatefulSet", "version": "v1", "group": "apps"},
      "resource": {"group": "apps", "version": "v1", "resource": "statefulsets"},
      "operation": "CREATE",
      "requestKind": {"group": "apps", "version": "v1", "kind": "StatefulSet"},
      "userInfo": {"username": "alice", "uid": "alice-uid", "groups": ["system:authenticated"]},
      "object": {"metadata": {"name": "nginx"}, "spec": {"template": {"spec": {"containers": []}}}}
    }"#;

    #[test]
    fn parses_a_request_with_optional_fields_missing() {
        let request: AdmissionRequest = serde_json::from_str(MINIMAL).unwrap();
        assert_eq!(request.uid, "1299d386-525b-4032-98ae-1949f69f9cfc");
        assert_eq!(request.kind.group, "apps");
        assert_eq!(request.kind.kind, "StatefulSet");
        assert_eq!(request.resource.resource, "statefulsets");
        assert_eq!(request.request_kind.as_ref().unwrap().kind, "StatefulSet");
        assert_eq!(request.request_resource, None);
        assert_eq!(request.sub_resource, None);
        assert_eq!(request.name, None);
        assert_eq!(request.namespace, None);
        assert_eq!(request.operation, Operation::Create);
        assert_eq!(request.user_info.username, "alice");
        assert_eq!(request.user_info.groups, ["system:authenticated"]);
        assert!(request.user_info.extra.is_empty());
        assert_eq!(
            request.object.as_ref().unwrap().to_value()["metadata"]["name"],
            "nginx"
        );
        assert_eq!(request.old_object, None);
        assert!(!request.dry_run);
        assert_eq!(request.options, None);
    }

    #[test]
    fn parses_a_full_request() {
        let request: AdmissionRequest = serde_json::from_value(json!({
            "uid": "u",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "subResource": "status",
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "requestSubResource": "status",
            "name": "nginx",
            "namespace": "default",
            "operation": "UPDATE",
            "userInfo": {
                "username": "bob", "uid": "42", "groups": ["a", "b"],
                "extra": {"scopes": ["x", "y"]}
            },
            "object": {"kind": "Pod"},
            "oldObject": {"kind": "Pod", "metadata": {}},
            "dryRun": true,
            "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}
        }))
        .unwrap();
        assert_eq!(request.sub_resource.as_deref(), Some("status"));
        assert_eq!(request.request_sub_resource.as_deref(), Some("status"));
        assert_eq!(request.request_resource.as_ref().unwrap().resource, "pods");
        assert_eq!(request.operation, Operation::Update);
        assert_eq!(request.user_info.extra["scopes"], ["x", "y"]);
        assert_eq!(
            request.old_object,
            Some(json!({"kind": "Pod", "metadata": {}}).into())
        );
        assert!(request.dry_run);
        assert_eq!(
            request.options.as_ref().unwrap().to_value()["kind"],
            "UpdateOptions"
        );
    }

    #[test]
    fn null_objects_and_dry_run_are_absent() {
        let request: AdmissionRequest = serde_json::from_value(json!({
            "kind": {"kind": "Pod"},
            "operation": "DELETE",
            "object": null,
            "oldObject": null,
            "dryRun": null,
            "options": null
        }))
        .unwrap();
        assert_eq!(request.object, None);
        assert_eq!(request.old_object, None);
        assert!(!request.dry_run);
        assert_eq!(request.options, None);
        assert_eq!(request.kind.group, "");
    }

    #[test]
    fn operations_use_kubernetes_spelling() {
        for (text, operation) in [
            ("CREATE", Operation::Create),
            ("UPDATE", Operation::Update),
            ("DELETE", Operation::Delete),
            ("CONNECT", Operation::Connect),
        ] {
            assert_eq!(
                serde_json::from_value::<Operation>(json!(text)).unwrap(),
                operation
            );
            assert_eq!(serde_json::to_value(operation).unwrap(), json!(text));
            assert_eq!(operation.to_string(), text);
            assert_eq!(Operation::from(wit::Operation::from(operation)), operation);
        }
        assert!(serde_json::from_value::<Operation>(json!("create")).is_err());
    }

    #[test]
    fn round_trips_through_the_wit_record() {
        let mut request: AdmissionRequest = serde_json::from_str(MINIMAL).unwrap();
        request.old_object = Some(json!({"a": [1, 2]}).into());
        request.options = Some(json!({"kind": "CreateOptions"}).into());
        request.user_info.extra.insert("k".into(), vec!["v".into()]);
        let wire = wit::AdmissionRequest::from(&request);
        assert_eq!(wire.old_object.as_deref(), Some(r#"{"a":[1,2]}"#));
        assert_eq!(
            wire.user_info.extra,
            [("k".to_string(), vec!["v".to_string()])]
        );
        assert_eq!(AdmissionRequest::try_from(wire).unwrap(), request);
    }

    #[test]
    fn invalid_json_in_the_wit_record_is_an_error() {
        let request: AdmissionRequest = serde_json::from_str(MINIMAL).unwrap();
        let mut wire = wit::AdmissionRequest::from(&request);
        wire.old_object = Some("[1,".into());
        assert_eq!(
            AdmissionRequest::try_from(wire).unwrap_err(),
            "invalid admission request: `oldObject` is not valid JSON: EOF while parsing a value at line 1 column 3"
        );
    }

    #[test]
    fn serializes_back_to_kubernetes_json() {
        let request: AdmissionRequest = serde_json::from_str(MINIMAL).unwrap();
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["requestKind"]["kind"], "StatefulSet");
        assert_eq!(json["userInfo"]["username"], "alice");
        assert_eq!(json["dryRun"], false);
        assert!(json.get("oldObject").is_none());
        assert_eq!(
            serde_json::from_value::<AdmissionRequest>(json).unwrap(),
            request
        );
    }

    #[test]
    fn short_type_names() {
        assert_eq!(short_type_name::<k8s_openapi::api::core::v1::Pod>(), "Pod");
        assert_eq!(short_type_name::<u8>(), "u8");
    }
}
