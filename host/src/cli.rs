//! Command-line arguments.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands::annotate::AnnotateArgs;
use crate::commands::bench::BenchArgs;
use crate::commands::compile::CompileArgs;
use crate::commands::inspect::InspectArgs;
use crate::commands::new::NewArgs;
use crate::commands::registry::{DigestArgs, PullArgs, PushArgs};

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
/// Which listener serves /metrics.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MetricsOn {
    /// The probe port (plain HTTP).
    Probes,
    /// The API port (its TLS and mTLS).
    Api,
}

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
    /// Write Kubewarden's metadata.yml into a core module (like `kwctl annotate`).
    Annotate(AnnotateArgs),
    /// Print the Validating- and MutatingWebhookConfiguration for a policies file.
    WebhookConfig(crate::commands::webhook_config::WebhookConfigArgs),
    /// Evaluate the objects already in the cluster; write the results as PolicyReports.
    Audit(crate::commands::audit::AuditArgs),
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
            | Command::Annotate(_) => "warn",
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

/// Arguments of `portcullis serve`; names follow Kubewarden's policy-server.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub source: PolicySource,
    /// Reload the configuration whenever the policies file or sources.yml
    /// changes (SIGHUP always reloads it).
    #[arg(long, env = "PORTCULLIS_WATCH")]
    pub watch: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Address both listeners bind to.
    #[arg(long, env = "PORTCULLIS_ADDR", default_value = "0.0.0.0")]
    pub addr: IpAddr,
    /// Port of the webhook API.
    #[arg(long, env = "PORTCULLIS_PORT", default_value_t = 3000)]
    pub port: u16,
    /// Port of /readiness, /livez and /metrics (plain HTTP).
    #[arg(long, env = "PORTCULLIS_READINESS_PROBE_PORT", default_value_t = 8081)]
    pub readiness_probe_port: u16,
    /// Where /metrics is served: the probe port (plain HTTP), or the API port (behind its TLS
    /// and, with --client-ca-file, mTLS).
    #[arg(long, env = "PORTCULLIS_METRICS_LISTENER", value_enum, default_value_t = MetricsOn::Probes)]
    pub metrics_listener: MetricsOn,
    /// Evaluation threads: evaluations computing at once; up to 32 per worker may be under way,
    /// sleeping or waiting on the API server [default: number of CPUs].
    #[arg(long, env = "PORTCULLIS_WORKERS")]
    pub workers: Option<usize>,
    /// Bytes of dirtied pages per policy memory restored in place and kept
    /// resident between evaluations instead of released: faster evaluations
    /// (no madvise, no page faults) for memory that grows a little with the
    /// workers (~0.8 MB each for the 13 example policies); 0 keeps memory flat.
    #[arg(long, env = "PORTCULLIS_KEEP_RESIDENT_BYTES", default_value_t = 64 << 10)]
    pub keep_resident_bytes: usize,
    /// Requests that may wait for a place among the evaluations under way; beyond, requests get
    /// 503 at once [default: 64 per worker].
    #[arg(long, env = "PORTCULLIS_QUEUE_SIZE")]
    pub queue_size: Option<usize>,
    /// Default evaluation timeout, in seconds (a policy's `timeoutEvalSeconds` overrides it).
    #[arg(long, env = "PORTCULLIS_POLICY_TIMEOUT", default_value_t = 2)]
    pub policy_timeout: u64,
    /// Largest linear memory a policy instance may grow to, in bytes (a policy's
    /// `memoryLimitBytes` may lower it).
    #[arg(long, env = "PORTCULLIS_POLICY_MEMORY_LIMIT", default_value_t = 256 << 20)]
    pub policy_memory_limit: usize,
    /// Native stack a policy's wasm code may use, in bytes; deeper recursion traps.
    #[arg(long, env = "PORTCULLIS_POLICY_STACK_SIZE", default_value_t = 1 << 20)]
    pub policy_stack_size: usize,
    /// Largest table a policy instance may grow to, in elements (a policy's
    /// `tableElements` may lower it).
    #[arg(
        long,
        env = "PORTCULLIS_POLICY_TABLE_ELEMENTS",
        default_value_t = 100_000
    )]
    pub policy_table_elements: usize,
    /// Core instances one evaluation may create (a policy's `maxInstances` may lower it).
    #[arg(long, env = "PORTCULLIS_POLICY_MAX_INSTANCES", default_value_t = 32)]
    pub policy_max_instances: usize,
    /// Largest response a policy may return (message, warnings, annotations and
    /// mutated object), in bytes; more answers the request with an error.
    #[arg(long, env = "PORTCULLIS_MAX_POLICY_RESPONSE", default_value_t = 8 << 20)]
    pub max_policy_response: usize,
    /// Bytes of a policy's stderr/stdout kept per evaluation for the log.
    #[arg(long, env = "PORTCULLIS_MAX_POLICY_LOG", default_value_t = 64 << 10)]
    pub max_policy_log: usize,
    /// Lines of a policy's stderr/stdout (and log calls) kept per evaluation for the log.
    #[arg(long, env = "PORTCULLIS_MAX_POLICY_LOG_LINES", default_value_t = 100)]
    pub max_policy_log_lines: usize,
    /// Largest accepted request body, in bytes; larger bodies get 413.
    #[arg(long, env = "PORTCULLIS_MAX_REQUEST_BODY", default_value_t = 8 << 20)]
    pub max_request_body: usize,
    /// Seconds a request may wait for a worker, counted from its arrival; later it is answered
    /// 503 instead of evaluated (the API server's webhook timeout: 10 s unless set per webhook).
    #[arg(long, env = "PORTCULLIS_WEBHOOK_TIMEOUT", default_value_t = 10)]
    pub webhook_timeout: u64,
    /// Seconds from a request's head to the end of its body; slower bodies get 408.
    #[arg(long, env = "PORTCULLIS_REQUEST_BODY_TIMEOUT", default_value_t = 10)]
    pub request_body_timeout: u64,
    /// Bytes that all requests in flight may hold (bodies being read, the requests parsed from
    /// them, answers not yet written); beyond, stalled requests make room or 503 before more is
    /// read.
    #[arg(long, env = "PORTCULLIS_REQUEST_BODY_BUDGET", default_value_t = 64 << 20)]
    pub request_body_budget: usize,
    /// Part of --request-body-budget that only requests of at most 256 KiB (reviews) may use:
    /// large bodies, however many, cannot take it all.
    #[arg(long, env = "PORTCULLIS_REQUEST_BODY_RESERVE", default_value_t = 16 << 20)]
    pub request_body_reserve: usize,
    /// Bytes that the requests of one connection may hold (HTTP/2 multiplexes many requests on
    /// one); beyond, 503 for that connection's new requests.
    #[arg(long, env = "PORTCULLIS_CONNECTION_BODY_BUDGET", default_value_t = 16 << 20)]
    pub connection_body_budget: usize,
    /// Seconds after which a request body or an answer that has moved less than 16 KiB is
    /// stalled: stalled requests make room, longest stalled first, when the connection cap or the
    /// byte budget is reached.
    #[arg(long, env = "PORTCULLIS_STALLED_AFTER", default_value_t = 1)]
    pub stalled_after: u64,
    /// Seconds an answer may wait for the client to take it (an HTTP/2 window kept shut, a socket
    /// not read); then its connection is closed.
    #[arg(long, env = "PORTCULLIS_RESPONSE_SEND_TIMEOUT", default_value_t = 10)]
    pub response_send_timeout: u64,
    /// Connections the API port keeps open; at the cap the most stalled one, else the longest
    /// idle, is closed to make room; while the server works for every one, new ones are refused.
    #[arg(long, env = "PORTCULLIS_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,
    /// Connections the probe port keeps open (same rule).
    #[arg(long, env = "PORTCULLIS_PROBE_MAX_CONNECTIONS", default_value_t = 32)]
    pub probe_max_connections: usize,
    /// Seconds a client has to complete the TLS handshake.
    #[arg(long, env = "PORTCULLIS_TLS_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub tls_handshake_timeout: u64,
    /// Seconds a client has to send its first request head (from the connection's start), and an
    /// HTTP/1 client each later one (from the previous response): silent, trickling and idle
    /// HTTP/1 connections are closed after it.
    #[arg(long, env = "PORTCULLIS_REQUEST_HEADER_TIMEOUT", default_value_t = 10)]
    pub request_header_timeout: u64,
    /// Seconds a connection may stay open without a request in flight (HTTP/2: then GOAWAY).
    #[arg(long, env = "PORTCULLIS_IDLE_TIMEOUT", default_value_t = 60)]
    pub idle_timeout: u64,
    /// Largest request head, in bytes (HTTP/1 headers, HTTP/2 header list); larger get 431.
    #[arg(long, env = "PORTCULLIS_MAX_REQUEST_HEADER_BYTES", default_value_t = 32 << 10)]
    pub max_request_header_bytes: usize,
    /// Streams one HTTP/2 connection may have open at once.
    #[arg(
        long,
        env = "PORTCULLIS_HTTP2_MAX_CONCURRENT_STREAMS",
        default_value_t = 32
    )]
    pub http2_max_concurrent_streams: u32,
    /// Seconds between HTTP/2 keep-alive pings (0: none).
    #[arg(
        long,
        env = "PORTCULLIS_HTTP2_KEEPALIVE_INTERVAL",
        default_value_t = 20
    )]
    pub http2_keepalive_interval: u64,
    /// Seconds a ping's answer may take before the connection is closed as dead.
    #[arg(long, env = "PORTCULLIS_HTTP2_KEEPALIVE_TIMEOUT", default_value_t = 10)]
    pub http2_keepalive_timeout: u64,
    /// TLS certificate chain (PEM); with --key-file, the API is served over HTTPS.
    #[arg(long, env = "PORTCULLIS_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "PORTCULLIS_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// CA bundle (PEM); when given, clients must present a certificate it signed (mTLS).
    #[arg(long, env = "PORTCULLIS_CLIENT_CA_FILE", requires = "cert_file")]
    pub client_ca_file: Option<PathBuf>,
    /// Admit every request in this namespace without evaluating it (the webhook's own namespace).
    #[arg(long, env = "PORTCULLIS_ALWAYS_ACCEPT_ADMISSION_REVIEWS_ON_NAMESPACE")]
    pub always_accept_admission_reviews_on_namespace: Option<String>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "PORTCULLIS_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace: u64,
    #[command(flatten)]
    pub cache: CacheArgs,
}

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
