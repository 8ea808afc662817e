//! Context-aware policies through the host: the two examples and
//! Kubewarden modules (a raw host call, and the Kubewarden SDK's
//! `list_resources_all` and `can_i` helpers) reading a cluster made of a
//! `--resources` file, the grant's gating (import without grant, grant
//! without import, kinds not granted, the grant's field masks), the typed
//! errors, and a component built against `portcullis:policy@0.1.0` still
//! working on this host.

use std::sync::Arc;

use portcullis::admission::parse_review_or_request;
use portcullis::capabilities::kubernetes::offline::ResourcesFile;
use portcullis::capabilities::{
    Capabilities, ContextAwareResource, Grants, HostCapabilities, Kubernetes,
};
use portcullis::environment::LoadFailure;
use portcullis::{Engine, Environment, Limits, PolicySpec};
use portcullis_tests::{component, engine, repo_file, shared_cache};
use serde_json::json;

/// An engine whose Kubernetes reads are answered from `file` (as
/// `serve --resources`/`run --resources` build it).
fn engine_reading(file: &str) -> Engine {
    engine_answering(ResourcesFile::read(&repo_file(file)).unwrap())
}

/// An engine whose Kubernetes reads are answered from the objects `text`
/// holds (YAML).
fn engine_with_objects(text: &str) -> Engine {
    engine_answering(ResourcesFile::parse(text).unwrap())
}

fn engine_answering(file: ResourcesFile) -> Engine {
    let capabilities = Capabilities::default().with(Arc::new(Kubernetes::new(file.into_cluster())));
    Engine::with_capabilities(Limits::default(), capabilities).unwrap()
}

fn granted(resources: &[(&str, &str)]) -> Grants {
    Grants {
        context_aware_resources: resources
            .iter()
            .map(|(v, k)| ContextAwareResource::new(*v, *k))
            .collect(),
        ..Grants::default()
    }
}

async fn verdict(env: &Environment, id: &str, fixture: &str) -> (bool, Option<String>) {
    let body = std::fs::read(repo_file(fixture)).unwrap();
    let request = parse_review_or_request(&body).unwrap();
    let response = env.validate(id, &request).await.unwrap().response;
    (response.allowed, response.message)
}

const NAMESPACES: &str = "examples/namespace-label-required/test_data/namespaces.yaml";
const INGRESSES: &str = "examples/unique-ingress-host/test_data/ingresses.yaml";

fn label_policy(grants: Grants) -> PolicySpec {
    PolicySpec::new("labels", component("namespace_label_required"))
        .with_settings(json!({"label": "team"}))
        .with_grants(grants)
}

/// A reload may not grant a resource the running host does not read: its
/// caches start with the server, so the grant would only fail later, in the
/// policy's reads. The running configuration stays.
#[tokio::test]
async fn a_reload_cannot_grant_what_the_running_host_does_not_read() {
    let plain = PolicySpec::new("plain", component("pod_privileged"));
    let grant = || label_policy(granted(&[("v1", "Namespace")]));
    // Started with no policy reading the cluster: no cluster at all.
    let env = Environment::load(&engine(), [plain.clone()], Some(&shared_cache()))
        .await
        .unwrap();
    let error = env
        .reload(vec![plain.clone(), grant()].into(), Some(&shared_cache()))
        .await
        .err()
        .expect("refused");
    assert_eq!(error.policy, "labels");
    assert!(matches!(error.reason, LoadFailure::NotServed(_)), "{error}");
    let message = error.to_string();
    assert!(message.contains("key `contextAwareResources`"), "{message}");
    assert!(message.contains("restart"), "{message}");
    assert!(env.policy("plain").is_some() && env.policy("labels").is_none());
    // A host that reads the resource takes the same reload.
    let env = Environment::load(
        &engine_reading(NAMESPACES),
        [plain.clone()],
        Some(&shared_cache()),
    )
    .await
    .unwrap();
    let reloaded = env
        .reload(vec![plain, grant()].into(), Some(&shared_cache()))
        .await
        .unwrap();
    assert!(reloaded.policy("labels").is_some());
}

