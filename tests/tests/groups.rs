//! Policy groups over real HTTP: members (components and a Kubewarden
//! module) that accept, reject, fail, time out and mutate, combined by
//! expressions into one verdict with the group's message and one cause per
//! rejecting member; short-circuit proven by members that never run.

use portcullis_tests::server::TestServer;
use portcullis_tests::{get_text, http_client, json_file, review};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The members every test group has. On the privileged pod the two
/// pod-privileged members reject; `slow` would run into its 1-second
/// deadline, `fail` traps, `mutate` returns a patch.
const MEMBERS: &str = r#"
    accept: { module: hostile_policy.wasm, settings: { attack: none } }
    privileged: { module: pod_privileged.wasm }
    kw_privileged: { module: kw_pod_privileged.wasm }
    fail: { module: hostile_policy.wasm, settings: { attack: unreachable } }
    slow: { module: hostile_policy.wasm, timeoutEvalSeconds: 1, settings: { attack: loop } }
    mutate: { module: hostile_policy.wasm, settings: { attack: huge-mutation, bytes: 8 } }
"#;

const MESSAGE: &str = "the pod breaks the group's rule";

/// What a group should answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Admitted.
    Allowed,
    /// Rejected with the group's message and these members' causes.
    Rejected(&'static [&'static str]),
    /// Failed, closed: rejected with code 500 naming this member.
    Failed(&'static str),
}

use Expect::{Allowed, Failed, Rejected};

/// Expression, verdict on the privileged pod, members that must not run.
const TABLE: &[(&str, Expect, &[&str])] = &[
    ("accept()", Allowed, &[]),
    ("privileged()", Rejected(&["privileged"]), &[]),
    ("kw_privileged()", Rejected(&["kw_privileged"]), &[]),
    ("!privileged()", Allowed, &[]),
    ("!accept()", Rejected(&[]), &[]),
    ("accept() && accept()", Allowed, &[]),
    ("accept() && privileged()", Rejected(&["privileged"]), &[]),
    (
        "privileged() && slow()",
        Rejected(&["privileged"]),
        &["slow"],
    ),
    (
        "privileged() && fail()",
        Rejected(&["privileged"]),
        &["fail"],
    ),
    ("accept() || slow()", Allowed, &["slow"]),
    ("accept() || fail()", Allowed, &["fail"]),
    ("privileged() || accept()", Allowed, &[]),
    (
        "privileged() || kw_privileged()",
        Rejected(&["privileged", "kw_privileged"]),
        &[],
    ),
    ("privileged() == kw_privileged()", Allowed, &[]),
    ("privileged() != accept()", Allowed, &[]),
    (
        "privileged() != kw_privileged()",
        Rejected(&["privileged", "kw_privileged"]),
        &[],
    ),
    (
        "(accept() && privileged()) || (kw_privileged() && slow())",
        Rejected(&["privileged", "kw_privileged"]),
        &["slow"],
    ),
    ("true || slow()", Allowed, &["slow"]),
    ("accept() && slow()", Failed("slow"), &[]),
    ("accept() && fail()", Failed("fail"), &[]),
    ("!fail()", Failed("fail"), &[]),
    ("privileged() || fail()", Failed("fail"), &[]),
    ("mutate()", Rejected(&["mutate"]), &[]),
    (
        "mutate() || privileged()",
        Rejected(&["mutate", "privileged"]),
        &[],
    ),
];

/// One group per row of [`TABLE`], `g0`, `g1`, …, every member in each.
fn table_policies() -> String {
    let mut yml = String::new();
    for (i, (expression, _, _)) in TABLE.iter().enumerate() {
        yml.push_str(&format!(
            "g{i}:\n  expression: \"{expression}\"\n  message: \"{MESSAGE}\"\n  policies:{MEMBERS}"
        ));
    }
    yml
}

fn privileged_pod() -> Value {
    json_file("examples/pod-privileged/test_data/privileged_container.json")
}

fn unprivileged_pod() -> Value {
    json_file("examples/pod-privileged/test_data/no_privileged_containers.json")
}

