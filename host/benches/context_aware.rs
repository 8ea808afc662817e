//! Context-aware policies: what reading the cluster costs.
//!
//! ```text
//! scripts/build-components
//! cargo bench -p portcullis --bench context_aware
//! ```
//! Prints three Markdown tables (BENCHMARKS.md §"Context-aware policies"):
//!
//! 1. **Latency with 5,000 Ingresses in the cache**: the
//!    `unique-ingress-host` example (a `list` by host, masked) through the
//!    host, 8 requests at once on 2 evaluation threads; p50/p99 of each
//!    evaluation's wall time, median over runs; pod-privileged beside it. The
//!    cache is the host's object store, the very one a reflector fills from
//!    a watch (here filled from generated objects).
//! 2. **Cache memory per 1,000 Ingresses**, whole and kept to the grant's field
//!    masks, counted by this binary's allocator (bytes still allocated after
//!    the store is filled, minus before).
//! 3. **A plain policy's throughput while 64 lookups wait on a stalled API
//!    server**: `serve`'s server with 2 workers, a context-aware policy whose
//!    `get`s go to an API server that accepts connections and never answers
//!    (a listener on 127.0.0.1 that reads nothing), and pod-privileged
//!    driven by 8 HTTP clients, with and without the 64 waiting lookups.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use portcullis::admission::parse_review_or_request;
use portcullis::capabilities::kubernetes::live::{LiveCluster, Served};
use portcullis::capabilities::kubernetes::objects::Objects;
use portcullis::capabilities::kubernetes::offline::ResourcesFile;
use portcullis::capabilities::kubernetes::select::FieldMasks;
use portcullis::capabilities::{
    Capabilities, ContextAwareResource, Grants, HostCapabilities, Kubernetes,
};
use portcullis::server::{BodyLimits, ListenerLimits, ServerConfig};
use portcullis::{Engine, Environment, Limits, PolicySpec};
use serde_json::{Value, json};

/// Counts the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const RUNS: usize = 5;
const CONCURRENCY: usize = 8;

fn components() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("wasm32-wasip2/policy")
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// A realistic Ingress: labels, annotations, two paths, TLS, a status.
fn ingress(i: usize) -> Value {
    let namespace = format!("team-{}", i % 50);
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {
            "name": format!("app-{i}"), "namespace": namespace,
            "uid": format!("0b7c1f2e-0000-4000-8000-{i:012}"),
            "resourceVersion": format!("{}", 100000 + i), "generation": 1,
            "creationTimestamp": "2026-11-01T10:00:00Z",
            "labels": {"app": format!("app-{i}"), "team": namespace, "tier": "web"},
            "annotations": {
                "nginx.ingress.kubernetes.io/rewrite-target": "/",
                "cert-manager.io/cluster-issuer": "letsencrypt",
                "kubectl.kubernetes.io/last-applied-configuration": "x".repeat(400),
            },
            "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": [format!("app-{i}.example.com")], "secretName": format!("app-{i}-tls")}],
            "rules": [{
                "host": format!("app-{i}.example.com"),
                "http": {"paths": [
                    {"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": format!("app-{i}"), "port": {"number": 80}}}},
                    {"path": "/api", "pathType": "Prefix",
                     "backend": {"service": {"name": format!("app-{i}-api"), "port": {"number": 8080}}}},
                ]},
            }],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}},
    })
}

