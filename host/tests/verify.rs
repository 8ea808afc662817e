//! `portcullis verify`, driven as Gatekeeper users drive `gator verify`:
//! suites of our own on disk, the binary's stdout, stderr and exit status.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

use common::{portcullis, repo};

const EXAMPLE: &str = "examples/gatekeeper-required-labels";

/// Runs `portcullis verify ARGS` with the tests' shared compiled cache (the
/// Rego guest's code is compiled once per build, not once per test).
fn verify(args: &[&str]) -> Output {
    let cache = repo().join("target/portcullis-test-cache");
    let mut all = vec!["verify".to_owned(), "--cache-dir".to_owned()];
    all.push(cache.display().to_string());
    all.extend(args.iter().map(|arg| arg.to_string()));
    portcullis(all)
}

fn stdout(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A folder with the example's template and samples, and `suite` written
/// beside them as `suite.yaml`.
fn suite_dir(suite: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let example = repo().join(EXAMPLE);
    std::fs::copy(
        example.join("template.yaml"),
        dir.path().join("template.yaml"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("samples")).unwrap();
    for entry in std::fs::read_dir(example.join("samples")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            dir.path().join("samples").join(entry.file_name()),
        )
        .unwrap();
    }
    let path = dir.path().join("suite.yaml");
    std::fs::write(&path, suite).unwrap();
    (dir, path)
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn the_example_suite_passes_with_gators_summary() {
    let suite = repo().join(EXAMPLE).join("suite.yaml");
    let output = verify(&[suite.to_str().unwrap()]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}");
    assert!(
        out.starts_with(&format!("ok\t{}\t", suite.display())),
        "{out}"
    );
    assert!(out.ends_with("PASS\n"), "{out}");

    // Verbose: each test and case, as `go test -v` names them.
    let output = verify(&["-v", suite.to_str().unwrap()]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}");
    for line in [
        "=== RUN   pods-need-an-owner\n",
        "    === RUN   owner-not-a-name\n",
        "    --- PASS: kube-system-excluded\t(",
        "--- PASS: parameters-follow-the-schema\t(",
    ] {
        assert!(out.contains(line), "{line:?} in {out}");
    }

    // A folder with `/...` finds the suite below it.
    let folder = format!("{}/...", repo().join("examples").display());
    let out = stdout(&verify(&[&folder]));
    assert!(
        out.contains("gatekeeper-required-labels/suite.yaml\t"),
        "{out}"
    );
}

#[test]
fn a_case_that_does_not_hold_fails_the_run_naming_it() {
    let (_dir, suite) = suite_dir(
        r#"
kind: Suite
apiVersion: test.gatekeeper.sh/v1alpha1
tests:
- name: owners
  template: template.yaml
  constraint: samples/owner-constraint.yaml
  cases:
  - name: owned
    object: samples/pod-owned.yaml
    assertions:
    - violations: no
  - name: unowned-said-to-pass
    object: samples/pod-unowned.yaml
    assertions:
    - violations: no
  - name: skipped
    skip: true
    object: samples/pod-unowned.yaml
    assertions:
    - violations: no
"#,
    );
    let output = verify(&[suite.to_str().unwrap()]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("    --- FAIL: unowned-said-to-pass\t("),
        "{out}"
    );
    assert!(
        out.contains(r#"got 1 violations but want none: got messages ["Pod stray lacks the labels [\"owner\"]"]"#),
        "{out}"
    );
    assert!(!out.contains("--- FAIL: owned\t"), "{out}");
    assert!(!out.contains("skipped"), "{out}");
    assert!(out.contains("--- FAIL: owners\t("), "{out}");
    assert!(
        out.contains(&format!("FAIL\t{}\t", suite.display())),
        "{out}"
    );
    assert!(out.ends_with("\nFAIL\n"), "{out}");
}

#[test]
fn broken_templates_and_constraints_are_reported_where_they_are() {
    let (dir, suite) = suite_dir(
        r#"
kind: Suite
apiVersion: test.gatekeeper.sh/v1alpha1
tests:
- name: syntax-error
  template: broken-template.yaml
  constraint: samples/owner-constraint.yaml
  cases:
  - name: any
    object: samples/pod-owned.yaml
- name: parameters-said-valid
  template: template.yaml
  constraint: samples/bad-parameters-constraint.yaml
  cases:
  - name: any
    object: samples/pod-owned.yaml
- name: wrong-kind
  template: template.yaml
  constraint: other-kind.yaml
"#,
    );
    write(
        dir.path(),
        "broken-template.yaml",
        r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: portcullisrequiredlabels
spec:
  crd:
    spec:
      names:
        kind: PortcullisRequiredLabels
  targets:
  - target: admission.k8s.gatekeeper.sh
    rego: |
      package broken

      violation[{"msg": msg}] {
        msg := "unclosed
      }
"#,
    );
    write(
        dir.path(),
        "other-kind.yaml",
        "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: SomethingElse\nmetadata:\n  name: elsewhere\n",
    );
    let output = verify(&[suite.to_str().unwrap()]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    // The Rego error cites the template file's own line and column (the
    // unclosed string is on line 16, indented by 8 in the file).
    let broken = dir.path().join("broken-template.yaml");
    assert!(out.contains("--- FAIL: syntax-error\t("), "{out}");
    assert!(
        out.contains(&format!("  {}:16:", broken.display())),
        "{out}"
    );
    assert!(
        out.contains("constraint `labels-as-a-string`: spec.parameters.labels"),
        "{out}"
    );
    assert!(
        out.contains("constraint `elsewhere` is a SomethingElse, not a PortcullisRequiredLabels"),
        "{out}"
    );

    // A file that is not a suite, and a path that does not exist.
    let output = verify(&[dir.path().join("template.yaml").to_str().unwrap()]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("not a gator suite"), "{out}");
    let output = verify(&["/nonexistent/suite.yaml"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("/nonexistent/suite.yaml: no such file or folder")
    );
}
