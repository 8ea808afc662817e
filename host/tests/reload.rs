//! `serve --watch` and SIGHUP: the configuration changes under load without
//! a failed request, every answer comes from a configuration that existed,
//! an invalid version changes nothing, and memory comes back.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::served::{Served, http, portcullis, serve};
use common::{components_dir, repo};

/// Connections the load keeps busy, as the issue asks.
const CONNECTIONS: usize = 32;
/// Versions written after the first; the last returns to the first.
const VERSIONS: usize = 20;
/// The version that cannot load: a policy's settings are rejected.
const INVALID: usize = 13;

/// Version `i` of the configuration: `stable` (always there, its message
/// names the version), `trusted` (settings change), an extra policy on
/// even versions, a group on every third; `INVALID` adds a policy whose
/// settings its component rejects. The last version is the first again
/// (with its own label).
fn version(i: usize) -> String {
    let module = |name: &str| components_dir().join(name).display().to_string();
    let shape = if i == VERSIONS { 0 } else { i };
    let mut yml = format!(
        "stable:\n  module: {}\n  message: v{i}\n\
         trusted:\n  module: {}\n  settings: {{ allowedRegistries: [\"r{shape}.example.com\"] }}\n",
        module("pod_privileged.wasm"),
        module("trusted_images.wasm"),
    );
    if shape % 2 == 0 && shape != 0 {
        yml.push_str(&format!(
            "extra-{shape}:\n  module: {}\n  settings: {{ sleepMilliseconds: 1 }}\n",
            module("sleeping.wasm")
        ));
    }
    if shape % 3 == 0 && shape != 0 {
        yml.push_str(&format!(
            "group:\n  expression: \"a() || b()\"\n  message: group v{i}\n  policies:\n    \
             a: {{ module: {} }}\n    b: {{ module: {} }}\n",
            module("pod_privileged.wasm"),
            module("disallow_service_loadbalancer.wasm"),
        ));
    }
    if i == INVALID {
        yml.push_str(&format!(
            "broken:\n  module: {}\n  settings: {{ sleepMilliseconds: 0 }}\n",
            module("sleeping.wasm")
        ));
    }
    yml
}

