//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Kubernetes admission policies as WebAssembly components.
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
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive).
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_LOG_LEVEL",
        default_value = "warn,portcullis::guest=info"
    )]
    pub log_level: String,
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Evaluate one request with one policy and print the AdmissionResponse (like `kwctl run`).
    Run(RunArgs),
}

/// Arguments of `portcullis run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The policy component (`.wasm`).
    #[arg(long, short = 'p')]
    pub policy: PathBuf,
    /// The request: an AdmissionReview or a bare AdmissionRequest (JSON).
    #[arg(long, short = 'r')]
    pub request: PathBuf,
    /// A file with the policy's settings (JSON).
    #[arg(long, short = 's', conflicts_with = "settings_json")]
    pub settings: Option<PathBuf>,
    /// The policy's settings, inline (JSON).
    #[arg(long)]
    pub settings_json: Option<String>,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// Where compiled components are cached.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Directory of the compiled-component cache [default: $XDG_CACHE_HOME/portcullis].
    #[arg(long, env = "PORTCULLIS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every component, reading and writing no cache.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
}

pub fn init_tracing(args: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|e| {
        eprintln!(
            "warning: invalid --log-level `{}` ({e}); using `warn`",
            args.log_level
        );
        EnvFilter::new("warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_fmt {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
