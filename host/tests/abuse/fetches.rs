//! Hostile registries (issue 20, findings 4 and 5), from the
//! [stand-in](crate::hostile_registry): a registry that drips bytes must not
//! keep start-up waiting silently, nor keep a reload (and every later one)
//! from being applied; one that sends without end must not take the
//! server's memory.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::common::components_dir;
use crate::common::served::{Served, log_lines, serve_command};
use crate::harness::{
    Options, Target, alone, exchange, get, policies_yml, post, privileged_review, start,
};
use crate::hostile_registry::{HostileRegistry, MAX_MODULE_BYTES};

/// Fetches the server runs at once (`portcullis::source::PARALLEL_FETCHES`).
const PARALLEL_FETCHES: usize = 8;

/// How far a fetch's peak memory may rise above the resting RSS.
const FETCH_MIB: u64 = 64;

/// Finding 4 at start-up: a manifest and a module each dripping a byte a
/// second keep the server unready, it logs every 10 s what it waits on,
/// and at the deadline it fails naming each policy, its URI and what it
/// was reading; nothing half-written stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::await_holding_lock,
    reason = "the suite's turn is held for the whole test, as `Target` holds it; each test has a runtime of its own"
)]
async fn start_up_waits_on_a_dripping_registry_at_most_the_fetch_deadline() {
    let _alone = alone();
    let registry = HostileRegistry::start(Duration::from_secs(1)).await;
    let files = tempfile::tempdir().unwrap();
    let policies = files.path().join("policies.yml");
    let manifest = registry.uri("drip-manifest", "policy");
    let module = registry.uri("drip-blob", "policy");
    std::fs::write(
        &policies,
        format!("slow-manifest: {{ module: {manifest} }}\nslow-module: {{ module: {module} }}\n"),
    )
    .unwrap();
    let deadline = 12;
    let mut command = serve_command();
    command
        .arg("--policies")
        .arg(&policies)
        .args(["--log-fmt", "json", "--no-cache"])
        .args(["--fetch-timeout", &deadline.to_string()]);
    let (args, store) = fetch_args(files.path(), &registry);
    command.args(args);
    let started = Instant::now();
    let mut child = command.spawn().expect("starting portcullis serve");
    let logs = log_lines(&mut child);
    let unbound = "0.0.0.0:0".parse().unwrap();
    let mut served = Served {
        child,
        api: unbound,
        probes: unbound,
        logs,
    };

    let mut lines = Vec::new();
    let mut unready = 0;
    let exit = loop {
        lines.extend(served.logs.try_iter());
        if let Some(status) = served.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(deadline + 60),
            "start-up still waits after {:?}:\n{}",
            started.elapsed(),
            lines.join("\n")
        );
        if served.probes == unbound {
            served.probes = readiness_addr(&lines).unwrap_or(unbound);
        } else if let Ok((status, body, _)) =
            exchange(served.probes, None, &get("/readiness")).await
        {
            assert_eq!(status, 503, "ready while its policies are not: {body}");
            unready += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The last lines, written as it exited.
    tokio::time::sleep(Duration::from_millis(200)).await;
    lines.extend(served.logs.try_iter());
    let logs = lines.join("\n");

    assert!(!exit.success(), "{exit:?}\n{logs}");
    assert!(unready > 0, "the probe never answered:\n{logs}");
    assert!(
        started.elapsed() >= Duration::from_secs(deadline),
        "failed before the deadline:\n{logs}"
    );
    for uri in [&manifest, &module] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains("waiting for a module fetch") && l.contains(uri.as_str())),
            "no line says start-up waits on {uri}:\n{logs}"
        );
    }
    // The error and the lines of its list.
    let error = logs
        .find("error: ")
        .map(|at| &logs[at..])
        .unwrap_or_else(|| panic!("no error:\n{logs}"));
    for (policy, uri, stage) in [
        ("slow-manifest", &manifest, "reading the manifest"),
        ("slow-module", &module, "reading the module"),
    ] {
        let expected = format!(
            "policy `{policy}` ({uri}): the fetch did not finish within its deadline of \
             {deadline} s (--fetch-timeout): cancelled while {stage}"
        );
        assert!(error.contains(&expected), "{expected}\nnot in\n{error}");
    }
    assert_eq!(tmp_files(&store), 0);
    assert_eq!(registry.open(), 0, "the process is gone, its fetches too");
    drop(registry);
}

