//! Where a policy's module comes from, before the environment loads it: an
//! OCI registry, an HTTPS URL or a local file. [`Fetcher::fetch_policies`]
//! turns every `registry://` and `https://` module of a configuration into a
//! verified local file in the [download store](store), in parallel, each
//! distinct module once; the environment and the compiled cache then see
//! files, keyed by the same sha256 digest as before.
//!
//! - [`uri`]: every accepted spelling of a location;
//! - [`registry`]: pull, resolve and push through `oci-client`, in both
//!   [artifact] formats;
//! - [`http`]: plain GETs;
//! - [`store`]: the download directory, keyed by digest;
//! - [`sources`]: `sources.yml` (extra CAs, insecure hosts);
//! - [`credentials`]: Docker's `config.json`.

pub mod artifact;
pub mod credentials;
pub mod error;
pub mod http;
pub mod registry;
pub mod sources;
pub mod store;
pub mod uri;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};

pub use self::artifact::Format;
pub use self::credentials::Credentials;
pub use self::error::{FetchError, FetchErrors, PolicyFetchError};
pub use self::sources::Sources;
pub use self::store::DownloadStore;
pub use self::uri::{Location, Source, UriError};
use crate::component::Digest;
use crate::policy::PolicySpec;

/// Largest module accepted from a registry or URL (a componentize-py policy
/// is ~18 MB).
pub const MAX_MODULE_BYTES: u64 = 256 << 20;

/// Modules fetched at the same time at start-up.
const PARALLEL_FETCHES: usize = 8;

/// A registry or server that accepts the connection but stops answering
/// fails the fetch instead of hanging start-up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Fetches modules: the store, `sources.yml` and the credentials in force.
/// Cheap to clone; clones share clients and locks.
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: DownloadStore,
    sources: Sources,
    credentials: Credentials,
    /// One client per registry host and protocol, so auth tokens are reused.
    registry_clients: Mutex<HashMap<String, Vec<oci_client::Client>>>,
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
                locks: Mutex::default(),
            }),
        }
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
            Location::Registry(reference) => registry::pull(self, reference).await,
            Location::Http(url) => http::get(self, url).await,
        }
    }

    /// The manifest digest a registry reference resolves to now.
    pub async fn resolve(&self, reference: &Reference) -> Result<String, FetchError> {
        registry::resolve(self, reference).await
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

    /// Fetches the remote module of every spec, at most
    /// `PARALLEL_FETCHES` at a time and each distinct location once, and
    /// points each spec's `module` at the local copy. Fails with every
    /// policy that could not be served, not just the first.
    pub async fn fetch_policies(
        &self,
        mut specs: Vec<PolicySpec>,
    ) -> Result<Vec<PolicySpec>, FetchErrors> {
        let mut wanted: Vec<(String, Source)> = Vec::new();
        for spec in &specs {
            if let Some(source) = spec.source.as_ref().filter(|s| s.is_remote()) {
                let key = source.location().canonical();
                if !wanted.iter().any(|(k, _)| *k == key) {
                    wanted.push((key, source.clone()));
                }
            }
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL_FETCHES));
        let mut tasks = tokio::task::JoinSet::new();
        for (key, source) in wanted {
            let fetcher = self.clone();
            let permits = permits.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let result = fetcher.fetch(&source).await;
                (key, result)
            });
        }
        let mut fetched: HashMap<String, Result<Arc<Fetch>, Arc<FetchError>>> = HashMap::new();
        while let Some(joined) = tasks.join_next().await {
            let (key, result) = joined.expect("a fetch task panicked");
            fetched.insert(key, result.map(Arc::new).map_err(Arc::new));
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
        self.log(&specs);
        if errors.is_empty() {
            Ok(specs)
        } else {
            Err(FetchErrors(errors))
        }
    }

    /// One line per fetched module, naming the policies that use it.
    fn log(&self, specs: &[PolicySpec]) {
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

    /// The clients to try for `host`, in order: HTTPS trusting the system's
    /// and `sources.yml`'s CAs; for an insecure source, HTTPS without
    /// verification and then plain HTTP (Kubewarden's order).
    fn registry_client(&self, host: &str) -> Result<Vec<oci_client::Client>, FetchError> {
        let mut clients = self.inner.registry_clients.lock().expect("not poisoned");
        if let Some(found) = clients.get(host) {
            return Ok(found.clone());
        }
        let sources = &self.inner.sources;
        let config = |protocol, insecure| ClientConfig {
            protocol,
            accept_invalid_certificates: insecure,
            extra_root_certificates: sources
                .authorities(host)
                .iter()
                .map(|c| c.to_oci())
                .collect(),
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: concat!("portcullis/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let configs = if sources.is_insecure(host) {
            vec![
                config(ClientProtocol::Https, true),
                config(ClientProtocol::Http, false),
            ]
        } else {
            vec![config(ClientProtocol::Https, false)]
        };
        let built: Result<Vec<_>, _> = configs
            .into_iter()
            .map(oci_client::Client::try_from)
            .collect();
        let built =
            built.map_err(|e| FetchError::Protocol(format!("OCI client for {host}: {e}")))?;
        clients.insert(host.to_owned(), built.clone());
        Ok(built)
    }

    /// The HTTP clients to try for a URL on `host` (see `registry_client`).
    fn http_clients(&self, host: &str, scheme: &str) -> Result<Vec<reqwest::Client>, FetchError> {
        let sources = &self.inner.sources;
        let builder = |insecure: bool| -> Result<reqwest::Client, FetchError> {
            let mut roots = Vec::new();
            for certificate in sources.authorities(host) {
                roots.extend(certificate.to_reqwest().map_err(|e| {
                    FetchError::Protocol(format!("a source authority of {host}: {e}"))
                })?);
            }
            reqwest::Client::builder()
                .tls_certs_merge(roots)
                .tls_danger_accept_invalid_certs(insecure)
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(READ_TIMEOUT)
                .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| FetchError::Protocol(format!("HTTP client for {host}: {e}")))
        };
        if scheme == "https" && sources.is_insecure(host) {
            Ok(vec![builder(false)?, builder(true)?])
        } else {
            Ok(vec![builder(false)?])
        }
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
