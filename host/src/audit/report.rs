//! The audit's results as Policy Reports: the `wgpolicyk8s.io/v1alpha2`
//! `PolicyReport` (one per namespace) and `ClusterPolicyReport` (cluster-
//! scoped objects) of the Kubernetes policy working group.
//!
//! v1alpha2 is the version Kubewarden's audit scanner and Kyverno write and
//! Policy Reporter reads, and the one the working group's CRDs ship: a
//! cluster that already shows policy reports shows these. Each run replaces
//! the last one's reports whole, so results for deleted objects, removed
//! policies and emptied namespaces go with it.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::{AuditResult, ResultKind};

/// The Policy Reports API group and version written.
pub const API_VERSION: &str = "wgpolicyk8s.io/v1alpha2";

/// The label that marks the reports the audit owns (and may delete).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "portcullis");

/// The name of the first report of each namespace (`-2`, `-3`… after it).
pub const REPORT_NAME: &str = "portcullis-audit";

/// Results per report: a report is one object, and the API server refuses
/// objects over ~1.5 MB (etcd's limit); 1,000 results stay well under it.
pub const RESULTS_PER_REPORT: usize = 1000;

/// Reports written at once: the API server merges each apply, and a
/// 1,000-result report takes it ~0.15 s; a few in parallel keep it busy
/// without crowding out the cluster's own traffic.
const WRITERS: usize = 4;

/// The field manager of the audit's server-side applies.
const FIELD_MANAGER: &str = "portcullis-audit";

/// One report to write.
#[derive(Debug, Clone)]
pub struct Report {
    /// `None`: the `ClusterPolicyReport`.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// The whole object.
    pub document: Value,
}

/// The reports for `results`: for each namespace (and the cluster) one
/// report per [`RESULTS_PER_REPORT`] results.
pub fn build(results: &[AuditResult]) -> Vec<Report> {
    let mut by_scope: BTreeMap<Option<&str>, Vec<&AuditResult>> = BTreeMap::new();
    for result in results {
        by_scope
            .entry(result.object.namespace.as_deref())
            .or_default()
            .push(result);
    }
    let mut reports = Vec::new();
    for (namespace, results) in by_scope {
        for (index, chunk) in results.chunks(RESULTS_PER_REPORT).enumerate() {
            let name = match index {
                0 => REPORT_NAME.to_owned(),
                n => format!("{REPORT_NAME}-{}", n + 1),
            };
            reports.push(Report {
                namespace: namespace.map(str::to_owned),
                document: document(namespace, &name, chunk),
                name,
            });
        }
    }
    reports
}

fn document(namespace: Option<&str>, name: &str, results: &[&AuditResult]) -> Value {
    let count = |kind: ResultKind| results.iter().filter(|r| r.result == kind).count();
    let mut metadata = json!({
        "name": name,
        "labels": { MANAGED_BY.0: MANAGED_BY.1 },
    });
    if let Some(namespace) = namespace {
        metadata["namespace"] = json!(namespace);
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": kind(namespace.is_some()),
        "metadata": metadata,
        "summary": {
            "pass": count(ResultKind::Pass),
            "fail": count(ResultKind::Fail),
            "warn": 0,
            "error": count(ResultKind::Error),
            "skip": 0,
        },
        "results": results.iter().map(|r| result(r)).collect::<Vec<_>>(),
    })
}

fn result(result: &AuditResult) -> Value {
    let mut entry = json!({
        "source": "portcullis",
        "policy": result.policy,
        "result": result.result.as_str(),
        "scored": true,
        "timestamp": { "seconds": result.timestamp, "nanos": 0 },
        "resources": [result.object],
        "properties": { "mode": result.mode.as_str() },
    });
    for (key, value) in [
        ("message", &result.message),
        ("severity", &result.severity),
        ("category", &result.category),
    ] {
        if let Some(value) = value {
            entry[key] = json!(value);
        }
    }
    entry
}

fn kind(namespaced: bool) -> &'static str {
    if namespaced {
        "PolicyReport"
    } else {
        "ClusterPolicyReport"
    }
}