#[tokio::test]
async fn namespace_label_required_reads_the_namespace() {
    let spec = label_policy(granted(&[("v1", "Namespace")]));
    let env = Environment::load(&engine_reading(NAMESPACES), [spec], Some(&shared_cache()))
        .await
        .unwrap();
    let dir = "examples/namespace-label-required/test_data";
    assert_eq!(
        verdict(&env, "labels", &format!("{dir}/pod_in_payments.json")).await,
        (true, None)
    );
    assert_eq!(
        verdict(&env, "labels", &format!("{dir}/pod_in_scratch.json")).await,
        (
            false,
            Some("namespace `scratch` does not carry the label `team`".into())
        )
    );
}

#[tokio::test]
async fn unique_ingress_host_lists_ingresses_by_host() {
    let spec = PolicySpec::new("hosts", component("unique_ingress_host"))
        .with_grants(granted(&[("networking.k8s.io/v1", "Ingress")]));
    let env = Environment::load(&engine_reading(INGRESSES), [spec], Some(&shared_cache()))
        .await
        .unwrap();
    let dir = "examples/unique-ingress-host/test_data";
    assert_eq!(
        verdict(&env, "hosts", &format!("{dir}/ingress_taken_host.json")).await,
        (
            false,
            Some("host `shop.example` is already used by Ingress `shop/front`".into())
        )
    );
    assert_eq!(
        verdict(&env, "hosts", &format!("{dir}/ingress_new_host.json")).await,
        (true, None)
    );
}

#[tokio::test]
async fn a_kind_not_granted_is_the_policys_not_granted_error() {
    // Granted Pods, not Namespaces: the read is refused with Kubewarden's
    // message, which the policy reports (it fails closed).
    let spec = label_policy(granted(&[("v1", "Pod")]));
    let env = Environment::load(&engine_reading(NAMESPACES), [spec], Some(&shared_cache()))
        .await
        .unwrap();
    let (allowed, message) = verdict(
        &env,
        "labels",
        "examples/namespace-label-required/test_data/pod_in_payments.json",
    )
    .await;
    assert!(!allowed);
    assert_eq!(
        message.unwrap(),
        "cannot read namespace `payments`: not granted: Policy has not been granted access to \
         Kubernetes v1/Namespace resources. The violation has been reported."
    );
}

#[tokio::test]
async fn the_grants_field_masks_are_all_the_policy_sees() {
    // Granted Namespaces' names only: the label is masked away.
    let mut grants = granted(&[("v1", "Namespace")]);
    grants.context_aware_resources[0].field_masks = vec!["metadata.name".into()];
    let env = Environment::load(
        &engine_reading(NAMESPACES),
        [label_policy(grants)],
        Some(&shared_cache()),
    )
    .await
    .unwrap();
    assert_eq!(
        verdict(
            &env,
            "labels",
            "examples/namespace-label-required/test_data/pod_in_payments.json"
        )
        .await,
        (
            false,
            Some("namespace `payments` does not carry the label `team`".into())
        )
    );
}

#[tokio::test]
async fn an_import_without_a_grant_is_refused_at_load_naming_policy_and_import() {
    let Err(error) = Environment::load(
        &engine(),
        [label_policy(Grants::default())],
        Some(&shared_cache()),
    )
    .await
    else {
        panic!("a policy importing the capability without a grant was loaded");
    };
    assert_eq!(error.policy, "labels");
    assert!(
        matches!(&error.reason, LoadFailure::NotGranted { import }
            if import.starts_with("portcullis:policy/kubernetes@0.1.")),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("policy `labels` (")
            && message.contains("imports `portcullis:policy/kubernetes@0.1.")
            && message.contains("`contextAwareResources`"),
        "{message}"
    );
}

