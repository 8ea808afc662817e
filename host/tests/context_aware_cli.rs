//! Context-aware policies from the command line: `run --resources`,
//! `serve --resources` over HTTP, a component importing the capability
//! without a grant refused by `serve`, `inspect` naming the import, and
//! `webhook-config --rbac`.

use std::path::PathBuf;

mod common;

use common::served::{http, portcullis as serve_cmd, serve};
use common::{component, failure, portcullis, repo, success};

fn example(path: &str) -> PathBuf {
    repo().join("examples").join(path)
}

const LABELS: &str = "namespace-label-required/test_data";

#[test]
fn run_answers_from_a_resources_file() {
    let run = |fixture: &str| {
        let output = portcullis([
            "run".as_ref(),
            "--no-cache".as_ref(),
            "--policy".as_ref(),
            component("namespace_label_required").as_os_str(),
            "--settings-json".as_ref(),
            r#"{"label":"team"}"#.as_ref(),
            "--resources".as_ref(),
            example(&format!("{LABELS}/namespaces.yaml")).as_os_str(),
            "--request".as_ref(),
            example(&format!("{LABELS}/{fixture}")).as_os_str(),
        ]);
        serde_json::from_str::<serde_json::Value>(&success(&output)).unwrap()
    };
    assert_eq!(run("pod_in_payments.json")["allowed"], true);
    let denied = run("pod_in_scratch.json");
    assert_eq!(denied["allowed"], false);
    assert_eq!(
        denied["status"]["message"],
        "namespace `scratch` does not carry the label `team`"
    );
}

#[test]
fn run_without_resources_refuses_the_import_and_says_why() {
    let output = portcullis([
        "run".as_ref(),
        "--no-cache".as_ref(),
        "--policy".as_ref(),
        component("unique_ingress_host").as_os_str(),
        "--request".as_ref(),
        example("unique-ingress-host/test_data/ingress_new_host.json").as_os_str(),
    ]);
    let stderr = failure(&output);
    assert!(
        stderr.contains("policy `unique_ingress_host`")
            && stderr.contains("imports `portcullis:policy/kubernetes@0.1.")
            && stderr.contains("contextAwareResources"),
        "{stderr}"
    );
}

#[test]
fn serve_answers_from_a_resources_file() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.yml");
    std::fs::write(
        &policies,
        format!(
            "labels:\n  module: {}\n  settings: {{label: team}}\n  contextAwareResources:\n    \
             - {{apiVersion: v1, kind: Namespace}}\n",
            component("namespace_label_required").display()
        ),
    )
    .unwrap();
    let mut command = serve_cmd();
    command
        .arg("--policies")
        .arg(&policies)
        .arg("--resources")
        .arg(example(&format!("{LABELS}/namespaces.yaml")));
    let served = serve(command);
    for (fixture, allowed) in [
        ("pod_in_payments.json", true),
        ("pod_in_scratch.json", false),
    ] {
        let body = std::fs::read_to_string(example(&format!("{LABELS}/{fixture}"))).unwrap();
        let (status, response) = http(served.api, "POST", "/validate/labels", &body);
        assert_eq!(status, 200, "{response}");
        let review: serde_json::Value = serde_json::from_str(&response).unwrap();
        assert_eq!(review["response"]["allowed"], allowed, "{response}");
    }
}

#[test]
fn serve_refuses_an_import_without_a_grant_naming_policy_and_import() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.yml");
    std::fs::write(
        &policies,
        format!(
            "hosts:\n  module: {}\n",
            component("unique_ingress_host").display()
        ),
    )
    .unwrap();
    let output = serve_cmd()
        .arg("--policies")
        .arg(&policies)
        .output()
        .unwrap();
    let stderr = failure(&output);
    assert!(
        stderr.contains("policy `hosts`")
            && stderr.contains("imports `portcullis:policy/kubernetes@0.1.1`"),
        "{stderr}"
    );
}

#[test]
fn inspect_names_the_kubernetes_import() {
    let output = portcullis([
        "inspect".as_ref(),
        component("unique_ingress_host").as_os_str(),
    ]);
    let report = success(&output);
    assert!(
        report.contains("portcullis:policy/kubernetes@0.1.1"),
        "{report}"
    );
    let plain = success(&portcullis([
        "inspect".as_ref(),
        component("pod_privileged").as_os_str(),
    ]));
    assert!(!plain.contains("portcullis:policy/kubernetes"), "{plain}");
}

#[test]
fn webhook_config_prints_the_rbac_of_the_granted_resources() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.yml");
    std::fs::write(
        &policies,
        format!(
            "hosts:\n  module: {}\n  contextAwareResources:\n    \
             - {{apiVersion: networking.k8s.io/v1, kind: Ingress}}\n\
             labels:\n  module: {}\n  settings: {{label: team}}\n  contextAwareResources:\n    \
             - {{apiVersion: v1, kind: Namespace}}\n",
            component("unique_ingress_host").display(),
            component("namespace_label_required").display()
        ),
    )
    .unwrap();
    let yaml = success(&portcullis([
        "webhook-config".as_ref(),
        "--policies".as_ref(),
        policies.as_os_str(),
        "--url".as_ref(),
        "https://127.0.0.1:9443".as_ref(),
        "--ca-file".as_ref(),
        repo()
            .join("host/tests/fixtures/webhook-ca.crt")
            .as_os_str(),
        "--no-cache".as_ref(),
        "--rbac".as_ref(),
    ]));
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    let role = documents
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    assert_eq!(
        role["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"],
             "verbs": ["get", "list", "watch"]},
        ])
    );
    let binding = documents
        .iter()
        .find(|d| d["kind"] == "ClusterRoleBinding")
        .expect("a ClusterRoleBinding");
    assert_eq!(
        binding["subjects"][0],
        serde_json::json!({"kind": "ServiceAccount", "name": "portcullis", "namespace": "portcullis"})
    );
}
