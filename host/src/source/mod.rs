//! Where a policy's module comes from, before the environment loads it: an
//! OCI registry, an HTTPS URL or a local file. [`Fetcher::fetch_policies`]
//! turns every `registry://` and `https://` module of a configuration into a
//! verified local file in the [download store](store), in parallel, each
//! distinct module once; the environment and the compiled cache then see
//! files, keyed by the same sha256 digest as before.
//!
//! A remote server is not trusted to be quick or finite: every fetch has an
//! overall [deadline](Fetcher::with_deadline) (a server that drips bytes
//! trips no per-read timeout), at most [`PARALLEL_FETCHES`] run at once in
//! the process, and every answer is read under a cap as it arrives
//! ([`download`]), the module streamed to disk: a fetch holds a few MB of
//! memory whatever the server sends.
//!
//! - [`uri`]: every accepted spelling of a location;
//! - [`registry`]: pull and resolve over [`distribution`], push through
//!   `oci-client`, in both [artifact] formats;
//! - [`http`]: plain GETs;
//! - [`download`]: capped reads, and how far each fetch has come;
//! - [`store`]: the download directory, keyed by digest;
//! - [`sources`]: `sources.yml` (extra CAs, insecure hosts);
//! - [`credentials`]: Docker's `config.json`.
//! - [`verify`]: signatures checked before a registry module is used
//!   (`--verification-path`), and `sign`.

pub mod artifact;
mod batch;
mod clients;
pub mod credentials;
mod distribution;
pub mod download;
pub mod error;
pub mod http;
pub mod registry;
pub mod sources;
pub mod store;
pub mod uri;
pub mod verify;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_client::Reference;

pub use self::artifact::Format;
pub use self::batch::distinct_fetches;
pub use self::credentials::Credentials;
pub use self::distribution::MAX_MANIFEST_BYTES;
pub use self::download::{Progress, Stage};
pub use self::error::{FetchError, FetchErrors, PolicyFetchError};
pub use self::sources::Sources;
pub use self::store::DownloadStore;
pub use self::uri::{Location, Source, UriError};
pub use self::verify::VerificationConfig;
use crate::digest::Digest;

/// Largest module accepted from a registry or URL (a componentize-py policy
/// is ~18 MB).
pub const MAX_MODULE_BYTES: u64 = 256 << 20;

/// Remote modules fetched at the same time, in the whole process (start-up,
/// a reload, a command): each holds a few MB of buffers while it streams.
pub const PARALLEL_FETCHES: usize = 8;

/// How long one fetch may take, from its start (not its wait for a turn)
/// to its module in the store, unless [`Fetcher::with_deadline`] says
/// otherwise. Generous for any policy module over any link a cluster has,
/// short enough that a registry that drips bytes fails start-up (or a
/// reload) with a message rather than keeping it waiting.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);

/// A registry or server that accepts the connection but stops answering
/// fails the fetch instead of hanging start-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Turns for remote fetches, shared by every [`Fetcher`] of the process (a
/// reload makes a new one, and one superseded may not have let go yet).
static TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PARALLEL_FETCHES);

/// How a module was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOrigin {
    /// A local file, used in place.
    Local,
    /// Downloaded now.
    Pulled,
    /// Found in the download store (fetched by an earlier run, or by another
    /// policy naming the same module).
    Store,
}

impl FetchOrigin {
    /// `local`, `pulled` or `store`, for metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Pulled => "pulled",
            Self::Store => "store",
        }
    }
}

/// A fetched module: where it is, what it is, how it got there.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// The local file.
    pub path: PathBuf,
    /// The module's sha256.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: usize,
    /// Downloaded now, or found.
    pub origin: FetchOrigin,
    /// Bytes transferred for it (0 unless pulled).
    pub downloaded: u64,
    /// How long obtaining it took.
    pub elapsed: Duration,
    /// For a registry module: the manifest digest (the immutable reference).
    pub manifest: Option<String>,
}

impl Fetch {
    fn new(
        path: PathBuf,
        digest: Digest,
        size: usize,
        origin: FetchOrigin,
        downloaded: u64,
        started: Instant,
        manifest: Option<String>,
    ) -> Self {
        Self {
            path,
            digest,
            size,
            origin,
            downloaded,
            elapsed: started.elapsed(),
            manifest,
        }
    }
}

/// Fetches modules: the store, `sources.yml` and the credentials in force.
/// Cheap to clone; clones share clients and locks.
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
    deadline: Duration,
    /// Signatures every registry module must carry, if any.
    verification: Option<Arc<VerificationConfig>>,
}

struct Inner {
    store: DownloadStore,
    sources: Sources,
    credentials: Credentials,
    /// One oci-client per registry host and protocol (pushes), so auth
    /// tokens are reused.
    registry_clients: Mutex<HashMap<String, Vec<oci_client::Client>>>,
    /// One HTTP client per host and TLS verification (pulls, URLs), so
    /// connections are reused.
    http_clients: Mutex<HashMap<(String, bool), reqwest::Client>>,
    /// Held while a module (by digest, or URL) is being downloaded.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Fetcher {
    /// A fetcher that stores into `store`, with `sources` and `credentials`.
    pub fn new(store: DownloadStore, sources: Sources, credentials: Credentials) -> Self {
        // reqwest is built without a default TLS provider; ring is the one
        // the rest of the process uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        store.clean_tmp();
        Self {
            inner: Arc::new(Inner {
                store,
                sources,
                credentials,
                registry_clients: Mutex::default(),
                http_clients: Mutex::default(),
                locks: Mutex::default(),
            }),
            deadline: DEFAULT_DEADLINE,
            verification: None,
        }
    }

