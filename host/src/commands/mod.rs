//! One module per subcommand.

pub mod annotate;
pub mod bench;
pub mod compile;
pub mod inspect;
pub mod new;
mod run;
mod serve;
pub mod webhook_config;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use portcullis::admission::parse_review_or_request;
use portcullis::bindings::AdmissionRequest;
use portcullis::{CompiledCache, Engine, Environment, Limits, PolicySpec, config};

use crate::cli::{CacheArgs, Command, PolicySource, SettingsArgs};

pub fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve::serve(args),
        Command::Run(args) => runtime(None)?.block_on(run::run(args)),
        Command::New(args) => new::new(args),
        Command::Inspect(args) => runtime(None)?.block_on(inspect::inspect(args)),
        Command::Bench(args) => runtime(None)?.block_on(bench::bench(args)),
        Command::Compile(args) => compile::compile(args),
        Command::Annotate(args) => annotate::annotate(args),
        Command::WebhookConfig(args) => {
            runtime(None)?.block_on(webhook_config::webhook_config(args))
        }
    }
}

/// A multi-threaded runtime with `threads` workers (default: one per CPU).
fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(threads);
    }
    builder.enable_all().build()
}

/// The cache the user asked for: a given dir, the default dir, or none.
fn cache(args: &CacheArgs) -> Option<CompiledCache> {
    if args.no_cache {
        return None;
    }
    args.cache_dir
        .clone()
        .or_else(CompiledCache::default_dir)
        .map(CompiledCache::new)
}

/// The settings from a file or inline JSON, or `{}` when neither is given.
fn settings(args: &SettingsArgs) -> anyhow::Result<serde_json::Value> {
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

/// The policies of `source`: its policies.yml, or the embedded default.
fn policies(source: &PolicySource) -> anyhow::Result<Vec<PolicySpec>> {
    Ok(match &source.policies {
        Some(path) => config::load(path)?,
        None => config::parse(
            config::EMBEDDED_DEFAULT,
            &source.components_dir,
            "embedded default policies",
        )?,
    })
}

/// The file name without extension: how logs and errors name the policy.
fn policy_id(path: &Path) -> String {
    path.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "policy".to_owned())
}

/// One policy (component or Kubewarden module) loaded alone and one request
/// to give it: what `run` and `bench` evaluate.
struct SinglePolicy {
    environment: Environment,
    /// The policy's id in `environment` (see [`policy_id`]).
    id: String,
    request: AdmissionRequest,
}

impl SinglePolicy {
    /// Parses the settings, then reads the request file, then loads
    /// `component` with those settings. It may mutate: `run` and `bench` show
    /// what the policy does, mutations included, like `kwctl run`.
    async fn load(
        component: &Path,
        request: &Path,
        settings: &SettingsArgs,
        cache_args: &CacheArgs,
    ) -> anyhow::Result<Self> {
        let settings = self::settings(settings)?;
        let request_bytes = std::fs::read(request)
            .with_context(|| format!("cannot read the request {}", request.display()))?;
        let request = parse_review_or_request(&request_bytes)
            .with_context(|| format!("request {}", request.display()))?;
        let id = policy_id(component);
        let spec = PolicySpec::new(&id, component)
            .with_settings(settings)
            .allowed_to_mutate(true);
        let engine = Engine::new(Limits::default())?;
        let environment = Environment::load(&engine, [spec], cache(cache_args).as_ref()).await?;
        Ok(Self {
            environment,
            id,
            request,
        })
    }
}
