//! The HTTP clients a [`Fetcher`] reaches hosts with: the system's CAs plus
//! those `sources.yml` adds for the host, without verification for an
//! insecure source, the connect and per-read timeouts. Built once per host
//! and kept, so connections (and oci-client's tokens) are reused.

use oci_client::client::{ClientConfig, ClientProtocol};

use super::error::FetchError;
use super::{CONNECT_TIMEOUT, Fetcher, READ_TIMEOUT};

const USER_AGENT: &str = concat!("portcullis/", env!("CARGO_PKG_VERSION"));

impl Fetcher {
    /// The oci-clients to push to `host` with, in order: HTTPS trusting the
    /// system's and `sources.yml`'s CAs; for an insecure source, HTTPS
    /// without verification and then plain HTTP (Kubewarden's order).
    pub(super) fn registry_client(
        &self,
        host: &str,
    ) -> Result<Vec<oci_client::Client>, FetchError> {
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
            user_agent: USER_AGENT,
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

    /// The clients and schemes to pull from registry `host` with, in the
    /// order of [`registry_client`](Self::registry_client).
    pub(super) fn registry_endpoints(
        &self,
        host: &str,
    ) -> Result<Vec<(reqwest::Client, &'static str)>, FetchError> {
        if self.inner.sources.is_insecure(host) {
            Ok(vec![
                (self.http_client(host, true)?, "https"),
                (self.http_client(host, false)?, "http"),
            ])
        } else {
            Ok(vec![(self.http_client(host, false)?, "https")])
        }
    }

    /// The clients to try for a URL on `host`: verifying first, then (for
    /// an insecure source reached over HTTPS) not.
    pub(super) fn http_clients(
        &self,
        host: &str,
        scheme: &str,
    ) -> Result<Vec<reqwest::Client>, FetchError> {
        if scheme == "https" && self.inner.sources.is_insecure(host) {
            Ok(vec![
                self.http_client(host, false)?,
                self.http_client(host, true)?,
            ])
        } else {
            Ok(vec![self.http_client(host, false)?])
        }
    }

    /// The client for `host`, verifying its certificate or not.
    fn http_client(&self, host: &str, insecure: bool) -> Result<reqwest::Client, FetchError> {
        let key = (host.to_owned(), insecure);
        let mut clients = self.inner.http_clients.lock().expect("not poisoned");
        if let Some(found) = clients.get(&key) {
            return Ok(found.clone());
        }
        let mut roots = Vec::new();
        for certificate in self.inner.sources.authorities(host) {
            roots.extend(
                certificate.to_reqwest().map_err(|e| {
                    FetchError::Protocol(format!("a source authority of {host}: {e}"))
                })?,
            );
        }
        let client = reqwest::Client::builder()
            .tls_certs_merge(roots)
            .tls_danger_accept_invalid_certs(insecure)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| FetchError::Protocol(format!("HTTP client for {host}: {e}")))?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}
