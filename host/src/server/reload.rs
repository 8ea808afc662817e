//! Changing a running server's configuration without dropping a request.
//!
//! The new configuration is loaded beside the one serving (reusing every
//! component already prepared, by digest), then swapped in atomically.
//! A request takes the configuration once, when it arrives, and keeps it to
//! the end: requests in flight finish on the old one, new ones see the new
//! one, and the old one is freed when its last request is answered.

use std::sync::Arc;

use super::AppState;
use crate::cache::CompiledCache;
use crate::environment::{LoadError, LoadStats};
use crate::policy::Configuration;

/// Swaps the configuration of a running server (see
/// [`RunningServer::reloader`](super::RunningServer::reloader)). Cheap to
/// clone; reloads run one at a time.
#[derive(Clone)]
pub struct Reloader {
    state: Arc<AppState>,
    cache: Option<CompiledCache>,
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

impl Reloader {
    pub(super) fn new(state: Arc<AppState>, cache: Option<CompiledCache>) -> Self {
        Self {
            state,
            cache,
            one_at_a_time: Arc::default(),
        }
    }

    /// Loads `configuration` beside the one serving and, if every policy
    /// loads and accepts its settings, swaps it in. On error nothing
    /// changes: the error is logged and counted, and returned.
    pub async fn reload(&self, configuration: Configuration) -> Result<LoadStats, LoadError> {
        let _one_at_a_time = self.one_at_a_time.lock().await;
        let Some(current) = self.state.environment() else {
            unreachable!("a reloader exists once the first configuration is serving")
        };
        let fetches =
            crate::source::distinct_fetches(&configuration.specs().cloned().collect::<Vec<_>>());
        match current.reload(configuration, self.cache.as_ref()).await {
            Ok(environment) => {
                let stats = environment.stats();
                for (fetch, scheme) in fetches {
                    self.state.metrics.fetched(&fetch, scheme);
                }
                self.state.environment.store(Some(Arc::new(environment)));
                self.state.metrics.config_reload(true);
                tracing::info!(
                    policies = stats.policies,
                    reused = stats.reused,
                    compiled = stats.compiled,
                    from_cache = stats.from_cache,
                    "configuration reloaded"
                );
                Ok(stats)
            }
            Err(error) => {
                self.failed(&error);
                Err(error)
            }
        }
    }

    /// Records a reload that failed before loading (the file unreadable or
    /// invalid, a module that cannot be fetched): logged and counted; the
    /// configuration serving stays.
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        self.state.metrics.config_reload(false);
        tracing::error!(
            %error,
            "configuration reload failed; the previous configuration keeps serving"
        );
    }
}
