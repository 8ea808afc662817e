//! Policies from a real OCI registry (Debian's `docker-registry`, CNCF
//! distribution 2.8, on 127.0.0.1): pushed in both artifact formats, pulled
//! by tag and by digest into the download store, served with the same
//! verdicts as the same files; TLS with a CA only in sources.yml, basic auth
//! through a Docker config.json, and every failure a user meets, each with
//! the message they need.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use portcullis::source::{
    Credentials, DownloadStore, FetchError, FetchOrigin, Fetcher, Format, Source, Sources,
};
use portcullis::{Limits, PolicySpec, config};
use portcullis_tests::pki::Ca;
use portcullis_tests::registry::{Registry, RegistryOptions};
use portcullis_tests::server::{TestServer, test_config};
use portcullis_tests::{component, http_client, json_file, repo_file};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A registry and a download store, in one temporary directory.
struct Setup {
    dir: tempfile::TempDir,
    registry: Registry,
}

impl Setup {
    fn new() -> Self {
        Self::with(RegistryOptions::default())
    }

    fn with(options: RegistryOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::start_with(&dir.path().join("registry"), options);
        Self { dir, registry }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// sources.yml for a plain-HTTP registry: it is an insecure source.
    fn insecure_sources(&self) -> Sources {
        let text = format!("insecure_sources: [\"{}\"]\n", self.registry.host());
        Sources::parse(&text, self.dir.path()).unwrap()
    }

    /// A fetcher with its own store `name`, for the plain-HTTP registry.
    fn fetcher(&self, store: &str) -> Fetcher {
        self.fetcher_with(store, self.insecure_sources(), None)
    }

    fn fetcher_with(&self, store: &str, sources: Sources, config_json: Option<PathBuf>) -> Fetcher {
        // A path that does not exist: no credentials unless given.
        let config_json = config_json.unwrap_or_else(|| self.path("no-docker-config.json"));
        Fetcher::new(
            DownloadStore::new(self.path(store)),
            sources,
            Credentials::new(Some(config_json)),
        )
    }

    fn uri(&self, rest: &str) -> String {
        format!("registry://{}/{rest}", self.registry.host())
    }
}

fn source(uri: &str) -> Source {
    Source::parse(uri, Path::new("/")).unwrap()
}

/// Pushes the built component `crate_name` to `uri`; returns the manifest digest.
async fn push(fetcher: &Fetcher, crate_name: &str, uri: &str, format: Format) -> String {
    let bytes = std::fs::read(component(crate_name)).unwrap();
    push_bytes(fetcher, &bytes, uri, format).await
}

async fn push_bytes(fetcher: &Fetcher, bytes: &[u8], uri: &str, format: Format) -> String {
    let portcullis::source::Location::Registry(reference) = source(uri).location().clone() else {
        panic!("{uri} is not a registry reference");
    };
    fetcher.push(bytes, &reference, format).await.unwrap()
}

fn file_digest(path: &Path) -> String {
    portcullis::digest::Digest::of(&std::fs::read(path).unwrap()).to_string()
}

async fn fetch_error(fetcher: &Fetcher, uri: &str) -> FetchError {
    match fetcher.fetch(&source(uri)).await {
        Ok(fetch) => panic!("{uri} was fetched: {fetch:?}"),
        Err(error) => error,
    }
}

/// The error start-up reports for a configuration of one policy `id` whose
/// module is `uri`: checks that it names the policy and the URI as written,
/// and returns what follows them (the [`FetchError`]'s message).
async fn policy_error(fetcher: &Fetcher, id: &str, uri: &str) -> String {
    let yml = format!("{id}:\n  module: {uri}\n");
    let specs = config::parse(&yml, Path::new("/"), "policies.yml")
        .unwrap()
        .policies;
    let errors = match fetcher.fetch_policies(specs).await {
        Ok(specs) => panic!("{uri} was fetched: {:?}", specs[0].fetch),
        Err(errors) => errors,
    };
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].policy, id);
    assert_eq!(errors.0[0].source.written(), uri);
    let text = errors.to_string();
    let prefix = format!("cannot obtain a policy's module: policy `{id}` ({uri}): ");
    let Some(rest) = text.strip_prefix(&prefix) else {
        panic!("{text:?} does not start with {prefix:?}");
    };
    assert_eq!(rest, errors.0[0].error.to_string());
    rest.to_owned()
}

