//! Helpers shared by the end-to-end tests: where the real components and
//! fixtures are, and an engine to load them with.

use std::path::{Path, PathBuf};

use portcullis::{Engine, Limits};

pub mod pki;
pub mod registry;
pub mod server;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository root")
        .to_owned()
}

/// The cargo target directory the components were built into.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// The component built from the crate `crate_name` (underscores, as cargo
/// names the artifact) by `scripts/build-components`.
pub fn component(crate_name: &str) -> PathBuf {
    let path = target_dir()
        .join("wasm32-wasip2/policy")
        .join(format!("{crate_name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the components first with `scripts/build-components` \
         (scripts/test does it for you)",
        path.display()
    );
    path
}

/// A file under the repository root.
pub fn repo_file(relative: impl AsRef<Path>) -> PathBuf {
    repo_root().join(relative)
}

/// Reads and parses a JSON file under the repository root.
pub fn json_file(relative: impl AsRef<Path>) -> serde_json::Value {
    let path = repo_file(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Installs ring, the TLS provider the server uses, as the process's
/// default (once): reqwest, and so oci-client, is built without one, and a
/// client made before it is installed panics.
pub fn install_crypto_provider() {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A plain HTTP client.
pub fn http_client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::new()
}

/// GETs `url` and returns the response body as text.
pub async fn get_text(url: &str) -> String {
    http_client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A compiled-component cache shared by the tests of every process, so each
/// component is compiled once per build rather than once per test. (Tests of
/// the cache itself use their own directories.)
pub fn shared_cache() -> portcullis::CompiledCache {
    portcullis::CompiledCache::new(target_dir().join("portcullis-test-cache"))
}

/// An engine with the default limits.
pub fn engine() -> Engine {
    engine_with(Limits::default())
}

/// An engine with `limits`.
pub fn engine_with(limits: Limits) -> Engine {
    Engine::new(limits).expect("building the engine")
}

/// An `AdmissionReview` (admission.k8s.io/v1) wrapping `request`.
pub fn review(request: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request,
    })
}