async fn answer(server: &TestServer, path: &str, request: Value) -> Value {
    let response = http_client()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(review(request).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["response"].clone()
}

/// `(field, message)` of each cause.
fn causes(response: &Value) -> Vec<(String, String)> {
    response["status"]["details"]["causes"]
        .as_array()
        .map(|causes| {
            causes
                .iter()
                .map(|c| {
                    (
                        c["field"].as_str().unwrap().to_owned(),
                        c["message"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expressions_decide_with_accepting_rejecting_failing_and_slow_members() {
    let server = TestServer::start(&table_policies()).await;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..TABLE.len() {
        let url = format!("/validate/g{i}");
        let server_url = server.url(&url);
        requests.spawn(async move {
            let response = http_client()
                .post(server_url)
                .header("content-type", "application/json")
                .body(review(privileged_pod()).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body: Value = response.json().await.unwrap();
            (i, body["response"].clone())
        });
    }
    let mut answers = vec![Value::Null; TABLE.len()];
    while let Some(joined) = requests.join_next().await {
        let (i, response) = joined.unwrap();
        answers[i] = response;
    }
    for (i, (expression, expect, _)) in TABLE.iter().enumerate() {
        let response = &answers[i];
        let row = format!("g{i}: `{expression}`: {response}");
        match expect {
            Allowed => {
                assert_eq!(response["allowed"], true, "{row}");
                assert!(response.get("patch").is_none(), "{row}");
            }
            Rejected(members) => {
                assert_eq!(response["allowed"], false, "{row}");
                assert_eq!(response["status"]["message"], MESSAGE, "{row}");
                let fields: Vec<String> = causes(response).into_iter().map(|(f, _)| f).collect();
                let expected: Vec<String> = members
                    .iter()
                    .map(|m| format!("spec.policies.{m}"))
                    .collect();
                assert_eq!(fields, expected, "{row}");
            }
            Failed(member) => {
                assert_eq!(response["allowed"], false, "{row}");
                assert_eq!(response["status"]["code"], 500, "{row}");
                let message = response["status"]["message"].as_str().unwrap();
                assert!(
                    message
                        .starts_with(&format!("policy group `g{i}`: member `{member}` failed: ")),
                    "{row}"
                );
            }
        }
    }
    // Each member's causes carry what it said.
    let both = TABLE
        .iter()
        .position(|(e, _, _)| *e == "privileged() || kw_privileged()")
        .unwrap();
    let causes = causes(&answers[both]);
    assert_eq!(causes[0].1, "Privileged container is not allowed");
    assert!(!causes[1].1.is_empty(), "{causes:?}");
    let mutate = TABLE.iter().position(|(e, _, _)| *e == "mutate()").unwrap();
    assert_eq!(
        self::causes(&answers[mutate])[0].1,
        "mutation is not allowed inside a policy group"
    );
    let slow = TABLE
        .iter()
        .position(|(e, _, _)| *e == "accept() && slow()")
        .unwrap();
    let message = answers[slow]["status"]["message"].as_str().unwrap();
    assert!(message.contains("time"), "a timeout says so: {message}");

    // Short-circuit: a member the expression did not need never ran (a
    // member that runs is timed under its own id, `group/member`).
    let metrics = get_text(&format!("{}/metrics", server.probes)).await;
    for (i, (expression, _, never)) in TABLE.iter().enumerate() {
        for member in *never {
            let label = format!("policy=\"g{i}/{member}\"");
            assert!(
                !metrics.contains(&label),
                "g{i}: `{expression}` ran `{member}`"
            );
        }
    }
    assert!(metrics.contains("policy=\"g0/accept\""), "{metrics}");
    // Members run once: `privileged` in g(privileged() || …) counted once.
    assert!(
        metrics.contains(&format!(
            "portcullis_evaluation_seconds_count{{policy=\"g{both}/privileged\"}} 1\n"
        )),
        "{metrics}"
    );
    server.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_group_admits_what_its_members_accept_and_monitor_mode_only_reports() {
    let policies = format!(
        "both:\n  expression: \"privileged() && kw_privileged()\"\n  message: \"{MESSAGE}\"\n  \
         policies:{MEMBERS}\
         watching:\n  policyMode: monitor\n  expression: \"privileged()\"\n  message: \"{MESSAGE}\"\n  \
         policies:{MEMBERS}"
    );
    let server = TestServer::start(&policies).await;
    let response = answer(&server, "/validate/both", unprivileged_pod()).await;
    assert_eq!(response["allowed"], true, "{response}");
    let response = answer(&server, "/validate/both", privileged_pod()).await;
    assert_eq!(response["allowed"], false, "{response}");
    // Monitor: admitted, counted as the rejection it would have been.
    let response = answer(&server, "/validate/watching", privileged_pod()).await;
    assert_eq!(response, json!({"uid": response["uid"], "allowed": true}));
    // /audit reports what protect mode would do, whatever the mode.
    let response = answer(&server, "/audit/watching", privileged_pod()).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["message"], MESSAGE);
    // validate_raw: members see the raw document.
    let raw = http_client()
        .post(server.url("/validate_raw/both"))
        .header("content-type", "application/json")
        .body(privileged_pod()["object"].to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::OK);
    let metrics = get_text(&format!("{}/metrics", server.probes)).await;
    assert!(
        metrics.contains(
            "portcullis_evaluations_total{policy=\"watching\",mode=\"monitor\",outcome=\"rejected\"} 1"
        ),
        "{metrics}"
    );
    // A member is not a policy of its own: no route reaches it alone.
    let alone = http_client()
        .post(server.url("/validate/both%2Fprivileged"))
        .header("content-type", "application/json")
        .body(review(privileged_pod()).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(alone.status(), StatusCode::NOT_FOUND);
    server.server.shutdown().await.unwrap();
}
