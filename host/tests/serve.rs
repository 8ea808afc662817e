//! `portcullis serve` as a process: the embedded default configuration,
//! configuration errors, environment variables, and SIGTERM with a request in
//! flight.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::served::{http, log_lines, portcullis, serve};
use common::{components_dir, repo};

fn privileged_review() -> String {
    std::fs::read_to_string(
        repo().join("examples/pod-privileged/test_data/privileged_pod_review.json"),
    )
    .unwrap()
}

#[test]
fn the_embedded_default_serves_the_example_policies() {
    let served = serve(portcullis());
    assert_eq!(http(served.probes, "GET", "/readiness", "").0, 200);
    let (status, body) = http(
        served.api,
        "POST",
        "/validate/privileged-pods",
        &privileged_review(),
    );
    assert_eq!(status, 200, "{body}");
    let review: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(review["response"]["allowed"], false);
    assert_eq!(
        review["response"]["status"]["message"],
        "Privileged container is not allowed"
    );
}

#[test]
fn a_monitor_mode_rejection_is_logged_once_as_valid_json() {
    let served = serve(portcullis());
    let (status, body) = http(
        served.api,
        "POST",
        "/validate/privileged-pods-monitor",
        &privileged_review(),
    );
    assert_eq!(status, 200, "{body}");
    let review: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(review["response"]["allowed"], true, "{body}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = served
            .logs
            .recv_timeout(left)
            .expect("no monitor-mode log line");
        if line.contains("monitor mode: verdict not enforced") {
            break line;
        }
    };
    // Duplicate keys are valid to some JSON parsers and lost by others.
    assert_eq!(line.matches(r#""message":"#).count(), 1, "{line}");
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    let fields = &event["fields"];
    assert_eq!(fields["message"], "monitor mode: verdict not enforced");
    assert_eq!(fields["verdict"], "Privileged container is not allowed");
    assert_eq!(fields["policy"], "privileged-pods-monitor");
    assert_eq!(fields["outcome"], "rejected");
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.yml");
    let module = components_dir().join("sleeping.wasm");
    std::fs::write(
        &policies,
        format!(
            "nap:\n  module: {}\n  settings: {{ sleepMilliseconds: 1000 }}\n",
            module.display()
        ),
    )
    .unwrap();
    let mut command = portcullis();
    command.env("PORTCULLIS_POLICIES", &policies);
    let mut served = serve(command);
    let api = served.api;
    let in_flight =
        std::thread::spawn(move || http(api, "POST", "/validate/nap", &privileged_review()));
    std::thread::sleep(Duration::from_millis(300));
    let pid = served.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (status, body) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""allowed":true"#), "{body}");
    let exit = served.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn a_bad_policies_file_stops_startup_naming_policy_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.yml");
    std::fs::write(
        &policies,
        "privileged:\n  module: pod_privileged.wasm\n  allowedToMutate: sometimes\n",
    )
    .unwrap();
    let output = portcullis()
        .arg("--policies")
        .arg(&policies)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("policy `privileged`: key `allowedToMutate`: "),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_policy_whose_settings_are_rejected_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.yml");
    let module = components_dir().join("sleeping.wasm");
    std::fs::write(
        &policies,
        format!("nap:\n  module: {}\n  settings: {{}}\n", module.display()),
    )
    .unwrap();
    let output = portcullis()
        .arg("--policies")
        .arg(&policies)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error: policy `nap` ("), "{stderr}");
    assert!(stderr.contains("settings rejected: "), "{stderr}");
}

/// Pulling policies and syncing Kubernetes caches happen with the probes
/// already up: while an API server that never answers holds the start-up,
/// `/livez` is 200 (the liveness probe does not restart a replica that is
/// only waiting) and `/readiness` a JSON 503 (no traffic yet).
#[test]
fn the_probes_answer_while_the_kubernetes_caches_sync() {
    // Connections complete in the kernel's backlog; nothing ever answers.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: stalled\n\
             clusters: [{{name: stalled, cluster: {{server: 'http://{}'}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\n\
             contexts: [{{name: stalled, context: {{cluster: stalled, user: u}}}}]\n",
            stalled.local_addr().unwrap()
        ),
    )
    .unwrap();
    let policies = dir.path().join("policies.yml");
    std::fs::write(
        &policies,
        "labelled-namespaces:\n  module: namespace_label_required.wasm\n  \
         settings: { label: team }\n  \
         contextAwareResources: [{ apiVersion: v1, kind: Namespace }]\n",
    )
    .unwrap();
    let mut command = portcullis();
    command
        .arg("--policies")
        .arg(&policies)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST");
    let mut child = command.spawn().unwrap();
    let lines = log_lines(&mut child);
    let field = |line: &str, key: &str| -> Option<String> {
        let event: serde_json::Value = serde_json::from_str(line).ok()?;
        Some(event["fields"][key].as_str()?.to_owned())
    };
    let mut probes = None;
    let mut waiting = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while probes.is_none() || !waiting {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            let _ = child.kill();
            panic!("no probe address and no \"waiting for the Kubernetes caches\" line");
        };
        if let Some(addr) = field(&line, "readiness_addr") {
            probes = Some(addr.parse::<std::net::SocketAddr>().unwrap());
        }
        waiting |= line.contains("waiting for the Kubernetes caches to sync");
        assert!(
            !line.contains("\"serving\""),
            "served without a cluster: {line}"
        );
    }
    let probes = probes.unwrap();
    assert_eq!(http(probes, "GET", "/livez", "").0, 200);
    let (status, body) = http(probes, "GET", "/readiness", "");
    assert_eq!(status, 503, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["error"], "loading policies");
    let _ = child.kill();
    let _ = child.wait();
}
