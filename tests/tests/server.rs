//! `portcullis serve` over real HTTP on 127.0.0.1: every endpoint, every
//! error, protect vs monitor, mutation, overload, metrics.

use std::time::{Duration, Instant};

use base64::Engine as _;
use portcullis::Limits;
use portcullis_tests::server::{TestServer, test_config};
use portcullis_tests::{get_text, http_client, json_file, review};
use reqwest::StatusCode;
use serde_json::{Value, json};

const POLICIES: &str = r#"
privileged: { module: pod_privileged.wasm }
privileged-monitor: { module: pod_privileged.wasm, policyMode: monitor }
privileged-custom-message: { module: pod_privileged.wasm, message: "ask the platform team" }
annotations:
  module: required_annotations.wasm
  allowedToMutate: true
  settings: { requiredAnnotations: { "fluxcd.io/cat": felix } }
annotations-no-mutation:
  module: required_annotations.wasm
  settings: { requiredAnnotations: { "fluxcd.io/cat": felix } }
counter: { module: counter_policy.wasm }
sleepy:
  module: sleeping.wasm
  timeoutEvalSeconds: 1
  settings: { sleepMilliseconds: 5000 }
"#;

fn privileged_pod() -> Value {
    json_file("examples/pod-privileged/test_data/privileged_container.json")
}

fn pod_without_annotations() -> Value {
    json_file("examples/required-annotations/test_data/pod_without_annotations.json")
}

async fn post(url: impl reqwest::IntoUrl, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
    let response = http_client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.json().await.expect("every answer is JSON");
    (status, body)
}

async fn post_review(server: &TestServer, path: &str, request: Value) -> Value {
    let (status, body) = post(&server.url(path), review(request).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    body["response"].clone()
}

#[tokio::test]
async fn protect_rejects_and_echoes_the_uid() {
    let server = TestServer::start(POLICIES).await;
    let response = post_review(&server, "/validate/privileged", privileged_pod()).await;
    assert_eq!(response["uid"], privileged_pod()["uid"]);
    assert_eq!(response["allowed"], false);
    assert_eq!(
        response["status"]["message"],
        "Privileged container is not allowed"
    );

    let ok = json_file("examples/pod-privileged/test_data/no_privileged_containers.json");
    let response = post_review(&server, "/validate/privileged", ok).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("status").is_none(), "{response}");
}

#[tokio::test]
async fn monitor_admits_but_counts_the_rejection() {
    let server = TestServer::start(POLICIES).await;
    let response = post_review(&server, "/validate/privileged-monitor", privileged_pod()).await;
    assert_eq!(response["allowed"], true);
    let metrics = get_text(&format!("{}/metrics", server.probes)).await;
    assert!(
        metrics.contains(
            r#"portcullis_evaluations_total{policy="privileged-monitor",mode="monitor",outcome="rejected"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_configured_message_replaces_the_policys() {
    let server = TestServer::start(POLICIES).await;
    let response = post_review(
        &server,
        "/validate/privileged-custom-message",
        privileged_pod(),
    )
    .await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["message"], "ask the platform team");
}

#[tokio::test]
async fn a_mutation_is_a_json_patch_that_yields_the_policys_object() {
    let server = TestServer::start(POLICIES).await;
    let request = pod_without_annotations();
    let response = post_review(&server, "/validate/annotations", request.clone()).await;
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut object = request["object"].clone();
    json_patch::patch(&mut object, &patch).unwrap();
    let expected =
        json_file("examples/required-annotations/test_data/pod_without_annotations.mutated.json");
    assert_eq!(object, expected);
}

#[tokio::test]
async fn a_mutation_without_permission_is_rejected() {
    let server = TestServer::start(POLICIES).await;
    let response = post_review(
        &server,
        "/validate/annotations-no-mutation",
        pod_without_annotations(),
    )
    .await;
    assert_eq!(response["allowed"], false);
    assert!(response.get("patch").is_none());
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "attempted to mutate the request, but it is currently configured to not allow mutations"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn audit_reports_the_verdict_and_never_mutates() {
    let server = TestServer::start(POLICIES).await;
    let response = post_review(&server, "/audit/privileged-monitor", privileged_pod()).await;
    assert_eq!(response["allowed"], false, "audit uses protect semantics");
    let response = post_review(&server, "/audit/annotations", pod_without_annotations()).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
}

#[tokio::test]
async fn warnings_and_audit_annotations_pass_through() {
    let server = TestServer::start(POLICIES).await;
    let response = post_review(&server, "/validate/counter", privileged_pod()).await;
    assert_eq!(response["allowed"], true);
    assert_eq!(response["auditAnnotations"], json!({"counter": "1"}));
    assert_eq!(
        response["warnings"],
        json!(["this instance has validated 1 request(s)"])
    );
}

#[tokio::test]
async fn validate_raw_takes_any_json_document() {
    let server = TestServer::start(POLICIES).await;
    let document = json!({"uid": "raw-1", "metadata": {"annotations": {"fluxcd.io/cat": "tom"}}});
    let (status, body) = post(
        &server.url("/validate_raw/annotations"),
        document.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["response"]["uid"], "raw-1");
    assert_eq!(body["response"]["allowed"], false);
    let (status, body) = post(&server.url("/validate_raw/annotations"), "[1, 2").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn a_timeout_is_a_500_rejection_saying_so() {
    let server = TestServer::start(POLICIES).await;
    let started = Instant::now();
    let response = post_review(&server, "/validate/sleepy", privileged_pod()).await;
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 500);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("timed out after 1000ms"), "{message}");
}

#[tokio::test]
async fn bad_requests_get_precise_json_errors() {
    let server = TestServer::start(POLICIES).await;
    let url = server.url("/validate/privileged");
    let cases: Vec<(String, StatusCode, &str)> = vec![
        ("{not json".into(), StatusCode::BAD_REQUEST, "malformed admission request"),
        (
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string(),
            StatusCode::BAD_REQUEST,
            "the AdmissionReview has no `request`",
        ),
        (
            json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": privileged_pod()})
                .to_string(),
            StatusCode::BAD_REQUEST,
            "expected apiVersion `admission.k8s.io/v1` and kind `AdmissionReview`, got apiVersion `admission.k8s.io/v1beta1`",
        ),
        (
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "Pod", "request": privileged_pod()}).to_string(),
            StatusCode::BAD_REQUEST,
            "got apiVersion `admission.k8s.io/v1` and kind `Pod`",
        ),
    ];
    for (body, status, message) in cases {
        let (got, answer) = post(&url, body).await;
        assert_eq!(got, status, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(message), "{error}");
    }

    let (status, answer) = post(
        &server.url("/validate/no-such-policy"),
        review(privileged_pod()).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"], "unknown policy `no-such-policy`");

    let response = http_client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "method not allowed"
    );

    // 1 MiB limit in the test configuration.
    let (status, answer) = post(&url, vec![b' '; (1 << 20) + 1]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        answer["error"],
        "request body too large (limit: 1048576 bytes)"
    );
}