/// Writes `text` to `path` as editors and ConfigMaps do: a new file renamed
/// over the old one.
fn replace(path: &Path, text: &str) {
    let temporary = path.with_extension("yml.tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

fn privileged_review() -> String {
    std::fs::read_to_string(
        repo().join("examples/pod-privileged/test_data/privileged_pod_review.json"),
    )
    .unwrap()
}

/// `portcullis_config_reloads_total{result="…"}`.
fn reloads(served: &Served, result: &str) -> u64 {
    let (_, metrics) = http(served.probes, "GET", "/metrics", "");
    let prefix = format!("portcullis_config_reloads_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Waits (up to a minute: CI machines are slow) until `result` reloads
/// reached `count`.
fn wait_for_reloads(served: &Served, result: &str, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while reloads(served, result) < count {
        assert!(
            Instant::now() < deadline,
            "no {result} reload #{count} within a minute"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Resident memory of the process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    requests: u64,
    non_2xx: Vec<String>,
    socket_errors: Vec<String>,
    /// The version (from `stable`'s message) of each answer, in order.
    versions: Vec<usize>,
}

/// `CONNECTIONS` keep-alive connections posting to `/validate/stable`
/// until `stop`.
async fn load(api: SocketAddr, stop: Arc<AtomicBool>) -> Seen {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let body = privileged_review();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        let (stop, body) = (stop.clone(), body.clone());
        let url = format!("http://{api}/validate/stable");
        tasks.spawn(async move {
            let mut seen = Seen::default();
            while !stop.load(Ordering::Relaxed) {
                seen.requests += 1;
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let response = match sent {
                    Ok(response) => response,
                    Err(error) => {
                        seen.socket_errors.push(error.to_string());
                        continue;
                    }
                };
                let status = response.status();
                let text = match response.text().await {
                    Ok(text) => text,
                    Err(error) => {
                        seen.socket_errors.push(error.to_string());
                        continue;
                    }
                };
                if !status.is_success() {
                    seen.non_2xx.push(format!("{status}: {text}"));
                    continue;
                }
                let review: serde_json::Value = serde_json::from_str(&text).unwrap();
                let message = review["response"]["status"]["message"].as_str().unwrap();
                let version = message
                    .strip_prefix('v')
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("an answer from no configuration: {text}"));
                seen.versions.push(version);
            }
            seen
        });
    }
    let mut all = Seen::default();
    while let Some(joined) = tasks.join_next().await {
        let seen = joined.unwrap();
        all.requests += seen.requests;
        all.non_2xx.extend(seen.non_2xx);
        all.socket_errors.extend(seen.socket_errors);
        // Each connection's answers come in order: versions never go back.
        assert!(
            seen.versions.windows(2).all(|w| w[0] <= w[1]),
            "a connection saw an older configuration after a newer one: {:?}",
            seen.versions
        );
        all.versions.extend(seen.versions);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_changes_under_load_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.yml");
    replace(&file, &version(0));
    let served = serve({
        let mut command = portcullis();
        command.arg("--policies").arg(&file).arg("--watch");
        command
    });
    let pid = served.child.id();

    // Warm up under the same load, then let it settle: the baseline.
    let stop = Arc::new(AtomicBool::new(false));
    let warm_up = tokio::spawn(load(served.api, stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let warm = warm_up.await.unwrap();
    assert!(warm.non_2xx.is_empty() && warm.socket_errors.is_empty());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let baseline = rss_kib(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(served.api, stop.clone()));
    let mut ok = 0;
    for i in 1..=VERSIONS {
        replace(&file, &version(i));
        if i == INVALID {
            wait_for_reloads(&served, "error", 1);
            // Still the previous version, still ready.
            let (status, body) = http(served.api, "POST", "/validate/stable", &privileged_review());
            assert_eq!(status, 200, "{body}");
            assert!(body.contains(&format!("\"v{}\"", INVALID - 1)), "{body}");
            assert_eq!(http(served.probes, "GET", "/readiness", "").0, 200);
        } else {
            ok += 1;
            wait_for_reloads(&served, "ok", ok);
        }
        // Let the load see this version for a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let seen = running.await.unwrap();

    assert!(
        seen.requests > 1_000,
        "the load ran: {} requests",
        seen.requests
    );
    assert_eq!(seen.socket_errors, Vec::<String>::new(), "socket errors");
    assert_eq!(seen.non_2xx, Vec::<String>::new(), "non-2xx answers");
    let versions: HashSet<usize> = seen.versions.iter().copied().collect();
    assert!(!versions.contains(&INVALID), "the invalid version served");
    assert!(versions.contains(&VERSIONS), "the last version served");
    assert_eq!(reloads(&served, "error"), 1);
    assert_eq!(reloads(&served, "ok"), VERSIONS as u64 - 1);
    let logs: Vec<String> = served.logs.try_iter().collect();
    let failure = logs
        .iter()
        .find(|line| line.contains("configuration reload failed"))
        .expect("the failed reload is logged");
    assert!(failure.contains("policy `broken`"), "{failure}");
    assert!(failure.contains("sleepMilliseconds"), "{failure}");

    // Back on the first configuration, memory returns to its level.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rss = rss_kib(pid);
    while rss * 10 > baseline * 11 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss = rss_kib(pid);
    }
    eprintln!(
        "{} requests, {} reloads; RSS {baseline} KiB before, {rss} KiB after",
        seen.requests, VERSIONS
    );
    assert!(
        rss * 10 <= baseline * 11,
        "RSS {rss} KiB is more than 10% above its starting {baseline} KiB"
    );
}

#[test]
fn sighup_reloads_and_a_broken_file_keeps_the_old_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.yml");
    replace(&file, &version(0));
    let served = serve({
        let mut command = portcullis();
        command.arg("--policies").arg(&file);
        command
    });
    let hangup = || {
        let pid = served.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    // Without --watch a change waits for SIGHUP.
    replace(&file, &version(1));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(reloads(&served, "ok"), 0);
    hangup();
    wait_for_reloads(&served, "ok", 1);
    let (_, body) = http(served.api, "POST", "/validate/stable", &privileged_review());
    assert!(body.contains("\"v1\""), "{body}");
    // Not YAML: nothing changes, the error names the file.
    replace(&file, "stable: [");
    hangup();
    wait_for_reloads(&served, "error", 1);
    let (_, body) = http(served.api, "POST", "/validate/stable", &privileged_review());
    assert!(body.contains("\"v1\""), "{body}");
    assert_eq!(http(served.probes, "GET", "/readiness", "").0, 200);
    let logs: Vec<String> = served.logs.try_iter().collect();
    assert!(
        logs.iter()
            .any(|line| line.contains("configuration reload failed")
                && line.contains("not a valid policies file")),
        "{logs:?}"
    );
    // A group whose expression names no member: refused, with the place.
    replace(
        &file,
        &format!(
            "{}g:\n  expression: \"a() && b()\"\n  message: m\n  policies:\n    a: {{ module: {} }}\n",
            version(2),
            components_dir().join("pod_privileged.wasm").display()
        ),
    );
    hangup();
    wait_for_reloads(&served, "error", 2);
    std::thread::sleep(Duration::from_millis(200));
    let logs: Vec<String> = served.logs.try_iter().collect();
    assert!(
        logs.iter()
            .any(|line| line.contains("policy `g`: key `expression`")
                && line.contains("column 8")
                && line.contains("`b` is not a member")),
        "{logs:?}"
    );
}
