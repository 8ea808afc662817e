//! `portcullis run`: one request, one policy, the AdmissionResponse on stdout.

use std::process::ExitCode;

use anyhow::Context;
use portcullis::admission::{AdmissionResponse, parse_review_or_request};
use portcullis::{Engine, Environment, Limits, PolicySpec};

use crate::cli::RunArgs;

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let settings = super::settings(&args.settings)?;
    let request_bytes = std::fs::read(&args.request)
        .with_context(|| format!("cannot read the request {}", args.request.display()))?;
    let request = parse_review_or_request(&request_bytes)
        .with_context(|| format!("request {}", args.request.display()))?;

    let id = super::policy_id(&args.policy);
    // `run` shows what the policy does, mutations included, like `kwctl run`.
    let spec = PolicySpec::new(&id, &args.policy)
        .with_settings(settings)
        .allowed_to_mutate(true);
    let engine = Engine::new(Limits::default())?;
    let environment =
        Environment::load(&engine, [spec], super::cache(&args.cache).as_ref()).await?;
    let verdict = environment.validate(&id, &request).await?;
    let response =
        AdmissionResponse::from_verdict(&request.uid, verdict.response, request.object.as_deref())?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(ExitCode::SUCCESS)
}
