//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands::annotate::AnnotateArgs;
use crate::commands::bench::BenchArgs;
use crate::commands::compile::CompileArgs;
use crate::commands::inspect::InspectArgs;
use crate::commands::new::NewArgs;
use crate::commands::registry::{DigestArgs, PullArgs, PushArgs};
use crate::commands::run::RunArgs;
use crate::commands::serve::ServeArgs;
use crate::commands::sign::{SignArgs, VerifySignatureArgs};

/// Kubernetes admission policies as WebAssembly components (and Kubewarden's policies, unchanged).
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive)
    /// [default: `info` for serve; warnings and guest output otherwise].
    #[arg(long, global = true, env = "PORTCULLIS_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long, global = true, env = "PORTCULLIS_LOG_FMT", value_enum, default_value_t = LogFormat::Text)]
    pub log_fmt: LogFormat,
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

// Parsed once at start-up and consumed: the size of a variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhook.
    Serve(ServeArgs),
    /// Evaluate one request with one policy and print the AdmissionResponse (like `kwctl run`).
    Run(RunArgs),
    /// Scaffold a new policy crate (SDK, example policy, tests, fixtures, README).
    New(NewArgs),
    /// Show a policy's digest, kind (component or Kubewarden module), imports/exports, whether this host runs it, and its metadata.
    Inspect(InspectArgs),
    /// Time instantiation and evaluation of one policy on one request (min/median/p99 over N runs).
    Bench(BenchArgs),
    /// Compile policies into the compiled cache ahead of time (for images built once).
    Compile(CompileArgs),
    /// Fetch a module (registry://, https://, file) into the download store; print its path and digest.
    Pull(PullArgs),
    /// Push a module to an OCI registry; print its immutable `registry://…@sha256:…` reference.
    Push(PushArgs),
    /// Print the immutable `registry://…@sha256:…` reference a registry reference resolves to now.
    Digest(DigestArgs),
    /// Sign a policy in a registry with a P-256 key and push the signature as cosign does (`sha256-<hex>.sig`).
    Sign(SignArgs),
    /// Check a registry policy's signatures against keys or a verification config (like `kwctl verify`).
    VerifySignature(VerifySignatureArgs),
    /// Write Kubewarden's metadata.yml into a core module (like `kwctl annotate`).
    Annotate(AnnotateArgs),
    /// Print the Validating- and MutatingWebhookConfiguration for a policies file.
    WebhookConfig(crate::commands::webhook_config::WebhookConfigArgs),
    /// Evaluate the objects already in the cluster; write the results as PolicyReports.
    Audit(crate::commands::audit::AuditArgs),
    /// Run Gatekeeper's `gator verify` suites (templates, constraints, cases) with the Rego runtime.
    Verify(crate::commands::verify::VerifyArgs),
}

impl Command {
    fn default_log_level(&self) -> &'static str {
        match self {
            Command::Serve(_) => "info",
            Command::Run(_) => "warn,portcullis::guest=info",
            Command::New(_)
            | Command::Inspect(_)
            | Command::Bench(_)
            | Command::Compile(_)
            | Command::Pull(_)
            | Command::Push(_)
            | Command::Digest(_)
            | Command::Sign(_)
            | Command::VerifySignature(_)
            | Command::Annotate(_)
            | Command::Verify(_) => "warn",
            Command::WebhookConfig(_) | Command::Audit(_) => "warn",
        }
    }
}

/// Where the policies come from: a policies.yml, or the embedded default.
#[derive(Debug, Clone, Args)]
pub struct PolicySource {
    /// The policies file (Kubewarden's policies.yml format) [default: the embedded example policies].
    #[arg(long, env = "PORTCULLIS_POLICIES")]
    pub policies: Option<PathBuf>,
    /// Where relative module paths of the embedded default policies are found.
    #[arg(
        long,
        env = "PORTCULLIS_COMPONENTS_DIR",
        default_value = "target/wasm32-wasip2/policy"
    )]
    pub components_dir: PathBuf,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// Where context-aware policies read the cluster from.
#[derive(Debug, Clone, Default, Args)]
pub struct ClusterArgs {
    /// Kubeconfig of the cluster context-aware policies read [default: the
    /// in-cluster service account, else $KUBECONFIG or ~/.kube/config]. Only
    /// used when a policy is granted `contextAwareResources` or
    /// `kubernetes/can_i`.
    #[arg(long, env = "PORTCULLIS_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Answer context-aware policies from the Kubernetes objects in this file
    /// (YAML or JSON: objects, documents, a List) instead of a cluster.
    #[arg(long, env = "PORTCULLIS_RESOURCES", conflicts_with = "kubeconfig")]
    pub resources: Option<PathBuf>,
}

/// How `registry://` and `https://` modules are fetched (Kubewarden's flag names).
#[derive(Debug, Clone, Args)]
pub struct FetchArgs {
    /// Directory modules are downloaded to, keyed by digest [default: the
    /// `downloads` directory of the compiled cache's directory].
    #[arg(long, env = "PORTCULLIS_POLICIES_DOWNLOAD_DIR")]
    pub policies_download_dir: Option<PathBuf>,
    /// Kubewarden's sources.yml: extra CAs per registry host (`source_authorities`),
    /// hosts reached without TLS verification (`insecure_sources`).
    #[arg(long, env = "PORTCULLIS_SOURCES_PATH")]
    pub sources_path: Option<PathBuf>,
    /// Docker config.json with registry credentials [default:
    /// $DOCKER_CONFIG/config.json, else ~/.docker/config.json].
    #[arg(long, env = "PORTCULLIS_DOCKER_CONFIG_JSON_PATH")]
    pub docker_config_json_path: Option<PathBuf>,
    /// Seconds each module fetch may take, from its start to the module in
    /// the download store: a registry or server still sending after it is
    /// cut off, and the fetch fails naming the policy and the URI.
    #[arg(long, env = "PORTCULLIS_FETCH_TIMEOUT", default_value_t = portcullis::source::DEFAULT_DEADLINE.as_secs())]
    pub fetch_timeout: u64,
    /// Kubewarden's verification config (`apiVersion: v1`, `allOf` / `anyOf`
    /// of `pubKey` signatures): every registry module must carry cosign
    /// signatures that satisfy it before it is used, and `https://` modules
    /// are refused. Read at start and at each reload; a malformed file is
    /// refused naming its line.
    #[arg(long, env = "PORTCULLIS_VERIFICATION_PATH")]
    pub verification_path: Option<PathBuf>,
}

/// A policy's settings, from a file or inline.
#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// A file with the policy's settings (JSON).
    #[arg(long, short = 's', conflicts_with = "settings_json")]
    pub settings: Option<PathBuf>,
    /// The policy's settings, inline (JSON).
    #[arg(long)]
    pub settings_json: Option<String>,
}

/// Where compiled components are cached.
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    /// Directory of the compiled-component cache [default: $XDG_CACHE_HOME/portcullis].
    #[arg(long, env = "PORTCULLIS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every component, reading and writing no cache.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
}

/// Logs to stderr with the requested filter and format.
pub fn init_tracing(args: &GlobalArgs, command: &Command) {
    use tracing_subscriber::EnvFilter;
    let level = args
        .log_level
        .as_deref()
        .unwrap_or(command.default_log_level());
    let filter = EnvFilter::try_new(level).unwrap_or_else(|e| {
        eprintln!("warning: invalid --log-level `{level}` ({e}); using `info`");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.log_fmt {
        LogFormat::Text => builder
            .fmt_fields(portcullis::logging::escaping_text_fields())
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}
