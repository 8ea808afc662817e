//! The policy's verdicts on the fixtures in `test_data/` and on every
//! workload kind, through the SDK's native harness. The reference parser has
//! its own tests in `reference/tests.rs`.

use portcullis_sdk::Operation;
use portcullis_sdk::serde_json::{Value, json};
use portcullis_sdk::testing::Harness;

use super::*;

const SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// `{"allowedRegistries": ["registry.example.com", "docker.io"]}`.
fn harness() -> Harness<TrustedImages> {
    Harness::new().settings_file("test_data/settings.json")
}

/// `{"allowedRegistries": ["registry.example.com"], "requireDigest": true}`.
fn pinned() -> Harness<TrustedImages> {
    Harness::new().settings_file("test_data/settings_require_digest.json")
}

fn allowing(registries: &[&str]) -> Harness<TrustedImages> {
    Harness::new().settings_json(json!({"allowedRegistries": registries}))
}

fn pod(containers: Value) -> Value {
    json!({
        "uid": "test",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE",
        "object": {"kind": "Pod", "spec": {"containers": containers}},
    })
}

fn pod_with_image(image: &str) -> Value {
    pod(json!([{"name": "app", "image": image}]))
}

// --- Fixtures -----------------------------------------------------------------

#[test]
fn trusted_images_are_accepted() {
    let verdict = harness().validate_file("test_data/pod_trusted_images.json");
    verdict.assert_accepted();
    assert!(verdict.mutated_object.is_none() && verdict.warnings.is_empty());
}

#[test]
fn an_image_from_another_registry_is_rejected() {
    harness()
        .validate_file("test_data/pod_untrusted_image.json")
        .assert_rejected_with_code(
            r#"container "miner": image "evil.example.net/tools/miner:latest" comes from registry "evil.example.net", which is not allowed (allowed registries: "registry.example.com", "docker.io")"#,
            403,
        );
}

#[test]
fn an_invalid_reference_is_rejected_with_400() {
    harness()
        .validate_file("test_data/pod_invalid_image.json")
        .assert_rejected_with_code(
            r#"container "web": invalid image reference "registry.example.com/Team/web:1.4.2": repository name "Team/web" must be lowercase"#,
            400,
        );
}

#[test]
fn pinned_images_are_accepted_when_digests_are_required() {
    pinned()
        .validate_file("test_data/deployment_pinned_images.json")
        .assert_accepted();
    harness()
        .validate_file("test_data/deployment_pinned_images.json")
        .assert_accepted();
}

#[test]
fn an_unpinned_image_is_rejected_when_digests_are_required() {
    pinned()
        .validate_file("test_data/cronjob_unpinned_image.json")
        .assert_rejected_with_code(
            r#"container "backup": image "registry.example.com/ops/backup:2.0" is not pinned by digest (`@sha256:` and 64 hex digits)"#,
            403,
        );
    harness()
        .validate_file("test_data/cronjob_unpinned_image.json")
        .assert_accepted();
}

#[test]
fn an_ephemeral_debug_container_is_checked() {
    pinned()
        .validate_file("test_data/pod_ephemeral_debug_container.json")
        .assert_rejected_with_code(
            r#"ephemeral container "debugger-x7k2p": image "busybox:1.36" comes from registry "docker.io", which is not allowed (allowed registries: "registry.example.com"), and is not pinned by digest (`@sha256:` and 64 hex digits)"#,
            403,
        );
    harness()
        .validate_file("test_data/pod_ephemeral_debug_container.json")
        .assert_accepted();
}

#[test]
fn the_trusted_pod_violates_the_digest_settings() {
    pinned()
        .validate_file("test_data/pod_trusted_images.json")
        .assert_rejected_with_code(
            r#"container "web": image "registry.example.com/team/web:1.4.2" is not pinned by digest (`@sha256:` and 64 hex digits); container "proxy": image "nginx:1.27" comes from registry "docker.io", which is not allowed (allowed registries: "registry.example.com"), and is not pinned by digest (`@sha256:` and 64 hex digits); init container "setup": image "library/busybox:1.36" comes from registry "docker.io", which is not allowed (allowed registries: "registry.example.com"), and is not pinned by digest (`@sha256:` and 64 hex digits)"#,
            403,
        );
}

// --- Registries -----------------------------------------------------------------

