//! Native tests of the harmless paths only: the control case, settings
//! parsing, a small `huge-*`, and the reporting of the probes with made-up
//! outcomes. The other attacks loop, sleep, exhaust memory or the stack, or
//! touch the machine, so they are exercised by the host's sandbox tests on
//! the component, never here. In particular nothing here may load
//! `settings-loop` settings through the SDK: validating them spins forever.

use portcullis_sdk::Operation;
use portcullis_sdk::serde_json::{self, Value, json};
use portcullis_sdk::testing::Harness;

use super::*;

fn pod_request() -> Value {
    json!({
        "uid": "test",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE",
        "object": {"kind": "Pod", "metadata": {"name": "p", "labels": {"app": "a"}}},
    })
}

fn attacking(settings: Value) -> Harness<Hostile> {
    Harness::new().settings_json(settings)
}

#[test]
fn none_accepts_requests_and_raw_documents() {
    for harness in [
        Harness::<Hostile>::new(),
        attacking(json!({"attack": "none"})),
    ] {
        assert_eq!(harness.validate_settings(), Ok(()));
        let verdict = harness.validate(pod_request());
        verdict.assert_accepted();
        assert_eq!(verdict, accept());
        harness
            .validate_raw(json!({"any": "document"}))
            .assert_accepted();
    }
}

#[test]
fn metadata_targets_everything_and_mutates() {
    let metadata = Harness::<Hostile>::new().metadata();
    assert!(metadata.mutating);
    assert!(metadata.description.starts_with("Test-only hostile policy"));
    assert_eq!(metadata.rules.len(), 1);
    let rule = &metadata.rules[0];
    assert_eq!(rule.api_groups, ["*"]);
    assert_eq!(rule.api_versions, ["*"]);
    assert_eq!(rule.resources, ["*"]);
    assert_eq!(rule.operations, [Operation::Create, Operation::Update]);
}

#[test]
fn every_attack_parses_from_its_name() {
    for attack in Attack::ALL {
        let parsed: Attack = serde_json::from_value(json!(attack.name())).unwrap();
        assert_eq!(parsed, attack);
        assert_eq!(attack.to_string(), attack.name());
    }
    let names: Vec<&str> = Attack::ALL.iter().map(|attack| attack.name()).collect();
    assert_eq!(
        names,
        [
            "none",
            "loop",
            "sleep",
            "grow",
            "recurse",
            "panic",
            "unreachable",
            "huge-response",
            "huge-mutation",
            "spam-stdout",
            "spam-stderr",
            "open-file",
            "read-env",
            "open-socket",
            "settings-loop",
        ]
    );
}

#[test]
fn an_unknown_attack_is_a_clear_settings_error() {
    let error = attacking(json!({"attack": "fly"}))
        .validate_settings()
        .unwrap_err();
    assert!(
        error.starts_with(
            "invalid settings: attack: unknown variant `fly`, expected one of `none`, `loop`, "
        ),
        "{error}"
    );
    assert!(error.contains("`settings-loop`"), "{error}");

    // The enum's Rust spelling is not a name either.
    let error = attacking(json!({"attack": "HugeResponse"}))
        .validate_settings()
        .unwrap_err();
    assert!(
        error.starts_with("invalid settings: attack: unknown variant `HugeResponse`"),
        "{error}"
    );
}

#[test]
fn unknown_and_misplaced_settings_are_rejected() {
    let error = attacking(json!({"attack": "none", "size": 3}))
        .validate_settings()
        .unwrap_err();
    assert!(
        error.starts_with("invalid settings: unknown field `size`, expected one of"),
        "{error}"
    );
    assert_eq!(
        attacking(json!({"attack": "open-file", "bytes": 3})).validate_settings(),
        Err(
            "invalid settings: `bytes` only applies to the huge-response and huge-mutation \
             attacks, not to open-file"
                .into()
        )
    );
    assert_eq!(
        attacking(json!({"port": 80})).validate_settings(),
        Err("invalid settings: `port` only applies to the open-socket attack, not to none".into())
    );
    assert_eq!(
        attacking(json!({"attack": "huge-response", "bytes": -1})).validate_settings(),
        Err("invalid settings: bytes: invalid value: integer `-1`, expected usize".into())
    );
    assert_eq!(
        attacking(json!({"attack": "open-socket", "port": 65536})).validate_settings(),
        Err("invalid settings: port: invalid value: integer `65536`, expected u16".into())
    );
}

