//! Where the process tests find the repository and the built components.

use std::path::{Path, PathBuf};

#[allow(dead_code)] // not every test binary uses every helper
pub mod served;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Where `scripts/build-components` puts the components.
pub fn components_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    target.join("wasm32-wasip2/policy")
}

/// The built component `name` (cargo's artifact name, without `.wasm`).
#[allow(dead_code)] // not every test binary uses every helper
pub fn component(name: &str) -> PathBuf {
    let path = components_dir().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-components",
        path.display()
    );
    path
}
