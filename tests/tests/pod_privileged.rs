//! Kubewarden's own pod-privileged fixtures give Kubewarden's verdicts
//! (tests/kubewarden-policies/pod-privileged/expected.json) through the real
//! component and through a Kubewarden-protocol module with the same
//! semantics (written with Kubewarden's Rust SDK): loaded and evaluated by
//! the library, and served over HTTP.

use portcullis::admission::parse_review_or_request;
use portcullis::{Environment, PolicySpec};
use portcullis_tests::server::TestServer;
use portcullis_tests::{component, engine, http_client, json_file, repo_file, review};
use serde_json::{Value, json};

const TEST_DATA: &str = "examples/pod-privileged/test_data";

/// The component and the Kubewarden module.
const POLICIES: [&str; 2] = ["pod_privileged", "kw_pod_privileged"];

/// One expected verdict.
struct Case {
    fixture: String,
    settings: Value,
    expected: (bool, Option<String>),
}

fn cases() -> Vec<Case> {
    let expected = json_file("tests/kubewarden-policies/pod-privileged/expected.json");
    expected["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| Case {
            fixture: case["fixture"].as_str().unwrap().to_owned(),
            settings: match case["settings"].as_str() {
                Some(file) => json_file(format!("{TEST_DATA}/{file}")),
                None => json!({}),
            },
            expected: (
                case["allowed"].as_bool().unwrap(),
                case["message"].as_str().map(str::to_owned),
            ),
        })
        .collect()
}

#[tokio::test]
async fn kubewarden_test_data_gets_kubewardens_verdicts() {
    for policy in POLICIES {
        for case in cases() {
            let spec =
                PolicySpec::new("privileged", component(policy)).with_settings(case.settings);
            let env = Environment::load(&engine(), [spec], None).await.unwrap();
            let body = std::fs::read(repo_file(format!("{TEST_DATA}/{}", case.fixture))).unwrap();
            let request = parse_review_or_request(&body).unwrap();
            let verdict = env.validate("privileged", &request).await.unwrap();
            let got = (verdict.response.allowed, verdict.response.message);
            assert_eq!(got, case.expected, "{policy}: {}", case.fixture);
        }
    }
}

#[tokio::test]
async fn served_verdicts_on_kubewardens_test_data() {
    let skip = "settings_skip_init_and_ephemeral_containers.json";
    let policies = POLICIES
        .iter()
        .map(|p| {
            format!(
                "{p}: {{ module: {p}.wasm }}\n{p}-skip: {{ module: {p}.wasm, settings: {} }}\n",
                json_file(format!("{TEST_DATA}/{skip}"))
            )
        })
        .collect::<String>();
    let server = TestServer::start(&policies).await;
    for policy in POLICIES {
        for case in cases() {
            let id = match case.settings.as_object().is_some_and(|s| s.is_empty()) {
                true => policy.to_owned(),
                false => format!("{policy}-skip"),
            };
            let fixture = json_file(format!("{TEST_DATA}/{}", case.fixture));
            let body = match fixture.get("request") {
                Some(_) => fixture,
                None => review(fixture),
            };
            let response: Value = http_client()
                .post(server.url(&format!("/validate/{id}")))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let response = &response["response"];
            let got = (
                response["allowed"].as_bool().unwrap(),
                response["status"]["message"].as_str().map(str::to_owned),
            );
            assert_eq!(got, case.expected, "{id}: {}", case.fixture);
        }
    }
    server.server.shutdown().await.unwrap();
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