#[test]
fn settings_default_to_none_and_parse_their_parameters() {
    assert_eq!(HostileSettings::default().attack, Attack::None);
    let settings: HostileSettings =
        portcullis_sdk::settings::load_settings(r#"{"attack": "open-socket", "port": 8080}"#)
            .unwrap();
    assert_eq!(
        settings,
        HostileSettings {
            attack: Attack::OpenSocket,
            bytes: None,
            port: Some(8080),
            depth: None,
            iterations: None,
        }
    );
    let bounded: HostileSettings =
        portcullis_sdk::settings::load_settings(r#"{"attack": "recurse", "depth": 10}"#).unwrap();
    assert_eq!(bounded.depth, Some(10));
    let misplaced = portcullis_sdk::settings::load_settings::<HostileSettings>(
        r#"{"attack": "panic", "depth": 10}"#,
    );
    assert!(
        misplaced
            .unwrap_err()
            .contains("`depth` only applies to the recurse attack")
    );
    let finite: HostileSettings =
        portcullis_sdk::settings::load_settings(r#"{"attack": "loop", "iterations": 5}"#).unwrap();
    assert_eq!(finite.iterations, Some(5));
    let misplaced = portcullis_sdk::settings::load_settings::<HostileSettings>(
        r#"{"attack": "sleep", "iterations": 5}"#,
    );
    assert!(
        misplaced
            .unwrap_err()
            .contains("`iterations` only applies to the loop attack")
    );
    assert_eq!(settings.port(), 8080);
    assert_eq!(HostileSettings::default().port(), DEFAULT_PORT);
    assert_eq!(HostileSettings::default().bytes(), DEFAULT_BYTES);
}

#[test]
fn huge_response_rejects_with_a_bytes_long_message() {
    let harness = attacking(json!({"attack": "huge-response", "bytes": 10}));
    harness
        .validate(pod_request())
        .assert_rejected("xxxxxxxxxx");
    harness
        .validate_raw(json!({}))
        .assert_rejected("xxxxxxxxxx");
    attacking(json!({"attack": "huge-response", "bytes": 0}))
        .validate(pod_request())
        .assert_rejected("");
}

#[test]
fn huge_mutation_adds_a_bytes_long_annotation_to_the_object() {
    let harness = attacking(json!({"attack": "huge-mutation", "bytes": 5}));
    let verdict = harness.validate(pod_request());
    verdict.assert_accepted();
    assert_eq!(
        verdict.mutated_object,
        Some(json!({
            "kind": "Pod",
            "metadata": {
                "name": "p",
                "labels": {"app": "a"},
                "annotations": {MUTATION_ANNOTATION: "xxxxx"},
            },
        }))
    );

    // A raw document is the object; one that is not an object becomes one.
    let verdict = harness.validate_raw(json!({"metadata": {"annotations": {"a": "b"}}}));
    assert_eq!(
        verdict.mutated_object,
        Some(json!({"metadata": {"annotations": {"a": "b", MUTATION_ANNOTATION: "xxxxx"}}}))
    );
    let verdict = harness.validate_raw(json!([1, 2]));
    assert_eq!(
        verdict.mutated_object,
        Some(json!({"metadata": {"annotations": {MUTATION_ANNOTATION: "xxxxx"}}}))
    );
    let verdict = harness.validate_raw(json!({"metadata": "not an object"}));
    assert_eq!(
        verdict.mutated_object,
        Some(json!({"metadata": {"annotations": {MUTATION_ANNOTATION: "xxxxx"}}}))
    );
}

#[test]
fn huge_mutation_without_an_object_mutates_an_empty_one() {
    let mut request = pod_request();
    request["operation"] = json!("DELETE");
    request.as_object_mut().unwrap().remove("object");
    let verdict = attacking(json!({"attack": "huge-mutation", "bytes": 1})).validate(request);
    assert_eq!(
        verdict.mutated_object,
        Some(json!({"metadata": {"annotations": {MUTATION_ANNOTATION: "x"}}}))
    );
}

fn denied(what: &str, error: &str) -> Attempt {
    Attempt {
        what: what.into(),
        outcome: Err(error.into()),
    }
}

fn succeeded(what: &str, obtained: &str) -> Attempt {
    Attempt {
        what: what.into(),
        outcome: Ok(obtained.into()),
    }
}

#[test]
fn denied_attempts_accept_with_the_errors_listed() {
    let verdict = report_attempts(
        Attack::OpenFile,
        &[
            denied(
                "read /etc/passwd",
                "No such file or directory (os error 44)",
            ),
            denied("read_dir /", "operation not supported on this platform"),
            denied("create /tmp/hostile", "Permission denied (os error 2)"),
        ],
    );
    verdict.assert_accepted();
    assert_eq!(
        verdict.message.as_deref(),
        Some(
            "open-file: read /etc/passwd: denied (No such file or directory (os error 44)); \
             read_dir /: denied (operation not supported on this platform); \
             create /tmp/hostile: denied (Permission denied (os error 2))"
        )
    );
    assert_eq!(verdict.code, None);
}

#[test]
fn any_successful_attempt_is_an_escape() {
    let verdict = report_attempts(
        Attack::OpenSocket,
        &[
            succeeded("connect tcp 127.0.0.1:9", "connected from 127.0.0.1:40000"),
            denied("bind udp 0.0.0.0:0", "Permission denied"),
        ],
    );
    verdict.assert_rejected_with_code(
        "ESCAPED: open-socket: connect tcp 127.0.0.1:9 succeeded: \
         connect tcp 127.0.0.1:9: SUCCEEDED (connected from 127.0.0.1:40000); \
         bind udp 0.0.0.0:0: denied (Permission denied)",
        500,
    );

    let verdict = report_attempts(
        Attack::OpenFile,
        &[
            succeeded("read /etc/passwd", "1234 bytes"),
            denied("read_dir /", "nope"),
            succeeded("create /tmp/hostile", "created"),
        ],
    );
    assert_eq!(verdict.code, Some(500));
    assert!(
        verdict
            .message
            .as_deref()
            .unwrap()
            .starts_with("ESCAPED: open-file: read /etc/passwd, create /tmp/hostile succeeded: "),
        "{verdict:?}"
    );
}

#[test]
fn an_empty_environment_accepts() {
    let verdict = report_environment(&[], &[]);
    verdict.assert_accepted();
    assert_eq!(
        verdict.message.as_deref(),
        Some("read-env: no variables, no arguments")
    );
}

#[test]
fn a_visible_environment_is_an_escape_naming_variables_but_not_values() {
    let verdict = report_environment(
        &[
            ("HOME".into(), "/root".into()),
            ("TOKEN".into(), "s3cr3t".into()),
        ],
        &[],
    );
    verdict.assert_rejected_with_code(
        r#"ESCAPED: read-env: 2 variable(s) ["HOME", "TOKEN"], 0 argument(s) []"#,
        500,
    );
    assert!(!verdict.message.unwrap().contains("s3cr3t"));

    report_environment(&[], &["hostile_policy.wasm".into()]).assert_rejected_with_code(
        r#"ESCAPED: read-env: 0 variable(s) [], 1 argument(s) ["hostile_policy.wasm"]"#,
        500,
    );
}

#[test]
#[should_panic(expected = "hostile policy panicked on purpose")]
fn panic_panics() {
    // Harmless natively: the panic unwinds into the test harness.
    let _ = attacking(json!({"attack": "panic"})).validate(pod_request());
}

#[test]
#[should_panic(expected = "the `unreachable` attack")]
fn unreachable_is_a_panic_natively() {
    let _ = attacking(json!({"attack": "unreachable"})).validate(pod_request());
}

#[test]
fn a_refused_connection_reached_the_network() {
    use std::io::{Error, ErrorKind};
    assert_eq!(
        connect_outcome(Err(Error::new(
            ErrorKind::ConnectionRefused,
            "Connection refused"
        ))),
        Ok("reached the network, the connection was refused: Connection refused".into())
    );
    assert_eq!(
        connect_outcome(Err(Error::new(
            ErrorKind::PermissionDenied,
            "Permission denied"
        ))),
        Err("Permission denied".into())
    );
    assert_eq!(
        connect_outcome(Err(Error::from(ErrorKind::Unsupported))),
        Err("unsupported".into())
    );
}
