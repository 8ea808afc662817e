//! Context-aware policies from the command line: `run --resources` (its
//! verdict follows the file), `serve --resources` over HTTP (components and
//! a Kubewarden SDK module's `list_resources_all` and `can_i`), a component
//! importing the capability without a grant refused by `serve`, a grant
//! without the import warned about, `serve` refusing to start when a
//! policy may ask `kubernetes/can_i` and no cluster can be reached,
//! `inspect` naming the import, and `webhook-config --rbac`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

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
        run_with(
            "namespace_label_required",
            r#"{"label":"team"}"#,
            &example(&format!("{LABELS}/namespaces.yaml")),
            &format!("{LABELS}/{fixture}"),
        )
    };
    assert_eq!(run("pod_in_payments.json")["allowed"], true);
    let denied = run("pod_in_scratch.json");
    assert_eq!(denied["allowed"], false);
    assert_eq!(
        denied["status"]["message"],
        "namespace `scratch` does not carry the label `team`"
    );
}

/// `portcullis run` of `component` with `settings` on the request `fixture`
/// (under examples/), answered from the resources file `resources`.
fn run_output(component_name: &str, settings: &str, resources: &Path, fixture: &str) -> Output {
    portcullis([
        "run".as_ref(),
        "--no-cache".as_ref(),
        "--policy".as_ref(),
        component(component_name).as_os_str(),
        "--settings-json".as_ref(),
        settings.as_ref(),
        "--resources".as_ref(),
        resources.as_os_str(),
        "--request".as_ref(),
        example(fixture).as_os_str(),
    ])
}

/// [`run_output`]'s AdmissionResponse, once the command succeeded.
fn run_with(
    component_name: &str,
    settings: &str,
    resources: &Path,
    fixture: &str,
) -> serde_json::Value {
    let output = run_output(component_name, settings, resources, fixture);
    serde_json::from_str(&success(&output)).unwrap()
}

#[test]
fn run_verdicts_follow_the_resources_file() {
    // The same request, the same policy: only the file changes.
    let dir = tempfile::tempdir().unwrap();
    let labelled = dir.path().join("labelled.yaml");
    std::fs::write(
        &labelled,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: scratch\n  labels: {team: sandbox}\n",
    )
    .unwrap();
    let scratch = format!("{LABELS}/pod_in_scratch.json");
    let settings = r#"{"label":"team"}"#;
    let denied = run_with(
        "namespace_label_required",
        settings,
        &example(&format!("{LABELS}/namespaces.yaml")),
        &scratch,
    );
    assert_eq!(denied["allowed"], false, "{denied}");
    assert_eq!(
        denied["status"]["message"],
        "namespace `scratch` does not carry the label `team`"
    );
    let admitted = run_with("namespace_label_required", settings, &labelled, &scratch);
    assert_eq!(admitted["allowed"], true, "{admitted}");

    // A list: the host is taken in one file, free in the other (the only
    // Ingress left uses another host).
    let other_host = dir.path().join("other-host.json");
    std::fs::write(
        &other_host,
        r#"{"apiVersion":"networking.k8s.io/v1","kind":"Ingress",
            "metadata":{"name":"blog","namespace":"blog"},
            "spec":{"rules":[{"host":"blog.example"}]}}"#,
    )
    .unwrap();
    let taken = "unique-ingress-host/test_data/ingress_taken_host.json";
    let denied = run_with(
        "unique_ingress_host",
        "{}",
        &example("unique-ingress-host/test_data/ingresses.yaml"),
        taken,
    );
    assert_eq!(denied["allowed"], false, "{denied}");
    assert_eq!(
        denied["status"]["message"],
        "host `shop.example` is already used by Ingress `shop/front`"
    );
    let admitted = run_with("unique_ingress_host", "{}", &other_host, taken);
    assert_eq!(admitted["allowed"], true, "{admitted}");
}