#[tokio::test]
async fn probes_report_readiness_liveness_and_metrics() {
    let server = TestServer::start(POLICIES).await;
    let get = |path: &str| http_client().get(format!("{}{path}", server.probes)).send();
    assert_eq!(get("/readiness").await.unwrap().status(), StatusCode::OK);
    assert_eq!(get("/livez").await.unwrap().status(), StatusCode::OK);
    let metrics = || async { get("/metrics").await.unwrap().text().await.unwrap() };
    let counter =
        r#"portcullis_evaluations_total{policy="privileged",mode="protect",outcome="rejected"}"#;
    assert!(!metrics().await.contains(counter));
    for _ in 0..3 {
        post_review(&server, "/validate/privileged", privileged_pod()).await;
    }
    let text = metrics().await;
    assert!(text.contains(&format!("{counter} 3")), "{text}");
    assert!(
        text.contains(r#"portcullis_instantiation_seconds_count{policy="privileged"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"portcullis_evaluation_seconds_count{policy="privileged"} 3"#),
        "{text}"
    );
    assert!(
        text.contains("portcullis_in_flight_evaluations 0"),
        "{text}"
    );
}

#[tokio::test]
async fn always_accepted_namespace_skips_evaluation() {
    let mut config = test_config();
    config.always_accept_namespace = Some("portcullis-system".into());
    let server = TestServer::start_with(POLICIES, config, Limits::default()).await;
    let mut request = privileged_pod();
    request["namespace"] = json!("portcullis-system");
    assert_eq!(
        post_review(&server, "/validate/privileged", request).await["allowed"],
        true
    );
    assert_eq!(
        post_review(&server, "/validate/privileged", privileged_pod()).await["allowed"],
        false
    );
}

#[tokio::test]
async fn many_concurrent_requests_across_policies_are_all_answered() {
    let server = TestServer::start(POLICIES).await;
    let client = http_client();
    let ok = json_file("examples/pod-privileged/test_data/no_privileged_containers.json");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (path, request, expected) = match i % 4 {
            0 => ("/validate/privileged", privileged_pod(), false),
            1 => ("/validate/privileged", ok.clone(), true),
            2 => ("/validate/privileged-monitor", privileged_pod(), true),
            _ => ("/validate/annotations", pod_without_annotations(), true),
        };
        let url = server.url(path);
        let client = client.clone();
        tasks.spawn(async move {
            let body: Value = client
                .post(url)
                .body(review(request).to_string())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(body["response"]["allowed"], expected, "{path}: {body}");
        });
    }
    let mut answered = 0;
    while let Some(task) = tasks.join_next().await {
        task.unwrap();
        answered += 1;
    }
    assert_eq!(answered, 200);
}

#[tokio::test]
async fn beyond_its_share_and_the_queue_a_policy_is_refused_fast() {
    let mut config = test_config();
    config.workers = 1;
    config.queue_capacity = 0;
    let server = TestServer::start_with(POLICIES, config, Limits::default()).await;
    let url = server.url("/validate/sleepy");
    let busy = tokio::spawn(post(url.clone(), review(privileged_pod()).to_string()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A policy not measured yet has one evaluation per worker under way;
    // with no queue, its next request is refused at once...
    let started = Instant::now();
    let (status, body) = post(&url, review(privileged_pod()).to_string()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("server overloaded"),
        "{body}"
    );
    // ...while another policy is evaluated: the sleeping evaluation holds
    // none of the CPU.
    let (status, body) = post(
        &server.url("/validate/privileged"),
        review(privileged_pod()).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["response"]["allowed"], false, "{body}");
    // The busy request still gets its (timeout) answer.
    let (status, body) = busy.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["status"]["code"], 500);
    let metrics = get_text(&format!("{}/metrics", server.probes)).await;
    assert!(
        metrics.contains(r#"portcullis_overload_rejections_total{reason="queue_full"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() {
    let policies = "nap: { module: sleeping.wasm, settings: { sleepMilliseconds: 700 } }";
    let server = TestServer::start(policies).await;
    let url = server.url("/validate/nap");
    let in_flight = tokio::spawn(post(
        url.clone(),
        review(pod_without_annotations()).to_string(),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.server.shutdown().await.unwrap();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["allowed"], true, "{body}");
    // And nothing listens any more.
    assert!(http_client().post(&url).body("{}").send().await.is_err());
}
