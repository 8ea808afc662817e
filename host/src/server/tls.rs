//! TLS for the API: rustls, optional client-certificate verification, and
//! certificate files re-read when they change on disk (rotation without a
//! restart, as cert-manager or a mounted Secret does it).

use std::fs;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use super::TlsFiles;

/// How often the files' modification times are checked.
const POLL: Duration = Duration::from_secs(1);

/// A rustls configuration that follows its files. Clones share it.
#[derive(Clone)]
pub struct ReloadingConfig {
    files: TlsFiles,
    config: Arc<RwLock<Arc<ServerConfig>>>,
    /// The files' modification times when `config` was read.
    stamp: Vec<Option<SystemTime>>,
}

impl ReloadingConfig {
    /// Reads the files; fails if any is unusable.
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        let stamp = stamp(&files);
        let config = Arc::new(RwLock::new(Arc::new(server_config(&files)?)));
        Ok(Self {
            files,
            config,
            stamp,
        })
    }

    /// An acceptor with the current configuration, for one connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.config.read().unwrap_or_else(|e| e.into_inner());
        TlsAcceptor::from(Arc::clone(&current))
    }

    /// Polls the files forever, swapping in a new configuration when they
    /// change. A broken update is logged and the old certificate kept.
    pub async fn watch(self) {
        let mut seen = self.stamp.clone();
        loop {
            tokio::time::sleep(POLL).await;
            let now = stamp(&self.files);
            if now == seen {
                continue;
            }
            match server_config(&self.files) {
                Ok(config) => {
                    *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
                    seen = now;
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                }
                // Files are often replaced one at a time: retry on the next poll.
                Err(error) => tracing::warn!("TLS files changed but cannot be used yet: {error}"),
            }
        }
    }
}

fn stamp(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| fs::metadata(path).and_then(|m| m.modified()).ok())
    .collect()
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: not a PEM private key: {e}", files.key.display()))?;
    let mut config = builder
        .with_single_cert(certificates(&files.cert)?, key)
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(certs)
}
