//! What makes `serve` reload its configuration: SIGHUP, and with `--watch`
//! every change of the policies file or `sources.yml`.
//!
//! The newest configuration wins: a trigger while a reload is under way
//! cancels that reload (its fetches stop, their connections close, their
//! partial downloads are removed) and starts one of what the files hold
//! now, so a registry that never finishes sending cannot keep a corrected
//! configuration out. The same holds while the server starts (see `serve`).
//!
//! The files' directories are watched, not the files: editors save by
//! renaming a new file over the old one, and Kubernetes updates a mounted
//! ConfigMap by swapping a symlink beside it, and both replace the inode a
//! watch on the file would follow. Any event in a directory is only a hint:
//! the files are read again, and the configuration reloaded only when what
//! they hold changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use portcullis::server::Reloader;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use crate::cli::{CacheArgs, PolicySource};

/// How long a burst of changes (an editor's save, a ConfigMap swap) may take
/// to settle before the files are read.
const SETTLE: Duration = Duration::from_millis(200);

/// The reload triggers, installed before the first load so that a SIGHUP
/// while loading cannot end the server (its default action).
pub struct Triggers {
    hangup: Signal,
    /// With `--watch`: the watcher (dropping it stops it) and its hints.
    watch: Option<(notify::RecommendedWatcher, mpsc::Receiver<()>)>,
    /// The files whose contents decide whether a hint is a change.
    files: Vec<PathBuf>,
    /// Their contents when last loaded (`None`: unreadable).
    loaded: Vec<Option<Vec<u8>>>,
    /// A trigger seen but not yet returned by [`next`](Self::next) (it was
    /// cancelled while the burst settled).
    pending: Option<&'static str>,
}

impl Triggers {
    /// Installs the SIGHUP handler and, if `watch`, the watches on the
    /// directories of the policies file, `sources.yml` and the verification
    /// config.
    pub fn new(source: &PolicySource, watch: bool) -> anyhow::Result<Self> {
        let hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let files: Vec<PathBuf> = [
            &source.policies,
            &source.fetch.sources_path,
            &source.fetch.verification_path,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        let loaded = read(&files);
        let watch = if watch {
            if files.is_empty() {
                tracing::warn!("--watch without --policies or --sources-path: nothing to watch");
            }
            Some(watch_directories(&files)?)
        } else {
            None
        };
        Ok(Self {
            hangup,
            watch,
            files,
            loaded,
            pending: None,
        })
    }

    /// Waits for the next reason to load the configuration again: a SIGHUP,
    /// or a file change that changed what the files hold. Cancel-safe: a
    /// trigger seen when the future is dropped is returned by the next call.
    pub async fn next(&mut self) -> &'static str {
        loop {
            let cause = match self.pending {
                Some(cause) => cause,
                None => {
                    let cause = tokio::select! {
                        _ = self.hangup.recv() => "SIGHUP",
                        Some(()) = next_hint(&mut self.watch) => "file change",
                    };
                    self.pending = Some(cause);
                    cause
                }
            };
            tokio::time::sleep(SETTLE).await;
            if let Some((_, hints)) = &mut self.watch {
                while hints.try_recv().is_ok() {}
            }
            self.pending = None;
            let now = read(&self.files);
            if cause == "file change" && now == self.loaded {
                continue;
            }
            self.loaded = now;
            return cause;
        }
    }

    /// Reloads on every trigger, until dropped; a trigger while a reload is
    /// under way supersedes it.
    pub async fn run(mut self, reloader: Reloader, source: PolicySource, cache: CacheArgs) {
        // Dropped with this future: no reload outlives the server.
        let mut reloading: Option<AbortOnDrop> = None;
        loop {
            let cause = self.next().await;
            if reloading
                .take()
                .is_some_and(|previous| !previous.0.is_finished())
            {
                tracing::warn!(
                    cause,
                    "a newer configuration supersedes the reload under way; its fetches are \
                     cancelled"
                );
            }
            tracing::info!(cause, "reloading the configuration");
            let (reloader, source, cache) = (reloader.clone(), source.clone(), cache.clone());
            reloading = Some(AbortOnDrop(tokio::spawn(async move {
                match load(&source, &cache).await {
                    // The reloader logs and counts both outcomes.
                    Ok(configuration) => {
                        let _ = reloader.reload(configuration).await;
                    }
                    Err(error) => reloader.failed(&format!("{error:#}")),
                }
            })));
        }
    }
}

/// Stops a task when dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The configuration `source` declares, remote modules fetched (with
/// `sources.yml` read again).
async fn load(
    source: &PolicySource,
    cache: &CacheArgs,
) -> anyhow::Result<portcullis::Configuration> {
    let configuration = super::policies(source)?;
    super::fetch_remote(configuration, source, cache).await
}

async fn next_hint(
    watch: &mut Option<(notify::RecommendedWatcher, mpsc::Receiver<()>)>,
) -> Option<()> {
    match watch {
        Some((_, hints)) => hints.recv().await,
        None => std::future::pending().await,
    }
}

fn read(files: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
    files.iter().map(|file| std::fs::read(file).ok()).collect()
}

/// Watches the directory of each file; every event becomes a hint (one
/// pending at most: a burst is one reload).
fn watch_directories(
    files: &[PathBuf],
) -> anyhow::Result<(notify::RecommendedWatcher, mpsc::Receiver<()>)> {
    let (sender, hints) = mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = sender.try_send(());
        }
    })
    .context("starting the file watcher")?;
    let mut directories: Vec<&Path> = Vec::new();
    for file in files {
        let directory = match file.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        if !directories.contains(&directory) {
            watcher
                .watch(directory, RecursiveMode::NonRecursive)
                .with_context(|| format!("watching {}", directory.display()))?;
            tracing::info!(directory = %directory.display(), "watching for configuration changes");
            directories.push(directory);
        }
    }
    Ok((watcher, hints))
}
