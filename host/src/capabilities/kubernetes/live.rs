//! The real cluster: the `kube` client (in-cluster configuration, else a
//! kubeconfig), one watch-based cache (a reflector) per granted resource
//! answering lists, a 5-second cache for `get` and `can_i` (Kubewarden's),
//! and API server calls that suspend their evaluation and give up at the
//! deadline they are given.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::api::authorization::v1::{
    SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{GroupVersionKind, TypeMeta};
use kube::discovery::{ApiResource, Scope};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::sync::watch;

use super::objects::Objects;
use super::offline::not_found;
use super::select::{FieldMasks, FieldSelector, LabelSelector};
use super::{Cluster, ClusterFuture, ContextAwareResource, KubeError};

/// How long a `get` or `can_i` answer is reused (Kubewarden's 5 s).
pub const ANSWER_TTL: Duration = Duration::from_secs(5);

/// At most this many answers are cached; beyond, expired ones are dropped
/// (and, if none had expired, all of them).
const CACHED_ANSWERS: usize = 4096;

/// Why the cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No configuration: not in a cluster, no kubeconfig.
    #[error("no Kubernetes configuration: {0}")]
    Config(String),
    /// A cache's first list did not come in (a reload's new grant).
    #[error("cannot cache {resource}: {reason}")]
    Sync {
        /// The resource.
        resource: String,
        /// Why.
        reason: String,
    },
    /// The API server does not serve a granted resource.
    #[error("the API server serves no {resource}: {reason}")]
    Discovery {
        /// The resource.
        resource: String,
        /// Why.
        reason: String,
    },
}

/// One granted resource: where it is served, and its cache.
struct Watched {
    api: ApiResource,
    namespaced: bool,
    objects: Arc<Objects>,
    /// The fields the cache keeps (`None`: whole objects).
    kept: Option<Vec<String>>,
}

/// Whether a cache that keeps `kept` (`None`: everything) holds every field
/// of `wanted` (empty: the whole object).
fn keeps(kept: Option<&[String]>, wanted: &[String]) -> bool {
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
type Key = (String, String);

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
enum Sync {
    /// Not in yet.
    Pending,
    /// In: the cache holds the cluster's objects.
    Synced,
    /// The watch failed before its first list (it keeps retrying).
    Failing(String),
}

/// How long a reload waits for the caches of resources it newly grants.
const RELOAD_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// The cluster behind `--kubeconfig`, `KUBECONFIG` or the in-cluster
/// service account.
pub struct LiveCluster {
    client: kube::Client,
    /// The runtime the client's connections live on (the server's I/O
    /// runtime): evaluations run on one without I/O, so their API calls are
    /// spawned here.
    io: tokio::runtime::Handle,
    /// Swapped whole when a reload adds a cache: reads never wait for it.
    watched: ArcSwap<HashMap<Key, Arc<Watched>>>,
    gets: AnswerCache<(String, String, String, String), Arc<Value>>,
    reviews: AnswerCache<String, SubjectAccessReviewStatus>,
    reflectors: Mutex<HashMap<Key, tokio::task::JoinHandle<()>>>,
    /// Caches are added one change at a time.
    changing: tokio::sync::Mutex<()>,
}

impl Drop for LiveCluster {
    fn drop(&mut self) {
        let reflectors = self.reflectors.lock().unwrap_or_else(|e| e.into_inner());
        for reflector in reflectors.values() {
            reflector.abort();
        }
    }
}

/// `object` with the `apiVersion` and `kind` of `api` if it came without
/// them, as the items of a list do: policies read typed objects.
pub fn typed(mut object: DynamicObject, api: &ApiResource) -> DynamicObject {
    object.types.get_or_insert_with(|| TypeMeta {
        api_version: api.api_version.clone(),
        kind: api.kind.clone(),
    });
    object
}

/// The client: `kubeconfig` when given; else in-cluster when run in a pod;
/// else what `KUBECONFIG` or `~/.kube/config` says.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, ClusterError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display())))?
        }
        // In a pod, its service account; elsewhere what kubectl would use.
        // (kube's `Config::infer` tries a kubeconfig first: a file left in
        // an image must not win over the pod's own identity.)
        None => match kube::Config::incluster() {
            Ok(config) => config,
            Err(in_cluster) => kube::Config::from_kubeconfig(&Default::default())
                .await
                .map_err(|kubeconfig| {
                    ClusterError::Config(format!(
                        "not in a cluster ({in_cluster}) and no kubeconfig ({kubeconfig}): \
                         give --kubeconfig, or set KUBECONFIG"
                    ))
                })?,
        },
    };
    kube::Client::try_from(config).map_err(|e| ClusterError::Config(e.to_string()))
}

