//! Kubewarden-protocol policies written with Kubewarden's own Rust SDK
//! (tests/kubewarden-policies, built for wasm32-wasip1 and annotated by
//! `portcullis annotate`), loaded beside components and evaluated by the
//! same host: each fixture's own cases (verdict, message, patch). The
//! pod-privileged one meets Kubewarden's test data in `pod_privileged.rs`.

use std::time::{Duration, Instant};

use base64::Engine as _;
use portcullis::environment::LoadFailure;
use portcullis::{Environment, PolicySpec};
use portcullis_tests::server::TestServer;
use portcullis_tests::{component, engine, http_client, json_file, review};
use serde_json::{Value, json};

#[tokio::test]
async fn a_kubewarden_module_and_a_component_load_side_by_side() {
    let specs = [
        PolicySpec::new("kw", component("kw_pod_privileged")),
        PolicySpec::new("kw-again", component("kw_pod_privileged")),
        PolicySpec::new("component", component("pod_privileged")),
        PolicySpec::new("wasi", component("kw_wasi_command")),
    ];
    let env = Environment::load(&engine(), specs, None).await.unwrap();
    assert_eq!(env.stats().unique_code, 3);
    let kw = env.policy("kw").unwrap();
    assert_eq!(kw.code().kind(), "kubewarden-wapc");
    assert!(kw.code().ptr_eq(env.policy("kw-again").unwrap().code()));
    assert_eq!(env.policy("component").unwrap().code().kind(), "component");
    assert_eq!(env.policy("wasi").unwrap().code().kind(), "kubewarden-wasi");
    // Rules and description come from the metadata section.
    let metadata = kw.metadata();
    assert_eq!(metadata.rules.len(), 3);
    assert_eq!(metadata.rules[1].api_groups, ["apps"]);
    assert!(!metadata.mutating);
    assert!(
        metadata
            .description
            .starts_with("Rejects workloads running privileged containers")
    );
}

#[tokio::test]
async fn settings_are_validated_by_the_module_at_load() {
    let load = |settings: Value| async move {
        let spec =
            PolicySpec::new("labels", component("kw_required_labels")).with_settings(settings);
        Environment::load(&engine(), [spec], None).await
    };
    for (settings, reason) in [
        (json!({}), "`labels` must not be empty"),
        (
            json!({"labels": ["team", "bad label"]}),
            "`bad label` is not a valid label name",
        ),
    ] {
        let error = load(settings).await.err().unwrap();
        match &error.reason {
            LoadFailure::SettingsRejected(got) => assert_eq!(got, reason),
            other => panic!("{other:?}"),
        }
        assert!(
            error.to_string().starts_with("policy `labels` ("),
            "{error}"
        );
    }
    // A settings document the SDK cannot even read is refused too.
    let error = load(json!({"labels": "team"})).await.err().unwrap();
    assert!(
        matches!(&error.reason, LoadFailure::SettingsRejected(m) if m.contains("invalid type")),
        "{error}"
    );
    load(json!({"labels": ["team"]})).await.unwrap();
}

fn pod(labels: Value, annotations: Value) -> Value {
    let mut request = json_file("examples/pod-privileged/test_data/no_privileged_containers.json");
    request["object"]["metadata"]["labels"] = labels;
    request["object"]["metadata"]["annotations"] = annotations;
    request
}

async fn post(server: &TestServer, path: &str, body: &Value) -> Value {
    let response = http_client()
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let body: Value = response.json().await.unwrap();
    body["response"].clone()
}

const POLICIES: &str = r#"
privileged: { module: kw_pod_privileged.wasm }
privileged-component: { module: pod_privileged.wasm }
annotate:
  module: kw_mutating.wasm
  allowedToMutate: true
  settings: { annotations: { checked-by: kubewarden-module } }
annotate-forbidden:
  module: kw_mutating.wasm
  settings: { annotations: { checked-by: kubewarden-module } }
labels:
  module: kw_required_labels.wasm
  settings: { labels: [team] }
labels-monitor:
  module: kw_required_labels.wasm
  policyMode: monitor
  settings: { labels: [team] }
labels-message:
  module: kw_required_labels.wasm
  message: "ask the platform team"
  settings: { labels: [team] }
raw:
  module: kw_raw.wasm
  settings: { validUsers: [tonio], validActions: [eats] }
