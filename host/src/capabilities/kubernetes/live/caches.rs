//! The watch-based caches: one reflector per granted resource (with the
//! union of the field masks it is granted with), started, awaited until its
//! first list is in, and put in place whole.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use super::api::{group_version, typed};
use super::{ClusterError, LiveCluster};
use crate::capabilities::ContextAwareResource;
use crate::capabilities::kubernetes::objects::Objects;
use crate::capabilities::kubernetes::select::FieldMasks;

/// One granted resource: where it is served, and its cache.
pub(super) struct Watched {
    pub(super) api: ApiResource,
    pub(super) namespaced: bool,
    pub(super) objects: Arc<Objects>,
    /// The fields the cache keeps (`None`: whole objects).
    pub(super) kept: Option<Vec<String>>,
}

/// Whether a cache that keeps `kept` (`None`: everything) holds every field
/// of `wanted` (empty: the whole object).
pub(super) fn keeps(kept: Option<&[String]>, wanted: &[String]) -> bool {
    let Some(kept) = kept else { return true };
    !wanted.is_empty()
        && wanted.iter().all(|field| {
            kept.iter().any(|k| {
                field == k
                    || field
                        .strip_prefix(k.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            })
        })
}

/// A resource by `apiVersion` and `kind`.
pub(super) type Key = (String, String);

/// The fields to keep of each resource `resources` names: the union of
/// their masks, or `None` (whole objects) if one of them has none.
fn wanted(resources: &[ContextAwareResource]) -> HashMap<Key, Option<Vec<String>>> {
    let mut masks: HashMap<Key, Option<Vec<String>>> = HashMap::new();
    for resource in resources {
        let key = (resource.api_version.clone(), resource.kind.clone());
        let entry = masks.entry(key).or_insert_with(|| Some(Vec::new()));
        match (entry.as_mut(), resource.field_masks.is_empty()) {
            (Some(_), true) => *entry = None,
            (Some(union), false) => union.extend(resource.field_masks.iter().cloned()),
            (None, _) => {}
        }
    }
    masks
}

/// Where a cache's first list is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SyncState {
    /// Not in yet.
    Pending,
    /// In: the cache holds the cluster's objects.
    Synced,
    /// The watch failed before its first list (it keeps retrying).
    Failing(String),
}

impl LiveCluster {
    /// Starts a cache for each of `resources` not cached yet (or cached
    /// with fewer fields than they ask for: that one is replaced by a cache
    /// of both), waits until each holds the cluster's objects, then puts
    /// them in place. With `give_up`, a cache whose watch fails before its
    /// first list, or that is not in within that time, is an error and
    /// nothing changes; without, this waits as long as it takes.
    pub(super) async fn watch(
        &self,
        resources: &[ContextAwareResource],
        give_up: Option<Duration>,
    ) -> Result<(), ClusterError> {
        let _one_change = self.changing.lock().await;
        let current = self.watched.load_full();
        let mut to_start = Vec::new();
        for (key, wanted) in wanted(resources) {
            let kept = current.get(&key).map(|w| w.kept.clone());
            let keep = match (kept, wanted) {
                (None, wanted) => wanted,
                (Some(kept), wanted)
                    if keeps(kept.as_deref(), wanted.as_deref().unwrap_or_default()) =>
                {
                    continue;
                }
                // Wider than the cache: a cache of both replaces it.
                (Some(Some(mut kept)), Some(wanted)) => {
                    kept.extend(wanted);
                    Some(kept)
                }
                (Some(_), _) => None,
            };
            to_start.push((key, keep));
        }
        if to_start.is_empty() {
            return Ok(());
        }
        // Logged before discovery: an API server that does not answer holds
        // start-up here, and the log should say what it waits for.
        let names: Vec<String> = to_start
            .iter()
            .map(|((api_version, kind), _)| format!("{api_version}/{kind}"))
            .collect();
        tracing::info!(
            resources = names.join(", "),
            "waiting for the Kubernetes caches to sync"
        );
        let started = Instant::now();
        let mut starting = Vec::new();
        for ((key, keep), name) in to_start.into_iter().zip(names) {
            let cache = match give_up {
                Some(limit) => {
                    let left = limit.saturating_sub(started.elapsed());
                    tokio::time::timeout(left, self.start_cache(key, keep))
                        .await
                        .unwrap_or_else(|_| {
                            Err(ClusterError::Discovery {
                                resource: name,
                                reason: format!("no answer within {} s", limit.as_secs()),
                            })
                        })
                }
                None => self.start_cache(key, keep).await,
            };
            match cache {
                Ok(cache) => starting.push(cache),
                Err(error) => {
                    for cache in starting {
                        cache.reflector.abort();
                    }
                    return Err(error);
                }
            }
        }
        let mut failure = None;
        for cache in &mut starting {
            if failure.is_some() {
                break;
            }
            let synced = cache.ready.wait_for(|state| {
                matches!(
                    (state, give_up),
                    (SyncState::Synced, _) | (SyncState::Failing(_), Some(_))
                )
            });
            let outcome = match give_up {
                Some(limit) => {
                    let left = limit.saturating_sub(started.elapsed());
                    match tokio::time::timeout(left, synced).await {
                        Ok(Ok(state)) => state.clone(),
                        Ok(Err(_)) => SyncState::Failing("its watch stopped".into()),
                        Err(_) => {
                            SyncState::Failing(format!("no list within {} s", limit.as_secs()))
                        }
                    }
                }
                // A closed channel means the reflector task is gone: aborted.
                None => synced.await.map(|s| s.clone()).unwrap_or(SyncState::Synced),
            };
            match outcome {
                SyncState::Synced => tracing::info!(
                    resource = cache.name,
                    objects = cache.watched.objects.len(),
                    after_ms = started.elapsed().as_millis() as u64,
                    "Kubernetes cache synced"
                ),
                SyncState::Failing(reason) => {
                    failure.get_or_insert(ClusterError::Sync {
                        resource: cache.name.clone(),
                        reason,
                    });
                }
                // `wait_for` returns only once the cache synced or failed.
                SyncState::Pending => {}
            }
        }
        let mut reflectors = self.reflectors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(failure) = failure {
            for cache in starting {
                cache.reflector.abort();
            }
            return Err(failure);
        }
        let mut watched = HashMap::clone(&current);
        for cache in starting {
            if let Some(replaced) = reflectors.insert(cache.key.clone(), cache.reflector) {
                replaced.abort();
            }
            watched.insert(cache.key, Arc::new(cache.watched));
        }
        self.watched.store(Arc::new(watched));
        Ok(())
    }

