//! One module per subcommand.

mod run;

use std::process::ExitCode;

use portcullis::CompiledCache;

use crate::cli::{CacheArgs, Command};

pub fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match command {
        Command::Run(args) => runtime.block_on(run::run(args)),
    }
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
