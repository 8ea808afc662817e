//! The policy's verdicts on Kubewarden's own fixtures (in `test_data/`), and
//! on every Service type and other kinds, through the SDK's native harness.

use portcullis_sdk::Operation;
use portcullis_sdk::serde_json::{self, Value, json};
use portcullis_sdk::testing::Harness;

use super::*;

const LOAD_BALANCER: &str = "test_data/service_loadbalancer.json";
const CLUSTER_IP: &str = "test_data/service-clusterip.json";

fn harness() -> Harness<DisallowServiceLoadBalancer> {
    Harness::new()
}

fn fixture(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn request(group: &str, kind: &str, operation: &str, object: Value) -> Value {
    json!({
        "uid": "test",
        "kind": {"group": group, "version": "v1", "kind": kind},
        "operation": operation,
        "object": object,
    })
}

fn service(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": spec})
}

// --- Kubewarden's fixtures --------------------------------------------------

#[test]
fn a_load_balancer_service_is_rejected() {
    let verdict = harness().validate_file(LOAD_BALANCER);
    verdict.assert_rejected(LOAD_BALANCER_NOT_ALLOWED);
    // Like Kubewarden's policy, the rejection leaves the code to the host.
    assert_eq!(verdict.code, None);
}

#[test]
fn a_cluster_ip_service_is_accepted() {
    harness().validate_file(CLUSTER_IP).assert_accepted();
}

// --- Service types ----------------------------------------------------------

#[test]
fn other_service_types_are_accepted() {
    for spec in [
        json!({"type": "ClusterIP"}),
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
        json!({"type": "ExternalName", "externalName": "db.example.com"}),
        // No type means ClusterIP.
        json!({"ports": [{"port": 80}]}),
        json!({"type": null}),
        // Kubernetes itself rejects a misspelled type; it is not a load balancer.
        json!({"type": "loadbalancer"}),
    ] {
        harness()
            .validate(request("", "Service", "CREATE", service(spec.clone())))
            .assert_accepted();
    }
    for object in [
        json!({"kind": "Service", "metadata": {"name": "web"}}),
        json!({"kind": "Service", "spec": null}),
    ] {
        harness()
            .validate(request("", "Service", "CREATE", object))
            .assert_accepted();
    }
}

#[test]
fn turning_a_service_into_a_load_balancer_is_rejected() {
    let mut update = fixture(CLUSTER_IP);
    update["operation"] = json!("UPDATE");
    update["oldObject"] = update["object"].clone();
    update["object"]["spec"]["type"] = json!("LoadBalancer");
    harness()
        .validate(update)
        .assert_rejected(LOAD_BALANCER_NOT_ALLOWED);
}

#[test]
fn any_update_of_a_load_balancer_is_rejected() {
    // Like Kubewarden's policy: an existing load balancer cannot be changed
    // (only turned into another type or deleted).
    let mut update = fixture(LOAD_BALANCER);
    update["operation"] = json!("UPDATE");
    update["oldObject"] = update["object"].clone();
    update["object"]["metadata"]["labels"]["env"] = json!("prod");
    harness()
        .validate(update.clone())
        .assert_rejected(LOAD_BALANCER_NOT_ALLOWED);

    update["object"]["spec"]["type"] = json!("NodePort");
    harness().validate(update).assert_accepted();
}

#[test]
fn deleting_a_load_balancer_is_accepted() {
    let mut delete = fixture(LOAD_BALANCER);
    delete["operation"] = json!("DELETE");
    delete["oldObject"] = delete["object"].take();
    harness().validate(delete).assert_accepted();
}

#[test]
fn other_kinds_are_accepted() {
    let spec = json!({"type": "LoadBalancer"});
    // Knative's Service is a custom resource.
    harness()
        .validate(request(
            "serving.knative.dev",
            "Service",
            "CREATE",
            json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service", "spec": spec}),
        ))
        .assert_accepted();
    harness()
        .validate(request(
            "",
            "ConfigMap",
            "CREATE",
            json!({"kind": "ConfigMap", "spec": spec}),
        ))
        .assert_accepted();
    harness()
        .validate(request("", "Pod", "CREATE", json!("not even an object")))
        .assert_accepted();
}

// --- Malformed input --------------------------------------------------------

#[test]
fn a_malformed_service_is_rejected_with_400() {
    let cases = [
        (
            json!(["Service"]),
            "the Service is not a JSON object (found an array)",
        ),
        (
            json!({"spec": "LoadBalancer"}),
            "the Service's `spec` is not an object (found a string)",
        ),
        (
            json!({"spec": {"type": 1}}),
            "the Service's `spec.type` is not a string (found a number)",
        ),
    ];
    for (object, message) in cases {
        harness()
            .validate(request("", "Service", "CREATE", object))
            .assert_rejected_with_code(message, 400);
    }
}

// --- Settings and metadata --------------------------------------------------

#[test]
fn the_policy_takes_no_settings() {
    assert_eq!(harness().validate_settings(), Ok(()));
    assert_eq!(harness().settings_text("null").validate_settings(), Ok(()));
    let error = harness()
        .settings_json(json!({"allow": true}))
        .validate_settings()
        .unwrap_err();
    assert!(
        error.starts_with("invalid settings: unknown field `allow`"),
        "{error}"
    );
}

#[test]
fn metadata_targets_services() {
    let metadata = harness().metadata();
    assert!(!metadata.mutating);
    assert!(!metadata.description.is_empty());
    assert_eq!(metadata.rules.len(), 1);
    let rule = &metadata.rules[0];
    assert_eq!(rule.api_groups, [""]);
    assert_eq!(rule.api_versions, ["v1"]);
    assert_eq!(rule.resources, ["services"]);
    assert_eq!(rule.operations, [Operation::Create, Operation::Update]);
}

#[test]
fn raw_validation_is_not_supported() {
    harness()
        .validate_raw(service(json!({"type": "LoadBalancer"})))
        .assert_rejected("this policy does not support raw validation");
}
