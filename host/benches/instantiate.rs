//! Per-evaluation cost: a fresh instance + one `validate` call, through the
//! whole host path, next to a bare-wasmtime baseline of the same component.
//!
//! ```text
//! scripts/build-components
//! cargo bench -p portcullis --bench instantiate [-- COMPONENT.wasm REQUEST.json]
//! ```
//! Prints a Markdown table: median µs per evaluation over several runs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use portcullis::admission::parse_review_or_request;
use portcullis::bindings::{AdmissionRequest, PolicyPre};
use portcullis::{Engine, Environment, Limits, PolicySpec};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, InstanceAllocationStrategy, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

const RUNS: usize = 7;
const ITERATIONS: usize = 2_000;
const WARM_UP: usize = 200;

fn main() -> anyhow::Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let component = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target/wasm32-wasip2/policy/pod_privileged.wasm"));
    let request = args.next().map(PathBuf::from).unwrap_or_else(|| {
        repo.join("examples/pod-privileged/test_data/privileged_container.json")
    });
    let request = parse_review_or_request(&std::fs::read(&request)?)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let host = runtime.block_on(measure_host(&component, &request))?;
    let bare = runtime.block_on(measure_bare(&component, &request))?;

    println!(
        "component: {} ({} bytes)",
        component.display(),
        std::fs::metadata(&component)?.len()
    );
    println!("{RUNS} runs x {ITERATIONS} evaluations, sequential, one thread\n");
    println!("| path | median µs/eval | min | max |");
    println!("|---|---:|---:|---:|");
    for (name, runs) in [
        ("bare wasmtime (baseline)", &bare),
        ("portcullis host", &host),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} |",
            median(runs),
            runs.iter().cloned().fold(f64::INFINITY, f64::min),
            runs.iter().cloned().fold(0.0, f64::max)
        );
    }
    println!(
        "\nratio host / baseline (medians): {:.2}",
        median(&host) / median(&bare)
    );
    Ok(())
}

/// The whole host path: `Environment::validate` (fresh store with limiter,
/// WASI context, output capture, deadline, instance, call).
async fn measure_host(component: &Path, request: &AdmissionRequest) -> anyhow::Result<Vec<f64>> {
    let engine = Engine::new(Limits::default())?;
    let env = Environment::load(&engine, [PolicySpec::new("bench", component)], None).await?;
    let mut runs = Vec::new();
    for run in 0..=RUNS {
        let n = if run == 0 { WARM_UP } else { ITERATIONS };
        let started = Instant::now();
        for _ in 0..n {
            std::hint::black_box(env.validate("bench", request).await?);
        }
        if run > 0 {
            runs.push(started.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
    }
    Ok(runs)
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
async fn measure_bare(component: &Path, request: &AdmissionRequest) -> anyhow::Result<Vec<f64>> {
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::pooling());
    let engine = wasmtime::Engine::new(&config)?;
    let mut linker = Linker::<Bare>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    let component = Component::from_file(&engine, component)?;
    let pre = PolicyPre::new(linker.instantiate_pre(&component)?)?;
    let mut runs = Vec::new();
    for run in 0..=RUNS {
        let n = if run == 0 { WARM_UP } else { ITERATIONS };
        let started = Instant::now();
        for _ in 0..n {
            let state = Bare {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            };
            let mut store = Store::new(&engine, state);
            let policy = pre.instantiate_async(&mut store).await?;
            std::hint::black_box(policy.call_validate(&mut store, request, "{}").await?);
        }
        if run > 0 {
            runs.push(started.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
    }
    Ok(runs)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}
