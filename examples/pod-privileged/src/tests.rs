//! The policy's verdicts on Kubewarden's own fixtures (in `test_data/`), and
//! on every workload kind, through the SDK's native harness.

use portcullis_sdk::bindings::wit;
use portcullis_sdk::serde_json::{Value, json};
use portcullis_sdk::testing::Harness;
use portcullis_sdk::{AdmissionRequest, Operation};

use super::*;

const SKIP_INIT_AND_EPHEMERAL: &str = "test_data/settings_skip_init_and_ephemeral_containers.json";

fn harness() -> Harness<PodPrivileged> {
    Harness::new()
}

// --- Kubewarden's fixtures --------------------------------------------------

#[test]
fn privileged_container_is_rejected() {
    harness()
        .validate_file("test_data/privileged_container.json")
        .assert_rejected(PRIVILEGED_CONTAINER);
    // Skipping init and ephemeral containers does not exempt regular ones.
    harness()
        .settings_file(SKIP_INIT_AND_EPHEMERAL)
        .validate_file("test_data/privileged_container.json")
        .assert_rejected(PRIVILEGED_CONTAINER);
}

#[test]
fn privileged_init_container_is_rejected_unless_skipped() {
    harness()
        .validate_file("test_data/privileged_init_container.json")
        .assert_rejected(PRIVILEGED_INIT_CONTAINER);
    harness()
        .settings_file(SKIP_INIT_AND_EPHEMERAL)
        .validate_file("test_data/privileged_init_container.json")
        .assert_accepted();
}

#[test]
fn privileged_ephemeral_container_is_rejected_unless_skipped() {
    harness()
        .validate_file("test_data/privileged_ephemeral_container.json")
        .assert_rejected(PRIVILEGED_EPHEMERAL_CONTAINER);
    harness()
        .settings_file(SKIP_INIT_AND_EPHEMERAL)
        .validate_file("test_data/privileged_ephemeral_container.json")
        .assert_accepted();
}

#[test]
fn no_privileged_containers_is_accepted() {
    harness()
        .validate_file("test_data/no_privileged_containers.json")
        .assert_accepted();
    harness()
        .settings_file(SKIP_INIT_AND_EPHEMERAL)
        .validate_file("test_data/no_privileged_containers.json")
        .assert_accepted();
}

#[test]
fn deployment_with_privileged_containers_is_rejected() {
    harness()
        .validate_file("test_data/deployment_with_privileged_containers.json")
        .assert_rejected(PRIVILEGED_CONTAINER);
}

#[test]
fn statefulset_with_privileged_container_is_rejected() {
    harness()
        .validate_file("test_data/statefulset_with_privileged_container.json")
        .assert_rejected(PRIVILEGED_CONTAINER);
}

#[test]
fn the_demo_admission_review_is_rejected() {
    harness()
        .validate_file("test_data/privileged_pod_review.json")
        .assert_rejected(PRIVILEGED_CONTAINER);
}

#[test]
fn a_rejection_carries_no_code() {
    let verdict = harness().validate_file("test_data/privileged_container.json");
    assert_eq!(verdict.code, None);
    assert!(verdict.warnings.is_empty() && verdict.mutated_object.is_none());
}

// --- Every workload kind ----------------------------------------------------

fn request(group: &str, kind: &str, object: Value) -> Value {
    json!({
        "uid": "test",
        "kind": {"group": group, "version": "v1", "kind": kind},
        "operation": "CREATE",
        "object": object,
    })
}

fn pod_spec(field: &str, privileged: bool) -> Value {
    let container = json!({
        "name": "c",
        "image": "busybox",
        "securityContext": {"privileged": privileged},
    });
    let mut spec = json!({"containers": [{"name": "app", "image": "nginx"}]});
    match field {
        "containers" => spec["containers"] = json!([container]),
        other => spec[other] = json!([container]),
    }
    spec
}

/// Every workload kind with its pod spec nested where Kubernetes keeps it.
fn workloads(spec: Value) -> Vec<(&'static str, &'static str, Value)> {
    let template = json!({"spec": {"template": {"spec": spec.clone()}}});
    vec![
        ("", "Pod", json!({"spec": spec.clone()})),
        ("apps", "Deployment", template.clone()),
        ("apps", "ReplicaSet", template.clone()),
        ("apps", "StatefulSet", template.clone()),
        ("apps", "DaemonSet", template.clone()),
        ("", "ReplicationController", template.clone()),
        ("batch", "Job", template.clone()),
        (
            "batch",
            "CronJob",
            json!({"spec": {"jobTemplate": template}}),
        ),
    ]
}

#[test]
fn every_workload_kind_is_checked() {
    let cases = [
        ("containers", PRIVILEGED_CONTAINER),
        ("initContainers", PRIVILEGED_INIT_CONTAINER),
        ("ephemeralContainers", PRIVILEGED_EPHEMERAL_CONTAINER),
    ];
    let skipping = harness().settings_json(json!({
        "skip_init_containers": true,
        "skip_ephemeral_containers": true,
    }));
    for (field, message) in cases {
        for (group, kind, object) in workloads(pod_spec(field, true)) {
            let verdict = harness().validate(request(group, kind, object.clone()));
            assert_eq!(verdict.message.as_deref(), Some(message), "{kind} {field}");
            assert!(!verdict.allowed, "{kind} {field}");

            let verdict = skipping.validate(request(group, kind, object));
            assert_eq!(
                verdict.allowed,
                field != "containers",
                "{kind} {field} skipped"
            );
        }
        for (group, kind, object) in workloads(pod_spec(field, false)) {
            harness()
                .validate(request(group, kind, object))
                .assert_accepted();
        }
    }
}

