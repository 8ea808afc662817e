//! Per-evaluation cost: a fresh instance + one `validate` call, through the
//! whole host path, next to a bare-wasmtime baseline of the same component.
//!
//! ```text
//! scripts/build-components
//! cargo bench -p portcullis --bench instantiate [-- COMPONENT.wasm REQUEST.json [SETTINGS]]
//! ```
//! Prints a Markdown table: median µs per evaluation over several runs, for
//! every example component (or the one given). Times are the benchmark
//! thread's CPU time (user + system, so page faults and `madvise` count):
//! on an idle machine that equals wall time, and unlike wall time it stays
//! put while other work shares the cores.
//!
//! Each component is measured twice: with slots that keep nothing resident
//! (`serve --keep-resident-bytes 0`, memory flat in the workers) and with
//! Portcullis's default (64 KiB of each memory's dirtied pages kept
//! resident), each next to plain wasmtime with the same pool, so the ratio
//! is the cost of the host's own work: limiter, WASI context, output
//! capture, deadline. A third baseline, bare wasmtime with epoch
//! interruption on (the check at every call and loop that lets a deadline
//! stop a spinning policy), shows how much of the difference that is.

use std::path::{Path, PathBuf};

use portcullis::admission::parse_review_or_request;
use portcullis::bindings::{AdmissionRequest, PolicyPre};
use portcullis::{Engine, Environment, Limits, PolicySpec};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod common;

use common::{RUN_SECONDS, RUNS, median, runs};

/// Component (in the build's policy dir), request (repo-relative), settings.
const CASES: &[(&str, &str, &str)] = &[
    ("pod_privileged", "bench/requests/privileged-pod.json", "{}"),
    (
        "disallow_service_loadbalancer",
        "bench/requests/loadbalancer-service.json",
        "{}",
    ),
    (
        "trusted_images",
        "bench/requests/untrusted-image-pod.json",
        r#"{"allowedRegistries":["docker.io"]}"#,
    ),
    (
        "required_annotations",
        "bench/requests/privileged-pod.json",
        r#"{"requiredAnnotations":{"team":"platform"}}"#,
    ),
    (
        "deny_labels_py",
        "bench/requests/labelled-pod.json",
        r#"{"deniedLabels":["owner"]}"#,
    ),
];

fn main() -> anyhow::Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let components = repo.join("target/wasm32-wasip2/policy");
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let cases: Vec<(PathBuf, PathBuf, String)> = match (args.next(), args.next()) {
        (Some(component), Some(request)) => {
            let settings = args.next().unwrap_or_else(|| "{}".into());
            vec![(component.into(), request.into(), settings)]
        }
        _ => CASES
            .iter()
            .map(|(name, request, settings)| {
                (
                    components.join(format!("{name}.wasm")),
                    repo.join(request),
                    settings.to_string(),
                )
            })
            .collect(),
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "{RUNS} runs of ~{RUN_SECONDS} s each after a warm-up, sequential, one thread; medians\n"
    );
    println!(
        "| component | size (KB) | bare wasmtime µs/eval, flat | portcullis µs/eval, flat | ratio | bare, default (64 KiB kept) | bare + epoch checks, default | portcullis, default | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let kept = Limits::default().keep_resident_bytes;
    for (component, request, settings) in cases {
        let request = parse_review_or_request(&std::fs::read(&request)?)?;
        let settings: serde_json::Value = serde_json::from_str(&settings)?;
        let host = runtime.block_on(measure_host(&component, &request, &settings, 0))?;
        let host_kept = runtime.block_on(measure_host(&component, &request, &settings, kept))?;
        let settings = settings.to_string();
        let bare = |kept, epochs| measure_bare(&component, &request, &settings, kept, epochs);
        let bare_flat = median(&runtime.block_on(bare(0, false))?);
        let bare_kept = median(&runtime.block_on(bare(kept, false))?);
        let bare_epochs = median(&runtime.block_on(bare(kept, true))?);
        let (host, host_kept, bare) = (median(&host), median(&host_kept), bare_flat);
        println!(
            "| {} | {} | {bare:.1} | {host:.1} | {:.2} | {bare_kept:.1} | {bare_epochs:.1} | {host_kept:.1} | {:.2} |",
            component.file_name().unwrap().to_string_lossy(),
            std::fs::metadata(&component)?.len() / 1024,
            host / bare,
            host_kept / bare_kept,
        );
    }
    Ok(())
}

/// The whole host path: `Environment::validate` (fresh store with limiter,
/// WASI context, output capture, deadline, instance, call).
async fn measure_host(
    component: &Path,
    request: &AdmissionRequest,
    settings: &serde_json::Value,
    keep_resident_bytes: usize,
) -> anyhow::Result<Vec<f64>> {
    let engine = Engine::new(Limits {
        keep_resident_bytes,
        ..Limits::default()
    })?;
    let spec = PolicySpec::new("bench", component).with_settings(settings.clone());
    let env = Environment::load(&engine, [spec], None).await?;
    runs(|| async {
        std::hint::black_box(env.validate("bench", request).await?);
        Ok(())
    })
    .await
}

struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Plain wasmtime with the pooling allocator: `InstancePre` once, then a
/// default-WASI store, instance and call per evaluation, nothing else.
/// `keep_resident_bytes`: as Portcullis's engine configures it; `epochs`:
/// with epoch interruption on (and a deadline never reached).
async fn measure_bare(
    component: &Path,
    request: &AdmissionRequest,
    settings: &str,
    keep_resident_bytes: usize,
    epochs: bool,
) -> anyhow::Result<Vec<f64>> {
    let mut pool = PoolingAllocationConfig::new();
    if keep_resident_bytes > 0 {
        portcullis::engine::keep_resident(&mut pool, keep_resident_bytes);
    }
    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(epochs);
    let engine = wasmtime::Engine::new(&config)?;
    let mut linker = Linker::<Bare>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    let component = Component::from_file(&engine, component)?;
    let pre = PolicyPre::new(linker.instantiate_pre(&component)?)?;
    runs(|| async {
        let state = Bare {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&engine, state);
        store.set_epoch_deadline(u64::MAX);
        let policy = pre.instantiate_async(&mut store).await?;
        std::hint::black_box(
            policy
                .portcullis_policy_admission()
                .call_validate(&mut store, request, settings)
                .await?,
        );
        Ok(())
    })
    .await
}
