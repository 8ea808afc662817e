//! OCI registries, through `oci-client`: pull a module (either artifact
//! format), resolve a reference to its manifest digest, push a module.
//!
//! oci-client checks a pulled manifest against the digest in the reference
//! and the registry's `Docker-Content-Digest`, and a layer against its
//! descriptor's digest while it streams; the store checks both again before
//! anything is reused.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciManifest};
use oci_client::{Reference, RegistryOperation};

use super::artifact::{self, Format};
use super::error::{self, FetchError};
use super::store::{DownloadStore, ResolvedRef};
use super::{Fetch, FetchOrigin, Fetcher, MAX_MODULE_BYTES};
use crate::component::Digest;

/// Every manifest media type a registry may answer with.
const MANIFEST_TYPES: &[&str] = &[
    oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
    oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// Largest manifest accepted (they are a few hundred bytes).
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Fetches the module `reference` names. A reference with a digest, or a tag
/// other than `latest`, already in the store is used without asking the
/// registry (Kubewarden's rule); `latest` is always resolved again.
pub(super) async fn pull(fetcher: &Fetcher, reference: &Reference) -> Result<Fetch, FetchError> {
    let started = Instant::now();
    let uri = canonical(reference);
    let latest = reference.digest().is_none() && reference.tag() == Some("latest");
    let stored = if latest {
        None
    } else {
        let (uri, pinned) = (uri.clone(), reference.digest().map(str::to_owned));
        fetcher
            .on_store(move |store| from_store(store, &uri, pinned.as_deref()))
            .await
    };
    if let Some((resolved, path, size)) = stored {
        return Ok(Fetch::new(
            path,
            resolved.digest.parse().map_err(FetchError::Protocol)?,
            size,
            FetchOrigin::Store,
            0,
            started,
            resolved.manifest,
        ));
    }

    let clients = fetcher.registry_client(reference.resolve_registry())?;
    let login = fetcher.credentials().login(reference.resolve_registry());
    let auth = &login.auth;
    let (client, manifest) = answering(clients, |client| async move {
        client
            .pull_manifest_raw(reference, auth, MANIFEST_TYPES)
            .await
    })
    .await;
    let (manifest_bytes, manifest_digest) =
        manifest.map_err(|e| classify(fetcher, reference, &login.origin, e))?;
    if manifest_bytes.len() > MAX_MANIFEST_BYTES {
        return Err(FetchError::Protocol(format!(
            "the manifest is larger than {MAX_MANIFEST_BYTES} bytes"
        )));
    }
    let manifest: OciManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| FetchError::Protocol(format!("the manifest is not valid JSON: {e}")))?;
    let layer = artifact::wasm_layer(&manifest)?;
    let digest: Digest = layer.digest.parse().map_err(|_| {
        FetchError::Protocol(format!(
            "layer digest `{}`: only sha256 layers are supported",
            layer.digest
        ))
    })?;
    if u64::try_from(layer.size).is_ok_and(|size| size > MAX_MODULE_BYTES) {
        return Err(FetchError::TooLarge {
            limit: MAX_MODULE_BYTES,
        });
    }

    // Two references to the same module download it once: the second waits
    // here and then finds it in the store.
    let lock = fetcher.lock(&layer.digest);
    let _held = lock.lock().await;
    let (path, size, origin, downloaded) = match fetcher.on_store(move |s| s.blob(&digest)).await {
        Some((path, size)) => (path, size, FetchOrigin::Store, 0),
        None => {
            let bytes = download(fetcher, &client, reference, layer, &login.origin).await?;
            let size = bytes.len();
            let (path, stored) = fetcher
                .on_store(move |s| s.put_blob(&bytes))
                .await
                .map_err(|e| fetcher.store_error(e))?;
            if stored != digest {
                // oci-client verified the stream; a store that disagrees is broken.
                return Err(FetchError::DigestMismatch {
                    what: "layer",
                    expected: digest.to_string(),
                    actual: stored.to_string(),
                });
            }
            (path, size, FetchOrigin::Pulled, size as u64)
        }
    };
    let store = fetcher.store();
    store
        .put_manifest(&manifest_digest, &manifest_bytes)
        .map_err(|e| fetcher.store_error(e))?;
    let pinned = canonical(&Reference::with_digest(
        reference.registry().to_owned(),
        reference.repository().to_owned(),
        manifest_digest.clone(),
    ));
    for uri in [uri, pinned] {
        let resolved = ResolvedRef {
            uri,
            manifest: Some(manifest_digest.clone()),
            digest: digest.to_string(),
        };
        store
            .put_resolved(&resolved)
            .map_err(|e| fetcher.store_error(e))?;
    }
    Ok(Fetch::new(
        path,
        digest,
        size,
        origin,
        downloaded,
        started,
        Some(manifest_digest),
    ))
}