sleepy:
  module: kw_sleeping.wasm
  timeoutEvalSeconds: 1
capability: { module: kw_capability.wasm }
capability-granted:
  module: kw_capability.wasm
  hostCapabilities: ["net/*"]
read-secret:
  module: kw_capability.wasm
  hostCapabilities: [kubernetes/get_resource]
  contextAwareResources: [{apiVersion: v1, kind: Namespace}]
  settings: {readKind: Secret}
read-namespace:
  module: kw_capability.wasm
  hostCapabilities: [kubernetes/get_resource]
  contextAwareResources: [{apiVersion: v1, kind: Namespace}]
  settings: {readKind: Namespace}
wasi:
  module: kw_wasi_command.wasm
  settings: { deniedLabels: [forbidden] }
wasi-lookup:
  module: kw_wasi_command.wasm
  settings: { lookupHost: registry.example.invalid }
wasi-lookup-granted:
  module: kw_wasi_command.wasm
  hostCapabilities: [net/v1/dns_lookup_host]
  settings: { lookupHost: registry.example.invalid }
"#;

#[tokio::test]
async fn served_kubewarden_modules_answer_as_kubewarden_would() {
    let server = TestServer::start(POLICIES).await;
    let privileged = review(json_file(
        "examples/pod-privileged/test_data/privileged_container.json",
    ));
    for policy in ["privileged", "privileged-component"] {
        let response = post(&server, &format!("/validate/{policy}"), &privileged).await;
        assert_eq!(response["allowed"], false, "{policy}");
        assert_eq!(
            response["status"]["message"],
            "Privileged container is not allowed"
        );
    }

    // Mutation: the patch turns the submitted object into the module's.
    let plain = pod(json!({"team": "a"}), json!({}));
    let response = post(&server, "/validate/annotate", &review(plain.clone())).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut object = plain["object"].clone();
    json_patch::patch(&mut object, &patch).unwrap();
    assert_eq!(
        object["metadata"]["annotations"]["checked-by"],
        "kubewarden-module"
    );
    // Already annotated: nothing to change.
    let done = pod(json!({}), json!({"checked-by": "kubewarden-module"}));
    let response = post(&server, "/validate/annotate", &review(done)).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
    // Not allowed to mutate: Kubewarden's rejection.
    let response = post(
        &server,
        "/validate/annotate-forbidden",
        &review(plain.clone()),
    )
    .await;
    assert_eq!(response["allowed"], false);
    assert_eq!(
        response["status"]["message"],
        "Request rejected by policy annotate-forbidden. The policy attempted to mutate the \
         request, but it is currently configured to not allow mutations."
    );
    // A mutation of a DELETE (no object): Kubewarden's null-object rule.
    let mut delete = plain.clone();
    delete["operation"] = json!("DELETE");
    delete["oldObject"] = delete["object"].take();
    let response = post(&server, "/validate/annotate", &review(delete)).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(
        response["status"]["message"],
        "Incoming object is null, which happens only with DELETE operations, but the policy \
         is attempting a mutation. This is not allowed"
    );

    // Warnings, code and audit annotations come through; monitor and message apply.
    let unlabelled = review(pod(json!({}), json!({})));
    let response = post(&server, "/validate/labels", &unlabelled).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(
        response["status"]["message"],
        "missing required labels: team"
    );
    assert_eq!(response["warnings"], json!(["label `team` is missing"]));
    let labelled = review(pod(json!({"team": "a"}), json!({})));
    let response = post(&server, "/validate/labels", &labelled).await;
    assert_eq!(response["allowed"], true);
    assert_eq!(
        response["auditAnnotations"],
        json!({"required-labels": "team"})
    );
    let response = post(&server, "/validate/labels-monitor", &unlabelled).await;
    assert_eq!(response["allowed"], true);
    let response = post(&server, "/validate/labels-message", &unlabelled).await;
    assert_eq!(response["status"]["message"], "ask the platform team");

    // Raw: Kubewarden's envelope and a bare document.
    for body in [
        json!({"request": {"user": "tonio", "action": "eats", "resource": "hay"}}),
        json!({"user": "tonio", "action": "eats", "resource": "hay"}),
    ] {
        let response = post(&server, "/validate_raw/raw", &body).await;
        assert_eq!(response["allowed"], true, "{body}: {response}");
    }
    let response = post(
        &server,
        "/validate_raw/raw",
        &json!({"request": {"user": "alice", "action": "eats", "resource": "hay"}}),
    )
    .await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["message"], "user `alice` is not allowed");

    // Host capabilities: denied as Kubewarden denies them, or not provided yet.
    let response = post(&server, "/validate/capability", &privileged).await;
    // The SDK wraps the host's error in its own words.
    assert_eq!(
        response["status"]["message"],
        "host capability failed: error invoking host capability net.dns_lookup_host: Host \
         error: Policy has not been granted access to the 'net/v1/dns_lookup_host' host \
         capability. The violation has been reported."
    );
    let response = post(&server, "/validate/capability-granted", &privileged).await;
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "the 'net/v1/dns_lookup_host' host capability is not provided by Portcullis yet"
        ),
        "{message}"
    );

    // Kubernetes reads: `contextAwareResources` gates the resource.
    let response = post(&server, "/validate/read-secret", &privileged).await;
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.ends_with(
            "Policy has not been granted access to Kubernetes v1/Secret resources. \
             The violation has been reported."
        ),
        "{message}"
    );
    // Granted, but this server reads no cluster (tests/context_aware.rs
    // reads one made of a file).
    let response = post(&server, "/validate/read-namespace", &privileged).await;
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.ends_with(
            "Callback evaluation failure: no Kubernetes cluster is configured (in a cluster, \
             --kubeconfig or --resources FILE)"
        ),
        "{message}"
    );

    // WASI mode: stdin in, stdout out; host calls answered on stdin.
    let forbidden = review(pod(json!({"forbidden": "x"}), json!({})));
    let response = post(&server, "/validate/wasi", &forbidden).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["message"], "denied labels: forbidden");
    let response = post(&server, "/validate/wasi", &labelled).await;
    assert_eq!(response["allowed"], true);
    let response = post(&server, "/validate/wasi-lookup", &labelled).await;
    assert_eq!(
        response["status"]["message"],
        "host capability failed: Policy has not been granted access to the \
         'net/v1/dns_lookup_host' host capability. The violation has been reported."
    );
    let response = post(&server, "/validate/wasi-lookup-granted", &labelled).await;
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("is not provided by Portcullis yet"),
        "{response}"
    );

    // A policy that sleeps past its deadline costs that request only.
    let mut sleepy = pod(
        json!({}),
        json!({"portcullis.sleep_duration_milliseconds": "5000"}),
    );
    sleepy["uid"] = json!("sleepy");
    let started = Instant::now();
    let response = post(&server, "/validate/sleepy", &review(sleepy)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response["status"]["code"], 500);
    assert_eq!(
        response["status"]["message"],
        "policy `sleepy` failed: policy evaluation timed out after 1000ms"
    );
    let response = post(&server, "/validate/sleepy", &labelled).await;
    assert_eq!(response["allowed"], true);

    // Evaluations of Kubewarden modules are counted like any other.
    let metrics = portcullis_tests::get_text(&format!("{}/metrics", server.probes)).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portcullis_evaluations_total{")
                && l.contains("policy=\"wasi\"")
                && l.contains("outcome=\"rejected\"")),
        "{metrics}"
    );
    server.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_wasi_command_validates_its_settings_at_load() {
    let spec = PolicySpec::new("wasi", component("kw_wasi_command"))
        .with_settings(json!({"deniedLabels": [""]}));
    let error = Environment::load(&engine(), [spec], None)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&error.reason, LoadFailure::SettingsRejected(m) if m == "deniedLabels must not contain an empty name"),
        "{error}"
    );
}

/// The logging fixture through the server: accepted, nothing else. (Its
/// log lines, from a real `portcullis serve`, are checked in
/// host/tests/kubewarden_cli.rs.)
#[tokio::test]
async fn a_policy_logging_through_tracing_log_is_served() {
    let server = TestServer::start("logging: { module: kw_logging.wasm }\n").await;
    let privileged = review(json_file(
        "examples/pod-privileged/test_data/privileged_container.json",
    ));
    let response = post(&server, "/validate/logging", &privileged).await;
    assert_eq!(response["allowed"], true, "{response}");
    for absent in ["status", "patch", "warnings", "auditAnnotations"] {
        assert!(response.get(absent).is_none(), "{absent}: {response}");
    }
    server.server.shutdown().await.unwrap();
}