#[test]
fn docker_io_covers_images_without_a_registry() {
    let docker_hub = allowing(&["docker.io"]);
    for image in [
        "nginx",
        "nginx:1.27",
        "library/nginx",
        "bitnami/redis:7.2",
        "docker.io/nginx",
        "docker.io/library/nginx:latest",
        "index.docker.io/library/nginx",
        // Two components without `.` or `:`: a Docker Hub namespace.
        "my-registry/app",
        // A single component: `:5000` is a tag.
        "localhost:5000",
    ] {
        docker_hub.validate(pod_with_image(image)).assert_accepted();
        allowing(&["registry.example.com"])
            .validate(pod_with_image(image))
            .assert_rejected_with_code(
                &format!(
                    r#"container "app": image "{image}" comes from registry "docker.io", which is not allowed (allowed registries: "registry.example.com")"#
                ),
                403,
            );
    }
    // The legacy name of Docker Hub in the settings means docker.io too.
    allowing(&["index.docker.io"])
        .validate(pod_with_image("nginx"))
        .assert_accepted();
}

#[test]
fn registries_match_exactly_with_their_port() {
    let cases = [
        ("localhost:5000/app", "localhost:5000", true),
        ("localhost/app", "localhost:5000", false),
        ("localhost:5001/app", "localhost:5000", false),
        ("localhost/app", "localhost", true),
        (
            "registry.example.com:443/app",
            "registry.example.com",
            false,
        ),
        (
            "registry.example.com/app",
            "registry.example.com:443",
            false,
        ),
        (
            "registry.example.com/team/app",
            "registry.example.com",
            true,
        ),
        // Host names compare case-insensitively.
        ("Registry.Example.COM/app", "registry.example.com", true),
        ("registry.example.com/app", "REGISTRY.example.com", true),
        // A sub- or superdomain is another registry.
        ("eu.registry.example.com/app", "registry.example.com", false),
        ("example.com/app", "registry.example.com", false),
        (
            "registry.example.com.evil.net/app",
            "registry.example.com",
            false,
        ),
        // A registry cannot be smuggled in as a Docker Hub namespace.
        ("registry/app", "registry", false),
        ("[::1]:5000/app", "[::1]:5000", true),
        ("127.0.0.1:5000/app", "127.0.0.1:5000", true),
    ];
    for (image, allowed, accepted) in cases {
        let verdict = allowing(&[allowed]).validate(pod_with_image(image));
        assert_eq!(
            verdict.allowed, accepted,
            "{image} with {allowed}: {verdict:?}"
        );
        if !accepted {
            assert_eq!(verdict.code, Some(403), "{image}");
        }
    }
}

#[test]
fn digests_are_required_only_when_configured() {
    let require = Harness::<TrustedImages>::new()
        .settings_json(json!({"allowedRegistries": ["docker.io"], "requireDigest": true}));
    for image in [
        format!("nginx@sha256:{SHA256}"),
        format!("nginx:1.27@sha256:{SHA256}"),
        format!("docker.io/library/nginx@sha512:{}", "ab".repeat(64)),
    ] {
        require.validate(pod_with_image(&image)).assert_accepted();
    }
    for image in ["nginx", "nginx:1.27", "nginx:sha256"] {
        require
            .validate(pod_with_image(image))
            .assert_rejected_with_code(
                &format!(
                    r#"container "app": image "{image}" is not pinned by digest (`@sha256:` and 64 hex digits)"#
                ),
                403,
            );
        allowing(&["docker.io"])
            .validate(pod_with_image(image))
            .assert_accepted();
    }
}

// --- Invalid references -----------------------------------------------------------

