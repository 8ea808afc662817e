//! Loading policies: one compilation and one `InstancePre` per unique
//! component, the compiled cache, fresh instances, and every bad input a
//! loader can meet.

use std::fs;

use portcullis::admission::parse_review_or_request;
use portcullis::digest::Digest;
use portcullis::environment::LoadFailure;
use portcullis::runtime::CodeError;
use portcullis::{CompiledCache, Environment, LoadError, LoadStats, PolicySpec};
use portcullis_tests::{component, engine, repo_file};
use serde_json::json;

fn privileged_request() -> portcullis::bindings::AdmissionRequest {
    let body = fs::read(repo_file(
        "examples/pod-privileged/test_data/privileged_container.json",
    ))
    .unwrap();
    parse_review_or_request(&body).unwrap()
}

async fn load_error(spec: PolicySpec) -> LoadError {
    match Environment::load(&engine(), [spec], None).await {
        Ok(_) => panic!("the load should have failed"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn policies_sharing_a_component_compile_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("same-bytes-other-path.wasm");
    fs::copy(component("pod_privileged"), &copy).unwrap();
    let specs = [
        PolicySpec::new("a", component("pod_privileged")),
        PolicySpec::new("b", component("pod_privileged"))
            .with_settings(json!({"skip_init_containers": true})),
        PolicySpec::new("c", component("pod_privileged")),
        PolicySpec::new("d", &copy),
        PolicySpec::new("counter", component("counter_policy")),
    ];
    let env = Environment::load(&engine(), specs, None).await.unwrap();
    assert_eq!(
        env.stats(),
        LoadStats {
            policies: 5,
            unique_code: 2,
            compiled: 2,
            from_cache: 0,
            reused: 0,
        }
    );
    let shared = env.policy("a").unwrap().code();
    for id in ["b", "c", "d"] {
        assert!(shared.ptr_eq(env.policy(id).unwrap().code()), "{id}");
    }
    // Same component, different settings: each policy keeps its own.
    let request = privileged_request();
    for id in ["a", "b", "c", "d"] {
        assert!(
            !env.validate(id, &request).await.unwrap().response.allowed,
            "{id}"
        );
    }
}

#[tokio::test]
async fn every_request_gets_a_fresh_instance() {
    let spec = PolicySpec::new("counter", component("counter_policy"));
    let env = Environment::load(&engine(), [spec], None).await.unwrap();
    let request = privileged_request();
    for _ in 0..5 {
        let verdict = env.validate("counter", &request).await.unwrap();
        assert_eq!(
            verdict.response.audit_annotations,
            vec![("counter".to_owned(), "1".to_owned())],
            "state leaked from an earlier evaluation"
        );
    }
}

#[tokio::test]
async fn second_load_reads_the_compiled_cache_and_a_damaged_entry_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CompiledCache::new(dir.path());
    let engine = engine();
    let spec = || PolicySpec::new("privileged", component("pod_privileged"));

    let first = Environment::load(&engine, [spec()], Some(&cache))
        .await
        .unwrap();
    assert_eq!((first.stats().compiled, first.stats().from_cache), (1, 0));
    let second = Environment::load(&engine, [spec()], Some(&cache))
        .await
        .unwrap();
    assert_eq!((second.stats().compiled, second.stats().from_cache), (0, 1));
    assert!(
        !second
            .validate("privileged", &privileged_request())
            .await
            .unwrap()
            .response
            .allowed
    );

    // Truncate the one entry: the next load notices and recompiles.
    let entries: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let bytes = fs::read(&entries[0]).unwrap();
    fs::write(&entries[0], &bytes[..bytes.len() / 2]).unwrap();
    let third = Environment::load(&engine, [spec()], Some(&cache))
        .await
        .unwrap();
    assert_eq!((third.stats().compiled, third.stats().from_cache), (1, 0));
    assert!(
        !third
            .validate("privileged", &privileged_request())
            .await
            .unwrap()
            .response
            .allowed
    );

    // The recompiled entry replaced the damaged one.
    let fourth = Environment::load(&engine, [spec()], Some(&cache))
        .await
        .unwrap();
    assert_eq!((fourth.stats().compiled, fourth.stats().from_cache), (0, 1));

    // Same length, one flipped byte: also caught before wasmtime sees it.
    let mut bytes = fs::read(&entries[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&entries[0], &bytes).unwrap();
    let fifth = Environment::load(&engine, [spec()], Some(&cache))
        .await
        .unwrap();
    assert_eq!((fifth.stats().compiled, fifth.stats().from_cache), (1, 0));
}

/// A cache entry tells the kind of policy it holds by its name; an entry of
/// a kind this build does not run (written by another build sharing the
/// directory) is compiled again for this one, never read as another kind.
#[tokio::test]
async fn an_entry_of_a_kind_this_build_does_not_run_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CompiledCache::new(dir.path());
    let engine = engine();
    let spec = || PolicySpec::new("kw", component("kw_pod_privileged"));
    let first = Environment::load(&engine, [spec()], Some(&cache))
        .await
        .unwrap();
    assert_eq!((first.stats().compiled, first.stats().from_cache), (1, 0));
    let entry = fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let name = entry.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(name.ends_with(".module.cwasm"), "{name}");
    let foreign = dir.path().join(name.replace(".module.", ".a-future-kind."));
    fs::rename(&entry, &foreign).unwrap();

    let second = Environment::load(&engine, [spec()], Some(&cache))
        .await
        .unwrap();
    assert_eq!((second.stats().compiled, second.stats().from_cache), (1, 0));
    assert_eq!(
        second.policy("kw").unwrap().code().kind(),
        "kubewarden-wapc"
    );
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        [name],
        "the recompiled entry replaced the foreign one"
    );
}

