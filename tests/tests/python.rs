//! The Python policy `deny-labels` (examples/deny-labels-py), built with
//! componentize-py, through the real host: an 18 MB component that embeds
//! CPython, against the same WIT world as the Rust policies.
//!
//! Compiling it takes tens of seconds in a test build, so the tests share one
//! engine and one environment, loaded once, and the loads that must fail reuse
//! its compiled form through a compiled cache.

use std::path::PathBuf;

use portcullis::admission::parse_review_or_request;
use portcullis::bindings::{AdmissionRequest, Operation, ValidationResponse};
use portcullis::environment::LoadFailure;
use portcullis::{CompiledCache, Engine, Environment, Limits, LoadStats, PolicySpec};
use portcullis_tests::{component, engine_with, repo_file};
use serde_json::json;
use tokio::sync::OnceCell;

const TEST_DATA: &str = "examples/deny-labels-py/test_data";

/// Instances the shared engine lets be alive at once.
const MAX_INSTANCES: u32 = 32;

/// Denies `owner` and `cost-center`.
const DENY: &str = "deny";
/// The same component, denying `tier`.
const DENY_TIER: &str = "deny-tier";

struct Shared {
    engine: Engine,
    /// Compiled cache filled by the shared load; removed by the test that
    /// uses it.
    cache_dir: PathBuf,
    env: Environment,
}

static SHARED: OnceCell<Shared> = OnceCell::const_new();

/// One engine, and one environment with two policies sharing the Python
/// component, loaded with an empty compiled cache (which the load fills).
async fn shared() -> &'static Shared {
    SHARED
        .get_or_init(|| async {
            let engine = engine_with(Limits {
                max_instances: MAX_INSTANCES,
                // These tests check verdicts and capacity, not the deadline
                // (tests/tests/sandbox.rs does): on a loaded 2-core machine,
                // two dozen concurrent CPython evaluations of a 10,000-item
                // document can take longer than the default 2 s.
                timeout: std::time::Duration::from_secs(60),
                ..Limits::default()
            });
            let cache_dir = tempfile::Builder::new()
                .prefix("portcullis-python-test-cache-")
                .tempdir()
                .unwrap()
                .keep();
            let specs = [
                PolicySpec::new(DENY, component("deny_labels_py"))
                    .with_settings(json!({"deniedLabels": ["owner", "cost-center"]})),
                PolicySpec::new(DENY_TIER, component("deny_labels_py"))
                    .with_settings(json!({"deniedLabels": ["tier"]})),
            ];
            let env = Environment::load(&engine, specs, Some(&CompiledCache::new(&cache_dir)))
                .await
                .unwrap();
            Shared {
                engine,
                cache_dir,
                env,
            }
        })
        .await
}

fn fixture(name: &str) -> AdmissionRequest {
    let body = std::fs::read(repo_file(format!("{TEST_DATA}/{name}"))).unwrap();
    parse_review_or_request(&body).unwrap()
}

fn outcome(response: ValidationResponse) -> (bool, Option<String>, Option<u16>) {
    (response.allowed, response.message, response.code)
}

fn rejected(message: &str, code: u16) -> (bool, Option<String>, Option<u16>) {
    (false, Some(message.to_owned()), Some(code))
}

const ACCEPTED: (bool, Option<String>, Option<u16>) = (true, None, None);

async fn verdict(policy: &str, request: &AdmissionRequest) -> (bool, Option<String>, Option<u16>) {
    let env = &shared().await.env;
    outcome(env.validate(policy, request).await.unwrap().response)
}

