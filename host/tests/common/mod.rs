//! Where the process tests find the repository and the built components.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// Runs the `portcullis` binary with `args`.
#[allow(dead_code)]
pub fn portcullis<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .expect("running portcullis")
}

/// The stdout of a run that must have succeeded.
#[allow(dead_code)]
pub fn success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The stderr of a run that must have failed, without a panic.
#[allow(dead_code)]
pub fn failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// A fixture of the pod-privileged example (Kubewarden's test data).
#[allow(dead_code)]
pub fn fixture(name: &str) -> PathBuf {
    repo().join("examples/pod-privileged/test_data").join(name)
}
