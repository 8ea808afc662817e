//! `portcullis audit`: evaluates the objects already in the cluster with the
//! policies of a policies file, and publishes the results as Policy Reports.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use portcullis::audit::report::{self, Published};
use portcullis::audit::{AuditOptions, AuditRun, Auditor, Progress, ResultKind};
use portcullis::capabilities::kubernetes::live;
use portcullis::{Engine, Environment, Limits, PolicyMode};

use crate::cli::{CacheArgs, PolicySource};

/// Arguments of `portcullis audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The policies to audit with (those `serve` runs).
    #[command(flatten)]
    pub source: PolicySource,
    /// Kubeconfig of the cluster to audit [default: the in-cluster service
    /// account, else $KUBECONFIG or ~/.kube/config].
    #[arg(long, env = "PORTCULLIS_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// What to print on stdout.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Print the results only; write no PolicyReports.
    #[arg(long)]
    pub no_reports: bool,
    /// Objects asked for per list call.
    #[arg(long, default_value_t = 100)]
    pub page_size: u32,
    /// Evaluations at once [default: number of CPUs].
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Audit this namespace only (cluster-scoped objects are then skipped).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Leave this namespace's objects out (repeatable), e.g. Portcullis's own.
    #[arg(long = "ignore-namespace", value_name = "NAMESPACE")]
    pub ignore_namespaces: Vec<String>,
    /// Default evaluation timeout, in seconds (a policy's `timeoutEvalSeconds` overrides it).
    #[arg(long, env = "PORTCULLIS_POLICY_TIMEOUT", default_value_t = 2)]
    pub policy_timeout: u64,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// How `audit` prints its results.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    /// A summary per policy, then every failure and error.
    Table,
    /// Every result and the summary, as one JSON document.
    Json,
}

/// Most evaluations a run keeps going at once: the instances a policy may
/// have at a time.
const MAX_PARALLEL: usize = 32;

pub async fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let configuration = super::policies(&args.source)?;
    let configuration = super::fetch_remote(configuration, &args.source, &args.cache).await?;
    let client = live::client(args.kubeconfig.as_deref())
        .await
        .context("the audit reads a Kubernetes cluster")?;
    // Context-aware policies read the audited cluster, through caches.
    let capabilities = super::cluster_capabilities(client.clone(), &configuration).await?;
    let engine = Engine::with_capabilities(
        Limits {
            timeout: Duration::from_secs(args.policy_timeout.max(1)),
            ..Limits::default()
        },
        capabilities,
    )?;
    let cache = super::cache(&args.cache);
    let environment =
        Environment::load_configuration(&engine, configuration, cache.as_ref()).await?;
    let auditors = Auditor::every(&environment);
    let parallel = args
        .parallel
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, MAX_PARALLEL);
    let options = AuditOptions {
        page_size: args.page_size,
        concurrency: parallel,
        namespace: args.namespace.clone(),
        ignored_namespaces: args.ignore_namespaces.clone(),
    };
    let progress = Arc::new(Progress::default());
    let line = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(progress_line(Arc::clone(&progress))));
    let run = portcullis::audit::run(&client, &auditors, &options, &progress).await;
    if let Some(line) = line {
        line.abort();
        eprint!("\r\x1b[2K");
    }
    let run = run.context("cannot discover what the API server serves")?;
    let published = if args.no_reports {
        None
    } else {
        let reports = report::build(&run.results);
        Some(report::publish(&client, &reports, args.namespace.as_deref()).await?)
    };
    let mut stdout = std::io::stdout().lock();
    match args.output {
        Output::Table => print_table(&mut stdout, &auditors, &run, published)?,
        Output::Json => print_json(&mut stdout, &auditors, &run, published)?,
    }
    for unserved in &run.unserved {
        eprintln!("note: {unserved}");
    }
    for problem in &run.problems {
        eprintln!("error: {problem}");
    }
    // Every object judged is a successful audit, however many fail; what
    // could not be listed is not.
    Ok(if run.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Rewrites one line on the terminal four times a second.
async fn progress_line(progress: Arc<Progress>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        eprint!(
            "\r\x1b[2Kauditing: resource {}/{}, {} objects, {} evaluations ({} fail, {} error)",
            load(&progress.resources_done),
            load(&progress.resources),
            load(&progress.objects),
            load(&progress.evaluations),
            load(&progress.failed),
            load(&progress.errors),
        );
        let _ = std::io::stderr().flush();
    }
}

