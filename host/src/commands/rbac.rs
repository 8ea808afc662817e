//! `portcullis webhook-config --rbac`: the ClusterRole and ClusterRoleBinding
//! a deployment needs for its context-aware policies — `get`, `list` and
//! `watch` on exactly the resources granted in `policies.yml`, and `create`
//! on SubjectAccessReviews when a policy may ask `can_i`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{ApiResource, GroupVersionKind};
use portcullis::PolicySpec;

/// The RBAC objects for `specs`, or `None` when no policy reads the cluster.
/// The service account `service_account` in `namespace` runs `serve`.
pub fn rbac(
    specs: &[PolicySpec],
    name: &str,
    namespace: &str,
    service_account: &str,
) -> Option<(ClusterRole, ClusterRoleBinding)> {
    // Resources by API group; plurals as kubectl and kube-rs derive them
    // (the API server's discovery is not needed to print a manifest).
    let mut by_group: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for resource in specs
        .iter()
        .flat_map(|spec| &spec.grants.context_aware_resources)
    {
        let (group, version) = resource
            .api_version
            .split_once('/')
            .unwrap_or(("", &resource.api_version));
        let gvk = GroupVersionKind::gvk(group, version, &resource.kind);
        by_group
            .entry(group.to_owned())
            .or_default()
            .insert(ApiResource::from_gvk(&gvk).plural);
    }
    let can_i = specs
        .iter()
        .any(|spec| spec.grants.host_capabilities.allows("kubernetes/can_i"));
    if by_group.is_empty() && !can_i {
        return None;
    }
    let mut rules: Vec<PolicyRule> = by_group
        .into_iter()
        .map(|(group, resources)| PolicyRule {
            api_groups: Some(vec![group]),
            resources: Some(resources.into_iter().collect()),
            verbs: ["get", "list", "watch"].map(str::to_owned).to_vec(),
            ..Default::default()
        })
        .collect();
    if can_i {
        rules.push(PolicyRule {
            api_groups: Some(vec!["authorization.k8s.io".into()]),
            resources: Some(vec!["subjectaccessreviews".into()]),
            verbs: vec!["create".into()],
            ..Default::default()
        });
    }
    let role_name = format!("{name}-context-aware");
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(role_name.clone()),
            ..Default::default()
        },
        rules: Some(rules),
        ..Default::default()
    };
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(role_name.clone()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: role_name,
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: service_account.to_owned(),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        }]),
    };
    Some((role, binding))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis::capabilities::{ContextAwareResource, Grants, HostCapabilities};

    fn spec(resources: &[(&str, &str)], capabilities: &[&str]) -> PolicySpec {
        PolicySpec::new("p", "p.wasm").with_grants(Grants {
            host_capabilities: HostCapabilities::new(capabilities).unwrap(),
            context_aware_resources: resources
                .iter()
                .map(|(v, k)| ContextAwareResource::new(*v, *k))
                .collect(),
        })
    }

    #[test]
    fn exactly_the_granted_resources_read_only() {
        let specs = [
            spec(
                &[("v1", "Namespace"), ("networking.k8s.io/v1", "Ingress")],
                &[],
            ),
            spec(&[("networking.k8s.io/v1", "Ingress"), ("v1", "Pod")], &[]),
            spec(&[], &[]),
        ];
        let (role, binding) = rbac(&specs, "portcullis", "ops", "portcullis").unwrap();
        let rules = role.rules.unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].api_groups, Some(vec![String::new()]));
        assert_eq!(
            rules[0].resources,
            Some(vec!["namespaces".into(), "pods".into()])
        );
        assert_eq!(rules[1].resources, Some(vec!["ingresses".into()]));
        assert_eq!(rules[1].verbs, ["get", "list", "watch"]);
        let subject = &binding.subjects.unwrap()[0];
        assert_eq!(
            (subject.name.as_str(), subject.namespace.as_deref()),
            ("portcullis", Some("ops"))
        );
        assert_eq!(binding.role_ref.name, "portcullis-context-aware");
        assert!(rbac(&[spec(&[], &[])], "p", "n", "s").is_none());
        let can_i = rbac(&[spec(&[], &["kubernetes/can_i"])], "p", "n", "s").unwrap();
        assert_eq!(
            can_i.0.rules.unwrap()[0].resources,
            Some(vec!["subjectaccessreviews".into()])
        );
    }
}
