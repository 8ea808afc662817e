//! The commands on Kubewarden modules, as a user runs them: `annotate`
//! writes metadata.yml into a module, and `run`, `inspect`, `bench`,
//! `compile` and `webhook-config` take the annotated module like a component.

use std::path::{Path, PathBuf};

mod common;

use common::{component, failure, fixture, portcullis, repo, served, success};

/// The unannotated build of a Kubewarden test policy.
fn unannotated(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    target
        .join("wasm32-wasip1/release")
        .join(format!("{name}.wasm"))
}

fn metadata_yml(dir: &str) -> PathBuf {
    repo()
        .join("tests/kubewarden-policies")
        .join(dir)
        .join("metadata.yml")
}

#[test]
fn annotate_writes_the_metadata_and_run_evaluates_the_module() {
    let dir = tempfile::tempdir().unwrap();
    let annotated = dir.path().join("pod_privileged.wasm");
    let unannotated = unannotated("kw_pod_privileged");
    // Unannotated, it is refused, with the way out.
    let stderr = failure(&portcullis([
        "run".as_ref(),
        "--no-cache".as_ref(),
        "-p".as_ref(),
        unannotated.as_os_str(),
        "-r".as_ref(),
        fixture("privileged_container.json").as_os_str(),
    ]));
    assert!(stderr.contains("without Kubewarden metadata"), "{stderr}");
    assert!(stderr.contains("portcullis annotate"), "{stderr}");

    success(&portcullis([
        "annotate".as_ref(),
        unannotated.as_os_str(),
        "--metadata".as_ref(),
        metadata_yml("pod-privileged").as_os_str(),
        "-o".as_ref(),
        annotated.as_os_str(),
    ]));
    let stdout = success(&portcullis([
        "run".as_ref(),
        "--no-cache".as_ref(),
        "-p".as_ref(),
        annotated.as_os_str(),
        "-r".as_ref(),
        fixture("privileged_pod_review.json").as_os_str(),
    ]));
    let response: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(response["allowed"], false);
    assert_eq!(response["uid"], "1299d386-525b-4032-98ae-1949f69f9cfc");
    assert_eq!(
        response["status"]["message"],
        "Privileged container is not allowed"
    );
    // The same bytes as the build script's.
    assert_eq!(
        std::fs::read(&annotated).unwrap(),
        std::fs::read(component("kw_pod_privileged")).unwrap()
    );
}

#[test]
fn run_gives_kubewardens_verdicts_on_its_test_data() {
    let cache = tempfile::tempdir().unwrap();
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("tests/kubewarden-policies/pod-privileged/expected.json"))
            .unwrap(),
    )
    .unwrap();
    let module = component("kw_pod_privileged");
    for case in expected["cases"].as_array().unwrap() {
        let fixture_name = case["fixture"].as_str().unwrap();
        let mut args = vec![
            "run".into(),
            "--cache-dir".into(),
            cache.path().as_os_str().to_owned(),
            "-p".into(),
            module.as_os_str().to_owned(),
            "-r".into(),
            fixture(fixture_name).into_os_string(),
        ];
        if let Some(settings) = case["settings"].as_str() {
            args.push("-s".into());
            args.push(fixture(settings).into_os_string());
        }
        let response: serde_json::Value =
            serde_json::from_str(&success(&portcullis(&args))).unwrap();
        assert_eq!(response["allowed"], case["allowed"], "{fixture_name}");
        assert_eq!(
            response["status"]["message"].as_str(),
            case["message"].as_str(),
            "{fixture_name} ({:?})",
            case["settings"]
        );
    }
}

#[test]
fn annotate_refuses_bad_metadata_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let metadata = dir.path().join("metadata.yml");
    std::fs::write(
        &metadata,
        "rules:\n  - apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [pods]\n    operations: [PATCH]\nmutating: false\n",
    )
    .unwrap();
    let out = dir.path().join("out.wasm");
    let stderr = failure(&portcullis([
        "annotate".as_ref(),
        unannotated("kw_pod_privileged").as_os_str(),
        "--metadata".as_ref(),
        metadata.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]));
    assert!(
        stderr.contains("metadata.yml: invalid Kubewarden metadata: rules[0].operations: `PATCH`"),
        "{stderr}"
    );
    assert!(!out.exists());
    // A waPC module declared as a WASI command.
    std::fs::write(&metadata, "mutating: false\nexecutionMode: wasi\n").unwrap();
    let stderr = failure(&portcullis([
        "annotate".as_ref(),
        unannotated("kw_pod_privileged").as_os_str(),
        "--metadata".as_ref(),
        metadata.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]));
    assert!(stderr.contains("exports no `_start`"), "{stderr}");
}

