//! Prometheus metrics, served as text on the readiness port's `/metrics`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::connections::{Connections, Shed};
use crate::enforcement::Outcome;
use crate::source::Fetch;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EvaluationLabels {
    policy: String,
    mode: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    policy: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    listener: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    origin: &'static str,
    scheme: &'static str,
}

/// 50 µs .. ~3.3 s: instantiation lives at the bottom, timeouts at the top.
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 17,
    ))
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    evaluations: Family<EvaluationLabels, Counter>,
    evaluation_seconds: Family<PolicyLabel, Histogram>,
    instantiation_seconds: Family<PolicyLabel, Histogram>,
    in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    overloaded: Family<ReasonLabel, Counter<u64, AtomicU64>>,
    open_connections: Family<ListenerLabel, Gauge>,
    shed_connections: Family<ShedLabels, Counter>,
    shed_requests: Family<ReasonLabel, Counter>,
    buffered_body_bytes: Gauge,
    /// The listeners' connection sets, read when metrics are encoded.
    listeners: Mutex<Vec<(&'static str, Arc<Connections>)>>,
    fetches: Family<FetchLabels, Counter>,
    fetch_bytes: Counter<u64, AtomicU64>,
    fetch_seconds: Family<FetchLabels, Histogram>,
    config_reloads: Family<ResultLabel, Counter>,
    config_reload_success: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `portcullis_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let evaluations = Family::<EvaluationLabels, Counter>::default();
        registry.register(
            "evaluations",
            "Policy evaluations by policy, mode and outcome (in monitor mode, the outcome that was not enforced)",
            evaluations.clone(),
        );
        let evaluation_seconds =
            Family::<PolicyLabel, Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "evaluation_seconds",
            "Time to instantiate a policy and get its verdict",
            evaluation_seconds.clone(),
        );
        let instantiation_seconds =
            Family::<PolicyLabel, Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "instantiation_seconds",
            "Time to create a fresh policy instance",
            instantiation_seconds.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_evaluations",
            "Evaluations running now",
            in_flight.clone(),
        );
        let overloaded = Family::<ReasonLabel, Counter<u64, AtomicU64>>::default();
        registry.register(
            "overload_rejections",
            "Requests answered 503 by reason: queue_full, pushed_out (a policy with a shorter \
             queue took the place), deadline (waited past the webhook timeout), body_budget, \
             instance_pool",
            overloaded.clone(),
        );
        let open_connections = Family::<ListenerLabel, Gauge>::default();
        registry.register(
            "open_connections",
            "Connections open now, by listener (API, probes)",
            open_connections.clone(),
        );
        let shed_connections = Family::<ShedLabels, Counter>::default();
        registry.register(
            "shed_connections",
            "Connections closed or refused at the connection limit: stalled_closed (one whose \
             client owed a request body or taking an answer, or its first request, made room), \
             idle_closed (the longest idle made room), refused (the server was working for \
             every connection)",
            shed_connections.clone(),
        );
        let shed_requests = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "shed_requests",
            "Requests given up on because their client stalled: stalled_body (a body made room \
             in the budget, answered 408), stalled_answer (an answer not taken made room: its \
             connection closed), send_timeout (an answer not taken within \
             --response-send-timeout: its connection closed)",
            shed_requests.clone(),
        );
        let buffered_body_bytes = Gauge::default();
        registry.register(
            "buffered_body_bytes",
            "Bytes held by requests in flight: bodies being read, requests parsed from them, \
             answers not yet written to the socket (bounded by --request-body-budget)",
            buffered_body_bytes.clone(),
        );
        let fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "policy_fetches",
            "Remote modules obtained at start-up and at each reload, by origin (pulled now, or found in the download store) and scheme",
            fetches.clone(),
        );
        let fetch_bytes = Counter::default();
        registry.register(
            "policy_fetch_bytes",
            "Bytes downloaded for remote modules at start-up and at each reload",
            fetch_bytes.clone(),
        );
        let fetch_seconds = Family::<FetchLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 4.0, 10,
            ))
        });
        registry.register(
            "policy_fetch_seconds",
            "Time to obtain a remote module at start-up and at each reload",
            fetch_seconds.clone(),
        );
        let config_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP, --watch) by result: ok (swapped in), error (the \
             previous configuration keeps serving)",
            config_reloads.clone(),
        );
        let config_reload_success = Gauge::default();
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the configuration serving now was loaded (Unix time)",
            config_reload_success.clone(),
        );
        let metrics = Self {
            registry,
            evaluations,
            evaluation_seconds,
            instantiation_seconds,
            in_flight,
            overloaded,
            open_connections,
            shed_connections,
            shed_requests,
            buffered_body_bytes,
            listeners: Mutex::new(Vec::new()),
            fetches,
            fetch_bytes,
            fetch_seconds,
            config_reloads,
            config_reload_success,
        };
        metrics.config_loaded();
        metrics
    }

    /// Counts one configuration reload, swapped in or not.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.config_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
        if ok {
            self.config_loaded();
        }
    }

    fn config_loaded(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.config_reload_success
            .set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    /// Records one remote module obtained at start-up or at a reload over `scheme`.
    pub fn fetched(&self, fetch: &Fetch, scheme: &'static str) {
        let labels = FetchLabels {
            origin: fetch.origin.as_str(),
            scheme,
        };
        self.fetches.get_or_create(&labels).inc();
        self.fetch_bytes.inc_by(fetch.downloaded);
        self.fetch_seconds
            .get_or_create(&labels)
            .observe(fetch.elapsed.as_secs_f64());
    }

    /// Counts one evaluation of `policy`.
    pub fn evaluation(&self, policy: &str, mode: &'static str, outcome: Outcome) {
        self.evaluations
            .get_or_create(&EvaluationLabels {
                policy: policy.to_owned(),
                mode,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Records how long `policy` took to instantiate and to answer.
    pub fn timings(&self, policy: &str, instantiation: Duration, total: Duration) {
        let label = PolicyLabel {
            policy: policy.to_owned(),
        };
        self.instantiation_seconds
            .get_or_create(&label)
            .observe(instantiation.as_secs_f64());
        self.evaluation_seconds
            .get_or_create(&label)
            .observe(total.as_secs_f64());
    }

    /// Counts a request refused for overload, and why.
    pub fn overloaded(&self, reason: &'static str) {
        self.overloaded.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts a connection shed by `listener` at its connection limit.
    pub fn connection_shed(&self, listener: &'static str, reason: &'static str) {
        self.shed_connections
            .get_or_create(&ShedLabels { listener, reason })
            .inc();
    }

    /// Counts `count` requests given up on for `reason`.
    pub fn request_shed(&self, reason: &'static str, count: usize) {
        if count > 0 {
            self.shed_requests
                .get_or_create(&ReasonLabel { reason })
                .inc_by(count as u64);
        }
    }

    /// Counts what was shed to make room in the budget.
    pub(super) fn shed(&self, shed: Shed) {
        self.request_shed("stalled_body", shed.bodies);
        self.request_shed("stalled_answer", shed.answers);
    }

    /// Reports `connections` as `listener`'s open connections.
    pub(super) fn watch_connections(&self, listener: &'static str, connections: Arc<Connections>) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((listener, connections));
    }

    /// Sets the bytes of request bodies held now.
    pub fn buffered_body_bytes(&self, bytes: usize) {
        self.buffered_body_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Marks an evaluation as running until the guard is dropped.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        for (listener, connections) in self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let open = i64::try_from(connections.len()).unwrap_or(i64::MAX);
            self.open_connections
                .get_or_create(&ListenerLabel { listener })
                .set(open);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Decrements the in-flight gauge when dropped.
pub struct InFlight<'a>(&'a Gauge<i64, std::sync::atomic::AtomicI64>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
