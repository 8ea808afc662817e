//! The author and inspector commands as processes, on real components:
//! `inspect`, `bench`, `compile` (and that `run`/`serve` then start warm) and
//! `new`. Building and serving a scaffolded crate takes minutes of compiling,
//! so that is `scripts/check-scaffold`'s job, run by `.ci/run`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portcullis::digest::Digest;
use serde_json::Value;

mod common;

use common::{component, failure, fixture, portcullis, repo, success};

/// pod_privileged with its exported interface renamed to `version` (same
/// length, so the binary stays valid): a component built for another version.
fn pod_privileged_targeting(dir: &Path, version: &str) -> PathBuf {
    let bytes = std::fs::read(component("pod_privileged")).unwrap();
    let from = b"admission@0.1.1";
    let to = format!("admission@{version}");
    assert_eq!(from.len(), to.len());
    let mut out = bytes.clone();
    let mut replaced = 0;
    for at in 0..bytes.len().saturating_sub(from.len()) {
        if &bytes[at..at + from.len()] == from {
            out[at..at + from.len()].copy_from_slice(to.as_bytes());
            replaced += 1;
        }
    }
    assert!(replaced > 0);
    let path = dir.join(format!("pod_privileged-{version}.wasm"));
    std::fs::write(&path, out).unwrap();
    path
}

// --- inspect ------------------------------------------------------------------