fn group_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

impl LiveCluster {
    /// Finds where each of `resources` is served, starts a cache for each,
    /// and returns once every cache holds the cluster's objects — logging
    /// which it waits for. The API server must answer by then; until it
    /// does, this waits (and the server stays unready).
    ///
    /// A resource listed twice with different field masks is cached with
    /// the union of them (or whole, if one has none).
    pub async fn start(
        client: kube::Client,
        resources: &[ContextAwareResource],
    ) -> Result<Arc<Self>, ClusterError> {
        let cluster = Arc::new(Self::new(client, HashMap::new()));
        cluster.watch(resources, None).await?;
        Ok(cluster)
    }

    fn new(client: kube::Client, watched: HashMap<Key, Arc<Watched>>) -> Self {
        Self {
            client,
            io: tokio::runtime::Handle::current(),
            watched: ArcSwap::from_pointee(watched),
            gets: AnswerCache::new(ANSWER_TTL),
            reviews: AnswerCache::new(ANSWER_TTL),
            reflectors: Mutex::default(),
            changing: tokio::sync::Mutex::new(()),
        }
    }

    /// Starts a cache for each of `resources` not cached yet (or cached
    /// with fewer fields than they ask for: that one is replaced by a cache
    /// of both), waits until each holds the cluster's objects, then puts
    /// them in place. With `give_up`, a cache whose watch fails before its
    /// first list, or that is not in within that time, is an error and
    /// nothing changes; without, this waits as long as it takes.
    async fn watch(
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
                    (Sync::Synced, _) | (Sync::Failing(_), Some(_))
                )
            });
            let outcome = match give_up {
                Some(limit) => {
                    let left = limit.saturating_sub(started.elapsed());
                    match tokio::time::timeout(left, synced).await {
                        Ok(Ok(state)) => state.clone(),
                        Ok(Err(_)) => Sync::Failing("its watch stopped".into()),
                        Err(_) => Sync::Failing(format!("no list within {} s", limit.as_secs())),
                    }
                }
                // A closed channel means the reflector task is gone: aborted.
                None => synced.await.map(|s| s.clone()).unwrap_or(Sync::Synced),
            };
            match outcome {
                Sync::Synced => tracing::info!(
                    resource = cache.name,
                    objects = cache.watched.objects.len(),
                    after_ms = started.elapsed().as_millis() as u64,
                    "Kubernetes cache synced"
                ),
                Sync::Failing(reason) => {
                    failure.get_or_insert(ClusterError::Sync {
                        resource: cache.name.clone(),
                        reason,
                    });
                }
                // `wait_for` returns only once the cache synced or failed.
                Sync::Pending => {}
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
        let (synced, ready) = watch::channel(Sync::Pending);
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

    /// A cluster of `client` told where `resources` are served (`api`, and
    /// whether namespaced) instead of asking, and keeping no cache of them:
    /// lists are empty and every uncached `get` goes to the API server. For
    /// measuring what an API server that does not answer costs the host.
    pub fn unwatched(
        client: kube::Client,
        resources: Vec<(ContextAwareResource, ApiResource, bool)>,
    ) -> Arc<Self> {
        let watched = resources
            .into_iter()
            .map(|(resource, api, namespaced)| {
                let watched = Watched {
                    api,
                    namespaced,
                    objects: Arc::new(Objects::default()),
                    kept: None,
                };
                ((resource.api_version, resource.kind), Arc::new(watched))
            })
            .collect();
        Arc::new(Self::new(client, watched))
    }

    fn watched(&self, resource: &ContextAwareResource) -> Result<Arc<Watched>, KubeError> {
        self.watched
            .load()
            .get(&(resource.api_version.clone(), resource.kind.clone()))
            .cloned()
            .ok_or_else(|| {
                KubeError::Invalid(format!("the host does not watch {resource}: not granted"))
            })
    }
}

/// A cache being started.
struct Starting {
    name: String,
    key: Key,
    ready: watch::Receiver<Sync>,
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
    synced: watch::Sender<Sync>,
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
                synced.send_replace(Sync::Synced);
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
                    Sync::Synced => false,
                    _ => {
                        *state = Sync::Failing(error.to_string());
                        true
                    }
                });
            }
        }
    }
}

