//! Kubewarden's own pod-privileged fixtures give Kubewarden's verdicts through
//! the real component and through a Kubewarden-protocol module with the same
//! semantics (written with Kubewarden's Rust SDK), each loaded and evaluated
//! by the host.

use portcullis::admission::parse_review_or_request;
use portcullis::{Environment, PolicySpec};
use portcullis_tests::{component, engine, json_file, repo_file};
use serde_json::json;

const TEST_DATA: &str = "examples/pod-privileged/test_data";

/// The component and the Kubewarden module.
const POLICIES: [&str; 2] = ["pod_privileged", "kw_pod_privileged"];

async fn verdict(
    policy: &str,
    settings: serde_json::Value,
    fixture: &str,
) -> (bool, Option<String>) {
    let spec = PolicySpec::new("privileged", component(policy)).with_settings(settings);
    let env = Environment::load(&engine(), [spec], None).await.unwrap();
    let body = std::fs::read(repo_file(format!("{TEST_DATA}/{fixture}"))).unwrap();
    let request = parse_review_or_request(&body).unwrap();
    let verdict = env.validate("privileged", &request).await.unwrap();
    (verdict.response.allowed, verdict.response.message)
}

fn rejected(message: &str) -> (bool, Option<String>) {
    (false, Some(message.to_owned()))
}

const ACCEPTED: (bool, Option<String>) = (true, None);

#[tokio::test]
async fn kubewarden_fixtures_with_default_settings() {
    let cases = [
        (
            "privileged_container.json",
            rejected("Privileged container is not allowed"),
        ),
        (
            "privileged_init_container.json",
            rejected("Privileged init container is not allowed"),
        ),
        (
            "privileged_ephemeral_container.json",
            rejected("Privileged ephemeral container is not allowed"),
        ),
        ("no_privileged_containers.json", ACCEPTED),
        (
            "deployment_with_privileged_containers.json",
            rejected("Privileged container is not allowed"),
        ),
        (
            "statefulset_with_privileged_container.json",
            rejected("Privileged container is not allowed"),
        ),
        (
            "privileged_pod_review.json",
            rejected("Privileged container is not allowed"),
        ),
    ];
    for policy in POLICIES {
        for (fixture, expected) in &cases {
            let got = verdict(policy, json!({}), fixture).await;
            assert_eq!(&got, expected, "{policy}: {fixture}");
        }
    }
}

#[tokio::test]
async fn kubewarden_fixtures_skipping_init_and_ephemeral_containers() {
    let settings = json_file(format!(
        "{TEST_DATA}/settings_skip_init_and_ephemeral_containers.json"
    ));
    let cases = [
        (
            "privileged_container.json",
            rejected("Privileged container is not allowed"),
        ),
        ("privileged_init_container.json", ACCEPTED),
        ("privileged_ephemeral_container.json", ACCEPTED),
        ("no_privileged_containers.json", ACCEPTED),
    ];
    for policy in POLICIES {
        for (fixture, expected) in &cases {
            let got = verdict(policy, settings.clone(), fixture).await;
            assert_eq!(&got, expected, "{policy}: {fixture}");
        }
    }
}

#[tokio::test]
async fn object_without_pod_spec_is_accepted_and_garbage_is_rejected() {
    let spec = PolicySpec::new("privileged", component("pod_privileged"));
    let env = Environment::load(&engine(), [spec], None).await.unwrap();
    let mut request = json_file("examples/pod-privileged/test_data/privileged_container.json");
    request["kind"] = json!({"group": "", "version": "v1", "kind": "Service"});
    request["object"] =
        json!({"apiVersion": "v1", "kind": "Service", "spec": {"type": "ClusterIP"}});
    let service = parse_review_or_request(request.to_string().as_bytes()).unwrap();
    assert!(
        env.validate("privileged", &service)
            .await
            .unwrap()
            .response
            .allowed
    );

    request["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
    request["object"] =
        json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": "not a list"}});
    let garbage = parse_review_or_request(request.to_string().as_bytes()).unwrap();
    let verdict = env.validate("privileged", &garbage).await.unwrap().response;
    assert!(!verdict.allowed);
    assert!(verdict.message.is_some_and(|m| !m.is_empty()));
}
