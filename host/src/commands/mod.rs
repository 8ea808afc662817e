//! One module per subcommand.

mod run;
mod serve;
pub mod webhook_config;

use std::process::ExitCode;

use portcullis::CompiledCache;

use crate::cli::{CacheArgs, Command};

pub fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve::serve(args),
        Command::Run(args) => runtime(None)?.block_on(run::run(args)),
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