#[tokio::test]
async fn a_grant_without_the_import_loads_and_a_plain_policy_imports_only_wasi() {
    // pod-privileged reads nothing: a grant changes nothing (a warning).
    // The warning is a `tracing` event only (the loader returns nothing
    // that carries it, and this crate installs no subscriber to capture
    // it): host/tests/context_aware_cli.rs reads it in `run`'s stderr.
    let spec = PolicySpec::new("plain", component("pod_privileged"))
        .with_grants(granted(&[("v1", "Namespace")]));
    let env = Environment::load(&engine(), [spec], Some(&shared_cache()))
        .await
        .unwrap();
    let policy = env.policy("plain").unwrap();
    let Some(code) = policy
        .code()
        .downcast_ref::<portcullis::runtime::component::PolicyComponent>()
    else {
        panic!("a component")
    };
    let interface = portcullis::runtime::component::ComponentInterface::of(code.component());
    assert!(
        interface.imports.iter().all(|i| i.starts_with("wasi:")),
        "{:?}",
        interface.imports
    );
}

#[tokio::test]
async fn without_a_cluster_reads_say_none_is_configured() {
    // Granted, but the engine has no cluster (no --resources, no kubeconfig).
    let spec = label_policy(granted(&[("v1", "Namespace")]));
    let env = Environment::load(&engine(), [spec], Some(&shared_cache()))
        .await
        .unwrap();
    let (allowed, message) = verdict(
        &env,
        "labels",
        "examples/namespace-label-required/test_data/pod_in_payments.json",
    )
    .await;
    assert!(!allowed);
    assert_eq!(
        message.unwrap(),
        "cannot read namespace `payments`: Kubernetes API unavailable: no Kubernetes cluster \
         is configured (in a cluster, --kubeconfig or --resources FILE)"
    );
}

