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
//! context, the `wapc` imports copying bytes (a host call's binding,
//! namespace, operation and payload are copied out; `tracing` calls succeed
//! with an empty answer, every other one fails with Kubewarden's denial
//! text), the payload built once, and the same pool as Portcullis's engine
//! (the default bytes kept resident per slot). The ratio is the cost of the
//! host's own work: the request turned into Kubewarden's JSON per
//! evaluation, limiter, output capture, deadline, host calls gated and
//! served (log lines re-emitted), the response parsed into a verdict.
//!
//! Raw policies go through the raw entry point (`Environment::validate_raw`,
//! what `/validate_raw` calls) with a document in Kubewarden's envelope.
//! Left out: `kw_sleeping` (its cost is the sleep it is told to take) and
//! `kw_context_aware` (its reads need a cluster).

use std::path::{Path, PathBuf};

use portcullis::admission::parse_review_or_request;
use portcullis::bindings::AdmissionRequest;
use portcullis::{Engine, Environment, Limits, PolicySpec, Verdict};
use wasmtime::{
    Caller, Config, Extern, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig,
    Store,
};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p1::WasiP1Ctx;

mod common;

use common::{RUN_SECONDS, RUNS, median, runs};

/// What a case evaluates.
#[derive(Clone, Copy)]
enum Input {
    /// An AdmissionRequest (review or bare; repo-relative file), through
    /// `validate`.
    Request(&'static str),
    /// A raw document, through `validate_raw`.
    Raw(&'static str),
}

/// The raw policy's document, in Kubewarden's `{"request": …}` envelope.
const RAW_DOCUMENT: &str = r#"{"request":{"user":"tonio","action":"eats","resource":"hay"}}"#;

/// Kubewarden module, input, settings, and the component with the same
/// policy (if any).
const CASES: &[(&str, Input, &str, Option<&str>)] = &[
    (
        "kw_pod_privileged",
        Input::Request("bench/requests/privileged-pod.json"),
        "{}",
        Some("pod_privileged"),
    ),
    (
        "kw_mutating",
        Input::Request("bench/requests/privileged-pod.json"),
        r#"{"annotations":{"team":"platform"}}"#,
        None,
    ),
    (
        "kw_required_labels",
        Input::Request("bench/requests/labelled-pod.json"),
        r#"{"labels":["team"]}"#,
        None,
    ),
    (
        "kw_wasi_command",
        Input::Request("bench/requests/labelled-pod.json"),
        r#"{"deniedLabels":["owner"]}"#,
        None,
    ),
    (
        "kw_raw",
        Input::Raw(RAW_DOCUMENT),
        r#"{"validUsers":["tonio"],"validActions":["eats"]}"#,
        None,
    ),
    // Two `tracing/log` host calls per evaluation.
    (
        "kw_logging",
        Input::Request("bench/requests/privileged-pod.json"),
        "{}",
        None,
    ),
    // One `net/v1/dns_lookup_host` call, not granted: a host error, then a
    // rejection carrying it.
    (
        "kw_capability",
        Input::Request("bench/requests/privileged-pod.json"),
        "{}",
        None,
    ),
];

/// One evaluation's input, parsed once.
enum Evaluate {
    Request(Box<AdmissionRequest>),
    Raw(String),
}

impl Evaluate {
    fn new(repo: &Path, input: Input) -> anyhow::Result<Self> {
        Ok(match input {
            Input::Request(file) => {
                let request = parse_review_or_request(&std::fs::read(repo.join(file))?)?;
                Self::Request(Box::new(request))
            }
            Input::Raw(document) => Self::Raw(document.to_owned()),
        })
    }

    /// What the module is handed as Kubewarden's `request`.
    fn kubewarden_request(&self) -> anyhow::Result<serde_json::Value> {
        Ok(match self {
            Self::Request(request) => serde_json::from_str(&request_json(request))?,
            // The envelope's content, as the host hands it.
            Self::Raw(document) => {
                serde_json::from_str::<serde_json::Value>(document)?["request"].take()
            }
        })
    }
}

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
    for (name, input, settings, component) in CASES {
        let module = policies.join(format!("{name}.wasm"));
        let input = Evaluate::new(&repo, *input)?;
        let settings: serde_json::Value = serde_json::from_str(settings)?;
        let host = median(&runtime.block_on(measure_host(&module, &input, &settings))?);
        let wasi = name.contains("wasi");
        let bare = median(&runtime.block_on(measure_bare(&module, &input, &settings, wasi))?);
        let native = match component {
            Some(component) => {
                let path = policies.join(format!("{component}.wasm"));
                let native = median(&runtime.block_on(measure_host(&path, &input, &settings))?);
                format!("{native:.1} ({component}.wasm)")
            }
            None => "—".to_owned(),
        };
        let kind = match (wasi, &input) {
            (true, _) => "WASI",
            (false, Evaluate::Raw(_)) => "waPC, raw",
            (false, Evaluate::Request(_)) => "waPC",
        };
        println!(
            "| {name}.wasm | {kind} | {} | {bare:.1} | {host:.1} | {:.2} | {native} |",
            std::fs::metadata(&module)?.len() / 1024,
            host / bare,
        );
    }
    Ok(())
}

/// The whole host path: `Environment::validate` (`validate_raw` for a raw
/// document). The policy is granted nothing.
async fn measure_host(
    policy: &Path,
    input: &Evaluate,
    settings: &serde_json::Value,
) -> anyhow::Result<Vec<f64>> {
    let engine = Engine::new(Limits::default())?;
    let spec = PolicySpec::new("bench", policy).with_settings(settings.clone());
    let env = Environment::load(&engine, [spec], None).await?;
    // Every case must give a verdict: an evaluation that fails (a trap, a
    // protocol error) would be measuring something else.
    let verdict: Verdict = match input {
        Evaluate::Request(request) => env.validate("bench", request).await?,
        Evaluate::Raw(document) => env.validate_raw("bench", document).await?,
    };
    std::hint::black_box(&verdict);
    runs(|| async {
        match input {
            Evaluate::Request(request) => {
                std::hint::black_box(env.validate("bench", request).await?);
            }
            Evaluate::Raw(document) => {
                std::hint::black_box(env.validate_raw("bench", document).await?);
            }
        }
        Ok(())
    })
    .await
}

/// A bare waPC host's per-store state.
struct Bare {
    wasi: WasiP1Ctx,
    payload: Vec<u8>,
    response: Vec<u8>,
    host_response: Vec<u8>,
    host_error: Vec<u8>,
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
    input: &Evaluate,
    settings: &serde_json::Value,
    wasi: bool,
) -> anyhow::Result<Vec<f64>> {
    // The same pool as Portcullis's engine: the default bytes kept resident.
    let mut pool = PoolingAllocationConfig::new();
    portcullis::engine::keep_resident(&mut pool, Limits::default().keep_resident_bytes);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
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
    // Host calls: the strings and payload copied out; `tracing` succeeds
    // with an empty answer (the line is dropped), anything else fails with
    // Kubewarden's denial (the fixtures are granted nothing).
    linker.func_wrap(
        "wapc",
        "__host_call",
        |mut caller: Caller<'_, Bare>,
         binding_ptr: i32,
         binding_len: i32,
         namespace_ptr: i32,
         namespace_len: i32,
         operation_ptr: i32,
         operation_len: i32,
         payload_ptr: i32,
         payload_len: i32|
         -> wasmtime::Result<i32> {
            let memory = memory(&mut caller);
            let read = |ptr: i32, len: i32| -> wasmtime::Result<Vec<u8>> {
                let mut bytes = vec![0; len as usize];
                memory.read(&caller, ptr as usize, &mut bytes)?;
                Ok(bytes)
            };
            let _binding = read(binding_ptr, binding_len)?;
            let namespace = read(namespace_ptr, namespace_len)?;
            let operation = read(operation_ptr, operation_len)?;
            std::hint::black_box(read(payload_ptr, payload_len)?);
            let state = caller.data_mut();
            state.host_response.clear();
            state.host_error.clear();
            if namespace == b"tracing" {
                return Ok(1);
            }
            state.host_error = format!(
                "Policy has not been granted access to the '{}/{}' host capability. The \
                 violation has been reported.",
                String::from_utf8_lossy(&namespace),
                String::from_utf8_lossy(&operation)
            )
            .into_bytes();
            Ok(0)
        },
    )?;
    for (len, bytes) in [
        ("__host_response_len", host_response as fn(&Bare) -> &[u8]),
        ("__host_error_len", host_error),
    ] {
        linker.func_wrap("wapc", len, move |caller: Caller<'_, Bare>| {
            bytes(caller.data()).len() as i32
        })?;
    }
    for (name, bytes) in [
        ("__host_response", host_response as fn(&Bare) -> &[u8]),
        ("__host_error", host_error),
    ] {
        linker.func_wrap(
            "wapc",
            name,
            move |mut caller: Caller<'_, Bare>, ptr: i32| -> wasmtime::Result<()> {
                let memory = memory(&mut caller);
                let answer = bytes(caller.data()).to_vec();
                memory.write(&mut caller, ptr as usize, &answer)?;
                Ok(())
            },
        )?;
    }
    let module = Module::from_file(&engine, module)?;
    // Any other import the module declares gets a trap, which would show as
    // an error.
    linker.define_unknown_imports_as_traps(&module)?;
    let pre = linker.instantiate_pre(&module)?;
    // Kubewarden's payload, built once: the host builds it per evaluation.
    let payload = serde_json::json!({
        "request": input.kubewarden_request()?,
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
            host_response: Vec::new(),
            host_error: Vec::new(),
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

fn host_response(bare: &Bare) -> &[u8] {
    &bare.host_response
}

fn host_error(bare: &Bare) -> &[u8] {
    &bare.host_error
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