/// The manifest digest `reference` resolves to now (asks the registry).
pub(super) async fn resolve(
    fetcher: &Fetcher,
    reference: &Reference,
) -> Result<String, FetchError> {
    let clients = fetcher.registry_client(reference.resolve_registry())?;
    let login = fetcher.credentials().login(reference.resolve_registry());
    let auth = &login.auth;
    let (_, digest) = answering(clients, |client| async move {
        client.fetch_manifest_digest(reference, auth).await
    })
    .await;
    digest.map_err(|e| classify(fetcher, reference, &login.origin, e))
}

/// Pushes `module` to `reference` in `format`; returns the manifest digest.
pub(super) async fn push(
    fetcher: &Fetcher,
    module: &[u8],
    reference: &Reference,
    format: Format,
) -> Result<String, FetchError> {
    let created = match std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    {
        // Reproducible builds: the same module pushed twice is the same artifact.
        Some(epoch) => chrono::DateTime::from_timestamp(epoch, 0).unwrap_or_default(),
        None => chrono::Utc::now(),
    }
    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let artifact = artifact::build(module, format, created).map_err(FetchError::Protocol)?;
    let clients = fetcher.registry_client(reference.resolve_registry())?;
    let login = fetcher.credentials().login(reference.resolve_registry());
    let fail = |e| classify(fetcher, reference, &login.origin, e);
    let auth = &login.auth;
    let (client, authenticated) = answering(clients, |client| async move {
        client.auth(reference, auth, RegistryOperation::Push).await
    })
    .await;
    authenticated.map_err(fail)?;
    client
        .push_blob(reference, module.to_vec(), &artifact.layer_digest)
        .await
        .map_err(fail)?;
    let (config, config_digest) = artifact.config;
    client
        .push_blob(reference, config, &config_digest)
        .await
        .map_err(fail)?;
    let digest = format!("sha256:{}", Digest::of(&artifact.manifest).hex());
    let content_type = artifact
        .manifest_media_type
        .parse()
        .expect("a valid header value");
    client
        .push_manifest_raw(reference, artifact.manifest, content_type)
        .await
        .map_err(fail)?;
    Ok(digest)
}

/// Runs `call` with each client in turn until one reaches the registry (for
/// an insecure source: HTTPS without verification, then HTTP); returns that
/// client and its answer, or the last client's transport error.
async fn answering<T, F, Fut>(
    clients: Vec<oci_client::Client>,
    mut call: F,
) -> (oci_client::Client, Result<T, OciDistributionError>)
where
    F: FnMut(oci_client::Client) -> Fut,
    Fut: Future<Output = Result<T, OciDistributionError>>,
{
    let last = clients.len().saturating_sub(1);
    let mut clients = clients.into_iter().enumerate();
    loop {
        let (index, client) = clients.next().expect("at least one client");
        // Clients share their connection pool and auth state when cloned.
        let result = call(client.clone()).await;
        if index < last && matches!(result, Err(OciDistributionError::RequestError(_))) {
            continue;
        }
        return (client, result);
    }
}

/// `registry://HOST/REPO[:TAG][@DIGEST]`.
pub fn canonical(reference: &Reference) -> String {
    format!("registry://{}", reference.whole())
}

/// The stored module for `uri`, when the store has a sound copy whose
/// manifest still names it (and, for a pinned digest, is that digest).
fn from_store(
    store: &DownloadStore,
    uri: &str,
    pinned: Option<&str>,
) -> Option<(ResolvedRef, std::path::PathBuf, usize)> {
    let resolved = store.resolved(uri)?;
    let manifest_digest = resolved.manifest.as_deref()?;
    if pinned.is_some_and(|pinned| pinned != manifest_digest) {
        return None;
    }
    let manifest: OciManifest = serde_json::from_slice(&store.manifest(manifest_digest)?).ok()?;
    let layer = artifact::wasm_layer(&manifest).ok()?;
    if layer.digest != resolved.digest {
        return None;
    }
    let (path, size) = store.blob(&resolved.digest.parse().ok()?)?;
    Some((resolved, path, size))
}

