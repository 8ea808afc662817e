//! `https://` modules, from a small HTTPS server of the test's own whose
//! certificate chains to a CA the test makes: trusted only when sources.yml
//! lists the CA for the host.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use portcullis::source::{
    Credentials, DownloadStore, FetchError, FetchOrigin, Fetcher, Source, Sources,
};
use portcullis::{Limits, config};
use portcullis_tests::pki::Ca;
use portcullis_tests::server::{TestServer, test_config};
use portcullis_tests::{component, http_client, json_file};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// An HTTPS file server on 127.0.0.1 with a certificate from `ca`; counts
/// the requests for the module.
async fn serve(ca: &Ca, module: Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let leaf = ca.server("files");
    let certificate = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let module = Arc::new(module);
    let app = Router::new()
        .route(
            "/policies/pod_privileged.wasm",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let module = module.clone();
                async move { (*module).clone() }
            }),
        )
        .route("/policies/readme.txt", get(|| async { "not a module" }))
        .route(
            "/policies/secret.wasm",
            get(|| async { StatusCode::FORBIDDEN }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(socket) = acceptor.accept(socket).await else {
                    return;
                };
                let service = TowerToHyperService::new(app);
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    (addr, served)
}

fn fetcher(dir: &Path, sources: Sources) -> Fetcher {
    Fetcher::new(
        DownloadStore::new(dir.join("store")),
        sources,
        Credentials::new(Some(dir.join("none.json"))),
    )
}

fn trusting(ca: &Ca, host: &str) -> Sources {
    let mut yml = format!("source_authorities:\n  \"{host}\":\n    - type: Data\n      data: |\n");
    for line in ca.cert_pem().lines() {
        yml += &format!("        {line}\n");
    }
    Sources::parse(&yml, Path::new("/")).unwrap()
}

fn source(uri: &str) -> Source {
    Source::parse(uri, Path::new("/")).unwrap()
}

#[tokio::test]
async fn an_https_module_with_a_ca_from_sources_yml_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("files test CA");
    let bytes = std::fs::read(component("pod_privileged")).unwrap();
    let (addr, served) = serve(&ca, bytes).await;
    let uri = format!("https://{addr}/policies/pod_privileged.wasm");
    let fetcher = fetcher(dir.path(), trusting(&ca, &addr.to_string()));

    let specs = config::parse(
        &format!("privileged:\n  url: {uri}\n"),
        Path::new("/"),
        "policies.yml",
    )
    .unwrap()
    .policies;
    let specs = fetcher.fetch_policies(specs).await.unwrap();
    let fetch = specs[0].fetch.clone().unwrap();
    assert_eq!(fetch.origin, FetchOrigin::Pulled);
    assert_eq!(
        std::fs::read(&specs[0].module).unwrap(),
        std::fs::read(component("pod_privileged")).unwrap()
    );
    let server = TestServer::start_specs(specs, test_config(), Limits::default()).await;
    let response: serde_json::Value = http_client()
        .post(server.url("/validate/privileged"))
        .json(&json_file(
            "examples/pod-privileged/test_data/privileged_pod_review.json",
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response["response"]["allowed"], false, "{response}");
    server.server.shutdown().await.unwrap();

    // In the store now: a second start does not ask again.
    let again = fetcher.fetch(&source(&uri)).await.unwrap();
    assert_eq!(again.origin, FetchOrigin::Store);
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn https_failures_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("files test CA");
    let (addr, _) = serve(&ca, std::fs::read(component("pod_privileged")).unwrap()).await;
    let host = addr.to_string();

    // The CA is not trusted without sources.yml.
    let untrusting = fetcher(dir.path(), Sources::default());
    let uri = format!("https://{host}/policies/pod_privileged.wasm");
    let error = untrusting.fetch(&source(&uri)).await.unwrap_err();
    assert!(matches!(error, FetchError::Tls { .. }), "{error}");
    assert!(error.to_string().contains("source_authorities"), "{error}");

    let fetcher = fetcher(dir.path(), trusting(&ca, &host));
    let missing = format!("https://{host}/policies/missing.wasm");
    let error = fetcher.fetch(&source(&missing)).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("404 Not Found: {missing} does not exist")
    );

    let text = format!("https://{host}/policies/readme.txt");
    let error = fetcher.fetch(&source(&text)).await.unwrap_err();
    assert!(matches!(error, FetchError::NotWasm { .. }), "{error}");
    assert!(error.to_string().contains("not a module"), "{error}");

    let forbidden = format!("https://{host}/policies/secret.wasm");
    let error = fetcher.fetch(&source(&forbidden)).await.unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with(&format!("403 Forbidden from {host}")),
        "{error}"
    );
    assert!(fetcher.store().tmp_files().is_empty());
}
