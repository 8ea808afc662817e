//! The policy against a fake cluster, natively.

use portcullis_sdk::serde_json::{Value, json};
use portcullis_sdk::testing::{FakeCluster, Harness};

use super::*;

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn pod_in(namespace: &str) -> Value {
    json!({
        "uid": "1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "namespace": namespace,
        "operation": "CREATE",
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                   "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
    })
}

fn harness(cluster: FakeCluster) -> Harness<NamespaceLabelRequired> {
    Harness::new()
        .settings_json(json!({"label": "team"}))
        .cluster(cluster)
}

#[test]
fn pods_are_admitted_only_in_labelled_namespaces() {
    let cluster = FakeCluster::new()
        .with(namespace("owned", json!({"team": "payments"})))
        .with(namespace("orphan", json!({"other": "x"})));
    let harness = harness(cluster);
    harness.validate(pod_in("owned")).assert_accepted();
    harness
        .validate(pod_in("orphan"))
        .assert_rejected("namespace `orphan` does not carry the label `team`");
    harness
        .validate(pod_in("missing"))
        .assert_rejected("namespace `missing` does not exist");
}

#[test]
fn the_policy_fails_closed_when_the_cluster_cannot_be_read() {
    harness(FakeCluster::new().unavailable("connection refused"))
        .validate(pod_in("owned"))
        .assert_rejected_with_code(
            "cannot read namespace `owned`: Kubernetes API unavailable: connection refused",
            500,
        );
    harness(FakeCluster::new().not_granted::<Namespace>())
        .validate(pod_in("owned"))
        .assert_rejected_with_code(
            "cannot read namespace `owned`: not granted: Policy has not been granted access to \
             Kubernetes v1/Namespace resources. The violation has been reported.",
            500,
        );
}

#[test]
fn the_label_must_be_named() {
    assert!(
        Harness::<NamespaceLabelRequired>::new()
            .settings_json(json!({"label": ""}))
            .validate_settings()
            .unwrap_err()
            .contains("`label` names the label")
    );
    assert!(
        Harness::<NamespaceLabelRequired>::new()
            .validate_settings()
            .is_err()
    );
}

#[test]
fn bypassing_the_cache_reads_the_same_namespace() {
    let cluster = FakeCluster::new().with(namespace("owned", json!({"team": "payments"})));
    let fresh = Harness::<NamespaceLabelRequired>::new()
        .settings_json(json!({"label": "team", "bypassCache": true}))
        .cluster(cluster);
    assert!(fresh.validate_settings().is_ok());
    fresh.validate(pod_in("owned")).assert_accepted();
    fresh
        .validate(pod_in("missing"))
        .assert_rejected("namespace `missing` does not exist");
}