fn review(host: &str) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "bench", "name": "new", "namespace": "bench", "operation": "CREATE",
        "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"},
        "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "ingresses"},
        "userInfo": {"username": "bench"},
        "object": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                   "metadata": {"name": "new", "namespace": "bench"},
                   "spec": {"rules": [{"host": host}]}},
    }})
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// p50 and p99 (µs) of `id`'s evaluations of `request`, `CONCURRENCY` at
/// once on a 2-thread runtime, medians over `RUNS` runs.
fn latency(env: &Arc<Environment>, id: &str, request: &Value) -> (f64, f64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let request = Arc::new(parse_review_or_request(request.to_string().as_bytes()).unwrap());
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for run in 0..=RUNS {
        let times = runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..CONCURRENCY {
                let (env, request, id) = (env.clone(), request.clone(), id.to_owned());
                tasks.spawn(async move {
                    let mut times = Vec::new();
                    for _ in 0..100 {
                        let started = Instant::now();
                        let verdict = env.validate(&id, &request).await.unwrap();
                        assert!(verdict.response.allowed, "{:?}", verdict.response);
                        times.push(started.elapsed());
                    }
                    times
                });
            }
            let mut all = Vec::new();
            while let Some(times) = tasks.join_next().await {
                all.extend(times.unwrap());
            }
            all.sort();
            all
        });
        if run > 0 {
            // Run 0 warms the instance pool and the caches up.
            p50s.push(percentile(&times, 0.50).as_secs_f64() * 1e6);
            p99s.push(percentile(&times, 0.99).as_secs_f64() * 1e6);
        }
    }
    (median(p50s), median(p99s))
}

fn ingresses_file(count: usize) -> ResourcesFile {
    let items: Vec<Value> = (0..count).map(ingress).collect();
    ResourcesFile::parse(&Value::Array(items).to_string()).unwrap()
}

fn latency_table() {
    let file = ingresses_file(5_000);
    let capabilities = Capabilities::default().with(Arc::new(Kubernetes::new(file.into_cluster())));
    let engine = Engine::with_capabilities(Limits::default(), capabilities).unwrap();
    let grants = Grants {
        context_aware_resources: vec![ContextAwareResource::new("networking.k8s.io/v1", "Ingress")],
        ..Grants::default()
    };
    let spec =
        PolicySpec::new("hosts", components().join("unique_ingress_host.wasm")).with_grants(grants);
    let plain = PolicySpec::new("plain", components().join("pod_privileged.wasm"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let env = Arc::new(
        runtime
            .block_on(Environment::load(&engine, [spec, plain], None))
            .unwrap(),
    );
    println!(
        "| evaluation, 5,000 Ingresses in the cache, {CONCURRENCY} at once, 2 threads | p50 | p99 |"
    );
    println!("|---|---|---|");
    let (p50, p99) = latency(&env, "hosts", &review("new.example.com"));
    println!(
        "| unique-ingress-host: one `list` by host (field selector, masked) | {p50:.0} µs | {p99:.0} µs |"
    );
    // An unprivileged pod, so the plain policy admits it too.
    let plain_review: Value = serde_json::from_slice(
        &std::fs::read(repo(
            "examples/pod-privileged/test_data/no_privileged_containers.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let (p50, p99) = latency(&env, "plain", &plain_review);
    println!("| pod-privileged (reads nothing), for comparison | {p50:.0} µs | {p99:.0} µs |");
    println!();
}

fn memory_table() {
    let items: Vec<Value> = (0..1_000).map(ingress).collect();
    let json_bytes: usize = items.iter().map(|i| i.to_string().len()).sum();
    let measure = |masks: FieldMasks| {
        // Counted from before the copy handed to the store: what is left
        // of it afterwards is the store (the rest was trimmed and freed).
        let before = LIVE.load(Ordering::Relaxed);
        let objects = Objects::new(masks);
        objects.replace(items.clone());
        let held = LIVE.load(Ordering::Relaxed).saturating_sub(before);
        drop(objects);
        held
    };
    let whole = measure(FieldMasks::default());
    let masked = measure(
        FieldMasks::new(&["metadata.name", "metadata.namespace", "spec.rules.host"]).unwrap(),
    );
    println!("| cache of 1,000 Ingresses | bytes held | per object |");
    println!("|---|---|---|");
    println!(
        "| their JSON, as the API server sends it (for scale) | {:.2} MB | {} B |",
        json_bytes as f64 / 1e6,
        json_bytes / 1000
    );
    println!(
        "| whole objects (`managedFields` dropped) | {:.2} MB | {} B |",
        whole as f64 / 1e6,
        whole / 1000
    );
    println!(
        "| kept to the grant's masks `metadata.name`, `metadata.namespace`, `spec.rules.host` | {:.2} MB | {} B |",
        masked as f64 / 1e6,
        masked / 1000
    );
    println!();
}

/// Requests per second of `pod_privileged` through the server, 8 clients,
/// over `seconds`.
async fn plain_throughput(api: &str, seconds: f64) -> f64 {
    let body = std::fs::read(repo("bench/requests/privileged-pod.json")).unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, body, url) = (
            client.clone(),
            body.clone(),
            format!("{api}/validate/plain"),
        );
        tasks.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let response = client.post(&url).body(body.clone()).send().await.unwrap();
                assert!(response.status().is_success());
                response.bytes().await.unwrap();
                done += 1;
            }
            done
        });
    }
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done.unwrap();
    }
    total as f64 / seconds
}