#[test]
fn each_skip_setting_is_independent() {
    let ephemeral = request(
        "",
        "Pod",
        json!({"spec": pod_spec("ephemeralContainers", true)}),
    );
    let init = request("", "Pod", json!({"spec": pod_spec("initContainers", true)}));
    let skip_init = harness().settings_json(json!({"skip_init_containers": true}));
    skip_init.validate(init.clone()).assert_accepted();
    skip_init
        .validate(ephemeral.clone())
        .assert_rejected(PRIVILEGED_EPHEMERAL_CONTAINER);
    let skip_ephemeral = harness().settings_json(json!({"skip_ephemeral_containers": true}));
    skip_ephemeral.validate(ephemeral).assert_accepted();
    skip_ephemeral
        .validate(init)
        .assert_rejected(PRIVILEGED_INIT_CONTAINER);
}

#[test]
fn objects_without_a_pod_spec_are_accepted() {
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
    });
    harness()
        .validate(request("", "Service", service))
        .assert_accepted();

    // A DELETE carries no object.
    let mut delete = request("", "Pod", Value::Null);
    delete["operation"] = json!("DELETE");
    harness().validate(delete).assert_accepted();
}

// --- Malformed input --------------------------------------------------------

#[test]
fn an_unparseable_object_is_rejected_with_400() {
    let object = json!({"kind": "Pod", "spec": {"containers": "nginx"}});
    harness()
        .validate(request("", "Pod", object))
        .assert_rejected_with_code(
            "cannot read the pod spec of the Pod at spec: invalid type: string \"nginx\", expected a sequence",
            400,
        );

    let object = json!({"spec": {"template": {"spec": {"containers": [{"securityContext": {"privileged": "yes"}}]}}}});
    let verdict = harness().validate(request("apps", "Deployment", object));
    assert!(!verdict.allowed);
    assert_eq!(verdict.code, Some(400));
    assert!(
        verdict.message.as_deref().unwrap().starts_with(
            "cannot read the pod spec of the Deployment at spec.template.spec: invalid type: string \"yes\", expected a boolean"
        ),
        "{verdict:?}"
    );
}

#[test]
fn an_object_that_is_not_json_is_rejected_with_400() {
    let request: AdmissionRequest =
        portcullis_sdk::serde_json::from_value(request("", "Pod", json!({}))).unwrap();
    let mut wire = wit::AdmissionRequest::from(&request);
    wire.object = Some("{\"kind\": \"Pod\", \"spec\": ".into());
    let verdict = harness().validate_wire(wire);
    assert!(!verdict.allowed);
    assert_eq!(verdict.code, Some(400));
    assert!(
        verdict
            .message
            .as_deref()
            .unwrap()
            .starts_with("invalid admission request: `object` is not valid JSON"),
        "{verdict:?}"
    );
}

// --- Settings and metadata --------------------------------------------------

#[test]
fn settings_are_validated() {
    assert_eq!(harness().validate_settings(), Ok(()));
    assert_eq!(harness().settings_text("null").validate_settings(), Ok(()));
    assert_eq!(
        harness()
            .settings_file(SKIP_INIT_AND_EPHEMERAL)
            .validate_settings(),
        Ok(())
    );
    assert_eq!(
        harness()
            .settings_json(json!({"skip_init_containers": "yes"}))
            .validate_settings(),
        Err("invalid settings: skip_init_containers: invalid type: string \"yes\", expected a boolean".into())
    );
    assert_eq!(
        harness()
            .settings_json(json!({"skip_init_container": true}))
            .validate_settings(),
        Err("invalid settings: unknown field `skip_init_container`, expected `skip_init_containers` or `skip_ephemeral_containers`".into())
    );
}

#[test]
fn metadata_lists_every_workload_resource() {
    let metadata = harness().metadata();
    assert!(!metadata.mutating);
    assert!(!metadata.description.is_empty());
    let mut resources = Vec::new();
    for rule in &metadata.rules {
        assert_eq!(rule.api_versions, ["v1"]);
        assert_eq!(rule.operations, [Operation::Create, Operation::Update]);
        for resource in &rule.resources {
            resources.push(format!("{}/{resource}", rule.api_groups.join(",")));
        }
    }
    resources.sort();
    assert_eq!(
        resources,
        [
            "/pods",
            "/replicationcontrollers",
            "apps/daemonsets",
            "apps/deployments",
            "apps/replicasets",
            "apps/statefulsets",
            "batch/cronjobs",
            "batch/jobs",
        ]
    );
}

#[test]
fn raw_validation_is_not_supported() {
    harness()
        .validate_raw(json!({"anything": true}))
        .assert_rejected("this policy does not support raw validation");
}