/// The PolicyReports of `namespace`, or (`None`) the ClusterPolicyReports.
fn report_api(client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &api_resource(true)),
        None => Api::all_with(client.clone(), &api_resource(false)),
    }
}

fn api_resource(namespaced: bool) -> ApiResource {
    let plural = if namespaced {
        "policyreports"
    } else {
        "clusterpolicyreports"
    };
    let (group, version) = API_VERSION.split_once('/').expect("group/version");
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind(namespaced)),
        plural,
    )
}

/// Why reports could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The CRDs are not installed.
    #[error(
        "the API server does not serve {0} ({API_VERSION}): install the Policy Reports CRDs \
         (deploy/crds/policyreports.yaml, or those of Kubewarden, Kyverno or Policy Reporter), \
         or pass --no-reports"
    )]
    NotInstalled(&'static str),
    /// The API server refused a write, a list or a delete.
    #[error("{what}: {error}")]
    Api {
        /// What was being done.
        what: String,
        /// The API server's answer.
        error: kube::Error,
    },
}

/// What [`publish`] did.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Published {
    /// Reports created or updated.
    pub written: usize,
    /// Reports of an earlier run that no longer had results, deleted.
    pub removed: usize,
}

/// Writes `reports` (server-side apply: created or replaced) and deletes
/// the reports of earlier runs that this run did not write. With
/// `namespace`, the run covered that namespace only: reports elsewhere are
/// left alone.
pub async fn publish(
    client: &Client,
    reports: &[Report],
    namespace: Option<&str>,
) -> Result<Published, PublishError> {
    installed(client).await?;
    let mut published = Published::default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let writes = futures::stream::iter(reports)
        .map(|report| write(client, report, &params))
        .buffer_unordered(WRITERS);
    futures::pin_mut!(writes);
    while let Some(written) = writes.next().await {
        written?;
        published.written += 1;
    }
    let written: BTreeSet<(Option<&str>, &str)> = reports
        .iter()
        .map(|r| (r.namespace.as_deref(), r.name.as_str()))
        .collect();
    let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    let scopes: &[bool] = if namespace.is_some() {
        &[true]
    } else {
        &[true, false]
    };
    for &namespaced in scopes {
        let api: Api<DynamicObject> = match (namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &api_resource(true)),
            _ => Api::all_with(client.clone(), &api_resource(namespaced)),
        };
        let existing = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|error| PublishError::Api {
                what: format!("cannot list the {}s", kind(namespaced)),
                error,
            })?;
        for stale in existing.items {
            let ns = stale.namespace();
            let name = stale.name_any();
            if written.contains(&(ns.as_deref(), name.as_str())) {
                continue;
            }
            match report_api(client, ns.as_deref())
                .delete(&name, &DeleteParams::default())
                .await
            {
                Ok(_) => published.removed += 1,
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => {
                    return Err(PublishError::Api {
                        what: format!("cannot delete the stale {} {name}", kind(namespaced)),
                        error,
                    });
                }
            }
        }
    }
    Ok(published)
}

/// Fails unless the API server serves both report kinds at
/// [`API_VERSION`]: asked once, before anything is written.
async fn installed(client: &Client) -> Result<(), PublishError> {
    let (group, version) = API_VERSION.split_once('/').expect("group/version");
    let served = match kube::discovery::group(client, group).await {
        Ok(group) => group.versioned_resources(version),
        Err(kube::Error::Discovery(_)) => Vec::new(),
        Err(error) => {
            return Err(PublishError::Api {
                what: format!("cannot discover {API_VERSION}"),
                error,
            });
        }
    };
    for namespaced in [true, false] {
        let plural = api_resource(namespaced).plural;
        if !served.iter().any(|(resource, _)| resource.plural == plural) {
            return Err(PublishError::NotInstalled(kind(namespaced)));
        }
    }
    Ok(())
}

