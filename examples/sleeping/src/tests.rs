//! The policy's verdicts and sleeps, through the SDK's native harness. Every
//! sleep here is a few milliseconds; tests that must not sleep at all use
//! settings of an hour, so a bug would hang the test rather than pass it.

use std::time::{Duration, Instant};

use portcullis_sdk::Operation;
use portcullis_sdk::serde_json::{Value, json};
use portcullis_sdk::testing::Harness;

use super::*;

/// An hour: far longer than any test may take.
const HOUR_MS: u64 = 3_600_000;

/// The harness with `{"sleepMilliseconds": 2}`.
fn harness() -> Harness<Sleeping> {
    Harness::new().settings_file("test_data/settings.json")
}

fn sleeping_for(milliseconds: u64) -> Harness<Sleeping> {
    Harness::new().settings_json(json!({"sleepMilliseconds": milliseconds}))
}

/// Runs `f`, returning its result and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let result = f();
    (result, start.elapsed())
}

fn pod_with_annotation(value: Value) -> Value {
    json!({
        "uid": "test",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE",
        "object": {"kind": "Pod", "metadata": {"annotations": {SLEEP_ANNOTATION: value}}},
    })
}

#[test]
fn sleeps_for_the_configured_duration_then_accepts() {
    let (verdict, elapsed) = timed(|| harness().validate_file("test_data/pod.json"));
    verdict.assert_accepted();
    assert!(elapsed >= Duration::from_millis(2), "{elapsed:?}");
    assert!(verdict.mutated_object.is_none() && verdict.warnings.is_empty());

    let (verdict, elapsed) = timed(|| sleeping_for(5).validate_file("test_data/pod.json"));
    verdict.assert_accepted();
    assert!(elapsed >= Duration::from_millis(5), "{elapsed:?}");
}

#[test]
fn the_annotation_overrides_the_setting() {
    // Sleeping for the configured hour would hang the test.
    let (verdict, elapsed) =
        timed(|| sleeping_for(HOUR_MS).validate_file("test_data/pod_with_sleep_annotation.json"));
    verdict.assert_accepted();
    assert!(elapsed >= Duration::from_millis(3), "{elapsed:?}");

    for milliseconds in ["0", "1", "0004"] {
        sleeping_for(HOUR_MS)
            .validate(pod_with_annotation(json!(milliseconds)))
            .assert_accepted();
    }
}

#[test]
fn a_null_annotation_is_no_override() {
    let (verdict, elapsed) = timed(|| sleeping_for(3).validate(pod_with_annotation(Value::Null)));
    verdict.assert_accepted();
    assert!(elapsed >= Duration::from_millis(3), "{elapsed:?}");
}

#[test]
fn an_unparseable_annotation_is_rejected_without_sleeping() {
    harness()
        .validate_file("test_data/pod_with_invalid_sleep_annotation.json")
        .assert_rejected_with_code(
            "annotation \"portcullis.sleep_duration_milliseconds\" must be a decimal number of \
             milliseconds (at most 18446744073709551615), found \"soon\"",
            400,
        );
    for value in [
        json!(""),
        json!("+5"),
        json!("-1"),
        json!(" 5"),
        json!("5ms"),
        json!("1.5"),
        json!("1e3"),
        json!("18446744073709551616"),
        json!(5),
        json!(true),
        json!({"ms": 5}),
    ] {
        let verdict = sleeping_for(HOUR_MS).validate(pod_with_annotation(value.clone()));
        verdict.assert_rejected_with_code(
            &format!(
                "annotation \"portcullis.sleep_duration_milliseconds\" must be a decimal number \
                 of milliseconds (at most 18446744073709551615), found {value}"
            ),
            400,
        );
    }
}

