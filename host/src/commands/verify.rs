//! `portcullis verify`: runs Gatekeeper's `gator verify` suites with the
//! Rego runtime, printing what `gator verify` prints (a `go test`-like
//! summary) and failing as it fails.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use portcullis::runtime::rego::RegoRuntime;
use portcullis::runtime::rego::gatekeeper::verify::{SuiteResult, TestResult, Verifier};
use portcullis::{Engine, Limits};

use crate::cli::CacheArgs;

/// Arguments of `portcullis verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Suite files (`kind: Suite`), folders holding them, or `FOLDER/...`
    /// for every suite below a folder.
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// Print every test and case, not only the failures.
    #[arg(short, long)]
    pub verbose: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut suites = Vec::new();
    for path in &args.paths {
        suites.extend(suite_files(path)?);
    }
    let engine = Engine::new(Limits::default())?;
    let rego = RegoRuntime::new(&engine.sandbox());
    let cache = super::cache(&args.cache);
    let verifier = Verifier::new(&rego, engine.limits(), cache.as_ref());
    let mut failed = false;
    let mut out = String::new();
    for suite in &suites {
        let result = verifier.run(suite).await;
        failed |= result.failed();
        print_suite(&mut out, &result, args.verbose);
        print!("{out}");
        out.clear();
    }
    println!("{}", if failed { "FAIL" } else { "PASS" });
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The suite files `path` names: itself, the suites in a folder, or (with
/// a trailing `/...`) every suite below it, in name order. A folder's
/// YAML files that are not suites are skipped, as gator skips them.
fn suite_files(path: &str) -> anyhow::Result<Vec<PathBuf>> {
    let (root, recursive) = match path.strip_suffix("...") {
        Some(root) => (if root.is_empty() { "." } else { root }, true),
        None => (path, false),
    };
    let root = Path::new(root);
    if !root.is_dir() {
        anyhow::ensure!(root.exists(), "{}: no such file or folder", root.display());
        return Ok(vec![root.to_owned()]);
    }
    let mut found = Vec::new();
    collect(root, recursive, &mut found)?;
    found.sort();
    Ok(found)
}

fn collect(folder: &Path, recursive: bool, found: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(folder)? {
        let path = entry?.path();
        if path.is_dir() {
            if recursive {
                collect(&path, recursive, found)?;
            }
        } else if path
            .extension()
            .is_some_and(|extension| extension == "yaml" || extension == "yml")
            && is_suite(&path)
        {
            found.push(path);
        }
    }
    Ok(())
}

/// Whether the file declares itself a gator suite.
fn is_suite(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| {
        text.lines().any(|line| line.trim() == "kind: Suite")
            && text.contains("test.gatekeeper.sh/")
    })
}

/// The suite's lines, as gator's Go printer writes them.
fn print_suite(out: &mut String, suite: &SuiteResult, verbose: bool) {
    use std::fmt::Write as _;
    for test in &suite.tests {
        print_test(out, test, verbose);
    }
    let status = if suite.failed() { "FAIL" } else { "ok" };
    let _ = writeln!(
        out,
        "{status}\t{}\t{:?}",
        suite.path.display(),
        suite.runtime
    );
    if let Some(error) = &suite.error {
        let _ = writeln!(out, "  {error}");
    }
}

fn print_test(out: &mut String, test: &TestResult, verbose: bool) {
    use std::fmt::Write as _;
    if verbose {
        if test.skipped {
            let _ = writeln!(out, "=== SKIP  {}", test.name);
            return;
        }
        let _ = writeln!(out, "=== RUN   {}", test.name);
    }
    for case in &test.cases {
        if verbose {
            if case.skipped {
                let _ = writeln!(out, "    === SKIP  {}", case.name);
                continue;
            }
            let _ = writeln!(out, "    === RUN   {}", case.name);
        }
        match &case.error {
            Some(error) => {
                let _ = writeln!(
                    out,
                    "    --- FAIL: {}\t({:?})\n        {error}",
                    case.name, case.runtime
                );
            }
            None if verbose => {
                let _ = writeln!(out, "    --- PASS: {}\t({:?})", case.name, case.runtime);
            }
            None => {}
        }
    }
    if test.failed() {
        let _ = writeln!(out, "--- FAIL: {}\t({:?})", test.name, test.runtime);
        if let Some(error) = &test.error {
            let _ = writeln!(out, "  {error}");
        }
    } else if verbose {
        let _ = writeln!(out, "--- PASS: {}\t({:?})", test.name, test.runtime);
    }
}