/// Finding 4 in a reload, by SIGHUP: ten policies whose manifests drip
/// (more than run at once: at most eight are fetched together) leave the
/// reload waiting; a corrected configuration and another SIGHUP supersede
/// it, are applied long before the old reload's deadline, and its fetches
/// are cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_stuck_on_a_dripping_registry_is_superseded_by_a_later_sighup() {
    let (target, registry, store, _files) = served_with_registry(&[]).await;
    let stuck: String = (0..10)
        .map(|i| {
            let uri = registry.uri("drip-manifest", &format!("policy-{i}"));
            format!("stuck-{i}: {{ module: {uri} }}\n")
        })
        .collect();
    std::fs::write(target.policies_file(), policies_yml() + &stuck).unwrap();
    hangup(&target);
    wait_until("eight fetches under way", Duration::from_secs(30), || {
        registry.open() == PARALLEL_FETCHES
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(registry.most_open(), PARALLEL_FETCHES);

    supersede(&target, &registry, &store, true).await;
}

/// The same with `--watch`, and a module that drips: writing the corrected
/// file is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_stuck_on_a_dripping_registry_is_superseded_by_a_later_file_change() {
    let (target, registry, store, _files) = served_with_registry(&["--watch"]).await;
    let uri = registry.uri("drip-blob", "policy");
    let stuck = format!("stuck: {{ module: {uri} }}\n");
    std::fs::write(target.policies_file(), policies_yml() + &stuck).unwrap();
    wait_until("the module is being sent", Duration::from_secs(30), || {
        registry.open() == 1
    })
    .await;

    supersede(&target, &registry, &store, false).await;
}

/// Finding 5: one policy whose manifest never ends and three whose
/// modules never end, fetched together in a reload: each is refused at its
/// limit as it arrives (the module streamed to disk meanwhile), the reload
/// fails naming them, and the server's memory never rises more than
/// [`FETCH_MIB`] above its resting RSS; the configuration serving stays and
/// answers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_manifests_and_modules_are_cut_at_their_limits_as_they_stream() {
    let (target, registry, store, _files) = served_with_registry(&[]).await;
    let mut hostile = format!(
        "huge: {{ module: {} }}\n",
        registry.uri("huge-manifest", "policy")
    );
    for i in 0..3 {
        let uri = registry.uri("endless-blob", &format!("policy-{i}"));
        hostile += &format!("endless-{i}: {{ module: {uri} }}\n");
    }
    std::fs::write(target.policies_file(), policies_yml() + &hostile).unwrap();
    let mut lines = Vec::new();
    reset_peak(&target);
    hangup(&target);
    let (failure, _) = target
        .during(
            "endless manifests and modules",
            wait_for_log(&target, &mut lines, "configuration reload failed", 120),
        )
        .await;
    let peak = peak_mib(&target);
    eprintln!(
        "RSS at rest {} MiB, peak during the fetches {peak} MiB",
        target.baseline_mib
    );
    assert!(
        peak <= target.baseline_mib + FETCH_MIB,
        "peak RSS {peak} MiB during the fetches, at rest {} MiB",
        target.baseline_mib
    );
    assert!(
        failure.contains(&format!(
            "policy `huge` ({}): the manifest is larger than 4194304 bytes",
            registry.uri("huge-manifest", "policy")
        )),
        "{failure}"
    );
    for i in 0..3 {
        let uri = registry.uri("endless-blob", &format!("policy-{i}"));
        let expected = format!(
            "policy `endless-{i}` ({uri}): the module is larger than {MAX_MODULE_BYTES} bytes"
        );
        assert!(failure.contains(&expected), "{expected}\nnot in\n{failure}");
    }
    assert_eq!(tmp_files(&store), 0);
    target.check_serves("after the failed reload").await;
    target.settles("the endless fetches").await;
}

