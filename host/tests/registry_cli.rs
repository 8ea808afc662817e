//! `portcullis push`, `digest`, `pull`, and URIs in `inspect`, `run`,
//! `compile` and `serve`, driven as a user drives them, against a real
//! registry (Debian's `docker-registry` on 127.0.0.1); what `push` wrote is
//! read back by a tool we did not write (`skopeo`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
#[path = "../../tests/src/registry.rs"]
#[allow(dead_code)] // not every helper is used here
mod registry;

use common::{component, repo};
use registry::Registry;

/// A registry, and a sources.yml that lists it as an insecure (plain-HTTP) source.
struct Setup {
    dir: tempfile::TempDir,
    registry: Registry,
    sources: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::start(&dir.path().join("registry"));
        let sources = dir.path().join("sources.yml");
        std::fs::write(
            &sources,
            format!("insecure_sources: [\"{}\"]\n", registry.host()),
        )
        .unwrap();
        Self {
            dir,
            registry,
            sources,
        }
    }

    fn uri(&self, rest: &str) -> String {
        format!("registry://{}/{rest}", self.registry.host())
    }

    /// `portcullis ARGS --sources-path … [--policies-download-dir …]`.
    fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command.args(args).arg("--sources-path").arg(&self.sources);
        if !matches!(args[0], "push" | "digest" | "compile") {
            command
                .arg("--policies-download-dir")
                .arg(self.dir.path().join("downloads"));
        }
        command
            .env("DOCKER_CONFIG", self.dir.path().join("no-docker"))
            .output()
            .expect("running portcullis")
    }
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn sha256_of(path: &Path) -> String {
    portcullis::digest::Digest::of(&std::fs::read(path).unwrap()).to_string()
}

/// `skopeo ARGS`, which must succeed; its stdout.
fn skopeo(args: &[&str]) -> Vec<u8> {
    let output = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is not installed: `scripts/test` installs it (apt-get install skopeo)");
    assert!(
        output.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The manifest of `reference` as skopeo reads it: its exact bytes.
fn skopeo_raw(reference: &str) -> Vec<u8> {
    skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{reference}"),
    ])
}

#[test]
fn push_digest_pull_inspect_and_run_a_registry_policy() {
    let setup = Setup::new();
    let module = component("pod_privileged");
    let host = setup.registry.host();

    let pushed = stdout(&setup.run(&[
        "push",
        module.to_str().unwrap(),
        &setup.uri("policies/pod-privileged:v1"),
    ]));
    let pinned = pushed.trim_end();
    let prefix = format!("registry://{host}/policies/pod-privileged@sha256:");
    assert!(
        pinned.starts_with(&prefix) && pinned.len() == prefix.len() + 64,
        "{pushed}"
    );
    assert_eq!(pushed.lines().count(), 1, "{pushed}");

    let resolved = stdout(&setup.run(&["digest", &setup.uri("policies/pod-privileged:v1")]));
    assert_eq!(resolved.trim_end(), pinned);

    // Read back by skopeo: the CNCF Wasm OCI artifact, layer = the module,
    // and the manifest's bytes hash to the digest `push` printed.
    let raw = skopeo_raw(&format!("{host}/policies/pod-privileged:v1"));
    assert!(
        pinned.ends_with(&portcullis::digest::Digest::of(&raw).hex()),
        "{pinned}"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(manifest["layers"][0]["digest"], sha256_of(&module));
    // Copied by skopeo into an OCI layout, the layer is the module, byte for byte.
    let layout = setup.dir.path().join("oci-layout");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{host}/policies/pod-privileged:v1"),
        &format!("oci:{}:copy", layout.display()),
    ]);
    let copied = layout
        .join("blobs/sha256")
        .join(sha256_of(&module).trim_start_matches("sha256:"));
    assert_eq!(
        std::fs::read(copied).unwrap(),
        std::fs::read(&module).unwrap()
    );

    // Kubewarden's layout on request.
    stdout(&setup.run(&[
        "push",
        "--format",
        "kubewarden",
        module.to_str().unwrap(),
        &setup.uri("policies/pod-privileged:kw"),
    ]));
    let manifest: serde_json::Value =
        serde_json::from_slice(&skopeo_raw(&format!("{host}/policies/pod-privileged:kw"))).unwrap();
    assert_eq!(manifest.get("mediaType"), None);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v1+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.wasm.content.layer.v1+wasm"
    );

    // pull: the local file and its digest.
    let pulled: serde_json::Value = serde_json::from_str(&stdout(&setup.run(&[
        "pull",
        "-o",
        "json",
        &setup.uri("policies/pod-privileged:v1"),
    ])))
    .unwrap();
    assert_eq!(pulled["origin"], "pulled");
    assert_eq!(pulled["reference"], pinned);
    let path = PathBuf::from(pulled["path"].as_str().unwrap());
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&module).unwrap()
    );
    assert_eq!(pulled["digest"], sha256_of(&module));
    let text = stdout(&setup.run(&["pull", pinned]));
    assert!(
        text.contains(&format!("path       {}", path.display())),
        "{text}"
    );
    assert!(text.contains("origin     store"), "{text}");

    // inspect and run take the URI where they take a file.
    let inspected = stdout(&setup.run(&["inspect", "--no-cache", pinned]));
    assert!(
        inspected.contains(&format!("source     {pinned}")),
        "{inspected}"
    );
    assert!(inspected.contains("runnable   yes"), "{inspected}");
    let review = repo().join("examples/pod-privileged/test_data/privileged_pod_review.json");
    let response: serde_json::Value = serde_json::from_str(&stdout(&setup.run(&[
        "run",
        "--no-cache",
        "--policy",
        pinned,
        "--request",
        review.to_str().unwrap(),
    ])))
    .unwrap();
    assert_eq!(response["allowed"], false, "{response}");
}

