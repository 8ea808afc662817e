//! The Rego runtime: what preparing a template costs (cold, warm), the
//! resident memory each added template costs and how it moves with the
//! number of workers, and per evaluation a fresh instance of a template's
//! snapshot + one `evaluate` through the host's store (limiter, WASI
//! context, output capture, deadline), side by side with regorus running
//! natively on the same template and input (the guest crate's own code,
//! built for the host).
//!
//! ```text
//! cargo bench -p portcullis --bench rego
//! ```
//! Prints Markdown tables. Per-evaluation times are the benchmark thread's
//! CPU time (as in the other benches: steady while other work shares the
//! cores), medians of several runs. Memory is measured in a child process
//! (this binary again) that starts from the warm compiled cache, so nothing
//! the preparation allocated and freed hides what templates cost.

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use portcullis::cache::CompiledCache;
use portcullis::runtime::rego::{GUEST, PreparedRego, RegoModule, RegoRuntime, RegoSource};
use portcullis::{Engine, Limits};
use portcullis_rego_guest::{Module, Policy};

mod common;

use common::{RUN_SECONDS, RUNS, median, runs};

/// A required-labels template of our own, in Gatekeeper's v0 Rego: each
/// label the parameters require must be there, and match its regex if one
/// is given.
const REQUIRED_LABELS: &str = r#"package portcullis.bench.requiredlabels

violation[{"msg": msg, "details": {"missing": missing}}] {
  provided := {key | input.review.object.metadata.labels[key]}
  required := {key | key := input.parameters.labels[_].key}
  missing := required - provided
  count(missing) > 0
  msg := sprintf("missing required labels: %v", [missing])
}

violation[{"msg": msg}] {
  value := input.review.object.metadata.labels[key]
  wanted := input.parameters.labels[_]
  wanted.key == key
  pattern := object.get(wanted, "allowedRegex", "")
  pattern != ""
  not regex.match(pattern, value)
  msg := sprintf("label %v=%v does not match %v", [key, value, pattern])
}
"#;

/// Parameters and the expected number of violations for each case.
const CASES: &[(&str, &str, usize)] = &[
    (
        "allowed (labels present, regex matches)",
        r#"{"labels": [{"key": "owner", "allowedRegex": "^[a-z]+$"}, {"key": "env"}]}"#,
        0,
    ),
    (
        "denied (a label missing)",
        r#"{"labels": [{"key": "owner"}, {"key": "team"}]}"#,
        1,
    ),
];

/// How many distinct templates the memory rows load.
const TEMPLATES: usize = 20;
/// The worker counts RSS is read at.
const WORKERS: std::ops::RangeInclusive<usize> = 1..=8;
/// Rounds over every template each worker runs per worker count.
const ROUNDS: usize = 30;

/// The child process's first argument: measure memory with the compiled
/// cache in the second.
const MEMORY_CHILD: &str = "--memory-child";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, cache, ..] = args.as_slice()
        && flag == MEMORY_CHILD
    {
        return memory_child(Path::new(cache));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let engine = Engine::new(Limits::default())?;
    let cache_dir = tempfile::tempdir()?;
    let cache = CompiledCache::new(cache_dir.path());
    let input = input(CASES[1].1)?;

    // Preparing: the first template compiles the interpreter's code; the
    // next ones only snapshot. Then both again from the cache.
    let rego = RegoRuntime::new(&engine.sandbox());
    let started = Instant::now();
    let first = runtime.block_on(rego.prepare(&variant(0), Some(&cache)))?;
    let first_cold = started.elapsed();
    let mut others_cold = Vec::new();
    for n in 1..TEMPLATES {
        let started = Instant::now();
        runtime.block_on(rego.prepare(&variant(n), Some(&cache)))?;
        others_cold.push(started.elapsed().as_secs_f64());
    }
    let warm_rego = RegoRuntime::new(&engine.sandbox());
    let started = Instant::now();
    let warm = runtime.block_on(warm_rego.prepare(&variant(0), Some(&cache)))?;
    let first_warm = started.elapsed();
    let started = Instant::now();
    runtime.block_on(warm_rego.prepare(&variant(1), Some(&cache)))?;
    let other_warm = started.elapsed();
    let data_module_bytes = warm.snapshot().module().serialize()?.len();
    // Both sides agree before anything is timed.
    let sandboxed = runtime.block_on(warm.evaluate(engine.limits(), &input, None))?;
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&sandboxed.unwrap())?.len(),
        1
    );

    println!("Preparing a template (one-off, wall time)\n");
    println!("| what | value |");
    println!("|---|---:|");
    println!(
        "| Rego guest (core module, embedded) | {} KB |",
        GUEST.len() / 1024
    );
    println!(
        "| first template, cold: split + compile the guest's code, init, snapshot, compile | {:.2} s |",
        first_cold.as_secs_f64()
    );
    println!(
        "| another template, cold: init, snapshot, compile its data module (median of {}) | {:.1} ms |",
        others_cold.len(),
        median(&others_cold) * 1e3
    );
    println!(
        "| snapshot: bytes of memory kept (non-zero pages) | {} KB |",
        first.snapshot_bytes().unwrap_or(0) / 1024
    );
    println!(
        "| compiled data module (cache entry) | {} KB |",
        data_module_bytes / 1024
    );
    println!(
        "| first template, warm: the code and the snapshot from the cache | {:.1} ms |",
        first_warm.as_secs_f64() * 1e3
    );
    println!(
        "| another template, warm: its snapshot from the cache | {:.2} ms |",
        other_warm.as_secs_f64() * 1e3
    );
    drop((first, warm, rego, warm_rego));

    memory(cache_dir.path())?;
    evaluations(&runtime, &engine, &cache)
}

