//! `portcullis annotate`: writes Kubewarden's `metadata.yml` into a core
//! module as its `io.kubewarden.metadata` section, like `kwctl annotate`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use portcullis::runtime::kubewarden::annotate::{annotate as annotate_module, parse_metadata_yml};

/// Arguments of `portcullis annotate`.
#[derive(Debug, Args)]
pub struct AnnotateArgs {
    /// The core module (`.wasm`) to annotate.
    pub module: PathBuf,
    /// Kubewarden's metadata.yml: rules, mutating, executionMode, policyType,
    /// contextAwareResources, annotations, …
    #[arg(long, short = 'm')]
    pub metadata: PathBuf,
    /// Where to write the annotated module.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
}

/// Runs `portcullis annotate`.
pub fn annotate(args: AnnotateArgs) -> anyhow::Result<ExitCode> {
    let module = std::fs::read(&args.module)
        .with_context(|| format!("cannot read {}", args.module.display()))?;
    let text = std::fs::read_to_string(&args.metadata)
        .with_context(|| format!("cannot read {}", args.metadata.display()))?;
    let metadata =
        parse_metadata_yml(&text).with_context(|| args.metadata.display().to_string())?;
    let annotated =
        annotate_module(&module, metadata).with_context(|| args.module.display().to_string())?;
    // Written aside and renamed: a half-written module is never left behind.
    let partial = args.output.with_extension("wasm.partial");
    std::fs::write(&partial, &annotated)
        .and_then(|()| std::fs::rename(&partial, &args.output))
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!(
        "{}: annotated with {} -> {}",
        args.module.display(),
        args.metadata.display(),
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
