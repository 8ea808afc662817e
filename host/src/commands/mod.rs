//! One module per subcommand.

pub mod annotate;
pub mod audit;
pub mod bench;
pub mod compile;
pub mod inspect;
pub mod new;
mod rbac;
pub mod registry;
mod reload;
pub mod run;
pub mod serve;
pub mod sign;
pub mod verify;
pub mod webhook_config;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use portcullis::admission::parse_review_or_request;
use portcullis::bindings::AdmissionRequest;
use portcullis::capabilities::kubernetes::live::{self, LiveCluster};
use portcullis::capabilities::kubernetes::offline::ResourcesFile;
use portcullis::capabilities::{
    Capabilities, ContextAwareResource, Grants, HostCapabilities, Kubernetes,
};
use portcullis::source::{
    Credentials, DownloadStore, Fetch, Fetcher, Location, Source, Sources, VerificationConfig,
};
use portcullis::{CompiledCache, Configuration, Engine, Environment, Limits, PolicySpec, config};

use crate::cli::{CacheArgs, ClusterArgs, Command, FetchArgs, PolicySource, SettingsArgs};

pub fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve::serve(args),
        Command::Run(args) => runtime(None)?.block_on(run::run(args)),
        Command::New(args) => new::new(args),
        Command::Inspect(args) => runtime(None)?.block_on(inspect::inspect(args)),
        Command::Bench(args) => runtime(None)?.block_on(bench::bench(args)),
        Command::Compile(args) => runtime(None)?.block_on(compile::compile(args)),
        Command::Pull(args) => runtime(None)?.block_on(registry::pull(args)),
        Command::Push(args) => runtime(None)?.block_on(registry::push(args)),
        Command::Digest(args) => runtime(None)?.block_on(registry::digest(args)),
        Command::Sign(args) => runtime(None)?.block_on(sign::sign(args)),
        Command::VerifySignature(args) => runtime(None)?.block_on(sign::verify_signature(args)),
        Command::Annotate(args) => annotate::annotate(args),
        Command::Audit(args) => runtime(None)?.block_on(audit::audit(args)),
        Command::Verify(args) => runtime(None)?.block_on(verify::verify(args)),
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

/// The fetcher the user asked for: the download store (given, or under
/// `cache_dir`, or under the default cache directory), `sources.yml`, the
/// Docker credentials and the verification config.
fn fetcher(args: &FetchArgs, cache_dir: Option<&Path>) -> anyhow::Result<Fetcher> {
    let dir = match &args.policies_download_dir {
        Some(dir) => dir.clone(),
        None => DownloadStore::default_dir(
            &cache_dir
                .map(Path::to_owned)
                .or_else(CompiledCache::default_dir)
                .context(
                    "no download directory: pass --policies-download-dir \
                     (neither XDG_CACHE_HOME nor HOME is set)",
                )?,
        ),
    };
    let sources = match &args.sources_path {
        Some(path) => Sources::load(path)?,
        None => Sources::default(),
    };
    let credentials = Credentials::new(args.docker_config_json_path.clone());
    let fetcher = Fetcher::new(DownloadStore::new(dir), sources, credentials)
        .with_deadline(Duration::from_secs(args.fetch_timeout));
    Ok(match &args.verification_path {
        Some(path) => fetcher.with_verification(VerificationConfig::load_supported(path)?),
        None => fetcher,
    })
}

/// Parses a module location given on the command line (a path, or a
/// `registry://`, `https://`, `file://` URI, or a bare reference).
fn source_arg(text: &str) -> anyhow::Result<Source> {
    Ok(Source::parse(text, Path::new(""))?)
}

