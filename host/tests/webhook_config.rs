//! `portcullis webhook-config` on the real example components: the YAML it
//! prints must parse as Kubernetes webhook configurations whose rules are the
//! ones each component declares.
//!
//! `tests/e2e-kubernetes` applies the same output to a real API server.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

mod common;

use common::{component, repo};

/// A CA certificate (its key was thrown away): only its bytes matter here.
fn ca_file() -> PathBuf {
    repo().join("host/tests/fixtures/webhook-ca.crt")
}

/// A policies file in a fresh directory, with absolute module paths.
fn policies_file(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("policies.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// `webhook-config` for a policies file of `yaml`, with a valid URL and CA:
/// for the tests of what the policies alone make fail.
fn webhook_config_for(yaml: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let policies = policies_file(dir.path(), yaml);
    portcullis(&[
        &"--policies",
        &policies,
        &"--url",
        &"https://127.0.0.1:3000",
        &"--ca-file",
        &ca_file(),
    ])
}

fn portcullis(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("webhook-config")
        .arg("--no-cache")
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .expect("running portcullis")
}

/// The two documents of a successful run.
fn configurations(
    output: &Output,
) -> (ValidatingWebhookConfiguration, MutatingWebhookConfiguration) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    let text = String::from_utf8(output.stdout.clone()).unwrap();
    let mut documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).expect("stdout is YAML");
    assert_eq!(documents.len(), 2, "{text}");
    let mutating =
        serde_json::from_value(documents.pop().unwrap()).expect("a mutating configuration");
    let validating =
        serde_json::from_value(documents.pop().unwrap()).expect("a validating configuration");
    (validating, mutating)
}

fn failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(output.stdout.is_empty(), "nothing is printed on failure");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn rule(groups: &[&str], resources: &[&str], operations: &[&str]) -> RuleWithOperations {
    let strings = |s: &[&str]| Some(s.iter().map(|s| s.to_string()).collect());
    RuleWithOperations {
        api_groups: strings(groups),
        api_versions: strings(if groups == ["*"] { &["*"] } else { &["v1"] }),
        resources: strings(resources),
        operations: strings(operations),
        scope: Some("*".to_owned()),
    }
}

fn excluding(namespace: &str) -> LabelSelector {
    serde_json::from_value(serde_json::json!({
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [namespace]}
        ]
    }))
    .unwrap()
}

