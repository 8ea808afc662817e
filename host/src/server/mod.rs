//! `portcullis serve`: the admission webhook.
//!
//! Two listeners: the API (`/validate`, `/validate_raw`, `/audit`), over TLS
//! when certificates are given, and the probes (`/readiness`, `/livez`,
//! `/metrics`) over plain HTTP, like Kubewarden's policy-server; `/metrics`
//! may move to the API, behind its TLS ([`MetricsListener`]).
//!
//! A request crosses the network edge first ([`listener`]: connection cap,
//! timeouts, HTTP/2 limits; [`body`]: size, deadline, byte budgets), then
//! the [`gate`] into the worker pool, then the evaluation; its answer goes
//! back under the same budgets ([`answer`]). What it holds and how fast its
//! client moves it is its [`exchange`]; who makes room when there is none
//! is decided by [`connections`].

mod answer;
mod body;
mod budget;
mod connection;
mod connections;
mod error;
mod exchange;
mod gate;
mod groups;
mod io;
mod listener;
mod metrics;
mod reload;
mod routes;
mod shedding;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use axum::http::StatusCode;
use tokio::sync::watch;

pub use self::body::BodyLimits;
use self::budget::Budget;
use self::connections::Connections;
use self::error::ApiError;
pub use self::gate::{Gate, Lane, Overloaded};
use self::listener::Listener;
pub use self::listener::ListenerLimits;
pub use self::metrics::Metrics;
pub use self::reload::Reloader;
use crate::bindings::AdmissionRequest;
use crate::cache::CompiledCache;
use crate::enforcement::{Decision, Outcome, Purpose, decide};
use crate::engine::Engine;
use crate::environment::Policy;
use crate::evaluation::EvaluationError;
use crate::policy::Configuration;
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
    /// How long a request may wait for a worker, from its arrival: the API
    /// server's webhook timeout, after which nobody reads the answer.
    pub webhook_timeout: Duration,
    /// How request bodies are read.
    pub body: BodyLimits,
    /// The API listener's edge limits.
    pub api_limits: ListenerLimits,
    /// The probe listener's edge limits.
    pub probe_limits: ListenerLimits,
    /// Serve the API over TLS with these files.
    pub tls: Option<TlsFiles>,
    /// Admit every request in this namespace without evaluating it.
    pub always_accept_namespace: Option<String>,
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_grace: Duration,
    /// Which listener serves `/metrics`.
    pub metrics_listener: MetricsListener,
}