/// The local file of the module `text` names, fetched first when remote
/// (with how it was fetched).
async fn fetch_arg(
    text: &str,
    args: &FetchArgs,
    cache_dir: Option<&Path>,
) -> anyhow::Result<(Source, PathBuf, Option<Fetch>)> {
    let source = source_arg(text)?;
    if let Location::File(path) = source.location() {
        // Used in place; reading errors name the file as they always did.
        return Ok((source.clone(), path.clone(), None));
    }
    let fetch = fetcher(args, cache_dir)?
        .fetch(&source)
        .await
        .with_context(|| format!("cannot obtain {source}"))?;
    Ok((source, fetch.path.clone(), Some(fetch)))
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

/// `configuration` with each remote module (of its policies and its groups'
/// members) fetched into the download store (all at once; every failure
/// reported).
async fn fetch_remote(
    mut configuration: Configuration,
    source: &PolicySource,
    cache: &CacheArgs,
) -> anyhow::Result<Configuration> {
    // Read even when no module is remote: a malformed file is refused at
    // start, not when a registry policy is first added.
    if let Some(path) = &source.fetch.verification_path {
        VerificationConfig::load_supported(path)?;
    }
    if !configuration
        .specs()
        .any(|spec| spec.source.as_ref().is_some_and(Source::is_remote))
    {
        return Ok(configuration);
    }
    let fetcher = fetcher(&source.fetch, cache.cache_dir.as_deref())?;
    let specs: Vec<PolicySpec> = configuration.specs().cloned().collect();
    let fetched = fetcher.fetch_policies(specs).await?;
    // `fetch_policies` keeps the order it was given.
    for (spec, fetched) in configuration.specs_mut().zip(fetched) {
        *spec = fetched;
    }
    Ok(configuration)
}

/// The policies and groups of `source`: its policies.yml, or the embedded
/// default.
fn policies(source: &PolicySource) -> anyhow::Result<Configuration> {
    Ok(match &source.policies {
        Some(path) => config::load(path)?,
        None => config::parse(
            config::EMBEDDED_DEFAULT,
            &source.components_dir,
            "embedded default policies",
        )?,
    })
}

/// The host capabilities for `specs`: Kubernetes reads answered from the
/// `--resources` file, or from the cluster when a policy is granted
/// resources or `kubernetes/can_i` (then this waits for the caches to sync),
/// or by nothing (reads then say no cluster is configured, and no API server
/// is needed).
async fn capabilities(
    args: &ClusterArgs,
    configuration: &Configuration,
) -> anyhow::Result<Capabilities> {
    let capabilities = Capabilities::default();
    if let Some(path) = &args.resources {
        let file = ResourcesFile::read(path)?;
        tracing::info!(file = %path.display(), objects = file.len(), "Kubernetes reads answered from a resources file");
        return Ok(capabilities.with(Arc::new(Kubernetes::new(file.into_cluster()))));
    }
    let reads_cluster = configuration
        .specs()
        .any(|spec| spec.grants.reads_kubernetes());
    if !reads_cluster && args.kubeconfig.is_none() {
        return Ok(capabilities);
    }
    let client = live::client(args.kubeconfig.as_deref())
        .await
        .context("context-aware policies need a Kubernetes cluster")?;
    cluster_capabilities(client, configuration).await
}

/// The host capabilities for `configuration` with Kubernetes reads answered
/// by the cluster of `client` (caches of what is granted, synced first).
async fn cluster_capabilities(
    client: kube::Client,
    configuration: &Configuration,
) -> anyhow::Result<Capabilities> {
    let cluster = LiveCluster::start(client, &granted(configuration)).await?;
    Ok(Capabilities::default().with(Arc::new(Kubernetes::new(cluster))))
}

/// Every Kubernetes resource some policy (or group member: they read the
/// cluster as any policy does) is granted.
fn granted(configuration: &Configuration) -> Vec<ContextAwareResource> {
    configuration
        .specs()
        .flat_map(|spec| spec.grants.context_aware_resources.iter().cloned())
        .collect()
}

/// How logs and errors name a policy given on the command line: the file
/// name without extension, or the last segment of the repository or URL.
fn policy_id(source: &Source) -> String {
    let path: PathBuf = match source.location() {
        Location::File(path) => path.clone(),
        Location::Registry(reference) => reference.repository().into(),
        Location::Http(url) => url.path().into(),
    };
    path.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .filter(|stem| !stem.is_empty())
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
    /// Parses the settings, then reads the request file, then fetches and
    /// loads `component` (a path or URI) with those settings. It may mutate:
    /// `run` and `bench` show what the policy does, mutations included, like
    /// `kwctl run`.
    ///
    /// With `resources` (a `--resources` file), Kubernetes reads are answered
    /// from it, and the policy is granted every kind it holds.
    async fn load(
        component: &str,
        request: &Path,
        settings: &SettingsArgs,
        cache_args: &CacheArgs,
        fetch_args: &FetchArgs,
        resources: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let settings = self::settings(settings)?;
        let request_bytes = std::fs::read(request)
            .with_context(|| format!("cannot read the request {}", request.display()))?;
        let request = parse_review_or_request(&request_bytes)
            .with_context(|| format!("request {}", request.display()))?;
        let (source, path, _) =
            fetch_arg(component, fetch_args, cache_args.cache_dir.as_deref()).await?;
        let id = policy_id(&source);
        let mut spec = PolicySpec::new(&id, path)
            .with_settings(settings)
            .allowed_to_mutate(true);
        let mut capabilities = Capabilities::default();
        if let Some(path) = resources {
            let file = ResourcesFile::read(path)?;
            spec = spec.with_grants(Grants {
                host_capabilities: HostCapabilities::new(["kubernetes/*"])
                    .expect("a known capability pattern"),
                context_aware_resources: file.resources(),
            });
            capabilities = capabilities.with(Arc::new(Kubernetes::new(file.into_cluster())));
        }
        let engine = Engine::with_capabilities(Limits::default(), capabilities)?;
        let environment = Environment::load(&engine, [spec], cache(cache_args).as_ref()).await?;
        Ok(Self {
            environment,
            id,
            request,
        })
    }
}