#[test]
fn rules_come_from_each_component_and_only_allowed_mutators_are_mutating() {
    let dir = tempfile::tempdir().unwrap();
    let policies = policies_file(
        dir.path(),
        &format!(
            "
privileged-pods:
  module: {privileged}
privileged-pods-monitor:
  module: {privileged}
  policyMode: monitor
no-lb:
  module: {lb}
sleep:
  module: {sleeping}
  timeoutEvalSeconds: 5
  settings:
    sleepMilliseconds: 1
annotate:
  module: {annotations}
  allowedToMutate: true
  settings:
    requiredAnnotations:
      team: platform
annotate-not-allowed:
  module: {annotations}
  settings:
    requiredAnnotations:
      team: platform
",
            privileged = component("pod_privileged").display(),
            lb = component("disallow_service_loadbalancer").display(),
            sleeping = component("sleeping").display(),
            annotations = component("required_annotations").display(),
        ),
    );
    let output = portcullis(&[
        &"--policies",
        &policies,
        &"--url",
        &"https://127.0.0.1:8443/",
        &"--ca-file",
        &ca_file(),
        &"--namespace",
        &"policy-system",
    ]);
    let (validating, mutating) = configurations(&output);
    let ca = std::fs::read(ca_file()).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("allowedToMutate is false") && stderr.contains("annotate-not-allowed"),
        "the operator is told that mutations of annotate-not-allowed get rejected: {stderr}"
    );

    assert_eq!(validating.metadata.name.as_deref(), Some("portcullis"));
    assert_eq!(mutating.metadata.name.as_deref(), Some("portcullis"));
    let validating = validating.webhooks.unwrap();
    let names: Vec<_> = validating.iter().map(|w| w.name.as_str()).collect();
    // Sorted by policy id; the component that may mutate but is not allowed to
    // is validating, so its mutations are refused rather than applied.
    assert_eq!(
        names,
        [
            "annotate-not-allowed.portcullis.admission",
            "no-lb.portcullis.admission",
            "privileged-pods.portcullis.admission",
            "privileged-pods-monitor.portcullis.admission",
            "sleep.portcullis.admission",
        ]
    );
    for webhook in &validating {
        let id = webhook.name.split('.').next().unwrap();
        assert_eq!(
            webhook.client_config,
            WebhookClientConfig {
                url: Some(format!("https://127.0.0.1:8443/validate/{id}")),
                ca_bundle: Some(k8s_openapi::ByteString(ca.clone())),
                service: None,
            }
        );
        assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(webhook.side_effects, "None");
        assert_eq!(webhook.admission_review_versions, ["v1"]);
        assert_eq!(webhook.namespace_selector, Some(excluding("policy-system")));
        // The default --policy-timeout (2 s) plus headroom; `sleep` has 5 s of its own.
        let expected_timeout = if id == "sleep" { 7 } else { 4 };
        assert_eq!(webhook.timeout_seconds, Some(expected_timeout), "{id}");
    }
    let create_update = ["CREATE", "UPDATE"];
    let privileged = &validating[2];
    assert_eq!(
        privileged.rules.as_deref().unwrap(),
        [
            rule(&[""], &["pods", "replicationcontrollers"], &create_update),
            rule(
                &["apps"],
                &["deployments", "replicasets", "statefulsets", "daemonsets"],
                &create_update
            ),
            rule(&["batch"], &["jobs", "cronjobs"], &create_update),
        ]
    );
    assert_eq!(
        validating[1].rules.as_deref().unwrap(),
        [rule(&[""], &["services"], &create_update)]
    );

    let mutating = mutating.webhooks.unwrap();
    assert_eq!(mutating.len(), 1);
    let annotate = &mutating[0];
    assert_eq!(annotate.name, "annotate.portcullis.admission");
    assert_eq!(
        annotate.client_config.url.as_deref(),
        Some("https://127.0.0.1:8443/validate/annotate")
    );
    assert_eq!(
        annotate.rules.as_deref().unwrap(),
        [rule(&["*"], &["*"], &create_update)]
    );
    assert_eq!(annotate.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(annotate.side_effects, "None");
    assert_eq!(annotate.reinvocation_policy.as_deref(), Some("Never"));
    assert_eq!(
        annotate.namespace_selector,
        Some(excluding("policy-system"))
    );
}

#[test]
fn a_service_reference_uses_the_namespace_and_the_server_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let policies = policies_file(
        dir.path(),
        &format!(
            "privileged-pods:\n  module: {}\n",
            component("pod_privileged").display()
        ),
    );
    let output = portcullis(&[
        &"--policies",
        &policies,
        &"--service",
        &"webhook",
        &"--service-port",
        &"8443",
        &"--namespace",
        &"guard",
        &"--name",
        &"guard-rails",
        &"--policy-timeout",
        &"10",
        &"--ca-file",
        &ca_file(),
    ]);
    let (validating, mutating) = configurations(&output);
    assert_eq!(validating.metadata.name.as_deref(), Some("guard-rails"));
    // Present and empty: applying it removes mutating webhooks of an earlier run.
    assert_eq!(mutating.webhooks, Some(vec![]));
    let webhooks = validating.webhooks.unwrap();
    let webhook = &webhooks[0];
    assert_eq!(webhook.name, "privileged-pods.guard-rails.admission");
    let service = webhook.client_config.service.as_ref().unwrap();
    assert_eq!(service.namespace, "guard");
    assert_eq!(service.name, "webhook");
    assert_eq!(service.port, Some(8443));
    assert_eq!(service.path.as_deref(), Some("/validate/privileged-pods"));
    assert_eq!(webhook.client_config.url, None);
    assert_eq!(webhook.timeout_seconds, Some(12));
    assert_eq!(webhook.namespace_selector, Some(excluding("guard")));
}

