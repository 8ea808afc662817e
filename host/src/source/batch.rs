//! Every remote module of a configuration, fetched at once: each distinct
//! location once, in parallel (as many at a time as the process allows),
//! with a line every [`WAITING_LOG_EVERY`] naming the fetches still under
//! way, so that a start-up (or reload) that waits says what it waits on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::download::Progress;
use super::{
    Fetch, FetchError, FetchErrors, Fetcher, Location, PARALLEL_FETCHES, PolicyFetchError, Source,
};
use crate::policy::PolicySpec;

/// How often the fetches still under way are logged.
pub const WAITING_LOG_EVERY: Duration = Duration::from_secs(10);

/// Each distinct fetch behind `specs` (policies naming the same module share
/// one), with the scheme it came over (`registry`, `https`, `http`).
pub fn distinct_fetches(specs: &[PolicySpec]) -> Vec<(Arc<Fetch>, &'static str)> {
    let mut distinct: Vec<(Arc<Fetch>, &'static str)> = Vec::new();
    for spec in specs {
        let (Some(fetch), Some(source)) = (&spec.fetch, &spec.source) else {
            continue;
        };
        if distinct.iter().any(|(f, _)| Arc::ptr_eq(f, fetch)) {
            continue;
        }
        let scheme = match source.location() {
            Location::Registry(_) => "registry",
            Location::Http(url) if url.scheme() == "http" => "http",
            Location::Http(_) => "https",
            Location::File(_) => "file",
        };
        distinct.push((fetch.clone(), scheme));
    }
    distinct
}

/// One distinct remote module being fetched.
struct Wanted {
    key: String,
    source: Source,
    /// The policies that name it, for logs.
    policies: String,
    progress: Arc<Progress>,
}

impl Fetcher {
    /// Fetches the remote module of every spec, each distinct location
    /// once, and points each spec's `module` at the local copy. Fails with
    /// every policy that could not be served, not just the first.
    ///
    /// Dropping the future cancels every fetch under way (their
    /// connections closed, their partial files removed): a reload
    /// superseded by a newer configuration stops here.
    pub async fn fetch_policies(
        &self,
        mut specs: Vec<PolicySpec>,
    ) -> Result<Vec<PolicySpec>, FetchErrors> {
        let mut wanted: Vec<Wanted> = Vec::new();
        for spec in &specs {
            let Some(source) = spec.source.as_ref().filter(|s| s.is_remote()) else {
                continue;
            };
            let key = source.location().canonical();
            match wanted.iter_mut().find(|w| w.key == key) {
                Some(known) => {
                    known.policies.push(',');
                    known.policies.push_str(&spec.id);
                }
                None => wanted.push(Wanted {
                    key,
                    source: source.clone(),
                    policies: spec.id.clone(),
                    progress: Arc::default(),
                }),
            }
        }
        if !wanted.is_empty() {
            tracing::info!(
                modules = wanted.len(),
                parallel = PARALLEL_FETCHES,
                deadline_s = self.deadline().as_secs(),
                "fetching policy modules"
            );
        }
        // Dropped with this future: every task still running is aborted.
        let mut tasks = tokio::task::JoinSet::new();
        for one in &wanted {
            let (fetcher, key, source) = (self.clone(), one.key.clone(), one.source.clone());
            let progress = one.progress.clone();
            tasks.spawn(async move {
                let result = fetcher.fetch_tracked(&source, &progress).await;
                (key, result)
            });
        }
        let mut fetched: HashMap<String, Result<Arc<Fetch>, Arc<FetchError>>> = HashMap::new();
        let mut waiting = tokio::time::interval(WAITING_LOG_EVERY);
        waiting.reset();
        loop {
            tokio::select! {
                joined = tasks.join_next() => {
                    let Some(joined) = joined else { break };
                    let (key, result) = joined.expect("a fetch task panicked");
                    fetched.insert(key, result.map(Arc::new).map_err(Arc::new));
                }
                _ = waiting.tick() => log_waiting(&wanted, &fetched),
            }
        }

        let mut errors = Vec::new();
        for spec in &mut specs {
            let Some(source) = spec.source.as_ref().filter(|s| s.is_remote()) else {
                continue;
            };
            match &fetched[&source.location().canonical()] {
                Ok(fetch) => {
                    spec.module = fetch.path.clone();
                    spec.fetch = Some(fetch.clone());
                }
                Err(error) => errors.push(PolicyFetchError {
                    policy: spec.id.clone(),
                    source: source.clone(),
                    error: error.clone(),
                }),
            }
        }
        log_fetched(&specs);
        if errors.is_empty() {
            Ok(specs)
        } else {
            Err(FetchErrors(errors))
        }
    }
}

/// One line per fetch still under way (what it reads, for how long, how
/// much has come), and one for those still waiting for their turn.
fn log_waiting(wanted: &[Wanted], fetched: &HashMap<String, Result<Arc<Fetch>, Arc<FetchError>>>) {
    let mut queued = 0;
    for one in wanted.iter().filter(|w| !fetched.contains_key(&w.key)) {
        let Some(running) = one.progress.running_for() else {
            queued += 1;
            continue;
        };
        tracing::info!(
            uri = %one.source,
            policies = %one.policies,
            stage = one.progress.stage().as_str(),
            received = one.progress.received(),
            running_s = running.as_secs(),
            "waiting for a module fetch"
        );
    }
    if queued > 0 {
        tracing::info!(
            queued,
            parallel = PARALLEL_FETCHES,
            "module fetches waiting for their turn"
        );
    }
}

/// One line per fetched module, naming the policies that use it.
fn log_fetched(specs: &[PolicySpec]) {
    let mut seen: Vec<*const Fetch> = Vec::new();
    for spec in specs {
        let (Some(fetch), Some(source)) = (&spec.fetch, &spec.source) else {
            continue;
        };
        if seen.contains(&Arc::as_ptr(fetch)) {
            continue;
        }
        seen.push(Arc::as_ptr(fetch));
        let policies: Vec<&str> = specs
            .iter()
            .filter(|s| s.fetch.as_ref().is_some_and(|f| Arc::ptr_eq(f, fetch)))
            .map(|s| s.id.as_str())
            .collect();
        tracing::info!(
            uri = %source,
            policies = %policies.join(","),
            digest = %fetch.digest,
            manifest = fetch.manifest.as_deref().unwrap_or(""),
            origin = ?fetch.origin,
            bytes = fetch.downloaded,
            size = fetch.size,
            ms = fetch.elapsed.as_millis() as u64,
            path = %fetch.path.display(),
            "module fetched"
        );
    }
}