/// The loader hashes a file, then reads it again to compile it on a cache
/// miss; the compiled form is stored under the first digest. A file replaced
/// in between (a deploy writing over it) must fail the load, not poison the
/// cache with code that does not match its key.
#[tokio::test]
async fn a_file_that_changes_between_hashing_and_reading_is_refused_and_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CompiledCache::new(dir.path().join("cache"));
    let engine = engine();
    let file = dir.path().join("policy.wasm");
    fs::copy(component("counter_policy"), &file).unwrap();
    let (digest, size) = Digest::of_file(&file).unwrap();
    fs::copy(component("pod_privileged"), &file).unwrap();

    let error = engine
        .prepare_file(&file, digest, size, Some(&cache))
        .await
        .expect_err("a changed file must not load");
    assert!(matches!(error, CodeError::Changed), "{error:?}");
    assert_eq!(
        error.to_string(),
        "the file changed while it was being loaded"
    );
    let stored = fs::read_dir(cache.dir()).map_or(0, |entries| entries.count());
    assert_eq!(stored, 0, "nothing may be stored under the stale digest");

    // Hashed again, the same file loads.
    let (digest, size) = Digest::of_file(&file).unwrap();
    engine
        .prepare_file(&file, digest, size, Some(&cache))
        .await
        .unwrap();
}

#[tokio::test]
async fn settings_the_policy_rejects_fail_the_load_with_its_message() {
    let spec = PolicySpec::new("privileged", component("pod_privileged"))
        .with_settings(json!({"skip_init_containers": "yes"}));
    let error = load_error(spec).await;
    assert!(
        matches!(error.reason, LoadFailure::SettingsRejected(_)),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.starts_with("policy `privileged` ("), "{message}");
    assert!(message.contains("settings rejected: "), "{message}");
    assert!(message.contains("skip_init_containers"), "{message}");

    let unknown = PolicySpec::new("privileged", component("pod_privileged"))
        .with_settings(json!({"no_such_setting": true}));
    let message = load_error(unknown).await.to_string();
    assert!(message.contains("no_such_setting"), "{message}");
}

