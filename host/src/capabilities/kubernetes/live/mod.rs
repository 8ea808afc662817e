//! The real cluster: the `kube` client (in-cluster configuration, else a
//! kubeconfig, `api`), one watch-based cache (a reflector) per granted
//! resource answering lists (`caches`), a 5-second cache for `get` and
//! `can_i` (Kubewarden's, `answers`), and API server calls that suspend
//! their evaluation and give up at the deadline they are given.

mod answers;
mod api;
mod caches;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use k8s_openapi::api::authorization::v1::{
    SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use serde_json::Value;

pub use self::answers::ANSWER_TTL;
use self::answers::AnswerCache;
use self::api::ask;
pub use self::api::{client, typed};
use self::caches::{Key, Watched, keeps};
use super::objects::Objects;
use super::offline::not_found;
use super::select::{FieldSelector, LabelSelector};
use super::{Cluster, ClusterFuture, ContextAwareResource, KubeError};

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

/// Where a resource is served, as [`LiveCluster::unwatched`] is told.
pub struct Served {
    /// The resource.
    pub resource: ContextAwareResource,
    /// Where the API server serves it.
    pub api: ApiResource,
    /// Whether it is namespaced.
    pub namespaced: bool,
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

    /// A cluster of `client` told where `resources` are served (`api`, and
    /// whether namespaced) instead of asking, and keeping no cache of them:
    /// lists are empty and every uncached `get` goes to the API server. For
    /// measuring what an API server that does not answer costs the host.
    pub fn unwatched(client: kube::Client, resources: Vec<Served>) -> Arc<Self> {
        let watched = resources
            .into_iter()
            .map(|served| {
                let Served {
                    resource,
                    api,
                    namespaced,
                } = served;
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

#[cfg(test)]
mod tests {
    use kube::core::GroupVersionKind;

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
        let cluster = LiveCluster::unwatched(
            client,
            vec![Served {
                resource: namespaces.clone(),
                api,
                namespaced: false,
            }],
        );
        assert_eq!(cluster.answers(&namespaces), Ok(()));
        let mut masked = namespaces.clone();
        masked.field_masks = vec!["metadata.labels".into()];
        assert_eq!(cluster.answers(&masked), Ok(()));
        let ingresses = ContextAwareResource::new("networking.k8s.io/v1", "Ingress");
        let refused = cluster.answers(&ingresses).unwrap_err();
        assert!(refused.contains("does not watch"), "{refused}");
    }

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
        let cluster = LiveCluster::unwatched(
            client,
            vec![Served {
                resource: namespace.clone(),
                api,
                namespaced: false,
            }],
        );
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
}
