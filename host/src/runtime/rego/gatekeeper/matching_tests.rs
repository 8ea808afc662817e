use serde_json::{Value, json};

use super::*;

fn parse(value: Value) -> Match {
    let parsed: Match = serde_json::from_value(value).unwrap();
    parsed.validate().unwrap();
    parsed
}

fn pod(namespace: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": namespace, "labels": labels},
    })
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn matches(spec: &Match, object: &Value) -> bool {
    spec.matches(&Candidate {
        object: Some(object),
        ..Candidate::default()
    })
    .unwrap()
}

#[test]
fn an_empty_match_applies_to_everything() {
    assert!(matches(&parse(json!({})), &pod("default", json!({}))));
    assert!(matches(&parse(json!({})), &namespace("default", json!({}))));
}

#[test]
fn kinds_need_the_group_and_the_kind() {
    let spec = parse(
        json!({"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}, {"apiGroups": ["apps"], "kinds": ["Deployment"]}]}),
    );
    assert!(matches(&spec, &pod("default", json!({}))));
    let deployment =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
    assert!(matches(&spec, &deployment));
    let other_group = json!({"apiVersion": "extensions/v1beta1", "kind": "Deployment", "metadata": {"name": "d"}});
    assert!(!matches(&spec, &other_group));
    let wildcards = parse(json!({"kinds": [{"apiGroups": ["*"], "kinds": ["*"]}]}));
    assert!(matches(&wildcards, &other_group));
    let any_group = parse(json!({"kinds": [{"kinds": ["Deployment"]}]}));
    assert!(matches(&any_group, &other_group));
    assert!(!matches(&any_group, &pod("default", json!({}))));
}

#[test]
fn scope_tells_namespaced_from_cluster_scoped_objects() {
    let cluster = parse(json!({"scope": "Cluster"}));
    let namespaced = parse(json!({"scope": "Namespaced"}));
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}});
    assert!(matches(&cluster, &node));
    assert!(!matches(&namespaced, &node));
    assert!(!matches(&cluster, &pod("default", json!({}))));
    assert!(matches(&namespaced, &pod("default", json!({}))));
    // A Namespace counts as cluster-scoped.
    assert!(matches(&cluster, &namespace("default", json!({}))));
    assert!(!matches(&namespaced, &namespace("default", json!({}))));
    assert!(matches(&parse(json!({"scope": "*"})), &node));
    assert!(serde_json::from_value::<Match>(json!({"scope": "cluster"})).is_err());
}

#[test]
fn namespaces_and_excluded_namespaces_take_prefix_suffix_and_substring_patterns() {
    let only = parse(json!({"namespaces": ["kube-*", "*-system", "*team*", "prod"]}));
    for inside in ["kube-public", "gatekeeper-system", "a-team-b", "prod"] {
        assert!(matches(&only, &pod(inside, json!({}))), "{inside}");
    }
    assert!(!matches(&only, &pod("production", json!({}))));
    let except = parse(json!({"excludedNamespaces": ["kube-*"]}));
    assert!(!matches(&except, &pod("kube-system", json!({}))));
    assert!(matches(&except, &pod("default", json!({}))));
    // A Namespace is in itself; a cluster-scoped object in none, so neither
    // list can leave it out.
    assert!(!matches(&except, &namespace("kube-system", json!({}))));
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}});
    assert!(matches(&only, &node));
    assert!(matches(&except, &node));
}

#[test]
fn a_pattern_outside_the_schema_is_refused() {
    let error = serde_json::from_value::<Match>(json!({"namespaces": ["Kube_*"]})).unwrap_err();
    assert!(
        error.to_string().contains("`Kube_*` is not a name pattern"),
        "{error}"
    );
    let error = serde_json::from_value::<Match>(json!({"name": "a*b"})).unwrap_err();
    assert!(
        error.to_string().contains("`a*b` is not a name pattern"),
        "{error}"
    );
}

