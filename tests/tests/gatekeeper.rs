//! Gatekeeper's ConstraintTemplates served from a `policies.yml` entry
//! (`module: template.yaml`, `constraints: [files]`), over real HTTP: the
//! example template of our own, Gatekeeper's enforcement actions and its
//! denial message.

use portcullis::{Environment, PolicySpec, config};
use portcullis_tests::server::TestServer;
use portcullis_tests::{engine, http_client, repo_file, review};
use serde_json::{Value, json};

fn example(file: &str) -> String {
    repo_file("examples/gatekeeper-required-labels")
        .join(file)
        .display()
        .to_string()
}

fn object(file: &str) -> Value {
    let text = std::fs::read_to_string(example(file)).unwrap();
    portcullis::runtime::rego::gatekeeper::parse_documents(&text)
        .unwrap()
        .remove(0)
}

/// A CREATE request of `object`.
fn create(object: Value) -> Value {
    let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
        Some((group, version)) => (group.to_owned(), version.to_owned()),
        None => (
            String::new(),
            object["apiVersion"].as_str().unwrap().to_owned(),
        ),
    };
    json!({
        "uid": "gk-1",
        "kind": {"group": group, "version": version, "kind": object["kind"]},
        "resource": {"group": group, "version": version, "resource": "things"},
        "name": object["metadata"]["name"],
        "namespace": object["metadata"]["namespace"],
        "operation": "CREATE",
        "userInfo": {"username": "alice"},
        "object": object,
    })
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

#[tokio::test]
async fn a_template_and_its_constraints_are_served_with_gatekeepers_semantics() {
    let dir = tempfile::tempdir().unwrap();
    // One file holding two constraints, one of them dryrun.
    let dryrun = dir.path().join("constraints.yaml");
    std::fs::write(
        &dryrun,
        format!(
            "{}\n---\n{}",
            std::fs::read_to_string(example("samples/team-constraint.yaml")).unwrap(),
            r#"apiVersion: constraints.gatekeeper.sh/v1beta1
kind: PortcullisRequiredLabels
metadata:
  name: pods-would-need-a-cost-centre
spec:
  enforcementAction: dryrun
  match:
    kinds: [{apiGroups: [""], kinds: ["Pod"]}]
  parameters:
    labels: [{key: cost-centre}]
"#
        ),
    )
    .unwrap();
    let policies = format!(
        "labels:\n  module: {}\n  constraints:\n    - {}\n    - {}\n",
        example("template.yaml"),
        example("samples/owner-constraint.yaml"),
        dryrun.display(),
    );
    let server = TestServer::start(&policies).await;

    let response = post(
        &server,
        "/validate/labels",
        &review(create(object("samples/pod-unowned.yaml"))),
    )
    .await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(
        response["status"]["message"],
        r#"[pods-need-an-owner] Pod stray lacks the labels ["owner"]"#
    );

    let response = post(
        &server,
        "/validate/labels",
        &review(create(object("samples/pod-owned.yaml"))),
    )
    .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(response.get("warnings"), None, "{response}");

    // warn: allowed, with the violation as a warning.
    let response = post(
        &server,
        "/validate/labels",
        &review(create(object("samples/deployment-teamless.yaml"))),
    )
    .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(
        response["warnings"],
        json!([
            r#"[deployments-should-name-a-team] Deployment checkout lacks the labels ["team"]"#
        ])
    );

    // excludedNamespaces.
    let response = post(
        &server,
        "/validate/labels",
        &review(create(object("samples/pod-system.yaml"))),
    )
    .await;
    assert_eq!(response["allowed"], true, "{response}");

    // DELETE reviews the old object.
    let mut delete = create(object("samples/pod-unowned.yaml"));
    delete["operation"] = json!("DELETE");
    delete["oldObject"] = delete["object"].take();
    delete.as_object_mut().unwrap().remove("object");
    let response = post(&server, "/validate/labels", &review(delete)).await;
    assert_eq!(response["allowed"], false, "{response}");

    server.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_constraints_are_refused_at_load_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let load = |constraint: &str| {
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, constraint).unwrap();
        let text = format!(
            "labels:\n  module: {}\n  constraints: [{}]\n",
            example("template.yaml"),
            path.display()
        );
        config::parse(&text, dir.path(), "policies.yml")
    };
    // Parameters against the template's schema.
    let configuration =
        load(&std::fs::read_to_string(example("samples/bad-parameters-constraint.yaml")).unwrap())
            .unwrap();
    let error = Environment::load(&engine(), configuration.policies, None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.starts_with("policy `labels` ("), "{error}");
    assert!(error.contains("constraint `labels-as-a-string`"), "{error}");
    // Unknown match fields.
    let configuration = load(
        "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: PortcullisRequiredLabels\n\
         metadata: {name: typo}\nspec:\n  match: {kind: []}\n",
    )
    .unwrap();
    let error = Environment::load(&engine(), configuration.policies, None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("constraint `typo`: spec.match"), "{error}");
    // YAML that does not parse: the file, line and column.
    let error = load("metadata:\n  name: [unclosed\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("c.yaml"), "{error}");
    assert!(error.contains("line 2"), "{error}");
    // A template with a Rego error: its file's line and column.
    let template = dir.path().join("template.yaml");
    std::fs::write(
        &template,
        std::fs::read_to_string(example("template.yaml"))
            .unwrap()
            .replace("count(missing) > 0", "count(missing) > "),
    )
    .unwrap();
    let spec = PolicySpec::new("broken", &template);
    let error = Environment::load(&engine(), [spec], None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.starts_with("policy `broken` ("), "{error}");
    assert!(error.contains("): template:4"), "{error}");
}
