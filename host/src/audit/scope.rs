//! Which resources each policy covers: its admission rules, read as the API
//! server would match a `CREATE`, resolved against what the API server
//! serves (its discovery), so that wildcards become the resources they name.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::Client;
use kube::api::ApiResource;
use kube::discovery::{ApiCapabilities, ApiGroup, Discovery, Scope, verbs};

use super::Auditor;
use crate::bindings::{Operation, Rule};

/// A resource to list and the policies that judge its objects.
pub struct Target<A = Auditor> {
    /// The resource, at the version the policies asked for.
    pub resource: ApiResource,
    /// Whether its objects live in namespaces.
    pub namespaced: bool,
    /// The policies and groups that cover it.
    pub auditors: Vec<Arc<A>>,
}

/// Something with rules that has an id: a policy or group.
pub trait Named {
    /// Its id.
    fn id(&self) -> &str;
}

impl Named for Auditor {
    fn id(&self) -> &str {
        Auditor::id(self)
    }
}

/// One API group as the API server serves it.
pub struct ServedGroup {
    name: String,
    /// Versions, the preferred first, each with its resources.
    versions: Vec<(String, Vec<(ApiResource, ApiCapabilities)>)>,
}

impl ServedGroup {
    fn from_discovery(group: &ApiGroup) -> Self {
        let preferred = group.preferred_version_or_latest();
        let versions = std::iter::once(preferred)
            .chain(group.versions().filter(|v| *v != preferred))
            .map(|v| (v.to_owned(), group.versioned_resources(v)))
            .collect();
        Self {
            name: group.name().to_owned(),
            versions,
        }
    }
}

impl<A> Target<A> {
    /// `plural.group/version`, as logs and errors name it.
    pub fn name(&self) -> String {
        let r = &self.resource;
        match r.group.as_str() {
            "" => format!("{}/{}", r.plural, r.version),
            group => format!("{}.{group}/{}", r.plural, r.version),
        }
    }
}

/// What the audit will list.
pub struct Plan<A = Auditor> {
    /// Each resource once, with every policy that covers it.
    pub targets: Vec<Target<A>>,
    /// Rules that name what this API server does not serve.
    pub unserved: Vec<String>,
}

/// Groups never audited by a wildcard: the reports the audit writes itself.
const REPORT_GROUP: &str = "wgpolicyk8s.io";

/// Plans the audit of `auditors` against the API server of `client`.
pub async fn plan(client: &Client, auditors: &[Arc<Auditor>]) -> Result<Plan, kube::Error> {
    let rules: Vec<(Arc<Auditor>, Rule)> = auditors
        .iter()
        .flat_map(|auditor| {
            auditor
                .rules()
                .into_iter()
                .filter(covers_create)
                .map(move |rule| (Arc::clone(auditor), rule))
        })
        .collect();
    let wildcard = rules
        .iter()
        .any(|(_, rule)| rule.api_groups.iter().any(|g| g == "*"));
    let mut discovery = Discovery::new(client.clone());
    if !wildcard {
        // Only the groups the rules name: one request each.
        let mut groups: Vec<&str> = rules
            .iter()
            .flat_map(|(_, rule)| rule.api_groups.iter().map(String::as_str))
            .collect();
        groups.sort_unstable();
        groups.dedup();
        discovery = discovery.filter(&groups);
    }
    let discovery = discovery.run().await?;
    let served: Vec<ServedGroup> = discovery
        .groups()
        .map(ServedGroup::from_discovery)
        .collect();
    Ok(resolve(&served, &rules))
}

/// The audit simulates a `CREATE`: only rules that match one apply.
pub fn covers_create(rule: &Rule) -> bool {
    rule.operations
        .iter()
        .any(|op| matches!(op, Operation::Create))
}