#[tokio::test]
async fn kubewarden_modules_read_through_the_same_capability() {
    // The test module reads `x` of the kind in its settings with a raw
    // kubernetes/get_resource host call and rejects with what it got.
    let file = "tests/fixtures/kubernetes.yaml";
    let grants = Grants {
        host_capabilities: HostCapabilities::new(["kubernetes/get_resource"]).unwrap(),
        ..granted(&[("v1", "Namespace")])
    };
    let read = |kind: &str| {
        PolicySpec::new(format!("read-{kind}"), component("kw_capability"))
            .with_settings(json!({"readKind": kind}))
            .with_grants(grants.clone())
    };
    let env = Environment::load(
        &engine_reading(file),
        [read("Namespace"), read("Secret")],
        Some(&shared_cache()),
    )
    .await
    .unwrap();
    let request = parse_review_or_request(
        &std::fs::read(repo_file(
            "examples/namespace-label-required/test_data/pod_in_payments.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let message = async |id: &str| {
        env.validate(id, &request)
            .await
            .unwrap()
            .response
            .message
            .unwrap()
    };
    let namespace = message("read-Namespace").await;
    let object: serde_json::Value =
        serde_json::from_str(namespace.strip_prefix("read: ").unwrap()).unwrap();
    assert_eq!(object["metadata"]["labels"]["owner"], "kubewarden-fixture");
    assert_eq!(object["kind"], "Namespace");
    assert_eq!(
        message("read-Secret").await,
        "host capability failed: Host error: Policy has not been granted access to Kubernetes \
         v1/Secret resources. The violation has been reported."
    );
}

/// What the Kubewarden SDK module `kw_context_aware` reads: a freeze
/// ConfigMap in one namespace, one labelled elsewhere for another, and the
/// SubjectAccessReviews `can_i` is answered from.
const KUBEWARDEN_CLUSTER: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: portcullis-freeze, namespace: frozen}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: freeze-payments
  namespace: ops
  labels: {portcullis.example/freezes: payments}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: unrelated
  namespace: web
  labels: {portcullis.example/freezes: elsewhere}
---
apiVersion: authorization.k8s.io/v1
kind: SubjectAccessReview
spec:
  user: alice
  groups: [devs, system:authenticated]
  resourceAttributes: {namespace: web, verb: delete, resource: pods}
status:
  allowed: true
  reason: 'RBAC: allowed by RoleBinding "deleters/web" of Role "deleter" to User "alice"'
---
apiVersion: authorization.k8s.io/v1
kind: SubjectAccessReview
spec:
  user: bob
  groups: [devs, system:authenticated]
  resourceAttributes: {namespace: web, verb: delete, resource: pods}
status:
  allowed: false
  reason: no RoleBinding lets bob delete pods
"#;

/// A pod created in `namespace` by `user` (of the groups `devs` and
/// `system:authenticated`).
fn pod_by(user: &str, namespace: &str) -> portcullis::bindings::AdmissionRequest {
    let review = portcullis_tests::review(json!({
        "uid": format!("{user}-{namespace}"),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "name": "p",
        "namespace": namespace,
        "operation": "CREATE",
        "userInfo": {"username": user, "groups": ["system:authenticated", "devs"]},
        "object": {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }
    }));
    parse_review_or_request(&serde_json::to_vec(&review).unwrap()).unwrap()
}

#[tokio::test]
async fn kubewarden_list_resources_all_and_can_i_answer_the_sdks_helpers() {
    // Kubewarden's SDK helpers (`list_all_resources`, `can_i`) call the host
    // and parse its answers as k8s-openapi types: a shape the SDK cannot
    // parse would be the policy's "cannot ..." error, not a verdict.
    let engine = engine_with_objects(KUBEWARDEN_CLUSTER);
    let all = [
        "kubernetes/list_resources_by_namespace",
        "kubernetes/list_resources_all",
        "kubernetes/can_i",
    ];
    let module = |id: &str, settings: serde_json::Value, capabilities: &[&str]| {
        PolicySpec::new(id, component("kw_context_aware"))
            .with_settings(settings)
            .with_grants(Grants {
                host_capabilities: HostCapabilities::new(capabilities).unwrap(),
                ..granted(&[("v1", "ConfigMap")])
            })
    };
    let access = json!({"requiredAccess": {"verb": "delete", "resource": "pods"}});
    let env = Environment::load(
        &engine,
        [
            module("default", json!({}), &all[..1]),
            module(
                "all",
                json!({"freezeLabel": "portcullis.example/freezes"}),
                &all[..2],
            ),
            module("can-i", access.clone(), &all),
            // Lists granted, `kubernetes/can_i` not.
            module("can-i-not-granted", access, &all[..2]),
            // Required in another namespace only: no review is asked here.
            module(
                "can-i-elsewhere",
                json!({"requiredAccess": {"verb": "delete", "resource": "pods",
                                          "namespaces": ["elsewhere"]}}),
                &all,
            ),
        ],
        Some(&shared_cache()),
    )
    .await
    .unwrap();
    let answer = async |id: &str, user: &str, namespace: &str| {
        let response = env
            .validate(id, &pod_by(user, namespace))
            .await
            .unwrap()
            .response;
        (response.allowed, response.message, response.warnings)
    };

    // Without settings: the namespace's own freeze ConfigMap only.
    assert_eq!(
        answer("default", "alice", "frozen").await,
        (
            false,
            Some("namespace `frozen` is frozen (ConfigMap `portcullis-freeze`)".into()),
            vec![]
        )
    );
    assert_eq!(
        answer("default", "alice", "payments").await,
        (true, None, vec![])
    );
    // list_resources_all: a ConfigMap in another namespace freezes this one.
    assert_eq!(
        answer("all", "alice", "payments").await,
        (
            false,
            Some("namespace `payments` is frozen by ConfigMap `ops/freeze-payments`".into()),
            vec![]
        )
    );
    assert_eq!(answer("all", "alice", "web").await, (true, None, vec![]));
    // can_i: the review's answer, allowed with its reason, or not.
    assert_eq!(
        answer("can-i", "alice", "web").await,
        (
            true,
            None,
            vec![
                "kubernetes/can_i: user `alice` may delete pods in namespace `web`: RBAC: \
                 allowed by RoleBinding \"deleters/web\" of Role \"deleter\" to User \"alice\""
                    .to_owned()
            ]
        )
    );
    assert_eq!(
        answer("can-i", "bob", "web").await,
        (
            false,
            Some(
                "user `bob` may not delete pods in namespace `web` (denied: false, reason: \
                 `no RoleBinding lets bob delete pods`)"
                    .into()
            ),
            vec![]
        )
    );
    assert_eq!(
        answer("can-i-elsewhere", "bob", "web").await,
        (true, None, vec![])
    );
    // A review the file does not hold: the host's error reaches the policy.
    let (allowed, message, _) = answer("can-i", "carol", "web").await;
    assert!(!allowed);
    let message = message.unwrap();
    assert!(
        message.starts_with("cannot ask can_i: ")
            && message.contains("the resources file holds no SubjectAccessReview"),
        "{message}"
    );
    // Not granted: Kubewarden's denial, before any review is asked.
    let (allowed, message, _) = answer("can-i-not-granted", "alice", "web").await;
    assert!(!allowed);
    let message = message.unwrap();
    assert!(
        message.contains(
            "Policy has not been granted access to the 'kubernetes/can_i' host capability. \
             The violation has been reported."
        ),
        "{message}"
    );
}

#[tokio::test]
async fn a_component_asks_can_i_through_the_typed_import() {
    // tests/policies/can-i: the `can-i` of the context-aware world, with
    // the review's fields going in and the status's coming back.
    let engine = engine_with_objects(KUBEWARDEN_CLUSTER);
    let policy = |id: &str, grants: Grants| {
        PolicySpec::new(id, component("can_i_policy"))
            .with_settings(json!({"verb": "delete", "resource": "pods"}))
            .with_grants(grants)
    };
    let env = Environment::load(
        &engine,
        [
            policy(
                "can-i",
                Grants {
                    host_capabilities: HostCapabilities::new(["kubernetes/can_i"]).unwrap(),
                    ..Grants::default()
                },
            ),
            // Reads granted, `kubernetes/can_i` not: it loads, and its
            // question gets the not-granted error.
            policy("can-i-not-granted", granted(&[("v1", "ConfigMap")])),
        ],
        Some(&shared_cache()),
    )
    .await
    .unwrap();
    let answer = async |id: &str, user: &str| {
        let response = env
            .validate(id, &pod_by(user, "web"))
            .await
            .unwrap()
            .response;
        (response.allowed, response.message, response.warnings)
    };
    assert_eq!(
        answer("can-i", "alice").await,
        (
            true,
            None,
            vec![
                "`alice` may delete pods: RBAC: allowed by RoleBinding \"deleters/web\" of \
                 Role \"deleter\" to User \"alice\""
                    .to_owned()
            ]
        )
    );
    assert_eq!(
        answer("can-i", "bob").await,
        (
            false,
            Some("`bob` may not delete pods: no RoleBinding lets bob delete pods".into()),
            vec![]
        )
    );
    let (allowed, message, _) = answer("can-i", "carol").await;
    assert!(!allowed);
    let message = message.unwrap();
    assert!(
        message.starts_with("cannot ask whether `carol` may delete pods: ")
            && message.contains("the resources file holds no SubjectAccessReview"),
        "{message}"
    );
    let (allowed, message, _) = answer("can-i-not-granted", "alice").await;
    assert!(!allowed);
    let message = message.unwrap();
    assert!(
        message.contains(
            "Policy has not been granted access to the 'kubernetes/can_i' host capability."
        ),
        "{message}"
    );
}

#[tokio::test]
async fn a_component_built_against_0_1_0_keeps_working() {
    // Built by the SDK of portcullis:policy@0.1.0 and kept as it was: it
    // exports admission@0.1.0, which this host (0.1.1) calls unchanged.
    let fixture = repo_file("tests/fixtures/disallow_service_loadbalancer-0.1.0.wasm");
    let bytes = std::fs::read(&fixture).unwrap();
    assert!(
        bytes
            .windows(33)
            .any(|w| w == b"portcullis:policy/admission@0.1.0"),
        "the fixture must stay a 0.1.0 build"
    );
    let spec = PolicySpec::new("old", fixture);
    let env = Environment::load(&engine(), [spec], None).await.unwrap();
    let dir = "examples/disallow-service-loadbalancer/test_data";
    assert_eq!(
        verdict(&env, "old", &format!("{dir}/service_loadbalancer.json")).await,
        (
            false,
            Some("Service of type LoadBalancer are not allowed".into())
        )
    );
    assert_eq!(
        verdict(&env, "old", &format!("{dir}/service-clusterip.json")).await,
        (true, None)
    );
    assert_eq!(
        env.policy("old").unwrap().metadata().rules[0].resources,
        ["services"]
    );
}