/// The typed error of a failed API call.
fn api_error(error: kube::Error) -> KubeError {
    match error {
        kube::Error::Api(status) => match status.code {
            404 => KubeError::NotFound(status.message),
            401 | 403 => KubeError::Forbidden(format!(
                "the API server refused Portcullis: {} (see the RBAC `portcullis webhook-config \
                 --rbac` prints)",
                status.message
            )),
            400 | 422 => KubeError::Invalid(status.message),
            code => KubeError::Unavailable(format!(
                "the API server answered {code}: {}",
                status.message
            )),
        },
        other => KubeError::Unavailable(format!("cannot reach the API server: {other}")),
    }
}

/// Runs `call` against the API server on the `io` runtime until `deadline`
/// (the evaluation, suspended meanwhile, holds no worker); a call given up
/// on (or whose evaluation was dropped) is aborted, not left running.
async fn ask<T: Send + 'static>(
    io: &tokio::runtime::Handle,
    deadline: Instant,
    call: impl Future<Output = Result<T, kube::Error>> + Send + 'static,
) -> Result<T, KubeError> {
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut call = AbortOnDrop(io.spawn(call));
    let answer = tokio::time::timeout_at(deadline.into(), &mut call.0).await;
    match answer {
        Ok(Ok(answer)) => answer.map_err(api_error),
        Ok(Err(failed)) => Err(KubeError::Unavailable(format!(
            "the call to the API server failed: {failed}"
        ))),
        Err(_elapsed) => Err(KubeError::Unavailable(
            "the API server did not answer in time (the policy's evaluation deadline)".into(),
        )),
    }
}

impl Cluster for LiveCluster {
    fn prepare<'a>(
        &'a self,
        resources: &'a [ContextAwareResource],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            self.watch(resources, Some(RELOAD_SYNC_TIMEOUT))
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn answers(&self, resource: &ContextAwareResource) -> Result<(), String> {
        match self
            .watched
            .load()
            .get(&(resource.api_version.clone(), resource.kind.clone()))
        {
            None => Err(format!("the server does not watch {resource}")),
            Some(watched) if !keeps(watched.kept.as_deref(), &resource.field_masks) => {
                Err(format!(
                    "the server's cache of {resource} keeps only the fields {}",
                    watched.kept.as_deref().unwrap_or_default().join(", ")
                ))
            }
            Some(_) => Ok(()),
        }
    }

    fn get<'a>(
        &'a self,
        resource: &'a ContextAwareResource,
        namespace: Option<&'a str>,
        name: &'a str,
        bypass_cache: bool,
        deadline: Instant,
    ) -> ClusterFuture<'a, Arc<Value>> {
        Box::pin(async move {
            let watched = self.watched(resource)?;
            let namespace = match (watched.namespaced, namespace) {
                (true, Some(namespace)) => Some(namespace),
                (true, None) => {
                    return Err(KubeError::Invalid(format!(
                        "{resource} is namespaced: the request needs a namespace"
                    )));
                }
                (false, _) => None,
            };
            let key = (
                resource.api_version.clone(),
                resource.kind.clone(),
                namespace.unwrap_or_default().to_owned(),
                name.to_owned(),
            );
            if !bypass_cache && let Some(object) = self.gets.get(&key) {
                return Ok(object);
            }
            let api: Api<DynamicObject> = match namespace {
                Some(namespace) => {
                    Api::namespaced_with(self.client.clone(), namespace, &watched.api)
                }
                None => Api::all_with(self.client.clone(), &watched.api),
            };
            let name_owned = name.to_owned();
            let object = ask(
                &self.io,
                deadline,
                async move { api.get(&name_owned).await },
            )
            .await
            .map_err(|error| match error {
                KubeError::NotFound(_) => not_found(&resource.kind, namespace, name),
                other => other,
            })?;
            let object = watched
                .objects
                .trim(serde_json::to_value(typed(object, &watched.api)).unwrap_or_default());
            let object = Arc::new(object);
            self.gets.put(key, object.clone());
            Ok(object)
        })
    }

    fn list(
        &self,
        resource: &ContextAwareResource,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Result<Vec<Arc<Value>>, KubeError> {
        Ok(self
            .watched(resource)?
            .objects
            .list(namespace, labels, fields))
    }

    fn can_i<'a>(
        &'a self,
        review: SubjectAccessReviewSpec,
        bypass_cache: bool,
        deadline: Instant,
    ) -> ClusterFuture<'a, SubjectAccessReviewStatus> {
        Box::pin(async move {
            let key = serde_json::to_string(&review).unwrap_or_default();
            if !bypass_cache && let Some(status) = self.reviews.get(&key) {
                return Ok(status);
            }
            let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
            let review = SubjectAccessReview {
                spec: review,
                ..Default::default()
            };
            let answer = ask(&self.io, deadline, async move {
                api.create(&PostParams::default(), &review).await
            })
            .await?;
            let status = answer.status.ok_or_else(|| {
                KubeError::Unavailable("the SubjectAccessReview came back without a status".into())
            })?;
            self.reviews.put(key, status.clone());
            Ok(status)
        })
    }
}

