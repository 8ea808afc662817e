use super::*;

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
        }],
        rule: "violation".into(),
        rego_v0: true,
    }
}

fn engine() -> Engine {
    Engine::new(Limits::default()).unwrap()
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
    let runtime = RegoRuntime::new(&engine);
    let prepared = runtime.prepare(&source(REQUIRED_LABELS), None).await.unwrap();
    assert_eq!(prepared.origin(), CompileOrigin::Compiled);
    let limits = engine.limits();
    let denied = prepared
        .evaluate(&engine, limits, &input(serde_json::json!({"team": "a"})), None)
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
            &engine,
            limits,
            &input(serde_json::json!({"team": "a", "owner": "b"})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(violations(allowed), serde_json::json!([]));
}