    /// The same fetcher, loading a registry module only if its signatures
    /// satisfy `config` (and refusing `https://` modules, which carry none).
    pub fn with_verification(mut self, config: VerificationConfig) -> Self {
        self.verification = Some(Arc::new(config));
        self
    }

    /// The verification config in force, if any.
    pub fn verification(&self) -> Option<&VerificationConfig> {
        self.verification.as_deref()
    }

    /// The same fetcher with another deadline for each fetch (at least 1 s).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline.max(Duration::from_secs(1));
        self
    }

    /// The deadline of each fetch.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The download store.
    pub fn store(&self) -> &DownloadStore {
        &self.inner.store
    }

    /// The credentials in force.
    pub fn credentials(&self) -> &Credentials {
        &self.inner.credentials
    }

    /// Obtains the module `source` names: a local file is hashed in place, a
    /// remote one fetched into the store (or found there).
    pub async fn fetch(&self, source: &Source) -> Result<Fetch, FetchError> {
        self.fetch_tracked(source, &Progress::default()).await
    }

    /// [`fetch`](Self::fetch), reporting how far it has come in `progress`.
    /// A remote fetch waits for its turn (one of [`PARALLEL_FETCHES`]), then
    /// has [`deadline`](Self::deadline) to finish; past it, the fetch is
    /// cancelled (its connection closed, its partial file removed).
    pub async fn fetch_tracked(
        &self,
        source: &Source,
        progress: &Progress,
    ) -> Result<Fetch, FetchError> {
        if !source.is_remote() {
            return self.fetch_now(source, progress).await;
        }
        let _turn = TURNS
            .acquire()
            .await
            .expect("the semaphore is never closed");
        progress.start();
        match tokio::time::timeout(self.deadline, self.fetch_now(source, progress)).await {
            Ok(fetched) => fetched,
            Err(_) => {
                let (stage, received) = (progress.stage().as_str(), progress.received());
                tracing::warn!(
                    uri = %source,
                    deadline_s = self.deadline.as_secs(),
                    stage,
                    received,
                    "module fetch cancelled at its deadline"
                );
                Err(FetchError::TimedOut {
                    deadline: self.deadline,
                    stage,
                    received,
                })
            }
        }
    }

    async fn fetch_now(&self, source: &Source, progress: &Progress) -> Result<Fetch, FetchError> {
        match source.location() {
            Location::File(path) => {
                let started = Instant::now();
                let path = path.clone();
                let hashed = tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || Digest::of_file(&path)
                })
                .await
                .expect("hashing does not panic");
                let (digest, size) = hashed.map_err(|source| FetchError::File {
                    path: path.clone(),
                    source,
                })?;
                Ok(Fetch::new(
                    path,
                    digest,
                    size,
                    FetchOrigin::Local,
                    0,
                    started,
                    None,
                ))
            }
            Location::Registry(reference) => registry::pull(self, reference, progress).await,
            Location::Http(url) => match self.verification() {
                Some(config) => Err(FetchError::NotVerifiable {
                    config: config.origin.clone(),
                }),
                None => http::get(self, url, progress).await,
            },
        }
    }

    /// The manifest digest a registry reference resolves to now (within
    /// the deadline).
    pub async fn resolve(&self, reference: &Reference) -> Result<String, FetchError> {
        let progress = Progress::default();
        progress.start();
        let resolving = registry::resolve(self, reference, &progress);
        tokio::time::timeout(self.deadline, resolving)
            .await
            .unwrap_or_else(|_| {
                Err(FetchError::TimedOut {
                    deadline: self.deadline,
                    stage: progress.stage().as_str(),
                    received: progress.received(),
                })
            })
    }

    /// Pushes the module in `bytes` to `reference`; returns the manifest digest.
    pub async fn push(
        &self,
        bytes: &[u8],
        reference: &Reference,
        format: Format,
    ) -> Result<String, FetchError> {
        registry::push(self, bytes, reference, format).await
    }

    /// Runs `work` on the store on the blocking pool: hashing an 18 MB
    /// module or syncing it to disk must not hold up the runtime's threads
    /// (other fetches, and `serve`'s probes, run on them).
    async fn on_store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&DownloadStore) -> T + Send + 'static,
    ) -> T {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .expect("store work does not panic")
    }

    /// The lock held while `key` is downloaded.
    fn lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.locks.lock().expect("not poisoned");
        locks.entry(key.to_owned()).or_default().clone()
    }

    fn store_error(&self, source: std::io::Error) -> FetchError {
        FetchError::Store {
            dir: self.inner.store.dir().to_owned(),
            source,
        }
    }

    /// Where a TLS error tells the user to add a CA.
    fn sources_hint(&self) -> String {
        match self.inner.sources.origin() {
            Some(path) => format!("now {}", path.display()),
            None => "--sources-path; none is given now".into(),
        }
    }
}
