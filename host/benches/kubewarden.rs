//! Per-evaluation cost of Kubewarden modules: a fresh instance + one
//! `validate`, through the whole host path, next to a bare-wasmtime baseline
//! of the same module (instantiate, `wapc_init`, `__guest_call`), and next to
//! the same policy written as a component, where the repository has one.
//!
//! ```text
//! scripts/build-components
//! cargo bench -p portcullis --bench kubewarden
//! ```
//! Prints a Markdown table: median µs per evaluation over several runs
//! (the benchmark thread's CPU time, as `benches/instantiate.rs` measures).
//! The baseline does only what waPC needs: WASI preview1 with an empty
//! context, the `wapc` imports copying bytes, the payload built once. The
//! ratio is the cost of the host's own work: the request turned into
//! Kubewarden's JSON per evaluation, limiter, output capture, deadline, the
//! response parsed into a verdict.

use std::path::{Path, PathBuf};

use portcullis::admission::parse_review_or_request;
use portcullis::bindings::AdmissionRequest;
use portcullis::{Engine, Environment, Limits, PolicySpec};
use wasmtime::{
    Caller, Config, Extern, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig,
    Store,
};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p1::WasiP1Ctx;

mod common;

use common::{RUN_SECONDS, RUNS, median, runs};

/// Kubewarden module, request (repo-relative), settings, and the component
/// with the same policy (if any).
const CASES: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "kw_pod_privileged",
        "bench/requests/privileged-pod.json",
        "{}",
        Some("pod_privileged"),
    ),
    (
        "kw_mutating",
        "bench/requests/privileged-pod.json",
        r#"{"annotations":{"team":"platform"}}"#,
        None,
    ),
    (
        "kw_required_labels",
        "bench/requests/labelled-pod.json",
        r#"{"labels":["team"]}"#,
        None,
    ),
    (
        "kw_wasi_command",
        "bench/requests/labelled-pod.json",
        r#"{"deniedLabels":["owner"]}"#,
        None,
    ),
];

fn main() -> anyhow::Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    let policies = target.join("wasm32-wasip2/policy");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "{RUNS} runs of ~{RUN_SECONDS} s each after a warm-up, sequential, one thread; medians\n"
    );
    println!(
        "| module | kind | size (KB) | bare wasmtime µs/eval | portcullis µs/eval | ratio | same policy as a component, µs/eval |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (name, request, settings, component) in CASES {
        let module = policies.join(format!("{name}.wasm"));
        let request = parse_review_or_request(&std::fs::read(repo.join(request))?)?;
        let settings: serde_json::Value = serde_json::from_str(settings)?;
        let host = median(&runtime.block_on(measure_host(&module, &request, &settings))?);
        let wasi = name.contains("wasi");
        let bare = median(&runtime.block_on(measure_bare(&module, &request, &settings, wasi))?);
        let native = match component {
            Some(component) => {
                let path = policies.join(format!("{component}.wasm"));
                let native = median(&runtime.block_on(measure_host(&path, &request, &settings))?);
                format!("{native:.1} ({component}.wasm)")
            }
            None => "—".to_owned(),
        };
        println!(
            "| {name}.wasm | {} | {} | {bare:.1} | {host:.1} | {:.2} | {native} |",
            if wasi { "WASI" } else { "waPC" },
            std::fs::metadata(&module)?.len() / 1024,
            host / bare,
        );
    }
    Ok(())
}

/// The whole host path: `Environment::validate`.
async fn measure_host(
    policy: &Path,
    request: &AdmissionRequest,
    settings: &serde_json::Value,
) -> anyhow::Result<Vec<f64>> {
    let engine = Engine::new(Limits::default())?;
    let spec = PolicySpec::new("bench", policy).with_settings(settings.clone());
    let env = Environment::load(&engine, [spec], None).await?;
    runs(|| async {
        std::hint::black_box(env.validate("bench", request).await?);
        Ok(())
    })
    .await
}

/// A bare waPC host's per-store state.
struct Bare {
    wasi: WasiP1Ctx,
    payload: Vec<u8>,
    response: Vec<u8>,
}