/// The value of the sample `name` (with its labels, as exported) in the
/// Prometheus text `metrics`.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// The registry's log once it has a line containing `needle` (the access
/// log line of a request is written as the answer completes): 10 s at most.
async fn logged(registry: &Registry, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = registry.log();
        if log.contains(needle) {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in the registry's log:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// The verdicts `server` gives for policy `policy` on each fixture.
/// The OCI manifest `reference` (a tag or a digest) of `repository`, read
/// over the registry's own API rather than through our client.
async fn manifest(host: &str, repository: &str, reference: &str) -> serde_json::Value {
    http_client()
        .get(format!(
            "http://{host}/v2/{repository}/manifests/{reference}"
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn verdicts_of(
    server: &TestServer,
    policy: &str,
    fixtures: &[&str],
) -> Vec<serde_json::Value> {
    let client = http_client();
    let mut verdicts = Vec::new();
    for fixture in fixtures {
        let mut review = json_file(fixture);
        if review.get("request").is_none() {
            review = portcullis_tests::review(review);
        }
        let response = client
            .post(server.url(&format!("/validate/{policy}")))
            .json(&review)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{policy} {fixture}");
        verdicts.push(response.json().await.unwrap());
    }
    verdicts
}

/// Serves each path in `files` with its bytes over plain HTTP on 127.0.0.1
/// (anything else is a 404); returns `host:port` and how many GETs the
/// files answered.
async fn serve_http(files: Vec<(&'static str, Vec<u8>)>) -> (String, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let mut app = axum::Router::new();
    for (path, bytes) in files {
        let (served, bytes) = (served.clone(), Arc::new(bytes));
        app = app.route(
            path,
            axum::routing::get(move || {
                served.fetch_add(1, Ordering::SeqCst);
                let bytes = bytes.clone();
                async move { (*bytes).clone() }
            }),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (host, served)
}

// --- pulling and serving ------------------------------------------------------

/// The requests both servers get, by policy id, from the examples' fixtures.
const CASES: &[(&str, &str)] = &[
    (
        "privileged",
        "examples/pod-privileged/test_data/privileged_pod_review.json",
    ),
    (
        "privileged",
        "examples/pod-privileged/test_data/no_privileged_containers.json",
    ),
    (
        "privileged",
        "examples/pod-privileged/test_data/privileged_init_container.json",
    ),
    (
        "privileged-by-digest",
        "examples/pod-privileged/test_data/privileged_container.json",
    ),
    (
        "loadbalancer",
        "examples/disallow-service-loadbalancer/test_data/service_loadbalancer.json",
    ),
    (
        "loadbalancer",
        "examples/disallow-service-loadbalancer/test_data/service-clusterip.json",
    ),
    (
        "annotations",
        "examples/required-annotations/test_data/pod_without_annotations.json",
    ),
    (
        "annotations",
        "examples/required-annotations/test_data/pod_with_wrong_annotation.json",
    ),
];

fn policies_yml(
    privileged: &str,
    by_digest: &str,
    loadbalancer: &str,
    annotations: &str,
) -> String {
    let settings = std::fs::read_to_string(repo_file(
        "examples/required-annotations/test_data/settings.json",
    ))
    .unwrap();
    format!(
        "privileged:\n  module: {privileged}\n\
         privileged-by-digest:\n  url: {by_digest}\n  settings: {{skip_init_containers: true}}\n\
         loadbalancer:\n  module: {loadbalancer}\n\
         annotations:\n  module: {annotations}\n  allowedToMutate: true\n  settings: {settings}\n"
    )
}

async fn verdicts(server: &TestServer) -> Vec<serde_json::Value> {
    let mut verdicts = Vec::new();
    for (policy, fixture) in CASES {
        verdicts.extend(verdicts_of(server, policy, &[fixture]).await);
    }
    verdicts
}

#[tokio::test]
async fn registry_modules_serve_the_same_verdicts_as_the_same_files() {
    let setup = Setup::new();
    let fetcher = setup.fetcher("store");
    // Both formats: CNCF (what `push` writes for a component) and Kubewarden's.
    let privileged = push(
        &fetcher,
        "pod_privileged",
        &setup.uri("pod-privileged:v1"),
        Format::Cncf,
    )
    .await;
    push(
        &fetcher,
        "disallow_service_loadbalancer",
        &setup.uri("lb:v1"),
        Format::Kubewarden,
    )
    .await;
    push(
        &fetcher,
        "required_annotations",
        &setup.uri("annotations:v1"),
        Format::Cncf,
    )
    .await;

    // By tag, by digest, bare (as Kubewarden writes it) and with a scheme.
    let host = setup.registry.host();
    let remote = policies_yml(
        &setup.uri("pod-privileged:v1"),
        &setup.uri(&format!("pod-privileged@{privileged}")),
        &format!("{host}/lb:v1"),
        &setup.uri("annotations:v1"),
    );
    let specs = config::parse(&remote, Path::new("/"), "policies.yml")
        .unwrap()
        .policies;
    let specs = fetcher.fetch_policies(specs).await.unwrap();
    for spec in &specs {
        let fetch = spec.fetch.as_ref().expect("fetched");
        assert_eq!(spec.module, fetch.path);
        assert!(
            spec.module.starts_with(setup.path("store")),
            "{}",
            spec.module.display()
        );
    }
    // The module's digest is the wasm's sha256: the compiled cache's key.
    assert_eq!(
        specs[0].fetch.as_ref().unwrap().digest.to_string(),
        file_digest(&component("pod_privileged"))
    );
    assert_eq!(
        specs[1].fetch.as_ref().unwrap().manifest.as_deref(),
        Some(privileged.as_str())
    );

    let components = portcullis_tests::target_dir().join("wasm32-wasip2/policy");
    let local = policies_yml(
        "pod_privileged.wasm",
        "pod_privileged.wasm",
        "disallow_service_loadbalancer.wasm",
        "required_annotations.wasm",
    );
    let local = config::parse(&local, &components, "policies.yml").unwrap();

    let from_registry = TestServer::start_specs(specs, test_config(), Limits::default()).await;
    let from_files = TestServer::start_specs(local, test_config(), Limits::default()).await;
    let (remote, local) = (verdicts(&from_registry).await, verdicts(&from_files).await);
    assert_eq!(remote, local);
    // Not vacuous: both rejections and a mutation are among them.
    let text = serde_json::to_string(&remote).unwrap();
    assert!(
        text.contains("Privileged container is not allowed"),
        "{text}"
    );
    assert!(text.contains("\"patchType\":\"JSONPatch\""), "{text}");

    // The start-up pulls are in the metrics.
    let metrics = portcullis_tests::get_text(&format!("{}/metrics", from_registry.probes)).await;
    assert!(
        metrics
            .contains("portcullis_policy_fetches_total{origin=\"pulled\",scheme=\"registry\"} 3"),
        "{metrics}"
    );
    from_registry.server.shutdown().await.unwrap();
    from_files.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_pushed_artifacts_have_the_documented_media_types() {
    let setup = Setup::new();
    let fetcher = setup.fetcher("store");
    for (format, manifest_type, config_type, layer_type) in [
        (
            Format::Cncf,
            Some("application/vnd.oci.image.manifest.v1+json"),
            "application/vnd.wasm.config.v0+json",
            "application/wasm",
        ),
        (
            Format::Kubewarden,
            None,
            "application/vnd.wasm.config.v1+json",
            "application/vnd.wasm.content.layer.v1+wasm",
        ),
    ] {
        let tag = format!("{format:?}").to_lowercase();
        let digest = push(
            &fetcher,
            "pod_privileged",
            &setup.uri(&format!("p:{tag}")),
            format,
        )
        .await;
        // Read back over the registry API, not through our client.
        let manifest = manifest(&setup.registry.host(), "p", &digest).await;
        assert_eq!(manifest["mediaType"].as_str(), manifest_type, "{manifest}");
        assert_eq!(manifest["config"]["mediaType"], config_type);
        assert_eq!(manifest["layers"][0]["mediaType"], layer_type);
        assert_eq!(
            manifest["layers"][0]["digest"],
            file_digest(&component("pod_privileged"))
        );
        // And each format pulls.
        let fetch = setup
            .fetcher(&format!("store-{tag}"))
            .fetch(&source(&setup.uri(&format!("p:{tag}"))))
            .await
            .unwrap();
        assert_eq!(fetch.origin, FetchOrigin::Pulled);
        assert_eq!(fetch.manifest.as_deref(), Some(digest.as_str()));
    }
}

/// The pod-privileged example's requests: a privileged pod, an acceptable
/// one, then a privileged init container, ephemeral container and workload.
const PRIVILEGED_FIXTURES: &[&str] = &[
    "examples/pod-privileged/test_data/privileged_pod_review.json",
    "examples/pod-privileged/test_data/no_privileged_containers.json",
    "examples/pod-privileged/test_data/privileged_init_container.json",
    "examples/pod-privileged/test_data/privileged_ephemeral_container.json",
    "examples/pod-privileged/test_data/deployment_with_privileged_containers.json",
];

#[tokio::test]
async fn a_kubewarden_artifact_pushed_by_another_client_serves_the_same_verdicts_as_the_file() {
    let setup = Setup::new();
    let host = setup.registry.host();
    // A Kubewarden-protocol (waPC) module, packaged in Kubewarden's layout
    // by oci-client itself: not by our `push`.
    let module = component("kw_pod_privileged");
    let bytes = std::fs::read(&module).unwrap();
    push_raw(
        &host,
        "kw-privileged:v1",
        &bytes,
        "application/vnd.wasm.content.layer.v1+wasm",
        "application/vnd.wasm.config.v1+json",
    )
    .await;
    let manifest = manifest(&host, "kw-privileged", "v1").await;
    assert_eq!(
        manifest["config"]["mediaType"], "application/vnd.wasm.config.v1+json",
        "{manifest}"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.wasm.content.layer.v1+wasm"
    );

    let policies = |by_tag: &str, bare: &str| {
        format!(
            "privileged:\n  module: {by_tag}\n\
             skip-init:\n  module: {bare}\n  settings: {{skip_init_containers: true}}\n"
        )
    };
    let remote = policies(
        &setup.uri("kw-privileged:v1"),
        &format!("{host}/kw-privileged:v1"),
    );
    let specs = config::parse(&remote, Path::new("/"), "policies.yml")
        .unwrap()
        .policies;
    let specs = setup.fetcher("store").fetch_policies(specs).await.unwrap();
    let fetch = specs[0].fetch.clone().unwrap();
    assert_eq!(fetch.origin, FetchOrigin::Pulled);
    assert_eq!(fetch.digest.to_string(), file_digest(&module));
    assert_eq!(fetch.downloaded, file_size(&module));
    assert_eq!(std::fs::read(&specs[0].module).unwrap(), bytes);
    // Both spellings name one artifact: one module, one pull.
    assert!(Arc::ptr_eq(&fetch, specs[1].fetch.as_ref().unwrap()));
    assert_eq!(
        setup.registry.blob_downloads(&file_digest(&module)),
        1,
        "{}",
        setup.registry.log()
    );

    let components = portcullis_tests::target_dir().join("wasm32-wasip2/policy");
    let local = policies("kw_pod_privileged.wasm", "kw_pod_privileged.wasm");
    let local = config::parse(&local, &components, "policies.yml").unwrap();
    let from_registry = TestServer::start_specs(specs, test_config(), Limits::default()).await;
    let from_file = TestServer::start_specs(local, test_config(), Limits::default()).await;
    for policy in ["privileged", "skip-init"] {
        let remote = verdicts_of(&from_registry, policy, PRIVILEGED_FIXTURES).await;
        let local = verdicts_of(&from_file, policy, PRIVILEGED_FIXTURES).await;
        assert_eq!(remote, local, "{policy}");
        // Not vacuous: the waPC module ran, with its settings.
        let allowed: Vec<bool> = remote
            .iter()
            .map(|v| v["response"]["allowed"].as_bool().unwrap())
            .collect();
        let expected = match policy {
            "privileged" => [false, true, false, false, false],
            _ => [false, true, true, false, false],
        };
        assert_eq!(allowed, expected, "{policy}: {remote:?}");
        if policy == "privileged" {
            assert_eq!(
                remote[2]["response"]["status"]["message"],
                "Privileged init container is not allowed"
            );
        }
    }
    from_registry.server.shutdown().await.unwrap();
    from_file.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_tag_and_digest_reference_pulls_the_digest_not_the_tag() {
    let setup = Setup::new();
    let fetcher = setup.fetcher("pusher");
    let pinned = push(&fetcher, "pod_privileged", &setup.uri("p:v1"), Format::Cncf).await;
    // The tag moves on to another module.
    let moved = push(&fetcher, "trusted_images", &setup.uri("p:v1"), Format::Cncf).await;
    assert_ne!(pinned, moved);

    let uri = setup.uri(&format!("p:v1@{pinned}"));
    let pulling = setup.fetcher("store");
    let fetch = pulling.fetch(&source(&uri)).await.unwrap();
    assert_eq!(fetch.origin, FetchOrigin::Pulled);
    assert_eq!(fetch.manifest.as_deref(), Some(pinned.as_str()));
    assert_eq!(
        fetch.digest.to_string(),
        file_digest(&component("pod_privileged"))
    );
    assert_eq!(
        std::fs::read(&fetch.path).unwrap(),
        std::fs::read(component("pod_privileged")).unwrap()
    );
    // The registry was asked for the digest; the tag was never looked up.
    let by_digest = format!("\"GET /v2/p/manifests/{pinned} HTTP/1.1\" 200");
    let log = logged(&setup.registry, &by_digest).await;
    assert!(!log.contains("GET /v2/p/manifests/v1 "), "{log}");
    // The tag alone now names the other module.
    let by_tag = pulling.fetch(&source(&setup.uri("p:v1"))).await.unwrap();
    assert_eq!(
        by_tag.digest.to_string(),
        file_digest(&component("trusted_images"))
    );

    // A pin the registry does not have is a 404, even though the tag exists:
    // never a fallback to whatever the tag names now.
    let missing = format!("sha256:{}", "0".repeat(64));
    let uri = setup.uri(&format!("p:v1@{missing}"));
    let error = policy_error(&pulling, "pinned", &uri).await;
    assert_eq!(
        error,
        format!(
            "404 Not Found: `{}/p` has no manifest {missing} (a pinned digest is never \
             replaced by another: push it again or change the pin)",
            setup.registry.host()
        )
    );
}

#[tokio::test]
async fn a_plain_http_url_is_pulled_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let module = component("pod_privileged");
    let (host, served) =
        serve_http(vec![("/policies/p.wasm", std::fs::read(&module).unwrap())]).await;
    let uri = format!("http://{host}/policies/p.wasm");
    let fetcher = Fetcher::new(
        DownloadStore::new(dir.path().join("store")),
        Sources::default(),
        Credentials::new(Some(dir.path().join("none.json"))),
    );
    let specs = config::parse(
        &format!("privileged:\n  url: {uri}\n"),
        Path::new("/"),
        "policies.yml",
    )
    .unwrap()
    .policies;
    let specs = fetcher.fetch_policies(specs).await.unwrap();
    let fetch = specs[0].fetch.clone().unwrap();
    assert_eq!(fetch.origin, FetchOrigin::Pulled);
    assert_eq!(fetch.digest.to_string(), file_digest(&module));
    assert_eq!(fetch.downloaded, file_size(&module));
    assert!(specs[0].module.starts_with(dir.path().join("store")));
    assert_eq!(
        std::fs::read(&specs[0].module).unwrap(),
        std::fs::read(&module).unwrap()
    );
    assert_eq!(served.load(Ordering::SeqCst), 1);

    let server = TestServer::start_specs(specs, test_config(), Limits::default()).await;
    let verdicts = verdicts_of(&server, "privileged", PRIVILEGED_FIXTURES).await;
    let allowed: Vec<bool> = verdicts
        .iter()
        .map(|v| v["response"]["allowed"].as_bool().unwrap())
        .collect();
    assert_eq!(allowed, [false, true, false, false, false], "{verdicts:?}");
    let metrics = portcullis_tests::get_text(&format!("{}/metrics", server.probes)).await;
    assert_eq!(
        sample(
            &metrics,
            "portcullis_policy_fetches_total{origin=\"pulled\",scheme=\"http\"}"
        ),
        1.0
    );
    server.server.shutdown().await.unwrap();

    // A missing file is a 404 naming the URL, under the policy's name.
    let missing = format!("http://{host}/policies/missing.wasm");
    let error = policy_error(&fetcher, "gone", &missing).await;
    assert_eq!(error, format!("404 Not Found: {missing} does not exist"));
}

#[tokio::test]
async fn pulls_are_counted_in_bytes_and_seconds() {
    let setup = Setup::new();
    let fetcher = setup.fetcher("store");
    push(&fetcher, "pod_privileged", &setup.uri("a:v1"), Format::Cncf).await;
    push(
        &fetcher,
        "disallow_service_loadbalancer",
        &setup.uri("b:v1"),
        Format::Kubewarden,
    )
    .await;
    let (a, b) = (
        file_size(&component("pod_privileged")),
        file_size(&component("disallow_service_loadbalancer")),
    );
    let parse = |yml: &str| {
        config::parse(yml, Path::new("/"), "policies.yml")
            .unwrap()
            .policies
    };
    let first = format!("a:\n  module: {}\n", setup.uri("a:v1"));
    let specs = fetcher.fetch_policies(parse(&first)).await.unwrap();
    let server = TestServer::start_specs(specs, test_config(), Limits::default()).await;
    let metrics_url = format!("{}/metrics", server.probes);
    let pulled = "{origin=\"pulled\",scheme=\"registry\"}";
    let stored = "{origin=\"store\",scheme=\"registry\"}";
    let metrics = portcullis_tests::get_text(&metrics_url).await;
    assert_eq!(
        sample(&metrics, "portcullis_policy_fetch_bytes_total"),
        a as f64
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("portcullis_policy_fetch_seconds_count{pulled}")
        ),
        1.0
    );
    assert!(
        sample(
            &metrics,
            &format!("portcullis_policy_fetch_seconds_sum{pulled}")
        ) > 0.0
    );

    // A reload (as `serve` does it: the configuration fetched again) that
    // keeps `a`, found in the store, and adds `b`, pulled now.
    let second = format!("{first}b:\n  module: {}\n", setup.uri("b:v1"));
    let specs = fetcher.fetch_policies(parse(&second)).await.unwrap();
    let origins: Vec<FetchOrigin> = specs
        .iter()
        .map(|s| s.fetch.as_ref().unwrap().origin)
        .collect();
    assert_eq!(origins, [FetchOrigin::Store, FetchOrigin::Pulled]);
    server.server.reloader().reload(specs.into()).await.unwrap();
    let metrics = portcullis_tests::get_text(&metrics_url).await;
    assert_eq!(
        sample(&metrics, "portcullis_policy_fetch_bytes_total"),
        (a + b) as f64,
        "grows by the pulled artifact's size, not by the stored one's"
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("portcullis_policy_fetch_seconds_count{pulled}")
        ),
        2.0
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("portcullis_policy_fetch_seconds_count{stored}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("portcullis_policy_fetches_total{pulled}")
        ),
        2.0
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("portcullis_policy_fetches_total{stored}")
        ),
        1.0
    );
    server.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_same_digest_named_by_five_policies_is_pulled_once() {
    let setup = Setup::new();
    let fetcher = setup.fetcher("store");
    let manifest = push(&fetcher, "pod_privileged", &setup.uri("p:v1"), Format::Cncf).await;
    let layer = file_digest(&component("pod_privileged"));
    let host = setup.registry.host();
    let names = [
        setup.uri("p:v1"),
        setup.uri("p:v1"),
        format!("{host}/p:v1"),
        setup.uri(&format!("p@{manifest}")),
        format!("{host}/p@{manifest}"),
    ];
    let yml: String = names
        .iter()
        .enumerate()
        .map(|(i, name)| format!("policy-{i}:\n  module: {name}\n"))
        .collect();
    let specs = config::parse(&yml, Path::new("/"), "policies.yml")
        .unwrap()
        .policies;
    let specs = fetcher.fetch_policies(specs).await.unwrap();
    assert_eq!(
        setup.registry.blob_downloads(&layer),
        1,
        "{}",
        setup.registry.log()
    );
    let paths: Vec<&PathBuf> = specs.iter().map(|s| &s.module).collect();
    assert!(paths.iter().all(|p| *p == paths[0]), "{paths:?}");
    let fetches = portcullis::source::distinct_fetches(&specs);
    // Two spellings (a tag and a digest) resolve separately; the module is
    // downloaded by one and found in the store by the other.
    let mut origins: Vec<FetchOrigin> = fetches.iter().map(|(f, _)| f.origin).collect();
    origins.sort_by_key(|o| o.as_str());
    assert_eq!(origins, [FetchOrigin::Pulled, FetchOrigin::Store]);
    let downloaded: u64 = fetches.iter().map(|(f, _)| f.downloaded).sum();
    assert_eq!(
        downloaded,
        std::fs::metadata(component("pod_privileged"))
            .unwrap()
            .len()
    );
}

#[tokio::test]
async fn a_tag_in_the_store_is_reused_and_latest_is_resolved_again() {
    let mut setup = Setup::new();
    let fetcher = setup.fetcher("store");
    push(&fetcher, "pod_privileged", &setup.uri("p:v1"), Format::Cncf).await;
    push(
        &fetcher,
        "pod_privileged",
        &setup.uri("p:latest"),
        Format::Cncf,
    )
    .await;
    let first = fetcher.fetch(&source(&setup.uri("p:v1"))).await.unwrap();
    assert_eq!(first.origin, FetchOrigin::Pulled);
    fetcher.fetch(&source(&setup.uri("p"))).await.unwrap();

    // Both tags now name another module.
    push(&fetcher, "trusted_images", &setup.uri("p:v1"), Format::Cncf).await;
    let pinned = push(
        &fetcher,
        "trusted_images",
        &setup.uri("p:latest"),
        Format::Cncf,
    )
    .await;
    let again = fetcher.fetch(&source(&setup.uri("p:v1"))).await.unwrap();
    assert_eq!(again.origin, FetchOrigin::Store);
    assert_eq!(
        again.digest, first.digest,
        "a tag other than latest is not looked up again"
    );
    let latest = fetcher
        .fetch(&source(&setup.uri("p:latest")))
        .await
        .unwrap();
    assert_eq!(latest.origin, FetchOrigin::Pulled);
    assert_eq!(
        latest.digest.to_string(),
        file_digest(&component("trusted_images"))
    );

    // Without the registry (an air-gapped restart): tags other than latest
    // and digests come from the store; latest cannot be resolved.
    setup.registry.stop();
    let offline = setup.fetcher("store");
    assert_eq!(
        offline
            .fetch(&source(&setup.uri("p:v1")))
            .await
            .unwrap()
            .origin,
        FetchOrigin::Store
    );
    let by_digest = offline
        .fetch(&source(&setup.uri(&format!("p@{pinned}"))))
        .await
        .unwrap();
    assert_eq!(by_digest.digest, latest.digest);
    let error = fetch_error(&offline, &setup.uri("p:latest")).await;
    assert!(matches!(error, FetchError::Unreachable { .. }), "{error}");
    assert!(
        error.to_string().contains(&setup.registry.host()),
        "{error}"
    );
}

// --- failures -----------------------------------------------------------------

#[tokio::test]
async fn an_unknown_tag_or_repository_is_a_404_naming_it() {
    let setup = Setup::new();
    let fetcher = setup.fetcher("store");
    push(&fetcher, "pod_privileged", &setup.uri("p:v1"), Format::Cncf).await;
    let error = fetch_error(&fetcher, &setup.uri("p:v9")).await.to_string();
    assert_eq!(
        error,
        format!(
            "404 Not Found: `{}/p` has no tag `v9` (or the repository does not exist)",
            setup.registry.host()
        )
    );
    let missing = format!("sha256:{}", "0".repeat(64));
    let error = fetch_error(&fetcher, &setup.uri(&format!("p@{missing}")))
        .await
        .to_string();
    assert!(error.starts_with("404 Not Found: "), "{error}");
    assert!(error.contains(&missing), "{error}");
    assert!(
        error.contains("a pinned digest is never replaced"),
        "{error}"
    );

    // A repository that does not exist. docker-registry 2.8 answers a
    // manifest GET there as for an unknown tag (MANIFEST_UNKNOWN; it says
    // NAME_UNKNOWN only to a tag listing), so the message names the
    // repository and says both readings.
    let host = setup.registry.host();
    let uri = setup.uri("no/such/repo:v1");
    assert_eq!(
        policy_error(&fetcher, "unknown-repo", &uri).await,
        format!(
            "404 Not Found: `{host}/no/such/repo` has no tag `v1` (or the repository does not exist)"
        )
    );
    let uri = setup.uri(&format!("no/such/repo@{missing}"));
    let error = policy_error(&fetcher, "unknown-repo", &uri).await;
    assert!(
        error.starts_with(&format!(
            "404 Not Found: `{host}/no/such/repo` has no manifest {missing}"
        )),
        "{error}"
    );
    assert!(fetcher.store().resolved(&uri).is_none());
}

/// A stand-in for the answers other registries give and docker-registry 2.8
/// never does (on a pull it says neither NAME_UNKNOWN nor 403): the
/// distribution spec's NAME_UNKNOWN for a manifest in an unknown repository
/// (`gone`), 403 with a DENIED envelope (`denied`) and a bare 403
/// (`forbidden`). Returns `host:port`.
async fn answering_registry() -> String {
    use axum::http::{StatusCode, Uri, header};
    let app = axum::Router::new().fallback(|uri: Uri| async move {
        let envelope = |code: &str, message: &str| {
            serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string()
        };
        let json = [(header::CONTENT_TYPE, "application/json")];
        match uri.path() {
            "/v2/" => (StatusCode::OK, json, "{}".to_owned()),
            path if path.starts_with("/v2/gone/") => (
                StatusCode::NOT_FOUND,
                json,
                envelope("NAME_UNKNOWN", "repository name not known to registry"),
            ),
            path if path.starts_with("/v2/denied/") => (
                StatusCode::FORBIDDEN,
                json,
                envelope("DENIED", "requested access to the resource is denied"),
            ),
            path if path.starts_with("/v2/forbidden/") => (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "text/plain")],
                "Forbidden".to_owned(),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                json,
                envelope("NOT_FOUND", "not found"),
            ),
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    host
}

#[tokio::test]
async fn name_unknown_and_403_answers_name_the_repository_and_the_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let host = answering_registry().await;
    let sources =
        Sources::parse(&format!("insecure_sources: [\"{host}\"]\n"), Path::new("/")).unwrap();
    let no_config = dir.path().join("no-docker-config.json");
    let fetcher = Fetcher::new(
        DownloadStore::new(dir.path().join("store")),
        sources,
        Credentials::new(Some(no_config.clone())),
    );

    let uri = format!("registry://{host}/gone/policy:v1");
    assert_eq!(
        policy_error(&fetcher, "gone", &uri).await,
        format!("404 Not Found: repository `{host}/gone/policy` does not exist")
    );
    let error = fetch_error(&fetcher, &uri).await;
    assert!(matches!(error, FetchError::NotFound { .. }), "{error}");

    for repository in ["denied", "forbidden"] {
        let uri = format!("registry://{host}/{repository}/policy:v1");
        let error = policy_error(&fetcher, repository, &uri).await;
        assert_eq!(
            error,
            format!(
                "403 Forbidden from {host}: access to `{host}/{repository}/policy` refused; \
                 authenticated anonymously ({} does not exist)",
                no_config.display()
            )
        );
    }
    assert!(fetcher.store().tmp_files().is_empty());
}

#[tokio::test]
async fn a_plain_http_registry_not_listed_as_insecure_says_so() {
    let setup = Setup::new();
    let fetcher = setup.fetcher_with("store", Sources::default(), None);
    let error = fetch_error(&fetcher, &setup.uri("p:v1")).await.to_string();
    let host = setup.registry.host();
    assert!(
        error.starts_with(&format!("{host} does not speak TLS")),
        "{error}"
    );
    assert!(
        error.contains(&format!("list \"{host}\" under `insecure_sources`")),
        "{error}"
    );
}

#[tokio::test]
async fn a_digest_pin_with_mismatching_bytes_is_refused_and_nothing_is_stored() {
    let setup = Setup::new();
    let fetcher = setup.fetcher("pusher");
    let manifest = push(&fetcher, "pod_privileged", &setup.uri("p:v1"), Format::Cncf).await;
    let layer = file_digest(&component("pod_privileged"));

    // Damage the layer in the registry's own storage: same length, one byte off.
    let data = setup.registry.blob_data(&layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let pulling = setup.fetcher("store");
    let error = fetch_error(&pulling, &setup.uri(&format!("p@{manifest}"))).await;
    let FetchError::DigestMismatch {
        what,
        expected,
        actual,
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!((*what, expected.as_str()), ("layer", layer.as_str()));
    assert_ne!(actual, &layer);
    assert!(error.to_string().ends_with("nothing was stored"), "{error}");
    let store = pulling.store();
    assert!(!store.blob_path(&layer.parse().unwrap()).exists());
    assert!(store.tmp_files().is_empty(), "{:?}", store.tmp_files());
    // At start-up, under the policy's name and URI.
    let uri = setup.uri(&format!("p@{manifest}"));
    let wrapped = policy_error(&pulling, "pinned", &uri).await;
    assert_eq!(
        wrapped,
        format!("digest mismatch for layer: expected {layer}, got {actual}; nothing was stored")
    );
    assert!(!store.blob_path(&layer.parse().unwrap()).exists());

    // The manifest itself, damaged: its bytes no longer hash to the pin.
    let manifest_data = setup.registry.blob_data(&manifest);
    let text = std::fs::read_to_string(&manifest_data).unwrap();
    let damaged = text.replacen("\"schemaVersion\":2", "\"schemaVersion\":2 ", 1);
    assert_ne!(text, damaged);
    // Same length keeps the registry's recorded size right: drop a space elsewhere.
    let damaged = damaged.replacen(", ", ",", 1);
    std::fs::write(&manifest_data, damaged).unwrap();
    let error = fetch_error(&pulling, &setup.uri(&format!("p@{manifest}"))).await;
    let FetchError::DigestMismatch {
        what: "manifest",
        expected,
        ..
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!(expected, &manifest);
    assert!(store.tmp_files().is_empty());
    let wrapped = policy_error(&pulling, "pinned", &uri).await;
    assert!(
        wrapped.starts_with(&format!(
            "digest mismatch for manifest: expected {manifest}, got "
        )),
        "{wrapped}"
    );
}

#[tokio::test]
async fn a_registry_stopped_mid_pull_leaves_nothing_half_written() {
    let setup = Setup::new();
    let fetcher = setup.fetcher("pusher");
    push(&fetcher, "pod_privileged", &setup.uri("p:v1"), Format::Cncf).await;
    let size = std::fs::metadata(component("pod_privileged"))
        .unwrap()
        .len();
    assert!(
        size > 64 << 10,
        "the component is large enough to cut: {size}"
    );

    // A proxy that lets 16 KiB of the layer through, then stops the registry
    // and drops the connection: the registry dies mid-transfer.
    let setup = Arc::new(Mutex::new(setup));
    let upstream = setup.lock().unwrap().registry.host();
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_host = proxy.local_addr().unwrap().to_string();
    let registry = setup.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = proxy.accept().await {
            let upstream = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            tokio::spawn(cut_after_blob(client, upstream, registry.clone()));
        }
    });

    let (pulling, uri) = {
        let setup = setup.lock().unwrap();
        let sources = Sources::parse(
            &format!("insecure_sources: [\"{proxy_host}\"]\n"),
            Path::new("/"),
        )
        .unwrap();
        (
            setup.fetcher_with("store", sources, None),
            format!("registry://{proxy_host}/p:v1"),
        )
    };
    let error = fetch_error(&pulling, &uri).await;
    let FetchError::Interrupted {
        received, expected, ..
    } = &error
    else {
        panic!("{error}");
    };
    assert!(*received > 0 && *received < size, "{error}");
    assert_eq!(expected, &size.to_string());
    assert!(error.to_string().contains("nothing was stored"), "{error}");
    let layer = file_digest(&component("pod_privileged"));
    assert!(!pulling.store().blob_path(&layer.parse().unwrap()).exists());
    assert!(pulling.store().tmp_files().is_empty());
    assert!(pulling.store().resolved(&uri).is_none());

    // Back up: the same pull completes.
    let (fetcher, uri) = {
        let mut setup = setup.lock().unwrap();
        setup.registry.restart();
        (setup.fetcher("store"), setup.uri("p:v1"))
    };
    let fetch = fetcher.fetch(&source(&uri)).await.unwrap();
    assert_eq!(fetch.digest.to_string(), layer);
}

/// Forwards one client connection; once a blob is requested, lets 16 KiB of
/// the answer through, stops the registry, and closes both sides.
async fn cut_after_blob(
    client: tokio::net::TcpStream,
    upstream: tokio::net::TcpStream,
    registry: Arc<Mutex<Setup>>,
) {
    let blob_asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let asked = blob_asked.clone();
    tokio::spawn(async move {
        let mut buffer = vec![0; 16 << 10];
        while let Ok(n) = client_read.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            if String::from_utf8_lossy(&buffer[..n]).contains("/blobs/sha256:") {
                asked.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            if upstream_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut buffer = vec![0; 4 << 10];
    let mut after_ask = 0;
    while let Ok(n) = upstream_read.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        if blob_asked.load(std::sync::atomic::Ordering::SeqCst) {
            after_ask += n;
            if after_ask > 16 << 10 {
                registry.lock().unwrap().registry.stop();
                return;
            }
        }
        if client_write.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
}

/// Pushes an artifact of one layer with oci-client directly (not through
/// `portcullis push`, which only pushes wasm).
async fn push_raw(host: &str, name: &str, layer: &[u8], layer_type: &str, config_type: &str) {
    portcullis_tests::install_crypto_provider();
    let client = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    });
    let reference: oci_client::Reference = format!("{host}/{name}").parse().unwrap();
    let layer = oci_client::client::ImageLayer::new(layer.to_vec(), layer_type.into(), None);
    let config = oci_client::client::Config::new(b"{}".to_vec(), config_type.into(), None);
    let anonymous = oci_client::secrets::RegistryAuth::Anonymous;
    client
        .push(&reference, &[layer], config, &anonymous, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_artifact_without_a_wasm_layer_names_what_it_holds() {
    let setup = Setup::new();
    let host = setup.registry.host();
    // A container image, not a policy.
    push_raw(
        &host,
        "image:v1",
        b"not a tarball",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.config.v1+json",
    )
    .await;
    let fetcher = setup.fetcher("store");
    let error = fetch_error(&fetcher, &setup.uri("image:v1"))
        .await
        .to_string();
    assert!(
        error.starts_with(
            "not a wasm artifact: config `application/vnd.oci.image.config.v1+json`, \
             1 layer `application/vnd.oci.image.layer.v1.tar+gzip`"
        ),
        "{error}"
    );
    assert_eq!(
        policy_error(&fetcher, "image", &setup.uri("image:v1")).await,
        error
    );

    // A wasm media type on bytes that are not wasm.
    push_raw(
        &host,
        "fake:v1",
        b"#!/bin/sh\necho not wasm\n",
        "application/wasm",
        "application/vnd.wasm.config.v0+json",
    )
    .await;
    let error = fetch_error(&fetcher, &setup.uri("fake:v1")).await;
    assert!(matches!(error, FetchError::NotWasm { .. }), "{error}");
    assert!(error.to_string().contains("#!/bin/sh"), "{error}");
    assert_eq!(
        policy_error(&fetcher, "fake", &setup.uri("fake:v1")).await,
        "the downloaded bytes are not WebAssembly (they start with \"#!/bin/sh\\necho n\")"
    );
    assert!(fetcher.store().tmp_files().is_empty());
}

#[tokio::test]
async fn every_failing_policy_is_listed() {
    let setup = Setup::new();
    let fetcher = setup.fetcher("store");
    push(&fetcher, "pod_privileged", &setup.uri("p:v1"), Format::Cncf).await;
    let yml = format!(
        "good:\n  module: {}\nmissing:\n  module: {}\nunreachable:\n  module: registry://127.0.0.1:1/p:v1\n",
        setup.uri("p:v1"),
        setup.uri("p:v2"),
    );
    let specs = config::parse(&yml, Path::new("/"), "policies.yml")
        .unwrap()
        .policies;
    let error = fetcher.fetch_policies(specs).await.unwrap_err().to_string();
    let lines: Vec<&str> = error.lines().collect();
    assert_eq!(
        lines[0], "cannot obtain the modules of 2 policies:",
        "{error}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "  policy `missing` ({}): 404 Not Found",
            setup.uri("p:v2")
        )),
        "{error}"
    );
    assert!(
        lines[2].starts_with("  policy `unreachable` (registry://127.0.0.1:1/p:v1): "),
        "{error}"
    );
    assert_eq!(lines.len(), 3, "{error}");
}

// --- TLS and credentials --------------------------------------------------------

#[tokio::test]
async fn tls_with_a_ca_given_only_in_sources_yml() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("registry test CA");
    let (cert, key) = ca.server("registry").write(dir.path(), "registry");
    let setup = Setup::with(RegistryOptions {
        tls: Some((cert, key)),
        htpasswd: None,
    });
    let host = setup.registry.host();
    let mut sources_yml =
        format!("source_authorities:\n  \"{host}\":\n    - type: Data\n      data: |\n");
    for line in ca.cert_pem().lines() {
        writeln!(sources_yml, "        {line}").unwrap();
    }
    let sources_path = setup.path("sources.yml");
    std::fs::write(&sources_path, &sources_yml).unwrap();
    let fetcher = setup.fetcher_with("store", Sources::load(&sources_path).unwrap(), None);
    let uri = format!("registry://{host}/p:v1");
    push(&fetcher, "pod_privileged", &uri, Format::Cncf).await;
    let fetch = fetcher.fetch(&source(&uri)).await.unwrap();
    assert_eq!(fetch.origin, FetchOrigin::Pulled);

    // Without the CA: a TLS error naming the host and the remedy.
    let error = fetch_error(&setup.fetcher_with("other", Sources::default(), None), &uri).await;
    assert!(matches!(error, FetchError::Tls { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("TLS with {host} failed: ")),
        "{message}"
    );
    assert!(message.contains("source_authorities"), "{message}");
    assert!(message.contains("--sources-path"), "{message}");
    // At start-up, under the policy's name and URI.
    let untrusting = setup.fetcher_with("third", Sources::default(), None);
    let wrapped = policy_error(&untrusting, "private-ca", &uri).await;
    assert!(
        wrapped.starts_with(&format!("TLS with {host} failed: ")),
        "{wrapped}"
    );
    assert!(
        wrapped.ends_with(&format!(
            "list the CA under `source_authorities` for \"{host}\" in sources.yml \
             (--sources-path; none is given now)"
        )),
        "{wrapped}"
    );
}

/// An htpasswd line (bcrypt, as distribution requires).
fn htpasswd(user: &str, password: &str) -> String {
    format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap())
}

fn docker_config(dir: &Path, host: &str, user: &str, password: &str) -> PathBuf {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let path = dir.join(format!("config-{user}-{password}.json"));
    std::fs::write(
        &path,
        serde_json::json!({"auths": {host: {"auth": auth}}}).to_string(),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn basic_auth_through_a_docker_config_json() {
    let setup = Setup::with(RegistryOptions {
        tls: None,
        htpasswd: Some(htpasswd("alice", "s3cret")),
    });
    let host = setup.registry.host();
    let good = docker_config(setup.dir.path(), &host, "alice", "s3cret");
    let fetcher = setup.fetcher_with("store", setup.insecure_sources(), Some(good.clone()));
    let uri = setup.uri("private:v1");
    push(&fetcher, "pod_privileged", &uri, Format::Cncf).await;
    assert_eq!(
        fetcher.fetch(&source(&uri)).await.unwrap().origin,
        FetchOrigin::Pulled
    );

    // The wrong password: 401, naming who tried and from which file.
    let bad = docker_config(setup.dir.path(), &host, "alice", "wrong");
    let denied = setup.fetcher_with("other", setup.insecure_sources(), Some(bad.clone()));
    let error = fetch_error(&denied, &uri).await.to_string();
    assert!(
        error.starts_with(&format!("401 Unauthorized from {host}: ")),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "as `alice` (credentials for {host} in {})",
            bad.display()
        )),
        "{error}"
    );
    // At start-up, under the policy's name and URI.
    assert_eq!(
        policy_error(&denied, "private", &uri).await,
        format!(
            "401 Unauthorized from {host}: access to `{host}/private` refused; \
             authenticated as `alice` (credentials for {host} in {})",
            bad.display()
        )
    );

    // No credentials at all: 401, saying it was anonymous and why.
    let error = fetch_error(&setup.fetcher("third"), &uri).await.to_string();
    assert!(error.starts_with("401 Unauthorized"), "{error}");
    assert!(error.contains("anonymously ("), "{error}");
}

#[test]
fn specs_from_code_have_no_source() {
    let spec = PolicySpec::new("p", "/x.wasm");
    assert!(spec.source.is_none() && spec.fetch.is_none());
}

/// What the token front saw: the token requests' queries and credentials.
type TokenRequests = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Docker's token protocol in front of the real registry at `upstream`, as
/// Docker Hub, GHCR and Harbor speak it (docker-registry needs a token
/// server of its own for that): a request without the bearer token is
/// refused with a `WWW-Authenticate: Bearer` challenge naming the realm
/// `/token`, which hands the token out for Basic `alice:s3cret`; with it,
/// requests go on to the registry. Returns `host:port` and the token
/// requests seen.
async fn token_front(upstream: String) -> (String, TokenRequests) {
    use axum::body::Body;
    use axum::http::{HeaderMap, Request, StatusCode, header};
    use axum::response::Response;
    const TOKEN: &str = "a-pull-token";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let seen = TokenRequests::default();
    let asked = seen.clone();
    let token = move |headers: HeaderMap, request: Request<Body>| {
        let asked = asked.clone();
        async move {
            let basic = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let query = request.uri().query().unwrap_or_default().to_owned();
            asked.lock().unwrap().push((query, basic.clone()));
            use base64::Engine;
            let alice = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
            if basic != Some(format!("Basic {alice}")) {
                return (StatusCode::UNAUTHORIZED, "bad credentials".to_owned());
            }
            (
                StatusCode::OK,
                serde_json::json!({"token": TOKEN, "expires_in": 300}).to_string(),
            )
        }
    };
    let realm = format!("http://{host}/token");
    let forward = move |request: Request<Body>| {
        let (upstream, realm) = (upstream.clone(), realm.clone());
        async move {
            let bearer = format!("Bearer {TOKEN}");
            let authorized = request
                .headers()
                .get(header::AUTHORIZATION)
                .is_some_and(|v| v.as_bytes() == bearer.as_bytes());
            if !authorized {
                return Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header(
                        header::WWW_AUTHENTICATE,
                        format!(r#"Bearer realm="{realm}",service="front test""#),
                    )
                    .body(Body::from(
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"token"}]}"#,
                    ))
                    .unwrap();
            }
            let url = format!("http://{upstream}{}", request.uri());
            let mut forwarded = reqwest::Client::new().request(request.method().clone(), url);
            if let Some(accept) = request.headers().get(header::ACCEPT) {
                forwarded = forwarded.header(header::ACCEPT, accept.clone());
            }
            let answer = forwarded.send().await.unwrap();
            let mut response = Response::builder().status(answer.status().as_u16());
            for (name, value) in answer.headers() {
                response = response.header(name.as_str(), value.as_bytes());
            }
            response
                .body(Body::from(answer.bytes().await.unwrap()))
                .unwrap()
        }
    };
    let app = axum::Router::new()
        .route("/token", axum::routing::get(token))
        .fallback(forward);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (host, seen)
}

#[tokio::test]
async fn a_bearer_token_is_asked_of_the_challenge_realm_with_the_credentials() {
    let setup = Setup::new();
    let layer = file_digest(&component("pod_privileged"));
    push(
        &setup.fetcher("pusher"),
        "pod_privileged",
        &setup.uri("p:v1"),
        Format::Cncf,
    )
    .await;
    let (front, tokens) = token_front(setup.registry.host()).await;
    let insecure = Sources::parse(
        &format!("insecure_sources: [\"{front}\"]\n"),
        Path::new("/"),
    )
    .unwrap();
    let uri = format!("registry://{front}/p:v1");

    let alice = docker_config(setup.dir.path(), &front, "alice", "s3cret");
    let fetcher = setup.fetcher_with("store", insecure.clone(), Some(alice));
    let fetch = fetcher.fetch(&source(&uri)).await.unwrap();
    assert_eq!(fetch.digest.to_string(), layer);
    assert_eq!(fetch.origin, FetchOrigin::Pulled);
    let asked = tokens.lock().unwrap().clone();
    assert_eq!(
        asked.len(),
        1,
        "one token for the manifest and the module: {asked:?}"
    );
    assert_eq!(asked[0].0, "scope=repository%3Ap%3Apull&service=front+test");
    // `portcullis digest` asks the same way.
    let portcullis::source::Location::Registry(reference) = source(&uri).location().clone() else {
        unreachable!()
    };
    let manifest = fetcher.resolve(&reference).await.unwrap();
    assert!(manifest.starts_with("sha256:"), "{manifest}");

    // The realm refuses other credentials: a 401 that names them.
    let mallory = docker_config(setup.dir.path(), &front, "mallory", "guess");
    let refused = setup.fetcher_with("other", insecure, Some(mallory.clone()));
    let error = fetch_error(&refused, &uri).await.to_string();
    assert_eq!(
        error,
        format!(
            "401 Unauthorized from {front}: access to `{front}/p` refused; authenticated as \
             `mallory` (credentials for {front} in {})",
            mallory.display()
        )
    );
}
