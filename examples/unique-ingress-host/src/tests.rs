//! The policy against a fake cluster, natively.

use portcullis_sdk::serde_json::{Value, json};
use portcullis_sdk::testing::{FakeCluster, Harness};

use super::*;

fn ingress(namespace: &str, name: &str, hosts: &[&str]) -> Value {
    let rules: Vec<Value> = hosts.iter().map(|h| json!({"host": h})).collect();
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"rules": rules}
    })
}

fn admitting(operation: &str, object: Value) -> Value {
    json!({
        "uid": "1",
        "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"},
        "name": object["metadata"]["name"],
        "namespace": object["metadata"]["namespace"],
        "operation": operation,
        "object": object,
    })
}

fn cluster() -> FakeCluster {
    FakeCluster::new()
        .with(ingress(
            "shop",
            "front",
            &["shop.example", "www.shop.example"],
        ))
        .with(ingress("blog", "blog", &["blog.example"]))
}

#[test]
fn a_host_in_use_elsewhere_is_rejected() {
    let harness = Harness::<UniqueIngressHost>::new().cluster(cluster());
    harness
        .validate(admitting(
            "CREATE",
            ingress("team-b", "steal", &["www.shop.example"]),
        ))
        .assert_rejected("host `www.shop.example` is already used by Ingress `shop/front`");
    harness
        .validate(admitting(
            "CREATE",
            ingress("team-b", "new", &["new.example"]),
        ))
        .assert_accepted();
}

#[test]
fn an_ingress_may_keep_its_own_hosts() {
    Harness::<UniqueIngressHost>::new()
        .cluster(cluster())
        .validate(admitting(
            "UPDATE",
            ingress("shop", "front", &["shop.example"]),
        ))
        .assert_accepted();
}

#[test]
fn the_policy_fails_closed_when_ingresses_cannot_be_listed() {
    Harness::<UniqueIngressHost>::new()
        .cluster(FakeCluster::new().not_granted::<Ingress>())
        .validate(admitting("CREATE", ingress("a", "b", &["x.example"])))
        .assert_rejected_with_code(
            "cannot list Ingresses: not granted: Policy has not been granted access to \
             Kubernetes networking.k8s.io/v1/Ingress resources. The violation has been reported.",
            500,
        );
}