/// The template, another package (and module name) for each `n`.
fn variant(n: usize) -> RegoSource {
    RegoSource {
        modules: vec![RegoModule {
            name: format!("variant-{n}.rego"),
            text: REQUIRED_LABELS.replace("bench.requiredlabels", &format!("bench.variant{n}")),
            origin: None,
        }],
        rule: "violation".into(),
        rego_v0: true,
    }
}

/// The input of a review of the bench's typical Pod with `parameters`.
fn input(parameters: &str) -> anyhow::Result<String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let review: serde_json::Value = serde_json::from_slice(&std::fs::read(
        repo.join("bench/requests/labelled-pod.json"),
    )?)?;
    Ok(serde_json::json!({
        "review": review["request"],
        "parameters": serde_json::from_str::<serde_json::Value>(parameters)?,
    })
    .to_string())
}

/// Runs the memory measurement in a child process and prints its tables.
fn memory(cache: &Path) -> anyhow::Result<()> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .arg(MEMORY_CHILD)
        .arg(cache)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "the memory child failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    print!("{}", String::from_utf8_lossy(&output.stdout));
    Ok(())
}

/// The child: loads templates from the warm cache, evaluating each once,
/// reading the process's memory after the first and after all; then runs
/// 1..8 workers over all of them and reads it again.
fn memory_child(cache: &Path) -> anyhow::Result<()> {
    let cache = CompiledCache::new(cache);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let engine = Engine::new(Limits::default())?;
    let limits = engine.limits().clone();
    let input = input(CASES[1].1)?;
    let rego = RegoRuntime::new(&engine.sandbox());
    let mut loaded: Vec<Arc<PreparedRego>> = Vec::new();
    let mut load = |n: usize| -> anyhow::Result<()> {
        let prepared = runtime.block_on(rego.prepare(&variant(n), Some(&cache)))?;
        runtime.block_on(prepared.evaluate(&limits, &input, None))?;
        loaded.push(prepared);
        Ok(())
    };
    load(0)?;
    let one = Memory::read();
    for n in 1..TEMPLATES {
        load(n)?;
    }
    let all = Memory::read();
    let added = (TEMPLATES - 1) as f64;
    println!(
        "\nResident memory per added template (a child process: the code and {TEMPLATES} templates from the warm cache, each evaluated once)\n"
    );
    println!("| what | 1 template | {TEMPLATES} templates | per added template |");
    println!("|---|---:|---:|---:|");
    println!(
        "| RSS (VmRSS) | {:.1} MB | {:.1} MB | {:.0} KB |",
        one.rss as f64 / 1e6,
        all.rss as f64 / 1e6,
        (all.rss - one.rss) as f64 / added / 1e3
    );
    println!(
        "| memory images (memfd, outside RSS until mapped) | {:.1} MB | {:.1} MB | {:.0} KB |",
        one.images as f64 / 1e6,
        all.images as f64 / 1e6,
        (all.images - one.images) as f64 / added / 1e3
    );
    println!(
        "| RSS + images | {:.1} MB | {:.1} MB | {:.0} KB |",
        (one.rss + one.images) as f64 / 1e6,
        (all.rss + all.images) as f64 / 1e6,
        ((all.rss + all.images) - (one.rss + one.images)) as f64 / added / 1e3
    );

    // Workers: each a thread evaluating every template in turn; RSS read
    // while all of them run.
    let loaded = Arc::new(loaded);
    let mut rows = Vec::new();
    for workers in WORKERS {
        let barrier = Arc::new(Barrier::new(workers + 1));
        let threads: Vec<_> = (0..workers)
            .map(|_| {
                let (loaded, barrier) = (loaded.clone(), barrier.clone());
                let (limits, input) = (limits.clone(), input.clone());
                std::thread::spawn(move || -> anyhow::Result<()> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    for round in 0..ROUNDS {
                        for prepared in loaded.iter() {
                            runtime.block_on(prepared.evaluate(&limits, &input, None))?;
                        }
                        if round == 0 {
                            barrier.wait();
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        barrier.wait();
        let mut samples = Vec::new();
        while threads.iter().any(|thread| !thread.is_finished()) {
            samples.push(Memory::read().rss as f64);
            std::thread::sleep(Duration::from_millis(20));
        }
        for thread in threads {
            thread.join().expect("a worker panicked")?;
        }
        rows.push((workers, median(&samples), samples.len()));
    }
    println!(
        "\nRSS over workers ({TEMPLATES} templates; each worker a thread evaluating them all in turn, {ROUNDS} rounds; median of the samples while all run)\n"
    );
    println!("| workers | RSS (MB) | samples |");
    println!("|---:|---:|---:|");
    for (workers, rss, samples) in &rows {
        println!("| {workers} | {:.1} | {samples} |", rss / 1e6);
    }
    let max = rows.iter().map(|row| row.1).fold(f64::MIN, f64::max);
    let min = rows.iter().map(|row| row.1).fold(f64::MAX, f64::min);
    println!("\nmax/min of RSS over workers 1..8: **{:.3}**", max / min);
    Ok(())
}

/// The process's resident set and the memory images wasmtime made.
struct Memory {
    /// `VmRSS`, bytes.
    rss: i64,
    /// Bytes allocated to the memfd files wasmtime keeps memory images in
    /// (shared memory: counted in RSS only where mapped and touched).
    images: i64,
}

impl Memory {
    fn read() -> Self {
        use std::os::unix::fs::MetadataExt as _;
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let rss = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            .map_or(0, |kb| kb * 1024);
        let images = std::fs::read_dir("/proc/self/fd")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|target| target.to_string_lossy().contains("wasm-memory-image"))
            })
            .filter_map(|fd| std::fs::metadata(fd.path()).ok())
            .map(|metadata| metadata.blocks() as i64 * 512)
            .sum();
        Self { rss, images }
    }
}

/// Per evaluation, sandboxed and native, printed as a table.
fn evaluations(
    runtime: &tokio::runtime::Runtime,
    engine: &Engine,
    cache: &CompiledCache,
) -> anyhow::Result<()> {
    let source = RegoSource {
        modules: vec![RegoModule {
            name: "required-labels.rego".into(),
            text: REQUIRED_LABELS.into(),
            origin: None,
        }],
        rule: "violation".into(),
        rego_v0: true,
    };
    let prepared =
        runtime.block_on(RegoRuntime::new(&engine.sandbox()).prepare(&source, Some(cache)))?;
    let limits = engine.limits().clone();
    println!(
        "\nPer evaluation: {RUNS} runs of ~{RUN_SECONDS} s after a warm-up, one thread, medians (µs of CPU)\n"
    );
    println!(
        "| case | portcullis: fresh instance + evaluate | native regorus, prepared engine | native, prepared engine cloned per evaluation | sandbox / native |"
    );
    println!("|---|---:|---:|---:|---:|");
    let mut native = Policy::new(
        vec![Module {
            name: "required-labels.rego".into(),
            text: REQUIRED_LABELS.into(),
        }],
        "violation",
        true,
    )?;
    for (case, parameters, expected) in CASES {
        let input = input(parameters)?;
        // Both sides must agree before either is timed.
        let sandboxed = runtime.block_on(prepared.evaluate(&limits, &input, None))?;
        let natively = native.evaluate(&input, None)?;
        assert_eq!(sandboxed, natively, "{case}");
        let found: Vec<serde_json::Value> = serde_json::from_str(&natively.unwrap())?;
        assert_eq!(found.len(), *expected, "{case}: {found:?}");

        let sandbox = median(&runtime.block_on(runs(|| async {
            std::hint::black_box(prepared.evaluate(&limits, &input, None).await?);
            Ok(())
        }))?);
        // The native evaluations run when `runs` calls the closure, inside
        // its timing; the future only hands the result over.
        let native_prepared = median(&runtime.block_on(runs(|| {
            let result = native.evaluate(&input, None);
            async move {
                std::hint::black_box(result?);
                Ok(())
            }
        }))?);
        let cloned = median(&runtime.block_on(runs(|| {
            let result = native.clone().evaluate(&input, None);
            async move {
                std::hint::black_box(result?);
                Ok(())
            }
        }))?);
        println!(
            "| {case} | {sandbox:.1} | {native_prepared:.1} | {cloned:.1} | {:.2} |",
            sandbox / native_prepared
        );
    }
    Ok(())
}