/// A server of the suite's policies that reaches a new stand-in registry,
/// with the default fetch deadline (120 s: longer than any of these tests
/// waits), and the directory of its download store.
async fn served_with_registry(
    extra: &[&str],
) -> (Target, HostileRegistry, PathBuf, tempfile::TempDir) {
    let registry = HostileRegistry::start(Duration::from_millis(500)).await;
    let files = tempfile::tempdir().unwrap();
    let (mut args, store) = fetch_args(files.path(), &registry);
    args.extend(extra.iter().map(|a| a.to_string()));
    let target = start(Options {
        args,
        ..Options::default()
    });
    (target, registry, store, files)
}

/// `--sources-path` (a file in `dir` listing the registry as insecure) and
/// `--policies-download-dir` (in `dir`, returned too).
fn fetch_args(dir: &Path, registry: &HostileRegistry) -> (Vec<String>, PathBuf) {
    let sources = dir.join("sources.yml");
    std::fs::write(&sources, registry.sources_yml()).unwrap();
    let store = dir.join("downloads");
    let args = vec![
        "--sources-path".to_owned(),
        sources.display().to_string(),
        "--policies-download-dir".to_owned(),
        store.display().to_string(),
    ];
    (args, store)
}

/// Writes a corrected configuration (the suite's policies and `extra`),
/// by SIGHUP or by the file alone, while a reload is stuck: it is applied
/// and serves, the stuck fetches are cancelled, nothing half-written stays.
async fn supersede(target: &Target, registry: &HostileRegistry, store: &Path, signal: bool) {
    let module = components_dir().join("pod_privileged.wasm");
    let corrected = format!("extra: {{ module: {} }}\n", module.display());
    let mut lines = Vec::new();
    let written = Instant::now();
    std::fs::write(target.policies_file(), policies_yml() + &corrected).unwrap();
    if signal {
        hangup(target);
    }
    wait_for_log(target, &mut lines, "configuration reloaded", 60).await;
    let applied = written.elapsed();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("supersedes the reload under way")),
        "{}",
        lines.join("\n")
    );
    let review = post("/validate/extra", &privileged_review());
    let (status, body, _) = exchange(target.api(), None, &review).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("Privileged container is not allowed"),
        "{body}"
    );
    wait_until(
        "the stuck fetches are cancelled",
        Duration::from_secs(10),
        || registry.open() == 0,
    )
    .await;
    assert_eq!(tmp_files(store), 0);
    target.check_serves("after the superseding reload").await;
    eprintln!("the corrected configuration was applied {applied:?} after it was written");
}

fn hangup(target: &Target) {
    let pid = target.served.child.id().to_string();
    let status: ExitStatus = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Collects the server's log lines into `lines` until one contains
/// `needle` (within `seconds`), and returns it.
async fn wait_for_log(
    target: &Target,
    lines: &mut Vec<String>,
    needle: &str,
    seconds: u64,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        for line in target.served.logs.try_iter() {
            let found = line.contains(needle);
            lines.push(line);
            if found {
                return lines.last().unwrap().clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no log line with `{needle}` in {seconds} s:\n{}",
            lines.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The address in the "probes listening" line, once logged.
fn readiness_addr(lines: &[String]) -> Option<std::net::SocketAddr> {
    lines.iter().find_map(|line| {
        let event: serde_json::Value = serde_json::from_str(line).ok()?;
        event["fields"]["readiness_addr"].as_str()?.parse().ok()
    })
}

fn tmp_files(store: &Path) -> usize {
    std::fs::read_dir(store.join("tmp")).map_or(0, |entries| entries.count())
}

/// Starts the kernel's count of the server's peak RSS (VmHWM) again.
fn reset_peak(target: &Target) {
    let pid = target.served.child.id();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// The server's peak RSS since [`reset_peak`], in MiB.
fn peak_mib(target: &Target) -> u64 {
    let pid = target.served.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}
