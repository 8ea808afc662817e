//! `portcullis serve`: the admission webhook.
//!
//! Two listeners: the API (`/validate`, `/validate_raw`, `/audit`), over TLS
//! when certificates are given, and the probes (`/readiness`, `/livez`,
//! `/metrics`) over plain HTTP, like Kubewarden's policy-server.

mod error;
mod gate;
mod metrics;
mod routes;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::StatusCode;
use axum_server::Handle;

use self::error::ApiError;
pub use self::gate::{Gate, Overloaded};
pub use self::metrics::Metrics;
use crate::bindings::AdmissionRequest;
use crate::cache::CompiledCache;
use crate::enforcement::{Decision, Outcome, Purpose, decide};
use crate::engine::Engine;
use crate::environment::Policy;
use crate::evaluation::EvaluationError;
use crate::policy::PolicySpec;
use crate::{Environment, LoadError};

/// Everything `serve` needs, already parsed.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The API's address.
    pub api_addr: SocketAddr,
    /// The probes' address.
    pub readiness_addr: SocketAddr,
    /// Evaluations that may run at once.
    pub workers: usize,
    /// Requests that may wait for a worker before new ones are refused.
    pub queue_capacity: usize,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Serve the API over TLS with these files.
    pub tls: Option<TlsFiles>,
    /// Admit every request in this namespace without evaluating it.
    pub always_accept_namespace: Option<String>,
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_grace: Duration,
}

/// Certificate files, re-read when they change on disk.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server certificate chain (PEM).
    pub cert: PathBuf,
    /// The server private key (PEM).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A policy could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A listener could not be bound or failed.
    #[error("{what} {addr}: {source}")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// Its address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS files are unusable.
    #[error("TLS: {0}")]
    Tls(String),
}

/// What an evaluation task is asked to do; it comes back with the result.
enum Job {
    // Boxed: a request is far larger than a raw document's String.
    Validate(Box<AdmissionRequest>),
    Raw(String),
}

/// State shared by every handler.
pub struct AppState {
    evaluator: tokio::runtime::Handle,
    environment: OnceLock<Environment>,
    ready: AtomicBool,
    gate: Gate,
    metrics: Metrics,
    always_accept_namespace: Option<String>,
}

impl AppState {
    fn environment(&self) -> Option<&Environment> {
        self.environment.get()
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Evaluates `request` with `policy` and applies its declared semantics.
    async fn evaluate(
        self: &Arc<Self>,
        policy: &Arc<Policy>,
        request: AdmissionRequest,
        purpose: Purpose,
    ) -> Result<Decision, ApiError> {
        let (result, job) = self.run(policy, Job::Validate(Box::new(request))).await?;
        let Job::Validate(request) = job else {
            unreachable!("the job comes back as it went")
        };
        let object = request.object.as_deref();
        Ok(self.record(policy, &request.uid, object, result, purpose))
    }

    /// Evaluates a raw `document` with `policy`.
    async fn evaluate_raw(
        self: &Arc<Self>,
        policy: &Arc<Policy>,
        uid: &str,
        document: String,
    ) -> Result<Decision, ApiError> {
        let (result, job) = self.run(policy, Job::Raw(document)).await?;
        let Job::Raw(document) = job else {
            unreachable!("the job comes back as it went")
        };
        Ok(self.record(policy, uid, Some(&document), result, Purpose::Admission))
    }

    /// Runs `job` on the evaluation runtime, once the gate lets it in.
    ///
    /// Policies run on their own threads, never on the ones serving HTTP: a
    /// policy spinning until its deadline slows other evaluations a little,
    /// but cannot delay accepting, parsing or answering requests.
    async fn run(
        self: &Arc<Self>,
        policy: &Arc<Policy>,
        job: Job,
    ) -> Result<(Result<crate::Verdict, EvaluationError>, Job), ApiError> {
        let permit = self.enter().await?;
        let state = Arc::clone(self);
        let policy = Arc::clone(policy);
        let task = self.evaluator.spawn(async move {
            // The permit and the gauge follow the evaluation, not the HTTP
            // request: a client that hangs up does not free a busy worker.
            let _permit = permit;
            let _in_flight = state.metrics.in_flight();
            let result = match &job {
                Job::Validate(request) => policy.validate(request).await,
                Job::Raw(document) => policy.validate_raw(document).await,
            };
            (result, job)
        });
        let (result, job) = task.await.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("evaluation task failed: {e}"),
            )
        })?;
        match result {
            // An instance pool with no free slot is overload too: answer it
            // like a full queue, not like a policy failure.
            Err(EvaluationError::Overloaded(message)) => {
                self.metrics.overloaded();
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("server overloaded: {message}"),
                ))
            }
            result => Ok((result, job)),
        }
    }

    async fn enter(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.gate.enter().await.map_err(|overloaded| {
            self.metrics.overloaded();
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, overloaded.to_string())
        })
    }

    fn record(
        &self,
        policy: &Policy,
        uid: &str,
        object: Option<&str>,
        result: Result<crate::Verdict, EvaluationError>,
        purpose: Purpose,
    ) -> Decision {
        let result = match result {
            Ok(verdict) => {
                self.metrics
                    .timings(policy.id(), verdict.instantiation, verdict.total);
                Ok(verdict.response)
            }
            Err(error) => {
                tracing::warn!(policy = policy.id(), %uid, %error, "evaluation failed");
                Err(error)
            }
        };
        let decision = decide(policy, uid, object, result, purpose);
        let mode = match purpose {
            Purpose::Admission => policy.spec().mode.as_str(),
            Purpose::Audit => "audit",
        };
        self.metrics.evaluation(policy.id(), mode, decision.outcome);
        if decision.outcome != Outcome::Error {
            tracing::debug!(policy = policy.id(), %uid, outcome = decision.outcome.as_str(), "evaluated");
        }
        decision
    }
}