#[test]
fn invalid_references_are_rejected_with_400_and_the_reason() {
    let cases = [
        ("Nginx", r#"repository name "Nginx" must be lowercase"#),
        (
            "nginx:",
            r#"invalid tag "": a tag is 1 to 128 letters, digits, `_`, `.` and `-`, and does not start with `.` or `-`"#,
        ),
        (
            "nginx@sha256:abc",
            r#"invalid sha256 digest "abc": expected 64 lowercase hexadecimal digits"#,
        ),
        (
            "https://registry.example.com/app",
            r#"invalid registry "https:": expected a host name, an IPv4 address or a bracketed IPv6 address, optionally followed by `:` and a port number"#,
        ),
        (
            "nginx latest",
            r#"invalid repository name component "nginx latest": components are lowercase letters and digits, separated by `.`, `_`, `__` or dashes, and start and end with a letter or digit"#,
        ),
    ];
    for (image, reason) in cases {
        harness()
            .validate(pod_with_image(image))
            .assert_rejected_with_code(
                &format!(
                    r#"container "app": invalid image reference {}: {reason}"#,
                    quote(image)
                ),
                400,
            );
    }
}

#[test]
fn every_offending_container_is_named_and_invalid_wins_the_code() {
    let containers = json!([
        {"name": "ok", "image": "registry.example.com/app:1"},
        {"name": "foreign", "image": "quay.io/app:1"},
        {"name": "broken", "image": "quay.io/App:1"},
    ]);
    harness()
        .validate(pod(containers))
        .assert_rejected_with_code(
            r#"container "foreign": image "quay.io/app:1" comes from registry "quay.io", which is not allowed (allowed registries: "registry.example.com", "docker.io"); container "broken": invalid image reference "quay.io/App:1": repository name "App" must be lowercase"#,
            400,
        );
}

#[test]
fn containers_without_an_image_are_skipped() {
    harness()
        .validate(pod(json!([{"name": "a"}, {"name": "b", "image": ""}])))
        .assert_accepted();
}

// --- Every workload kind ------------------------------------------------------------

/// Every workload kind with `spec` nested where Kubernetes keeps its pod spec.
fn workloads(spec: Value) -> Vec<(&'static str, &'static str, Value)> {
    let template = json!({"spec": {"template": {"spec": spec.clone()}}});
    vec![
        ("", "Pod", json!({"spec": spec})),
        ("apps", "Deployment", template.clone()),
        ("apps", "ReplicaSet", template.clone()),
        ("apps", "StatefulSet", template.clone()),
        ("apps", "DaemonSet", template.clone()),
        ("", "ReplicationController", template.clone()),
        ("batch", "Job", template.clone()),
        (
            "batch",
            "CronJob",
            json!({"spec": {"jobTemplate": template}}),
        ),
    ]
}

#[test]
fn every_container_of_every_workload_kind_is_checked() {
    let roles = [
        ("containers", "container"),
        ("initContainers", "init container"),
        ("ephemeralContainers", "ephemeral container"),
    ];
    for (field, role) in roles {
        let mut spec =
            json!({"containers": [{"name": "main", "image": "registry.example.com/main:1"}]});
        spec[field] = json!([{"name": "x", "image": "ghcr.io/x/y:1"}]);
        for (group, kind, object) in workloads(spec) {
            let request = json!({
                "uid": "test",
                "kind": {"group": group, "version": "v1", "kind": kind},
                "operation": "UPDATE",
                "object": object,
            });
            harness()
                .validate(request.clone())
                .assert_rejected_with_code(
                    &format!(
                        r#"{role} "x": image "ghcr.io/x/y:1" comes from registry "ghcr.io", which is not allowed (allowed registries: "registry.example.com", "docker.io")"#
                    ),
                    403,
                );
            allowing(&["registry.example.com", "ghcr.io"])
                .validate(request)
                .assert_accepted();
        }
    }
}

#[test]
fn objects_without_a_pod_spec_are_accepted() {
    let config_map = json!({
        "uid": "test",
        "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
        "operation": "CREATE",
        "object": {"kind": "ConfigMap", "data": {"image": "evil.example.net/x"}},
    });
    harness().validate(config_map).assert_accepted();
    let delete = json!({
        "uid": "test",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "DELETE",
        "oldObject": {"kind": "Pod", "spec": {"containers": [{"name": "a", "image": "evil.example.net/x"}]}},
    });
    harness().validate(delete).assert_accepted();
}

#[test]
fn a_malformed_pod_spec_is_rejected_with_400() {
    harness()
        .validate(pod(json!("nginx")))
        .assert_rejected_with_code(
            "cannot read the pod spec of the Pod at spec: invalid type: string \"nginx\", expected a sequence",
            400,
        );
}

// --- Raw documents ------------------------------------------------------------------

#[test]
fn raw_manifests_are_checked() {
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api"},
        "spec": {"template": {"spec": {"containers": [{"name": "api", "image": "quay.io/api:1"}]}}},
    });
    harness().validate_raw(deployment).assert_rejected_with_code(
        r#"container "api": image "quay.io/api:1" comes from registry "quay.io", which is not allowed (allowed registries: "registry.example.com", "docker.io")"#,
        403,
    );
    let pod = json!({"kind": "Pod", "spec": {"containers": [{"name": "a", "image": "nginx"}]}});
    harness().validate_raw(pod).assert_accepted();
    // Nothing to check in a manifest without a pod spec.
    harness()
        .validate_raw(json!({"kind": "Service", "spec": {}}))
        .assert_accepted();
    harness()
        .validate_raw(json!({"kind": 3}))
        .assert_rejected_with_code("the object's `kind` is not a string (found a number)", 400);
}