#[test]
fn inspect_prints_digest_world_interface_and_metadata() {
    let path = component("pod_privileged");
    let bytes = std::fs::read(&path).unwrap();
    let stdout = success(&portcullis([
        "inspect".as_ref(),
        "--no-cache".as_ref(),
        path.as_os_str(),
    ]));
    let line = |label: &str| {
        stdout
            .lines()
            .find(|line| line.starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` line in:\n{stdout}"))
            .to_owned()
    };
    assert_eq!(line("digest"), format!("digest     {}", Digest::of(&bytes)));
    assert_eq!(line("size"), format!("size       {} bytes", bytes.len()));
    assert_eq!(line("world"), "world      portcullis:policy/policy@0.1.1");
    assert_eq!(
        line("runnable"),
        "runnable   yes (this host implements portcullis:policy/policy@0.1.1)"
    );
    assert!(stdout.contains("\n  wasi:cli/stderr@0.2.6\n"), "{stdout}");
    assert!(
        stdout.contains(
            "\n  portcullis:policy/admission@0.1.1: metadata, validate-settings, validate, validate-raw\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("\n  mutating     false\n"), "{stdout}");
    assert!(
        stdout.contains("\n    CREATE,UPDATE \"\"/v1 pods,replicationcontrollers\n"),
        "{stdout}"
    );
}

#[test]
fn inspect_json_is_machine_readable() {
    let path = component("required_annotations");
    let bytes = std::fs::read(&path).unwrap();
    let stdout = success(&portcullis([
        "inspect".as_ref(),
        "--no-cache".as_ref(),
        "--output".as_ref(),
        "json".as_ref(),
        path.as_os_str(),
    ]));
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["digest"], Digest::of(&bytes).to_string());
    assert_eq!(report["size"], bytes.len());
    assert_eq!(report["runnable"], true);
    assert_eq!(report["reason"], Value::Null);
    assert_eq!(report["world"]["targets"], "portcullis:policy/policy@0.1.1");
    assert_eq!(report["world"]["version"], "0.1.1");
    assert_eq!(
        report["world"]["interface"],
        "portcullis:policy/admission@0.1.1"
    );
    assert_eq!(report["world"]["host"], "portcullis:policy/policy@0.1.1");
    let imports = report["imports"].as_array().unwrap();
    assert!(
        imports
            .iter()
            .all(|name| name.as_str().unwrap().starts_with("wasi:")),
        "a policy needing no capability imports only WASI: {imports:?}"
    );
    let exports = report["exports"].as_array().unwrap();
    assert_eq!(exports.len(), 1, "{exports:?}");
    assert_eq!(exports[0]["kind"], "instance");
    assert_eq!(
        exports[0]["functions"],
        serde_json::json!(["metadata", "validate-settings", "validate", "validate-raw"])
    );
    // The mutating example says so, and its rules use Kubernetes' spelling.
    assert_eq!(report["metadata"]["mutating"], true);
    let rule = &report["metadata"]["rules"][0];
    assert!(rule["apiGroups"].is_array(), "{rule}");
    assert!(
        rule["operations"]
            .as_array()
            .unwrap()
            .contains(&Value::from("CREATE")),
        "{rule}"
    );
}

#[test]
fn inspect_explains_why_a_component_of_another_world_cannot_run() {
    let stdout = success(&portcullis([
        "inspect".as_ref(),
        "--no-cache".as_ref(),
        "-o".as_ref(),
        "json".as_ref(),
        component("not-a-policy").as_os_str(),
    ]));
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["runnable"], false);
    assert_eq!(report["world"]["targets"], Value::Null);
    assert_eq!(
        report["reason"],
        "does not implement `portcullis:policy/policy@0.1.1`: missing export \
         `portcullis:policy/admission@0.1.1`"
    );
    assert_eq!(report["metadata"], Value::Null);
    let exports: Vec<&str> = report["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        exports.iter().any(|name| name.starts_with("wasi:cli/run@")),
        "{exports:?}"
    );
}

#[test]
fn inspect_names_the_version_a_component_targets_when_this_host_cannot_run_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = pod_privileged_targeting(dir.path(), "0.2.0");
    let stdout = success(&portcullis([
        "inspect".as_ref(),
        "--no-cache".as_ref(),
        path.as_os_str(),
    ]));
    assert!(
        stdout.contains("\nworld      portcullis:policy/policy@0.2.0\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "\nrunnable   no: exports `portcullis:policy/admission@0.2.0`, which is not \
             semver-compatible with `portcullis:policy/admission@0.1.1`"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("\nmetadata\n"), "{stdout}");
}

#[test]
fn inspect_refuses_what_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "hello").unwrap();
    let stderr = failure(&portcullis([
        "inspect".as_ref(),
        "--no-cache".as_ref(),
        text.as_os_str(),
    ]));
    assert!(
        stderr.contains("notes.wasm: not a WebAssembly file"),
        "{stderr}"
    );
}

// --- bench --------------------------------------------------------------------

#[test]
fn bench_times_instantiation_and_evaluation_apart() {
    let stdout = success(&portcullis([
        "bench".as_ref(),
        "--no-cache".as_ref(),
        component("pod_privileged").as_os_str(),
        "--request".as_ref(),
        fixture("privileged_pod_review.json").as_os_str(),
        "--runs".as_ref(),
        "40".as_ref(),
        "--warmup".as_ref(),
        "2".as_ref(),
        "--output".as_ref(),
        "json".as_ref(),
    ]));
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["runs"], 40);
    assert_eq!(report["warmup"], 2);
    assert_eq!(report["allowed"], false);
    assert_eq!(report["message"], "Privileged container is not allowed");
    assert_eq!(report["origin"], "compiled");
    for phase in ["instantiate", "evaluate", "total"] {
        let f = |key: &str| report[phase][key].as_f64().unwrap();
        assert!(f("min_us") > 0.0, "{phase}: {}", report[phase]);
        assert!(f("min_us") <= f("median_us"), "{phase}");
        assert!(f("median_us") <= f("p99_us"), "{phase}");
        assert!(f("p99_us") <= f("max_us"), "{phase}");
        assert!(f("min_us") <= f("mean_us") && f("mean_us") <= f("max_us"));
    }
    // Every run's total is its instantiation plus its evaluation.
    let min = |phase: &str| report[phase]["min_us"].as_f64().unwrap();
    assert!(min("total") >= min("instantiate"));
    assert!(min("total") >= min("evaluate"));
}

#[test]
fn bench_prints_a_table_and_uses_the_settings() {
    let stdout = success(&portcullis([
        "bench".as_ref(),
        "--no-cache".as_ref(),
        component("pod_privileged").as_os_str(),
        "-r".as_ref(),
        fixture("privileged_init_container.json").as_os_str(),
        "--settings-json".as_ref(),
        r#"{"skip_init_containers": true}"#.as_ref(),
        "-n".as_ref(),
        "5".as_ref(),
    ]));
    assert!(stdout.contains("\nverdict    allowed\n"), "{stdout}");
    assert!(
        stdout.contains("\nruns       5 (after 20 unmeasured), each in a fresh instance\n"),
        "{stdout}"
    );
    let header = stdout
        .lines()
        .find(|line| line.trim_start().starts_with("min"))
        .unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["min", "median", "p99", "max", "mean"]
    );
    for phase in ["instantiate", "evaluate", "total"] {
        let row = stdout
            .lines()
            .find(|line| line.starts_with(phase))
            .unwrap_or_else(|| panic!("no {phase} row:\n{stdout}"));
        assert_eq!(
            row.matches(" µs").count() + row.matches(" ms").count(),
            5,
            "{row}"
        );
    }
}

#[test]
fn bench_refuses_zero_runs_and_rejected_settings() {
    let zero = failure(&portcullis([
        "bench".as_ref(),
        component("pod_privileged").as_os_str(),
        "-r".as_ref(),
        fixture("privileged_container.json").as_os_str(),
        "--runs".as_ref(),
        "0".as_ref(),
    ]));
    assert!(zero.contains("--runs"), "{zero}");
    let settings = failure(&portcullis([
        "bench".as_ref(),
        "--no-cache".as_ref(),
        component("pod_privileged").as_os_str(),
        "-r".as_ref(),
        fixture("privileged_container.json").as_os_str(),
        "--settings-json".as_ref(),
        r#"{"skip_init_containers": 3}"#.as_ref(),
    ]));
    assert!(settings.contains("settings rejected: "), "{settings}");
}

// --- compile ------------------------------------------------------------------

#[test]
fn compile_fills_the_cache_once() {
    let cache = tempfile::tempdir().unwrap();
    let args = |paths: &[PathBuf]| {
        let mut args = vec!["compile".into(), "--cache-dir".into(), cache.path().into()];
        args.extend(paths.iter().map(|p| p.clone().into_os_string()));
        args
    };
    let components = [component("pod_privileged"), component("counter_policy")];
    let first = success(&portcullis(args(&components)));
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 2, "{first}");
    for (line, path) in lines.iter().zip(&components) {
        let digest = Digest::of(&std::fs::read(path).unwrap());
        assert!(
            line.starts_with(&format!("{digest} {}: compiled in ", path.display())),
            "{line}"
        );
        let entry = line.rsplit(" -> ").next().unwrap();
        assert!(Path::new(entry).is_file(), "{entry}");
        assert!(Path::new(entry).starts_with(cache.path()), "{entry}");
    }
    let second = success(&portcullis(args(&components[..1])));
    assert!(second.contains(": already in the cache -> "), "{second}");
}

#[test]
fn compile_refuses_a_component_that_is_not_a_policy() {
    let cache = tempfile::tempdir().unwrap();
    let stderr = failure(&portcullis([
        "compile".as_ref(),
        "--cache-dir".as_ref(),
        cache.path().as_os_str(),
        component("not-a-policy").as_os_str(),
    ]));
    assert!(
        stderr.contains("not-a-policy.wasm: does not implement `portcullis:policy/policy@0.1.1`"),
        "{stderr}"
    );
}

/// The `policies loaded` log event of `portcullis run`/`serve` (JSON logs).
fn policies_loaded(stderr: impl BufRead) -> Value {
    for line in stderr.lines() {
        let line = line.unwrap();
        if let Ok(event) = serde_json::from_str::<Value>(&line)
            && event["fields"]["message"] == "policies loaded"
        {
            return event["fields"].clone();
        }
    }
    panic!("no `policies loaded` event");
}

#[test]
fn run_and_serve_start_warm_after_compile() {
    let cache = tempfile::tempdir().unwrap();
    let policy = component("pod_privileged");
    success(&portcullis([
        "compile".as_ref(),
        "--cache-dir".as_ref(),
        cache.path().as_os_str(),
        policy.as_os_str(),
    ]));

    let run = portcullis([
        "run".as_ref(),
        "--log-level".as_ref(),
        "info".as_ref(),
        "--log-fmt".as_ref(),
        "json".as_ref(),
        "--cache-dir".as_ref(),
        cache.path().as_os_str(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--request".as_ref(),
        fixture("privileged_container.json").as_os_str(),
    ]);
    success(&run);
    let loaded = policies_loaded(&run.stderr[..]);
    assert_eq!(
        (&loaded["compiled"], &loaded["from_cache"]),
        (&0.into(), &1.into())
    );

    // `serve` builds its engine from its own flags (pool sizes follow
    // --workers): the entries must still match.
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.yml");
    std::fs::write(
        &policies,
        format!("privileged:\n  module: {}\n", policy.display()),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--addr", "127.0.0.1", "--port", "0"])
        .args(["--readiness-probe-port", "0", "--workers", "3"])
        .args(["--log-fmt", "json", "--policies"])
        .arg(&policies)
        .arg("--cache-dir")
        .arg(cache.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let started = Instant::now();
    let loaded = policies_loaded(stderr);
    let _ = child.kill();
    let _ = child.wait();
    assert!(started.elapsed() < Duration::from_secs(120));
    assert_eq!(
        (&loaded["compiled"], &loaded["from_cache"]),
        (&0.into(), &1.into())
    );
}

// --- new ----------------------------------------------------------------------

#[test]
fn new_scaffolds_a_crate_on_the_sdk_of_this_checkout() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("no-latest");
    let stdout = success(&portcullis([
        "new".as_ref(),
        "no-latest".as_ref(),
        "--path".as_ref(),
        target.as_os_str(),
    ]));
    assert!(
        stdout.starts_with("Created policy `no-latest` in "),
        "{stdout}"
    );
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        ".gitignore",
        "src/lib.rs",
        "src/tests.rs",
        "test_data/pod_latest_tag.json",
        "test_data/pod_fixed_tag.json",
        "test_data/review_latest_tag.json",
        "test_data/settings.json",
    ] {
        assert!(target.join(file).is_file(), "{file}");
    }
    let manifest = std::fs::read_to_string(target.join("Cargo.toml")).unwrap();
    let sdk = repo().join("guest-sdk").canonicalize().unwrap();
    assert!(manifest.contains("name = \"no-latest\""), "{manifest}");
    assert!(
        manifest.contains(&format!(
            "portcullis-sdk = {{ path = \"{}\" }}",
            sdk.display()
        )),
        "{manifest}"
    );
    let lib = std::fs::read_to_string(target.join("src/lib.rs")).unwrap();
    assert!(lib.contains("pub struct NoLatest;"), "{lib}");
    assert!(
        lib.contains("portcullis_sdk::export_policy!(NoLatest);"),
        "{lib}"
    );
    assert!(!lib.contains("{{"), "unfilled placeholder:\n{lib}");
    // The fixtures are requests the host itself accepts.
    let request = std::fs::read(target.join("test_data/pod_latest_tag.json")).unwrap();
    portcullis::admission::parse_review_or_request(&request).unwrap();

    // Never over an existing crate.
    let again = failure(&portcullis([
        "new".as_ref(),
        "no-latest".as_ref(),
        "--path".as_ref(),
        target.as_os_str(),
    ]));
    assert!(again.contains("already exists and is not empty"), "{again}");
}

#[test]
fn new_can_take_the_sdk_from_git_and_checks_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("p");
    success(&portcullis([
        "new".as_ref(),
        "p".as_ref(),
        "--path".as_ref(),
        target.as_os_str(),
        "--sdk-git".as_ref(),
        "https://example.invalid/portcullis.git".as_ref(),
        "--sdk-rev".as_ref(),
        "v0.1.0".as_ref(),
    ]));
    let manifest = std::fs::read_to_string(target.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains(
            r#"portcullis-sdk = { git = "https://example.invalid/portcullis.git", rev = "v0.1.0" }"#
        ),
        "{manifest}"
    );
    assert!(!target.join("Cargo.lock").exists());

    let bad = failure(&portcullis([
        "new".as_ref(),
        "My_Policy".as_ref(),
        "--path".as_ref(),
        dir.path().join("x").as_os_str(),
    ]));
    assert!(bad.contains("invalid policy name `My_Policy`"), "{bad}");
    let no_sdk = failure(&portcullis([
        "new".as_ref(),
        "p2".as_ref(),
        "--path".as_ref(),
        dir.path().join("p2").as_os_str(),
        "--sdk-path".as_ref(),
        dir.path().as_os_str(),
    ]));
    assert!(no_sdk.contains("no portcullis-sdk at "), "{no_sdk}");
}
