//! A real `portcullis` server on 127.0.0.1 (ephemeral ports), loaded with
//! real components, for tests that speak HTTP(S) to it.

use std::net::SocketAddr;
use std::time::Duration;

use portcullis::server::{BodyLimits, ListenerLimits, RunningServer, ServerConfig};
use portcullis::{Configuration, Limits, config};

use crate::{engine_with, shared_cache, target_dir};

/// The configuration tests start from: loopback, ephemeral ports, 4 workers.
pub fn test_config() -> ServerConfig {
    ServerConfig {
        api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        readiness_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        workers: 4,
        queue_capacity: 256,
        webhook_timeout: Duration::from_secs(10),
        body: BodyLimits {
            max_bytes: 1 << 20,
            ..BodyLimits::default()
        },
        api_limits: ListenerLimits::default(),
        probe_limits: ListenerLimits::probes(&ListenerLimits::default(), 32),
        tls: None,
        always_accept_namespace: None,
        shutdown_grace: Duration::from_secs(10),
        metrics_listener: Default::default(),
    }
}

/// A server started for one test.
pub struct TestServer {
    /// The running server; `shutdown` consumes it.
    pub server: RunningServer,
    /// Base URL of the API, e.g. `http://127.0.0.1:40123`.
    pub api: String,
    /// Base URL of the probes.
    pub probes: String,
}

impl TestServer {
    /// Starts a server for `policies` (policies.yml text whose relative modules
    /// are the built components), with `config` and `limits`.
    pub async fn start_with(policies: &str, config: ServerConfig, limits: Limits) -> Self {
        let components = target_dir().join("wasm32-wasip2/policy");
        let specs = config::parse(policies, &components, "test policies").unwrap();
        Self::start_specs(specs, config, limits).await
    }

    /// Starts a server for `specs` (policies, or a whole configuration with
    /// groups; remote modules already fetched), with `config` and `limits`.
    pub async fn start_specs(
        specs: impl Into<Configuration>,
        config: ServerConfig,
        limits: Limits,
    ) -> Self {
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let server =
            portcullis::server::start(config, engine_with(limits), specs, Some(shared_cache()))
                .await
                .unwrap();
        Self {
            api: format!("{scheme}://{}", server.api_addr),
            probes: format!("http://{}", server.readiness_addr),
            server,
        }
    }

    /// Starts a plain-HTTP server for `policies` with the test defaults.
    pub async fn start(policies: &str) -> Self {
        Self::start_with(policies, test_config(), Limits::default()).await
    }

    /// The URL of `path` on the API.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }
}
