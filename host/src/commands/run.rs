//! `portcullis run`: one request, one policy, the AdmissionResponse on stdout.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use portcullis::admission::{AdmissionResponse, parse_review_or_request};
use portcullis::{Engine, Environment, Limits, PolicySpec};

use crate::cli::RunArgs;

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let settings = settings(&args)?;
    let request_bytes = std::fs::read(&args.request)
        .with_context(|| format!("cannot read the request {}", args.request.display()))?;
    let request = parse_review_or_request(&request_bytes)
        .with_context(|| format!("request {}", args.request.display()))?;

    let id = policy_id(&args.policy);
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

fn settings(args: &RunArgs) -> anyhow::Result<serde_json::Value> {
    let (text, origin) = match (&args.settings, &args.settings_json) {
        (Some(path), _) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the settings {}", path.display()))?,
            path.display().to_string(),
        ),
        (None, Some(inline)) => (inline.clone(), "--settings-json".to_owned()),
        (None, None) => return Ok(serde_json::json!({})),
    };
    serde_json::from_str(&text).with_context(|| format!("settings in {origin} are not valid JSON"))
}

/// The file name without extension: how logs and errors name the policy.
fn policy_id(path: &Path) -> String {
    path.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "policy".to_owned())
}