    /// Finds where `key` is served and starts its reflector, keeping `keep`.
    async fn start_cache(
        &self,
        key: Key,
        keep: Option<Vec<String>>,
    ) -> Result<Starting, ClusterError> {
        let (api_version, kind) = &key;
        let name = format!("{api_version}/{kind}");
        let (group, version) = group_version(api_version);
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (api, capabilities) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| ClusterError::Discovery {
                resource: name.clone(),
                reason: e.to_string(),
            })?;
        let masks = FieldMasks::new(keep.as_deref().unwrap_or_default()).map_err(|reason| {
            ClusterError::Discovery {
                resource: name.clone(),
                reason,
            }
        })?;
        let objects = Arc::new(Objects::new(masks));
        let (synced, ready) = watch::channel(SyncState::Pending);
        let reflector = self.io.spawn(reflect(
            Api::all_with(self.client.clone(), &api),
            api.clone(),
            objects.clone(),
            synced,
        ));
        Ok(Starting {
            name,
            key,
            ready,
            reflector,
            watched: Watched {
                api,
                namespaced: capabilities.scope == Scope::Namespaced,
                objects,
                kept: keep,
            },
        })
    }
}

/// A cache being started.
struct Starting {
    name: String,
    key: Key,
    ready: watch::Receiver<SyncState>,
    reflector: tokio::task::JoinHandle<()>,
    watched: Watched,
}

/// Keeps `objects` equal to the cluster's objects of `api`, from a watch
/// (relisting when the watch breaks, with backoff); flags `synced` once the
/// first list is in.
async fn reflect(
    all: Api<DynamicObject>,
    api: ApiResource,
    objects: Arc<Objects>,
    synced: watch::Sender<SyncState>,
) {
    let to_value =
        |object: DynamicObject| serde_json::to_value(typed(object, &api)).unwrap_or_default();
    let stream = watcher(all, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut initial = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => initial.clear(),
            Ok(watcher::Event::InitApply(object)) => initial.push(to_value(object)),
            Ok(watcher::Event::InitDone) => {
                objects.replace(std::mem::take(&mut initial));
                synced.send_replace(SyncState::Synced);
            }
            Ok(watcher::Event::Apply(object)) => objects.apply(to_value(object)),
            Ok(watcher::Event::Delete(object)) => objects.delete(&to_value(object)),
            Err(error) => {
                tracing::warn!(
                    resource = %format!("{}/{}", api.api_version, api.kind),
                    %error,
                    "Kubernetes watch failed; retrying (lists are answered from the last state)"
                );
                synced.send_if_modified(|state| match state {
                    SyncState::Synced => false,
                    _ => {
                        *state = SyncState::Failing(error.to_string());
                        true
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_granted_twice_is_cached_with_the_union_of_its_masks() {
        let masked = |kind: &str, masks: &[&str]| {
            let mut resource = ContextAwareResource::new("v1", kind);
            resource.field_masks = masks.iter().map(|m| m.to_string()).collect();
            resource
        };
        let wanted = wanted(&[
            masked("Namespace", &["metadata.labels"]),
            masked("Namespace", &["metadata.name"]),
            masked("Service", &["spec"]),
            masked("Service", &[]),
        ]);
        let key = |kind: &str| ("v1".to_owned(), kind.to_owned());
        assert_eq!(
            wanted[&key("Namespace")],
            Some(vec![
                "metadata.labels".to_owned(),
                "metadata.name".to_owned()
            ])
        );
        // One grant without masks: whole objects.
        assert_eq!(wanted[&key("Service")], None);
    }

    #[test]
    fn a_cache_keeps_a_field_when_it_keeps_it_or_a_parent() {
        let kept = ["metadata.name".to_owned(), "spec".to_owned()];
        let wanted = |fields: &[&str]| fields.iter().map(|f| f.to_string()).collect::<Vec<_>>();
        assert!(keeps(None, &[]));
        assert!(keeps(
            Some(&kept),
            &wanted(&["metadata.name", "spec.rules.host"])
        ));
        assert!(!keeps(Some(&kept), &wanted(&["metadata.namespace"])));
        assert!(!keeps(Some(&kept), &wanted(&["specification"])));
        // The whole object is more than any mask keeps.
        assert!(!keeps(Some(&kept), &[]));
    }
}
