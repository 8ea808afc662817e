//! `portcullis compile`: compiles policies (components and Kubewarden
//! modules) into the compiled cache ahead of time, so a container image
//! built once starts warm.
//!
//! It goes through the very path `serve` and `run` take
//! ([`Engine::prepare`] with a [`CompiledCache`]), so the entries have
//! the key those commands look up: the policy's digest and the engine's
//! compatibility hash (wasmtime version and code-generation settings, which
//! the per-policy limits do not change).
//!
//! A `registry://` or `https://` policy is fetched first, into the download
//! store under the same cache directory: an image that ships the directory
//! then starts `serve` without the registry (a digest, or a tag other than
//! `latest`, found in the store is not looked up again).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use portcullis::digest::Digest;
use portcullis::runtime::CompileOrigin;
use portcullis::{CompiledCache, Engine, Limits};

use crate::cli::FetchArgs;

/// Arguments of `portcullis compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The policies to compile (components or Kubewarden modules): `.wasm`
    /// files, or `registry://`, `https://` or `file://` URIs.
    #[arg(required = true)]
    pub policies: Vec<String>,
    /// Directory of the compiled cache; `serve` and `run` must be
    /// given the same [default: $XDG_CACHE_HOME/portcullis].
    #[arg(long, env = "PORTCULLIS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// Runs `portcullis compile`: one line per policy; the first policy
/// that cannot be fetched, compiled or is not a policy stops it with an error.
pub async fn compile(args: CompileArgs) -> anyhow::Result<ExitCode> {
    let dir = args
        .cache_dir
        .clone()
        .or_else(CompiledCache::default_dir)
        .context("no cache directory: pass --cache-dir (neither XDG_CACHE_HOME nor HOME is set)")?;
    let cache = CompiledCache::new(&dir);
    let engine = Engine::new(Limits::default())?;
    for given in &args.policies {
        let (_, path, _) = super::fetch_arg(given, &args.fetch, Some(&dir)).await?;
        let path = &path;
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let digest = Digest::of(&bytes);
        // `prepare` also pre-links the policy, so a file that is not a
        // policy this host can run fails here, at image build time.
        let code = engine
            .prepare(path, &bytes, digest, Some(&cache))
            .await
            .with_context(|| given.clone())?;
        let how = match code.facts().origin {
            CompileOrigin::Compiled => {
                format!("compiled in {} ms", code.facts().compile_time.as_millis())
            }
            CompileOrigin::Cache => "already in the cache".to_owned(),
        };
        let Some(entry) = cache.entry_path(engine.wasmtime(), &digest) else {
            // `prepare` only warns when it cannot store an entry; for this
            // command storing it is the whole point.
            anyhow::bail!(
                "{given}: compiled, but no cache entry could be written in {} (see the warning above)",
                cache.dir().display()
            );
        };
        println!("{digest} {given}: {how} -> {}", entry.display());
    }
    Ok(ExitCode::SUCCESS)
}
