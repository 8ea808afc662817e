//! `portcullis run`, driven like a user drives it: real components, real
//! files, the binary's stdout, stderr and exit code.

use std::path::PathBuf;
use std::process::{Command, Output};

mod common;

use common::{component, repo};

fn fixture(name: &str) -> PathBuf {
    repo().join("examples/pod-privileged/test_data").join(name)
}

fn portcullis(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("run")
        .arg("--no-cache")
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .expect("running portcullis")
}

fn stdout_json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout is the AdmissionResponse JSON")
}

fn stderr(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
    stderr
}

#[test]
fn a_rejection_is_printed_and_exits_zero() {
    let policy = component("pod_privileged");
    let output = portcullis(&[
        &"--policy",
        &policy,
        &"--request",
        &fixture("privileged_pod_review.json"),
    ]);
    let response = stdout_json(&output);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["uid"], "1299d386-525b-4032-98ae-1949f69f9cfc");
    assert_eq!(
        response["status"]["message"],
        "Privileged container is not allowed"
    );
}

#[test]
fn a_bare_request_and_inline_settings_are_accepted() {
    let policy = component("pod_privileged");
    let request = fixture("privileged_init_container.json");
    let rejected = stdout_json(&portcullis(&[&"--policy", &policy, &"--request", &request]));
    assert_eq!(rejected["allowed"], false);
    let settings = r#"{"skip_init_containers": true}"#;
    let accepted = stdout_json(&portcullis(&[
        &"--policy",
        &policy,
        &"--request",
        &request,
        &"--settings-json",
        &settings,
    ]));
    assert_eq!(accepted["allowed"], true);
    let file = fixture("settings_skip_init_and_ephemeral_containers.json");
    let accepted = stdout_json(&portcullis(&[
        &"-p", &policy, &"-r", &request, &"-s", &file,
    ]));
    assert_eq!(accepted["allowed"], true);
}

#[test]
fn settings_that_are_not_json_are_an_error() {
    let policy = component("pod_privileged");
    let request = fixture("privileged_container.json");
    let output = portcullis(&[
        &"--policy",
        &policy,
        &"--request",
        &request,
        &"--settings-json",
        &"{oops",
    ]);
    let stderr = stderr(&output);
    assert!(
        stderr.starts_with("error: settings in --settings-json are not valid JSON: "),
        "{stderr}"
    );
}

#[test]
fn settings_the_policy_rejects_are_an_error_naming_the_policy() {
    let policy = component("pod_privileged");
    let request = fixture("privileged_container.json");
    let output = portcullis(&[
        &"--policy",
        &policy,
        &"--request",
        &request,
        &"--settings-json",
        &r#"{"skip_init_containers": 3}"#,
    ]);
    let stderr = stderr(&output);
    assert!(
        stderr.starts_with("error: policy `pod_privileged` ("),
        "{stderr}"
    );
    assert!(stderr.contains("settings rejected: "), "{stderr}");
}

#[test]
fn a_malformed_request_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let request = dir.path().join("broken.json");
    std::fs::write(&request, r#"{"uid": "x", "kind": "#).unwrap();
    let output = portcullis(&[
        &"--policy",
        &component("pod_privileged"),
        &"--request",
        &request,
    ]);
    let stderr = stderr(&output);
    assert!(
        stderr.contains("broken.json: malformed admission request: "),
        "{stderr}"
    );
}

#[test]
fn a_missing_policy_file_is_an_error_naming_it() {
    let output = portcullis(&[
        &"--policy",
        &"/nonexistent/p.wasm",
        &"--request",
        &fixture("privileged_container.json"),
    ]);
    let stderr = stderr(&output);
    assert_eq!(
        stderr.trim_end(),
        "error: policy `p` (/nonexistent/p.wasm): cannot read the component: No such file or directory (os error 2)"
    );
}

#[test]
fn a_file_that_is_not_a_component_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let output = portcullis(&[
        &"--policy",
        &core,
        &"--request",
        &fixture("privileged_container.json"),
    ]);
    assert!(stderr(&output).contains("a core WebAssembly module without Kubewarden metadata"));
}

#[test]
fn guest_stderr_is_logged_under_the_policy_id() {
    let output = portcullis(&[
        &"--policy",
        &component("counter_policy"),
        &"--request",
        &fixture("privileged_container.json"),
    ]);
    assert_eq!(stdout_json(&output)["allowed"], true);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.contains("counter: validation number 1"))
        .unwrap_or_else(|| panic!("guest output not logged: {stderr}"));
    assert!(line.contains("portcullis::guest"), "{line}");
    assert!(line.contains(r#"policy="counter_policy""#), "{line}");
}
