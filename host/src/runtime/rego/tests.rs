use super::*;
use crate::runtime::interpreter::testing::TestEngine;

/// A template of our own in the shape of Gatekeeper's required-labels:
/// parameters name the labels, each missing one is a violation.
const REQUIRED_LABELS: &str = r#"package portcullistest.requiredlabels

violation[{"msg": msg, "details": {"missing": missing}}] {
  provided := {label | input.review.object.metadata.labels[label]}
  required := {label | label := input.parameters.labels[_]}
  missing := required - provided
  count(missing) > 0
  msg := sprintf("the object lacks the labels %v", [sorted(missing)])
}

sorted(labels) = sort([label | labels[label]])
"#;

fn source(text: &str) -> RegoSource {
    RegoSource {
        modules: vec![RegoModule {
            name: "required-labels.rego".into(),
            text: text.into(),
            origin: None,
        }],
        rule: "violation".into(),
        rego_v0: true,
    }
}

fn engine() -> TestEngine {
    TestEngine::new()
}

fn input(labels: serde_json::Value) -> String {
    serde_json::json!({
        "review": {"object": {"metadata": {"name": "web", "labels": labels}}},
        "parameters": {"labels": ["team", "owner"]},
    })
    .to_string()
}

fn violations(json: Option<String>) -> serde_json::Value {
    serde_json::from_str(&json.expect("the rule is defined")).unwrap()
}

#[tokio::test]
async fn a_snapshot_evaluates_its_policy_in_fresh_instances() {
    let engine = engine();
    let runtime = RegoRuntime::new(&engine.sandbox());
    let prepared = runtime
        .prepare(&source(REQUIRED_LABELS), None)
        .await
        .unwrap();
    assert_eq!(prepared.origin(), CompileOrigin::Compiled);
    let limits = engine.limits();
    let denied = prepared
        .evaluate(limits, &input(serde_json::json!({"team": "a"})), None)
        .await
        .unwrap();
    assert_eq!(
        violations(denied),
        serde_json::json!([{
            "msg": "the object lacks the labels [\"owner\"]",
            "details": {"missing": ["owner"]},
        }])
    );
    let allowed = prepared
        .evaluate(
            limits,
            &input(serde_json::json!({"team": "a", "owner": "b"})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(violations(allowed), serde_json::json!([]));
}

#[tokio::test]
async fn rego_errors_name_the_module_line_and_column_and_nothing_is_cached() {
    let engine = engine();
    let runtime = RegoRuntime::new(&engine.sandbox());
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = CompiledCache::new(cache_dir.path());
    let broken =
        source("package portcullistest.broken\n\nviolation[{\"msg\": m}] {\n  m := @\n}\n");
    let Err(RegoError::Policy(diagnostic)) = runtime.prepare(&broken, Some(&cache)).await else {
        panic!("a syntax error is the policy's");
    };
    assert_eq!(
        diagnostic.to_string(),
        format!("required-labels.rego:4:8: {}", diagnostic.message)
    );
    assert!(
        diagnostic.report.contains("m := @"),
        "{}",
        diagnostic.report
    );
    let no_rule = source("package portcullistest.norule\nallow = true\n");
    let Err(RegoError::Policy(diagnostic)) = runtime.prepare(&no_rule, Some(&cache)).await else {
        panic!("a template without its rule is refused");
    };
    assert_eq!(
        diagnostic.message,
        "required-labels.rego: no rule `violation` is defined"
    );
    // Only the interpreter's code: no snapshot of a refused policy.
    assert_eq!(
        std::fs::read_dir(cache_dir.path()).map_or(0, |dir| dir.count()),
        1
    );
}

#[tokio::test]
async fn a_snapshot_is_a_function_of_its_source_and_is_cached_by_its_digest() {
    let engine = engine();
    let first = RegoRuntime::new(&engine.sandbox());
    let second = RegoRuntime::new(&engine.sandbox());
    let labels = source(REQUIRED_LABELS);
    let digest = labels.digest();
    let one = first.snapshot(&labels).await.unwrap();
    let again = second.snapshot(&labels).await.unwrap();
    assert!(one == again, "two snapshots of the same source differ");
    let other = source(&REQUIRED_LABELS.replace("lacks", "misses"));
    assert_ne!(other.digest(), digest);
    let different = first.snapshot(&other).await.unwrap();
    assert!(one != different);

    let cache_dir = tempfile::tempdir().unwrap();
    let cache = CompiledCache::new(cache_dir.path());
    let compiled = first.prepare(&labels, Some(&cache)).await.unwrap();
    assert_eq!(compiled.origin(), CompileOrigin::Compiled);
    let loaded = RegoRuntime::new(&engine.sandbox())
        .prepare(&labels, Some(&cache))
        .await
        .unwrap();
    assert_eq!(loaded.origin(), CompileOrigin::Cache);
    assert_eq!(loaded.digest(), digest);
    let found = loaded
        .evaluate(engine.limits(), &input(serde_json::json!({})), None)
        .await
        .unwrap();
    assert_eq!(violations(found).as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn inventory_data_reaches_one_evaluation_and_limits_hold() {
    let engine = engine();
    let runtime = RegoRuntime::new(&engine.sandbox());
    let unique_host = source(
        r#"package portcullistest.uniquehost

violation[{"msg": msg}] {
  host := input.review.object.spec.host
  other := data.inventory.namespace[ns][_]["Ingress"][name]
  other.spec.host == host
  msg := sprintf("host %v is taken by %v/%v", [host, ns, name])
}

violation[{"msg": "too big"}] {
  count(numbers.range(1, input.parameters.size)) > 1000000
}
"#,
    );
    let prepared = runtime.prepare(&unique_host, None).await.unwrap();
    let ingress = |host: &str| serde_json::json!({"spec": {"host": host}});
    let input =
        serde_json::json!({"review": {"object": ingress("a.example")}, "parameters": {"size": 1}})
            .to_string();
    let data = serde_json::json!({"inventory": {"namespace": {"shop": {"networking.k8s.io/v1": {"Ingress": {"web": ingress("a.example")}}}}}}).to_string();
    let limits = engine.limits();
    let found = prepared
        .evaluate(limits, &input, Some(&data))
        .await
        .unwrap();
    assert_eq!(
        violations(found),
        serde_json::json!([{"msg": "host a.example is taken by shop/web"}])
    );
    // The next evaluation is a fresh instance: the data is gone.
    let found = prepared.evaluate(limits, &input, None).await.unwrap();
    assert_eq!(violations(found), serde_json::json!([]));
    // One evaluation that allocates without end ends at the memory limit,
    // and costs only itself.
    let small = Limits {
        memory_bytes: 64 << 20,
        ..limits.clone()
    };
    let huge = serde_json::json!({"review": {"object": ingress("b")}, "parameters": {"size": 1_000_000_000}}).to_string();
    let error = prepared.evaluate(&small, &huge, None).await.unwrap_err();
    assert!(matches!(error, RegoEvalError::Guest(_)), "{error}");
    let found = prepared.evaluate(limits, &input, None).await.unwrap();
    assert_eq!(violations(found), serde_json::json!([]));
}
