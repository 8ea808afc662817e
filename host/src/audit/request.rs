//! An existing object as the admission request that would create it now.
//!
//! The audit asks each policy what it would say to a `CREATE` of the object
//! as it is stored (as Kubewarden's audit scanner does): `UPDATE` and
//! `DELETE` have no meaning for an object nobody is changing.

use kube::api::{ApiResource, DynamicObject};

use crate::bindings::{
    AdmissionRequest, GroupVersionKind, GroupVersionResource, Operation, UserInfo,
};
use crate::capabilities::kubernetes::live::typed;

/// Who the simulated requests come from: a policy that judges the requesting
/// user sees this name, not a real user's.
pub const AUDIT_USER: &str = "portcullis:audit";

/// Which object a result is about, as a report names it (`ObjectReference`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// E.g. `apps/v1`.
    pub api_version: String,
    /// E.g. `Deployment`.
    pub kind: String,
    /// Absent for cluster-scoped objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
    /// The object's UID.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The version of the object that was evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

/// The `CREATE` request for `object`, listed from `resource`, and a
/// reference to the object.
pub fn simulated_create(
    resource: &ApiResource,
    object: DynamicObject,
) -> (AdmissionRequest, ObjectRef) {
    let object = typed(object, resource);
    let reference = ObjectRef {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
        namespace: object.metadata.namespace.clone(),
        name: object.metadata.name.clone().unwrap_or_default(),
        uid: object.metadata.uid.clone().unwrap_or_default(),
        resource_version: object.metadata.resource_version.clone(),
    };
    let request = AdmissionRequest {
        uid: format!("audit-{}", reference.uid),
        kind: GroupVersionKind {
            group: resource.group.clone(),
            version: resource.version.clone(),
            kind: resource.kind.clone(),
        },
        resource: GroupVersionResource {
            group: resource.group.clone(),
            version: resource.version.clone(),
            resource: resource.plural.clone(),
        },
        sub_resource: None,
        request_kind: None,
        request_resource: None,
        request_sub_resource: None,
        name: Some(reference.name.clone()),
        namespace: reference.namespace.clone(),
        operation: Operation::Create,
        user_info: UserInfo {
            username: AUDIT_USER.to_owned(),
            uid: String::new(),
            groups: Vec::new(),
            extra: Vec::new(),
        },
        object: Some(serde_json::to_string(&object).expect("a listed object serializes")),
        old_object: None,
        // Nothing is stored: a policy with side effects may skip them.
        dry_run: true,
        options: Some(r#"{"apiVersion":"meta.k8s.io/v1","kind":"CreateOptions"}"#.to_owned()),
    };
    (request, reference)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::GroupVersionKind as Gvk;

    #[test]
    fn a_listed_deployment_becomes_a_dry_run_create_with_its_type() {
        let resource =
            ApiResource::from_gvk_with_plural(&Gvk::gvk("apps", "v1", "Deployment"), "deployments");
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "7"},
            "spec": {"replicas": 2}
        }))
        .unwrap();
        let (request, reference) = simulated_create(&resource, object);
        assert!(matches!(request.operation, Operation::Create));
        assert!(request.dry_run);
        assert_eq!(request.resource.resource, "deployments");
        assert_eq!(request.kind.group, "apps");
        assert_eq!(request.namespace.as_deref(), Some("shop"));
        assert_eq!(request.user_info.username, AUDIT_USER);
        let sent: serde_json::Value =
            serde_json::from_str(request.object.as_deref().unwrap()).unwrap();
        assert_eq!(sent["apiVersion"], "apps/v1");
        assert_eq!(sent["kind"], "Deployment");
        assert_eq!(sent["spec"]["replicas"], 2);
        assert_eq!(reference.name, "web");
        assert_eq!(reference.uid, "u-1");
        assert_eq!(reference.resource_version.as_deref(), Some("7"));
    }
}