/// A running server: its bound addresses, and the handle that stops it.
pub struct RunningServer {
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// Where the probes listen.
    pub readiness_addr: SocketAddr,
    api: Handle<SocketAddr>,
    probes: Handle<SocketAddr>,
    grace: Duration,
    tasks: tokio::task::JoinSet<Result<(), ServeError>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    _evaluator: Evaluator,
}

/// The runtime policies run on. Dropping a runtime blocks, which is not
/// allowed inside another one, so it is shut down in the background: its
/// threads finish their current evaluations (bounded by deadlines) and exit.
struct Evaluator(Option<tokio::runtime::Runtime>);

impl Drop for Evaluator {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl RunningServer {
    /// Stops accepting connections, lets in-flight requests finish (up to the
    /// grace period), and returns when both listeners are closed.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
        self.api.graceful_shutdown(Some(self.grace));
        self.probes.graceful_shutdown(Some(self.grace));
        while let Some(joined) = self.tasks.join_next().await {
            joined.expect("a server task panicked")?;
        }
        Ok(())
    }

    /// Waits until a listener fails (normally never).
    pub async fn wait(&mut self) -> Result<(), ServeError> {
        match self.tasks.join_next().await {
            Some(joined) => joined.expect("a server task panicked"),
            None => Ok(()),
        }
    }
}

/// Starts the probes, loads `specs`, then serves the API. Returns once both
/// listeners accept connections and every policy is loaded (readiness = 200).
pub async fn start(
    config: ServerConfig,
    engine: Engine,
    specs: Vec<PolicySpec>,
    cache: Option<CompiledCache>,
) -> Result<RunningServer, ServeError> {
    // Policies run on a runtime of their own, one thread per worker.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers.max(1))
        .thread_name("portcullis-eval")
        .enable_time()
        .build()
        .map_err(|source| ServeError::Listen {
            what: "evaluation runtime",
            addr: config.api_addr,
            source,
        })?;
    let handle = runtime.handle().clone();
    let evaluator = Evaluator(Some(runtime));
    let state = Arc::new(AppState {
        evaluator: handle,
        environment: OnceLock::new(),
        ready: AtomicBool::new(false),
        gate: Gate::new(config.workers, config.queue_capacity),
        metrics: Metrics::new(),
        always_accept_namespace: config.always_accept_namespace.clone(),
    });
    for (fetch, scheme) in crate::source::distinct_fetches(&specs) {
        state.metrics.fetched(&fetch, scheme);
    }
    let mut tasks = tokio::task::JoinSet::new();

    // Probes first, so the orchestrator sees "not ready" while policies load.
    let probes = Handle::new();
    let listener = bind("probe listener", config.readiness_addr)?;
    let readiness_addr = local_addr("probe listener", &listener)?;
    let server =
        axum_server::from_tcp(listener).map_err(listen_error("probe listener", readiness_addr))?;
    tracing::info!(%readiness_addr, "probes listening; loading policies");
    let router = routes::probes(state.clone());
    let handle = probes.clone();
    tasks.spawn(async move {
        server
            .handle(handle)
            .serve(router.into_make_service())
            .await
            .map_err(listen_error("probe listener", readiness_addr))
    });

    let environment = Environment::load(&engine, specs, cache.as_ref()).await?;
    let _ = state.environment.set(environment);

    let api = Handle::new();
    let mut watcher = None;
    let listener = bind("API listener", config.api_addr)?;
    let api_addr = local_addr("API listener", &listener)?;
    let router = routes::api(state.clone(), config.body_limit);
    let handle = api.clone();
    // The one difference between HTTP and HTTPS is the acceptor; the served
    // future is boxed so both are spawned (and fail) the same way.
    let serving: Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match &config.tls {
        None => {
            let server =
                axum_server::from_tcp(listener).map_err(listen_error("API listener", api_addr))?;
            Box::pin(server.handle(handle).serve(router.into_make_service()))
        }
        Some(files) => {
            let rustls = tls::ReloadingConfig::load(files.clone()).map_err(ServeError::Tls)?;
            let server = axum_server::from_tcp_rustls(listener, rustls.axum_config())
                .map_err(listen_error("API listener", api_addr))?;
            watcher = Some(tokio::spawn(rustls.watch()));
            Box::pin(server.handle(handle).serve(router.into_make_service()))
        }
    };
    tasks.spawn(async move {
        serving
            .await
            .map_err(listen_error("API listener", api_addr))
    });
    state.ready.store(true, Ordering::Release);
    tracing::info!(%api_addr, %readiness_addr, tls = config.tls.is_some(), "serving");
    Ok(RunningServer {
        api_addr,
        readiness_addr,
        api,
        probes,
        grace: config.shutdown_grace,
        tasks,
        watcher,
        _evaluator: evaluator,
    })
}

fn bind(what: &'static str, addr: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    let listener = std::net::TcpListener::bind(addr).map_err(listen_error(what, addr))?;
    listener
        .set_nonblocking(true)
        .map_err(listen_error(what, addr))?;
    Ok(listener)
}

fn local_addr(
    what: &'static str,
    listener: &std::net::TcpListener,
) -> Result<SocketAddr, ServeError> {
    listener.local_addr().map_err(|source| ServeError::Listen {
        what,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}

fn listen_error(what: &'static str, addr: SocketAddr) -> impl Fn(std::io::Error) -> ServeError {
    move |source| ServeError::Listen { what, addr, source }
}