/// Streams the layer into memory, at most `MAX_MODULE_BYTES`, and checks
/// that it is wasm.
async fn download(
    fetcher: &Fetcher,
    client: &oci_client::Client,
    reference: &Reference,
    layer: &OciDescriptor,
    login: &str,
) -> Result<Vec<u8>, FetchError> {
    let received = Arc::new(AtomicU64::new(0));
    let mut sink = CappedSink {
        bytes: Vec::with_capacity(usize::try_from(layer.size).unwrap_or(0).min(64 << 20)),
        received: received.clone(),
    };
    let result = client.pull_blob(reference, layer, &mut sink).await;
    if let Err(e) = result {
        let received = received.load(Ordering::Relaxed);
        return Err(match e {
            OciDistributionError::DigestError(e) => FetchError::DigestMismatch {
                what: "layer",
                expected: layer.digest.clone(),
                actual: match e {
                    oci_client::errors::DigestError::VerificationError { actual, .. } => actual,
                    other => other.to_string(),
                },
            },
            OciDistributionError::IoError(io) if io.kind() == std::io::ErrorKind::FileTooLarge => {
                FetchError::TooLarge {
                    limit: MAX_MODULE_BYTES,
                }
            }
            // The response had started: whatever stopped it stopped a
            // transfer under way.
            e if received > 0 => FetchError::Interrupted {
                received,
                expected: layer.size.to_string(),
                detail: error::chain(&e),
            },
            e => classify(fetcher, reference, login, e),
        });
    }
    let bytes = sink.bytes;
    if artifact::kind_of(&bytes).is_err() {
        return Err(FetchError::NotWasm {
            start: error::start_of(&bytes),
        });
    }
    Ok(bytes)
}

/// Collects a blob, refusing more than `MAX_MODULE_BYTES`.
struct CappedSink {
    bytes: Vec<u8>,
    received: Arc<AtomicU64>,
}

impl tokio::io::AsyncWrite for CappedSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if (self.bytes.len() + buf.len()) as u64 > MAX_MODULE_BYTES {
            return Poll::Ready(Err(std::io::ErrorKind::FileTooLarge.into()));
        }
        self.bytes.extend_from_slice(buf);
        self.received.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Turns an oci-client error into one that names the host, the credentials
/// and what to change.
fn classify(
    fetcher: &Fetcher,
    reference: &Reference,
    login: &str,
    error: OciDistributionError,
) -> FetchError {
    let host = reference.registry().to_owned();
    let repository = format!("{host}/{}", reference.repository());
    let denied = |status| FetchError::Denied {
        status,
        host: host.clone(),
        what: format!("`{repository}`"),
        login: login.to_owned(),
    };
    match error {
        OciDistributionError::RequestError(e) => {
            error::transport(&host, &e, &fetcher.sources_hint())
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => denied("401 Unauthorized"),
        OciDistributionError::ServerError { code: 401, .. } => denied("401 Unauthorized"),
        OciDistributionError::ServerError { code: 403, .. } => denied("403 Forbidden"),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.contains(&&OciErrorCode::Unauthorized) {
                denied("401 Unauthorized")
            } else if codes.contains(&&OciErrorCode::Denied) {
                denied("403 Forbidden")
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) {
                not_found(reference, &repository, &codes)
            } else {
                FetchError::Protocol(format!("{repository}: {envelope}"))
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            not_found(reference, &repository, &[])
        }
        OciDistributionError::DigestError(e) => FetchError::DigestMismatch {
            what: "manifest",
            expected: reference
                .digest()
                .unwrap_or("the registry's digest")
                .to_owned(),
            actual: match e {
                oci_client::errors::DigestError::VerificationError { actual, .. } => actual,
                other => other.to_string(),
            },
        },
        other => FetchError::Protocol(format!("{repository}: {}", error::chain(&other))),
    }
}

fn not_found(reference: &Reference, repository: &str, codes: &[&OciErrorCode]) -> FetchError {
    let what = if codes.contains(&&OciErrorCode::NameUnknown) {
        format!("repository `{repository}` does not exist")
    } else if let Some(digest) = reference.digest() {
        format!(
            "`{repository}` has no manifest {digest} (a pinned digest is never replaced by \
             another: push it again or change the pin)"
        )
    } else {
        format!(
            "`{repository}` has no tag `{}` (or the repository does not exist)",
            reference.tag().unwrap_or("latest")
        )
    };
    FetchError::NotFound { what }
}
