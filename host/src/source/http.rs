//! `https://` and `http://` modules: one GET of the `.wasm`, with the CAs
//! `sources.yml` adds for the host, streamed into the download store under
//! the module size limit.
//!
//! A URL already in the store is reused without a request, as Kubewarden
//! does: a URL names no version, so to roll a policy out, publish it under a
//! new URL (or use a registry and a digest).

use std::time::Instant;

use super::download::{self, Progress, Stage};
use super::error::{self, FetchError};
use super::store::ResolvedRef;
use super::{Fetch, FetchOrigin, Fetcher};

/// Fetches the module at `url`.
pub(super) async fn get(
    fetcher: &Fetcher,
    url: &reqwest::Url,
    progress: &Progress,
) -> Result<Fetch, FetchError> {
    let started = Instant::now();
    let uri = url.to_string();
    let key = uri.clone();
    let stored = fetcher
        .on_store(move |store| {
            let digest = store.resolved(&key)?.digest.parse().ok()?;
            store.blob(&digest).map(|(path, size)| (path, digest, size))
        })
        .await;
    if let Some((path, digest, size)) = stored {
        return Ok(Fetch::new(
            path,
            digest,
            size,
            FetchOrigin::Store,
            0,
            started,
            None,
        ));
    }

    let host = host_port(url);
    let lock = fetcher.lock(&uri);
    let _held = lock.lock().await;
    let mut last = None;
    let mut response = None;
    for client in fetcher.http_clients(&host, url.scheme())? {
        match client.get(url.clone()).send().await {
            Ok(answer) => {
                response = Some(answer);
                break;
            }
            Err(e) => last = Some(error::transport(&host, &e, &fetcher.sources_hint())),
        }
    }
    let Some(mut response) = response else {
        return Err(last.unwrap_or_else(|| FetchError::Protocol("no client".into())));
    };
    let status = response.status();
    match status.as_u16() {
        200..=299 => {}
        401 | 403 => {
            return Err(FetchError::Denied {
                status: if status.as_u16() == 401 {
                    "401 Unauthorized"
                } else {
                    "403 Forbidden"
                },
                host,
                what: uri,
                login: "without credentials (none are sent to https:// sources)".into(),
            });
        }
        404 => {
            return Err(FetchError::NotFound {
                what: format!("{uri} does not exist"),
            });
        }
        _ => return Err(FetchError::Protocol(format!("{uri}: HTTP {status}"))),
    }
    progress.enter(Stage::Module);
    let blob = download::module_to_store(&mut response, fetcher.store(), None, progress).await?;
    let (path, digest, size) = blob.persist().await.map_err(|e| fetcher.store_error(e))?;
    fetcher
        .store()
        .put_resolved(&ResolvedRef {
            uri,
            manifest: None,
            digest: digest.to_string(),
        })
        .map_err(|e| fetcher.store_error(e))?;
    Ok(Fetch::new(
        path,
        digest,
        size,
        FetchOrigin::Pulled,
        size as u64,
        started,
        None,
    ))
}

/// `host[:port]` as `sources.yml` keys name it (the port only when the URL
/// gives one).
pub(super) fn host_port(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}
