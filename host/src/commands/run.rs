//! `portcullis run`: one request, one policy, the AdmissionResponse on stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use portcullis::admission::AdmissionResponse;

use super::SinglePolicy;
use crate::cli::{CacheArgs, FetchArgs, SettingsArgs};

/// Arguments of `portcullis run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The policy (a component or a Kubewarden module): a `.wasm` file, or a `registry://`,
    /// `https://` or `file://` URI.
    #[arg(long, short = 'p')]
    pub policy: String,
    /// The request: an AdmissionReview or a bare AdmissionRequest (JSON).
    #[arg(long, short = 'r')]
    pub request: PathBuf,
    #[command(flatten)]
    pub settings: SettingsArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// Answer a context-aware policy from the Kubernetes objects in this file
    /// (YAML or JSON); the policy is granted every kind the file holds.
    #[arg(long)]
    pub resources: Option<PathBuf>,
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
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
        args.resources.as_deref(),
    )
    .await?;
    let verdict = environment.validate(&id, &request).await?;
    let response =
        AdmissionResponse::from_verdict(&request.uid, verdict.response, request.object.as_deref())?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(ExitCode::SUCCESS)
}
