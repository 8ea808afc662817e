//! Prometheus metrics, served as text on the readiness port's `/metrics`.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
    overloaded: Counter<u64, AtomicU64>,
    fetches: Family<FetchLabels, Counter>,
    fetch_bytes: Counter<u64, AtomicU64>,
    fetch_seconds: Family<FetchLabels, Histogram>,
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
        let overloaded = Counter::default();
        registry.register(
            "overload_rejections",
            "Requests refused because every worker was busy and the queue was full",
            overloaded.clone(),
        );
        let fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "policy_fetches",
            "Remote modules obtained at start-up, by origin (pulled now, or found in the download store) and scheme",
            fetches.clone(),
        );
        let fetch_bytes = Counter::default();
        registry.register(
            "policy_fetch_bytes",
            "Bytes downloaded for remote modules at start-up",
            fetch_bytes.clone(),
        );
        let fetch_seconds = Family::<FetchLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 4.0, 10,
            ))
        });
        registry.register(
            "policy_fetch_seconds",
            "Time to obtain a remote module at start-up",
            fetch_seconds.clone(),
        );
        Self {
            registry,
            evaluations,
            evaluation_seconds,
            instantiation_seconds,
            in_flight,
            overloaded,
            fetches,
            fetch_bytes,
            fetch_seconds,
        }
    }

    /// Records one remote module obtained at start-up over `scheme`.
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

    /// Counts a request refused for overload.
    pub fn overloaded(&self) {
        self.overloaded.inc();
    }

    /// Marks an evaluation as running until the guard is dropped.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
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