#[test]
fn policy_logs_from_tracing_log_are_the_policys_log_lines() {
    let output = portcullis([
        "run".as_ref(),
        "--no-cache".as_ref(),
        "-p".as_ref(),
        component("kw_logging").as_os_str(),
        "-r".as_ref(),
        fixture("privileged_pod_review.json").as_os_str(),
    ]);
    success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let info = stderr
        .lines()
        .find(|line| line.contains("validating a request"))
        .unwrap_or_else(|| panic!("no log line: {stderr}"));
    assert!(info.contains("INFO"), "{info}");
    assert!(info.contains("portcullis::guest"), "{info}");
    assert!(info.contains(r#"policy="kw_logging""#), "{info}");
    assert!(
        info.contains("uid=1299d386-525b-4032-98ae-1949f69f9cfc"),
        "{info}"
    );
    let warn = stderr
        .lines()
        .find(|line| line.contains("this policy only logs"))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(warn.contains("WARN"), "{warn}");
}

/// The same lines from `serve`: JSON log events under `portcullis::guest`,
/// tagged with the policy's id, the SDK's key-values in the message.
#[test]
fn a_served_modules_tracing_log_lines_are_the_policys_log_events() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.yml");
    std::fs::write(
        &policies,
        format!(
            "logging:\n  module: {}\n",
            component("kw_logging").display()
        ),
    )
    .unwrap();
    let mut command = served::portcullis();
    command.arg("--policies").arg(&policies);
    let served = served::serve(command);
    let privileged = std::fs::read_to_string(fixture("privileged_pod_review.json")).unwrap();
    let (status, body) = served::http(served.api, "POST", "/validate/logging", &privileged);
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let mut guest = Vec::new();
    while guest.len() < 2 {
        let line = served
            .logs
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("portcullis serve exited or said nothing for a minute");
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or(serde_json::json!({"unparsed": line}));
        if event["target"] == "portcullis::guest" {
            guest.push(event);
        }
    }
    let uid = answer["response"]["uid"].as_str().unwrap();
    let (info, warn) = (&guest[0], &guest[1]);
    assert_eq!(info["level"], "INFO", "{info}");
    assert_eq!(info["fields"]["policy"], "logging", "{info}");
    let message = info["fields"]["message"].as_str().unwrap();
    assert!(message.starts_with("validating a request"), "{info}");
    // The SDK's key-values come along.
    assert!(message.contains(&format!("uid={uid}")), "{info}");
    assert!(message.contains("kind=Pod"), "{info}");
    assert!(message.contains("logger=kw-logging"), "{info}");
    assert_eq!(warn["level"], "WARN", "{warn}");
    assert_eq!(warn["fields"]["policy"], "logging", "{warn}");
    assert!(
        warn["fields"]["message"]
            .as_str()
            .unwrap()
            .starts_with("this policy only logs"),
        "{warn}"
    );
}

#[test]
fn inspect_shows_a_kubewarden_modules_kind_and_metadata() {
    let text = success(&portcullis([
        "inspect".as_ref(),
        "--no-cache".as_ref(),
        component("kw_wasi_command").as_os_str(),
    ]));
    for expected in [
        "kind       kubewarden-wasi",
        "runnable   yes (a Kubewarden policy this host runs unchanged)",
        "  protocol                 WASI",
        "  protocolVersion          Unknown",
        "  hostCapabilities         net/v1/dns_lookup_host",
        "    io.kubewarden.policy.title: kw-wasi-command",
        "  wasi_snapshot_preview1.fd_read",
        "  host.call",
        "    CREATE,UPDATE \"\"/v1 pods",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    let json: serde_json::Value = serde_json::from_str(&success(&portcullis([
        "inspect".as_ref(),
        "--no-cache".as_ref(),
        "-o".as_ref(),
        "json".as_ref(),
        component("kw_raw").as_os_str(),
    ])))
    .unwrap();
    assert_eq!(json["kind"], "kubewarden-wapc");
    assert_eq!(json["runnable"], true);
    assert_eq!(json["kubewarden"]["protocol"], "waPC");
    assert_eq!(json["kubewarden"]["protocolVersion"], "v1");
    assert_eq!(json["kubewarden"]["policyType"], "raw");
    assert!(
        json["exports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "__guest_call"),
        "{json}"
    );
    // An unannotated module: what it is, and why it cannot run.
    let text = success(&portcullis([
        "inspect".as_ref(),
        "--no-cache".as_ref(),
        unannotated("kw_raw").as_os_str(),
    ]));
    assert!(text.contains("kind       core module"), "{text}");
    assert!(
        text.contains("runnable   no: a core WebAssembly module without Kubewarden metadata"),
        "{text}"
    );
}

#[test]
fn bench_and_compile_take_kubewarden_modules() {
    let cache = tempfile::tempdir().unwrap();
    let module = component("kw_pod_privileged");
    let compiled = success(&portcullis([
        "compile".as_ref(),
        "--cache-dir".as_ref(),
        cache.path().as_os_str(),
        module.as_os_str(),
    ]));
    assert!(compiled.contains(": compiled in "), "{compiled}");
    assert!(compiled.trim_end().ends_with(".module.cwasm"), "{compiled}");
    let json: serde_json::Value = serde_json::from_str(&success(&portcullis([
        "bench".as_ref(),
        module.as_os_str(),
        "-r".as_ref(),
        fixture("privileged_container.json").as_os_str(),
        "-n".as_ref(),
        "20".as_ref(),
        "--warmup".as_ref(),
        "2".as_ref(),
        "-o".as_ref(),
        "json".as_ref(),
        "--cache-dir".as_ref(),
        cache.path().as_os_str(),
    ])))
    .unwrap();
    assert_eq!(json["kind"], "kubewarden-wapc");
    assert_eq!(json["origin"], "cache");
    assert_eq!(json["allowed"], false);
    assert_eq!(json["message"], "Privileged container is not allowed");
    assert!(json["total"]["median_us"].as_f64().unwrap() > 0.0);
}

#[test]
fn webhook_config_takes_rules_from_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.yml");
    write_policies(&policies);
    let ca = repo().join("host/tests/fixtures/webhook-ca.crt");
    let yaml = success(&portcullis([
        "webhook-config".as_ref(),
        "--no-cache".as_ref(),
        "--policies".as_ref(),
        policies.as_os_str(),
        "--url".as_ref(),
        "https://127.0.0.1:8443".as_ref(),
        "--ca-file".as_ref(),
        ca.as_os_str(),
    ]));
    let documents: Vec<serde_json::Value> = yaml.split("---\n").map(yaml_to_json).collect();
    let validating = &documents[0]["webhooks"];
    let mutating = &documents[1]["webhooks"];
    let kw = validating
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "kw-privileged.portcullis.admission")
        .expect("a webhook for the Kubewarden module");
    assert_eq!(kw["rules"].as_array().unwrap().len(), 3);
    assert_eq!(kw["rules"][2]["apiGroups"], serde_json::json!(["batch"]));
    assert_eq!(
        kw["rules"][2]["resources"],
        serde_json::json!(["jobs", "cronjobs"])
    );
    assert_eq!(
        kw["clientConfig"]["url"],
        "https://127.0.0.1:8443/validate/kw-privileged"
    );
    assert!(
        mutating
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "kw-annotate.portcullis.admission"),
        "{yaml}"
    );
    // A raw policy has no rules, so no webhook.
    assert!(!yaml.contains("kw-raw.portcullis"), "{yaml}");
}

fn write_policies(path: &Path) {
    std::fs::write(
        path,
        format!(
            "kw-privileged: {{ module: {} }}\n\
             kw-annotate:\n  module: {}\n  allowedToMutate: true\n  settings: {{ annotations: {{ a: b }} }}\n\
             kw-raw: {{ module: {} }}\n\
             component: {{ module: {} }}\n",
            component("kw_pod_privileged").display(),
            component("kw_mutating").display(),
            component("kw_raw").display(),
            component("pod_privileged").display(),
        ),
    )
    .unwrap();
}

/// One YAML document `webhook-config` prints, as JSON.
fn yaml_to_json(doc: &str) -> serde_json::Value {
    serde_saphyr::from_str(doc).expect("webhook-config prints YAML")
}