#[tokio::test]
async fn duplicate_ids_are_refused() {
    let specs = [
        PolicySpec::new("twice", component("pod_privileged")),
        PolicySpec::new("twice", component("pod_privileged")),
    ];
    let error = match Environment::load(&engine(), specs, None).await {
        Ok(_) => panic!("duplicate ids must not load"),
        Err(e) => e,
    };
    assert!(error.to_string().contains("policy `twice`"), "{error}");
    assert!(
        matches!(error.reason, LoadFailure::DuplicateId),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_missing_file_names_the_file() {
    let error = load_error(PolicySpec::new("gone", "/nonexistent/policy.wasm")).await;
    assert_eq!(
        error.to_string(),
        "policy `gone` (/nonexistent/policy.wasm): cannot read the component: \
         No such file or directory (os error 2)"
    );
}

#[tokio::test]
async fn bytes_that_are_not_wasm_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.wasm");
    fs::write(&path, "#!/bin/sh\necho not wasm\n").unwrap();
    let message = load_error(PolicySpec::new("text", &path)).await.to_string();
    assert!(
        message
            .ends_with("not a WebAssembly file (it does not start with the `\\0asm` magic bytes)"),
        "{message}"
    );
}

#[tokio::test]
async fn a_core_module_without_kubewarden_metadata_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core.wasm");
    // The smallest valid core module: magic and version 1, no sections.
    fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let message = load_error(PolicySpec::new("core", &path)).await.to_string();
    assert!(
        message.contains("a core WebAssembly module without Kubewarden metadata"),
        "{message}"
    );
    // Both ways out: annotate it, or build a component.
    assert!(message.contains("portcullis annotate"), "{message}");
    assert!(message.contains("wasm32-wasip2"), "{message}");
}

#[tokio::test]
async fn a_truncated_component_does_not_compile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.wasm");
    let bytes = fs::read(component("pod_privileged")).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let message = load_error(PolicySpec::new("truncated", &path))
        .await
        .to_string();
    assert!(
        message.contains("cannot compile the component: "),
        "{message}"
    );
}

#[tokio::test]
async fn a_component_of_another_world_says_what_is_missing() {
    let message = load_error(PolicySpec::new("cli", component("not-a-policy")))
        .await
        .to_string();
    assert!(
        message.ends_with(
            "does not implement `portcullis:policy/policy@0.1.1`: missing export \
             `portcullis:policy/admission@0.1.1`"
        ),
        "{message}"
    );
}

/// A copy of pod_privileged whose exported interface claims `version`
/// (same length as `0.1.1`, so every offset in the binary stays valid).
fn pod_privileged_targeting(dir: &std::path::Path, version: &str) -> std::path::PathBuf {
    pod_privileged_renamed(
        dir,
        "portcullis:policy/admission@0.1.1",
        &format!("portcullis:policy/admission@{version}"),
    )
}

/// A copy of pod_privileged with every occurrence of the name `from` replaced
/// by `to`, of the same length: the component stays valid, its exports renamed.
fn pod_privileged_renamed(dir: &std::path::Path, from: &str, to: &str) -> std::path::PathBuf {
    assert_eq!(from.len(), to.len());
    let (from, to) = (from.as_bytes(), to);
    let bytes = fs::read(component("pod_privileged")).unwrap();
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = &bytes[..];
    let mut replaced = 0;
    while let Some(at) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to.as_bytes());
        rest = &rest[at + from.len()..];
        replaced += 1;
    }
    out.extend_from_slice(rest);
    assert!(replaced > 0, "the export name is in the component");
    let path = dir.join(format!("pod_privileged-{to}.wasm").replace([':', '/', '@'], "_"));
    fs::write(&path, out).unwrap();
    path
}

#[tokio::test]
async fn a_semver_compatible_interface_version_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let spec = PolicySpec::new("newer-patch", pod_privileged_targeting(dir.path(), "0.1.9"));
    let env = Environment::load(&engine(), [spec], None).await.unwrap();
    let verdict = env
        .validate("newer-patch", &privileged_request())
        .await
        .unwrap();
    assert!(!verdict.response.allowed);
}