/// Matches every rule against the served `groups`.
fn resolve<A: Named>(groups: &[ServedGroup], rules: &[(Arc<A>, Rule)]) -> Plan<A> {
    let mut targets: BTreeMap<(String, String, String), Target<A>> = BTreeMap::new();
    let mut unserved = Vec::new();
    for (auditor, rule) in rules {
        for group_name in &rule.api_groups {
            let matching: Vec<&ServedGroup> = groups
                .iter()
                .filter(|g| group_name == "*" || &g.name == group_name)
                .collect();
            if matching.is_empty() {
                unserved.push(format!(
                    "{}: API group `{group_name}` is not served",
                    auditor.id()
                ));
            }
            for group in matching {
                for resource in &rule.resources {
                    if resource.contains('/') {
                        // A subresource (`pods/status`) is not listed on its own.
                        continue;
                    }
                    let wildcard = group_name == "*" || resource == "*";
                    let found = find(group, &rule.api_versions, resource);
                    if found.is_empty() && !wildcard {
                        unserved.push(format!(
                            "{}: `{resource}` in API group `{}` (versions {}) is not served",
                            auditor.id(),
                            group.name,
                            rule.api_versions.join(", ")
                        ));
                    }
                    for (resource, capabilities) in found {
                        if wildcard && excluded_from_wildcards(&resource) {
                            continue;
                        }
                        let key = (
                            resource.group.clone(),
                            resource.version.clone(),
                            resource.plural.clone(),
                        );
                        let target = targets.entry(key).or_insert_with(|| Target {
                            namespaced: matches!(capabilities.scope, Scope::Namespaced),
                            resource,
                            auditors: Vec::new(),
                        });
                        if !target.auditors.iter().any(|a| a.id() == auditor.id()) {
                            target.auditors.push(Arc::clone(auditor));
                        }
                    }
                }
            }
        }
    }
    unserved.sort();
    unserved.dedup();
    Plan {
        targets: targets.into_values().collect(),
        unserved,
    }
}

/// The listable resources of `group` that `resource` names, each at the
/// first of `versions` that serves it (`*`: the group's preferred version
/// first).
fn find(
    group: &ServedGroup,
    versions: &[String],
    resource: &str,
) -> Vec<(ApiResource, ApiCapabilities)> {
    let served = |v: &str| group.versions.iter().find(|(name, _)| name == v);
    let order: Vec<&(String, Vec<(ApiResource, ApiCapabilities)>)> =
        if versions.iter().any(|v| v == "*") {
            group.versions.iter().collect()
        } else {
            versions.iter().filter_map(|v| served(v)).collect()
        };
    let mut found: Vec<(ApiResource, ApiCapabilities)> = Vec::new();
    for (_, resources) in order {
        for (api_resource, capabilities) in resources.iter().cloned() {
            let named = resource == "*" || api_resource.plural == resource;
            let listable = capabilities.supports_operation(verbs::LIST);
            let seen = found.iter().any(|(r, _)| r.plural == api_resource.plural);
            if named && listable && !seen {
                found.push((api_resource, capabilities));
            }
        }
    }
    found
}