/// Answers kept for a while ([`ANSWER_TTL`]).
struct AnswerCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
    ttl: Duration,
}

impl<K: Eq + Hash, V: Clone> AnswerCache<K, V> {
    fn new(ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, value)| value.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHED_ANSWERS {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= CACHED_ANSWERS {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_what_the_caches_hold_is_answered() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let namespaces = ContextAwareResource::new("v1", "Namespace");
        let api = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("", "v1", "Namespace"),
            "namespaces",
        );
        let cluster = LiveCluster::unwatched(client, vec![(namespaces.clone(), api, false)]);
        assert_eq!(cluster.answers(&namespaces), Ok(()));
        let mut masked = namespaces.clone();
        masked.field_masks = vec!["metadata.labels".into()];
        assert_eq!(cluster.answers(&masked), Ok(()));
        let ingresses = ContextAwareResource::new("networking.k8s.io/v1", "Ingress");
        let refused = cluster.answers(&ingresses).unwrap_err();
        assert!(refused.contains("does not watch"), "{refused}");
    }

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

    #[test]
    fn answers_expire_and_the_cache_stays_bounded() {
        let cache = AnswerCache::new(Duration::from_millis(50));
        cache.put("a", 1);
        assert_eq!(cache.get(&"a"), Some(1));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&"a"), None, "expired");
        let cache = AnswerCache::new(Duration::from_secs(60));
        for i in 0..CACHED_ANSWERS + 10 {
            cache.put(i, i);
        }
        let len = cache.entries.lock().unwrap().len();
        assert!(len <= CACHED_ANSWERS, "{len}");
        assert_eq!(cache.get(&(CACHED_ANSWERS + 9)), Some(CACHED_ANSWERS + 9));
    }

    #[test]
    fn api_errors_become_typed_errors() {
        let status = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "m".into(),
                ..Default::default()
            }))
        };
        assert_eq!(api_error(status(404)), KubeError::NotFound("m".into()));
        assert!(matches!(api_error(status(403)), KubeError::Forbidden(m) if m.contains("--rbac")));
        assert_eq!(api_error(status(422)), KubeError::Invalid("m".into()));
        assert!(matches!(api_error(status(503)), KubeError::Unavailable(_)));
    }

    /// What `serve` does: the cluster is set up on the I/O runtime, and
    /// evaluations (which run on a runtime without I/O) read it. The API
    /// server is a real listener on loopback that accepts and never answers.
    #[tokio::test]
    async fn a_get_from_an_evaluation_runtime_waits_on_the_io_runtime_and_gives_up_in_time() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", stalled.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut connections = Vec::new();
            while let Ok((connection, _)) = stalled.accept().await {
                connections.push(connection);
            }
        });
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let namespace = ContextAwareResource::new("v1", "Namespace");
        let api = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Namespace"));
        let cluster = LiveCluster::unwatched(client, vec![(namespace.clone(), api, false)]);
        let evaluations = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let read = evaluations.spawn(async move {
            let started = Instant::now();
            let deadline = started + Duration::from_millis(300);
            let answer = cluster
                .get(&namespace, None, "team-a", false, deadline)
                .await;
            (answer, started.elapsed())
        });
        let (answer, took) = read.await.expect("the read does not panic");
        assert!(
            matches!(&answer, Err(KubeError::Unavailable(m)) if m.contains("in time")),
            "{answer:?}"
        );
        assert!(took < Duration::from_secs(2), "{took:?}");
        evaluations.shutdown_background();
        held.abort();
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_unavailable_in_time() {
        let started = Instant::now();
        let answer: Result<(), KubeError> = ask(
            &tokio::runtime::Handle::current(),
            Instant::now() + Duration::from_millis(50),
            std::future::pending::<Result<(), kube::Error>>(),
        )
        .await;
        assert!(matches!(answer, Err(KubeError::Unavailable(m)) if m.contains("in time")));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