/// Creates or replaces `report`.
async fn write(client: &Client, report: &Report, params: &PatchParams) -> Result<(), PublishError> {
    report_api(client, report.namespace.as_deref())
        .patch(&report.name, params, &Patch::Apply(&report.document))
        .await
        .map_err(|error| PublishError::Api {
            what: format!(
                "cannot write {} {}",
                kind(report.namespace.is_some()),
                location(report)
            ),
            error,
        })?;
    Ok(())
}

fn location(report: &Report) -> String {
    match &report.namespace {
        Some(ns) => format!("{ns}/{}", report.name),
        None => report.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::request::ObjectRef;
    use crate::policy::PolicyMode;

    fn finding(
        namespace: Option<&str>,
        name: &str,
        policy: &str,
        result: ResultKind,
    ) -> AuditResult {
        AuditResult {
            policy: policy.to_owned(),
            mode: PolicyMode::Protect,
            object: ObjectRef {
                api_version: "v1".into(),
                kind: if namespace.is_some() {
                    "Pod"
                } else {
                    "Namespace"
                }
                .into(),
                namespace: namespace.map(str::to_owned),
                name: name.to_owned(),
                uid: format!("uid-{name}"),
                resource_version: Some("1".into()),
            },
            result,
            message: (result != ResultKind::Pass).then(|| format!("{policy} says no")),
            severity: None,
            category: None,
            timestamp: 1_700_000_000,
        }
    }

    #[test]
    fn one_report_per_namespace_and_one_for_the_cluster() {
        let results = vec![
            finding(Some("a"), "p1", "privileged", ResultKind::Fail),
            finding(Some("a"), "p2", "privileged", ResultKind::Pass),
            finding(Some("b"), "p3", "privileged", ResultKind::Error),
            finding(None, "ns", "labels", ResultKind::Pass),
        ];
        let reports = build(&results);
        let scopes: Vec<_> = reports
            .iter()
            .map(|r| (r.namespace.as_deref(), r.document["kind"].as_str().unwrap()))
            .collect();
        assert_eq!(
            scopes,
            [
                (None, "ClusterPolicyReport"),
                (Some("a"), "PolicyReport"),
                (Some("b"), "PolicyReport")
            ]
        );
        let a = &reports[1].document;
        assert_eq!(a["apiVersion"], API_VERSION);
        assert_eq!(a["metadata"]["name"], REPORT_NAME);
        assert_eq!(a["metadata"]["namespace"], "a");
        assert_eq!(a["metadata"]["labels"][MANAGED_BY.0], MANAGED_BY.1);
        assert_eq!(
            a["summary"],
            json!({"pass": 1, "fail": 1, "warn": 0, "error": 0, "skip": 0})
        );
        let failed = &a["results"][0];
        assert_eq!(failed["result"], "fail");
        assert_eq!(failed["policy"], "privileged");
        assert_eq!(failed["message"], "privileged says no");
        assert_eq!(failed["resources"][0]["name"], "p1");
        assert_eq!(failed["resources"][0]["uid"], "uid-p1");
        assert_eq!(failed["timestamp"]["seconds"], 1_700_000_000);
        assert!(a["results"][1].get("message").is_none());
        assert!(reports[0].document["metadata"].get("namespace").is_none());
        assert_eq!(reports[2].document["summary"]["error"], 1);
    }

    #[test]
    fn a_large_namespace_is_split_to_stay_under_the_object_size_limit() {
        let results: Vec<_> = (0..RESULTS_PER_REPORT * 2 + 1)
            .map(|i| {
                finding(
                    Some("big"),
                    &format!("p{i}"),
                    "privileged",
                    ResultKind::Pass,
                )
            })
            .collect();
        let reports = build(&results);
        let names: Vec<&str> = reports.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [REPORT_NAME, "portcullis-audit-2", "portcullis-audit-3"]
        );
        assert_eq!(reports[2].document["results"].as_array().unwrap().len(), 1);
        let largest = reports
            .iter()
            .map(|r| serde_json::to_vec(&r.document).unwrap().len())
            .max()
            .unwrap();
        assert!(largest < 1 << 20, "{largest} bytes");
    }
}