fn stalled_table() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // An API server that accepts connections and never answers.
        let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = stalled.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut connections = Vec::new();
            while let Ok((connection, _)) = stalled.accept().await {
                connections.push(connection);
            }
        });
        let config = kube::Config::new(format!("http://{address}").parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let namespace = ContextAwareResource::new("v1", "Namespace");
        let api = kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "", "v1", "Namespace",
        ));
        let cluster = LiveCluster::unwatched(
            client,
            vec![Served {
                resource: namespace.clone(),
                api,
                namespaced: false,
            }],
        );
        let capabilities = Capabilities::default().with(Arc::new(Kubernetes::new(cluster)));
        let workers = 2;
        let limits = Limits {
            timeout: Duration::from_secs(30),
            max_instances: (portcullis::server::Gate::max_live(workers) + workers * 2 + 16) as u32,
            ..Limits::default()
        };
        let engine = Engine::with_capabilities(limits, capabilities).unwrap();
        let specs = vec![
            PolicySpec::new("plain", components().join("pod_privileged.wasm")),
            PolicySpec::new("labels", components().join("namespace_label_required.wasm"))
                .with_settings(json!({"label": "team"}))
                .with_grants(Grants {
                    context_aware_resources: vec![namespace],
                    host_capabilities: HostCapabilities::DenyAll,
                }),
        ];
        let config = ServerConfig {
            api_addr: "127.0.0.1:0".parse().unwrap(),
            readiness_addr: "127.0.0.1:0".parse().unwrap(),
            workers,
            queue_capacity: 256,
            webhook_timeout: Duration::from_secs(30),
            body: BodyLimits::default(),
            api_limits: ListenerLimits::default(),
            probe_limits: ListenerLimits::probes(&ListenerLimits::default(), 8),
            tls: None,
            always_accept_namespace: None,
            shutdown_grace: Duration::from_secs(1),
            metrics_listener: Default::default(),
        };
        let server = portcullis::server::start(config, engine, specs, None).await.unwrap();
        let api = format!("http://{}", server.api_addr);
        let seconds = 3.0;
        let mut quiet = Vec::new();
        for _ in 0..RUNS {
            quiet.push(plain_throughput(&api, seconds).await);
        }
        // 64 lookups, each of a namespace nobody read: each goes to the
        // stalled API server and waits there (up to its deadline, 30 s).
        let client = reqwest::Client::new();
        let mut lookups = tokio::task::JoinSet::new();
        for i in 0..64 {
            let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": format!("{i}"), "namespace": format!("ns-{i}"), "operation": "CREATE",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "userInfo": {"username": "bench"},
                    "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                               "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
            let (client, url) = (client.clone(), format!("{api}/validate/labels"));
            lookups.spawn(async move {
                client.post(url).json(&review).send().await.map(|r| r.status())
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut waiting = Vec::new();
        for _ in 0..RUNS {
            waiting.push(plain_throughput(&api, seconds).await);
        }
        let still_waiting = !lookups.is_empty() && lookups.try_join_next().is_none();
        println!("| pod-privileged through `serve` (2 workers, 8 clients) | requests/s |");
        println!("|---|---|");
        println!("| alone | {:.0} |", median(quiet));
        println!(
            "| while 64 lookups wait on a stalled API server | {:.0} |",
            median(waiting)
        );
        assert!(still_waiting, "the lookups were still waiting throughout");
        lookups.abort_all();
        held.abort();
        server.shutdown().await.unwrap();
    });
    println!();
}

fn main() {
    println!("Context-aware policies (cargo bench -p portcullis --bench context_aware)\n");
    memory_table();
    latency_table();
    stalled_table();
}