#[test]
fn plain_http_is_refused() {
    let output = portcullis(&[&"--url", &"http://127.0.0.1:3000", &"--ca-file", &ca_file()]);
    assert!(failure(&output).contains("must start with https://"));
}

#[test]
fn a_ca_file_without_a_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.crt");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let output = portcullis(&[&"--url", &"https://127.0.0.1:3000", &"--ca-file", &not_pem]);
    let stderr = failure(&output);
    assert!(stderr.contains("no PEM certificate found"), "{stderr}");
    assert!(stderr.contains(&*not_pem.to_string_lossy()), "{stderr}");
}

#[test]
fn an_id_that_cannot_name_a_webhook_is_refused() {
    let output = webhook_config_for(&format!(
        "Privileged_Pods:\n  module: {}\n",
        component("pod_privileged").display()
    ));
    let stderr = failure(&output);
    assert!(stderr.contains("policy `Privileged_Pods`"), "{stderr}");
    assert!(stderr.contains("DNS label"), "{stderr}");
}

#[test]
fn settings_the_policy_rejects_produce_no_configuration() {
    let output = webhook_config_for(&format!(
        "annotate:\n  module: {}\n  allowedToMutate: true\n  settings:\n    requiredAnnotations: 7\n",
        component("required_annotations").display()
    ));
    let stderr = failure(&output);
    assert!(stderr.contains("policy `annotate`"), "{stderr}");
    assert!(stderr.contains("settings rejected"), "{stderr}");
}

#[test]
fn a_group_gets_one_validating_webhook_with_its_members_rules() {
    let output = webhook_config_for(&format!(
        "pods-and-services:\n  policyMode: monitor\n  expression: \"privileged() && no_lb()\"\n  \
         message: nope\n  policies:\n    privileged: {{ module: {privileged}, timeoutEvalSeconds: 3 }}\n    \
         no_lb: {{ module: {lb}, timeoutEvalSeconds: 4 }}\n    \
         again: {{ module: {privileged} }}\n",
        privileged = component("pod_privileged").display(),
        lb = component("disallow_service_loadbalancer").display(),
    ));
    let (validating, mutating) = configurations(&output);
    assert_eq!(mutating.webhooks.unwrap_or_default().len(), 0);
    let webhooks = validating.webhooks.unwrap();
    let [webhook] = &webhooks[..] else {
        panic!("one webhook for the group: {webhooks:?}")
    };
    assert_eq!(webhook.name, "pods-and-services.portcullis.admission");
    assert_eq!(
        webhook.client_config.url.as_deref(),
        Some("https://127.0.0.1:3000/validate/pods-and-services")
    );
    // Every member's rules, each once (two members run pod_privileged).
    let rules = webhook.rules.as_ref().unwrap();
    let resources: Vec<&str> = rules
        .iter()
        .flat_map(|r| r.resources.as_ref().unwrap())
        .map(String::as_str)
        .collect();
    assert!(resources.contains(&"pods"), "{resources:?}");
    assert!(resources.contains(&"services"), "{resources:?}");
    assert_eq!(
        resources.iter().filter(|r| **r == "pods").count(),
        1,
        "{resources:?}"
    );
    // Members run one after another: the sum of their deadlines (3 + 4 +
    // the default 2), plus headroom.
    assert_eq!(webhook.timeout_seconds, Some(11));
}

#[test]
fn a_group_whose_expression_names_no_member_produces_no_configuration() {
    let output = webhook_config_for(&format!(
        "g:\n  expression: \"a() || b(\"\n  message: m\n  policies:\n    a: {{ module: {} }}\n",
        component("pod_privileged").display(),
    ));
    let stderr = failure(&output);
    assert!(
        stderr.contains("policy `g`: key `expression`: expression `a() || b(`, column 10"),
        "{stderr}"
    );
}