/// What a wildcard rule does not reach: the audit's own reports, and events
/// (records of what happened, not objects anyone admits).
fn excluded_from_wildcards(resource: &ApiResource) -> bool {
    resource.group == REPORT_GROUP || resource.plural == "events"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::Operation;
    use kube::core::GroupVersionKind;

    struct P(&'static str);
    impl Named for P {
        fn id(&self) -> &str {
            self.0
        }
    }

    /// Kind, plural, namespaced, verbs.
    type Served<'a> = (&'a str, &'a str, bool, &'a [&'a str]);

    fn served(name: &str, versions: &[(&str, &[Served])]) -> ServedGroup {
        ServedGroup {
            name: name.to_owned(),
            versions: versions
                .iter()
                .map(|(version, resources)| {
                    let resources = resources
                        .iter()
                        .map(|(kind, plural, namespaced, verbs)| {
                            let gvk = GroupVersionKind::gvk(name, version, kind);
                            (
                                ApiResource::from_gvk_with_plural(&gvk, plural),
                                ApiCapabilities {
                                    scope: if *namespaced {
                                        Scope::Namespaced
                                    } else {
                                        Scope::Cluster
                                    },
                                    subresources: Vec::new(),
                                    operations: verbs.iter().map(|v| v.to_string()).collect(),
                                },
                            )
                        })
                        .collect();
                    (version.to_string(), resources)
                })
                .collect(),
        }
    }

    fn cluster() -> Vec<ServedGroup> {
        let list: &[&str] = &["get", "list", "create"];
        let create_only: &[&str] = &["create"];
        vec![
            served(
                "",
                &[(
                    "v1",
                    &[
                        ("Pod", "pods", true, list),
                        ("Namespace", "namespaces", false, list),
                        ("Event", "events", true, list),
                        ("Binding", "bindings", true, create_only),
                    ],
                )],
            ),
            served(
                "apps",
                &[
                    ("v1", &[("Deployment", "deployments", true, list)]),
                    (
                        "v1beta1",
                        &[
                            ("Deployment", "deployments", true, list),
                            ("Legacy", "legacies", true, list),
                        ],
                    ),
                ],
            ),
            served(
                "wgpolicyk8s.io",
                &[("v1alpha2", &[("PolicyReport", "policyreports", true, list)])],
            ),
        ]
    }

    fn rule(groups: &[&str], versions: &[&str], resources: &[&str], ops: &[Operation]) -> Rule {
        Rule {
            api_groups: groups.iter().map(|s| s.to_string()).collect(),
            api_versions: versions.iter().map(|s| s.to_string()).collect(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
            operations: ops.to_vec(),
        }
    }

    fn names(plan: &Plan<P>) -> Vec<String> {
        plan.targets
            .iter()
            .map(|t| {
                let ids: Vec<&str> = t.auditors.iter().map(|a| a.id()).collect();
                format!("{} {}", t.name(), ids.join(","))
            })
            .collect()
    }

    #[test]
    fn named_resources_are_listed_once_at_the_version_asked_for() {
        let a = Arc::new(P("a"));
        let b = Arc::new(P("b"));
        let rules = vec![
            (
                Arc::clone(&a),
                rule(&[""], &["v1"], &["pods"], &[Operation::Create]),
            ),
            (
                Arc::clone(&a),
                rule(
                    &["apps"],
                    &["v1"],
                    &["deployments", "deployments/scale"],
                    &[Operation::Create],
                ),
            ),
            (
                Arc::clone(&b),
                rule(
                    &[""],
                    &["v1"],
                    &["pods"],
                    &[Operation::Create, Operation::Update],
                ),
            ),
            // Not a CREATE: nothing to audit.
            (
                Arc::clone(&b),
                rule(&[""], &["v1"], &["namespaces"], &[Operation::Delete]),
            ),
        ];
        let rules: Vec<_> = rules
            .into_iter()
            .filter(|(_, r)| covers_create(r))
            .collect();
        let plan = resolve(&cluster(), &rules);
        assert_eq!(names(&plan), ["pods/v1 a,b", "deployments.apps/v1 a"]);
        assert!(plan.targets[0].namespaced);
        assert!(plan.unserved.is_empty(), "{:?}", plan.unserved);
    }

    #[test]
    fn wildcards_reach_every_listable_resource_but_events_and_reports() {
        let a = Arc::new(P("a"));
        let rules = vec![(a, rule(&["*"], &["*"], &["*"], &[Operation::Create]))];
        let plan = resolve(&cluster(), &rules);
        assert_eq!(
            names(&plan),
            [
                "namespaces/v1 a",
                "pods/v1 a",
                "deployments.apps/v1 a",
                "legacies.apps/v1beta1 a",
            ]
        );
        let namespaces = &plan.targets[0];
        assert!(!namespaces.namespaced);
    }

    #[test]
    fn what_the_server_does_not_serve_is_reported() {
        let a = Arc::new(P("a"));
        let rules = vec![
            (
                Arc::clone(&a),
                rule(&["batch"], &["v1"], &["jobs"], &[Operation::Create]),
            ),
            (
                a,
                rule(&["apps"], &["v2"], &["deployments"], &[Operation::Create]),
            ),
        ];
        let plan = resolve(&cluster(), &rules);
        assert!(plan.targets.is_empty());
        assert_eq!(
            plan.unserved,
            [
                "a: API group `batch` is not served",
                "a: `deployments` in API group `apps` (versions v2) is not served",
            ]
        );
    }
}