#[test]
fn push_and_digest_errors_name_the_problem() {
    let setup = Setup::new();
    let output = setup.run(&["digest", &setup.uri("nothing:v1")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("404 Not Found"), "{stderr}");
    let readme = repo().join("README.md");
    let output = setup.run(&["push", readme.to_str().unwrap(), &setup.uri("x:v1")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("not a WebAssembly file"), "{stderr}");
    let output = setup.run(&[
        "push",
        readme.to_str().unwrap(),
        "https://example.invalid/x",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not a registry reference"), "{stderr}");
}

/// Runs `serve` on ephemeral ports until "serving" (Ok: the log so far) or
/// exit (Err: stderr).
fn serve(setup: &Setup, policies: &Path, cache: &Path) -> Result<String, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--addr", "127.0.0.1", "--port", "0"])
        .args(["--readiness-probe-port", "0", "--log-fmt", "json"])
        .arg("--policies")
        .arg(policies)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--sources-path")
        .arg(&setup.sources)
        .env("DOCKER_CONFIG", setup.dir.path().join("no-docker"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        log += &line;
        log.push('\n');
        if line.contains("\"serving\"") || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(log);
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success());
    Err(log)
}

#[test]
fn compile_fills_the_cache_so_serve_starts_without_the_registry() {
    let mut setup = Setup::new();
    let module = component("pod_privileged");
    let tagged = setup.uri("policies/pod-privileged:v1");
    let pinned = stdout(&setup.run(&["push", module.to_str().unwrap(), &tagged]));
    let pinned = pinned.trim_end();
    let cache = setup.dir.path().join("image-cache");
    let compiled = stdout(&setup.run(&[
        "compile",
        "--cache-dir",
        cache.to_str().unwrap(),
        &tagged,
        pinned,
    ]));
    assert!(compiled.starts_with(&sha256_of(&module)), "{compiled}");

    // The image is built; the registry is gone.
    setup.registry.stop();
    let policies = setup.dir.path().join("policies.yml");
    std::fs::write(
        &policies,
        format!("by-tag:\n  module: {tagged}\nby-digest:\n  module: {pinned}\n"),
    )
    .unwrap();
    let log = serve(&setup, &policies, &cache).expect("serve starts from the store");
    assert!(log.contains("\"origin\":\"Store\""), "{log}");
    assert!(log.contains("\"origin\":\"Cache\""), "{log}");
    assert!(!log.contains("\"origin\":\"Pulled\""), "{log}");
}

#[test]
fn serve_fails_listing_every_policy_it_cannot_obtain() {
    let setup = Setup::new();
    let policies = setup.dir.path().join("policies.yml");
    std::fs::write(
        &policies,
        format!(
            "first:\n  module: {}\nsecond:\n  module: {}\n",
            setup.uri("missing:v1"),
            setup.uri("also-missing:v2")
        ),
    )
    .unwrap();
    let stderr = serve(&setup, &policies, &setup.dir.path().join("cache"))
        .expect_err("serve must not start");
    assert!(
        stderr.contains("error: cannot obtain the modules of 2 policies:"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("policy `first` ({})", setup.uri("missing:v1"))),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "policy `second` ({})",
            setup.uri("also-missing:v2")
        )),
        "{stderr}"
    );
}
