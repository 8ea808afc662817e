//! `portcullis run`: one request, one policy, the AdmissionResponse on stdout.

use std::process::ExitCode;

use portcullis::admission::AdmissionResponse;

use super::SinglePolicy;
use crate::cli::RunArgs;

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
