//! The Rego runtime per evaluation: a fresh instance of a template's
//! snapshot + one `evaluate`, through the host's store (limiter, WASI
//! context, output capture, deadline), side by side with regorus running
//! natively on the same template and input (the guest crate's own code,
//! built for the host), and what preparing a template costs.
//!
//! ```text
//! cargo bench -p portcullis --bench rego
//! ```
//! Prints two Markdown tables. Per-evaluation times are the benchmark
//! thread's CPU time (as in the other benches: steady while other work
//! shares the cores), medians of several runs.

use std::path::Path;
use std::time::Instant;

use portcullis::cache::CompiledCache;
use portcullis::rego::{GUEST, RegoModule, RegoRuntime, RegoSource};
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

/// How many distinct templates the memory row loads.
const TEMPLATES_FOR_MEMORY: usize = 5;

/// The process's resident set (`VmRSS`), in bytes.
fn resident_bytes() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() -> anyhow::Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let review: serde_json::Value = serde_json::from_slice(&std::fs::read(
        repo.join("bench/requests/labelled-pod.json"),
    )?)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let engine = Engine::new(Limits::default())?;
    let source = RegoSource {
        modules: vec![RegoModule {
            name: "required-labels.rego".into(),
            text: REQUIRED_LABELS.into(),
        }],
        rule: "violation".into(),
        rego_v0: true,
    };

    // Preparing: cold (instrument + snapshot + compile), then from the cache.
    let cache_dir = tempfile::tempdir()?;
    let cache = CompiledCache::new(cache_dir.path());
    let rego = RegoRuntime::new(&engine);
    let started = Instant::now();
    let cold = runtime.block_on(rego.prepare(&source, Some(&cache)))?;
    let cold_time = started.elapsed();
    let second = RegoSource {
        rule: "violation".into(),
        modules: vec![RegoModule {
            name: "other.rego".into(),
            text: REQUIRED_LABELS.replace("bench.requiredlabels", "bench.other"),
        }],
        ..source.clone()
    };
    let started = Instant::now();
    let another = runtime.block_on(rego.prepare(&second, None))?;
    let another_time = started.elapsed();
    let warm_rego = RegoRuntime::new(&engine);
    let started = Instant::now();
    let warm = runtime.block_on(warm_rego.prepare(&source, Some(&cache)))?;
    let warm_time = started.elapsed();
    let compiled_bytes = warm.component().serialize()?.len();
    drop(another);

    // Resident memory per added template: distinct templates (another
    // package name each) loaded from the cache and evaluated once, so their
    // code and snapshot are mapped and touched as serving would.
    let input = serde_json::json!({
        "review": review["request"],
        "parameters": serde_json::from_str::<serde_json::Value>(CASES[1].1)?,
    })
    .to_string();
    let limits = engine.limits().clone();
    let variants: Vec<RegoSource> = (0..TEMPLATES_FOR_MEMORY)
        .map(|n| RegoSource {
            modules: vec![RegoModule {
                name: format!("variant-{n}.rego"),
                text: REQUIRED_LABELS.replace("bench.requiredlabels", &format!("bench.variant{n}")),
            }],
            ..source.clone()
        })
        .collect();
    for variant in &variants {
        runtime.block_on(rego.prepare(variant, Some(&cache)))?;
    }
    let before = resident_bytes();
    let mut kept = Vec::new();
    for variant in &variants {
        let loaded = runtime.block_on(RegoRuntime::new(&engine).prepare(variant, Some(&cache)))?;
        runtime.block_on(loaded.evaluate(&engine, &limits, &input, None))?;
        kept.push(loaded);
    }
    let per_template = (resident_bytes() - before) as f64 / TEMPLATES_FOR_MEMORY as f64;
    drop(kept);

    println!("Preparing the template (one-off, wall time)\n");
    println!("| what | value |");
    println!("|---|---:|");
    println!("| guest component (embedded) | {} KB |", GUEST.len() / 1024);
    println!(
        "| first template, cold: instrument + compile the guest, init, snapshot, compile | {:.2} s |",
        cold_time.as_secs_f64()
    );
    println!(
        "| another template, cold: init, snapshot, compile | {:.2} s |",
        another_time.as_secs_f64()
    );
    println!(
        "| snapshot (wasm) | {} KB |",
        cold.snapshot_bytes().unwrap_or(0) / 1024
    );
    println!(
        "| compiled snapshot (cache entry) | {} KB |",
        compiled_bytes / 1024
    );
    println!(
        "| a template from the compiled cache (load + link) | {:.1} ms |",
        warm_time.as_secs_f64() * 1e3
    );
    println!(
        "| resident memory per added template (from the cache, evaluated once; {TEMPLATES_FOR_MEMORY} templates) | {:.1} MB |",
        per_template / 1e6
    );

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
        let input = serde_json::json!({
            "review": review["request"],
            "parameters": serde_json::from_str::<serde_json::Value>(parameters)?,
        })
        .to_string();
        // Both sides must agree before either is timed.
        let sandboxed = runtime.block_on(warm.evaluate(&engine, &limits, &input, None))?;
        let natively = native.evaluate(&input, None)?;
        assert_eq!(sandboxed, natively, "{case}");
        let found: Vec<serde_json::Value> = serde_json::from_str(&natively.unwrap())?;
        assert_eq!(found.len(), *expected, "{case}: {found:?}");

        let sandbox = median(&runtime.block_on(runs(|| async {
            std::hint::black_box(warm.evaluate(&engine, &limits, &input, None).await?);
            Ok(())
        }))?);
        // The native evaluations run when `runs` calls the closure, inside
        // its timing; the future only hands the result over.
        let prepared = median(&runtime.block_on(runs(|| {
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
            "| {case} | {sandbox:.1} | {prepared:.1} | {cloned:.1} | {:.2} |",
            sandbox / prepared
        );
    }
    Ok(())
}
