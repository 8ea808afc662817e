//! The policy's verdicts and exact mutations on the fixtures in `test_data/`
//! and on hand-made objects, through the SDK's native harness.

use portcullis_sdk::serde_json::{self, Value, json};
use portcullis_sdk::testing::Harness;
use portcullis_sdk::{Operation, Verdict};

use super::*;

const SETTINGS: &str = "test_data/settings.json";

/// The harness with `{"requiredAnnotations": {"fluxcd.io/cat": "felix"}}`.
fn harness() -> Harness<RequiredAnnotations> {
    Harness::new().settings_file(SETTINGS)
}

fn fixture(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// Asserts an accepted verdict that asks to store exactly `expected`.
#[track_caller]
fn assert_mutated(verdict: &Verdict, expected: &Value) {
    verdict.assert_accepted();
    assert_eq!(
        verdict.mutated_object.as_ref(),
        Some(expected),
        "{verdict:#?}"
    );
}

/// Asserts an accepted verdict without a mutation.
#[track_caller]
fn assert_unchanged(verdict: &Verdict) {
    verdict.assert_accepted();
    assert_eq!(verdict.mutated_object, None, "{verdict:#?}");
}

fn request(kind: &str, object: Value) -> Value {
    json!({
        "uid": "test",
        "kind": {"group": "", "version": "v1", "kind": kind},
        "operation": "CREATE",
        "object": object,
    })
}

// --- Fixtures -----------------------------------------------------------------

#[test]
fn a_pod_without_annotations_gets_the_required_one() {
    let verdict = harness().validate_file("test_data/pod_without_annotations.json");
    assert_mutated(
        &verdict,
        &fixture("test_data/pod_without_annotations.mutated.json"),
    );
    assert!(verdict.warnings.is_empty() && verdict.code.is_none());
}

#[test]
fn the_mutation_changes_nothing_but_the_annotations() {
    let request = fixture("test_data/pod_without_annotations.json");
    let verdict = harness().validate(request.clone());
    let mut mutated = verdict.mutated_object.expect("a mutation");
    assert_eq!(
        mutated["metadata"]["annotations"],
        json!({"fluxcd.io/cat": "felix"})
    );
    mutated["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    assert_eq!(mutated, request["object"]);
}

#[test]
fn a_pod_with_the_required_annotation_is_accepted_unchanged() {
    assert_unchanged(&harness().validate_file("test_data/pod_with_required_annotation.json"));
}

#[test]
fn a_pod_with_a_different_value_is_rejected() {
    harness()
        .validate_file("test_data/pod_with_wrong_annotation.json")
        .assert_rejected_with_code(
            r#"annotation "fluxcd.io/cat" must be "felix", found "tom""#,
            400,
        );
}

#[test]
fn a_deployment_keeps_its_other_annotations() {
    let verdict = harness().validate_file("test_data/deployment_without_required_annotation.json");
    let expected = fixture("test_data/deployment_without_required_annotation.mutated.json");
    assert_mutated(&verdict, &expected);
    assert_eq!(
        expected["metadata"]["annotations"],
        json!({"deployment.kubernetes.io/revision": "1", "fluxcd.io/cat": "felix"})
    );
    // The pod template is a separate object: its annotations are not touched.
    assert_eq!(
        expected["spec"]["template"]["metadata"],
        json!({"labels": {"app": "web"}})
    );
}

// --- Several annotations ------------------------------------------------------

fn two_annotations() -> Harness<RequiredAnnotations> {
    Harness::new().settings_json(json!({
        "requiredAnnotations": {"fluxcd.io/cat": "felix", "owner": "team-a"}
    }))
}

#[test]
fn only_the_missing_annotations_are_added() {
    let object = json!({
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "annotations": {"owner": "team-a", "note": "keep me"}},
        "data": {"k": "v"},
    });
    assert_mutated(
        &two_annotations().validate(request("ConfigMap", object)),
        &json!({
            "kind": "ConfigMap",
            "metadata": {"name": "cm", "annotations": {
                "owner": "team-a", "note": "keep me", "fluxcd.io/cat": "felix"
            }},
            "data": {"k": "v"},
        }),
    );
}

#[test]
fn every_conflict_is_reported_and_nothing_is_added() {
    let object = json!({"metadata": {"annotations": {"fluxcd.io/cat": "tom", "owner": "team-b"}}});
    two_annotations()
        .validate(request("ConfigMap", object))
        .assert_rejected_with_code(
            r#"annotation "fluxcd.io/cat" must be "felix", found "tom"; annotation "owner" must be "team-a", found "team-b""#,
            400,
        );
    // A conflict wins over a missing annotation: no half-mutation.
    let object = json!({"metadata": {"annotations": {"owner": "team-b"}}});
    two_annotations()
        .validate(request("ConfigMap", object))
        .assert_rejected_with_code(
            r#"annotation "owner" must be "team-a", found "team-b""#,
            400,
        );
}

#[test]
fn values_are_compared_exactly() {
    for found in ["Felix", "felix ", ""] {
        let object = json!({"metadata": {"annotations": {"fluxcd.io/cat": found}}});
        harness()
            .validate(request("Pod", object))
            .assert_rejected_with_code(
                &format!(r#"annotation "fluxcd.io/cat" must be "felix", found "{found}""#),
                400,
            );
    }
}

// --- Shapes of objects --------------------------------------------------------

#[test]
fn missing_or_null_metadata_and_annotations_are_created() {
    let annotated = json!({"fluxcd.io/cat": "felix"});
    let cases = [
        (json!({"kind": "Pod"}), json!({"annotations": annotated})),
        (
            json!({"kind": "Pod", "metadata": null}),
            json!({"annotations": annotated}),
        ),
        (
            json!({"kind": "Pod", "metadata": {"name": "p"}}),
            json!({"name": "p", "annotations": annotated}),
        ),
        (
            json!({"kind": "Pod", "metadata": {"name": "p", "annotations": null}}),
            json!({"name": "p", "annotations": annotated}),
        ),
        (
            json!({"kind": "Pod", "metadata": {"name": "p", "annotations": {}}}),
            json!({"name": "p", "annotations": annotated}),
        ),
    ];
    for (object, metadata) in cases {
        assert_mutated(
            &harness().validate(request("Pod", object)),
            &json!({"kind": "Pod", "metadata": metadata}),
        );
    }
    // A null annotation value counts as absent and is replaced.
    let object = json!({"metadata": {"annotations": {"fluxcd.io/cat": null}}});
    assert_mutated(
        &harness().validate(request("Pod", object)),
        &json!({"metadata": {"annotations": {"fluxcd.io/cat": "felix"}}}),
    );
}

#[test]
fn custom_resources_round_trip_exactly() {
    let object = json!({
        "apiVersion": "example.com/v1alpha1",
        "kind": "Widget",
        "metadata": {"name": "w", "labels": {"tier": "gold"}},
        "spec": {
            "ratio": 0.25,
            "big": 18446744073709551615u64,
            "negative": -7,
            "nested": [[1, 2], {"deep": [null, true, "ünïcödé ✓"]}],
            "empty": {},
        },
        "status": {"conditions": []},
    });
    let mut expected = object.clone();
    expected["metadata"]["annotations"] = json!({"fluxcd.io/cat": "felix"});
    let request = json!({
        "uid": "cr",
        "kind": {"group": "example.com", "version": "v1alpha1", "kind": "Widget"},
        "operation": "UPDATE",
        "object": object,
        "oldObject": object,
    });
    assert_mutated(&harness().validate(request), &expected);
}

#[test]
fn a_deletion_is_accepted() {
    let delete = json!({
        "uid": "d",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "DELETE",
        "oldObject": {"metadata": {"name": "p"}},
    });
    assert_unchanged(&harness().validate(delete));
}

#[test]
fn malformed_objects_are_rejected_with_400() {
    let cases = [
        (
            json!("nginx"),
            "the object is not a JSON object (found a string)",
        ),
        (
            json!({"metadata": []}),
            "the object's `metadata` is not an object (found an array)",
        ),
        (
            json!({"metadata": {"annotations": "fluxcd.io/cat=felix"}}),
            "the object's `metadata.annotations` is not an object (found a string)",
        ),
        (
            json!({"metadata": {"annotations": {"fluxcd.io/cat": 7}}}),
            r#"annotation "fluxcd.io/cat" must be "felix", found 7"#,
        ),
    ];
    for (object, message) in cases {
        harness()
            .validate(request("Pod", object))
            .assert_rejected_with_code(message, 400);
    }
}

// --- Raw documents ------------------------------------------------------------

#[test]
fn raw_documents_are_handled_like_objects() {
    let document = json!({
        "apiVersion": "ci.example.com/v1",
        "kind": "Pipeline",
        "metadata": {"name": "build"},
        "stages": [{"name": "test", "script": ["cargo test"]}],
    });
    let mut expected = document.clone();
    expected["metadata"]["annotations"] = json!({"fluxcd.io/cat": "felix"});
    assert_mutated(&harness().validate_raw(document), &expected);

    assert_unchanged(
        &harness().validate_raw(json!({"metadata": {"annotations": {"fluxcd.io/cat": "felix"}}})),
    );
    harness()
        .validate_raw(json!({"metadata": {"annotations": {"fluxcd.io/cat": "tom"}}}))
        .assert_rejected_with_code(
            r#"annotation "fluxcd.io/cat" must be "felix", found "tom""#,
            400,
        );
    harness()
        .validate_raw(json!([1, 2]))
        .assert_rejected_with_code("the document is not a JSON object (found an array)", 400);
    harness().validate_raw_text("{").assert_rejected_with_code(
        "invalid document: not valid JSON: EOF while parsing an object at line 1 column 1",
        400,
    );
}

// --- Settings and metadata ----------------------------------------------------

#[test]
fn settings_are_validated() {
    let settings = |json: Value| {
        Harness::<RequiredAnnotations>::new()
            .settings_json(json)
            .validate_settings()
    };
    assert_eq!(harness().validate_settings(), Ok(()));
    assert_eq!(
        settings(json!({"requiredAnnotations": {"a": "", "example.com/b-c.d_e": "x"}})),
        Ok(())
    );
    let empty = Err(
        "invalid settings: requiredAnnotations must list at least one annotation, \
                     e.g. {\"requiredAnnotations\": {\"owner\": \"team-a\"}}"
            .to_string(),
    );
    assert_eq!(settings(json!({})), empty);
    assert_eq!(settings(json!({"requiredAnnotations": {}})), empty);
    assert_eq!(
        Harness::<RequiredAnnotations>::new().validate_settings(),
        empty
    );
    assert_eq!(
        settings(json!({"requiredAnnotations": {"owner": 1}})),
        Err(
            "invalid settings: requiredAnnotations: invalid type: integer `1`, expected a string"
                .into()
        )
    );
    assert_eq!(
        settings(json!({"requiredAnnotations": ["owner"]})),
        Err("invalid settings: requiredAnnotations: invalid type: sequence, expected a map".into())
    );
    assert_eq!(
        settings(json!({"required_annotations": {"owner": "a"}})),
        Err("invalid settings: unknown field `required_annotations`, expected `requiredAnnotations`".into())
    );
}

#[test]
fn invalid_annotation_keys_are_refused() {
    let cases = [
        ("", r#""" is not a valid annotation key: the name is empty"#),
        (
            "example.com/",
            r#""example.com/" is not a valid annotation key: the name is empty"#,
        ),
        (
            "/owner",
            r#""/owner" is not a valid annotation key: the prefix before `/` is empty"#,
        ),
        (
            "Example.com/owner",
            r#""Example.com/owner" is not a valid annotation key: the prefix "Example.com" is not a DNS subdomain (lower case letters, digits, `-` and `.`, starting and ending with a letter or digit)"#,
        ),
        (
            "example..com/owner",
            r#""example..com/owner" is not a valid annotation key: the prefix "example..com" is not a DNS subdomain (lower case letters, digits, `-` and `.`, starting and ending with a letter or digit)"#,
        ),
        (
            "a/b/c",
            r#""a/b/c" is not a valid annotation key: the name "b/c" must consist of letters, digits, `-`, `_` and `.`, and start and end with a letter or digit"#,
        ),
        (
            "-owner",
            r#""-owner" is not a valid annotation key: the name "-owner" must consist of letters, digits, `-`, `_` and `.`, and start and end with a letter or digit"#,
        ),
        (
            "my owner",
            r#""my owner" is not a valid annotation key: the name "my owner" must consist of letters, digits, `-`, `_` and `.`, and start and end with a letter or digit"#,
        ),
    ];
    for (key, reason) in cases {
        let result = Harness::<RequiredAnnotations>::new()
            .settings_json(json!({"requiredAnnotations": {key: "v"}}))
            .validate_settings();
        assert_eq!(
            result,
            Err(format!("invalid settings: requiredAnnotations: {reason}")),
            "{key:?}"
        );
    }
    let long_name = "n".repeat(64);
    let result = Harness::<RequiredAnnotations>::new()
        .settings_json(json!({"requiredAnnotations": {long_name.clone(): "v"}}))
        .validate_settings();
    assert_eq!(
        result,
        Err(format!(
            "invalid settings: requiredAnnotations: \"{long_name}\" is not a valid annotation key: the name is longer than 63 characters"
        ))
    );
    let ok_name = "n".repeat(63);
    let long_prefix = format!("{}.com/x", "a".repeat(250));
    assert_eq!(
        Harness::<RequiredAnnotations>::new()
            .settings_json(json!({"requiredAnnotations": {ok_name: "v"}}))
            .validate_settings(),
        Ok(())
    );
    assert!(
        Harness::<RequiredAnnotations>::new()
            .settings_json(json!({"requiredAnnotations": {long_prefix: "v"}}))
            .validate_settings()
            .unwrap_err()
            .ends_with("the prefix is longer than 253 characters")
    );
}

#[test]
fn metadata_targets_everything_and_mutates() {
    let metadata = harness().metadata();
    assert!(metadata.mutating);
    assert!(!metadata.description.is_empty());
    assert_eq!(metadata.rules.len(), 1);
    let rule = &metadata.rules[0];
    assert_eq!(rule.api_groups, ["*"]);
    assert_eq!(rule.api_versions, ["*"]);
    assert_eq!(rule.resources, ["*"]);
    assert_eq!(rule.operations, [Operation::Create, Operation::Update]);
}