#[tokio::test]
async fn an_incompatible_interface_version_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = pod_privileged_targeting(dir.path(), "0.2.0");
    let message = load_error(PolicySpec::new("next-minor", &path))
        .await
        .to_string();
    assert!(
        message.ends_with(
            "exports `portcullis:policy/admission@0.2.0`, which is not semver-compatible with \
             `portcullis:policy/admission@0.1.1`: rebuild it against a \
             `portcullis:policy/policy@0.1.1`-compatible SDK, or run it on a host of its version"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_function_of_the_interface_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = pod_privileged_renamed(dir.path(), "validate-raw", "validate-rax");
    let message = load_error(PolicySpec::new("no-raw", &path))
        .await
        .to_string();
    assert!(
        message.ends_with(
            "does not implement `portcullis:policy/policy@0.1.1`: missing export \
             `portcullis:policy/admission@0.1.1#validate-raw`"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn metadata_is_read_once_at_load() {
    let spec = PolicySpec::new("privileged", component("pod_privileged"));
    let env = Environment::load(&engine(), [spec], None).await.unwrap();
    let metadata = env.policy("privileged").unwrap().metadata();
    assert!(!metadata.mutating);
    assert!(!metadata.description.is_empty());
    let resources: Vec<&str> = metadata
        .rules
        .iter()
        .flat_map(|rule| rule.resources.iter().map(String::as_str))
        .collect();
    for resource in ["pods", "deployments", "cronjobs"] {
        assert!(resources.contains(&resource), "{resources:?}");
    }
}

#[tokio::test]
async fn a_reload_reuses_prepared_code_by_digest_and_compiles_only_what_is_new() {
    let engine = engine();
    let specs = |settings: serde_json::Value| {
        vec![
            PolicySpec::new("privileged", component("pod_privileged")),
            PolicySpec::new("privileged-again", component("pod_privileged")),
            PolicySpec::new("sleep", component("sleeping")).with_settings(settings),
            // A stack of its own: an engine of its own, reused with its code.
            {
                let mut deep = PolicySpec::new("deep", component("pod_privileged"));
                deep.limits.stack_bytes = Some(2 << 20);
                deep
            },
        ]
    };
    let first = Environment::load(&engine, specs(json!({"sleepMilliseconds": 1})), None)
        .await
        .unwrap();
    assert_eq!(first.stats().compiled, 3);

    // Settings change, code does not: nothing is compiled, settings are
    // validated again.
    let second = first
        .reload(specs(json!({"sleepMilliseconds": 2})).into(), None)
        .await
        .unwrap();
    assert_eq!((second.stats().compiled, second.stats().reused), (0, 3));
    for id in ["privileged", "sleep", "deep"] {
        assert!(
            first
                .policy(id)
                .unwrap()
                .code()
                .ptr_eq(second.policy(id).unwrap().code()),
            "{id}"
        );
    }
    assert!(
        !second
            .validate("deep", &privileged_request())
            .await
            .unwrap()
            .response
            .allowed
    );

    // Settings the policy rejects: an error, and the loaded one is intact.
    let error = match second
        .reload(specs(json!({"sleepMilliseconds": 0})).into(), None)
        .await
    {
        Ok(_) => panic!("settings the policy rejects were accepted"),
        Err(error) => error.to_string(),
    };
    assert!(error.starts_with("policy `sleep`"), "{error}");
    assert!(error.contains("settings rejected"), "{error}");
    assert!(
        !second
            .validate("privileged", &privileged_request())
            .await
            .unwrap()
            .response
            .allowed
    );

    // New code is compiled; code no longer named is not carried on.
    let third = second
        .reload(
            vec![
                PolicySpec::new("privileged", component("pod_privileged")),
                PolicySpec::new("lb", component("disallow_service_loadbalancer")),
            ]
            .into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!((third.stats().compiled, third.stats().reused), (1, 1));
    assert_eq!(third.stats().unique_code, 2);
}