#[test]
fn label_selector_reads_the_object_labels() {
    let spec = parse(
        json!({"labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}}),
    );
    assert!(matches(&spec, &pod("default", json!({"app": "web"}))));
    assert!(!matches(&spec, &pod("default", json!({"app": "db"}))));
    assert!(!matches(&spec, &pod("default", Value::Null)));
}

#[test]
fn namespace_selector_reads_the_namespace_or_the_namespace_itself() {
    let spec = parse(json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}}));
    let object = pod("shop", json!({}));
    let prod = namespace("shop", json!({"env": "prod"}));
    let dev = namespace("shop", json!({"env": "dev"}));
    let with = |ns: &Value| {
        spec.matches(&Candidate {
            object: Some(&object),
            old_object: None,
            namespace: Some(ns),
        })
    };
    assert_eq!(with(&prod), Ok(true));
    assert_eq!(with(&dev), Ok(false));
    // Its namespace unknown, a namespaced object cannot be decided.
    assert_eq!(
        spec.matches(&Candidate {
            object: Some(&object),
            ..Candidate::default()
        }),
        Err(MatchError::UnknownNamespace)
    );
    // A Namespace is selected by its own labels; a cluster-scoped object always.
    assert!(matches(&spec, &prod));
    assert!(!matches(&spec, &dev));
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}});
    assert!(matches(&spec, &node));
    // An earlier field that does not match decides first: no error.
    let other_kind = parse(
        json!({"kinds": [{"kinds": ["Service"]}], "namespaceSelector": {"matchLabels": {"env": "prod"}}}),
    );
    assert!(!matches(&other_kind, &object));
}

#[test]
fn name_matches_the_name_or_a_generate_name_prefix() {
    let spec = parse(json!({"name": "web-*"}));
    assert!(matches(&spec, &pod("default", json!({}))));
    let generated = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "namespace": "a"}});
    assert!(matches(&spec, &generated));
    let suffix = parse(json!({"name": "*-1"}));
    assert!(matches(&suffix, &pod("default", json!({}))));
    assert!(
        !matches(&suffix, &generated),
        "a suffix cannot be told from a generateName"
    );
    assert!(!matches(
        &parse(json!({"name": "db"})),
        &pod("default", json!({}))
    ));
}

#[test]
fn the_old_object_matches_too_and_one_object_is_needed() {
    let spec = parse(json!({"labelSelector": {"matchLabels": {"app": "web"}}}));
    let new = pod("default", json!({"app": "db"}));
    let old = pod("default", json!({"app": "web"}));
    let candidate = Candidate {
        object: Some(&new),
        old_object: Some(&old),
        namespace: None,
    };
    assert_eq!(spec.matches(&candidate), Ok(true));
    let deleted = Candidate {
        object: Some(&Value::Null),
        old_object: Some(&old),
        namespace: None,
    };
    assert_eq!(spec.matches(&deleted), Ok(true));
    assert_eq!(
        spec.matches(&Candidate::default()),
        Err(MatchError::NoObject)
    );
}

#[test]
fn only_generated_objects_never_match_a_review() {
    assert!(!matches(
        &parse(json!({"source": "Generated"})),
        &pod("a", json!({}))
    ));
    assert!(matches(
        &parse(json!({"source": "Original"})),
        &pod("a", json!({}))
    ));
    assert!(matches(
        &parse(json!({"source": "All"})),
        &pod("a", json!({}))
    ));
}

#[test]
fn unknown_fields_are_refused() {
    let error = serde_json::from_value::<Match>(json!({"namespace": ["a"]})).unwrap_err();
    assert!(
        error.to_string().contains("unknown field `namespace`"),
        "{error}"
    );
    let error = serde_json::from_value::<Match>(json!({"kinds": [{"group": ["a"]}]})).unwrap_err();
    assert!(
        error.to_string().contains("unknown field `group`"),
        "{error}"
    );
}