fn memory(caller: &mut Caller<'_, Bare>) -> wasmtime::Memory {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => memory,
        _ => panic!("no memory"),
    }
}

/// Plain wasmtime with the pooling allocator: `InstancePre` once, then per
/// evaluation a store with an empty WASI context, an instance, `wapc_init`
/// and `__guest_call` (waPC), or `_start` with the payload on stdin (WASI).
async fn measure_bare(
    module: &Path,
    request: &AdmissionRequest,
    settings: &serde_json::Value,
    wasi: bool,
) -> anyhow::Result<Vec<f64>> {
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(
        PoolingAllocationConfig::new(),
    ));
    let engine = wasmtime::Engine::new(&config)?;
    let mut linker = Linker::<Bare>::new(&engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |bare| &mut bare.wasi)?;
    linker.func_wrap(
        "wapc",
        "__guest_request",
        |mut caller: Caller<'_, Bare>, op: i32, ptr: i32| {
            let memory = memory(&mut caller);
            let payload = std::mem::take(&mut caller.data_mut().payload);
            memory.write(&mut caller, op as usize, b"validate")?;
            memory.write(&mut caller, ptr as usize, &payload)?;
            caller.data_mut().payload = payload;
            Ok(())
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__guest_response",
        |mut caller: Caller<'_, Bare>, ptr: i32, len: i32| {
            let memory = memory(&mut caller);
            let mut response = vec![0; len as usize];
            memory.read(&caller, ptr as usize, &mut response)?;
            caller.data_mut().response = response;
            Ok(())
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__guest_error",
        |_: Caller<'_, Bare>, _: i32, _: i32| {},
    )?;
    let module = Module::from_file(&engine, module)?;
    // The fixtures only ever call `tracing/log`-free paths here; any other
    // import the module declares gets a trap, which would show as an error.
    linker.define_unknown_imports_as_traps(&module)?;
    let pre = linker.instantiate_pre(&module)?;
    // Kubewarden's payload, built once: the host builds it per evaluation.
    let payload = serde_json::json!({
        "request": serde_json::from_str::<serde_json::Value>(&request_json(request))?,
        "settings": settings,
    })
    .to_string()
    .into_bytes();
    runs(|| async {
        let mut builder = WasiCtx::builder();
        if wasi {
            builder
                .args(&["policy.wasm", "validate"])
                .stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(
                    payload.clone(),
                ))
                .stdout(wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(1 << 20));
        }
        let state = Bare {
            wasi: builder.build_p1(),
            payload: payload.clone(),
            response: Vec::new(),
        };
        let mut store = Store::new(&engine, state);
        let instance = pre.instantiate_async(&mut store).await?;
        if wasi {
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await?;
        } else {
            let init = instance.get_typed_func::<(), ()>(&mut store, "wapc_init")?;
            init.call_async(&mut store, ()).await?;
            let call = instance.get_typed_func::<(i32, i32), i32>(&mut store, "__guest_call")?;
            let len = store.data().payload.len() as i32;
            let ok = call.call_async(&mut store, (8, len)).await?;
            anyhow::ensure!(
                ok == 1 && !store.data().response.is_empty(),
                "guest call failed"
            );
        }
        std::hint::black_box(store.data().response.len());
        Ok(())
    })
    .await
}

/// The request as Kubernetes JSON (what the host hands Kubewarden modules).
fn request_json(request: &AdmissionRequest) -> String {
    serde_json::json!({
        "uid": request.uid,
        "kind": {"group": request.kind.group, "version": request.kind.version, "kind": request.kind.kind},
        "resource": {"group": request.resource.group, "version": request.resource.version, "resource": request.resource.resource},
        "operation": "CREATE",
        "userInfo": {"username": request.user_info.username, "uid": request.user_info.uid, "groups": request.user_info.groups},
        "namespace": request.namespace,
        "object": request.object.as_deref().map(serde_json::from_str::<serde_json::Value>).transpose().ok().flatten(),
        "dryRun": request.dry_run,
    })
    .to_string()
}