#[test]
fn run_warns_about_a_grant_the_component_cannot_read() {
    // `run --resources` grants every kind in the file; pod-privileged does
    // not import the capability: it loads, runs, and the log says why the
    // grant is useless.
    let output = run_output(
        "pod_privileged",
        "{}",
        &example(&format!("{LABELS}/namespaces.yaml")),
        "pod-privileged/test_data/privileged_pod_review.json",
    );
    let response: serde_json::Value = serde_json::from_str(&success(&output)).unwrap();
    assert_eq!(response["allowed"], false, "{response}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("WARN")
            && stderr.contains("policy is granted contextAwareResources but does not import")
            && stderr.contains("pod_privileged"),
        "{stderr}"
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

/// A cluster for `serve --resources`: the example's namespaces, a
/// ConfigMap freezing `payments` from another namespace, and the
/// SubjectAccessReviews `can_i` is answered from.
const SERVED_CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: payments, labels: {team: payments}}
---
apiVersion: v1
kind: Namespace
metadata: {name: web, labels: {team: web}}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: freeze-payments
  namespace: ops
  labels: {portcullis.example/freezes: payments}
---
apiVersion: authorization.k8s.io/v1
kind: SubjectAccessReview
spec:
  user: alice
  groups: [system:authenticated]
  resourceAttributes: {namespace: web, verb: delete, resource: pods}
status: {allowed: true, reason: alice may}
---
apiVersion: authorization.k8s.io/v1
kind: SubjectAccessReview
spec:
  user: bob
  groups: [system:authenticated]
  resourceAttributes: {namespace: web, verb: delete, resource: pods}
status: {allowed: false, reason: bob may not}
"#;

/// An AdmissionReview of a pod created in `namespace` by `user`.
fn pod_review(user: &str, namespace: &str) -> String {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("{user}-{namespace}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "p",
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": namespace},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}
            }
        }
    })
    .to_string()
}

#[test]
fn serve_answers_kubewarden_list_all_and_can_i_from_a_resources_file() {
    let dir = tempfile::tempdir().unwrap();
    let resources = dir.path().join("cluster.yaml");
    std::fs::write(&resources, SERVED_CLUSTER).unwrap();
    let policies = dir.path().join("policies.yml");
    std::fs::write(
        &policies,
        format!(
            "labels:\n  module: {labels}\n  settings: {{label: team}}\n  contextAwareResources:\n    \
             - {{apiVersion: v1, kind: Namespace}}\n\
             kw:\n  module: {kw}\n  settings:\n    freezeLabel: portcullis.example/freezes\n    \
             requiredAccess: {{verb: delete, resource: pods}}\n  \
             hostCapabilities: [kubernetes/list_resources_by_namespace, \
             kubernetes/list_resources_all, kubernetes/can_i]\n  contextAwareResources:\n    \
             - {{apiVersion: v1, kind: ConfigMap}}\n",
            labels = component("namespace_label_required").display(),
            kw = component("kw_context_aware").display(),
        ),
    )
    .unwrap();
    let mut command = serve_cmd();
    command
        .arg("--policies")
        .arg(&policies)
        .arg("--resources")
        .arg(&resources);
    let served = serve(command);
    let ask = |policy: &str, user: &str, namespace: &str| {
        let (status, body) = http(
            served.api,
            "POST",
            &format!("/validate/{policy}"),
            &pod_review(user, namespace),
        );
        assert_eq!(status, 200, "{body}");
        let review: serde_json::Value = serde_json::from_str(&body).unwrap();
        review["response"].clone()
    };
    // The component's get and the module's reads, side by side.
    assert_eq!(ask("labels", "alice", "web")["allowed"], true);
    let response = ask("kw", "alice", "web");
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(
        response["warnings"],
        serde_json::json!([
            "kubernetes/can_i: user `alice` may delete pods in namespace `web`: alice may"
        ])
    );
    let response = ask("kw", "bob", "web");
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(
        response["status"]["message"],
        "user `bob` may not delete pods in namespace `web` (denied: false, reason: `bob may not`)"
    );
    let response = ask("kw", "alice", "payments");
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(
        response["status"]["message"],
        "namespace `payments` is frozen by ConfigMap `ops/freeze-payments`"
    );
}

/// Waits (60 s at most) for `command` to exit; a server still running then
/// is killed and the test fails: it should not have started.
fn exits_without_serving(mut command: std::process::Command) -> Output {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "portcullis serve kept running: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn serve_needs_a_cluster_for_a_policy_granted_only_can_i() {
    // No resource granted, only `kubernetes/can_i`: still a policy that asks
    // the API server. With no cluster to reach, start-up fails, rather than
    // serving a policy whose every can_i answers "no cluster is configured".
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.yml");
    std::fs::write(
        &policies,
        format!(
            "who-may:\n  module: {}\n  settings:\n    requiredAccess: {{verb: delete, resource: pods}}\n  \
             hostCapabilities: [kubernetes/can_i]\n",
            component("kw_context_aware").display()
        ),
    )
    .unwrap();
    let mut command = serve_cmd();
    command
        .arg("--policies")
        .arg(&policies)
        .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
        .env("HOME", dir.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("PORTCULLIS_KUBECONFIG")
        .env_remove("PORTCULLIS_RESOURCES");
    let output = exits_without_serving(command);
    let stderr = failure(&output);
    assert!(
        stderr.contains("need a Kubernetes cluster") && stderr.contains("no-such-kubeconfig"),
        "{stderr}"
    );
    assert!(!stderr.contains(r#""message":"serving""#), "{stderr}");
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