#[test]
fn objects_without_the_annotation_use_the_setting() {
    let objects = [
        json!({"kind": "Pod"}),
        json!({"kind": "Pod", "metadata": null}),
        json!({"kind": "Pod", "metadata": {"annotations": {"other": "1"}}}),
        // Not the policy's business to police the object's shape.
        json!({"kind": "Pod", "metadata": []}),
        json!("not an object"),
    ];
    for object in objects {
        let request = json!({
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "UPDATE",
            "object": object,
        });
        let (verdict, elapsed) = timed(|| sleeping_for(1).validate(request));
        verdict.assert_accepted();
        assert!(elapsed >= Duration::from_millis(1), "{elapsed:?}");
    }
    // A request without an object (a deletion) sleeps too.
    let delete = json!({
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "DELETE",
    });
    let (verdict, elapsed) = timed(|| sleeping_for(2).validate(delete));
    verdict.assert_accepted();
    assert!(elapsed >= Duration::from_millis(2), "{elapsed:?}");
}

#[test]
fn raw_documents_sleep_the_same_way() {
    let (verdict, elapsed) = timed(|| harness().validate_raw(json!({"anything": true})));
    verdict.assert_accepted();
    assert!(elapsed >= Duration::from_millis(2), "{elapsed:?}");

    sleeping_for(HOUR_MS)
        .validate_raw(json!({"metadata": {"annotations": {SLEEP_ANNOTATION: "1"}}}))
        .assert_accepted();
    sleeping_for(HOUR_MS)
        .validate_raw(json!({"metadata": {"annotations": {SLEEP_ANNOTATION: "1s"}}}))
        .assert_rejected_with_code(
            "annotation \"portcullis.sleep_duration_milliseconds\" must be a decimal number of \
             milliseconds (at most 18446744073709551615), found \"1s\"",
            400,
        );
}

#[test]
fn settings_are_validated() {
    let settings = |json: Value| {
        Harness::<Sleeping>::new()
            .settings_json(json)
            .validate_settings()
    };
    assert_eq!(harness().validate_settings(), Ok(()));
    assert_eq!(settings(json!({"sleepMilliseconds": 1})), Ok(()));
    assert_eq!(settings(json!({"sleepMilliseconds": u64::MAX})), Ok(()));

    let required = Err(
        "invalid settings: sleepMilliseconds is required: how long to sleep on \
                        every request, in milliseconds, e.g. {\"sleepMilliseconds\": 250}"
            .to_string(),
    );
    assert_eq!(Harness::<Sleeping>::new().validate_settings(), required);
    assert_eq!(settings(json!({})), required);
    assert_eq!(settings(json!({"sleepMilliseconds": null})), required);
    assert_eq!(
        settings(json!({"sleepMilliseconds": 0})),
        Err("invalid settings: sleepMilliseconds must be greater than 0".into())
    );
    assert_eq!(
        settings(json!({"sleepMilliseconds": -1})),
        Err(
            "invalid settings: sleepMilliseconds: invalid value: integer `-1`, expected u64".into()
        )
    );
    assert_eq!(
        settings(json!({"sleepMilliseconds": "250"})),
        Err(
            "invalid settings: sleepMilliseconds: invalid type: string \"250\", expected u64"
                .into()
        )
    );
    assert_eq!(
        settings(json!({"sleepMilliseconds": 1.5})),
        Err(
            "invalid settings: sleepMilliseconds: invalid type: floating point `1.5`, expected u64"
                .into()
        )
    );
    assert_eq!(
        settings(json!({"sleep_milliseconds": 5})),
        Err(
            "invalid settings: unknown field `sleep_milliseconds`, expected `sleepMilliseconds`"
                .into()
        )
    );
}

#[test]
fn metadata_targets_pods() {
    let metadata = harness().metadata();
    assert!(!metadata.mutating);
    assert!(metadata.description.contains(SLEEP_ANNOTATION));
    assert_eq!(metadata.rules.len(), 1);
    let rule = &metadata.rules[0];
    assert_eq!(rule.api_groups, [""]);
    assert_eq!(rule.api_versions, ["v1"]);
    assert_eq!(rule.resources, ["pods"]);
    assert_eq!(rule.operations, [Operation::Create, Operation::Update]);
}
