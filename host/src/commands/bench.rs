//! `portcullis bench`: how long one policy takes on one request, with
//! instantiation and evaluation measured apart (like `kwctl bench`), over many
//! runs, each in a fresh instance exactly as `serve` evaluates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use portcullis::runtime::CompileOrigin;
use serde::Serialize;

use super::SinglePolicy;
use super::inspect::Output;
use crate::cli::{CacheArgs, FetchArgs, SettingsArgs};

/// Arguments of `portcullis bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The policy (a component or a Kubewarden module): a `.wasm` file, or a `registry://`,
    /// `https://` or `file://` URI.
    pub policy: String,
    /// The request: an AdmissionReview or a bare AdmissionRequest (JSON).
    #[arg(long, short = 'r')]
    pub request: PathBuf,
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Measured evaluations.
    #[arg(long, short = 'n', default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Evaluations run first and not measured (warm caches, page in the pool).
    #[arg(long, default_value_t = 20)]
    pub warmup: u32,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// The figures of one phase, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct Summary {
    min_us: f64,
    median_us: f64,
    p99_us: f64,
    max_us: f64,
    mean_us: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    /// The policy as given (the JSON key predates other kinds).
    component: String,
    /// Its kind's name (`component`, `kubewarden-wapc`, `kubewarden-wasi`, ...).
    kind: &'static str,
    digest: String,
    size: usize,
    /// `compiled` or `cache`.
    origin: &'static str,
    compile_ms: f64,
    runs: u32,
    warmup: u32,
    allowed: bool,
    message: Option<String>,
    instantiate: Summary,
    evaluate: Summary,
    total: Summary,
}

/// Runs `portcullis bench`.
pub async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let SinglePolicy {
        environment,
        id,
        request,
    } = SinglePolicy::load(
        &args.policy,
        &args.request,
        &args.settings,
        &args.cache,
        &args.fetch,
        None,
    )
    .await?;
    let policy = environment.policy(&id).expect("the policy just loaded");

    for _ in 0..args.warmup {
        policy.validate(&request).await?;
    }
    let runs = args.runs as usize;
    let mut instantiate = Vec::with_capacity(runs);
    let mut evaluate = Vec::with_capacity(runs);
    let mut total = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let verdict = policy.validate(&request).await?;
        instantiate.push(verdict.instantiation);
        evaluate.push(verdict.total.saturating_sub(verdict.instantiation));
        total.push(verdict.total);
        last = Some(verdict.response);
    }
    let response = last.expect("at least one run");
    let code = policy.code();
    let facts = code.facts();
    let report = Report {
        component: args.policy.clone(),
        kind: code.kind(),
        digest: facts.digest.to_string(),
        size: facts.size,
        origin: match facts.origin {
            CompileOrigin::Compiled => "compiled",
            CompileOrigin::Cache => "cache",
        },
        compile_ms: facts.compile_time.as_secs_f64() * 1e3,
        runs: args.runs,
        warmup: args.warmup,
        allowed: response.allowed,
        message: response.message,
        instantiate: summarize(instantiate),
        evaluate: summarize(evaluate),
        total: summarize(total),
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => print!("{}", text(&report)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Min, nearest-rank median and 99th percentile, max and mean of `samples`
/// (not empty).
fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    Summary {
        min_us: us(samples[0]),
        median_us: us(percentile(&samples, 50)),
        p99_us: us(percentile(&samples, 99)),
        max_us: us(samples[samples.len() - 1]),
        mean_us: us(mean),
    }
}

/// The nearest-rank `p`th percentile of `sorted` (not empty): the smallest
/// sample that at least `p` % of the samples do not exceed.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn text(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let verdict = match (&report.allowed, &report.message) {
        (true, _) => "allowed".to_owned(),
        (false, Some(message)) => format!("rejected: {message}"),
        (false, None) => "rejected".to_owned(),
    };
    // Writing to a String cannot fail.
    let _ = writeln!(out, "policy     {}", report.component);
    let _ = writeln!(out, "kind       {}", report.kind);
    let _ = writeln!(out, "digest     {}", report.digest);
    let _ = writeln!(out, "size       {} bytes", report.size);
    let _ = writeln!(
        out,
        "prepared   {:.1} ms ({})",
        report.compile_ms,
        if report.origin == "cache" {
            "loaded from the compiled cache"
        } else {
            "compiled"
        }
    );
    let _ = writeln!(out, "verdict    {verdict}");
    let _ = writeln!(
        out,
        "runs       {} (after {} unmeasured), each in a fresh instance\n",
        report.runs, report.warmup
    );
    let _ = writeln!(
        out,
        "{:<12} {:>11} {:>11} {:>11} {:>11} {:>11}",
        "", "min", "median", "p99", "max", "mean"
    );
    for (name, s) in [
        ("instantiate", report.instantiate),
        ("evaluate", report.evaluate),
        ("total", report.total),
    ] {
        let _ = writeln!(
            out,
            "{name:<12} {:>11} {:>11} {:>11} {:>11} {:>11}",
            micros(s.min_us),
            micros(s.median_us),
            micros(s.p99_us),
            micros(s.max_us),
            micros(s.mean_us)
        );
    }
    out
}

fn micros(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&sorted, 50), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 99), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 100), Duration::from_millis(100));
        let one = ms(&[7]);
        assert_eq!(percentile(&one, 50), Duration::from_millis(7));
        assert_eq!(percentile(&one, 99), Duration::from_millis(7));
        let three = ms(&[1, 2, 30]);
        assert_eq!(percentile(&three, 50), Duration::from_millis(2));
        assert_eq!(percentile(&three, 99), Duration::from_millis(30));
    }

    #[test]
    fn a_summary_sorts_its_samples() {
        let summary = summarize(ms(&[5, 1, 3]));
        assert_eq!(summary.min_us, 1000.0);
        assert_eq!(summary.median_us, 3000.0);
        assert_eq!(summary.max_us, 5000.0);
        assert_eq!(summary.mean_us, 3000.0);
    }
}