/// Which listener serves `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetricsListener {
    /// The probe port, plain HTTP, beside `/readiness` and `/livez` (like
    /// Kubewarden's policy-server): whoever reaches that port reads them.
    #[default]
    Probes,
    /// The API port, behind its TLS and, with a client CA, mTLS: a scraper
    /// needs a client certificate, like the API server.
    Api,
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
    /// What had to happen before the policies could load (pulling them,
    /// syncing Kubernetes caches) failed.
    #[error(transparent)]
    Starting(Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// When a request arrived and how large its body was: what the gate needs
/// to place it.
#[derive(Debug, Clone, Copy)]
struct Received {
    arrived: Instant,
    bytes: usize,
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
    /// The configuration serving now: swapped whole by a reload.
    environment: ArcSwapOption<Environment>,
    ready: AtomicBool,
    gate: Arc<Gate>,
    webhook_timeout: Duration,
    body_limits: BodyLimits,
    body_budget: Budget,
    metrics: Arc<Metrics>,
    always_accept_namespace: Option<String>,
}

impl AppState {
    fn environment(&self) -> Option<Arc<Environment>> {
        self.environment.load_full()
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
        received: Received,
    ) -> Result<Decision, ApiError> {
        let job = Job::Validate(Box::new(request));
        let (result, job) = self.run(policy, job, received).await?;
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
        received: Received,
    ) -> Result<Decision, ApiError> {
        let (result, job) = self.run(policy, Job::Raw(document), received).await?;
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
        received: Received,
    ) -> Result<(Result<crate::Verdict, EvaluationError>, Job), ApiError> {
        let permit = self.enter(policy.id(), received).await?;
        let state = Arc::clone(self);
        let timeout = policy.timeout();
        let policy = Arc::clone(policy);
        // The permit and the gauge follow the evaluation, not the HTTP
        // request: a client that hangs up does not free a busy place. The
        // evaluation computes only while it holds a CPU slot (gate::cpu).
        let evaluation = async move {
            let _in_flight = state.metrics.in_flight();
            let result = match &job {
                Job::Validate(request) => policy.validate(request).await,
                Job::Raw(document) => policy.validate_raw(document).await,
            };
            (result, job)
        };
        let task = self.evaluator.spawn(permit.run(timeout, evaluation));
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
                self.metrics.overloaded("instance_pool");
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("server overloaded: {message}"),
                ))
            }
            result => Ok((result, job)),
        }
    }

    /// Waits for a place in the lane of the policy (or group) `id`, until
    /// the webhook's deadline; overload is answered 503 and counted.
    async fn enter(&self, id: &str, received: Received) -> Result<gate::Permit, ApiError> {
        let deadline = received.arrived + self.webhook_timeout;
        let lane = Lane::new(id, received.bytes);
        self.gate
            .enter(lane, received.arrived, deadline)
            .await
            .map_err(|overloaded| {
                self.metrics.overloaded(overloaded.reason());
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
    shutdown: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<Result<(), ServeError>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    reloader: Reloader,
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
        let _ = self.shutdown.send(true);
        while let Some(joined) = self.tasks.join_next().await {
            joined.expect("a server task panicked")?;
        }
        Ok(())
    }

    /// The handle that swaps the configuration while serving.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Waits until a listener fails (normally never).
    pub async fn wait(&mut self) -> Result<(), ServeError> {
        match self.tasks.join_next().await {
            Some(joined) => joined.expect("a server task panicked"),
            None => Ok(()),
        }
    }
}

/// Starts the probes, loads `configuration` (policies and groups), then
/// serves the API. Returns once both listeners accept connections and every
/// policy is loaded (readiness = 200).
pub async fn start(
    config: ServerConfig,
    engine: Engine,
    configuration: impl Into<Configuration>,
    cache: Option<CompiledCache>,
) -> Result<RunningServer, ServeError> {
    let configuration = configuration.into();
    start_after(config, cache, async move {
        Ok::<_, std::convert::Infallible>((engine, configuration))
    })
    .await
}

/// [`start`], with the engine and the configuration made by `prepare`
/// while the probes already answer: `/livez` 200 and `/readiness` 503, so
/// that a slow registry or API server keeps a replica unready rather than
/// getting it restarted by its liveness probe.
pub async fn start_after<E>(
    config: ServerConfig,
    cache: Option<CompiledCache>,
    prepare: impl Future<Output = Result<(Engine, Configuration), E>>,
) -> Result<RunningServer, ServeError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
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
        environment: ArcSwapOption::empty(),
        ready: AtomicBool::new(false),
        gate: Gate::new(config.workers, config.queue_capacity),
        webhook_timeout: config.webhook_timeout,
        body_budget: Budget::with_reserve(config.body.server_budget, config.body.small_reserve),
        body_limits: config.body.clone(),
        metrics: Arc::new(Metrics::new()),
        always_accept_namespace: config.always_accept_namespace.clone(),
    });
    let (shutdown, stopping) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let grace = config.shutdown_grace;

    // Probes first, so the orchestrator sees "not ready" while policies load.
    let socket = bind("probe listener", config.readiness_addr)?;
    let readiness_addr = local_addr("probe listener", &socket)?;
    let metrics_on_api = config.metrics_listener == MetricsListener::Api;
    let probes = Listener {
        name: "probes",
        socket,
        tls: None,
        router: routes::probes(state.clone(), !metrics_on_api),
        limits: config.probe_limits.clone(),
        // Probe requests carry no body worth keeping.
        connections: Connections::new(
            config.probe_limits.max_connections,
            0,
            Budget::new(0),
            config.probe_limits.stalled_after,
        ),
    };
    let metrics = Arc::clone(&state.metrics);
    let stopping_probes = stopping.clone();
    tasks.spawn(async move {
        let served = probes.serve(metrics, stopping_probes, grace).await;
        served.map_err(listen_error("probe listener", readiness_addr))
    });
    tracing::info!(%readiness_addr, "probes listening; loading policies");

    let (engine, configuration) = prepare
        .await
        .map_err(|error| ServeError::Starting(error.into()))?;
    // As much memory as evaluations at the memory limit on all workers but
    // one: what long evaluations could hold when each held a worker.
    let memory = engine.limits().memory_bytes;
    let workers = config.workers.max(2) - 1;
    state.gate.limit_memory(memory.saturating_mul(workers));
    let specs: Vec<_> = configuration.specs().cloned().collect();
    for (fetch, scheme) in crate::source::distinct_fetches(&specs) {
        state.metrics.fetched(&fetch, scheme);
    }
    let environment =
        Environment::load_configuration(&engine, configuration, cache.as_ref()).await?;
    state.environment.store(Some(Arc::new(environment)));

    let socket = bind("API listener", config.api_addr)?;
    let api_addr = local_addr("API listener", &socket)?;
    let tls = match &config.tls {
        None => None,
        Some(files) => Some(tls::ReloadingConfig::load(files.clone()).map_err(ServeError::Tls)?),
    };
    let watcher = tls.clone().map(|tls| tokio::spawn(tls.watch()));
    let api = Listener {
        name: "API",
        socket,
        tls,
        router: routes::api(state.clone(), metrics_on_api),
        limits: config.api_limits.clone(),
        connections: Connections::new(
            config.api_limits.max_connections,
            config.body.connection_budget,
            state.body_budget.clone(),
            config.api_limits.stalled_after,
        ),
    };
    let metrics = Arc::clone(&state.metrics);
    tasks.spawn(async move {
        let served = api.serve(metrics, stopping, grace).await;
        served.map_err(listen_error("API listener", api_addr))
    });
    state.ready.store(true, Ordering::Release);
    tracing::info!(%api_addr, %readiness_addr, tls = config.tls.is_some(), "serving");
    Ok(RunningServer {
        api_addr,
        readiness_addr,
        shutdown,
        tasks,
        watcher,
        reloader: Reloader::new(state, cache),
        _evaluator: evaluator,
    })
}

/// Connections the kernel completes for a listener before it accepts them.
/// A burst past the backlog waits for SYN retransmissions (seconds); the
/// connection cap, not the backlog, is what bounds connections.
const BACKLOG: u32 = 1024;

fn bind(what: &'static str, addr: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(listen_error(what, addr))?;
    socket
        .set_reuseaddr(true)
        .map_err(listen_error(what, addr))?;
    socket.bind(addr).map_err(listen_error(what, addr))?;
    socket.listen(BACKLOG).map_err(listen_error(what, addr))
}

fn local_addr(
    what: &'static str,
    listener: &tokio::net::TcpListener,
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