// --- Settings and metadata ----------------------------------------------------------

#[test]
fn settings_are_validated() {
    let settings = |json: Value| {
        Harness::<TrustedImages>::new()
            .settings_json(json)
            .validate_settings()
    };
    assert_eq!(harness().validate_settings(), Ok(()));
    assert_eq!(pinned().validate_settings(), Ok(()));
    assert_eq!(
        settings(json!({"allowedRegistries": ["localhost:5000", "[::1]:5000", "10.0.0.1"]})),
        Ok(())
    );

    let empty = Err(
        "invalid settings: allowedRegistries must list at least one registry, \
                     e.g. {\"allowedRegistries\": [\"registry.example.com\"]}"
            .to_string(),
    );
    assert_eq!(Harness::<TrustedImages>::new().validate_settings(), empty);
    assert_eq!(settings(json!({"allowedRegistries": []})), empty);
    assert_eq!(settings(json!({"requireDigest": true})), empty);

    let cases = [
        (
            json!(["https://registry.example.com"]),
            r#"allowedRegistries: "https://registry.example.com" must be a registry host without a scheme, e.g. "registry.example.com""#,
        ),
        (
            json!(["ghcr.io/my-org"]),
            r#"allowedRegistries: "ghcr.io/my-org" must be a registry host, optionally with a port, not a repository path"#,
        ),
        (
            json!(["registry.example.com", ""]),
            r#"allowedRegistries: invalid registry "": expected a host name, an IPv4 address or a bracketed IPv6 address, optionally followed by `:` and a port number"#,
        ),
        (
            json!(["my_registry.com"]),
            r#"allowedRegistries: invalid registry "my_registry.com": expected a host name, an IPv4 address or a bracketed IPv6 address, optionally followed by `:` and a port number"#,
        ),
        (
            json!(["localhost:port"]),
            r#"allowedRegistries: invalid registry "localhost:port": expected a host name, an IPv4 address or a bracketed IPv6 address, optionally followed by `:` and a port number"#,
        ),
    ];
    for (registries, reason) in cases {
        assert_eq!(
            settings(json!({"allowedRegistries": registries})),
            Err(format!("invalid settings: {reason}"))
        );
    }
    assert_eq!(
        settings(json!({"allowedRegistries": "docker.io"})),
        Err("invalid settings: allowedRegistries: invalid type: string \"docker.io\", expected a sequence".into())
    );
    assert_eq!(
        settings(json!({"allowedRegistries": ["docker.io"], "requireDigest": "yes"})),
        Err(
            "invalid settings: requireDigest: invalid type: string \"yes\", expected a boolean"
                .into()
        )
    );
    assert_eq!(
        settings(json!({"allowedRegistries": ["docker.io"], "require_digest": true})),
        Err("invalid settings: unknown field `require_digest`, expected `allowedRegistries` or `requireDigest`".into())
    );
}

#[test]
fn metadata_lists_every_workload_resource() {
    let metadata = harness().metadata();
    assert!(!metadata.mutating);
    assert!(!metadata.description.is_empty());
    let mut resources = Vec::new();
    for rule in &metadata.rules {
        assert_eq!(rule.api_versions, ["v1"]);
        assert_eq!(rule.operations, [Operation::Create, Operation::Update]);
        for resource in &rule.resources {
            resources.push(format!("{}/{resource}", rule.api_groups.join(",")));
        }
    }
    resources.sort();
    assert_eq!(
        resources,
        [
            "/pods",
            "/pods/ephemeralcontainers",
            "/replicationcontrollers",
            "apps/daemonsets",
            "apps/deployments",
            "apps/replicasets",
            "apps/statefulsets",
            "batch/cronjobs",
            "batch/jobs",
        ]
    );
}