/// Counts per policy, in id order.
fn per_policy(auditors: &[Arc<Auditor>], run: &AuditRun) -> Vec<PolicySummary> {
    auditors
        .iter()
        .map(|auditor| {
            let id = auditor.id();
            let count = |kind| {
                run.results
                    .iter()
                    .filter(|r| r.policy == id && r.result == kind)
                    .count()
            };
            let excluded = run
                .excluded
                .iter()
                .find(|(excluded, _)| excluded == id)
                .map(|(_, why)| why.reason());
            PolicySummary {
                policy: id.to_owned(),
                mode: auditor.mode(),
                pass: count(ResultKind::Pass),
                fail: count(ResultKind::Fail),
                error: count(ResultKind::Error),
                skipped: excluded,
            }
        })
        .collect()
}

#[derive(serde::Serialize)]
struct PolicySummary {
    policy: String,
    mode: PolicyMode,
    pass: usize,
    fail: usize,
    error: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<&'static str>,
}

fn objects_per_second(run: &AuditRun) -> f64 {
    run.objects as f64 / run.elapsed.as_secs_f64().max(1e-9)
}

fn print_table(
    out: &mut impl Write,
    auditors: &[Arc<Auditor>],
    run: &AuditRun,
    published: Option<Published>,
) -> std::io::Result<()> {
    let summaries = per_policy(auditors, run);
    let width = summaries
        .iter()
        .map(|s| s.policy.len())
        .max()
        .unwrap_or(0)
        .max("POLICY".len());
    writeln!(
        out,
        "{:<width$}  {:<7}  {:>6}  {:>6}  {:>6}",
        "POLICY", "MODE", "PASS", "FAIL", "ERROR"
    )?;
    for s in &summaries {
        match s.skipped {
            Some(why) => writeln!(
                out,
                "{:<width$}  {:<7}  skipped: {why}",
                s.policy,
                s.mode.as_str()
            )?,
            None => writeln!(
                out,
                "{:<width$}  {:<7}  {:>6}  {:>6}  {:>6}",
                s.policy,
                s.mode.as_str(),
                s.pass,
                s.fail,
                s.error
            )?,
        }
    }
    let findings: Vec<_> = run
        .results
        .iter()
        .filter(|r| r.result != ResultKind::Pass)
        .collect();
    if !findings.is_empty() {
        let rows: Vec<[String; 4]> = findings
            .iter()
            .map(|r| {
                let object = match &r.object.namespace {
                    Some(ns) => format!("{} {ns}/{}", r.object.kind, r.object.name),
                    None => format!("{} {}", r.object.kind, r.object.name),
                };
                [
                    r.result.as_str().to_owned(),
                    r.policy.clone(),
                    object,
                    r.message.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let header = ["RESULT", "POLICY", "OBJECT", "MESSAGE"].map(str::to_owned);
        let widths: Vec<usize> = (0..3)
            .map(|i| {
                std::iter::once(&header)
                    .chain(&rows)
                    .map(|row| row[i].len())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        writeln!(out)?;
        for row in std::iter::once(&header).chain(&rows) {
            writeln!(
                out,
                "{:<w0$}  {:<w1$}  {:<w2$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            )?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "{} objects in {} resources, {} evaluations in {:.1} s ({:.0} objects/s)",
        run.objects,
        run.resources,
        run.results.len(),
        run.elapsed.as_secs_f64(),
        objects_per_second(run)
    )?;
    match published {
        Some(p) => writeln!(
            out,
            "reports: {} written, {} stale removed ({})",
            p.written,
            p.removed,
            report::API_VERSION
        )?,
        None => writeln!(out, "reports: not written (--no-reports)")?,
    }
    if !run.problems.is_empty() {
        writeln!(out, "problems: {} (see stderr)", run.problems.len())?;
    }
    Ok(())
}

fn print_json(
    out: &mut impl Write,
    auditors: &[Arc<Auditor>],
    run: &AuditRun,
    published: Option<Published>,
) -> std::io::Result<()> {
    let document = serde_json::json!({
        "summary": {
            "objects": run.objects,
            "resources": run.resources,
            "evaluations": run.results.len(),
            "seconds": run.elapsed.as_secs_f64(),
            "objectsPerSecond": objects_per_second(run),
            "reports": published,
            "unserved": run.unserved,
            "problems": run.problems,
        },
        "policies": per_policy(auditors, run),
        "results": run.results,
    });
    serde_json::to_writer_pretty(&mut *out, &document)?;
    writeln!(out)
}
