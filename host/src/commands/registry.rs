//! `portcullis pull`, `push` and `digest`: modules in OCI registries, like
//! `kwctl pull/push/digest`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use portcullis::source::artifact::{self, Format, Kind};
use portcullis::source::{Location, registry};
use serde::Serialize;

use super::inspect::Output;
use crate::cli::FetchArgs;

/// Arguments of `portcullis pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// What to fetch: `registry://HOST/REPO:TAG` (or `@sha256:…`), a bare
    /// `HOST/REPO:TAG`, `https://…/p.wasm`, or a file.
    pub uri: String,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// The compiled cache's directory; downloads go to its `downloads`
    /// directory unless --policies-download-dir says otherwise.
    #[arg(long, env = "PORTCULLIS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// Arguments of `portcullis push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The module to push (`.wasm`).
    pub file: PathBuf,
    /// Where: `registry://HOST[:PORT]/REPO:TAG` (or a bare `HOST/REPO:TAG`).
    pub uri: String,
    /// The artifact layout [default: cncf for a component, kubewarden for a core module].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// Arguments of `portcullis digest`.
#[derive(Debug, Args)]
pub struct DigestArgs {
    /// A registry reference: `registry://HOST/REPO:TAG` or a bare `HOST/REPO:TAG`.
    pub uri: String,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// What `pull` prints. Field names are the JSON output's.
#[derive(Debug, Serialize)]
struct Pulled {
    source: String,
    path: PathBuf,
    /// The module's sha256 (what the compiled cache is keyed by).
    digest: String,
    /// For a registry module: the immutable reference it resolved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    size: usize,
    /// `pulled`, `store` or `local`.
    origin: &'static str,
    /// Bytes transferred.
    downloaded: u64,
}

/// Runs `portcullis pull`.
pub async fn pull(args: PullArgs) -> anyhow::Result<ExitCode> {
    let source = super::source_arg(&args.uri)?;
    let fetch = super::fetcher(&args.fetch, args.cache_dir.as_deref())?
        .fetch(&source)
        .await
        .with_context(|| format!("cannot pull {source}"))?;
    let reference = match (source.location(), &fetch.manifest) {
        (Location::Registry(reference), Some(manifest)) => Some(pinned(reference, manifest)),
        _ => None,
    };
    let pulled = Pulled {
        source: source.to_string(),
        path: fetch.path.clone(),
        digest: fetch.digest.to_string(),
        reference,
        size: fetch.size,
        origin: fetch.origin.as_str(),
        downloaded: fetch.downloaded,
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&pulled)?),
        Output::Text => {
            println!("path       {}", pulled.path.display());
            println!("digest     {}", pulled.digest);
            if let Some(reference) = &pulled.reference {
                println!("reference  {reference}");
            }
            println!(
                "origin     {} ({} bytes, {} downloaded)",
                pulled.origin, pulled.size, pulled.downloaded
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `portcullis push`: prints the immutable reference.
pub async fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let reference = registry_reference(&args.uri)?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let kind =
        artifact::kind_of(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let format = args.format.unwrap_or(match kind {
        Kind::Component => Format::Cncf,
        Kind::Module => Format::Kubewarden,
    });
    // Push needs no store; the default one is never written.
    let digest = super::fetcher(&args.fetch, None)?
        .push(&bytes, &reference, format)
        .await
        .with_context(|| format!("cannot push {} to {}", args.file.display(), args.uri))?;
    println!("{}", pinned(&reference, &digest));
    Ok(ExitCode::SUCCESS)
}

/// Runs `portcullis digest`: prints the immutable reference.
pub async fn digest(args: DigestArgs) -> anyhow::Result<ExitCode> {
    let reference = registry_reference(&args.uri)?;
    let digest = super::fetcher(&args.fetch, None)?
        .resolve(&reference)
        .await
        .with_context(|| format!("cannot resolve {}", args.uri))?;
    println!("{}", pinned(&reference, &digest));
    Ok(ExitCode::SUCCESS)
}

/// The registry reference `uri` names, or an error saying it is not one.
pub(super) fn registry_reference(uri: &str) -> anyhow::Result<oci_client::Reference> {
    match super::source_arg(uri)?.location() {
        Location::Registry(reference) => Ok(reference.clone()),
        _ => bail!("`{uri}` is not a registry reference (registry://HOST/REPO:TAG)"),
    }
}

/// `registry://HOST/REPO@DIGEST`.
pub(super) fn pinned(reference: &oci_client::Reference, digest: &str) -> String {
    registry::canonical(&oci_client::Reference::with_digest(
        reference.registry().to_owned(),
        reference.repository().to_owned(),
        digest.to_owned(),
    ))
}
