//! Builds the interpreter guests (`src/runtime/<kind>/guest`, e.g. regorus
//! for the Rego runtime: `wasm32-wasip1` core modules speaking the ABI of
//! `src/runtime/interpreter`) so the host can embed them: a user installs
//! one binary and places no extra file.
//!
//! The guests are built by a nested `cargo build` into a target directory
//! of their own under the workspace's (`target/interpreter-guests`), as
//! wasmtime's test-programs build theirs: the host's own profile and flags
//! never reach them, every profile of the host (dev, test, release, clippy)
//! shares one guest build, and cargo's lock on that directory serialises
//! concurrent builds. It runs again only when a guest's sources, the ABI
//! crate's, the workspace's manifest (its profiles) or the lock file change.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Each guest: its package, its folder under `src/runtime`, and the
/// variable naming the embedded copy (`include_bytes!(env!(..))`).
const GUESTS: &[(&str, &str, &str)] = &[(
    "portcullis-rego-guest",
    "rego/guest",
    "PORTCULLIS_REGO_GUEST",
)];
const GUEST_TARGET: &str = "wasm32-wasip1";
/// The workspace profile the guests are built with (Cargo.toml says why).
const GUEST_PROFILE: &str = "interpreter-guest";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir.parent().expect("host/ is in the workspace");
    let runtime_dir = manifest_dir.join("src/runtime");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    println!(
        "cargo:rerun-if-changed={}",
        runtime_dir.join("interpreter/guest").display()
    );
    for (_, folder, _) in GUESTS {
        println!(
            "cargo:rerun-if-changed={}",
            runtime_dir.join(folder).display()
        );
    }
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.toml").display()
    );

    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    ensure_target(Path::new(&rustc));
    let target_dir = target_dir(&out_dir).join("interpreter-guests");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(
            GUESTS
                .iter()
                .flat_map(|(package, _, _)| ["--package", package]),
        )
        .args(["--target", GUEST_TARGET])
        .args(["--profile", GUEST_PROFILE])
        .arg("--target-dir")
        .arg(&target_dir)
        // What is meant for the host's build only: its flags (a
        // `-C target-cpu=native` would break a wasm build), clippy's wrapper,
        // an explicit target or target directory.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR");
    let status = build
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the interpreter guests: {e}"));
    assert!(
        status.success(),
        "building the interpreter guests ({GUEST_TARGET}) failed: {status}"
    );
    for (package, _, variable) in GUESTS {
        let file = format!("{}.wasm", package.replace('-', "_"));
        let built = target_dir
            .join(GUEST_TARGET)
            .join(GUEST_PROFILE)
            .join(&file);
        // A copy of its own per host build: another profile's build of the
        // host rebuilding a guest never changes what this one embeds.
        let embedded = out_dir.join(&file);
        std::fs::copy(&built, &embedded)
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", built.display()));
        println!("cargo:rustc-env={variable}={}", embedded.display());
    }
}

/// The workspace's target directory: the first ancestor of `out_dir` that
/// cargo marked with its `CACHEDIR.TAG` (`OUT_DIR` is
/// `<target>/[<triple>/]<profile>/build/<package>-<hash>/out`).
fn target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .unwrap_or(out_dir)
        .to_owned()
}

/// Adds the guest's target with rustup when the toolchain lacks it, as the
/// repository's scripts do; says what to do when that is impossible.
fn ensure_target(rustc: &Path) {
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let installed = |sysroot: &Path| sysroot.join("lib/rustlib").join(GUEST_TARGET).is_dir();
    if sysroot.as_deref().is_some_and(installed) {
        return;
    }
    println!(
        "cargo:warning=adding the {GUEST_TARGET} target with rustup (the interpreter guests need it)"
    );
    let added = Command::new("rustup")
        .args(["target", "add", GUEST_TARGET])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        added,
        "the interpreter guests are built for {GUEST_TARGET}: install the target \
         (`rustup target add {GUEST_TARGET}`) and build again"
    );
}
