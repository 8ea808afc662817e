//! OCI registries: pull a module (either artifact format) and resolve a
//! reference to its manifest digest over [`distribution`](super::distribution),
//! which reads every answer under a cap; push through `oci-client`.
//!
//! A pulled manifest is checked against the digest in the reference and the
//! registry's `Docker-Content-Digest`, and a layer against its descriptor's
//! digest while it streams into the store; the store checks both again
//! before anything is reused.

use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciManifest;
use oci_client::{Reference, RegistryOperation};

use super::artifact::{self, Format};
use super::distribution::Repository;
use super::download::Progress;
use super::error::{self, FetchError};
use super::store::{DownloadStore, ResolvedRef};
use super::verify::{Signature, signatures};
use super::{Fetch, FetchOrigin, Fetcher, MAX_MODULE_BYTES};
use crate::digest::Digest;

/// Fetches the module `reference` names. A reference with a digest, or a tag
/// other than `latest`, already in the store is used without asking the
/// registry (Kubewarden's rule); `latest` is always resolved again.
pub(super) async fn pull(
    fetcher: &Fetcher,
    reference: &Reference,
    progress: &Progress,
) -> Result<Fetch, FetchError> {
    let started = std::time::Instant::now();
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
    let stored = match (stored, fetcher.verification()) {
        (Some(found), Some(config)) => {
            let manifest = found.0.manifest.clone().unwrap_or_default();
            let recorded = fetcher
                .on_store({
                    let manifest = manifest.clone();
                    move |store| store.signatures(&manifest)
                })
                .await;
            // Checked again, not trusted: a stale record (the config
            // changed, a signature was added) goes to the registry.
            let verified = recorded
                .and_then(|bytes| serde_json::from_slice::<Vec<Signature>>(&bytes).ok())
                .is_some_and(|signatures| config.check(&manifest, &signatures).is_ok());
            verified.then_some(found)
        }
        (stored, _) => stored,
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

    let login = fetcher.credentials().login(reference.resolve_registry());
    let mut repository = Repository::new(fetcher, reference, &login, progress)?;
    let (manifest_bytes, manifest_digest) = repository.manifest().await?;
    if let Some(config) = fetcher.verification() {
        // These manifest bytes (hashed to this digest) are what is verified
        // and then downloaded: a tag moved meanwhile changes nothing.
        let signatures = signatures::pull(fetcher, reference, &manifest_digest, progress).await?;
        config
            .check(&manifest_digest, &signatures)
            .map_err(|reason| FetchError::Unverified {
                digest: manifest_digest.clone(),
                config: config.origin.clone(),
                reason,
            })?;
        tracing::info!(uri = %uri, manifest = %manifest_digest, signatures = signatures.len(), "signatures verified");
        let record = serde_json::to_vec(&signatures).expect("signatures serialize");
        fetcher
            .store()
            .put_signatures(&manifest_digest, &record)
            .map_err(|e| fetcher.store_error(e))?;
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
            let blob = repository.module(layer).await?;
            // Checked against the layer's digest as it streamed.
            let (path, _, size) = blob.persist().await.map_err(|e| fetcher.store_error(e))?;
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
    progress: &Progress,
) -> Result<String, FetchError> {
    let login = fetcher.credentials().login(reference.resolve_registry());
    Repository::new(fetcher, reference, &login, progress)?
        .manifest_digest()
        .await
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
pub(super) async fn answering<T, F, Fut>(
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

/// Turns an oci-client error into one that names the host, the credentials
/// and what to change.
pub(super) fn classify(
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