#[tokio::test]
async fn policies_sharing_the_python_component_compile_it_once() {
    let env = &shared().await.env;
    assert_eq!(
        env.stats(),
        LoadStats {
            policies: 2,
            unique_code: 1,
            compiled: 1,
            from_cache: 0,
            reused: 0,
        }
    );
    let component = env.policy(DENY).unwrap().code();
    assert!(component.ptr_eq(env.policy(DENY_TIER).unwrap().code()));
    assert!(
        component.facts().size > 10 << 20,
        "{} bytes",
        component.facts().size
    );
    // Same component, different settings: each policy keeps its own.
    let request = fixture("pod_without_denied_labels.json");
    assert_eq!(verdict(DENY, &request).await, ACCEPTED);
    assert_eq!(
        verdict(DENY_TIER, &request).await,
        rejected(r#"label "tier" is not allowed"#, 403)
    );
}

#[tokio::test]
async fn denied_labels_are_rejected_with_403() {
    let cases = [
        (
            "pod_with_denied_label.json",
            rejected(r#"label "owner" is not allowed"#, 403),
        ),
        (
            "pod_with_denied_labels.json",
            rejected(r#"labels "cost-center", "owner" are not allowed"#, 403),
        ),
        (
            "deployment_update_with_denied_label.json",
            rejected(r#"label "cost-center" is not allowed"#, 403),
        ),
        ("pod_without_denied_labels.json", ACCEPTED),
        ("pod_without_labels.json", ACCEPTED),
        ("delete_pod_with_denied_label.json", ACCEPTED),
    ];
    for (name, expected) in cases {
        assert_eq!(verdict(DENY, &fixture(name)).await, expected, "{name}");
    }
}

#[tokio::test]
async fn an_admission_review_is_checked_like_a_bare_request() {
    let mut request =
        portcullis_tests::json_file(format!("{TEST_DATA}/pod_with_denied_label.json"));
    request["object"]["metadata"]["labels"]["cost-center"] = json!("cc-42");
    let review = portcullis_tests::review(request);
    let request = parse_review_or_request(review.to_string().as_bytes()).unwrap();
    assert_eq!(
        verdict(DENY, &request).await,
        rejected(r#"labels "cost-center", "owner" are not allowed"#, 403)
    );
}

#[tokio::test]
async fn an_object_that_is_not_json_is_rejected_with_400() {
    let mut request = fixture("pod_with_denied_label.json");
    request.object = Some("{\"metadata\": {".to_owned());
    let (allowed, message, code) = verdict(DENY, &request).await;
    assert!(!allowed);
    assert_eq!(code, Some(400));
    let message = message.unwrap();
    assert!(
        message.starts_with("the object is not valid JSON: "),
        "{message}"
    );

    request.object = Some(r#"{"metadata": {"labels": ["owner"]}}"#.to_owned());
    assert_eq!(
        verdict(DENY, &request).await,
        rejected(
            "metadata.labels of the object must be an object, got a list",
            400
        )
    );
}

#[tokio::test]
async fn a_request_without_an_object_is_accepted() {
    let mut request = fixture("pod_with_denied_label.json");
    request.object = None;
    request.operation = Operation::Delete;
    assert_eq!(verdict(DENY, &request).await, ACCEPTED);
}

#[tokio::test]
async fn validate_raw_checks_the_documents_labels() {
    let env = &shared().await.env;
    let raw =
        |name: &str| std::fs::read_to_string(repo_file(format!("{TEST_DATA}/{name}"))).unwrap();
    let cases = [
        (
            raw("raw_document_with_denied_label.json"),
            rejected(r#"label "owner" is not allowed"#, 403),
        ),
        (raw("raw_document_without_denied_labels.json"), ACCEPTED),
        (
            "[1, 2, 3]".to_owned(),
            rejected("document must be a JSON object, got a list", 400),
        ),
    ];
    for (document, expected) in cases {
        let response = env.validate_raw(DENY, &document).await.unwrap().response;
        assert_eq!(outcome(response), expected, "{document}");
    }
    let response = env.validate_raw(DENY, "plan: yaml").await.unwrap().response;
    assert_eq!((response.allowed, response.code), (false, Some(400)));
    assert!(
        response
            .message
            .as_deref()
            .unwrap()
            .starts_with("the document is not valid JSON: "),
        "{:?}",
        response.message
    );
}

#[tokio::test]
async fn metadata_is_read_from_the_python_component() {
    let metadata = shared().await.env.policy(DENY).unwrap().metadata().clone();
    assert!(!metadata.mutating);
    assert!(
        metadata.description.contains("deniedLabels"),
        "{}",
        metadata.description
    );
    let [rule] = metadata.rules.as_slice() else {
        panic!("one rule expected: {:?}", metadata.rules)
    };
    assert_eq!(rule.api_groups, ["*"]);
    assert_eq!(rule.api_versions, ["*"]);
    assert_eq!(rule.resources, ["*"]);
    assert!(
        matches!(
            rule.operations.as_slice(),
            [Operation::Create, Operation::Update]
        ),
        "{:?}",
        rule.operations
    );
}

#[tokio::test]
async fn bad_settings_fail_the_load_with_the_python_policys_message() {
    let shared = shared().await;
    let cache = CompiledCache::new(&shared.cache_dir);
    let cases = [
        (
            json!({}),
            r#"deniedLabels is required: give the list of label keys to deny, e.g. {"deniedLabels": ["owner"]}"#,
        ),
        (
            json!({"deniedLabels": []}),
            "deniedLabels must list at least one label key",
        ),
        (
            json!({"deniedLabels": "owner"}),
            "deniedLabels must be a list of label keys, got a string",
        ),
        (
            json!({"deniedLabels": ["owner", 7]}),
            "deniedLabels[1] must be a label key (a string), got a number",
        ),
        (
            json!({"deniedLabels": ["owner"], "allowedLabels": ["app"]}),
            r#"unknown setting "allowedLabels": the only setting is "deniedLabels""#,
        ),
    ];
    for (settings, message) in cases {
        let spec =
            PolicySpec::new("deny", component("deny_labels_py")).with_settings(settings.clone());
        let error = match Environment::load(&shared.engine, [spec], Some(&cache)).await {
            Ok(_) => panic!("{settings} should have been rejected"),
            Err(error) => error,
        };
        match error.reason {
            LoadFailure::SettingsRejected(got) => assert_eq!(got, message, "{settings}"),
            other => panic!("{settings}: expected SettingsRejected, got {other:?}"),
        }
    }
    // Those loads reused the compiled component of the shared load.
    let spec = PolicySpec::new("deny", component("deny_labels_py"))
        .with_settings(json!({"deniedLabels": ["owner"]}));
    let env = Environment::load(&shared.engine, [spec], Some(&cache))
        .await
        .unwrap();
    assert_eq!((env.stats().compiled, env.stats().from_cache), (0, 1));
    std::fs::remove_dir_all(&shared.cache_dir).unwrap();
}

/// A componentize-py component instantiates 14 core modules: the engine's pool
/// must let `max_instances` of them be alive at once, not fail some of them as
/// overloaded.
#[tokio::test]
async fn many_python_evaluations_can_be_alive_at_once() {
    let env = &shared().await.env;
    // Big enough that evaluating it spans several epoch ticks: every task
    // instantiates the policy and yields before the first one finishes.
    let items: Vec<_> = (0..10_000)
        .map(|i| json!({"name": format!("item-{i}"), "value": i}))
        .collect();
    let document: std::sync::Arc<str> =
        json!({"metadata": {"labels": {"owner": "alice"}}, "items": items})
            .to_string()
            .into();
    // Leaves room for the evaluations of the tests running alongside.
    let concurrent = MAX_INSTANCES as usize - 8;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrent {
        let document = document.clone();
        tasks.spawn(async move { env.validate_raw(DENY, &document).await });
    }
    while let Some(result) = tasks.join_next().await {
        let verdict = result.unwrap().unwrap();
        assert_eq!(
            outcome(verdict.response),
            rejected(r#"label "owner" is not allowed"#, 403)
        );
    }
}
